//! The server of server-state-sync: named JSON states kept in sync between a Rust
//! backend and many WebSocket clients.
//!
//! Clients connect with `ws://host:port/?identifier=<client id>&token=<access token>`,
//! attach to a state by its identifier and receive its whole value; each update a
//! client sends is a partial object, shallow-merged into the state (top-level keys
//! replaced) and broadcast to every attached client. Server code decides who may
//! connect (an authorization middleware and a per-state `allow_connecting_client`),
//! may rewrite or veto updates (`intercept_state_update`) and decides when a state
//! dies (`self_destruct`, `ttl`). It speaks the protocol of the npm package
//! `server-state-sync` 1.0.5, so its JavaScript clients work unchanged, plus optional
//! extensions (versions, acknowledged updates, exactly-once retries) that this
//! project's clients use.
//!
//! ```no_run
//! use serde_json::json;
//! use state_sync_server::{StateOptions, StateSyncer};
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let syncer = StateSyncer::new();
//! let server = syncer.start(5000).await?;
//! syncer.create_state(
//!     StateOptions::new()
//!         .identifier("myGroupChat")
//!         .initial_value(json!({"chatMessages": []}))
//!         .self_destruct(|clients_left, _created| clients_left == 0),
//! )?;
//! tokio::signal::ctrl_c().await?;
//! server.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! # Guarantees
//! - Every update to a state is applied and broadcast in one order, the same for
//!   every client; the sender receives its own update back (with its request id, when
//!   it gave one) like everybody else.
//! - Each broadcast is serialized once. Each connection has a bounded outgoing queue
//!   drained by its own writer, which flushes once per batch. A client that does not
//!   read never blocks anybody else: when its queue is full it is closed with code 1008
//!   (see [`OVERFLOW_REASON`]); clients of this project then reconnect and resync.
//! - Hooks run on the blocking pool with a time limit; no lock is held while they run.
//!   One that panics or hangs fails one operation, is logged, and the server carries on.
//! - Malformed input gets an error message saying what was wrong, and changes nothing.
//!
//! # Layout
//! - `syncer`: [`StateSyncer`], its [`Builder`] and the update path.
//! - `options`: [`StateOptions`], a state's hooks and lifetime.
//! - `store`: where states live and how updates fan out (the seam for a cluster backend).
//! - `server`: the accept loop, the connection limit and [`Server`] (shutdown).
//! - `connection`: one client: reader, writer, message handling.
//! - `handshake`: the HTTP upgrade and the authorization middleware ([`UpgradeRequest`]).
//! - `outbox`: per-connection bounded queues.
//! - `hooks`: running user code safely.
//! - `static_files`: plain HTTP requests answered from a folder ([`Builder::static_files`]).
//! - `tls`: [`TlsConfig`] for `wss://`.
//! - `error`: [`Error`], [`CreateStateError`], [`UpdateError`].

mod connection;
mod error;
mod handshake;
mod hooks;
mod options;
mod outbox;
mod server;
mod static_files;
mod store;
mod syncer;
mod tls;

pub use error::{CreateStateError, Error, Result, UpdateError};
pub use handshake::{Rejection, UpgradeRequest};
pub use options::StateOptions;
pub use outbox::OVERFLOW_REASON;
pub use server::Server;
pub use state_sync_protocol as protocol;
pub use state_sync_protocol::JsonObject;
pub use syncer::{Applied, Builder, StateSyncer};
#[cfg(feature = "tls")]
pub use tls::TlsConfig;
