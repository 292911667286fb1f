//! Where states live and how updates fan out: the one seam between connection handling
//! and state storage.
//!
//! Connection handling and [`StateSyncer`](crate::StateSyncer) reach states only
//! through [`Store`] and [`StateEntry`]: look up, create, remove, attach/detach a
//! subscriber, apply an update (merge, version, fan-out), and the per-session log of
//! outcomes that makes retried updates idempotent. This implementation keeps
//! everything in memory. A cluster backend (states in Redis, fan-out over pub/sub)
//! replaces these two types and leaves the connection code as it is.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime};

use slab::Slab;
use state_sync_protocol::{
    DEDUP_WINDOW, FailureReason, JsonObject, ServerMessage, StateConnectionEstablished,
    StateRemoved, StateUpdated,
};
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::options::{AllowHook, InterceptHook, SelfDestructHook, StateOptions};
use crate::outbox::Outbox;

/// Most sessions a state remembers that have no connection attached; past this the
/// least recently seen are forgotten first.
const MAX_DETACHED_SESSIONS: usize = 4096;

/// Encodes a message as a frame that can be queued for many connections (cloning it
/// clones a reference count, not the text).
pub(crate) fn frame(message: &ServerMessage) -> Utf8Bytes {
    message.to_json().into()
}

/// The outcome of an update, as remembered for its session.
#[derive(Debug, Clone)]
pub(crate) enum Outcome {
    Applied {
        version: u64,
        updates: Arc<JsonObject>,
    },
    Failed {
        reason: FailureReason,
        message: String,
    },
}

impl Outcome {
    /// The answer to the client that sent the update with `request_id`.
    pub(crate) fn reply(&self, request_id: u64) -> ServerMessage {
        match self {
            Outcome::Applied { version, updates } => ServerMessage::StateUpdated(StateUpdated {
                updates: Arc::clone(updates),
                version: Some(*version),
                request_id: Some(request_id),
            }),
            Outcome::Failed { reason, message } => {
                ServerMessage::update_failed(message.clone(), *reason, Some(request_id))
            }
        }
    }
}

/// What the state knows of an update a session sends.
#[derive(Debug, Clone)]
pub(crate) enum Prior {
    /// Never seen: process it.
    New,
    /// Seen before: answer with the same outcome.
    Seen(Outcome),
    /// Older than what the state remembers of the session.
    Forgotten,
}

#[derive(Debug)]
struct SessionLog {
    /// The highest request id seen, `None` before the first.
    last_request_id: Option<u64>,
    outcomes: VecDeque<(u64, Outcome)>,
    attached: usize,
    last_seen: Instant,
}

impl SessionLog {
    fn is_new(&self, request_id: u64) -> bool {
        self.last_request_id.is_none_or(|last| request_id > last)
    }

    fn prior(&self, request_id: u64) -> Prior {
        if self.is_new(request_id) {
            return Prior::New;
        }
        self.outcomes
            .iter()
            .rev()
            .find(|(id, _)| *id == request_id)
            .map_or(Prior::Forgotten, |(_, outcome)| {
                Prior::Seen(outcome.clone())
            })
    }

    /// Remembers the outcome of a new request id; an id already seen keeps its first
    /// outcome (a late failure from a connection that was replaced must not overwrite
    /// an application).
    fn record(&mut self, request_id: u64, outcome: Outcome) {
        if !self.is_new(request_id) {
            return;
        }
        self.last_request_id = Some(request_id);
        if self.outcomes.len() == DEDUP_WINDOW {
            self.outcomes.pop_front();
        }
        self.outcomes.push_back((request_id, outcome));
    }
}

#[derive(Debug)]
struct Subscriber {
    outbox: Outbox,
    session: Option<String>,
}

struct Inner {
    value: JsonObject,
    version: u64,
    removed: bool,
    subscribers: Slab<Subscriber>,
    sessions: HashMap<String, SessionLog>,
    last_pruned: Instant,
}

/// Who sent an update being applied.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Origin<'a> {
    /// The sender's subscription, which gets the echo with the request id.
    pub(crate) subscriber: usize,
    pub(crate) request_id: Option<u64>,
    pub(crate) session: Option<&'a str>,
}

/// Why [`StateEntry::apply`] applied nothing.
#[derive(Debug)]
pub(crate) enum NotApplied {
    /// The state was removed.
    Gone,
    /// The session already sent this request id.
    Duplicate(Prior),
}

/// One state: its value, version, subscribers, hooks and session logs.
pub(crate) struct StateEntry<K> {
    pub(crate) id: String,
    pub(crate) created_at: SystemTime,
    pub(crate) expires_at: Option<Instant>,
    pub(crate) allow_connecting_client: Option<AllowHook<K>>,
    pub(crate) intercept_state_update: Option<InterceptHook<K>>,
    pub(crate) self_destruct: Option<SelfDestructHook>,
    session_retention: Duration,
    inner: Mutex<Inner>,
}

impl<K> StateEntry<K> {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // No user code runs under this lock, so a poisoned lock still holds a
        // consistent state.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn is_expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }

    /// The value and version, or `None` once removed.
    pub(crate) fn snapshot(&self) -> Option<(JsonObject, u64)> {
        let inner = self.lock();
        (!inner.removed).then(|| (inner.value.clone(), inner.version))
    }

    pub(crate) fn clients(&self) -> usize {
        self.lock().subscribers.len()
    }

    /// Adds a subscriber and queues STATE_CONNECTION_ESTABLISHED for it, under the same
    /// lock that orders broadcasts, so it sees every later update and no earlier one.
    /// `None` when the state was removed meanwhile.
    pub(crate) fn attach(&self, outbox: Outbox, session: Option<String>) -> Option<usize> {
        let mut inner = self.lock();
        if inner.removed {
            return None;
        }
        let now = Instant::now();
        if let Some(session) = &session {
            if !inner.sessions.contains_key(session) {
                self.make_room_for_a_session(&mut inner, now);
            }
            let log = inner
                .sessions
                .entry(session.clone())
                .or_insert_with(|| SessionLog {
                    last_request_id: None,
                    outcomes: VecDeque::new(),
                    attached: 0,
                    last_seen: now,
                });
            log.attached += 1;
            log.last_seen = now;
        }
        outbox.push(frame(&ServerMessage::StateConnectionEstablished(
            StateConnectionEstablished {
                state: inner.value.clone(),
                version: Some(inner.version),
            },
        )));
        Some(inner.subscribers.insert(Subscriber { outbox, session }))
    }

    /// Forgets sessions that have had no connection for the retention period (a full
    /// scan, at most a few times per period), then, while more than
    /// [`MAX_DETACHED_SESSIONS`] have no connection, the least recently seen of them.
    fn make_room_for_a_session(&self, inner: &mut Inner, now: Instant) {
        if now.duration_since(inner.last_pruned) >= self.session_retention / 8 {
            inner.last_pruned = now;
            let retention = self.session_retention;
            inner
                .sessions
                .retain(|_, log| log.attached > 0 || now.duration_since(log.last_seen) < retention);
        }
        if inner.sessions.len() < MAX_DETACHED_SESSIONS + inner.subscribers.len() {
            return;
        }
        let oldest = inner
            .sessions
            .iter()
            .filter(|(_, log)| log.attached == 0)
            .min_by_key(|(_, log)| log.last_seen)
            .map(|(key, _)| key.clone());
        if let Some(key) = oldest {
            inner.sessions.remove(&key);
        }
    }

    /// Removes a subscriber. Returns how many clients are left, or `None` when it was
    /// not attached (or the state is gone).
    pub(crate) fn detach(&self, subscriber: usize) -> Option<usize> {
        let mut inner = self.lock();
        let removed = inner.subscribers.try_remove(subscriber)?;
        if let Some(session) = removed.session
            && let Some(log) = inner.sessions.get_mut(&session)
        {
            log.attached = log.attached.saturating_sub(1);
            log.last_seen = Instant::now();
        }
        Some(inner.subscribers.len())
    }

    /// What the state remembers of `request_id` from `session`.
    pub(crate) fn prior(&self, session: &str, request_id: u64) -> Prior {
        self.lock()
            .sessions
            .get(session)
            .map_or(Prior::New, |log| log.prior(request_id))
    }

    /// Remembers that an update of `session` failed, so a retry fails the same way.
    pub(crate) fn record_failure(
        &self,
        session: &str,
        request_id: u64,
        reason: FailureReason,
        message: &str,
    ) {
        if let Some(log) = self.lock().sessions.get_mut(session) {
            log.record(
                request_id,
                Outcome::Failed {
                    reason,
                    message: message.to_owned(),
                },
            );
        }
    }

    /// Merges `updates`, increments the version, and queues STATE_UPDATED for every
    /// subscriber: one serialization for all, plus one for the sender's echo when it
    /// carries a request id. Returns the new version and the updates as applied.
    pub(crate) fn apply(
        &self,
        updates: JsonObject,
        origin: Option<Origin<'_>>,
    ) -> Result<(u64, Arc<JsonObject>), NotApplied> {
        let mut inner = self.lock();
        if inner.removed {
            return Err(NotApplied::Gone);
        }
        let tracked = origin.and_then(|o| Some((o.session?, o.request_id?)));
        if let Some((session, request_id)) = tracked
            && let Some(log) = inner.sessions.get(session)
            && !log.is_new(request_id)
        {
            return Err(NotApplied::Duplicate(log.prior(request_id)));
        }
        state_sync_protocol::apply_updates(&mut inner.value, &updates);
        inner.version += 1;
        let version = inner.version;
        let updates = Arc::new(updates);
        let broadcast = frame(&ServerMessage::StateUpdated(StateUpdated {
            updates: Arc::clone(&updates),
            version: Some(version),
            request_id: None,
        }));
        let echo = origin.and_then(|o| {
            let request_id = o.request_id?;
            let message = ServerMessage::StateUpdated(StateUpdated {
                updates: Arc::clone(&updates),
                version: Some(version),
                request_id: Some(request_id),
            });
            Some((o.subscriber, frame(&message)))
        });
        match echo {
            Some((sender, echo)) => {
                for (key, subscriber) in &inner.subscribers {
                    let frame = if key == sender {
                        echo.clone()
                    } else {
                        broadcast.clone()
                    };
                    subscriber.outbox.push(frame);
                }
            }
            None => {
                for (_, subscriber) in &inner.subscribers {
                    subscriber.outbox.push(broadcast.clone());
                }
            }
        }
        if let Some((session, request_id)) = tracked
            && let Some(log) = inner.sessions.get_mut(session)
        {
            log.record(
                request_id,
                Outcome::Applied {
                    version,
                    updates: Arc::clone(&updates),
                },
            );
        }
        Ok((version, updates))
    }

    /// Marks the state removed, tells every subscriber with STATE_DOES_NOT_EXIST and
    /// detaches them all. `false` when it was already removed, or when it has more
    /// than `max_clients` clients (some attached since the caller decided).
    fn mark_removed(&self, message: &str, max_clients: usize) -> bool {
        let mut inner = self.lock();
        if inner.removed || inner.subscribers.len() > max_clients {
            return false;
        }
        inner.removed = true;
        let notice = frame(&ServerMessage::StateRemoved(StateRemoved {
            state_identifier: self.id.clone(),
            message: message.to_owned(),
        }));
        for subscriber in inner.subscribers.drain() {
            subscriber.outbox.push(notice.clone());
        }
        inner.sessions.clear();
        true
    }
}

/// Every state of a server, by identifier.
pub(crate) struct Store<K> {
    states: RwLock<HashMap<String, Arc<StateEntry<K>>>>,
    session_retention: Duration,
}

impl<K> Store<K> {
    pub(crate) fn new(session_retention: Duration) -> Self {
        Store {
            states: RwLock::new(HashMap::new()),
            session_retention,
        }
    }

    /// Creates a state; the identifier must be free (an expired state's is).
    pub(crate) fn create(
        &self,
        id: String,
        value: JsonObject,
        options: StateOptions<K>,
    ) -> Result<Arc<StateEntry<K>>, crate::CreateStateError> {
        let now = Instant::now();
        let entry = Arc::new(StateEntry {
            id: id.clone(),
            created_at: SystemTime::now(),
            expires_at: options.ttl.map(|ttl| now + ttl),
            allow_connecting_client: options.allow_connecting_client,
            intercept_state_update: options.intercept_state_update,
            self_destruct: options.self_destruct,
            session_retention: self.session_retention,
            inner: Mutex::new(Inner {
                value,
                version: 0,
                removed: false,
                subscribers: Slab::new(),
                sessions: HashMap::new(),
                last_pruned: now,
            }),
        });
        let mut states = self.states.write().unwrap_or_else(PoisonError::into_inner);
        let expired = match states.get(&id) {
            Some(existing) if existing.is_expired(now) => Some(Arc::clone(existing)),
            Some(_) => return Err(crate::CreateStateError::AlreadyExists(id)),
            None => None,
        };
        states.insert(id, Arc::clone(&entry));
        drop(states);
        if let Some(expired) = expired {
            expired.mark_removed(&format!("State {} expired", expired.id), usize::MAX);
        }
        Ok(entry)
    }

    /// The live state with this identifier. An expired state is removed (its clients
    /// told) and not returned.
    pub(crate) fn get(&self, id: &str) -> Option<Arc<StateEntry<K>>> {
        let entry = Arc::clone(
            self.states
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .get(id)?,
        );
        if entry.is_expired(Instant::now()) {
            self.remove_entry(&entry, &format!("State {id} expired"));
            return None;
        }
        Some(entry)
    }

    /// Removes the state with this identifier, telling its clients why.
    pub(crate) fn remove(&self, id: &str, message: &str) -> bool {
        let removed = self
            .states
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
        removed.is_some_and(|entry| entry.mark_removed(message, usize::MAX))
    }

    /// Removes this very state, not one created later under the same identifier.
    pub(crate) fn remove_entry(&self, entry: &Arc<StateEntry<K>>, message: &str) -> bool {
        self.remove_entry_if(entry, message, usize::MAX)
    }

    /// Removes this very state unless more than `max_clients` are attached to it.
    pub(crate) fn remove_entry_if(
        &self,
        entry: &Arc<StateEntry<K>>,
        message: &str,
        max_clients: usize,
    ) -> bool {
        let mut states = self.states.write().unwrap_or_else(PoisonError::into_inner);
        if !entry.mark_removed(message, max_clients) {
            return false;
        }
        if states
            .get(&entry.id)
            .is_some_and(|current| Arc::ptr_eq(current, entry))
        {
            states.remove(&entry.id);
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
            .filter(|(id, entry)| {
                entry.mark_removed(&format!("State {id} was removed"), usize::MAX)
            })
            .count()
    }

    /// Identifiers of the states that have not expired.
    pub(crate) fn ids(&self) -> Vec<String> {
        let now = Instant::now();
        self.states
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|(_, entry)| !entry.is_expired(now))
            .map(|(id, _)| id.clone())
            .collect()
    }
}
