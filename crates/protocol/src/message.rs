//! Typed messages and their exact JSON.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::JsonObject;
use crate::codes::{client_code, server_code};
use crate::presence::{PresenceChanged, PresenceFailed, PresenceSnapshot};
use crate::update::Operation;

/// A message a client sends to the server.
///
/// Exhaustive: a new message does not compile until the server handles it.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientMessage {
    /// Type 2: attach this connection to a state.
    ConnectToState(ConnectToState),
    /// Type 3: merge a partial object into the attached state.
    UpdateState(UpdateState),
    /// Type 4 (extension): set this connection's presence in the attached state.
    SetPresence(SetPresence),
}

/// Data of SET_PRESENCE (type 4, extension).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetPresence {
    /// The connection's whole new presence (it replaces the previous one).
    pub presence: JsonObject,
}

/// Data of CONNECT_TO_STATE (type 2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectToState {
    /// The state to attach to. Original field.
    pub state_identifier: String,
    /// Extension: an identifier the client picks once and keeps across reconnects.
    /// With it the server remembers the outcome of the session's recent updates
    /// (see [`DEDUP_WINDOW`](crate::DEDUP_WINDOW)), so that an update retried after a
    /// reconnect is answered with its first outcome instead of being applied twice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// Extension, with `session`: the highest request id the client sent in this
    /// session to this state before this attach (absent when it sent none). When the
    /// server no longer knows the session (it was forgotten, or the state was
    /// re-created), retries of those requests are answered `outcomeUnknown` instead of
    /// being applied a second time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sent: Option<u64>,
    /// Extension: the client applies appends itself, so the server may broadcast them
    /// as operations (`ops` in STATE_UPDATED) instead of whole arrays. Clients that do
    /// not say so get whole arrays.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub accepts_ops: bool,
    /// Extension: the connection's presence in the state, and a request to receive
    /// everyone else's (PRESENCE, then PRESENCE_CHANGED). Without it the connection
    /// is present with `{}` and receives no presence messages (clients of the
    /// original never ask).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence: Option<JsonObject>,
}

/// Data of UPDATE_STATE (type 3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateState {
    /// The partial state: each top-level key replaces the state's key. Original field.
    pub updates: JsonObject,
    /// Extension: a number the client picks, echoed on the STATE_UPDATED or
    /// STATE_UPDATE_FAILED this update causes, to that client only. Within a session
    /// request ids must increase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<u64>,
    /// Extension: atomic operations on keys not in `updates`, applied by the server
    /// against the current value (see [`Operation`]).
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        with = "crate::update::wire"
    )]
    pub ops: Vec<(String, Operation)>,
    /// Extension: apply the update only if the state is at this version; otherwise it
    /// fails with [`FailureReason::Conflict`] and changes nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub if_version: Option<u64>,
}

/// A message the server sends to a client.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ServerMessage {
    /// Type 1 (extension of a code the original declares but never sends): the
    /// attached state was removed; the connection is detached from it.
    StateRemoved(StateRemoved),
    /// Type 3: an update was applied to the attached state.
    StateUpdated(StateUpdated),
    /// Type 7: the connection is attached; here is the whole state.
    StateConnectionEstablished(StateConnectionEstablished),
    /// Type 8: attaching failed.
    StateConnectionError {
        /// What went wrong.
        message: String,
    },
    /// Type 9: an update was not applied, or a frame could not be read.
    StateUpdateFailed(UpdateFailed),
    /// Type 10: the frame's type is not one the server handles.
    UnsupportedMessageType {
        /// `Message type N is not supported`.
        message: String,
    },
    /// Type 11 (extension): everyone else present, sent after an attach that asked.
    Presence(PresenceSnapshot),
    /// Type 12 (extension): presence changes since the last 11 or 12.
    PresenceChanged(PresenceChanged),
    /// Type 13 (extension): a SET_PRESENCE did nothing.
    PresenceFailed(PresenceFailed),
}

/// Data of STATE_UPDATED (type 3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StateUpdated {
    /// The updates as applied (after the server's interceptor). Original field.
    pub updates: Arc<JsonObject>,
    /// Extension: the state's version after this update (+1 per applied update).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// Extension: the request id of the update, present only in the echo to the
    /// client that sent it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<u64>,
    /// Extension: keys the update removed from the state. They are also in `updates`
    /// as `null`, which is what clients of the original (which cannot remove a key)
    /// keep.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<String>,
    /// Extension, only to clients that sent a session (the clients of this project):
    /// appends to apply to the previous version's value, instead of the whole arrays
    /// in `updates` (clients of the original get those).
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        with = "crate::update::wire"
    )]
    pub ops: Vec<(String, Operation)>,
}

/// Data of STATE_CONNECTION_ESTABLISHED (type 7).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StateConnectionEstablished {
    /// The whole current value. Original field.
    pub state: JsonObject,
    /// Extension: the state's current version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
}

/// Data of STATE_UPDATE_FAILED (type 9).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateFailed {
    /// What went wrong. Original field.
    pub message: String,
    /// Extension: the request id of the update that failed, when it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<u64>,
    /// Extension: why, in a form a program can match on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<FailureReason>,
    /// Extension, with [`FailureReason::Conflict`]: the state's version, which the
    /// update expected to be another.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
}

/// Why an update failed (the `reason` of STATE_UPDATE_FAILED).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub enum FailureReason {
    /// The frame could not be read (not JSON, binary, too large, fields missing or of
    /// the wrong type). Sending the same frame again fails again.
    Invalid,
    /// The connection is not attached to a state.
    NotAttached,
    /// The server's interceptor refused the update.
    Vetoed,
    /// The server's interceptor panicked or did not return in time.
    InterceptorFailed,
    /// The state no longer exists.
    StateDoesNotExist,
    /// A retried update is older than what the server remembers of its session, so
    /// the server cannot tell whether it was applied.
    OutcomeUnknown,
    /// The state would grow past the server's size limit with this update.
    StateTooLarge,
    /// The server could not save the update (its storage failed); nothing was applied.
    StorageFailed,
    /// A conditional update expected another version than the state's; nothing was
    /// applied. Compute it again from the newer state.
    Conflict,
    /// An operation does not fit the key's current value (appending to something that
    /// is not an array, incrementing something that is not a number, out of range).
    InvalidOperation,
    /// A reason this version of the protocol does not know.
    #[serde(other)]
    Other,
}

/// Data of STATE_DOES_NOT_EXIST (type 1) as we send it: the attached state is gone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StateRemoved {
    /// The state that was removed.
    pub state_identifier: String,
    /// Why, for people.
    pub message: String,
}

#[derive(Serialize)]
struct Envelope<'a, T> {
    #[serde(rename = "type")]
    code: u8,
    data: &'a T,
}

#[derive(Serialize)]
struct Message<'a> {
    message: &'a str,
}

fn encode<T: Serialize>(code: u8, data: &T) -> String {
    // Serializing these types cannot fail: every map key is a string.
    serde_json::to_string(&Envelope { code, data }).unwrap_or_default()
}

impl ClientMessage {
    /// The numeric `type` of this message.
    pub fn code(&self) -> u8 {
        match self {
            ClientMessage::ConnectToState(_) => client_code::CONNECT_TO_STATE,
            ClientMessage::UpdateState(_) => client_code::UPDATE_STATE,
            ClientMessage::SetPresence(_) => client_code::SET_PRESENCE,
        }
    }

    /// The JSON text of this message.
    pub fn to_json(&self) -> String {
        match self {
            ClientMessage::ConnectToState(data) => encode(self.code(), data),
            ClientMessage::UpdateState(data) => encode(self.code(), data),
            ClientMessage::SetPresence(data) => encode(self.code(), data),
        }
    }
}

impl ServerMessage {
    /// The numeric `type` of this message.
    pub fn code(&self) -> u8 {
        match self {
            ServerMessage::StateRemoved(_) => server_code::STATE_DOES_NOT_EXIST,
            ServerMessage::StateUpdated(_) => server_code::STATE_UPDATED,
            ServerMessage::StateConnectionEstablished(_) => {
                server_code::STATE_CONNECTION_ESTABLISHED
            }
            ServerMessage::StateConnectionError { .. } => server_code::STATE_CONNECTION_ERROR,
            ServerMessage::StateUpdateFailed(_) => server_code::STATE_UPDATE_FAILED,
            ServerMessage::UnsupportedMessageType { .. } => server_code::UNSUPPORTED_MESSAGE_TYPE,
            ServerMessage::Presence(_) => server_code::PRESENCE,
            ServerMessage::PresenceChanged(_) => server_code::PRESENCE_CHANGED,
            ServerMessage::PresenceFailed(_) => server_code::PRESENCE_FAILED,
        }
    }

    /// The JSON text of this message.
    pub fn to_json(&self) -> String {
        let code = self.code();
        match self {
            ServerMessage::StateRemoved(data) => encode(code, data),
            ServerMessage::StateUpdated(data) => encode(code, data),
            ServerMessage::StateConnectionEstablished(data) => encode(code, data),
            ServerMessage::StateConnectionError { message }
            | ServerMessage::UnsupportedMessageType { message } => {
                encode(code, &Message { message })
            }
            ServerMessage::StateUpdateFailed(data) => encode(code, data),
            ServerMessage::Presence(data) => encode(code, data),
            ServerMessage::PresenceChanged(data) => encode(code, data),
            ServerMessage::PresenceFailed(data) => encode(code, data),
        }
    }

    /// The JSON text of STATE_CONNECTION_ESTABLISHED for a state the caller only
    /// borrows (the same text as [`ServerMessage::to_json`] gives for it, without
    /// copying the state first).
    pub fn established_json(state: &JsonObject, version: Option<u64>) -> String {
        #[derive(Serialize)]
        struct Established<'a> {
            state: &'a JsonObject,
            #[serde(skip_serializing_if = "Option::is_none")]
            version: Option<u64>,
        }
        encode(
            server_code::STATE_CONNECTION_ESTABLISHED,
            &Established { state, version },
        )
    }

    /// A STATE_UPDATE_FAILED with a reason and, when known, the request id.
    pub fn update_failed(
        message: impl Into<String>,
        reason: FailureReason,
        request_id: Option<u64>,
    ) -> Self {
        ServerMessage::StateUpdateFailed(UpdateFailed {
            message: message.into(),
            request_id,
            reason: Some(reason),
            version: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn object(value: serde_json::Value) -> JsonObject {
        value.as_object().cloned().expect("an object")
    }

    #[test]
    fn a_borrowed_snapshot_encodes_like_an_owned_one() {
        let state = object(json!({"b": [1, 2], "a": {"x": null}}));
        let owned = ServerMessage::StateConnectionEstablished(StateConnectionEstablished {
            state: state.clone(),
            version: Some(4),
        });
        assert_eq!(
            ServerMessage::established_json(&state, Some(4)),
            owned.to_json()
        );
    }

    // The exact JSON of every message the original sends or accepts.
    #[test]
    fn original_client_messages_are_exact() {
        let connect = ClientMessage::ConnectToState(ConnectToState {
            state_identifier: "abc".into(),
            session: None,
            last_sent: None,
            accepts_ops: false,
            presence: None,
        });
        assert_eq!(
            connect.to_json(),
            r#"{"type":2,"data":{"stateIdentifier":"abc"}}"#
        );
        let update = ClientMessage::UpdateState(UpdateState {
            updates: object(json!({"a": 1})),
            request_id: None,
            ops: Vec::new(),
            if_version: None,
        });
        assert_eq!(update.to_json(), r#"{"type":3,"data":{"updates":{"a":1}}}"#);
    }

    #[test]
    fn original_server_messages_are_exact() {
        let updated = ServerMessage::StateUpdated(StateUpdated {
            updates: Arc::new(object(json!({"a": [1, 2]}))),
            version: None,
            request_id: None,
            removed: Vec::new(),
            ops: Vec::new(),
        });
        assert_eq!(
            updated.to_json(),
            r#"{"type":3,"data":{"updates":{"a":[1,2]}}}"#
        );
        let established = ServerMessage::StateConnectionEstablished(StateConnectionEstablished {
            state: object(json!({"chatMessages": []})),
            version: None,
        });
        assert_eq!(
            established.to_json(),
            r#"{"type":7,"data":{"state":{"chatMessages":[]}}}"#
        );
        let connection_error = ServerMessage::StateConnectionError {
            message: "State with identifier x does not exist".into(),
        };
        assert_eq!(
            connection_error.to_json(),
            r#"{"type":8,"data":{"message":"State with identifier x does not exist"}}"#
        );
        let failed = ServerMessage::StateUpdateFailed(UpdateFailed {
            message: "Could not update state".into(),
            request_id: None,
            reason: None,
            version: None,
        });
        assert_eq!(
            failed.to_json(),
            r#"{"type":9,"data":{"message":"Could not update state"}}"#
        );
        let unsupported = ServerMessage::UnsupportedMessageType {
            message: "Message type 42 is not supported".into(),
        };
        assert_eq!(
            unsupported.to_json(),
            r#"{"type":10,"data":{"message":"Message type 42 is not supported"}}"#
        );
    }

    #[test]
    fn extensions_are_optional_fields() {
        let connect = ClientMessage::ConnectToState(ConnectToState {
            state_identifier: "abc".into(),
            session: Some("s1".into()),
            last_sent: None,
            accepts_ops: false,
            presence: None,
        });
        assert_eq!(
            connect.to_json(),
            r#"{"type":2,"data":{"stateIdentifier":"abc","session":"s1"}}"#
        );
        let echo = ServerMessage::StateUpdated(StateUpdated {
            updates: Arc::new(object(json!({"a": 1}))),
            version: Some(4),
            request_id: Some(9),
            removed: Vec::new(),
            ops: Vec::new(),
        });
        assert_eq!(
            echo.to_json(),
            r#"{"type":3,"data":{"updates":{"a":1},"version":4,"requestId":9}}"#
        );
        let established = ServerMessage::StateConnectionEstablished(StateConnectionEstablished {
            state: JsonObject::new(),
            version: Some(0),
        });
        assert_eq!(
            established.to_json(),
            r#"{"type":7,"data":{"state":{},"version":0}}"#
        );
        let vetoed = ServerMessage::update_failed("Update vetoed", FailureReason::Vetoed, Some(3));
        assert_eq!(
            vetoed.to_json(),
            r#"{"type":9,"data":{"message":"Update vetoed","requestId":3,"reason":"vetoed"}}"#
        );
        let removed = ServerMessage::StateRemoved(StateRemoved {
            state_identifier: "abc".into(),
            message: "State abc was removed".into(),
        });
        assert_eq!(
            removed.to_json(),
            r#"{"type":1,"data":{"stateIdentifier":"abc","message":"State abc was removed"}}"#
        );
    }
}
