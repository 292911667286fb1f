//! The storage seam: what a backend that keeps states outside the process must do.
//!
//! Every state is held in memory ([`StateRecord`](crate::storage::StateRecord)): attach
//! reads, the merge, the size check and the exactly-once check never wait for I/O.
//! Without a backend that is all (the in-memory default, no I/O at all). With one,
//! every change a state makes is also *submitted* to the backend, under the state's
//! lock, as a [`Change`] that says what changed (an update's top-level keys and its
//! version, never the whole value). The backend answers with a ticket; tickets only
//! grow, so they follow the order each state applied its changes in. Whatever the
//! change means to clients (the broadcast, the sender's acknowledgement) waits until
//! the backend *releases* its ticket through [`Release`], in ticket order, either as
//! saved or as never to be saved (the backend failed). So what a client is told is
//! exactly what a restart gets back.
//!
//! A backend owns, per state: its identifier, value, version, creation time and
//! ttl deadline (wall-clock), and the outcomes of its sessions' requests (so a retry
//! across a restart is still answered, not applied twice). Fan-out, frames and hooks
//! stay outside it.
//!
//! Implementations: [`crate::durable`] (redb, one directory, group commit). A backend
//! shared by several servers keeps the same contract, with the ordering it adds: a
//! change carries the version it produces, so the shared store can commit a state's
//! update only when it follows the stored version and otherwise release the ticket as
//! failed, and [`Backend::load`] is how a server (re)reads a state another one changed.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use state_sync_protocol::{FailureReason, JsonObject};

use crate::session_log::SessionKey;

/// Why the store cannot be used. The message names the path and the cause.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct StoreError(pub(crate) String);

/// How an update ended, as stored for its session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum StoredOutcome {
    Applied(u64),
    Failed(FailureReason, String),
}

/// A change to the store. Values are JSON text, encoded once by the state.
#[derive(Debug)]
pub(crate) enum Change {
    /// A new state (or one created again after `reset_stored`): its whole value.
    Create {
        id: String,
        entries: Vec<(String, String)>,
        created: SystemTime,
        expires: Option<SystemTime>,
    },
    /// An applied update: the top-level keys it set and those it removed, and the
    /// version it produced.
    Update {
        id: String,
        version: u64,
        entries: Vec<(String, String)>,
        removed: Vec<String>,
    },
    /// How a session's request ended.
    Outcome {
        id: String,
        session: SessionKey,
        request_id: u64,
        outcome: StoredOutcome,
    },
    /// The state was removed (by server code, its ttl or self-destruct).
    Remove { id: String },
}

/// What a state that submitted changes does once the backend has decided about them.
pub(crate) trait Release: Send + Sync {
    /// Every change with a ticket up to `committed` is saved; with `failed`, those
    /// after it never will be.
    fn release(&self, committed: u64, failed: bool);
}

/// A stored state, as loaded at start-up.
#[derive(Debug)]
pub(crate) struct Loaded {
    pub(crate) value: JsonObject,
    pub(crate) version: u64,
    pub(crate) created: SystemTime,
    pub(crate) expires: Option<SystemTime>,
    pub(crate) sessions: Vec<(SessionKey, Vec<(u64, StoredOutcome)>)>,
}

/// Waiting for a backend to save something.
pub(crate) type Saving<'a> = Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send + 'a>>;

/// A place states are kept beyond the process. See the module docs for the contract.
pub(crate) trait Backend: Send + Sync + fmt::Debug {
    /// Queues a change and returns its ticket. Called under the lock that ordered the
    /// change, so tickets follow that order; `release` is told when it is decided.
    /// Never blocks on I/O.
    fn submit(&self, change: Change, release: Option<Arc<dyn Release>>) -> u64;

    /// Resolves once `ticket` is saved.
    ///
    /// # Errors
    /// When the backend failed (or closed) before it was.
    fn saved(&self, ticket: u64) -> Saving<'_>;

    /// Resolves once everything submitted so far is saved.
    ///
    /// # Errors
    /// As [`Backend::saved`].
    fn synced(&self) -> Saving<'_>;

    /// Whether the backend failed: nothing submitted now would ever be saved.
    fn failed(&self) -> bool;

    /// Why the store cannot take changes now (its directory is gone, or it failed);
    /// `Ok` when it can.
    fn check(&self) -> Result<(), String>;

    /// The stored state with this identifier, with every change submitted before the
    /// call in it (it may wait for them: it runs when a state is created, not per
    /// message).
    ///
    /// # Errors
    /// When the store cannot be read.
    fn load(&self, id: &str) -> Result<Option<Loaded>, StoreError>;

    /// Saves what is queued and releases the store; later submissions are never saved.
    fn close(&self);
}
