//! Native async Rust client for server-state-sync (games, bots, services, CLIs).
//!
//! Not written yet: the client with acknowledged updates, automatic reconnection and
//! resync is tracked as its own piece of work. Until then this crate re-exports the
//! wire protocol it will speak, so programs can already build and read frames with
//! [`protocol`].
//!
//! # Layout
//! - [`protocol`]: the messages and merge rules shared with the server.

pub use state_sync_protocol as protocol;
