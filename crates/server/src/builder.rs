//! [`Builder`]: how a [`StateSyncer`] is configured.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::StateSyncer;
use crate::config::Config;
use crate::handshake::{Authorizer, Rejection, UpgradeRequest, authorizer};
use crate::runtime::Runtime;
#[cfg(feature = "tls")]
use crate::tls::TlsConfig;

/// Configures a [`StateSyncer`].
///
/// ```
/// use std::time::Duration;
/// use state_sync_server::{Rejection, StateSyncer};
///
/// #[derive(Clone)]
/// struct User { name: String }
///
/// let syncer = StateSyncer::builder()
///     .authorize(|request| async move {
///         match request.token.as_deref() {
///             Some("secret") => Ok(User { name: request.identifier }),
///             _ => Err(Rejection::new("invalid token")),
///         }
///     })
///     .max_connections(10_000)
///     .hook_timeout(Duration::from_secs(1))
///     .build();
/// # let _: state_sync_server::StateSyncer<User> = syncer;
/// ```
pub struct Builder<K> {
    config: Config,
    authorizer: Authorizer<K>,
    #[cfg(feature = "tls")]
    tls: Option<TlsConfig>,
}

impl<K> std::fmt::Debug for Builder<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Builder<()> {
    /// Default settings; every client with an `identifier` is accepted.
    pub fn new() -> Self {
        Builder {
            config: Config::default(),
            authorizer: authorizer(|_request| std::future::ready(Ok(()))),
            #[cfg(feature = "tls")]
            tls: None,
        }
    }
}

impl Default for Builder<()> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Send + Sync + 'static> Builder<K> {
    /// Sets the authorization middleware (the original's `useAuthorizationMiddleware`).
    /// It runs on every upgrade request, before any state is touched, and returns the
    /// connection's client information, or a [`Rejection`] that the client receives as
    /// `HTTP/1.1 401 Unauthorized`. A middleware that panics refuses the client with 500;
    /// one that exceeds [`hook_timeout`](Self::hook_timeout), with 503.
    pub fn authorize<K2, F, Fut>(self, middleware: F) -> Builder<K2>
    where
        K2: Send + Sync + 'static,
        F: Fn(UpgradeRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<K2, Rejection>> + Send + 'static,
    {
        Builder {
            config: self.config,
            authorizer: authorizer(middleware),
            #[cfg(feature = "tls")]
            tls: self.tls,
        }
    }

    /// Serves `wss://` with this certificate and key.
    #[cfg(feature = "tls")]
    pub fn tls(mut self, tls: TlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Most connections served at once; further ones are answered
    /// `503 Service Unavailable` before the upgrade. Default: 25,000.
    pub fn max_connections(mut self, max: usize) -> Self {
        self.config.max_connections = max;
        self
    }

    /// Largest frame or message accepted from a client, in bytes; a larger one is
    /// answered with STATE_UPDATE_FAILED and the connection is closed with 1009.
    /// Default: 1 MiB.
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.config.max_message_size = bytes;
        self
    }

    /// Frames queued for one connection at most; past it the connection is closed
    /// (see the policy in the crate documentation). Default: 4,096.
    pub fn outgoing_queue(mut self, frames: usize) -> Self {
        self.config.outgoing_queue = frames.max(1);
        self
    }

    /// Bytes of frames queued for one connection at most; past it the connection is
    /// closed like on [`outgoing_queue`](Self::outgoing_queue) overflow. It is raised
    /// to hold at least two snapshots of the largest state
    /// (2 × [`max_state_bytes`](Self::max_state_bytes) + 64 KiB) when lower. Default:
    /// 16 MiB.
    pub fn outgoing_queue_bytes(mut self, bytes: usize) -> Self {
        self.config.outgoing_queue_bytes = bytes.max(1);
        self
    }

    /// Largest a state may grow, as JSON text: an update that would make it larger
    /// fails with the reason `stateTooLarge` (and changes nothing), a larger initial
    /// value is refused by [`create_state`](StateSyncer::create_state). Every client
    /// attaching receives the whole state, so this bounds what one attach costs.
    /// Default: 4 MiB.
    pub fn max_state_bytes(mut self, bytes: usize) -> Self {
        self.config.max_state_bytes = bytes;
        self
    }

    /// How long one write to a client may make no progress before the connection is
    /// closed. Default: 10 s.
    pub fn write_timeout(mut self, timeout: Duration) -> Self {
        self.config.write_timeout = timeout;
        self
    }

    /// How long a client may take to complete TLS, and to send each request head (so
    /// also how long a keep-alive HTTP connection may stay idle between requests).
    /// Default: 10 s.
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.config.handshake_timeout = timeout;
        self
    }

    /// How long a hook or the authorization middleware may run before the operation
    /// that called it fails. Default: 5 s.
    pub fn hook_timeout(mut self, timeout: Duration) -> Self {
        self.config.hook_timeout = timeout;
        self
    }

    /// How long a state remembers a session with no connection, for retried updates.
    /// Default: 10 minutes.
    pub fn session_retention(mut self, retention: Duration) -> Self {
        self.config.session_retention = retention;
        self
    }

    /// Bytes of answers the session logs of one state keep for retried updates (see
    /// `docs/protocol.md`, exactly-once); past it the oldest retries are answered with
    /// their version alone. Default: 8 MiB.
    pub fn session_log_bytes_per_state(mut self, bytes: usize) -> Self {
        self.config.session_log_bytes_per_state = bytes;
        self
    }

    /// Bytes of answers the session logs of all states keep together. Default: 64 MiB.
    pub fn session_log_bytes(mut self, bytes: usize) -> Self {
        self.config.session_log_bytes = bytes;
        self
    }

    /// Size of each connection's read buffer, in bytes (larger frames are read in
    /// several steps). Default: 256 bytes (a typical update fits), which keeps an idle
    /// connection small.
    pub fn read_buffer_size(mut self, bytes: usize) -> Self {
        self.config.read_buffer_size = bytes.max(256);
        self
    }

    /// How long the presence entry of a connection lost without a close (a dropped
    /// network, a killed tab) stays, so that its client, reconnecting with the same
    /// session, takes it back without leaving and joining again (others see no
    /// flicker). A connection that closes or detaches leaves at once. Zero: lost
    /// connections leave at once too. Default: 5 s.
    pub fn presence_grace(mut self, grace: Duration) -> Self {
        self.config.presence.grace = grace;
        self
    }

    /// Presence changes of a state are sent to its watchers at most once per this
    /// interval, gathered in one frame, each entry's latest presence winning (the first
    /// change after a quiet interval goes at once). Default: 50 ms (the interval at
    /// which the clients of this project send their own). Zero sends every change at
    /// once.
    pub fn presence_interval(mut self, interval: Duration) -> Self {
        self.config.presence.interval = interval;
        self
    }

    /// Largest presence a client may set, in bytes of JSON; a larger one is refused
    /// with PRESENCE_FAILED `tooLarge`. Also the largest public identity shown (see
    /// [`StateOptions::public_identity`](crate::StateOptions::public_identity)): a
    /// connection with a larger one is attached but never shown. Default: 2,048.
    pub fn max_presence_bytes(mut self, bytes: usize) -> Self {
        self.config.presence.max_bytes = bytes;
        self
    }

    /// Most presence updates a connection may send per second (a burst of as many is
    /// allowed); past that they are refused with PRESENCE_FAILED `rateLimited`. The
    /// clients of this project send at most 20 per second. Default: 30.
    pub fn presence_rate(mut self, per_second: u32) -> Self {
        self.config.presence.rate = per_second.max(1);
        self
    }

    /// Most presence entries a state shows (on this server). Connections attaching
    /// past that are attached and see the others, but are not shown to them (they are
    /// told with PRESENCE_FAILED `full`, and shown, oldest first, as entries leave).
    /// It bounds the snapshot every attach receives: at most this many entries of
    /// [`max_presence_bytes`](Self::max_presence_bytes) of presence and as much of
    /// public identity each. Default: 512.
    pub fn max_presence_entries(mut self, entries: usize) -> Self {
        self.config.presence.max_entries = entries;
        self
    }

    /// States whose attached clients get a metrics label of their own
    /// (`state_sync_clients{state="…"}`); the clients of every other state are counted
    /// together under `state="other"`, so that the metrics' cardinality stays bounded
    /// whatever identifiers clients create. See the README's *Health and metrics*.
    pub fn metrics_states<I>(mut self, states: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        self.config.metrics_states =
            std::sync::Arc::new(states.into_iter().map(Into::into).collect());
        self
    }

    /// Answers a plain `GET` of `path` on the server's port with `200` and what
    /// `handler` returns, as `content_type` (the standalone server serves its
    /// Prometheus metrics this way at `/metrics`). `/healthz` and `/readyz` are always
    /// answered (see the README's *Health and metrics*).
    pub fn route(
        mut self,
        path: impl Into<String>,
        content_type: &'static str,
        handler: impl Fn() -> String + Send + Sync + 'static,
    ) -> Self {
        self.config
            .routes
            .0
            .push((path.into(), content_type, std::sync::Arc::new(handler)));
        self
    }

    /// Answers plain HTTP `GET`/`HEAD` requests (those that are not WebSocket upgrades)
    /// with the files under `folder`, so that a web app and its state syncer share one
    /// port. Served by `tower-http`'s `ServeDir`: content types (`.wasm` is
    /// `application/wasm`), byte ranges, `Last-Modified`, and a precompressed `.br` or
    /// `.gz` sibling for clients that accept it; plus a strong `ETag` per encoding
    /// (`If-None-Match` gets 304, `If-Range` is honoured). `/` is `index.html`, and
    /// paths without an extension that name no file get `index.html` too (client-side
    /// routes). No path leaves the folder, also not through a symbolic link.
    /// Without it, such requests get `426 Upgrade Required`.
    pub fn static_files(mut self, folder: impl Into<std::path::PathBuf>) -> Self {
        self.config.static_files = Some(folder.into());
        self
    }

    /// Saves every state in a durable store: an update is acknowledged and broadcast
    /// once it is on disk, and [`create_state`](StateSyncer::create_state) brings back
    /// what the store holds (see [`StateOptions::reset_stored`](crate::StateOptions::reset_stored)).
    /// Without it, states live in memory only.
    pub fn storage(mut self, storage: crate::Storage) -> Self {
        self.config.storage = Some(storage);
        self
    }

    /// Shares every state with the other servers on the same Redis: a cluster behind a
    /// load balancer, one value and one order of updates per state whichever server
    /// a client lands on (see the README's "Running a cluster"). Redis keeps the
    /// states, so [`Builder::storage`] is not used with it.
    #[cfg(feature = "redis")]
    pub fn redis(mut self, redis: crate::Redis) -> Self {
        self.config.redis = Some(redis);
        self
    }

    /// Builds the syncer.
    pub fn build(mut self) -> StateSyncer<K> {
        let snapshots = self
            .config
            .max_state_bytes
            .saturating_mul(2)
            .saturating_add(64 << 10);
        self.config.outgoing_queue_bytes = self.config.outgoing_queue_bytes.max(snapshots);
        let runtime = Runtime::new(
            self.config,
            self.authorizer,
            #[cfg(feature = "tls")]
            self.tls,
        );
        StateSyncer::from_runtime(Arc::new(runtime))
    }
}
