//! What a [`ClientCore`](crate::ClientCore) tells its driver ([`Event`]), and why an
//! update failed ([`UpdateFailure`]).
//!
//! Both enums are contracts the two clients consume, so they are exhaustive: a new
//! variant does not compile until both clients handle it (and, for `UpdateFailure`,
//! which the native client passes on, until applications that match on it do).

use std::sync::Arc;

use crate::{FailureReason, JsonObject, StateDiff};

/// Why an update was not applied, as a client reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpdateFailure {
    /// The server refused it (vetoed, invalid, state gone, …), or the client did
    /// before sending it (too large, not attached).
    Rejected {
        /// Why, for programs.
        reason: FailureReason,
        /// Why, for people.
        message: String,
    },
    /// The update was sent, but the client stopped waiting for its outcome (it was
    /// closed, attached to another state, or the state went away): the server may or
    /// may not have applied it. Check the state before sending it again.
    Unconfirmed,
    /// The update was never sent: the client is no longer attached to its state (it
    /// was removed, the attach was refused, or the client attached to another state).
    Detached {
        /// Why.
        message: String,
    },
    /// The update was never sent: the client was closed, or gave up reconnecting.
    Closed,
}

impl std::fmt::Display for UpdateFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpdateFailure::Rejected { message, .. } => f.write_str(message),
            UpdateFailure::Unconfirmed => f.write_str(
                "the update was sent, but the client stopped waiting for its outcome; the \
                 server may or may not have applied it",
            ),
            UpdateFailure::Detached { message } => {
                write!(
                    f,
                    "not sent, the client is not attached to the state: {message}"
                )
            }
            UpdateFailure::Closed => {
                f.write_str("not sent: the client was closed before the update could be sent")
            }
        }
    }
}

impl std::error::Error for UpdateFailure {}

/// How the others present in a client's state changed.
#[derive(Debug, Clone, PartialEq)]
pub enum PresenceEvent {
    /// The whole list was replaced: on attach (and re-attach) with what the server
    /// sent, or emptied when the client left the state. The entries, in the order they
    /// joined.
    Synced(Vec<crate::PresenceEntry>),
    /// Somebody joined.
    Joined(crate::PresenceEntry),
    /// Somebody's presence changed: the entry as it is now.
    Updated(crate::PresenceEntry),
    /// Somebody left: the entry as it was.
    Left(crate::PresenceEntry),
}

/// What the core asks its driver to do or tell.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Send this text frame.
    Send(String),
    /// Attached to the state (first time, or again after a reconnect). `changes` is
    /// what differs from the local copy on a re-attach (listeners should hear it);
    /// `None` on the first attach, and when nothing changed.
    Attached {
        /// The state attached to.
        state_identifier: String,
        /// The whole state.
        state: JsonObject,
        /// What changed while the client was away.
        changes: Option<StateDiff>,
    },
    /// An update was applied to the local state.
    Updated {
        /// The updates as applied by the server.
        updates: Arc<JsonObject>,
        /// The values the updated keys had just before (absent when new).
        previous: JsonObject,
    },
    /// The server applied the client's update `request_id`.
    Acknowledged {
        /// The update's request id.
        request_id: u64,
        /// The updates as applied (after the server's interceptor).
        updates: Arc<JsonObject>,
        /// The state's version after it (`None` from the original server).
        version: Option<u64>,
    },
    /// The client's update `request_id` was not applied (or its outcome is unknown).
    Failed {
        /// The update's request id.
        request_id: u64,
        /// Why.
        failure: UpdateFailure,
    },
    /// Attaching was refused (STATE_CONNECTION_ERROR); the client is attached to no
    /// state now.
    AttachFailed {
        /// The state the client tried to attach to.
        state_identifier: String,
        /// The server's message.
        message: String,
    },
    /// The attached state was removed on the server; the client is attached to no
    /// state now.
    StateRemoved {
        /// The state that was removed.
        state_identifier: String,
        /// The server's message.
        message: String,
    },
    /// The others present in the attached state changed (see [`PresenceEvent`]).
    Presence(PresenceEvent),
    /// A presence the client set was refused by the server; the previous one stays.
    PresenceFailed {
        /// Why, for programs.
        reason: crate::PresenceFailureReason,
        /// Why, for people.
        message: String,
    },
    /// Call [`ClientCore::presence_due`](crate::ClientCore::presence_due) after this
    /// long: presence is sent at most once per
    /// [`PRESENCE_INTERVAL`](crate::PRESENCE_INTERVAL), and a later change waits for
    /// that call. At most one is outstanding at a time.
    PresenceDue(std::time::Duration),
    /// The server reported an error not tied to one update, or sent an unreadable frame.
    ServerError {
        /// What went wrong.
        message: String,
    },
}
