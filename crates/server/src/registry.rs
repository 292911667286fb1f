//! Every state of a server, by identifier: create, look up (expiring on the way),
//! remove.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime};

use state_sync_protocol::JsonObject;
use state_sync_protocol::texts;

use crate::backend::{Backend, Change, StoredOutcome};
use crate::error::CreateStateError;
use crate::failure::Failure;
use crate::options::StateHooks;
use crate::session_log::LogBudget;
use crate::session_log::Outcome;
use crate::state::{Replica, State};
use crate::storage::StateRecord;

/// The states of a server.
pub(crate) struct States<K> {
    states: RwLock<HashMap<String, Arc<State<K>>>>,
    max_state_bytes: usize,
    session_retention: Duration,
    log_budget: LogBudget,
    store: Option<Arc<dyn Backend>>,
    /// Shared through Redis: this server's node id, for the replicas.
    node: Option<Arc<str>>,
    presence: crate::presence::PresenceConfig,
    hook_timeout: Duration,
    /// States whose attached clients have a metrics label of their own.
    metrics_states: Arc<std::collections::HashSet<String>>,
}

impl<K: Send + Sync + 'static> States<K> {
    pub(crate) fn new(
        max_state_bytes: usize,
        session_retention: Duration,
        log_budget: LogBudget,
        store: Option<Arc<dyn Backend>>,
        node: Option<Arc<str>>,
        (presence, hook_timeout): (crate::presence::PresenceConfig, Duration),
        metrics_states: Arc<std::collections::HashSet<String>>,
    ) -> Self {
        States {
            states: RwLock::new(HashMap::new()),
            max_state_bytes,
            session_retention,
            log_budget,
            store,
            node,
            presence,
            hook_timeout,
            metrics_states,
        }
    }

    /// The storage backend, if the states are kept beyond the process.
    pub(crate) fn store(&self) -> Option<&Arc<dyn Backend>> {
        self.store.as_ref()
    }

    /// The record and lifetime of a state to create: the stored one when the store has
    /// it (unless `reset`, or it expired while the server was down), else a new one
    /// from `value`, submitted to the store.
    fn record_for(
        &self,
        id: &str,
        value: JsonObject,
        ttl: Option<Duration>,
        reset: bool,
    ) -> Result<(StateRecord, SystemTime, Option<Instant>), CreateStateError> {
        let (now, wall) = (Instant::now(), SystemTime::now());
        if let Some(store) = &self.store
            && !reset
            && let Some(loaded) = store
                .load(id)
                .map_err(|e| CreateStateError::Storage(e.to_string()))?
        {
            let left = loaded
                .expires
                .map(|at| at.duration_since(wall).unwrap_or(Duration::ZERO));
            if left != Some(Duration::ZERO) {
                let sessions = loaded
                    .sessions
                    .into_iter()
                    .map(|(key, outcomes)| (key, outcomes.into_iter().map(restore).collect()))
                    .collect();
                let record = StateRecord::restored(
                    loaded.value,
                    loaded.version,
                    sessions,
                    self.max_state_bytes,
                    self.session_retention,
                    self.log_budget.clone(),
                );
                tracing::info!(state = %id, version = loaded.version, "state loaded from the store");
                return Ok((record, loaded.created, left.map(|left| now + left)));
            }
            tracing::info!(state = %id, "the stored state expired while the server was down");
        }
        let record = StateRecord::new(
            value,
            self.max_state_bytes,
            self.session_retention,
            self.log_budget.clone(),
        )?;
        if let Some(store) = &self.store {
            let entries = record
                .value()
                .iter()
                .map(|(key, value)| (key.clone(), value.to_string()))
                .collect();
            store.submit(
                Change::Create {
                    id: id.to_owned(),
                    entries,
                    created: wall,
                    expires: ttl.map(|ttl| wall + ttl),
                },
                None,
            );
        }
        Ok((record, wall, ttl.map(|ttl| now + ttl)))
    }

    /// Creates a state; the identifier must be free (an expired state's is). With a
    /// store, a stored state of that identifier comes back (see
    /// [`StateOptions::reset_stored`](crate::StateOptions::reset_stored)).
    pub(crate) fn create(
        &self,
        id: String,
        value: JsonObject,
        hooks: StateHooks<K>,
        ttl: Option<Duration>,
        reset: bool,
    ) -> Result<Arc<State<K>>, CreateStateError> {
        let mut states = self.states.write().unwrap_or_else(PoisonError::into_inner);
        let expired = match states.get(&id) {
            Some(existing) if existing.is_expired(Instant::now()) => Some(Arc::clone(existing)),
            Some(_) => return Err(CreateStateError::AlreadyExists(id)),
            None => None,
        };
        if let Some(expired) = &expired {
            // Before the new state is submitted: its removal must not follow it.
            expired.mark_removed(&texts::state_expired(&expired.id), usize::MAX);
        }
        let (record, created, expires_at) = self.record_for(&id, value, ttl, reset)?;
        let presence = crate::presence::Hub::new(
            id.clone(),
            self.presence,
            hooks.on_join.clone(),
            hooks.on_leave.clone(),
            self.hook_timeout,
        );
        let state = State::new(
            id.clone(),
            record,
            hooks,
            (created, expires_at),
            self.store.clone(),
            self.node.clone().map(Replica::new),
            (
                presence,
                self.metrics_states
                    .contains(&id)
                    .then(|| Arc::from(id.as_str())),
            ),
        );
        crate::metrics::states(1.0);
        states.insert(id, Arc::clone(&state));
        Ok(state)
    }

    /// The live state with this identifier. An expired state is removed (its clients
    /// told) and not returned.
    pub(crate) fn get(&self, id: &str) -> Option<Arc<State<K>>> {
        let state = Arc::clone(
            self.states
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .get(id)?,
        );
        if state.is_expired(Instant::now()) {
            self.remove_state(&state, &texts::state_expired(id), usize::MAX);
            return None;
        }
        Some(state)
    }

    /// Removes the state with this identifier, telling its clients why; the state,
    /// when there was one.
    pub(crate) fn remove(&self, id: &str, message: &str) -> Option<Arc<State<K>>> {
        let removed = self
            .states
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
        removed.filter(|state| state.mark_removed(message, usize::MAX))
    }

    /// Removes this very state (not one created later under the same identifier),
    /// unless more than `max_clients` are attached to it.
    pub(crate) fn remove_state(
        &self,
        state: &Arc<State<K>>,
        message: &str,
        max_clients: usize,
    ) -> bool {
        let mut states = self.states.write().unwrap_or_else(PoisonError::into_inner);
        if !state.mark_removed(message, max_clients) {
            return false;
        }
        if states
            .get(&state.id)
            .is_some_and(|current| Arc::ptr_eq(current, state))
        {
            states.remove(&state.id);
        }
        true
    }

    /// Removes every state, telling their clients; the states removed.
    pub(crate) fn remove_all(&self) -> Vec<Arc<State<K>>> {
        let drained: Vec<_> = self
            .states
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .drain()
            .collect();
        drained
            .into_iter()
            .filter(|(id, state)| state.mark_removed(&texts::state_removed(id), usize::MAX))
            .map(|(_, state)| state)
            .collect()
    }

    /// Bytes of reply frames the session logs of every state keep.
    pub(crate) fn session_log_bytes(&self) -> usize {
        self.log_budget
            .server
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Identifiers of the states that have not expired.
    pub(crate) fn ids(&self) -> Vec<String> {
        let now = Instant::now();
        self.states
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|(_, state)| !state.is_expired(now))
            .map(|(id, _)| id.clone())
            .collect()
    }
}

/// A stored outcome as a session log keeps it.
fn restore((request_id, outcome): (u64, StoredOutcome)) -> (u64, Outcome) {
    let outcome = match outcome {
        StoredOutcome::Applied(version) => Outcome::Applied {
            version,
            reply: None,
        },
        StoredOutcome::Failed(reason, message) => {
            Outcome::Failed(Failure::Remembered { reason, message })
        }
    };
    (request_id, outcome)
}
