//! Frames from the server that cannot be read, but whose type (and request id) can.
//!
//! Such a frame still answers what waits for it, so that nothing waits forever:
//! - a STATE_CONNECTION_ESTABLISHED or STATE_CONNECTION_ERROR counts as the answer to
//!   the attach in flight (only the answer to the last one counts, as for readable
//!   answers), and fails it: the client is attached to no state, and can attach again;
//! - a STATE_UPDATED or STATE_UPDATE_FAILED whose `requestId` names a pending update
//!   fails that update ([`FailureReason::Other`]; the message says whether the server
//!   may have applied it);
//! - anything else is reported as a server error.

use super::ClientCore;
use crate::{Event, FailureReason, ServerMessageError, UpdateFailure, server_code};

impl ClientCore {
    pub(super) fn on_unreadable(&mut self, error: &ServerMessageError, events: &mut Vec<Event>) {
        let is = |code: u8| error.message_type() == Some(u64::from(code));
        if is(server_code::STATE_CONNECTION_ERROR) || is(server_code::PRESENCE) {
            // A refused attach sends no PRESENCE; an unreadable PRESENCE still counts.
            self.presence.awaited = self.presence.awaited.saturating_sub(1);
        }
        if is(server_code::STATE_CONNECTION_ESTABLISHED) || is(server_code::STATE_CONNECTION_ERROR)
        {
            if let Some(state_identifier) = self.answers_last_attach() {
                let message = format!("the server's answer could not be read: {error}");
                self.refused(state_identifier, message, events);
                return;
            }
        } else if (is(server_code::STATE_UPDATED) || is(server_code::STATE_UPDATE_FAILED))
            && let Some(request_id) = error.request_id()
            && let Some(index) = self.pending.iter().position(|p| p.request_id == request_id)
        {
            self.pending.remove(index);
            let message = if is(server_code::STATE_UPDATED) {
                format!(
                    "the server's answer could not be read, so the update may or may not have \
                     been applied: {error}"
                )
            } else {
                format!("the server refused the update, but its answer could not be read: {error}")
            };
            events.push(Event::Failed {
                request_id,
                failure: UpdateFailure::Rejected {
                    reason: FailureReason::Other,
                    message,
                },
            });
            self.flush(events);
            return;
        }
        events.push(Event::ServerError {
            message: error.to_string(),
        });
    }
}
