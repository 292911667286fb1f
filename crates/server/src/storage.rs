//! What is stored of a state: its value, its version and the outcome logs of its
//! sessions. Nothing here knows about connections, frames or hooks.
//!
//! This is the in-memory part, and all of the in-memory default: a [`StateRecord`]
//! lives inside its state's lock and every operation is synchronous. A backend that
//! keeps states beyond the process ([`crate::backend`]) is handed each change this
//! record makes; fan-out ([`crate::fanout`]) and hooks ([`crate::hooks`]) stay outside.

use std::sync::Arc;
use std::time::Duration;

use crate::wire::Frame;
use serde_json::Value;
use state_sync_protocol::{JsonObject, Resolved, Update};

use crate::error::CreateStateError;
use crate::failure::Failure;
use crate::session_log::{LogBudget, Outcome, SessionKey, SessionLogs};

/// The stored part of one state.
#[derive(Debug)]
pub(crate) struct StateRecord {
    /// Shared with snapshots being encoded outside the state's lock; an update copies
    /// it only while one is.
    value: Arc<JsonObject>,
    version: u64,
    /// The size of the value as JSON text, and its limit.
    bytes: usize,
    max_bytes: usize,
    sessions: SessionLogs,
}

/// Counts the bytes written to it.
struct Counter(usize);

impl std::io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The length of a value as JSON text, without building the text.
pub(crate) fn json_len<T: serde::Serialize + ?Sized>(value: &T) -> usize {
    let mut counter = Counter(0);
    // Writing to a counter cannot fail, and every map key of a JSON value is a string.
    let _ = serde_json::to_writer(&mut counter, value);
    counter.0
}

/// What one top-level entry adds to the state's JSON text: `"key":value,`.
fn entry_len(key: &str, value: &Value) -> usize {
    json_len(key) + 1 + json_len(value) + 1
}

/// The size of `value` as JSON text: `{`, `}`, and each entry with a comma but the last.
pub(crate) fn state_len(value: &JsonObject) -> usize {
    json_size(
        value.iter().map(|(key, value)| entry_len(key, value)).sum(),
        value.len(),
    )
}

/// The size of an object's JSON text from its entries' sizes (each counted with a
/// comma) and how many there are.
fn json_size(entries: usize, count: usize) -> usize {
    2 + entries - usize::from(count > 0)
}

/// The session and request id an update was sent with, when both are known.
pub(crate) type Tracked<'a> = Option<(&'a SessionKey, u64)>;

impl StateRecord {
    /// A new state at version 0; `max_bytes` limits the size of its JSON text.
    pub(crate) fn new(
        value: JsonObject,
        max_bytes: usize,
        session_retention: Duration,
        budget: LogBudget,
    ) -> Result<Self, CreateStateError> {
        let bytes = state_len(&value);
        if bytes > max_bytes {
            return Err(CreateStateError::InitialValueTooLarge {
                size: bytes,
                limit: max_bytes,
            });
        }
        Ok(StateRecord {
            bytes,
            value: Arc::new(value),
            version: 0,
            max_bytes,
            sessions: SessionLogs::new(session_retention, budget),
        })
    }

    /// A state loaded from storage: its value and version, and its sessions' outcomes.
    pub(crate) fn restored(
        value: JsonObject,
        version: u64,
        sessions: Vec<(SessionKey, Vec<(u64, Outcome)>)>,
        max_bytes: usize,
        session_retention: Duration,
        budget: LogBudget,
    ) -> Self {
        let bytes = state_len(&value);
        let mut logs = SessionLogs::new(session_retention, budget);
        for (key, outcomes) in sessions {
            logs.restore(key, outcomes);
        }
        StateRecord {
            bytes,
            value: Arc::new(value),
            version,
            // A stored state larger than today's limit stays, and cannot grow.
            max_bytes,
            sessions: logs,
        }
    }

    /// The value, shared (cloning it is cheap).
    pub(crate) fn value(&self) -> &Arc<JsonObject> {
        &self.value
    }

    pub(crate) fn version(&self) -> u64 {
        self.version
    }

    /// The largest its value may grow, as JSON text.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    /// Applies `update` (its set keys replaced, its operations resolved against the
    /// current value) and increments the version, unless the session already sent
    /// this request id: then the answer it got. A conditional update at another
    /// version fails with [`Failure::Conflict`]. Returns the new version and what the
    /// update resolved to; the caller then records the answer with
    /// [`StateRecord::record_applied`].
    pub(crate) fn apply(
        &mut self,
        update: &Update,
        tracked: Tracked<'_>,
    ) -> Result<(u64, Resolved), Failure> {
        if let Some((session, request_id)) = tracked {
            self.sessions.check(session, request_id)?;
        }
        if let Some(expected) = update.expected_version
            && expected != self.version
        {
            return Err(Failure::Conflict {
                version: self.version,
            });
        }
        let (resolved, bytes) = self.resolve(update)?;
        self.commit(&resolved, bytes, self.version + 1);
        Ok((self.version, resolved))
    }

    /// What `update` resolves to against the current value (its version is not
    /// checked), and the size of the value it would make; fails when that is over the
    /// limit or an operation does not fit.
    pub(crate) fn resolve(&self, update: &Update) -> Result<(Resolved, usize), Failure> {
        let resolved = update
            .resolve(&self.value)
            .map_err(|error| Failure::InvalidOperation(error.0))?;
        let bytes = self.size_after(&resolved);
        if bytes > self.max_bytes {
            return Err(Failure::StateTooLarge {
                size: bytes,
                limit: self.max_bytes,
            });
        }
        Ok((resolved, bytes))
    }

    /// The size of the value's JSON text once `resolved` is applied.
    pub(crate) fn size_after(&self, resolved: &Resolved) -> usize {
        // The entries' sizes, each with its comma (undoing `json_size`).
        let mut entries = self.bytes + usize::from(!self.value.is_empty()) - 2;
        let mut count = self.value.len();
        for (key, value) in &resolved.values {
            entries += entry_len(key, value);
            match self.value.get(key) {
                Some(old) => entries -= entry_len(key, old),
                None => count += 1,
            }
        }
        for key in &resolved.removed {
            if let Some(old) = self.value.get(key) {
                entries -= entry_len(key, old);
                count -= 1;
            }
        }
        json_size(entries, count)
    }

    /// Applies what an update resolved to, making `version`; `bytes` is the size
    /// [`StateRecord::size_after`] gave for it.
    pub(crate) fn commit(&mut self, resolved: &Resolved, bytes: usize, version: u64) {
        let value = Arc::make_mut(&mut self.value);
        state_sync_protocol::apply_updates(value, &resolved.values);
        for key in &resolved.removed {
            value.shift_remove(key);
        }
        self.bytes = bytes;
        self.version = version;
    }

    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    /// Replaces the value and version (a replica that resynced).
    pub(crate) fn replace(&mut self, value: JsonObject, version: u64) {
        self.bytes = state_len(&value);
        self.value = Arc::new(value);
        self.version = version;
    }

    /// Remembers that a request was applied as `version`; the answer to a retry will
    /// be its version alone (with a durable backend, until it is saved and after).
    pub(crate) fn record_version(&mut self, session: &SessionKey, request_id: u64, version: u64) {
        let outcome = Outcome::Applied {
            version,
            reply: None,
        };
        self.sessions.record(session, request_id, outcome);
    }

    /// Remembers that a request was applied as `version`, and the frame its sender got.
    pub(crate) fn record_applied(
        &mut self,
        session: &SessionKey,
        request_id: u64,
        version: u64,
        reply: Frame,
    ) {
        let outcome = Outcome::Applied {
            version,
            reply: Some(reply),
        };
        self.sessions.record(session, request_id, outcome);
    }

    /// `Ok` when the session never sent `request_id`; otherwise the answer it got.
    pub(crate) fn check(&self, session: &SessionKey, request_id: u64) -> Result<(), Failure> {
        self.sessions.check(session, request_id)
    }

    /// Remembers that a request failed, so that its retry fails the same way.
    pub(crate) fn record_failure(
        &mut self,
        session: &SessionKey,
        request_id: u64,
        failure: Failure,
    ) {
        self.sessions
            .record(session, request_id, Outcome::Failed(failure));
    }

    /// A connection of the session attached; `last_sent` is the highest request id
    /// it sent before, for a session the state does not know.
    pub(crate) fn session_attached(&mut self, session: &SessionKey, last_sent: Option<u64>) {
        self.sessions.attach(session, last_sent);
    }

    pub(crate) fn session_detached(&mut self, session: &SessionKey) {
        self.sessions.detach(session);
    }

    /// The state is removed: its sessions go with it.
    pub(crate) fn forget_sessions(&mut self) {
        self.sessions.clear();
    }
}
