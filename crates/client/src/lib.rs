//! Native async Rust client for server-state-sync: games, bots, services and
//! command-line tools that share a JSON state with a server and other clients.
//!
//! It has the original JavaScript client's capabilities (connect with an identifier
//! and a token, attach to a state, send partial updates, listen to changes), and
//! more: every update is acknowledged (its future tells whether the server applied
//! or vetoed it); a lost connection is re-opened with backoff, the state re-attached
//! and resynced (listeners hear what changed meanwhile), and updates sent meanwhile or
//! not yet acknowledged are delivered exactly once.
//!
//! ```no_run
//! use serde_json::json;
//! use state_sync_client::Client;
//!
//! # #[tokio::main] async fn main() -> Result<(), state_sync_client::Error> {
//! let client = Client::connect("ws://localhost:5000", "alice", Some("token")).await?;
//! let state = client.connect_to_state("myGroupChat").await?;
//! println!("messages so far: {}", state["chatMessages"]);
//!
//! client.add_state_update_listener("log", &["chatMessages"], |updates, previous| {
//!     println!("{} (was {:?})", updates["chatMessages"], previous.get("chatMessages"));
//! });
//! let applied = client.update_state(json!({"chatMessages": [{"content": "hi"}]})).await?;
//! println!("applied as version {:?}", applied.version);
//! client.close().await;
//! # Ok(()) }
//! ```
//!
//! Against a server that speaks only the original protocol (no versions, no request
//! ids) the client works as the original did: an update counts as applied once sent
//! (the original acknowledges nothing, and its vetoes are silent), and nothing is
//! deduplicated; it still re-attaches and resyncs after a reconnect.
//!
//! An update that was sent but whose outcome the client stopped waiting for (it was
//! closed, or attached to another state, or the state was removed) fails with
//! [`UpdateFailure::Unconfirmed`]: the server may have applied it.
//!
//! # Several servers
//!
//! A client may be given the endpoints of several servers of one cluster
//! ([`ClientBuilder::endpoints`]). `connect` tries them in order until one opens; when
//! that connection is lost (the server was killed, a deploy), or a reconnection attempt
//! fails, the client moves on to the next endpoint, after the last to the first again
//! (round robin), with the delays of its [`ReconnectPolicy`] counted across all of them.
//! There it re-attaches to its state, resyncs, and resends its unacknowledged updates
//! with the same session and request ids, as after any reconnection: servers that share
//! their session logs apply each exactly once, and a server that does not know the
//! session answers an update sent before with [`FailureReason::OutcomeUnknown`] rather
//! than risk applying it twice.
//!
//! ```no_run
//! # async fn run() -> state_sync_client::Result<()> {
//! use state_sync_client::Client;
//! let client = Client::builder("ws://10.0.0.1:5000", "alice")
//!     .endpoints(["ws://10.0.0.1:5000", "ws://10.0.0.2:5000"])
//!     .connect()
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! # Layout
//! - `client`: [`Client`], [`ClientBuilder`] and the types they return.
//! - `driver`: the task that owns the connection, feeds the core, performs its events
//!   and reconnects.
//! - `transport`: `ws://`/`wss://` connections (TCP, TLS, handshake).
//! - `error`: [`Error`].
//!
//! Everything else is shared with the browser client in the protocol crate: the
//! protocol logic and the one copy of the local state ([`protocol::ClientCore`]), who
//! waits for what ([`protocol::Waiters`]), when the backoff starts over
//! ([`protocol::Reconnect`]), the endpoint and its URL ([`protocol::Endpoint`]),
//! listeners ([`protocol::Listeners`]) and [`ConnectionStatus`]. This crate adds the
//! socket, the timers, and how user code is called.

mod client;
mod driver;
mod error;
mod transport;

pub use client::{Applied, Client, ClientBuilder, StateUpdate};
pub use error::{Error, Result, UpdateFailure};
pub use state_sync_protocol as protocol;
pub use state_sync_protocol::{
    ConnectionStatus, FailureReason, JsonObject, MAX_ATTEMPTS, Operation, PRESENCE_INTERVAL,
    PresenceEntry, PresenceEvent, PresenceFailureReason, ReconnectPolicy, Update,
};
