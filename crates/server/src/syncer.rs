//! [`StateSyncer`]: the public API of the server.

use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde_json::Value;
use state_sync_protocol::{JsonObject, Update, json_kind, texts};
use tokio::net::{TcpListener, ToSocketAddrs};

use crate::builder::Builder;
use crate::error::{CreateStateError, UpdateError};
use crate::options::StateOptions;
use crate::runtime::Runtime;
use crate::server::Server;

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
    pub(crate) runtime: Arc<Runtime<K>>,
}

impl<K> Clone for StateSyncer<K> {
    fn clone(&self) -> Self {
        StateSyncer {
            runtime: Arc::clone(&self.runtime),
        }
    }
}

impl<K> std::fmt::Debug for StateSyncer<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateSyncer")
            .field("config", &self.runtime.config)
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
    pub(crate) fn from_runtime(runtime: Arc<Runtime<K>>) -> Self {
        StateSyncer { runtime }
    }

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
        Server::spawn(Arc::clone(&self.runtime), listener)
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
        let initial = self.runtime.is_shared().then(|| value.clone());
        let state = self.runtime.states.create(
            id.clone(),
            value,
            options.hooks,
            options.ttl,
            options.reset_stored,
        )?;
        if let Some(expires_at) = state.expires_at {
            self.runtime.expire_at(&state, expires_at);
        }
        if let Some(initial) = initial {
            self.runtime
                .share(&state, initial, options.ttl, options.reset_stored);
        }
        tracing::debug!(state = %id, "state created");
        Ok(id)
    }

    /// Removes a state; its clients receive STATE_DOES_NOT_EXIST and are detached.
    /// `false` when there was no such state. With [`Builder::redis`](crate::Builder::redis),
    /// every server of the cluster removes it and tells its clients.
    pub fn remove_state(&self, id: &str) -> bool {
        let why = texts::state_removed(id);
        match self.runtime.states.remove(id, &why) {
            Some(state) => {
                self.runtime.removed_here(&state, &why);
                true
            }
            None => false,
        }
    }

    /// Removes every state, telling their clients. Returns how many were removed.
    /// With [`Builder::redis`](crate::Builder::redis), every server of the cluster
    /// removes them.
    pub fn remove_all_states(&self) -> usize {
        let removed = self.runtime.states.remove_all();
        for state in &removed {
            self.runtime
                .removed_here(state, &texts::state_removed(&state.id));
        }
        removed.len()
    }

    /// The current value of a state (the original's `getValueOfState`), or `None`.
    pub fn value_of_state(&self, id: &str) -> Option<JsonObject> {
        self.runtime
            .states
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
        self.runtime
            .states
            .get(id)?
            .snapshot()
            .map(|(_, version)| version)
    }

    /// How many clients are attached to a state.
    pub fn clients_of_state(&self, id: &str) -> Option<usize> {
        Some(self.runtime.states.get(id)?.clients())
    }

    /// Who is present in a state, in the order they joined: every attached connection
    /// shown to others (see [`Builder::max_presence_entries`](crate::Builder::max_presence_entries)),
    /// and those whose lost connection is within its grace period. With Redis, the
    /// clients of every server. `None` when there is no such state.
    pub fn presence_of_state(&self, id: &str) -> Option<Vec<crate::Present>> {
        Some(self.runtime.states.get(id)?.presence.present())
    }

    /// Whether the server can take changes: its durable store is usable (its file is
    /// there and it has not failed), or Redis answers a PING within a second; `Err`
    /// says why not. What `/readyz` answers; for an app that serves its own health
    /// routes.
    ///
    /// # Errors
    /// The reason the server is not ready.
    pub async fn ready(&self) -> Result<(), String> {
        self.runtime.ready().await
    }

    /// Closes every client connection with 1001 `server shutting down` (their clients
    /// reconnect elsewhere); how many were open. For connections served through an
    /// app's router ([`axum`](crate::axum)), which [`Server::shutdown`](crate::Server::shutdown)
    /// does not reach: call it when the app shuts down.
    pub fn disconnect_all(&self) -> usize {
        self.runtime.disconnect_all()
    }

    /// The identifiers of every live state.
    pub fn state_identifiers(&self) -> Vec<String> {
        self.runtime.states.ids()
    }

    /// Closes every connection of the client with this identifier (close code 4000,
    /// reason `disconnected by the server`), after sending what was queued for it.
    /// Returns how many were closed. A client of this project reconnects unless the
    /// authorization middleware now refuses it: revoke its access first to keep it out.
    pub fn disconnect_client(&self, identifier: &str) -> usize {
        self.runtime.disconnect_client(identifier)
    }

    /// Waits until every change made so far is saved (with a durable store; at once
    /// without one). Call it before exiting.
    ///
    /// # Errors
    /// [`UpdateError::StorageFailed`] when the store failed.
    pub async fn sync(&self) -> Result<(), UpdateError> {
        match self.runtime.states.store() {
            Some(store) => store
                .synced()
                .await
                .map_err(|e| UpdateError::StorageFailed(e.to_string())),
            None => Ok(()),
        }
    }

    /// Saves what is queued and closes the durable store (nothing can be saved after
    /// this; updates fail). Call it last, after [`Server::shutdown`].
    pub fn close_storage(&self) {
        if let Some(store) = self.runtime.states.store() {
            store.close();
        }
    }

    /// Bytes of answers the session logs of every state keep for retried updates
    /// (bounded by [`Builder::session_log_bytes`](crate::Builder::session_log_bytes)).
    pub fn session_log_bytes(&self) -> usize {
        self.runtime.states.session_log_bytes()
    }

    /// How many connections are open (upgraded and not yet closed).
    pub fn connection_count(&self) -> usize {
        self.runtime.connection_count()
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
        self.apply_update(id, Update::from(updates), client_information)
            .await
    }

    /// Applies an [`Update`] from server code: keys to set and atomic operations
    /// (append, increment, remove), optionally only at an expected version. Runs the
    /// interceptor like [`StateSyncer::update_state_value`].
    ///
    /// # Errors
    /// As [`StateSyncer::update_state_value`], and [`UpdateError::Conflict`] or
    /// [`UpdateError::InvalidOperation`].
    pub async fn apply_update(
        &self,
        id: &str,
        update: Update,
        client_information: Option<K>,
    ) -> Result<Applied, UpdateError> {
        let state = self
            .runtime
            .states
            .get(id)
            .ok_or_else(|| UpdateError::StateDoesNotExist(id.to_owned()))?;
        let client = client_information.map(Arc::new);
        match self
            .runtime
            .intercept_and_apply(&state, update, client, None, true)
            .await
        {
            Ok((version, updates)) => Ok(Applied { version, updates }),
            Err(failure) => Err(failure.into_update_error(id)),
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
