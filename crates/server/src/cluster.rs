//! Several servers serving the same states through Redis (cargo feature `redis`).
//!
//! Each server holds a replica of every state it created ([`crate::state::Replica`]),
//! loaded from Redis and changed only by what Redis publishes, so that every server
//! sees every state's updates once, in Redis's order:
//! - [`StateSyncer::create_state`](crate::StateSyncer::create_state) creates the state
//!   in Redis unless it is there (the first server wins; the others load it), then
//!   follows it ([`crate::redis_store::feed`]). Every server creates the states its
//!   clients may attach to, with its hooks: hooks are code, and run on the server that
//!   received what they judge.
//! - An update is intercepted on the server that received it, resolved against its
//!   replica and applied by one Redis script: the exactly-once check of its session
//!   (the outcomes live in Redis, so a client that moves to another server is answered
//!   there), the version check, the fields, the stream entry and the publish. Set-only
//!   updates need no particular version; operations that read the state (append,
//!   increment) are applied only at the version they were resolved against, and
//!   resolved again when another server's update came first.
//! - Removal, ttl and self-destruct act on every server: the removal is a script that
//!   deletes the state and publishes why; the ttl's deadline is the first creator's;
//!   self-destruct counts the clients of every server (each says how many it has,
//!   every [`Redis::check_every`], valid three times that).
//! - Redis unreachable: an attach or an update waits at most [`WAIT`], then the
//!   client's connection is closed with [`UNREACHABLE_CLOSE_CODE`] and a reason; our
//!   clients reconnect with backoff (to the next endpoint they know), attach again and
//!   send their unacknowledged updates again, which Redis applies once. Nothing is
//!   buffered for Redis beyond one update per connection.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use state_sync_protocol::{JsonObject, MAX_ATTEMPTS, Operation, Update, conflict_spread_micros};
use tokio::sync::OnceCell;

use crate::failure::Failure;
use crate::redis_store::feed::{Feed, FeedEvent, Handler, Next};
use crate::redis_store::{
    ApplyOutcome, Expected, RedisStore, Seen, Sender, StoredOutcome, StoredUpdate,
};
use crate::session_log::{Outcome, SessionKey};
use crate::state::{Condition, NotReady, State};

/// The close code of a connection whose server cannot reach Redis (1013, "try again
/// later"): the client reconnects and retries.
pub const UNREACHABLE_CLOSE_CODE: u16 = 1013;

/// The close code of a connection whose state was reloaded from Redis with another
/// history (Redis lost data, or the state was created again): the client reconnects
/// and attaches again (1012, "service restart").
pub const RESYNC_CLOSE_CODE: u16 = crate::state::RESYNC_CLOSE_CODE;

/// How long an attach or an update waits for Redis before its connection is closed.
pub const WAIT: Duration = Duration::from_secs(5);

/// How long an update that reads the state (append, increment) is retried after
/// another server's update came first, at least.
const RETRY_FOR: Duration = Duration::from_secs(10);

/// Where the states of a cluster live: a Redis server, given to
/// [`Builder::redis`](crate::Builder::redis).
#[derive(Debug, Clone)]
pub struct Redis {
    /// One URL, or the nodes of a Redis Cluster.
    urls: Vec<String>,
    cluster: bool,
    check_every: Duration,
}

fn check_url(url: &str) -> crate::Result<()> {
    redis::Client::open(url)
        .map(|_| ())
        .map_err(|e| crate::Error::Redis(format!("invalid redis URL {url:?}: {e}")))
}

impl Redis {
    /// Redis at `url` (`redis://[user:password@]host:port[/db]`; `rediss://` needs
    /// the redis crate's TLS feature, not enabled in this build). The server connects
    /// when it first needs to, and reconnects by itself.
    ///
    /// # Errors
    /// [`Error::Redis`](crate::Error::Redis) when the URL is not a Redis URL.
    pub fn new(url: impl Into<String>) -> crate::Result<Self> {
        let url = url.into();
        check_url(&url)?;
        Ok(Redis {
            urls: vec![url],
            cluster: false,
            check_every: Duration::from_secs(2),
        })
    }

    /// A Redis Cluster, reached through any of these nodes (`redis://host:port/`
    /// each; one is enough, the others are used when it is down). Every key of a
    /// state carries the hash tag `{id}`, so a state lives in one slot, and its
    /// scripts and pipelines go to the node that holds it.
    ///
    /// # Errors
    /// [`Error::Redis`](crate::Error::Redis) when a URL is not a Redis URL, or none
    /// is given.
    pub fn cluster<I>(nodes: I) -> crate::Result<Self>
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        let urls: Vec<String> = nodes.into_iter().map(Into::into).collect();
        if urls.is_empty() {
            return Err(crate::Error::Redis(
                "a Redis Cluster needs the URL of at least one of its nodes".into(),
            ));
        }
        for url in &urls {
            check_url(url)?;
        }
        Ok(Redis {
            urls,
            cluster: true,
            check_every: Duration::from_secs(2),
        })
    }

    /// How often each server checks the version of every state it follows (a lost
    /// last publish is found within about this) and says how many clients it has
    /// attached to each. Default 2 seconds.
    #[must_use]
    pub fn check_every(mut self, every: Duration) -> Self {
        self.check_every = every.max(Duration::from_millis(10));
        self
    }

    /// The URL (the first node's, for a Redis Cluster).
    pub fn url(&self) -> &str {
        self.urls.first().map_or("", String::as_str)
    }

    /// Whether it is a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        self.cluster
    }
}

/// A server's side of a cluster.
pub(crate) struct Cluster {
    config: Redis,
    /// This server's id among those of the cluster.
    pub(crate) node: Arc<str>,
    feed: OnceCell<Feed>,
    tokens: AtomicU64,
    /// How long a session's outcomes live in Redis after its last update, in seconds.
    outcome_ttl: u64,
    /// The largest a state may grow, as JSON text.
    max_bytes: usize,
    /// Removals from Redis still under way, by state: a state created again here
    /// waits for them (else its creation could find the old one, and the removal
    /// then take the new one).
    removals: std::sync::Mutex<std::collections::HashMap<String, tokio::sync::watch::Sender<bool>>>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("urls", &self.config.urls)
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

/// How many checks ([`Redis::check_every`]) a server's presence entries outlive its
/// last write of them in Redis.
pub(crate) const PRESENCE_TTL_CHECKS: u32 = 3;

fn cannot_reach(error: impl std::fmt::Display) -> Failure {
    Failure::Unreachable(format!(
        "the server cannot reach redis ({error}); try again later"
    ))
}

impl Cluster {
    pub(crate) fn new(config: Redis, session_retention: Duration, max_bytes: usize) -> Self {
        Cluster {
            config,
            node: uuid::Uuid::new_v4().simple().to_string().into(),
            feed: OnceCell::new(),
            tokens: AtomicU64::new(1),
            outcome_ttl: session_retention.as_secs().max(60),
            max_bytes,
            removals: std::sync::Mutex::default(),
        }
    }

    /// The subscription and the store, connecting on first use.
    pub(crate) async fn feed(&self) -> Result<&Feed, Failure> {
        self.feed
            .get_or_try_init(|| async {
                let store = RedisStore::connect_to(
                    &self.config.urls,
                    self.config.cluster,
                    self.outcome_ttl,
                    self.max_bytes,
                )
                .await
                .map_err(cannot_reach)?;
                Ok(Feed::start(store, self.config.check_every))
            })
            .await
    }

    fn store(feed: &Feed) -> &RedisStore {
        feed.store()
    }

    fn token(&self) -> u64 {
        self.tokens.fetch_add(1, Ordering::Relaxed)
    }

    /// Creates the state in Redis unless it is there, loads the replica from it and
    /// follows it, until the state is removed here. Retries while Redis is
    /// unreachable. `removed` is called when Redis says the state is gone (with why),
    /// `expire` with the deadline the state has in Redis.
    pub(crate) fn open<K: Send + Sync + 'static>(
        self: &Arc<Self>,
        state: &Arc<State<K>>,
        initial: JsonObject,
        expires: Option<SystemTime>,
        reset: bool,
        hooks: Opened<K>,
    ) {
        let cluster = Arc::clone(self);
        let weak = Arc::downgrade(state);
        let hooks = Arc::new(hooks);
        state.presence.link(self.presence_link(state));
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(50);
            let mut reset = reset;
            loop {
                let Some(state) = weak.upgrade().filter(|state| !state.is_removed()) else {
                    return;
                };
                match cluster
                    .open_once(&state, &initial, expires, &mut reset)
                    .await
                {
                    Ok(Some((feed, deadline))) => {
                        if let Some(deadline) = deadline {
                            (hooks.expire)(&state, deadline);
                        }
                        let (epoch, version) = state.position();
                        tracing::debug!(state = %state.id, version, "state loaded from redis");
                        let (vanished, lost) = tokio::sync::oneshot::channel();
                        let handler = Arc::clone(&cluster).handler(
                            weak.clone(),
                            Arc::clone(&hooks),
                            deadline,
                            vanished,
                        );
                        feed.follow(&state.id, version, epoch, handler);
                        let id = state.id.clone();
                        drop(state);
                        // Followed until it is removed, or Redis loses it: then it is
                        // created again from its initial value (a new incarnation).
                        if lost.await.is_err() {
                            return;
                        }
                        tracing::error!(
                            state = %id,
                            "the state is gone from redis but was not removed (redis lost its data?): \
                             creating it again from its initial value"
                        );
                        backoff = Duration::from_millis(50);
                    }
                    Ok(None) => {
                        (hooks.removed)(&state, None);
                        return;
                    }
                    Err(error) => {
                        tracing::warn!(state = %state.id, %error, "loading the state from redis; retrying");
                        drop(state);
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(2));
                    }
                }
            }
        });
    }

    /// Creates the state in Redis unless it is there, and loads the replica from it.
    /// `None` when it is gone.
    async fn open_once<K: Send + Sync + 'static>(
        &self,
        state: &Arc<State<K>>,
        initial: &JsonObject,
        expires: Option<SystemTime>,
        reset: &mut bool,
    ) -> Result<Option<(Feed, Option<SystemTime>)>, String> {
        let removal = self
            .removals
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&state.id)
            .map(tokio::sync::watch::Sender::subscribe);
        if let Some(mut removal) = removal {
            let _ = tokio::time::timeout(WAIT * 6, removal.wait_for(|done| *done)).await;
        }
        let feed = self.feed().await.map_err(|f| format!("{f:?}"))?;
        let store = Self::store(feed);
        store
            .create(&state.id, initial, expires, *reset)
            .await
            .map_err(|e| e.to_string())?;
        // Created once: a retry must not create it again over later updates.
        *reset = false;
        let Some(loaded) = store.load(&state.id).await.map_err(|e| e.to_string())? else {
            return Ok(None);
        };
        state.load(loaded.value, loaded.version, loaded.epoch);
        Ok(Some((feed.clone(), loaded.expires)))
    }

    /// What the state's follower hands what Redis publishes to (on the follower's
    /// task): the replica delivers it; at every check this server says how many
    /// clients it has attached. Stops once the state is removed here or in Redis.
    fn handler<K: Send + Sync + 'static>(
        self: Arc<Self>,
        weak: std::sync::Weak<State<K>>,
        hooks: Arc<Opened<K>>,
        deadline: Option<SystemTime>,
        vanished: tokio::sync::oneshot::Sender<()>,
    ) -> Handler {
        let every = self.config.check_every;
        let mut said: Option<(usize, Instant)> = None;
        let mut deadline = deadline;
        let mut vanished = Some(vanished);
        Box::new(move |event| {
            let Some(state) = weak.upgrade().filter(|state| !state.is_removed()) else {
                return Next::Stop;
            };
            match event {
                FeedEvent::Update { version, payload } => {
                    if !state.deliver(version, &payload) {
                        return Next::Reload;
                    }
                }
                FeedEvent::Resync(loaded) => {
                    // A new incarnation may have another deadline (one timer each).
                    if loaded.expires != deadline
                        && let Some(at) = loaded.expires
                    {
                        (hooks.expire)(&state, at);
                    }
                    deadline = loaded.expires;
                    state.resync(loaded.value, loaded.version, loaded.epoch);
                }
                FeedEvent::Gone(why) => {
                    (hooks.removed)(&state, why);
                    return Next::Stop;
                }
                FeedEvent::Vanished => {
                    if let Some(vanished) = vanished.take() {
                        let _ = vanished.send(());
                    }
                    return Next::Stop;
                }
                // Changes of every server, this one's included: a server sweeps the
                // entries of others that died (what it publishes of this server's own
                // entries changes nothing here).
                FeedEvent::Presence { node, changes } => {
                    match crate::presence::RemoteChange::parse(&changes) {
                        Ok(mut changes) => {
                            if node == *self.node {
                                // What this server published of its own entries it
                                // has (an entry that left since must not come back).
                                changes.retain(|change| {
                                    matches!(change, crate::presence::RemoteChange::Leave { .. })
                                });
                            }
                            state.presence.apply_remote(changes);
                        }
                        Err(error) => {
                            tracing::warn!(state = %state.id, %error, "an unreadable presence publish");
                        }
                    }
                }
                FeedEvent::PresenceSnapshot(entries) => {
                    let others = entries
                        .into_iter()
                        .filter(|(node, _)| *node != *self.node)
                        .map(|(_, present)| present)
                        .collect();
                    state.presence.replace_remote(others);
                }
                FeedEvent::Tick => {
                    state.presence.tick();
                    let clients = state.clients();
                    let stale =
                        said.is_none_or(|(count, at)| count != clients || at.elapsed() >= every);
                    if stale {
                        said = Some((clients, Instant::now()));
                        let (cluster, id) = (Arc::clone(&self), state.id.clone());
                        tokio::spawn(async move { cluster.say_clients(&id, clients).await });
                    }
                }
            }
            Next::Continue
        })
    }

    /// Where the presence of a state writes this server's entries: a task writes them
    /// to Redis in order, each swept [`PRESENCE_TTL_CHECKS`] checks after it was last
    /// written (every check writes them all again), so that the clients of a server
    /// that died leave everywhere within about that many checks and one more.
    fn presence_link<K: Send + Sync + 'static>(
        self: &Arc<Self>,
        state: &Arc<State<K>>,
    ) -> crate::presence::Link {
        let (sender, mut outgoing) = tokio::sync::mpsc::channel::<crate::presence::Outgoing>(64);
        let cluster = Arc::clone(self);
        let (id, hub) = (state.id.clone(), Arc::downgrade(&state.presence));
        let weak = Arc::downgrade(state);
        let ttl = self.config.check_every * PRESENCE_TTL_CHECKS;
        // A server that wrote nothing for longer than this was cut off (or Redis
        // stalled): its next write does not sweep the others' entries.
        let silence = self.config.check_every * 2;
        tokio::spawn(async move {
            while let Some(batch) = outgoing.recv().await {
                // Written to the incarnation the state is at (not to one created after
                // it was removed).
                let Some(epoch) = weak
                    .upgrade()
                    .filter(|state| !state.is_removed())
                    .map(|state| state.position().0)
                else {
                    return;
                };
                let written = match cluster.feed().await {
                    Ok(feed) => Self::store(feed)
                        .presence((&id, &epoch), &cluster.node, (ttl, silence), &batch)
                        .await
                        .map_err(|e| e.to_string())
                        .and_then(|written| {
                            written.then_some(()).ok_or_else(|| {
                                "redis holds another incarnation of the state".to_owned()
                            })
                        }),
                    Err(failure) => Err(format!("{failure:?}")),
                };
                if let Err(error) = written {
                    tracing::debug!(state = %id, %error, "writing presence to redis");
                    match hub.upgrade() {
                        Some(hub) => hub.unsynced(),
                        None => return,
                    }
                }
            }
        });
        crate::presence::Link { sender }
    }

    /// Whether Redis answers a PING within a second; `Err` says why not.
    pub(crate) async fn ping(&self) -> Result<(), String> {
        let feed = self.feed().await.map_err(|failure| match failure {
            Failure::Unreachable(why) => why,
            other => format!("{other:?}"),
        })?;
        Self::store(feed)
            .ping(Duration::from_secs(1))
            .await
            .map_err(|e| format!("redis does not answer: {e}"))
    }

    /// Loads the state again after an update the replica could not apply.
    async fn reload<K: Send + Sync + 'static>(&self, state: &State<K>) {
        let Ok(feed) = self.feed().await else {
            return;
        };
        match Self::store(feed).load(&state.id).await {
            Ok(Some(loaded)) => state.resync(loaded.value, loaded.version, loaded.epoch),
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(state = %state.id, %error, "reloading the state from redis")
            }
        }
    }

    /// Says how many clients this server has attached to the state; whether Redis
    /// heard it.
    pub(crate) async fn say_clients(&self, id: &str, clients: usize) -> bool {
        let Ok(feed) = self.feed().await else {
            return false;
        };
        let valid_for = self.config.check_every * 3;
        match Self::store(feed)
            .set_clients(id, &self.node, clients, valid_for)
            .await
        {
            Ok(()) => true,
            Err(error) => {
                tracing::debug!(state = %id, %error, "telling redis how many clients are attached");
                false
            }
        }
    }

    /// How many clients every server has attached to the state, this one's count
    /// (`here`) told first.
    pub(crate) async fn clients(&self, id: &str, here: usize) -> Result<usize, Failure> {
        let feed = self.feed().await?;
        if !self.say_clients(id, here).await {
            return Err(cannot_reach("it did not take this server's client count"));
        }
        Self::store(feed).clients(id).await.map_err(cannot_reach)
    }

    /// Removes the state from Redis (the incarnation this server holds), telling every
    /// server why. Retries for a while when Redis is unreachable.
    pub(crate) fn remove<K: Send + Sync + 'static>(self: &Arc<Self>, state: &State<K>, why: &str) {
        let cluster = Arc::clone(self);
        let (id, (epoch, _)) = (state.id.clone(), state.position());
        let why = why.to_owned();
        let done = tokio::sync::watch::Sender::new(false);
        self.removals
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(id.clone(), done.clone());
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(50);
            let mut removed = false;
            for _ in 0..30 {
                let result = match cluster.feed().await {
                    Ok(feed) => {
                        let epoch = (!epoch.is_empty()).then_some(epoch.as_str());
                        Self::store(feed)
                            .remove(&id, epoch, &why)
                            .await
                            .map_err(|e| e.to_string())
                    }
                    Err(failure) => Err(format!("{failure:?}")),
                };
                match result {
                    Ok(_) => {
                        removed = true;
                        break;
                    }
                    Err(error) => {
                        tracing::warn!(state = %id, %error, "removing the state from redis; retrying");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(2));
                    }
                }
            }
            if !removed {
                tracing::error!(state = %id, "could not remove the state from redis: other servers keep it");
            }
            let mut removals = cluster
                .removals
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if removals
                .get(&id)
                .is_some_and(|current| current.same_channel(&done))
            {
                removals.remove(&id);
            }
            drop(removals);
            done.send_replace(true);
        });
    }

    /// Whether a session's request was seen before, asked before its interceptor runs
    /// again: `Ok` when it is new, else its answer.
    pub(crate) async fn seen<K: Send + Sync + 'static>(
        &self,
        state: &State<K>,
        session: &SessionKey,
        request_id: u64,
        floor: Option<u64>,
    ) -> Result<(), Failure> {
        let feed = self.feed().await?;
        let (epoch, _) = state.position();
        let sender = Sender {
            client: &session.client,
            session: &session.session,
            request_id,
            floor,
            after: None,
        };
        let seen = Self::store(feed)
            .outcome(&state.id, &epoch, sender, None)
            .await
            .map_err(cannot_reach)?;
        match seen {
            Seen::New | Seen::Epoch(_) => Ok(()),
            Seen::Gone => Err(Failure::StateGone(state.id.clone())),
            Seen::Unknown => Err(Failure::OutcomeUnknown),
            Seen::Repeat(outcome) => Err(repeated(state, outcome).await),
        }
    }

    /// A session attached to the state here: Redis keeps its outcomes from now on,
    /// starting after `last_sent`.
    pub(crate) async fn attached<K: Send + Sync + 'static>(
        &self,
        state: &State<K>,
        session: &SessionKey,
        last_sent: Option<u64>,
    ) -> Result<(), Failure> {
        let feed = self.feed().await?;
        let (epoch, _) = state.position();
        Self::store(feed)
            .session(
                &state.id,
                &epoch,
                &session.client,
                &session.session,
                last_sent,
            )
            .await
            .map_err(cannot_reach)
    }

    /// Remembers in Redis that a session's request failed, so that its retry on any
    /// server fails the same way.
    pub(crate) async fn remember<K: Send + Sync + 'static>(
        &self,
        state: &State<K>,
        session: &SessionKey,
        request_id: u64,
        floor: Option<u64>,
        failure: &Failure,
    ) -> Result<(), Failure> {
        let Some((reason, message)) = failure.stored() else {
            return Ok(());
        };
        let feed = self.feed().await?;
        let (epoch, _) = state.position();
        let sender = Sender {
            client: &session.client,
            session: &session.session,
            request_id,
            floor,
            after: None,
        };
        Self::store(feed)
            .outcome(
                &state.id,
                &epoch,
                sender,
                Some(&StoredOutcome::Failed(reason, message)),
            )
            .await
            .map_err(cannot_reach)?;
        Ok(())
    }

    /// Sends an update that does not read the state (it sets and removes keys, at an
    /// expected version or not) to Redis without waiting: `done` is called with its
    /// outcome (`Ok` once applied: the sender's echo comes through the feed), without
    /// blocking. Updates sent one after the other reach Redis in that order, so a
    /// connection keeps its order while several of its updates share a round trip.
    /// `Ok(false)` (and `done` is not called) when the update must go through
    /// [`Cluster::apply`] instead: it reads the state, or the store or the state is not
    /// loaded yet.
    pub(crate) fn send<K: Send + Sync + 'static>(
        self: &Arc<Self>,
        state: &Arc<State<K>>,
        update: &Update,
        sender: Option<(&SessionKey, u64, Option<u64>)>,
        after: Option<u64>,
        echo: Option<(usize, u64)>,
        done: Done,
    ) -> Result<bool, Failure> {
        let reads = update
            .ops
            .iter()
            .any(|(_, operation)| !matches!(operation, Operation::Remove));
        let Some(feed) = self.feed.get().filter(|_| !reads && state.is_open()) else {
            return Ok(false);
        };
        let token = self.token();
        let prepared = match state.prepare(update, echo, token) {
            Ok(prepared) => prepared,
            Err(NotReady::Failed(failure)) => return Err(failure),
            Err(NotReady::Behind(_)) => return Ok(false),
        };
        let expected = match prepared.condition {
            Condition::Any => Expected::Any,
            Condition::Asked(version) => Expected::Asked(version),
            Condition::Read(version) => Expected::Read(version),
        };
        let stored = StoredUpdate {
            set: prepared
                .set
                .iter()
                .map(|(key, json)| (key.as_str(), json.clone()))
                .collect(),
            removed: prepared.removed.iter().map(String::as_str).collect(),
            payload: prepared.payload,
        };
        let sender = sender.map(|(session, request_id, floor)| Sender {
            client: &session.client,
            session: &session.session,
            request_id,
            floor,
            after,
        });
        let (cluster, shared) = (Arc::clone(self), Arc::clone(state));
        let answer = Box::new(move |outcome: Result<ApplyOutcome, _>| {
            let outcome = match outcome {
                Ok(ApplyOutcome::Applied(_)) => return done(Ok(())),
                Ok(outcome) => outcome,
                Err(error) => {
                    shared.forget_echo(token);
                    return done(Err(cannot_reach(error)));
                }
            };
            shared.forget_echo(token);
            // Rare: what to answer may need Redis or the feed.
            tokio::spawn(async move {
                done(Err(match outcome {
                    ApplyOutcome::Conflict(version) => Failure::Conflict { version },
                    ApplyOutcome::Repeat(outcome) => repeated(&shared, outcome).await,
                    ApplyOutcome::Unknown => Failure::OutcomeUnknown,
                    ApplyOutcome::Gone => Failure::StateGone(shared.id.clone()),
                    ApplyOutcome::Gap => cannot_reach(
                        "an earlier update of this connection did not reach it, so this one was not applied",
                    ),
                    ApplyOutcome::TooLarge(size) => Failure::StateTooLarge {
                        size: usize::try_from(size).unwrap_or(usize::MAX),
                        limit: cluster.max_bytes,
                    },
                    ApplyOutcome::Epoch(_) | ApplyOutcome::Applied(_) => {
                        cluster.reload(&shared).await;
                        cannot_reach("the state was created again meanwhile")
                    }
                }));
            });
        });
        Self::store(feed).submit(
            &state.id,
            &prepared.epoch,
            sender,
            expected,
            &stored,
            answer,
        );
        Ok(true)
    }

    /// Applies an update through Redis (see the module documentation). `echo` is the
    /// sender's subscription and request id; `wait` returns only once this server's
    /// replica has the update (server code reads it next).
    pub(crate) async fn apply<K: Send + Sync + 'static>(
        &self,
        state: &State<K>,
        update: &Update,
        sender: Option<(&SessionKey, u64, Option<u64>)>,
        echo: Option<(usize, u64)>,
        wait: bool,
    ) -> Result<(u64, Arc<JsonObject>), Failure> {
        let feed = self.feed().await?;
        let store = Self::store(feed);
        if !state.opened(WAIT).await {
            return Err(cannot_reach("the state is not loaded yet"));
        }
        let sender = sender.map(|(session, request_id, floor)| Sender {
            client: &session.client,
            session: &session.session,
            request_id,
            floor,
            after: None,
        });
        let mut attempt = 0;
        let started = Instant::now();
        loop {
            let token = self.token();
            let prepared = match state.prepare(update, echo, token) {
                Ok(prepared) => prepared,
                Err(NotReady::Failed(failure)) => return Err(failure),
                Err(NotReady::Behind(expected)) => {
                    // Expected a version this copy has not reached: a conflict unless
                    // Redis is there (then this copy catches up first).
                    match store.position(&state.id).await.map_err(cannot_reach)? {
                        Some((version, _, _)) if version < expected => {
                            return Err(Failure::Conflict { version });
                        }
                        None => return Err(Failure::StateGone(state.id.clone())),
                        Some(_) => {}
                    }
                    if !state.reached(expected, WAIT).await {
                        return Err(cannot_reach("the state's updates are late"));
                    }
                    continue;
                }
            };
            let stored = StoredUpdate {
                set: prepared
                    .set
                    .iter()
                    .map(|(key, json)| (key.as_str(), json.clone()))
                    .collect(),
                removed: prepared.removed.iter().map(String::as_str).collect(),
                payload: prepared.payload,
            };
            let expected = match prepared.condition {
                Condition::Any => Expected::Any,
                Condition::Asked(version) => Expected::Asked(version),
                Condition::Read(version) => Expected::Read(version),
            };
            let outcome = store
                .apply(&state.id, &prepared.epoch, sender, expected, &stored)
                .await;
            let outcome = match outcome {
                Ok(ApplyOutcome::Applied(version)) => {
                    if wait {
                        state.reached(version, WAIT).await;
                    }
                    return Ok((version, prepared.updates));
                }
                Ok(other) => other,
                Err(error) => {
                    state.forget_echo(token);
                    return Err(cannot_reach(error));
                }
            };
            state.forget_echo(token);
            match outcome {
                ApplyOutcome::Conflict(version)
                    if matches!(prepared.condition, Condition::Read(_))
                        && (attempt + 1 < MAX_ATTEMPTS || started.elapsed() < RETRY_FOR) =>
                {
                    // Another server's update came first: read again, then retry (at
                    // least MAX_ATTEMPTS times, and for at least RETRY_FOR: under a
                    // storm of writers, or while the replica catches up after an
                    // outage, the attempts go fast).
                    attempt += 1;
                    state.reached(version, WAIT).await;
                    let spread = conflict_spread_micros(attempt);
                    let pause = uuid::Uuid::new_v4().as_u128() as u64 % spread.max(1);
                    tokio::time::sleep(Duration::from_micros(pause)).await;
                }
                ApplyOutcome::Conflict(version) => return Err(Failure::Conflict { version }),
                ApplyOutcome::Repeat(outcome) => return Err(repeated(state, outcome).await),
                ApplyOutcome::Unknown => return Err(Failure::OutcomeUnknown),
                ApplyOutcome::Gone => return Err(Failure::StateGone(state.id.clone())),
                ApplyOutcome::Gap => {
                    return Err(cannot_reach("an earlier update did not reach it"));
                }
                ApplyOutcome::TooLarge(size) => {
                    return Err(Failure::StateTooLarge {
                        size: usize::try_from(size).unwrap_or(usize::MAX),
                        limit: self.max_bytes,
                    });
                }
                ApplyOutcome::Epoch(_) => {
                    // Created again meanwhile: this replica is of the old one.
                    self.reload(state).await;
                    return Err(cannot_reach("the state was created again meanwhile"));
                }
                ApplyOutcome::Applied(_) => unreachable!("handled above"),
            }
        }
    }
}

/// The answer to a retry, once this server's replica has what it answers about.
async fn repeated<K: Send + Sync + 'static>(state: &State<K>, outcome: StoredOutcome) -> Failure {
    match outcome {
        StoredOutcome::Applied(version) => {
            state.reached(version, WAIT).await;
            Failure::Repeated(Box::new(Outcome::Applied {
                version,
                reply: None,
            }))
        }
        StoredOutcome::Conflict(version) => Failure::Conflict { version },
        StoredOutcome::Failed(reason, message) => Failure::Remembered { reason, message },
        // The limit is this server's, the same on every server of a cluster.
        StoredOutcome::TooLarge(size) => Failure::StateTooLarge {
            size: usize::try_from(size).unwrap_or(usize::MAX),
            limit: state.max_bytes(),
        },
    }
}

/// Removes a state here, telling its clients why (Redis says it is gone).
type OnGone<K> = Box<dyn Fn(&Arc<State<K>>, Option<String>) + Send + Sync>;

/// Schedules a state's removal at its deadline (its ttl, as its first creator set it).
type OnDeadline<K> = Box<dyn Fn(&Arc<State<K>>, SystemTime) + Send + Sync>;

/// What is told the outcome of an update sent with [`Cluster::send`].
pub(crate) type Done = Box<dyn FnOnce(Result<(), Failure>) + Send + Sync>;

/// What the server does when Redis says something about a state it follows.
pub(crate) struct Opened<K> {
    pub(crate) removed: OnGone<K>,
    pub(crate) expire: OnDeadline<K>,
}
