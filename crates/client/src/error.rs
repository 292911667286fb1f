//! Errors of the client.

pub use state_sync_protocol::UpdateFailure;

/// What can go wrong with a client.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The endpoint is not a `ws://` or `wss://` URL.
    #[error("invalid endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint {
        /// The endpoint given.
        endpoint: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The server could not be reached or the WebSocket handshake failed.
    #[error("could not connect: {0}")]
    Connect(String),
    /// The server refused the upgrade with an HTTP error (401 from its authorization
    /// middleware, 503 when full, …). The client does not retry a 4xx.
    #[error("the server refused the connection with HTTP {status}: {body}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The response body (the server's reason).
        body: String,
    },
    /// Attaching to a state was refused (STATE_CONNECTION_ERROR).
    #[error("could not attach to the state: {0}")]
    AttachFailed(String),
    /// The attached state was removed on the server.
    #[error("the state was removed: {0}")]
    StateRemoved(String),
    /// An update was not applied.
    #[error("update failed: {0}")]
    Update(#[from] UpdateFailure),
    /// The server reported an error not tied to one update.
    #[error("server error: {0}")]
    Server(String),
    /// Updates must be JSON objects; the value says what was given instead.
    #[error("updates must be a JSON object, got {0}")]
    NotAnObject(&'static str),
    /// The state (or an update) does not deserialize into the requested type.
    #[error("the state does not fit the requested type: {0}")]
    Deserialize(String),
    /// The client is closed (by [`Client::close`](crate::Client::close), or it gave up
    /// reconnecting).
    #[error("the client is closed")]
    Closed,
}

/// A `Result` whose error is this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
