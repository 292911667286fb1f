//! The per-session outcome logs that make retried updates exactly-once.
//!
//! Policy: a client of this project attaches with a session id and numbers its updates
//! (request ids that only grow). For each session a state remembers the highest request
//! id it has seen and the outcomes of the last [`DEDUP_WINDOW`] of them. An update
//! whose id is not above the highest is a retry: it is answered with its first outcome
//! and never applied again; one older than what is remembered is answered
//! `outcomeUnknown`. A session is keyed by the client identifier the middleware
//! accepted *and* the session id ([`SessionKey`]), so clients cannot reach each other's
//! logs. A session with no connection attached is kept for the server's
//! session retention (default 10 minutes); while more than [`MAX_DETACHED_SESSIONS`]
//! have no connection, the least recently seen is forgotten first.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use state_sync_protocol::{DEDUP_WINDOW, JsonObject};

use crate::failure::Failure;

/// Most sessions a state remembers that have no connection attached.
pub(crate) const MAX_DETACHED_SESSIONS: usize = 4096;

/// A session as a state knows it: the client identifier the middleware accepted and
/// the session id the client chose. Structured, so that no choice of either can make
/// two different pairs equal.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct SessionKey {
    pub(crate) client: String,
    pub(crate) session: String,
}

/// The outcome of an update, as remembered for its session.
#[derive(Debug, Clone)]
pub(crate) enum Outcome {
    Applied {
        version: u64,
        updates: Arc<JsonObject>,
    },
    Failed(Failure),
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

    /// `Ok` for a request id never seen; otherwise the answer to give instead.
    fn check(&self, request_id: u64) -> Result<(), Failure> {
        if self.is_new(request_id) {
            return Ok(());
        }
        Err(self
            .outcomes
            .iter()
            .rev()
            .find(|(id, _)| *id == request_id)
            .map_or(Failure::OutcomeUnknown, |(_, outcome)| {
                Failure::Repeated(Box::new(outcome.clone()))
            }))
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

/// The session logs of one state.
#[derive(Debug)]
pub(crate) struct SessionLogs {
    logs: HashMap<SessionKey, SessionLog>,
    retention: Duration,
    last_pruned: Instant,
}

impl SessionLogs {
    pub(crate) fn new(retention: Duration) -> Self {
        SessionLogs {
            logs: HashMap::new(),
            retention,
            last_pruned: Instant::now(),
        }
    }

    /// A connection of `key` attached; `attached_connections` is how many connections
    /// the state has, so that room is made only among sessions without one.
    pub(crate) fn attach(&mut self, key: &SessionKey, attached_connections: usize) {
        let now = Instant::now();
        if !self.logs.contains_key(key) {
            self.make_room(now, attached_connections);
        }
        let log = self.logs.entry(key.clone()).or_insert_with(|| SessionLog {
            last_request_id: None,
            outcomes: VecDeque::new(),
            attached: 0,
            last_seen: now,
        });
        log.attached += 1;
        log.last_seen = now;
    }

    /// A connection of `key` detached.
    pub(crate) fn detach(&mut self, key: &SessionKey) {
        if let Some(log) = self.logs.get_mut(key) {
            log.attached = log.attached.saturating_sub(1);
            log.last_seen = Instant::now();
        }
    }

    /// `Ok` when `request_id` is new for the session; otherwise the answer to give.
    pub(crate) fn check(&self, key: &SessionKey, request_id: u64) -> Result<(), Failure> {
        self.logs
            .get(key)
            .map_or(Ok(()), |log| log.check(request_id))
    }

    /// Remembers the outcome of a new request of the session.
    pub(crate) fn record(&mut self, key: &SessionKey, request_id: u64, outcome: Outcome) {
        if let Some(log) = self.logs.get_mut(key) {
            log.record(request_id, outcome);
        }
    }

    pub(crate) fn clear(&mut self) {
        self.logs.clear();
    }

    /// Forgets sessions that have had no connection for the retention period (a full
    /// scan, at most a few times per period), then, while more than
    /// [`MAX_DETACHED_SESSIONS`] have no connection, the least recently seen of them.
    fn make_room(&mut self, now: Instant, attached_connections: usize) {
        if now.duration_since(self.last_pruned) >= self.retention / 8 {
            self.last_pruned = now;
            let retention = self.retention;
            self.logs
                .retain(|_, log| log.attached > 0 || now.duration_since(log.last_seen) < retention);
        }
        if self.logs.len() < MAX_DETACHED_SESSIONS + attached_connections {
            return;
        }
        let oldest = self
            .logs
            .iter()
            .filter(|(_, log)| log.attached == 0)
            .min_by_key(|(_, log)| log.last_seen)
            .map(|(key, _)| key.clone());
        if let Some(key) = oldest {
            self.logs.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(client: &str, session: &str) -> SessionKey {
        SessionKey {
            client: client.into(),
            session: session.into(),
        }
    }

    fn applied(version: u64) -> Outcome {
        Outcome::Applied {
            version,
            updates: Arc::new(JsonObject::new()),
        }
    }

    #[test]
    fn a_retry_gets_its_first_outcome_and_an_old_one_is_unknown() {
        let mut logs = SessionLogs::new(Duration::from_secs(60));
        let alice = key("alice", "s");
        logs.attach(&alice, 1);
        assert!(logs.check(&alice, 1).is_ok());
        logs.record(&alice, 1, applied(7));
        logs.record(&alice, 1, Outcome::Failed(Failure::Vetoed));
        match logs.check(&alice, 1) {
            Err(Failure::Repeated(outcome)) => {
                assert!(matches!(*outcome, Outcome::Applied { version: 7, .. }));
            }
            other => panic!("{other:?}"),
        }
        for id in 2..(DEDUP_WINDOW as u64 + 3) {
            logs.record(&alice, id, applied(id));
        }
        assert!(matches!(
            logs.check(&alice, 1),
            Err(Failure::OutcomeUnknown)
        ));
    }

    #[test]
    fn keys_of_different_clients_never_collide() {
        let mut logs = SessionLogs::new(Duration::from_secs(60));
        let first = key("A\nX", "Y");
        let second = key("A", "X\nY");
        logs.attach(&first, 1);
        logs.attach(&second, 2);
        logs.record(&first, 1, applied(1));
        assert!(logs.check(&first, 1).is_err());
        assert!(logs.check(&second, 1).is_ok());
    }
}
