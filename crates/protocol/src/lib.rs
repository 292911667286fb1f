//! Wire protocol of server-state-sync, shared by the server and both clients.
//!
//! Every WebSocket text frame is a JSON envelope `{"type": <integer>, "data": <object>}`.
//! The numeric codes, field names and texts of server-state-sync 1.0.5 (the JavaScript
//! original) are kept exactly, so a client of the original works against our server
//! and our clients work against the original server. Our extensions (state versions,
//! request ids, sessions for exactly-once retries, the "state removed" notice) ride as
//! optional fields that the original ignores; `docs/protocol.md` lists every message.
//!
//! This crate does no I/O and needs no runtime: it builds for `wasm32-unknown-unknown`.
//!
//! ```
//! use state_sync_protocol::{ClientMessage, ServerMessage, UpdateState, JsonObject, shallow_merge};
//! use serde_json::json;
//!
//! // What a client sends ...
//! let update = ClientMessage::UpdateState(UpdateState {
//!     updates: json!({"title": "Hello"}).as_object().cloned().unwrap(),
//!     request_id: Some(1),
//!     ops: Vec::new(),
//!     if_version: None,
//! });
//! assert_eq!(update.to_json(), r#"{"type":3,"data":{"updates":{"title":"Hello"},"requestId":1}}"#);
//!
//! // ... how the server reads it ...
//! let ClientMessage::UpdateState(parsed) = ClientMessage::from_json(&update.to_json()).unwrap() else {
//!     unreachable!()
//! };
//!
//! // ... and the one merge rule everybody applies: top-level keys are replaced.
//! let mut state: JsonObject = json!({"title": "Hi", "body": "x"}).as_object().cloned().unwrap();
//! let merge = shallow_merge(&mut state, &parsed.updates);
//! assert_eq!(merge.previous, *json!({"title": "Hi"}).as_object().unwrap());
//! assert_eq!(state, *json!({"title": "Hello", "body": "x"}).as_object().unwrap());
//! # let _ = ServerMessage::StateConnectionError { message: String::new() };
//! ```
//!
//! # Layout
//! - `codes`: the numeric message types.
//! - `message`: typed client-to-server and server-to-client messages and their JSON.
//! - `decode`: reading a client's frame with an error that says what was wrong, and a
//!   server's frame with an error that keeps what can still be read (type, request id).
//! - `merge`: the shallow-merge rule and the diff used to resync.
//! - `update`: atomic operations (append, increment, remove) and conditional updates
//!   ([`Update`]), and how they resolve against a state.
//! - `client_core`: a client's logic without I/O ([`ClientCore`]), shared by both
//!   clients; what an unreadable answer still settles in `client_core/unreadable.rs`,
//!   its behaviour tests in `client_core/tests.rs`.
//! - `event`: what the core tells its driver ([`Event`], [`UpdateFailure`]).
//! - `waiters`: callers waiting for an attach or an update's outcome, and the
//!   superseding rules ([`Waiters`]).
//! - `listeners`: listeners by identifier, replaced in place, with property filters
//!   for state updates ([`Listeners`]).
//! - `status`: the connection status both clients show ([`ConnectionStatus`]).
//! - `backoff`: reconnection delays ([`ReconnectPolicy`]).
//! - `reconnect`: counting reconnection attempts, when the count starts over, which
//!   connection failures the clients report, and which of several endpoints to try
//!   next ([`Reconnect`]).
//! - `endpoint`: checking the `ws://`/`wss://` endpoint (one, or a list of them) and
//!   the URL with the identifier and token ([`Endpoint`]).
//! - [`texts`]: every message text that crosses the wire (the original's kept exactly).

mod backoff;
mod client_core;
mod codes;
mod decode;
mod endpoint;
mod event;
mod listeners;
mod merge;
mod message;
mod presence;
mod reconnect;
mod status;
pub mod texts;
mod update;
mod waiters;

pub use backoff::ReconnectPolicy;
pub use client_core::{ClientCore, DEFAULT_MAX_FRAME};
pub use endpoint::{Endpoint, EndpointError};
pub use event::{Event, PresenceEvent, UpdateFailure};
pub use listeners::Listeners;
pub use reconnect::Reconnect;
pub use status::ConnectionStatus;
pub use update::{
    MAX_ATTEMPTS, Operation, OperationError, Resolved, Update, append_in_place,
    conflict_spread_micros, gave_up_message,
};
pub use waiters::{Superseded, Waiters};

pub use codes::{client_code, server_code};
pub use decode::{ClientMessageError, ServerMessageError, json_kind};
pub use merge::{Merge, StateDiff, apply_updates, diff, shallow_merge};
pub use message::{
    ClientMessage, ConnectToState, FailureReason, ServerMessage, SetPresence,
    StateConnectionEstablished, StateRemoved, StateUpdated, UpdateFailed, UpdateState,
};
pub use presence::{
    DEFAULT_MAX_PRESENCE_BYTES, PRESENCE_INTERVAL, PresenceChange, PresenceChanged, PresenceEntry,
    PresenceFailed, PresenceFailureReason, PresenceSnapshot,
};

/// A JSON object: the value of a state, and of every partial update.
pub type JsonObject = serde_json::Map<String, serde_json::Value>;

/// How many of a session's most recent update outcomes a server remembers so that a
/// retried update is answered, not applied twice.
///
/// A client must not have more than this many updates sent but unacknowledged at once;
/// the clients of this project never do.
pub const DEDUP_WINDOW: usize = 256;

/// Longest session identifier a server accepts, in bytes.
pub const MAX_SESSION_LEN: usize = 128;
