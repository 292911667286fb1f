//! Options of a state: identifier, initial value, hooks and lifetime.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::Value;
use state_sync_protocol::{JsonObject, Update};

pub(crate) type AllowHook<K> = Arc<dyn Fn(&K) -> bool + Send + Sync>;
pub(crate) type InterceptHook<K> = Arc<dyn Fn(Update, Option<&K>) -> Option<Update> + Send + Sync>;
pub(crate) type SelfDestructHook = Arc<dyn Fn(usize, SystemTime) -> bool + Send + Sync>;
pub(crate) type IdentityHook<K> = Arc<dyn Fn(&str, &K) -> Value + Send + Sync>;

/// How to create a state: the original's `StateOptions`, as a builder.
///
/// Hooks run on tokio's blocking pool with a time limit
/// ([`Builder::hook_timeout`](crate::Builder::hook_timeout)); one that panics or
/// hangs fails the operation that called it and is logged, and the server carries on.
///
/// ```
/// use std::time::Duration;
/// use serde_json::json;
/// use state_sync_server::StateOptions;
///
/// let options = StateOptions::<String>::new()
///     .identifier("myGroupChat")
///     .initial_value(json!({"chatMessages": []}))
///     .allow_connecting_client(|email: &String| email.ends_with("@example.com"))
///     .intercept_state_update(|updates, _client| Some(updates))
///     .self_destruct(|clients_left, _created| clients_left == 0)
///     .ttl(Duration::from_secs(3600));
/// ```
pub struct StateOptions<K> {
    pub(crate) identifier: Option<String>,
    pub(crate) initial_value: Value,
    pub(crate) hooks: StateHooks<K>,
    pub(crate) ttl: Option<Duration>,
    pub(crate) reset_stored: bool,
}

/// The user code a state calls (each optional).
pub(crate) struct StateHooks<K> {
    pub(crate) allow_connecting_client: Option<AllowHook<K>>,
    pub(crate) intercept_state_update: Option<InterceptHook<K>>,
    pub(crate) self_destruct: Option<SelfDestructHook>,
    pub(crate) public_identity: Option<IdentityHook<K>>,
    pub(crate) on_join: Option<crate::presence::PresenceHook>,
    pub(crate) on_leave: Option<crate::presence::PresenceHook>,
}

impl<K> Default for StateOptions<K> {
    fn default() -> Self {
        StateOptions {
            identifier: None,
            initial_value: Value::Object(JsonObject::new()),
            hooks: StateHooks {
                allow_connecting_client: None,
                intercept_state_update: None,
                self_destruct: None,
                public_identity: None,
                on_join: None,
                on_leave: None,
            },
            ttl: None,
            reset_stored: false,
        }
    }
}

impl<K> fmt::Debug for StateOptions<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateOptions")
            .field("identifier", &self.identifier)
            .field("initial_value", &self.initial_value)
            .field(
                "allow_connecting_client",
                &self.hooks.allow_connecting_client.is_some(),
            )
            .field(
                "intercept_state_update",
                &self.hooks.intercept_state_update.is_some(),
            )
            .field("self_destruct", &self.hooks.self_destruct.is_some())
            .field("public_identity", &self.hooks.public_identity.is_some())
            .field("on_join", &self.hooks.on_join.is_some())
            .field("on_leave", &self.hooks.on_leave.is_some())
            .field("ttl", &self.ttl)
            .finish()
    }
}

impl<K> StateOptions<K> {
    /// Options with no identifier (a UUID v4 is generated), the value `{}`, no hooks
    /// and no expiry.
    pub fn new() -> Self {
        Self::default()
    }

    /// The state's identifier; without one a UUID v4 is generated.
    pub fn identifier(mut self, identifier: impl Into<String>) -> Self {
        self.identifier = Some(identifier.into());
        self
    }

    /// The initial value; it must be a JSON object
    /// ([`create_state`](crate::StateSyncer::create_state) refuses anything else).
    /// Default: `{}`.
    pub fn initial_value(mut self, value: impl Into<Value>) -> Self {
        self.initial_value = value.into();
        self
    }

    /// Decides whether a client may attach to this state, from the client information
    /// the authorization middleware returned. Called on every attach.
    pub fn allow_connecting_client(
        mut self,
        hook: impl Fn(&K) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.hooks.allow_connecting_client = Some(Arc::new(hook));
        self
    }

    /// Sees every update before it is applied, with the client information of its
    /// sender (`None` for updates made by server code without one). Return the update
    /// to apply (it may be rewritten) or `None` to veto it: nothing is stored or
    /// broadcast, and a client that sent a request id is told it was vetoed.
    ///
    /// An [`Update`] holds the keys it sets (`update.set`, the original's `updates`)
    /// and its atomic operations (`update.ops`: append, increment, remove), which are
    /// applied after the interceptor, against the state's value at that moment: the
    /// interceptor sees what is asked (the items to append, the amount to add), not
    /// the resulting values. It may change or drop either part, add operations, or
    /// turn an operation into a set. A conditional update's expected version is
    /// checked after it too.
    ///
    /// ```
    /// use serde_json::{json, Value};
    /// use state_sync_server::StateOptions;
    /// use state_sync_server::protocol::Operation;
    ///
    /// // Stamp every appended chat message with its author; nobody removes the history.
    /// let options = StateOptions::<String>::new().intercept_state_update(|mut update, user| {
    ///     for (key, operation) in &mut update.ops {
    ///         match (key.as_str(), operation) {
    ///             ("messages", Operation::Append { items, .. }) => {
    ///                 for item in items.iter_mut() {
    ///                     item["author"] = json!(user?);
    ///                 }
    ///             }
    ///             ("messages", Operation::Remove) => return None,
    ///             _ => {}
    ///         }
    ///     }
    ///     Some(update)
    /// });
    /// ```
    pub fn intercept_state_update(
        mut self,
        hook: impl Fn(Update, Option<&K>) -> Option<Update> + Send + Sync + 'static,
    ) -> Self {
        self.hooks.intercept_state_update = Some(Arc::new(hook));
        self
    }

    /// Called each time a client detaches from this state (it disconnects, or attaches
    /// to another state) with the number of clients still attached and the time the
    /// state was created. Returning `true` removes the state.
    pub fn self_destruct(
        mut self,
        hook: impl Fn(usize, SystemTime) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.hooks.self_destruct = Some(Arc::new(hook));
        self
    }

    /// What other clients see of a client in this state's presence (its `user`),
    /// from its `identifier` and client information; by default the identifier, as a
    /// JSON string. Return less than the client information holds (a display name, an
    /// avatar), never a secret. It runs on every attach, like
    /// [`allow_connecting_client`](Self::allow_connecting_client); a hook that panics
    /// or exceeds the hook time limit fails the attach.
    pub fn public_identity(
        mut self,
        hook: impl Fn(&str, &K) -> Value + Send + Sync + 'static,
    ) -> Self {
        self.hooks.public_identity = Some(Arc::new(hook));
        self
    }

    /// Called when a connection joins this state's presence (it attached; a client
    /// reconnecting within the grace period takes its entry back and does not join
    /// again). Calls run one at a time, in order with [`on_leave`](Self::on_leave), in
    /// a task of their own; one that panics or exceeds the hook time limit is
    /// abandoned.
    pub fn on_join(mut self, hook: impl Fn(&crate::Present) + Send + Sync + 'static) -> Self {
        self.hooks.on_join = Some(Arc::new(hook));
        self
    }

    /// Called when an entry leaves this state's presence: its connection detached or
    /// closed, its lost connection's grace period ended, or the state was removed.
    /// Like [`on_join`](Self::on_join).
    pub fn on_leave(mut self, hook: impl Fn(&crate::Present) + Send + Sync + 'static) -> Self {
        self.hooks.on_leave = Some(Arc::new(hook));
        self
    }

    /// With a durable store ([`Builder::storage`](crate::Builder::storage)): start from
    /// `initial_value` even if the store holds this state (its value, version and
    /// sessions are discarded). Without it, a stored state comes back as it was saved,
    /// with its version, its sessions and its ttl deadline, and the hooks given here:
    /// a server declares its states at start-up and gets their saved values back.
    /// With [`Builder::redis`](crate::Builder::redis) it replaces the state every
    /// server shares (a new incarnation: every server's clients attach again), each
    /// time a server creates it.
    pub fn reset_stored(mut self, reset: bool) -> Self {
        self.reset_stored = reset;
        self
    }

    /// Removes the state this long after its creation. Its clients are told, as with
    /// [`remove_state`](crate::StateSyncer::remove_state).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }
}
