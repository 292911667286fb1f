//! Reading frames, with errors that tell the peer what was wrong.

use std::fmt;

use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;

use crate::codes::{client_code, server_code};
use crate::message::{
    ClientMessage, ConnectToState, FailureReason, ServerMessage, SetPresence,
    StateConnectionEstablished, StateRemoved, StateUpdated, UpdateFailed, UpdateState,
};
use crate::presence::{PresenceChanged, PresenceFailed, PresenceFailureReason, PresenceSnapshot};

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "type", default)]
    code: Option<Value>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
}

/// Why a client's frame could not be read, and the answer the server sends for it.
///
/// The answer follows the original: type 10 when the `type` is missing or unknown, 8
/// when a CONNECT_TO_STATE is malformed, 9 otherwise; unlike the original, every
/// malformed frame is answered, with a message that says what was wrong.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientMessageError {
    reply: ServerMessage,
}

impl ClientMessageError {
    /// The message the server answers with.
    pub fn reply(&self) -> &ServerMessage {
        &self.reply
    }

    /// The message the server answers with.
    pub fn into_reply(self) -> ServerMessage {
        self.reply
    }

    fn invalid(message: String, request_id: Option<u64>) -> Self {
        ClientMessageError {
            reply: ServerMessage::update_failed(message, FailureReason::Invalid, request_id),
        }
    }

    fn unsupported(code: &str) -> Self {
        ClientMessageError {
            reply: ServerMessage::UnsupportedMessageType {
                message: crate::texts::unsupported_message_type(code),
            },
        }
    }

    fn connect(message: String) -> Self {
        ClientMessageError {
            reply: ServerMessage::StateConnectionError { message },
        }
    }
}

impl fmt::Display for ClientMessageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.reply {
            ServerMessage::StateConnectionError { message }
            | ServerMessage::UnsupportedMessageType { message }
            | ServerMessage::StateUpdateFailed(UpdateFailed { message, .. }) => {
                f.write_str(message)
            }
            other => write!(f, "{other:?}"),
        }
    }
}

impl std::error::Error for ClientMessageError {}

fn looks_like_object(text: &str) -> bool {
    text.trim_start().starts_with('{')
}

/// How a JSON value is described in error messages: "null", "a boolean", "a number",
/// "a string", "an array" or "an object".
pub fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawConnect {
    #[serde(default)]
    state_identifier: Option<Value>,
    #[serde(default)]
    session: Option<Value>,
    #[serde(default)]
    last_sent: Option<Value>,
    #[serde(default)]
    accepts_ops: Option<Value>,
    #[serde(default)]
    presence: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawUpdate {
    #[serde(default)]
    updates: Option<Value>,
    #[serde(default)]
    request_id: Option<Value>,
    #[serde(default)]
    ops: Option<Value>,
    #[serde(default)]
    if_version: Option<Value>,
}

impl ClientMessage {
    /// Reads a client's text frame.
    ///
    /// # Errors
    /// A [`ClientMessageError`] carrying the answer for the client when the frame is
    /// not JSON, not an envelope, of an unsupported type, or has missing or mistyped
    /// fields.
    pub fn from_json(text: &str) -> Result<ClientMessage, ClientMessageError> {
        // Derived structs also accept JSON arrays, so look at the first character: an
        // envelope is an object. Anything else is told apart on this (rare) slow path.
        let envelope: Envelope<'_> = if looks_like_object(text) {
            serde_json::from_str(text).map_err(|error| {
                ClientMessageError::invalid(
                    format!("Invalid message: not valid JSON ({error})"),
                    None,
                )
            })?
        } else {
            return Err(match serde_json::from_str::<Value>(text) {
                Ok(other) => ClientMessageError {
                    reply: ServerMessage::UnsupportedMessageType {
                        message: format!(
                            "{}: a message is a JSON object {{\"type\": number, \"data\": \
                             object}}, got {}",
                            crate::texts::unsupported_message_type("undefined"),
                            json_kind(&other)
                        ),
                    },
                },
                Err(error) => ClientMessageError::invalid(
                    format!("Invalid message: not valid JSON ({error})"),
                    None,
                ),
            });
        };
        let code = match envelope.code {
            None | Some(Value::Null) => return Err(ClientMessageError::unsupported("undefined")),
            Some(Value::Number(number)) => match number.as_u64() {
                Some(code) => code,
                None => return Err(ClientMessageError::unsupported(&number.to_string())),
            },
            Some(other) => return Err(ClientMessageError::unsupported(&other.to_string())),
        };
        match code {
            c if c == u64::from(client_code::CONNECT_TO_STATE) => parse_connect(envelope.data),
            c if c == u64::from(client_code::UPDATE_STATE) => parse_update(envelope.data),
            c if c == u64::from(client_code::SET_PRESENCE) => parse_presence(envelope.data),
            other => Err(ClientMessageError::unsupported(&other.to_string())),
        }
    }
}

use crate::texts::{COULD_NOT_UPDATE, NO_STATE_IDENTIFIER};

fn parse_connect(data: Option<&RawValue>) -> Result<ClientMessage, ClientMessageError> {
    let raw: RawConnect = match data.map(|raw| serde_json::from_str::<Value>(raw.get())) {
        Some(Ok(Value::Object(map))) => serde_json::from_value(Value::Object(map))
            .map_err(|e| ClientMessageError::connect(format!("{NO_STATE_IDENTIFIER}: {e}")))?,
        Some(Ok(Value::Null)) | None => {
            return Err(ClientMessageError::connect(format!(
                "{NO_STATE_IDENTIFIER}: CONNECT_TO_STATE needs data.stateIdentifier, a string"
            )));
        }
        Some(Ok(other)) => {
            return Err(ClientMessageError::connect(format!(
                "{NO_STATE_IDENTIFIER}: data must be an object, got {}",
                json_kind(&other)
            )));
        }
        Some(Err(e)) => return Err(ClientMessageError::connect(format!("Invalid data: {e}"))),
    };
    let state_identifier = match raw.state_identifier {
        Some(Value::String(id)) if !id.is_empty() => id,
        Some(Value::String(_)) => {
            return Err(ClientMessageError::connect(format!(
                "{NO_STATE_IDENTIFIER}: data.stateIdentifier is empty"
            )));
        }
        None | Some(Value::Null) => {
            return Err(ClientMessageError::connect(format!(
                "{NO_STATE_IDENTIFIER}: CONNECT_TO_STATE needs data.stateIdentifier, a string"
            )));
        }
        Some(other) => {
            return Err(ClientMessageError::connect(format!(
                "{NO_STATE_IDENTIFIER}: data.stateIdentifier must be a string, got {}",
                json_kind(&other)
            )));
        }
    };
    let session = match raw.session {
        None | Some(Value::Null) => None,
        Some(Value::String(session))
            if !session.is_empty() && session.len() <= crate::MAX_SESSION_LEN =>
        {
            Some(session)
        }
        Some(_) => {
            return Err(ClientMessageError::connect(format!(
                "Invalid session: data.session must be a string of 1 to {} bytes",
                crate::MAX_SESSION_LEN
            )));
        }
    };
    let last_sent = match raw.last_sent {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) if n.as_u64().is_some() => n.as_u64(),
        Some(_) => {
            return Err(ClientMessageError::connect(
                "Invalid lastSent: data.lastSent must be a non-negative integer".to_owned(),
            ));
        }
    };
    let accepts_ops = match raw.accepts_ops {
        None | Some(Value::Null) => false,
        Some(Value::Bool(accepts)) => accepts,
        Some(_) => {
            return Err(ClientMessageError::connect(
                "Invalid acceptsOps: data.acceptsOps must be true or false".to_owned(),
            ));
        }
    };
    let presence = match raw.presence {
        None | Some(Value::Null) => None,
        Some(Value::Object(presence)) => Some(presence),
        Some(other) => {
            return Err(ClientMessageError::connect(format!(
                "Invalid presence: data.presence must be a JSON object, got {}",
                json_kind(&other)
            )));
        }
    };
    Ok(ClientMessage::ConnectToState(ConnectToState {
        state_identifier,
        session,
        last_sent,
        accepts_ops,
        presence,
    }))
}

fn parse_presence(data: Option<&RawValue>) -> Result<ClientMessage, ClientMessageError> {
    let refuse = |what: String| ClientMessageError {
        reply: ServerMessage::PresenceFailed(PresenceFailed {
            message: format!("Could not set presence: {what}"),
            reason: PresenceFailureReason::Invalid,
        }),
    };
    let data = match data.map(|raw| serde_json::from_str::<Value>(raw.get())) {
        Some(Ok(Value::Object(data))) => data,
        Some(Ok(other)) => {
            return Err(refuse(format!(
                "data must be an object with presence, a JSON object; got {}",
                json_kind(&other)
            )));
        }
        None => {
            return Err(refuse(
                "SET_PRESENCE needs data.presence, a JSON object".into(),
            ));
        }
        Some(Err(e)) => return Err(refuse(format!("invalid data ({e})"))),
    };
    match data.get("presence") {
        Some(Value::Object(presence)) => Ok(ClientMessage::SetPresence(SetPresence {
            presence: presence.clone(),
        })),
        None | Some(Value::Null) => Err(refuse(
            "SET_PRESENCE needs data.presence, a JSON object".into(),
        )),
        Some(other) => Err(refuse(format!(
            "data.presence must be a JSON object, got {}",
            json_kind(other)
        ))),
    }
}

fn parse_update(data: Option<&RawValue>) -> Result<ClientMessage, ClientMessageError> {
    let data = data.filter(|raw| raw.get() != "null");
    let raw: RawUpdate = match data.map(|raw| {
        if looks_like_object(raw.get()) {
            serde_json::from_str::<RawUpdate>(raw.get()).ok()
        } else {
            None
        }
    }) {
        Some(Some(raw)) => raw,
        None => {
            return Err(ClientMessageError::invalid(
                format!("{COULD_NOT_UPDATE}: UPDATE_STATE needs data.updates, a JSON object"),
                None,
            ));
        }
        Some(None) => {
            return Err(ClientMessageError::invalid(
                format!("{COULD_NOT_UPDATE}: data must be an object with updates, a JSON object"),
                None,
            ));
        }
    };
    let request_id = match raw.request_id {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) if n.as_u64().is_some() => n.as_u64(),
        Some(_) => {
            return Err(ClientMessageError::invalid(
                format!("{COULD_NOT_UPDATE}: data.requestId must be a non-negative integer"),
                None,
            ));
        }
    };
    let invalid = |what: String| {
        ClientMessageError::invalid(format!("{COULD_NOT_UPDATE}: {what}"), request_id)
    };
    let ops = match &raw.ops {
        None | Some(Value::Null) => Vec::new(),
        Some(ops) => crate::update::wire::parse(ops).map_err(invalid)?,
    };
    let if_version = match raw.if_version {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) if n.as_u64().is_some() => n.as_u64(),
        Some(_) => {
            return Err(invalid(
                "data.ifVersion must be a non-negative integer".to_owned(),
            ));
        }
    };
    match raw.updates {
        Some(Value::Object(updates)) => {
            if let Some((key, _)) = ops.iter().find(|(key, _)| updates.contains_key(key)) {
                return Err(invalid(format!(
                    "key {key:?} is both in data.updates and in data.ops; an update sets a \
                     key or operates on it"
                )));
            }
            Ok(ClientMessage::UpdateState(UpdateState {
                updates,
                request_id,
                ops,
                if_version,
            }))
        }
        None | Some(Value::Null) => Err(ClientMessageError::invalid(
            format!("{COULD_NOT_UPDATE}: UPDATE_STATE needs data.updates, a JSON object"),
            request_id,
        )),
        Some(other) => Err(ClientMessageError::invalid(
            format!(
                "{COULD_NOT_UPDATE}: data.updates must be a JSON object, got {}",
                json_kind(&other)
            ),
            request_id,
        )),
    }
}

/// Why a server's frame could not be read by a client.
#[derive(Debug)]
#[non_exhaustive]
pub enum ServerMessageError {
    /// The frame is not a JSON envelope, or its data does not fit its type. What could
    /// still be read comes along, so that a client can settle what waited for this
    /// answer (an attach, an update) instead of waiting forever.
    Invalid {
        /// The frame's `type`, when the envelope could be read.
        message_type: Option<u64>,
        /// The data's `requestId`, when it is a non-negative integer.
        request_id: Option<u64>,
        /// What did not fit.
        error: serde_json::Error,
    },
    /// A type this client does not know (a newer server, or a code the original
    /// declares but never sends); clients ignore such frames.
    UnknownType(u64),
}

impl ServerMessageError {
    /// The frame's `type`, when it could be read.
    pub fn message_type(&self) -> Option<u64> {
        match self {
            ServerMessageError::Invalid { message_type, .. } => *message_type,
            ServerMessageError::UnknownType(code) => Some(*code),
        }
    }

    /// The `requestId` in the frame's data, when it could be read.
    pub fn request_id(&self) -> Option<u64> {
        match self {
            ServerMessageError::Invalid { request_id, .. } => *request_id,
            ServerMessageError::UnknownType(_) => None,
        }
    }
}

/// The name of a server message type, for error messages.
fn server_message_name(code: u64) -> Option<&'static str> {
    Some(match u8::try_from(code).ok()? {
        server_code::STATE_DOES_NOT_EXIST => "STATE_DOES_NOT_EXIST",
        server_code::STATE_UPDATED => "STATE_UPDATED",
        server_code::STATE_CONNECTION_ESTABLISHED => "STATE_CONNECTION_ESTABLISHED",
        server_code::STATE_CONNECTION_ERROR => "STATE_CONNECTION_ERROR",
        server_code::STATE_UPDATE_FAILED => "STATE_UPDATE_FAILED",
        server_code::UNSUPPORTED_MESSAGE_TYPE => "UNSUPPORTED_MESSAGE_TYPE",
        _ => return None,
    })
}

impl fmt::Display for ServerMessageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerMessageError::Invalid {
                message_type: None,
                error,
                ..
            } => write!(f, "invalid message from the server: {error}"),
            ServerMessageError::Invalid {
                message_type: Some(code),
                request_id,
                error,
            } => {
                match server_message_name(*code) {
                    Some(name) => write!(f, "the server's {name} (type {code})")?,
                    None => write!(f, "the server's message of type {code}")?,
                }
                if let Some(request_id) = request_id {
                    write!(f, " for request {request_id}")?;
                }
                write!(f, " does not fit the protocol: {error}")
            }
            ServerMessageError::UnknownType(code) => write!(f, "unknown message type {code}"),
        }
    }
}

impl std::error::Error for ServerMessageError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ServerMessageError::Invalid { error, .. } => Some(error),
            ServerMessageError::UnknownType(_) => None,
        }
    }
}

#[derive(Deserialize)]
struct ServerEnvelope<'a> {
    #[serde(rename = "type")]
    code: u64,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Message {
    message: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawRequestId {
    #[serde(default)]
    request_id: Option<Value>,
}

/// The `requestId` of a frame's data that did not fit its type, when it is readable.
fn readable_request_id(data: &str) -> Option<u64> {
    if !looks_like_object(data) {
        return None;
    }
    serde_json::from_str::<RawRequestId>(data)
        .ok()?
        .request_id?
        .as_u64()
}

impl ServerMessage {
    /// Reads a server's text frame (what clients do).
    ///
    /// # Errors
    /// [`ServerMessageError::UnknownType`] for a type this version does not know,
    /// [`ServerMessageError::Invalid`] for anything that does not fit the protocol.
    pub fn from_json(text: &str) -> Result<ServerMessage, ServerMessageError> {
        let unreadable = |error| ServerMessageError::Invalid {
            message_type: None,
            request_id: None,
            error,
        };
        // Derived structs also accept JSON arrays (`[7, {}]`); an envelope is an object.
        if !looks_like_object(text)
            && let Err(error) = serde_json::from_str::<crate::JsonObject>(text)
        {
            return Err(unreadable(error));
        }
        let envelope: ServerEnvelope<'_> = serde_json::from_str(text).map_err(unreadable)?;
        let data = envelope.data.map_or("null", RawValue::get);
        let parsed = match u8::try_from(envelope.code) {
            Ok(server_code::STATE_DOES_NOT_EXIST) => {
                serde_json::from_str::<StateRemoved>(data).map(ServerMessage::StateRemoved)
            }
            Ok(server_code::STATE_UPDATED) => {
                serde_json::from_str::<StateUpdated>(data).map(ServerMessage::StateUpdated)
            }
            Ok(server_code::STATE_CONNECTION_ESTABLISHED) => {
                serde_json::from_str::<StateConnectionEstablished>(data)
                    .map(ServerMessage::StateConnectionEstablished)
            }
            Ok(server_code::STATE_CONNECTION_ERROR) => serde_json::from_str::<Message>(data)
                .map(|m| ServerMessage::StateConnectionError { message: m.message }),
            Ok(server_code::STATE_UPDATE_FAILED) => {
                serde_json::from_str::<UpdateFailed>(data).map(ServerMessage::StateUpdateFailed)
            }
            Ok(server_code::UNSUPPORTED_MESSAGE_TYPE) => serde_json::from_str::<Message>(data)
                .map(|m| ServerMessage::UnsupportedMessageType { message: m.message }),
            Ok(server_code::PRESENCE) => {
                serde_json::from_str::<PresenceSnapshot>(data).map(ServerMessage::Presence)
            }
            Ok(server_code::PRESENCE_CHANGED) => {
                serde_json::from_str::<PresenceChanged>(data).map(ServerMessage::PresenceChanged)
            }
            Ok(server_code::PRESENCE_FAILED) => {
                serde_json::from_str::<PresenceFailed>(data).map(ServerMessage::PresenceFailed)
            }
            _ => return Err(ServerMessageError::UnknownType(envelope.code)),
        };
        parsed.map_err(|error| ServerMessageError::Invalid {
            message_type: Some(envelope.code),
            request_id: readable_request_id(data),
            error,
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn reply(text: &str) -> String {
        ClientMessage::from_json(text)
            .expect_err("should fail")
            .into_reply()
            .to_json()
    }

    #[test]
    fn reads_original_client_frames() {
        assert_eq!(
            ClientMessage::from_json(r#"{"type":2,"data":{"stateIdentifier":"abc"}}"#).unwrap(),
            ClientMessage::ConnectToState(ConnectToState {
                state_identifier: "abc".into(),
                session: None,
                last_sent: None,
                accepts_ops: false,
                presence: None,
            })
        );
        assert_eq!(
            ClientMessage::from_json(r#"{"type":3,"data":{"updates":{"k":[1]}}}"#).unwrap(),
            ClientMessage::UpdateState(UpdateState {
                updates: json!({"k": [1]}).as_object().cloned().unwrap(),
                request_id: None,
                ops: Vec::new(),
                if_version: None,
            })
        );
    }

    #[test]
    fn answers_like_the_original_where_it_answered() {
        assert_eq!(
            reply(r#"{"data":{}}"#),
            r#"{"type":10,"data":{"message":"Message type undefined is not supported"}}"#
        );
        assert_eq!(
            reply(r#"{"type":42,"data":{}}"#),
            r#"{"type":10,"data":{"message":"Message type 42 is not supported"}}"#
        );
        assert_eq!(
            reply(r#"{"type":1,"data":{}}"#),
            r#"{"type":10,"data":{"message":"Message type 1 is not supported"}}"#
        );
        assert!(
            reply(r#"{"type":2,"data":{}}"#)
                .starts_with(r#"{"type":8,"data":{"message":"No stateIdentifier was supplied: "#)
        );
        assert!(
            reply(r#"{"type":3,"data":{}}"#)
                .starts_with(r#"{"type":9,"data":{"message":"Could not update state: "#)
        );
    }

    #[test]
    fn answers_where_the_original_was_silent() {
        let not_json = reply("{not json");
        assert!(not_json.contains(r#""type":9"#) && not_json.contains("not valid JSON"));
        assert!(reply("[1,2]").contains(r#""type":10"#));
        assert!(reply("null").contains("got null"));
        assert!(reply(r#"{"type":3}"#).contains("needs data.updates"));
        assert!(reply(r#"{"type":2,"data":null}"#).contains(r#""type":8"#));
        assert!(reply(r#"{"type":"3","data":{}}"#).contains(r#"Message type \"3\" is not"#));
        let not_object = reply(r#"{"type":3,"data":{"updates":[1],"requestId":7}}"#);
        assert!(
            not_object.contains("must be a JSON object, got an array"),
            "{not_object}"
        );
        assert!(not_object.contains(r#""requestId":7"#), "{not_object}");
        assert!(reply(r#"{"type":3,"data":{"updates":{},"requestId":-1}}"#).contains("requestId"));
        assert!(reply(r#"{"type":2,"data":{"stateIdentifier":5}}"#).contains("must be a string"));
        assert!(
            reply(r#"{"type":2,"data":{"stateIdentifier":"a","session":""}}"#)
                .contains("Invalid session")
        );
    }

    #[test]
    fn server_messages_round_trip() {
        for text in [
            r#"{"type":3,"data":{"updates":{"a":1},"version":4,"requestId":9}}"#,
            r#"{"type":7,"data":{"state":{"a":1},"version":4}}"#,
            r#"{"type":7,"data":{"state":{}}}"#,
            r#"{"type":8,"data":{"message":"m"}}"#,
            r#"{"type":9,"data":{"message":"m","requestId":1,"reason":"vetoed"}}"#,
            r#"{"type":10,"data":{"message":"m"}}"#,
            r#"{"type":1,"data":{"stateIdentifier":"s","message":"m"}}"#,
        ] {
            assert_eq!(ServerMessage::from_json(text).unwrap().to_json(), text);
        }
        assert!(matches!(
            ServerMessage::from_json(r#"{"type":5,"data":null}"#),
            Err(ServerMessageError::UnknownType(5))
        ));
        assert!(matches!(
            ServerMessage::from_json(r#"{"type":9,"data":{"message":"m","reason":"new"}}"#),
            Ok(ServerMessage::StateUpdateFailed(UpdateFailed {
                reason: Some(FailureReason::Other),
                ..
            }))
        ));
        assert!(matches!(
            ServerMessage::from_json("{}"),
            Err(ServerMessageError::Invalid {
                message_type: None,
                request_id: None,
                ..
            })
        ));
    }

    #[test]
    fn an_unreadable_server_message_keeps_its_type_and_request_id() {
        let error = ServerMessage::from_json(r#"{"type":7,"data":{}}"#).unwrap_err();
        assert_eq!((error.message_type(), error.request_id()), (Some(7), None));
        assert!(
            error.to_string().starts_with(
                "the server's STATE_CONNECTION_ESTABLISHED (type 7) does not fit the protocol: \
                 missing field `state`"
            ),
            "{error}"
        );
        let error = ServerMessage::from_json(r#"{"type":3,"data":{"updates":[1],"requestId":4}}"#)
            .unwrap_err();
        assert_eq!(
            (error.message_type(), error.request_id()),
            (Some(3), Some(4))
        );
        assert!(
            error
                .to_string()
                .starts_with("the server's STATE_UPDATED (type 3) for request 4 does not fit"),
            "{error}"
        );
        let error = ServerMessage::from_json(r#"{"type":9,"data":{"requestId":"4"}}"#).unwrap_err();
        assert_eq!(
            (error.message_type(), error.request_id()),
            (Some(9), None),
            "not a number"
        );
        let error = ServerMessage::from_json("[7]").unwrap_err();
        assert_eq!((error.message_type(), error.request_id()), (None, None));
        assert!(
            error
                .to_string()
                .starts_with("invalid message from the server: ")
        );
    }

    #[test]
    fn reads_presence_and_answers_bad_presence() {
        assert_eq!(
            ClientMessage::from_json(r#"{"type":4,"data":{"presence":{"x":1}}}"#).unwrap(),
            ClientMessage::SetPresence(SetPresence {
                presence: json!({"x": 1}).as_object().cloned().unwrap(),
            })
        );
        let not_object = reply(r#"{"type":4,"data":{"presence":"x"}}"#);
        assert!(
            not_object.starts_with(r#"{"type":13,"data":{"message":"Could not set presence: data.presence must be a JSON object, got a string","reason":"invalid"}"#),
            "{not_object}"
        );
        assert!(reply(r#"{"type":4}"#).contains(r#""reason":"invalid""#));
        let connect = reply(r#"{"type":2,"data":{"stateIdentifier":"a","presence":[]}}"#);
        assert!(
            connect.contains(r#""type":8"#) && connect.contains("Invalid presence"),
            "{connect}"
        );
        let ClientMessage::ConnectToState(connect) =
            ClientMessage::from_json(r#"{"type":2,"data":{"stateIdentifier":"a","presence":{}}}"#)
                .unwrap()
        else {
            panic!("an attach");
        };
        assert_eq!(connect.presence, Some(crate::JsonObject::new()));
    }

    #[test]
    fn reads_presence_messages_of_the_server() {
        let snapshot = r#"{"type":11,"data":{"stateIdentifier":"r","self":"a","others":[{"id":"b","user":{"n":1},"presence":{}}]}}"#;
        let message = ServerMessage::from_json(snapshot).unwrap();
        assert_eq!(message.to_json(), snapshot);
        let changed = r#"{"type":12,"data":{"changes":[{"event":"join","id":"b","user":"u","presence":{}},{"event":"update","id":"b","presence":{"x":1}},{"event":"leave","id":"b"}]}}"#;
        assert_eq!(
            ServerMessage::from_json(changed).unwrap().to_json(),
            changed
        );
        let failed = r#"{"type":13,"data":{"message":"m","reason":"somethingNew"}}"#;
        assert!(matches!(
            ServerMessage::from_json(failed).unwrap(),
            ServerMessage::PresenceFailed(PresenceFailed {
                reason: PresenceFailureReason::Other,
                ..
            })
        ));
    }
}
