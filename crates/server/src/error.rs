//! Errors of the server crate.

use std::io;

/// Errors of starting or configuring a server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Binding or reading the listening socket failed (port taken, no permission).
    /// Pick another address or free the port.
    #[error("socket error: {0}")]
    Io(#[from] io::Error),
    /// The TLS certificate or key could not be read or used. The message names the
    /// file or the PEM section at fault.
    #[error("TLS configuration error: {0}")]
    Tls(String),
    /// The data directory cannot be used (not writable, in use by another running
    /// server, a store of a newer format, a corrupt file). The message names the path
    /// and the cause.
    #[error("storage error: {0}")]
    Storage(#[from] crate::backend::StoreError),
    /// The Redis URL is not one (the message says why).
    #[error("redis error: {0}")]
    Redis(String),
}

/// A `Result` whose error is this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why [`StateSyncer::create_state`](crate::StateSyncer::create_state) created nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CreateStateError {
    /// A state with this identifier exists (the original returned `null`). Remove it
    /// first, or pick another identifier.
    #[error("a state with identifier {0:?} already exists")]
    AlreadyExists(String),
    /// The identifier is empty. Give a non-empty one, or none to get a UUID.
    #[error("a state identifier must not be empty")]
    EmptyIdentifier,
    /// The initial value is not a JSON object; a state is always an object.
    #[error("the initial value of a state must be a JSON object, got {0}")]
    InitialValueNotAnObject(&'static str),
    /// The store could not be read; the message names the path and the cause.
    #[error("{0}")]
    Storage(String),
    /// The initial value is larger than
    /// [`Builder::max_state_bytes`](crate::Builder::max_state_bytes) as JSON text.
    #[error("the initial value is {size} bytes of JSON, over the limit of {limit} bytes")]
    InitialValueTooLarge {
        /// Its size as JSON text.
        size: usize,
        /// The limit.
        limit: usize,
    },
}

/// Why [`StateSyncer::update_state_value`](crate::StateSyncer::update_state_value) did
/// not apply an update.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UpdateError {
    /// No state has this identifier (it was never created, was removed, or expired).
    #[error("state with identifier {0:?} does not exist")]
    StateDoesNotExist(String),
    /// The updates are not a JSON object.
    #[error("updates must be a JSON object, got {0}")]
    NotAnObject(&'static str),
    /// The state's `intercept_state_update` returned `None`.
    #[error("the update was vetoed by the state's interceptor")]
    Vetoed,
    /// The state's `intercept_state_update` panicked or did not return in time; the
    /// message says which.
    #[error("the state's interceptor failed: {0}")]
    InterceptorFailed(String),
    /// The storage backend could not save the update: nothing was applied. The server
    /// must be restarted once the cause (a full or failing disk) is fixed.
    #[error("the update could not be saved: {0}")]
    StorageFailed(String),
    /// The state would grow past [`Builder::max_state_bytes`](crate::Builder::max_state_bytes).
    #[error("the state would be {size} bytes, over its limit of {limit} bytes")]
    StateTooLarge {
        /// The size the state would have, as JSON text.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The update expected the state at another version than its current one; nothing
    /// was applied.
    #[error("the state is at version {version}, not the version the update expected")]
    Conflict {
        /// The state's current version.
        version: u64,
    },
    /// An operation does not fit the key's current value; nothing was applied.
    #[error("{0}")]
    InvalidOperation(String),
    /// A server of a cluster could not reach Redis: whether the update was applied is
    /// unknown only when Redis failed while it ran; nothing is applied twice.
    #[error("redis cannot be reached: {0}")]
    Unavailable(String),
}
