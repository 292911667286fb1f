//! What a running syncer shares between its API handle ([`StateSyncer`](crate::StateSyncer))
//! and its connections: the states, the open connections, the settings, and the
//! orchestration around user code (interceptor before an update, self-destruct after a
//! client leaves, expiry timers).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Instant;

use state_sync_protocol::{JsonObject, Update, texts};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::backend::Backend;
#[cfg(feature = "redis")]
use crate::cluster::Cluster;
use crate::config::Config;
use crate::failure::Failure;
use crate::handshake::Authorizer;
use crate::hooks::run_hook;
use crate::outbox::Closer;
use crate::registry::States;
use crate::session_log::LogBudget;
use crate::state::{Origin, State};
#[cfg(feature = "tls")]
use crate::tls::TlsConfig;

/// Updates of one state waiting for the store, past which their senders wait for it
/// (and at most a quarter of a connection's outgoing queue, see [`Runtime::max_unsaved`]).
const MAX_UNSAVED: usize = 4096;

/// The open connections by id: their client's identifier, and how to close them.
type Connections = HashMap<u64, (Arc<str>, Arc<Closer>)>;

/// The shared core of a syncer.
pub(crate) struct Runtime<K> {
    pub(crate) states: States<K>,
    /// Live connections by id: their client identifier and how to close them.
    connections: Mutex<Connections>,
    next_connection: AtomicU64,
    pub(crate) config: Config,
    pub(crate) authorizer: Authorizer<K>,
    #[cfg(feature = "tls")]
    tls: Option<TlsConfig>,
    /// With Redis: this server's side of the cluster.
    #[cfg(feature = "redis")]
    pub(crate) cluster: Option<Arc<Cluster>>,
}

impl<K: Send + Sync + 'static> Runtime<K> {
    pub(crate) fn new(
        config: Config,
        authorizer: Authorizer<K>,
        #[cfg(feature = "tls")] tls: Option<TlsConfig>,
    ) -> Self {
        #[cfg(feature = "redis")]
        let cluster = config.redis.clone().map(|redis| {
            Arc::new(Cluster::new(
                redis,
                config.session_retention,
                config.max_state_bytes,
            ))
        });
        #[cfg(feature = "redis")]
        let node = cluster.as_ref().map(|cluster| Arc::clone(&cluster.node));
        #[cfg(not(feature = "redis"))]
        let node = None;
        // Shared through Redis, states are kept there.
        let store = config
            .storage
            .clone()
            .filter(|_| node.is_none())
            .map(|storage| storage.store as Arc<dyn Backend>);
        Runtime {
            states: States::new(
                config.max_state_bytes,
                config.session_retention,
                LogBudget::new(config.session_log_bytes_per_state, config.session_log_bytes),
                store,
                node,
                (config.presence, config.hook_timeout),
                Arc::clone(&config.metrics_states),
            ),
            connections: Mutex::new(HashMap::new()),
            next_connection: AtomicU64::new(0),
            config,
            authorizer,
            #[cfg(feature = "tls")]
            tls,
            #[cfg(feature = "redis")]
            cluster,
        }
    }

    /// Whether states are shared with other servers through Redis.
    pub(crate) fn is_shared(&self) -> bool {
        #[cfg(feature = "redis")]
        return self.cluster.is_some();
        #[cfg(not(feature = "redis"))]
        false
    }

    /// A state was created here: with Redis, creates it there unless it is there (then
    /// the replica loads it) and follows it.
    #[cfg_attr(not(feature = "redis"), allow(clippy::unused_self, unused_variables))]
    pub(crate) fn share(
        self: &Arc<Self>,
        state: &Arc<State<K>>,
        initial: JsonObject,
        ttl: Option<std::time::Duration>,
        reset: bool,
    ) {
        #[cfg(feature = "redis")]
        if let Some(cluster) = &self.cluster {
            let removed = Arc::downgrade(self);
            let expire = Arc::downgrade(self);
            let notices = crate::cluster::Opened {
                removed: Box::new(move |state: &Arc<State<K>>, why: Option<String>| {
                    if let Some(runtime) = removed.upgrade() {
                        let why = why
                            .filter(|why| !why.is_empty())
                            .unwrap_or_else(|| texts::state_removed(&state.id));
                        runtime.states.remove_state(state, &why, usize::MAX);
                    }
                }),
                expire: Box::new(move |state: &Arc<State<K>>, deadline| {
                    if let Some(runtime) = expire.upgrade() {
                        let left = deadline
                            .duration_since(std::time::SystemTime::now())
                            .unwrap_or_default();
                        runtime.expire_at(state, Instant::now() + left);
                    }
                }),
            };
            let expires = ttl.map(|ttl| std::time::SystemTime::now() + ttl);
            cluster.open(state, initial, expires, reset, notices);
        }
    }

    /// Whether the backend can take changes: the durable store's file is there and it
    /// has not failed, or Redis answers a PING within a second. `Err` says why not.
    pub(crate) async fn ready(&self) -> Result<(), String> {
        if let Some(store) = self.states.store() {
            store.check()?;
        }
        #[cfg(feature = "redis")]
        if let Some(cluster) = &self.cluster {
            cluster.ping().await?;
        }
        Ok(())
    }

    /// A state was removed here (by server code, its ttl or self-destruct): with
    /// Redis, every server removes it.
    #[cfg_attr(not(feature = "redis"), allow(clippy::unused_self, unused_variables))]
    pub(crate) fn removed_here(&self, state: &State<K>, why: &str) {
        #[cfg(feature = "redis")]
        if let Some(cluster) = &self.cluster {
            cluster.remove(state, why);
        }
    }

    #[cfg(feature = "tls")]
    pub(crate) fn tls(&self) -> Option<&TlsConfig> {
        self.tls.as_ref()
    }

    #[cfg(not(feature = "tls"))]
    pub(crate) fn tls(&self) -> Option<std::convert::Infallible> {
        None
    }

    /// Runs the state's interceptor (if any), then applies and broadcasts. With a
    /// durable store the broadcast (and the sender's echo, or its failure) follows the
    /// save; `wait_saved` returns only then, for callers that are told nothing else
    /// (server code). A connection does not wait: it reads its next message while the
    /// store saves, so that its updates share commits.
    pub(crate) async fn intercept_and_apply(
        &self,
        state: &State<K>,
        update: Update,
        client: Option<Arc<K>>,
        origin: Option<Origin<'_>>,
        wait_saved: bool,
    ) -> Result<(u64, Arc<JsonObject>), Failure> {
        let update = self.intercept(state, update, client).await?;
        #[cfg(feature = "redis")]
        if let Some(cluster) = self.cluster.as_ref().filter(|_| state.is_shared()) {
            let sender = origin.and_then(|o| Some((o.session?, o.request_id?, o.floor)));
            let echo = origin.and_then(|o| Some((o.subscriber, o.request_id?)));
            return cluster
                .apply(state, &update, sender, echo, wait_saved)
                .await;
        }
        let applied = state.apply(&update, origin)?;
        // A sender faster than the disk waits too, so that what waits for the store
        // stays bounded.
        let wait_saved = wait_saved || state.unsaved() > self.max_unsaved();
        if let (true, Some(ticket), Some(store)) = (wait_saved, applied.ticket, state.store()) {
            store
                .saved(ticket)
                .await
                .map_err(|e| Failure::StorageFailed(e.to_string()))?;
        }
        Ok((applied.version, applied.updates))
    }

    /// Runs the state's interceptor (if any): the update it lets through.
    pub(crate) async fn intercept(
        &self,
        state: &State<K>,
        update: Update,
        client: Option<Arc<K>>,
    ) -> Result<Update, Failure> {
        match state.hooks.intercept_state_update.clone() {
            None => Ok(update),
            Some(intercept) => {
                let limit = self.config.hook_timeout;
                run_hook("intercept_state_update", limit, move || {
                    intercept(update, client.as_deref())
                })
                .await
                .map_err(Failure::InterceptorFailed)?
                .ok_or(Failure::Vetoed)
            }
        }
    }

    /// Updates of one state that may wait for the store before their senders wait too.
    /// Their broadcasts are queued together when the store commits them: were there
    /// more than a quarter of a connection's outgoing queue, one slow commit could
    /// overflow the queue of a client that reads as fast as it can (and close it).
    pub(crate) fn max_unsaved(&self) -> usize {
        MAX_UNSAVED.min(self.config.outgoing_queue / 4).max(1)
    }

    /// With a durable store: waits until what `ticket` stands for is saved.
    pub(crate) async fn saved(&self, state: &State<K>, ticket: Option<u64>) -> Result<(), Failure> {
        match (ticket, state.store()) {
            (Some(ticket), Some(store)) => store
                .saved(ticket)
                .await
                .map_err(|e| Failure::StorageFailed(e.to_string())),
            _ => Ok(()),
        }
    }

    /// Registers a live connection; returns its id for [`Runtime::unregister`].
    pub(crate) fn register(&self, identifier: &Arc<str>, closer: &Arc<Closer>) -> u64 {
        let id = self.next_connection.fetch_add(1, Ordering::Relaxed);
        self.connections()
            .insert(id, (Arc::clone(identifier), Arc::clone(closer)));
        crate::metrics::connections(1.0);
        id
    }

    pub(crate) fn unregister(&self, id: u64) {
        if self.connections().remove(&id).is_some() {
            crate::metrics::connections(-1.0);
        }
    }

    fn connections(&self) -> std::sync::MutexGuard<'_, Connections> {
        self.connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn connection_count(&self) -> usize {
        self.connections().len()
    }

    /// Closes every connection with 1001 (`server shutting down`): those of an app's
    /// router, which no [`Server`](crate::Server) shuts down. How many were open.
    pub(crate) fn disconnect_all(&self) -> usize {
        let connections = self.connections();
        for (_, closer) in connections.values() {
            closer.close(CloseCode::Away, "server shutting down");
        }
        connections.len()
    }

    /// Closes every connection of a client identifier; returns how many.
    pub(crate) fn disconnect_client(&self, identifier: &str) -> usize {
        let connections = self.connections();
        let mut closed = 0;
        for (client, closer) in connections.values() {
            if **client == *identifier {
                closer.close(CloseCode::from(4000), "disconnected by the server");
                closed += 1;
            }
        }
        closed
    }

    /// Detaches a subscriber, then asks the state's self-destruct hook whether to
    /// remove the state.
    pub(crate) fn detach(self: &Arc<Self>, state: Arc<State<K>>, subscriber: usize) {
        if state.detach(subscriber).is_some() {
            self.after_detach(state, true);
        }
    }

    /// After a client left a state: asks its self-destruct hook (in a task of its own,
    /// so that the answer is acted on even if the connection goes away) whether to
    /// remove it. Nothing happens when `left_for_good` is false (the client re-attached
    /// to the same state).
    pub(crate) fn after_detach(self: &Arc<Self>, state: Arc<State<K>>, left_for_good: bool) {
        let Some(self_destruct) = state.hooks.self_destruct.clone().filter(|_| left_for_good)
        else {
            return;
        };
        let clients_left = state.clients();
        let runtime = Arc::clone(self);
        tokio::spawn(async move {
            let created_at = state.created_at;
            let limit = runtime.config.hook_timeout;
            // With Redis, the clients of every server count.
            let everywhere = match runtime.clients_everywhere(&state, clients_left).await {
                Ok(clients) => clients,
                Err(failure) => {
                    tracing::warn!(state = %state.id, ?failure, "self-destruct not asked");
                    return;
                }
            };
            let verdict = run_hook("self_destruct", limit, move || {
                self_destruct(everywhere, created_at)
            })
            .await;
            // Remove only if nobody attached while the hook ran; a client that did will
            // ask the hook again when it leaves.
            let message = texts::state_self_destructed(&state.id);
            if verdict == Ok(true) && runtime.states.remove_state(&state, &message, clients_left) {
                runtime.removed_here(&state, &message);
                tracing::info!(state = %state.id, clients_left = everywhere, "state self-destructed");
            }
        });
    }

    /// How many clients are attached to the state: here, or with Redis on every server.
    async fn clients_everywhere(&self, state: &State<K>, here: usize) -> Result<usize, Failure> {
        #[cfg(feature = "redis")]
        if let Some(cluster) = self.cluster.as_ref().filter(|_| state.is_shared()) {
            return cluster.clients(&state.id, here).await;
        }
        let _ = state;
        Ok(here)
    }

    /// Removes the state when its time to live is over. Without a runtime the state
    /// still expires: lookups treat it as gone and remove it.
    pub(crate) fn expire_at(self: &Arc<Self>, state: &Arc<State<K>>, at: Instant) {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let runtime: Weak<Self> = Arc::downgrade(self);
        let state = Arc::downgrade(state);
        handle.spawn(async move {
            tokio::time::sleep_until(at.into()).await;
            if let (Some(runtime), Some(state)) = (runtime.upgrade(), state.upgrade()) {
                let why = texts::state_expired(&state.id);
                if runtime.states.remove_state(&state, &why, usize::MAX) {
                    tracing::info!(state = %state.id, "state expired");
                }
                // Even when a lookup removed it here first: every server must.
                if state.is_shared() {
                    runtime.removed_here(&state, &why);
                }
            }
        });
    }
}
