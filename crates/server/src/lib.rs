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
//! - Each broadcast is serialized and framed once; the same bytes are written to every
//!   connection. Each connection has a bounded outgoing queue, written by the task
//!   that queued the frames (one write per connection each time it waits) or, when a
//!   socket is full, by a writer task until the queue is empty. A client that does not
//!   read never blocks anybody else: when its queue is full it is closed with code 1008
//!   (see [`OVERFLOW_REASON`]); clients of this project then reconnect and resync.
//! - Hooks run on the blocking pool with a time limit; no lock is held while they run.
//!   One that panics or hangs fails one operation, is logged, and the server carries on.
//! - Malformed input gets an error message saying what was wrong, and changes nothing.
//!
//! # Layout
//! - `syncer`: [`StateSyncer`], the public API; `builder`: its [`Builder`]; `config`: the
//!   settings and their defaults; `options`: [`StateOptions`], a state's hooks and ttl.
//! - `runtime`: what the API handle and the connections share, and the orchestration
//!   around user code (interceptor, self-destruct, expiry).
//! - `registry`: the states by identifier; `state`: one state, its lock and ordering.
//! - `storage`: a state's value, version and session logs, in memory; `backend`: the
//!   storage seam (what a backend that keeps states beyond the process must do);
//!   `durable`: the redb backend behind [`Storage`] (group commit);
//!   `session_log`: the per-session outcome logs behind exactly-once retries.
//! - `fanout`: a state's subscribers, and frames encoded once for all of them.
//! - `failure`: why an attach or update did nothing, mapped to the wire in one place.
//! - `server`: the accept loop, the connection limit and [`Server`] (shutdown).
//! - `handshake`: TLS, the authorization middleware ([`UpgradeRequest`], [`Rejection`])
//!   and the upgrade; `http_io`: reading the request head, writing HTTP answers.
//! - `connection`: one client's reader and message handling; `outbox`: its bounded
//!   outgoing queue, how it is written (corking, writer tasks) and the slow-client
//!   policy; `wire`: frames built once for every receiver, a connection's two halves.
//! - `hooks`: running user code safely.
//! - `static_files`: plain HTTP requests answered from a folder ([`Builder::static_files`]).
//! - `tls`: [`TlsConfig`] for `wss://`.
//! - `error`: [`Error`], [`CreateStateError`], [`UpdateError`].

#[cfg(feature = "axum")]
pub mod axum;
mod backend;
mod builder;
#[cfg(feature = "redis")]
mod cluster;
mod config;
mod connection;
mod durable;
mod error;
mod failure;
mod fanout;
mod handshake;
mod hooks;
mod http_io;
mod metrics;
mod options;
mod outbox;
mod presence;
#[cfg(feature = "redis")]
mod redis_store;
mod registry;
mod runtime;
mod server;
mod session_log;
mod state;
mod static_files;
mod storage;
mod syncer;
mod tls;
mod wire;

pub use backend::StoreError;
pub use builder::Builder;
#[cfg(feature = "redis")]
pub use cluster::{RESYNC_CLOSE_CODE, Redis, UNREACHABLE_CLOSE_CODE, WAIT};
pub use durable::{Durability, Storage, StorageStats};
pub use error::{CreateStateError, Error, Result, UpdateError};
pub use handshake::{Rejection, UpgradeRequest};
pub use options::StateOptions;
pub use outbox::OVERFLOW_REASON;
pub use presence::{MAX_LINGERING, Present};
pub use server::Server;
pub use state_sync_protocol as protocol;
pub use state_sync_protocol::JsonObject;
pub use syncer::{Applied, StateSyncer};
#[cfg(feature = "tls")]
pub use tls::TlsConfig;
