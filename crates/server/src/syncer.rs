//! [`StateSyncer`]: the public API of the server, and its configuration.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::Value;
use state_sync_protocol::JsonObject;
use tokio::net::{TcpListener, ToSocketAddrs};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::error::{CreateStateError, UpdateError};
use crate::handshake::{Authorizer, Rejection, UpgradeRequest, authorizer};
use crate::hooks::run_hook;
use crate::options::StateOptions;
use crate::outbox::Closer;
use crate::server::Server;
use crate::store::{NotApplied, Origin, Prior, StateEntry, Store};
#[cfg(feature = "tls")]
use crate::tls::TlsConfig;
use state_sync_protocol::json_kind;

/// Settings of a [`StateSyncer`]; see the [`Builder`] methods for each default.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) max_connections: usize,
    pub(crate) max_message_size: usize,
    pub(crate) outgoing_queue: usize,
    pub(crate) outgoing_queue_bytes: usize,
    pub(crate) write_timeout: Duration,
    pub(crate) handshake_timeout: Duration,
    pub(crate) hook_timeout: Duration,
    pub(crate) session_retention: Duration,
    pub(crate) read_buffer_size: usize,
    pub(crate) static_files: Option<std::path::PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_connections: 25_000,
            max_message_size: 1 << 20,
            outgoing_queue: 1024,
            outgoing_queue_bytes: 16 << 20,
            write_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            hook_timeout: Duration::from_secs(5),
            session_retention: Duration::from_secs(600),
            read_buffer_size: 1024,
            static_files: None,
        }
    }
}

impl Config {
    pub(crate) fn websocket_config(&self) -> WebSocketConfig {
        WebSocketConfig::default()
            .read_buffer_size(self.read_buffer_size)
            .write_buffer_size(64 * 1024)
            .max_write_buffer_size(usize::MAX)
            .max_message_size(Some(self.max_message_size))
            .max_frame_size(Some(self.max_message_size))
    }
}

/// What the server shares between its API handle and its connections.
pub(crate) struct Shared<K> {
    pub(crate) store: Store<K>,
    /// Live connections by id: their client identifier and how to close them.
    pub(crate) connections: Mutex<HashMap<u64, (String, Arc<Closer>)>>,
    pub(crate) next_connection: AtomicU64,
    pub(crate) config: Config,
    pub(crate) authorizer: Authorizer<K>,
    #[cfg(feature = "tls")]
    tls: Option<TlsConfig>,
}

/// Why [`Shared::intercept_and_apply`] applied nothing.
#[derive(Debug)]
pub(crate) enum ApplyFailure {
    Gone,
    Vetoed,
    InterceptorFailed(String),
    Duplicate(Prior),
}

impl<K: Send + Sync + 'static> Shared<K> {
    #[cfg(feature = "tls")]
    pub(crate) fn tls(&self) -> Option<&TlsConfig> {
        self.tls.as_ref()
    }

    #[cfg(not(feature = "tls"))]
    pub(crate) fn tls(&self) -> Option<std::convert::Infallible> {
        None
    }

    /// Runs the state's interceptor (if any), then merges and broadcasts.
    pub(crate) async fn intercept_and_apply(
        &self,
        entry: &StateEntry<K>,
        updates: JsonObject,
        client: Option<Arc<K>>,
        origin: Option<Origin<'_>>,
    ) -> Result<(u64, Arc<JsonObject>), ApplyFailure> {
        let updates = match entry.intercept_state_update.clone() {
            None => updates,
            Some(intercept) => {
                let limit = self.config.hook_timeout;
                match run_hook("intercept_state_update", limit, move || {
                    intercept(updates, client.as_deref())
                })
                .await
                {
                    Ok(Some(updates)) => updates,
                    Ok(None) => return Err(ApplyFailure::Vetoed),
                    Err(failure) => {
                        return Err(ApplyFailure::InterceptorFailed(failure.to_string()));
                    }
                }
            }
        };
        entry
            .apply(updates, origin)
            .map_err(|not_applied| match not_applied {
                NotApplied::Gone => ApplyFailure::Gone,
                NotApplied::Duplicate(prior) => ApplyFailure::Duplicate(prior),
            })
    }

    /// Registers a live connection; returns its id for [`Shared::unregister`].
    pub(crate) fn register(&self, identifier: &str, closer: &Arc<Closer>) -> u64 {
        let id = self.next_connection.fetch_add(1, Ordering::Relaxed);
        let mut connections = self
            .connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        connections.insert(id, (identifier.to_owned(), Arc::clone(closer)));
        id
    }

    pub(crate) fn unregister(&self, id: u64) {
        self.connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
    }

    /// Detaches a subscriber, then asks the state's self-destruct hook whether to
    /// remove the state.
    pub(crate) fn detach(self: &Arc<Self>, entry: Arc<StateEntry<K>>, subscriber: usize) {
        if entry.detach(subscriber).is_some() {
            self.after_detach(entry, true);
        }
    }

    /// After a client left a state: asks its self-destruct hook (in a task of its own,
    /// so that the answer is acted on even if the connection goes away) whether to
    /// remove it. Nothing happens when `left_for_good` is false (the client re-attached
    /// to the same state).
    pub(crate) fn after_detach(self: &Arc<Self>, entry: Arc<StateEntry<K>>, left_for_good: bool) {
        let Some(self_destruct) = entry.self_destruct.clone().filter(|_| left_for_good) else {
            return;
        };
        let clients_left = entry.clients();
        let shared = Arc::clone(self);
        tokio::spawn(async move {
            let created_at = entry.created_at;
            let limit = shared.config.hook_timeout;
            let verdict = run_hook("self_destruct", limit, move || {
                self_destruct(clients_left, created_at)
            })
            .await;
            // Remove only if nobody attached while the hook ran; a client that did will
            // ask the hook again when it leaves.
            let message = format!("State {} self-destructed", entry.id);
            if verdict == Ok(true) && shared.store.remove_entry_if(&entry, &message, clients_left) {
                tracing::info!(state = %entry.id, clients_left, "state self-destructed");
            }
        });
    }
}

/// A server that holds named JSON states and keeps every attached client in sync.
///
/// `K` is the client information the authorization middleware returns for each
/// connection (the original's `clientInformation`); it reaches the state hooks. A
/// syncer without middleware accepts every client that gives an `identifier`, with
/// `K = ()`.
///
/// `StateSyncer` is a cheap handle: clone it to use it from several tasks. See the
/// crate documentation for an example.
pub struct StateSyncer<K = ()> {
    shared: Arc<Shared<K>>,
}

impl<K> Clone for StateSyncer<K> {
    fn clone(&self) -> Self {
        StateSyncer {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<K> std::fmt::Debug for StateSyncer<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateSyncer")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl StateSyncer<()> {
    /// A syncer with default settings, no TLS and no authorization middleware.
    pub fn new() -> Self {
        Builder::new().build()
    }

    /// A builder for settings, TLS and the authorization middleware.
    pub fn builder() -> Builder<()> {
        Builder::new()
    }
}

impl Default for StateSyncer<()> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Send + Sync + 'static> StateSyncer<K> {
    /// Serves on `0.0.0.0:port` (the original's `start(port)`).
    ///
    /// # Errors
    /// [`Error::Io`](crate::Error::Io) when the port cannot be bound.
    pub async fn start(&self, port: u16) -> crate::Result<Server> {
        self.bind(("0.0.0.0", port)).await
    }

    /// Binds `addr` and serves on it.
    ///
    /// # Errors
    /// [`Error::Io`](crate::Error::Io) when the address cannot be bound.
    pub async fn bind(&self, addr: impl ToSocketAddrs) -> crate::Result<Server> {
        let listener = TcpListener::bind(addr).await?;
        self.serve(listener)
    }

    /// Serves on a listener the caller bound (port 0 in tests); the returned
    /// [`Server`] tells the bound address and shuts it down. Must be called within a
    /// tokio runtime. Several listeners may serve the same syncer.
    ///
    /// # Errors
    /// [`Error::Io`](crate::Error::Io) when the listener's address cannot be read.
    pub fn serve(&self, listener: TcpListener) -> crate::Result<Server> {
        Server::spawn(Arc::clone(&self.shared), listener)
    }

    /// Creates a state (the original's `createState`) and returns its identifier.
    ///
    /// # Errors
    /// [`CreateStateError::AlreadyExists`] where the original returned `null`; also an
    /// empty identifier or an initial value that is not a JSON object.
    pub fn create_state(&self, options: StateOptions<K>) -> Result<String, CreateStateError> {
        let id = match &options.identifier {
            Some(id) if id.is_empty() => return Err(CreateStateError::EmptyIdentifier),
            Some(id) => id.clone(),
            None => uuid::Uuid::new_v4().to_string(),
        };
        let value = match &options.initial_value {
            Value::Object(map) => map.clone(),
            other => return Err(CreateStateError::InitialValueNotAnObject(json_kind(other))),
        };
        let entry = self.shared.store.create(id.clone(), value, options)?;
        if let Some(expires_at) = entry.expires_at {
            self.expire_at(&entry, expires_at);
        }
        tracing::debug!(state = %id, "state created");
        Ok(id)
    }

    /// Removes the state when its time to live is over. Without a runtime the state
    /// still expires: lookups treat it as gone and remove it.
    fn expire_at(&self, entry: &Arc<StateEntry<K>>, at: std::time::Instant) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let shared: Weak<Shared<K>> = Arc::downgrade(&self.shared);
        let entry = Arc::downgrade(entry);
        runtime.spawn(async move {
            tokio::time::sleep_until(at.into()).await;
            if let (Some(shared), Some(entry)) = (shared.upgrade(), entry.upgrade())
                && shared
                    .store
                    .remove_entry(&entry, &format!("State {} expired", entry.id))
            {
                tracing::info!(state = %entry.id, "state expired");
            }
        });
    }

    /// Removes a state; its clients receive STATE_DOES_NOT_EXIST and are detached.
    /// `false` when there was no such state.
    pub fn remove_state(&self, id: &str) -> bool {
        self.shared
            .store
            .remove(id, &format!("State {id} was removed"))
    }

    /// Removes every state, telling their clients. Returns how many were removed.
    pub fn remove_all_states(&self) -> usize {
        self.shared.store.remove_all()
    }

    /// The current value of a state (the original's `getValueOfState`), or `None`.
    pub fn value_of_state(&self, id: &str) -> Option<JsonObject> {
        self.shared
            .store
            .get(id)?
            .snapshot()
            .map(|(value, _)| value)
    }

    /// The current value of a state as the caller's type.
    ///
    /// # Errors
    /// When the value does not deserialize into `T`.
    pub fn value_of_state_as<T: DeserializeOwned>(
        &self,
        id: &str,
    ) -> Result<Option<T>, serde_json::Error> {
        self.value_of_state(id)
            .map(|value| serde_json::from_value(Value::Object(value)))
            .transpose()
    }

    /// The version of a state: how many updates it has applied.
    pub fn version_of_state(&self, id: &str) -> Option<u64> {
        self.shared
            .store
            .get(id)?
            .snapshot()
            .map(|(_, version)| version)
    }

    /// How many clients are attached to a state.
    pub fn clients_of_state(&self, id: &str) -> Option<usize> {
        Some(self.shared.store.get(id)?.clients())
    }

    /// The identifiers of every live state.
    pub fn state_identifiers(&self) -> Vec<String> {
        self.shared.store.ids()
    }

    /// Closes every connection of the client with this identifier (close code 4000,
    /// reason `disconnected by the server`), after sending what was queued for it.
    /// Returns how many were closed. A client of this project reconnects unless the
    /// authorization middleware now refuses it: revoke its access first to keep it out.
    pub fn disconnect_client(&self, identifier: &str) -> usize {
        let connections = self
            .shared
            .connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut closed = 0;
        for (client, closer) in connections.values() {
            if client == identifier {
                closer.close(CloseCode::from(4000), "disconnected by the server");
                closed += 1;
            }
        }
        closed
    }

    /// How many connections are open (upgraded and not yet closed).
    pub fn connection_count(&self) -> usize {
        self.shared
            .connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Updates a state from server code (the original's `updateStateValue`): runs the
    /// state's interceptor with `client_information`, merges and broadcasts to every
    /// attached client. Returns the new version and the updates as applied.
    ///
    /// # Errors
    /// [`UpdateError`] when the state does not exist, `updates` is not a JSON object,
    /// or the interceptor vetoed the update or failed.
    pub async fn update_state_value(
        &self,
        id: &str,
        updates: impl Into<Value>,
        client_information: Option<K>,
    ) -> Result<Applied, UpdateError> {
        let updates = match updates.into() {
            Value::Object(map) => map,
            other => return Err(UpdateError::NotAnObject(json_kind(&other))),
        };
        let gone = || UpdateError::StateDoesNotExist(id.to_owned());
        let entry = self.shared.store.get(id).ok_or_else(gone)?;
        match self
            .shared
            .intercept_and_apply(&entry, updates, client_information.map(Arc::new), None)
            .await
        {
            Ok((version, updates)) => Ok(Applied { version, updates }),
            Err(ApplyFailure::Vetoed) => Err(UpdateError::Vetoed),
            Err(ApplyFailure::InterceptorFailed(why)) => Err(UpdateError::InterceptorFailed(why)),
            Err(ApplyFailure::Gone | ApplyFailure::Duplicate(_)) => Err(gone()),
        }
    }
}

/// An update that was applied.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Applied {
    /// The state's version after the update.
    pub version: u64,
    /// The updates as applied, after the interceptor.
    pub updates: Arc<JsonObject>,
}

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
    /// (see the policy in the crate documentation). Default: 1,024.
    pub fn outgoing_queue(mut self, frames: usize) -> Self {
        self.config.outgoing_queue = frames.max(1);
        self
    }

    /// Bytes of frames queued for one connection at most (a single frame larger than
    /// this still goes through an empty queue); past it the connection is closed like
    /// on [`outgoing_queue`](Self::outgoing_queue) overflow. Default: 16 MiB.
    pub fn outgoing_queue_bytes(mut self, bytes: usize) -> Self {
        self.config.outgoing_queue_bytes = bytes.max(1);
        self
    }

    /// How long one write to a client may make no progress before the connection is
    /// closed. Default: 10 s.
    pub fn write_timeout(mut self, timeout: Duration) -> Self {
        self.config.write_timeout = timeout;
        self
    }

    /// How long a client may take to complete TLS and the upgrade request. Default: 10 s.
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

    /// Size of each connection's read buffer, in bytes (larger frames are read in
    /// several steps). Default: 1 KiB, which keeps an idle connection small.
    pub fn read_buffer_size(mut self, bytes: usize) -> Self {
        self.config.read_buffer_size = bytes.max(256);
        self
    }

    /// Answers plain HTTP `GET`/`HEAD` requests (those that are not WebSocket upgrades)
    /// with the files under `folder`, so that a web app and its state syncer share one
    /// port: `/` is `index.html`, paths without an extension that name no file get
    /// `index.html` too (client-side routes), `.wasm` is served as `application/wasm`.
    /// Meant for small deployments and demos; put a real web server in front for more.
    /// Without it, such requests get `426 Upgrade Required`.
    pub fn static_files(mut self, folder: impl Into<std::path::PathBuf>) -> Self {
        self.config.static_files = Some(folder.into());
        self
    }

    /// Builds the syncer.
    pub fn build(self) -> StateSyncer<K> {
        StateSyncer {
            shared: Arc::new(Shared {
                store: Store::new(self.config.session_retention),
                connections: Mutex::new(HashMap::new()),
                next_connection: AtomicU64::new(0),
                config: self.config,
                authorizer: self.authorizer,
                #[cfg(feature = "tls")]
                tls: self.tls,
            }),
        }
    }
}
