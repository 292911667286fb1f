//! Why an operation of a client or of server code did nothing: the server's one
//! internal failure type, and its one mapping to the wire (texts from
//! [`state_sync_protocol::texts`]) and to the public [`UpdateError`].

use std::sync::Arc;

use crate::wire::Frame;
use state_sync_protocol::texts::{self, NOT_ALLOWED_TO_CONNECT, UPDATE_VETOED};
use state_sync_protocol::{
    DEDUP_WINDOW, FailureReason, JsonObject, ServerMessage, StateUpdated, UpdateFailed,
};

use crate::error::UpdateError;
use crate::fanout::frame;
use crate::hooks::HookFailure;
use crate::session_log::Outcome;

/// Most distinct session ids one connection may attach with (a client keeps one).
pub(crate) const MAX_SESSIONS_PER_CONNECTION: usize = 16;

/// Why an attach or an update did nothing.
#[derive(Debug, Clone)]
pub(crate) enum Failure {
    /// Attach: no state has this identifier.
    NoSuchState(String),
    /// Attach: the state's `allow_connecting_client` said no.
    NotAllowed,
    /// Attach: the connection has used [`MAX_SESSIONS_PER_CONNECTION`] session ids.
    TooManySessions,
    /// Attach: the state's `allow_connecting_client` panicked or hung.
    AllowHookFailed { state: String, cause: HookFailure },
    /// Attach: the state's `public_identity` panicked or hung.
    IdentityHookFailed { state: String, cause: HookFailure },
    /// Attach: the storage backend failed, so the state in memory may hold changes
    /// that were never saved; nobody is shown them.
    StoreUnusable(String),
    /// Update: the state was removed (or expired) before the update was applied.
    StateGone(String),
    /// Update: the connection is not attached to a state.
    NotAttached,
    /// Update: the interceptor returned `None`.
    Vetoed,
    /// Update: the interceptor panicked or hung.
    InterceptorFailed(HookFailure),
    /// Update: the state's JSON text would be `size` bytes, over its `limit`.
    StateTooLarge { size: usize, limit: usize },
    /// Update: a retry older than what the state remembers of its session.
    OutcomeUnknown,
    /// Update: the storage backend could not save it.
    StorageFailed(String),
    /// Update: a conditional update expected another version; the state is at this one.
    Conflict { version: u64 },
    /// Update: an operation does not fit the key's current value.
    InvalidOperation(String),
    /// Update: a failure loaded from storage (its reason and message as sent).
    Remembered {
        reason: FailureReason,
        message: String,
    },
    /// Update: a retry of a request the state has answered; it gets the same answer.
    Repeated(Box<Outcome>),
    /// Attach or update, on a server of a cluster: Redis cannot be reached (why). The
    /// client is not answered: its connection is closed with
    /// [`UNREACHABLE_CLOSE_CODE`](crate::cluster::UNREACHABLE_CLOSE_CODE), so that it
    /// reconnects, attaches again and retries its updates, which Redis applies once.
    Unreachable(String),
}

impl Failure {
    /// Whether a session remembers this failure, so that a retry fails the same way.
    /// A state that is gone has no session logs, and a repeat is already remembered.
    pub(crate) fn is_remembered(&self) -> bool {
        matches!(
            self,
            Failure::Vetoed
                | Failure::InterceptorFailed(_)
                | Failure::StateTooLarge { .. }
                | Failure::Conflict { .. }
                | Failure::InvalidOperation(_)
        )
    }

    /// How storage remembers this failure: the reason and message the client got.
    pub(crate) fn stored(&self) -> Option<(FailureReason, String)> {
        let reply = self.message(Some(0))?;
        match reply {
            ServerMessage::StateUpdateFailed(failed) => Some((
                failed.reason.unwrap_or(FailureReason::Other),
                failed.message,
            )),
            _ => None,
        }
    }

    /// The frame for the client, `None` when the original protocol says nothing (a
    /// veto of an update without a request id).
    pub(crate) fn reply(&self, request_id: Option<u64>) -> Option<Frame> {
        if let Failure::Repeated(outcome) = self
            && let Outcome::Applied { version, reply } = outcome.as_ref()
        {
            // The frame the sender got, or (dropped by the budget) its version alone.
            return Some(reply.clone().unwrap_or_else(|| {
                frame(&ServerMessage::StateUpdated(StateUpdated {
                    updates: Arc::new(JsonObject::new()),
                    version: Some(*version),
                    request_id,
                    removed: Vec::new(),
                    ops: Vec::new(),
                }))
            }));
        }
        self.message(request_id).map(|message| frame(&message))
    }

    /// For an update refused (not a retry answered again): its reason, for the metrics.
    pub(crate) fn update_reason(&self) -> Option<&'static str> {
        if matches!(self, Failure::Repeated(_)) {
            return None;
        }
        // With a request id: a veto without one is silent, but still a veto.
        let Some(ServerMessage::StateUpdateFailed(failed)) = self.message(Some(0)) else {
            return None;
        };
        Some(match failed.reason? {
            FailureReason::Invalid => "invalid",
            FailureReason::NotAttached => "notAttached",
            FailureReason::Vetoed => "vetoed",
            FailureReason::InterceptorFailed => "interceptorFailed",
            FailureReason::StateDoesNotExist => "stateDoesNotExist",
            FailureReason::OutcomeUnknown => "outcomeUnknown",
            FailureReason::StateTooLarge => "stateTooLarge",
            FailureReason::StorageFailed => "storageFailed",
            FailureReason::Conflict => "conflict",
            FailureReason::InvalidOperation => "invalidOperation",
            _ => "other",
        })
    }

    fn message(&self, request_id: Option<u64>) -> Option<ServerMessage> {
        let connection_error = |message| Some(ServerMessage::StateConnectionError { message });
        let update_failed = |message: String, reason| {
            Some(ServerMessage::update_failed(message, reason, request_id))
        };
        match self {
            Failure::NoSuchState(id) => connection_error(texts::state_does_not_exist(id)),
            Failure::NotAllowed => connection_error(NOT_ALLOWED_TO_CONNECT.to_owned()),
            Failure::TooManySessions => connection_error(format!(
                "Invalid session: one connection may use at most {MAX_SESSIONS_PER_CONNECTION} \
                 session ids; keep one per client"
            )),
            Failure::AllowHookFailed { state, cause } => connection_error(format!(
                "Could not connect to state {state}: its allowConnectingClient hook failed ({cause})"
            )),
            Failure::IdentityHookFailed { state, cause } => connection_error(format!(
                "Could not connect to state {state}: its public_identity hook failed ({cause})"
            )),
            Failure::StoreUnusable(id) => connection_error(format!(
                "Could not connect to state {id}: the server's store failed, so it cannot \
                 show what it saved; the server must be restarted once its disk is fixed"
            )),
            Failure::StateGone(id) => update_failed(
                texts::could_not_update(format_args!("state {id} does not exist anymore")),
                FailureReason::StateDoesNotExist,
            ),
            Failure::NotAttached => update_failed(
                texts::could_not_update(
                    "this connection is not attached to a state; send CONNECT_TO_STATE first",
                ),
                FailureReason::NotAttached,
            ),
            // The original vetoes silently; clients that send a request id are told.
            Failure::Vetoed => request_id
                .and_then(|_| update_failed(UPDATE_VETOED.to_owned(), FailureReason::Vetoed)),
            Failure::InterceptorFailed(cause) => update_failed(
                texts::could_not_update(format_args!(
                    "its interceptStateUpdate hook failed ({cause})"
                )),
                FailureReason::InterceptorFailed,
            ),
            Failure::StateTooLarge { size, limit } => update_failed(
                texts::could_not_update(format_args!(
                    "the state would be {size} bytes, over its limit of {limit} bytes"
                )),
                FailureReason::StateTooLarge,
            ),
            Failure::StorageFailed(why) => update_failed(
                texts::could_not_update(format_args!("the server could not save it ({why})")),
                FailureReason::StorageFailed,
            ),
            Failure::Conflict { version } => Some(ServerMessage::StateUpdateFailed(UpdateFailed {
                message: texts::could_not_update(format_args!(
                    "the state is at version {version}, not the version the update expected; \
                     compute it again from the newer state"
                )),
                request_id,
                reason: Some(FailureReason::Conflict),
                version: Some(*version),
            })),
            Failure::InvalidOperation(why) => update_failed(
                texts::could_not_update(format_args!("{why}")),
                FailureReason::InvalidOperation,
            ),
            Failure::Remembered { reason, message } => update_failed(message.clone(), *reason),
            Failure::OutcomeUnknown => update_failed(
                texts::could_not_update(format_args!(
                    "request {} was sent before, and this server no longer remembers its \
                     outcome (older than the {DEDUP_WINDOW} updates it keeps per session, or \
                     the session was forgotten), so whether it was applied is unknown",
                    request_id.unwrap_or_default()
                )),
                FailureReason::OutcomeUnknown,
            ),
            Failure::Repeated(outcome) => match outcome.as_ref() {
                Outcome::Applied { .. } => None,
                Outcome::Failed(failure) => failure.message(request_id),
            },
            Failure::Unreachable(_) => None,
        }
    }
}

impl Failure {
    /// What [`StateSyncer::update_state_value`](crate::StateSyncer::update_state_value)
    /// of `state` reports. Server code attaches nothing and sends no request ids, so
    /// besides a veto or a failed interceptor its update can only fail because the
    /// state is gone.
    pub(crate) fn into_update_error(self, state: &str) -> UpdateError {
        match self {
            Failure::Vetoed => UpdateError::Vetoed,
            Failure::InterceptorFailed(cause) => UpdateError::InterceptorFailed(cause.to_string()),
            Failure::StateTooLarge { size, limit } => UpdateError::StateTooLarge { size, limit },
            Failure::StorageFailed(why) => UpdateError::StorageFailed(why),
            Failure::Conflict { version } => UpdateError::Conflict { version },
            Failure::InvalidOperation(why) => UpdateError::InvalidOperation(why),
            Failure::Unreachable(why) => UpdateError::Unavailable(why),
            _ => UpdateError::StateDoesNotExist(state.to_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_veto_is_silent_without_a_request_id_as_in_the_original() {
        assert!(Failure::Vetoed.reply(None).is_none());
        assert_eq!(
            Failure::Vetoed
                .reply(Some(3))
                .map(|f| f.text_of())
                .as_deref(),
            Some(
                r#"{"type":9,"data":{"message":"Update vetoed by the server","requestId":3,"reason":"vetoed"}}"#
            )
        );
    }

    #[test]
    fn a_repeated_failure_answers_like_the_first() {
        let repeated = Failure::Repeated(Box::new(Outcome::Failed(Failure::Vetoed)));
        assert_eq!(repeated.reply(Some(5)), Failure::Vetoed.reply(Some(5)));
    }

    #[test]
    fn a_repeated_application_whose_frame_was_dropped_answers_its_version() {
        let repeated = Failure::Repeated(Box::new(Outcome::Applied {
            version: 9,
            reply: None,
        }));
        assert_eq!(
            repeated.reply(Some(4)).map(|f| f.text_of()).as_deref(),
            Some(r#"{"type":3,"data":{"updates":{},"version":9,"requestId":4}}"#)
        );
    }
}
