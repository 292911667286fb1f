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
    /// The server could not be reached or the WebSocket handshake failed. While
    /// reconnecting, reported on [`Client::errors`](crate::Client::errors) once per
    /// streak of failed attempts.
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
    /// The server closed a connection before answering anything on it (or before
    /// answering the attach in flight): it accepts the client's connections but does
    /// not serve it (the original server does this to a client without an identifier).
    /// The client keeps reconnecting with growing delays; this is reported once per
    /// streak of such failures, until the client attaches again or a connection
    /// stays open for a while.
    #[error("the server closed the connection before answering ({0})")]
    Dropped(String),
    /// The client gave up reconnecting (the `max_attempts` of its
    /// [`ReconnectPolicy`](crate::ReconnectPolicy)) and is closed; the text says after
    /// how many attempts, and the last failure.
    #[error("{0}")]
    GaveUp(String),
    /// Attaching to a state was refused (STATE_CONNECTION_ERROR).
    #[error("could not attach to the state: {0}")]
    AttachFailed(String),
    /// The attached state was removed on the server.
    #[error("the state was removed: {0}")]
    StateRemoved(String),
    /// An update was not applied.
    #[error("update failed: {0}")]
    Update(#[from] UpdateFailure),
    /// The server refused a presence ([`Client::set_presence`](crate::Client::set_presence));
    /// the previous one stays.
    #[error("presence refused: {message}")]
    Presence {
        /// Why, for programs.
        reason: state_sync_protocol::PresenceFailureReason,
        /// Why, for people.
        message: String,
    },
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
