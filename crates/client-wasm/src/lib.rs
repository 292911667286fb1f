//! Browser client for server-state-sync, compiled to WebAssembly with wasm-bindgen and
//! published to npm with the original package's JavaScript API.
//!
//! Not written yet: it follows the native client. Until then this crate re-exports the
//! wire protocol it will speak, which already builds for `wasm32-unknown-unknown`.
//!
//! # Layout
//! - [`protocol`]: the messages and merge rules shared with the server.

pub use state_sync_protocol as protocol;
