//! Every state of a server, by identifier: create, look up (expiring on the way),
//! remove.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use state_sync_protocol::JsonObject;
use state_sync_protocol::texts;

use crate::error::CreateStateError;
use crate::options::StateHooks;
use crate::session_log::LogBudget;
use crate::state::State;
use crate::storage::StateRecord;

/// The states of a server.
pub(crate) struct States<K> {
    states: RwLock<HashMap<String, Arc<State<K>>>>,
    max_state_bytes: usize,
    session_retention: Duration,
    log_budget: LogBudget,
}

impl<K> States<K> {
    pub(crate) fn new(
        max_state_bytes: usize,
        session_retention: Duration,
        log_budget: LogBudget,
    ) -> Self {
        States {
            states: RwLock::new(HashMap::new()),
            max_state_bytes,
            session_retention,
            log_budget,
        }
    }

    /// Creates a state; the identifier must be free (an expired state's is).
    pub(crate) fn create(
        &self,
        id: String,
        value: JsonObject,
        hooks: StateHooks<K>,
        ttl: Option<Duration>,
    ) -> Result<Arc<State<K>>, CreateStateError> {
        let now = Instant::now();
        let record = StateRecord::new(
            value,
            self.max_state_bytes,
            self.session_retention,
            self.log_budget.clone(),
        )?;
        let state = Arc::new(State::new(
            id.clone(),
            record,
            hooks,
            ttl.map(|ttl| now + ttl),
        ));
        let mut states = self.states.write().unwrap_or_else(PoisonError::into_inner);
        let expired = match states.get(&id) {
            Some(existing) if existing.is_expired(now) => Some(Arc::clone(existing)),
            Some(_) => return Err(CreateStateError::AlreadyExists(id)),
            None => None,
        };
        states.insert(id, Arc::clone(&state));
        drop(states);
        if let Some(expired) = expired {
            expired.mark_removed(&texts::state_expired(&expired.id), usize::MAX);
        }
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

    /// Removes the state with this identifier, telling its clients why.
    pub(crate) fn remove(&self, id: &str, message: &str) -> bool {
        let removed = self
            .states
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
        removed.is_some_and(|state| state.mark_removed(message, usize::MAX))
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

    /// Removes every state, telling their clients.
    pub(crate) fn remove_all(&self) -> usize {
        let drained: Vec<_> = self
            .states
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .drain()
            .collect();
        drained
            .iter()
            .filter(|(id, state)| state.mark_removed(&texts::state_removed(id), usize::MAX))
            .count()
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
