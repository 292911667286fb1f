//! What a storage backend owns of a state: its value, its version and the outcome logs
//! of its sessions. Nothing here knows about connections, frames or hooks.
//!
//! This is the in-memory backend: a [`StateRecord`] lives inside its state's lock and
//! every operation is synchronous. A durable or shared backend keeps the same
//! operations (create, apply an update with its exactly-once check, record a failure,
//! remove) and adds the I/O behind them; fan-out ([`crate::fanout`]) and hooks
//! ([`crate::hooks`]) stay outside.

use std::time::Duration;

use state_sync_protocol::JsonObject;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::failure::Failure;
use crate::session_log::{LogBudget, Outcome, SessionKey, SessionLogs};

/// The stored part of one state.
#[derive(Debug)]
pub(crate) struct StateRecord {
    value: JsonObject,
    version: u64,
    sessions: SessionLogs,
}

/// The session and request id an update was sent with, when both are known.
pub(crate) type Tracked<'a> = Option<(&'a SessionKey, u64)>;

impl StateRecord {
    /// A new state at version 0.
    pub(crate) fn new(value: JsonObject, session_retention: Duration, budget: LogBudget) -> Self {
        StateRecord {
            value,
            version: 0,
            sessions: SessionLogs::new(session_retention, budget),
        }
    }

    pub(crate) fn value(&self) -> &JsonObject {
        &self.value
    }

    pub(crate) fn version(&self) -> u64 {
        self.version
    }

    /// Merges `updates` (top-level keys replaced) and increments the version, unless
    /// the session already sent this request id: then the answer it got. The caller
    /// then records the answer with [`StateRecord::record_applied`].
    pub(crate) fn apply(
        &mut self,
        updates: &JsonObject,
        tracked: Tracked<'_>,
    ) -> Result<u64, Failure> {
        if let Some((session, request_id)) = tracked {
            self.sessions.check(session, request_id)?;
        }
        state_sync_protocol::apply_updates(&mut self.value, updates);
        self.version += 1;
        Ok(self.version)
    }

    /// Remembers that a request was applied as `version`, and the frame its sender got.
    pub(crate) fn record_applied(
        &mut self,
        session: &SessionKey,
        request_id: u64,
        version: u64,
        reply: Utf8Bytes,
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
