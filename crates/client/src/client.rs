//! [`Client`]: the public handle. All work happens in a driver task (see `driver`).

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::Stream;
use serde::de::DeserializeOwned;
use serde_json::Value;
use state_sync_protocol::{
    ClientCore, ConnectionStatus, FailureReason, JsonObject, Listeners, MAX_ATTEMPTS,
    PresenceEntry, PresenceEvent, Reconnect, ReconnectPolicy, Update, UpdateFailure,
    conflict_spread_micros, gave_up_message,
};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use crate::driver::{Command, Driver};
use crate::error::{Error, Result};
use crate::transport::{self, Socket, Target};

/// An update the server applied, as the caller of [`Client::update_state`] gets it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Applied {
    /// The updates as applied (the server's interceptor may have rewritten them).
    pub updates: Arc<JsonObject>,
    /// The state's version after the update (`None` with the original server).
    pub version: Option<u64>,
}

/// A change of the local state, as listeners and [`Client::updates`] see it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct StateUpdate {
    /// The keys that changed, with their new values (`null` for a key the state lost).
    pub updates: Arc<JsonObject>,
    /// The values those keys had just before (absent when the key is new).
    pub previous: JsonObject,
}

pub(crate) type ListenerFn = Box<dyn FnMut(&JsonObject, &JsonObject) + Send>;
pub(crate) type SharedListener = Arc<Mutex<ListenerFn>>;

/// What the handle and the driver share.
pub(crate) struct Shared {
    /// The protocol logic and the one copy of the local state. The driver locks it to
    /// feed it and takes the events out; nobody holds the lock while user code runs.
    pub(crate) core: Mutex<ClientCore>,
    pub(crate) listeners: Mutex<Listeners<SharedListener>>,
    pub(crate) status: watch::Sender<ConnectionStatus>,
    pub(crate) errors: broadcast::Sender<Error>,
    pub(crate) streams: Mutex<Vec<mpsc::UnboundedSender<StateUpdate>>>,
    /// Counts what the core told the driver besides frames to send (attached, updated,
    /// settled, detached): functional updates wait on it for a newer state.
    pub(crate) changes: watch::Sender<u64>,
    /// Readers of [`Client::presence_events`].
    pub(crate) presence_streams: Mutex<Vec<mpsc::UnboundedSender<PresenceEvent>>>,
}

/// The object in `value`, or [`Error::NotAnObject`].
fn object(value: Value) -> Result<JsonObject> {
    match value {
        Value::Object(object) => Ok(object),
        other => Err(Error::NotAnObject(state_sync_protocol::json_kind(&other))),
    }
}

impl Shared {
    /// Tells the core whether anybody looks at state updates (listeners, streams):
    /// without, atomic appends are applied in place, not copied for nobody.
    pub(crate) fn refresh_observed(&self) {
        let observed = !lock(&self.listeners).is_empty() || !lock(&self.streams).is_empty();
        lock(&self.core).set_observed(observed);
    }
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A client of a server-state-sync server: the original JavaScript client's API in
/// Rust, plus acknowledged updates, reconnection and resync. Cheap to clone; all
/// clones drive the same connection.
///
/// The local state changes when the server's broadcast arrives (the server is the
/// authority), never optimistically.
#[derive(Clone)]
pub struct Client {
    shared: Arc<Shared>,
    commands: mpsc::UnboundedSender<Command>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

/// Configures and opens a [`Client`].
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    /// The endpoints, in the order they are tried (one unless [`ClientBuilder::endpoints`]).
    endpoints: Vec<String>,
    identifier: String,
    token: Option<String>,
    reconnect: ReconnectPolicy,
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl ClientBuilder {
    /// A builder for `endpoint` (`ws://…` or `wss://…`) and this client identifier.
    pub fn new(endpoint: impl Into<String>, identifier: impl Into<String>) -> Self {
        ClientBuilder {
            endpoints: vec![endpoint.into()],
            identifier: identifier.into(),
            token: None,
            reconnect: ReconnectPolicy::default(),
            tls: None,
        }
    }

    /// Several endpoints, servers of one cluster any of which serves the client's state,
    /// instead of the one given to [`ClientBuilder::new`]. Each is checked as a single
    /// endpoint is, when connecting; an empty list is refused
    /// ([`Error::InvalidEndpoint`] with the endpoint `""`).
    ///
    /// Which one the client uses: [`ClientBuilder::connect`] tries the first, and, if it
    /// cannot be reached, each next one in order, at once. Later, after every failure
    /// (a lost connection, a reconnection attempt that failed) the client moves on to
    /// the next endpoint, after the last to the first again (round robin), with the
    /// delays of its [`ReconnectPolicy`] counted across all of them. On the new server it
    /// re-attaches to its state, resyncs, and resends its unacknowledged updates with the
    /// same session and request ids: the cluster applies each once if it shares its
    /// session logs between servers.
    ///
    /// ```no_run
    /// # async fn run() -> state_sync_client::Result<()> {
    /// use state_sync_client::Client;
    /// let client = Client::builder("ws://10.0.0.1:5000", "alice")
    ///     .endpoints(["ws://10.0.0.1:5000", "ws://10.0.0.2:5000", "ws://10.0.0.3:5000"])
    ///     .token("token")
    ///     .connect()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn endpoints<I>(mut self, endpoints: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        self.endpoints = endpoints.into_iter().map(Into::into).collect();
        self
    }

    /// The access token the server's authorization middleware receives.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// How to reconnect; [`ReconnectPolicy::disabled`] closes the client when the
    /// connection is lost. Default: [`ReconnectPolicy::default`].
    pub fn reconnect(mut self, policy: ReconnectPolicy) -> Self {
        self.reconnect = policy;
        self
    }

    /// TLS settings for `wss://` (for example a private root certificate). Default:
    /// the Mozilla root certificates.
    pub fn tls_config(mut self, config: Arc<rustls::ClientConfig>) -> Self {
        self.tls = Some(config);
        self
    }

    /// Opens the connection and waits for it (the original's `onConnection()`). With
    /// several endpoints, it tries each in order until one opens.
    ///
    /// # Errors
    /// [`Error::InvalidEndpoint`] (an endpoint is not a `ws://` or `wss://` URL, or the
    /// list is empty), [`Error::Connect`] when no endpoint can be reached (with several,
    /// its text says why for each), [`Error::Refused`] when a server refuses the client
    /// (401 from its middleware; the next endpoint is not tried after a 4xx, it would
    /// refuse the client too).
    pub async fn connect(self) -> Result<Client> {
        let tls = self.tls.unwrap_or_else(transport::default_tls);
        let targets = Target::all(
            &self.endpoints,
            &self.identifier,
            self.token.as_deref(),
            &tls,
        )?;
        let mut reconnect = Reconnect::with_endpoints(self.reconnect, targets.len());
        let socket = first_connection(&targets, &mut reconnect).await?;
        let (status, _) = watch::channel(ConnectionStatus::Connected);
        let shared = Arc::new(Shared {
            core: Mutex::new(ClientCore::new(uuid::Uuid::new_v4().to_string())),
            listeners: Mutex::new(Listeners::new()),
            status,
            errors: broadcast::channel(64).0,
            streams: Mutex::new(Vec::new()),
            changes: watch::channel(0).0,
            presence_streams: Mutex::new(Vec::new()),
        });
        shared.refresh_observed();
        let (commands, receiver) = mpsc::unbounded_channel();
        let driver = Driver::new(Arc::clone(&shared), receiver, targets, reconnect);
        tokio::spawn(driver.run(socket));
        Ok(Client { shared, commands })
    }
}

/// The first connection: each endpoint in turn, from the first, until one opens; the
/// rotation then goes on from there (see [`Reconnect`]).
///
/// # Errors
/// A 4xx refusal at once; when no endpoint opens, the one failure, or with several an
/// [`Error::Connect`] that lists them.
async fn first_connection(targets: &[Target], reconnect: &mut Reconnect) -> Result<Socket> {
    let mut failures = Vec::new();
    loop {
        let target = &targets[reconnect.endpoint()];
        match transport::connect(target).await {
            Ok(socket) => return Ok(socket),
            Err(refused @ Error::Refused { status, .. }) if (400..500).contains(&status) => {
                return Err(refused);
            }
            Err(error) if targets.len() == 1 => return Err(error),
            Err(Error::Connect(why)) => failures.push(why),
            Err(error) => failures.push(format!("{}:{}: {error}", target.host, target.port)),
        }
        if failures.len() == targets.len() {
            return Err(Error::Connect(format!(
                "none of the {} endpoints could be reached: {}",
                targets.len(),
                failures.join("; ")
            )));
        }
        reconnect.next_endpoint();
    }
}

impl Client {
    /// Connects to `endpoint` as `identifier`, with an optional access token, like the
    /// original's `new Client(endpoint, identifier, token)` followed by `onConnection()`.
    ///
    /// # Errors
    /// As [`ClientBuilder::connect`].
    pub async fn connect(endpoint: &str, identifier: &str, token: Option<&str>) -> Result<Client> {
        let mut builder = ClientBuilder::new(endpoint, identifier);
        if let Some(token) = token {
            builder = builder.token(token);
        }
        builder.connect().await
    }

    /// A builder, for several endpoints, reconnection and TLS settings.
    pub fn builder(endpoint: impl Into<String>, identifier: impl Into<String>) -> ClientBuilder {
        ClientBuilder::new(endpoint, identifier)
    }

    fn send(&self, command: Command) -> bool {
        self.commands.send(command).is_ok()
    }

    /// Attaches to a state and returns its whole value. The client re-attaches by
    /// itself after reconnecting. Attaching to another state detaches from this one.
    ///
    /// # Errors
    /// [`Error::AttachFailed`] when the state does not exist or the server refuses the
    /// client; [`Error::Closed`].
    pub async fn connect_to_state(&self, state_identifier: &str) -> Result<JsonObject> {
        let (reply, answer) = oneshot::channel();
        if !self.send(Command::ConnectToState {
            state_identifier: state_identifier.to_owned(),
            reply,
        }) {
            return Err(Error::Closed);
        }
        answer.await.unwrap_or(Err(Error::Closed))
    }

    /// [`Client::connect_to_state`], returning the state as the caller's type.
    ///
    /// # Errors
    /// As [`Client::connect_to_state`], and [`Error::Deserialize`].
    pub async fn connect_to_state_as<T: DeserializeOwned>(
        &self,
        state_identifier: &str,
    ) -> Result<T> {
        let state = self.connect_to_state(state_identifier).await?;
        serde_json::from_value(Value::Object(state)).map_err(|e| Error::Deserialize(e.to_string()))
    }

    /// Sends a partial state. It is queued at once (in call order, whether or not the
    /// returned future is awaited) and delivered exactly once, across reconnections;
    /// the future resolves when the server applied it, with the updates as applied.
    ///
    /// Each top-level key replaces the state's: the last writer wins per key. When
    /// several clients change the same key (a list everybody appends to, a counter),
    /// use an atomic operation ([`Client::apply`]) or a functional update
    /// ([`Client::update_state_with`]) instead, or concurrent changes are lost.
    ///
    /// # Errors
    /// [`Error::NotAnObject`]; [`Error::Update`] when it was vetoed, refused, invalid,
    /// or its state is gone; [`Error::Closed`].
    pub fn update_state(
        &self,
        updates: impl Into<Value>,
    ) -> impl Future<Output = Result<Applied>> + Send + 'static {
        let queued = object(updates.into()).map(|updates| self.queue(Update::from(updates)));
        async move { queued?.await }
    }

    /// Sends an [`Update`]: keys to set and atomic operations the server applies
    /// against the state's current value, so that concurrent senders all land: append
    /// to an array (optionally capped), increment a number, remove a key. Optionally
    /// conditional on the state's version ([`Update::if_version`]). Queued and
    /// delivered like [`Client::update_state`].
    ///
    /// ```no_run
    /// # async fn run(client: state_sync_client::Client) -> state_sync_client::Result<()> {
    /// use serde_json::json;
    /// use state_sync_client::Update;
    /// let message = json!({"sender": "ada", "content": "hi"});
    /// client
    ///     .apply(Update::new().append_capped("chatMessages", [message], 100).increment("sent", 1))
    ///     .await?;
    /// # Ok(()) }
    /// ```
    ///
    /// Against the original server, which knows no operations, they are resolved
    /// against the local state and sent as plain updates (not atomic there), and the
    /// version is not checked. The original acknowledges nothing, so this resolves
    /// once sent, before the server's echo updates the local state: a second
    /// operation on the same key sent before that echo overwrites the first.
    ///
    /// # Errors
    /// As [`Client::update_state`]; [`UpdateFailure::Rejected`](crate::UpdateFailure)
    /// with [`FailureReason::Conflict`] when the state is not at the expected version,
    /// [`FailureReason::InvalidOperation`] when an operation does not fit the key's value.
    pub fn apply(&self, update: Update) -> impl Future<Output = Result<Applied>> + Send + 'static {
        self.queue(update)
    }

    /// [`Client::update_state`] applied only if the state is at `version` (the version
    /// the updates were computed from); otherwise it fails with
    /// [`FailureReason::Conflict`] and changes nothing.
    ///
    /// # Errors
    /// As [`Client::apply`].
    pub fn update_state_if(
        &self,
        updates: impl Into<Value>,
        version: u64,
    ) -> impl Future<Output = Result<Applied>> + Send + 'static {
        let queued = object(updates.into())
            .map(|updates| self.queue(Update::from(updates).if_version(version)));
        async move { queued?.await }
    }

    /// A functional update, like React's `setState(prev => next)`: `compute` gets the
    /// state and returns the partial state to send. It runs when the update can be
    /// sent (attached, after any resync), against the state the server then has; the
    /// update is sent conditionally on that version, and when another writer got there
    /// first it waits for the newer state (and a short random delay that spreads
    /// colliding writers) and runs `compute` again, up to [`MAX_ATTEMPTS`] times.
    /// Resolves once, with what was finally applied. For a key many clients change at
    /// once (a counter, a list), an atomic operation ([`Client::apply`]) never needs a
    /// retry.
    ///
    /// ```no_run
    /// # async fn run(client: state_sync_client::Client) -> state_sync_client::Result<()> {
    /// use serde_json::json;
    /// client
    ///     .update_state_with(|state| {
    ///         let count = state.get("count").and_then(|c| c.as_u64()).unwrap_or(0);
    ///         json!({ "count": count + 1, "last": "ada" })
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    ///
    /// Against the original server, which has no versions, it sends what `compute`
    /// returned once, unconditionally.
    ///
    /// # Errors
    /// As [`Client::update_state`]; [`FailureReason::Conflict`] after [`MAX_ATTEMPTS`]
    /// conflicts in a row.
    pub async fn update_state_with(
        &self,
        mut compute: impl FnMut(&JsonObject) -> Value + Send,
    ) -> Result<Applied> {
        for attempt in 0..MAX_ATTEMPTS {
            self.wait_until(|core| core.is_attached() || core.state_identifier().is_none())
                .await?;
            // Not under the lock: `compute` is user code.
            let (state, version) = {
                let core = lock(&self.shared.core);
                let version = core.version().filter(|_| !core.is_legacy_server());
                (core.state().clone(), version)
            };
            let update = Update::from(object(compute(&state))?);
            let update = match version {
                Some(version) => update.if_version(version),
                None => update,
            };
            match self.queue(update).await {
                Err(Error::Update(UpdateFailure::Rejected {
                    reason: FailureReason::Conflict,
                    ..
                })) => {
                    // Wait for the newer state (or a resync) before computing again,
                    // and a little more, at random, so that writers who keep colliding
                    // spread out (growing to at most 128 ms).
                    self.wait_until(|core| core.version() != version || !core.is_attached())
                        .await?;
                    let spread = conflict_spread_micros(attempt);
                    tokio::time::sleep(Duration::from_micros(fastrand::u64(0..=spread))).await;
                }
                other => return other,
            }
        }
        Err(Error::Update(UpdateFailure::Rejected {
            reason: FailureReason::Conflict,
            message: gave_up_message(),
        }))
    }

    /// Queues an update; the future resolves with its outcome.
    fn queue(&self, update: Update) -> impl Future<Output = Result<Applied>> + Send + 'static {
        let (reply, answer) = oneshot::channel();
        let sent = self.send(Command::Update { update, reply });
        async move {
            if !sent {
                return Err(Error::Closed);
            }
            answer.await.unwrap_or(Err(Error::Closed))
        }
    }

    /// Waits until `ready` holds for the core.
    ///
    /// # Errors
    /// [`Error::Closed`] when the client is closed first.
    async fn wait_until(&self, mut ready: impl FnMut(&ClientCore) -> bool) -> Result<()> {
        let mut changes = self.shared.changes.subscribe();
        let mut status = self.shared.status.subscribe();
        loop {
            if ready(&lock(&self.shared.core)) {
                return Ok(());
            }
            if *status.borrow_and_update() == ConnectionStatus::Closed {
                return Err(Error::Closed);
            }
            tokio::select! {
                changed = changes.changed() => changed.map_err(|_| Error::Closed)?,
                changed = status.changed() => changed.map_err(|_| Error::Closed)?,
            }
        }
    }

    /// Adds a listener, or replaces the one with the same identifier. It is called with
    /// `(updates, previous_values)` for every change of the local state that touches
    /// one of `properties` (every change when empty): updates from the server, and what
    /// changed while the client was disconnected. Listeners run on the client's task:
    /// keep them short. A listener that panics is reported on [`Client::errors`].
    pub fn add_state_update_listener(
        &self,
        listener_identifier: &str,
        properties: &[&str],
        listener: impl FnMut(&JsonObject, &JsonObject) + Send + 'static,
    ) {
        let properties = properties.iter().map(|p| (*p).to_owned()).collect();
        let listener: SharedListener = Arc::new(Mutex::new(Box::new(listener)));
        lock(&self.shared.listeners).add(listener_identifier, properties, listener);
        self.shared.refresh_observed();
    }

    /// Removes a listener; `false` when none had this identifier.
    pub fn remove_state_update_listener(&self, listener_identifier: &str) -> bool {
        let removed = lock(&self.shared.listeners).remove(listener_identifier);
        self.shared.refresh_observed();
        removed
    }

    /// A snapshot of the local state (the original's `getState()`).
    pub fn state(&self) -> JsonObject {
        lock(&self.shared.core).state().clone()
    }

    /// The version of the local state: how many updates the server had applied to it
    /// (`None` before attaching, or against the original server, which has none).
    pub fn state_version(&self) -> Option<u64> {
        lock(&self.shared.core).version()
    }

    /// The local state as the caller's type.
    ///
    /// # Errors
    /// [`Error::Deserialize`].
    pub fn state_as<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_value(Value::Object(self.state()))
            .map_err(|e| Error::Deserialize(e.to_string()))
    }

    /// The connection status now.
    pub fn status(&self) -> ConnectionStatus {
        *self.shared.status.borrow()
    }

    /// Follows the connection status (`changed().await`, then `borrow()`).
    pub fn status_changes(&self) -> watch::Receiver<ConnectionStatus> {
        self.shared.status.subscribe()
    }

    /// Errors not tied to one call: the state removed, a re-attach refused, server
    /// errors, reconnection refused, a listener that panicked (the original's
    /// `onError()`). Failures to reconnect come once per streak, not per attempt: a
    /// connection the server dropped before answering ([`Error::Dropped`]), an attempt
    /// that could not connect ([`Error::Connect`]), and giving up
    /// ([`Error::GaveUp`]). Keeps the last 64 for a slow reader; only what comes after
    /// this call.
    pub fn errors(&self) -> broadcast::Receiver<Error> {
        self.shared.errors.subscribe()
    }

    /// Every later change of the local state, as a stream (what listeners with no
    /// property filter hear). Nothing is dropped: the stream buffers what its reader
    /// has not taken yet.
    pub fn updates(&self) -> impl Stream<Item = StateUpdate> + Send + 'static {
        let (sender, receiver) = mpsc::unbounded_channel();
        lock(&self.shared.streams).push(sender);
        self.shared.refresh_observed();
        futures_util::stream::unfold(receiver, |mut receiver| async move {
            receiver.recv().await.map(|update| (update, receiver))
        })
    }

    /// Sets this client's presence in its state: a JSON object others see next to its
    /// public identity (a cursor, "typing", a colour), replacing the previous one. It
    /// is kept across reconnects and states, and sent with every attach; changes are
    /// sent at most once per [`PRESENCE_INTERVAL`](crate::PRESENCE_INTERVAL), the
    /// latest winning, so calling this on every mouse move is fine. A refusal by the
    /// server (too large) is reported on [`Client::errors`] as [`Error::Presence`].
    ///
    /// # Errors
    /// [`Error::NotAnObject`]; [`Error::Closed`].
    pub fn set_presence(&self, presence: impl Into<Value>) -> Result<()> {
        let presence = object(presence.into())?;
        if self.send(Command::SetPresence { presence }) {
            Ok(())
        } else {
            Err(Error::Closed)
        }
    }

    /// This client's presence, as last set.
    pub fn my_presence(&self) -> JsonObject {
        lock(&self.shared.core).my_presence().clone()
    }

    /// The others present in the attached state, in the order they joined: each with
    /// its entry id, public identity (`user`) and presence. Two tabs of one user are
    /// two entries. Kept while reconnecting; empty when attached to no state.
    pub fn others(&self) -> Vec<PresenceEntry> {
        lock(&self.shared.core).others().to_vec()
    }

    /// This connection's entry id in its state's presence (the `id` the others see),
    /// once the server said.
    pub fn presence_id(&self) -> Option<String> {
        lock(&self.shared.core).presence_id().map(str::to_owned)
    }

    /// Every later change of the others' presence, in order: the whole list on each
    /// (re-)attach ([`PresenceEvent::Synced`]), then joins, updates and leaves.
    pub fn presence_events(&self) -> impl Stream<Item = PresenceEvent> + Send + Unpin + 'static {
        let (sender, receiver) = mpsc::unbounded_channel();
        lock(&self.shared.presence_streams).push(sender);
        Box::pin(futures_util::stream::unfold(
            receiver,
            |mut receiver| async move { receiver.recv().await.map(|event| (event, receiver)) },
        ))
    }

    /// Closes the connection; pending updates fail with [`Error::Closed`]. Waits until
    /// the client is closed.
    pub async fn close(&self) {
        let (reply, done) = oneshot::channel();
        if self.send(Command::Close { reply }) {
            let _ = done.await;
        }
    }
}
