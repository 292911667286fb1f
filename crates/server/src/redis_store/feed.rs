//! Following states' updates from Redis, in version order, with nothing missed: what
//! every server of a cluster does for the states it holds.
//!
//! One subscription connection per server ([`Feed`]) carries the channels of every
//! state it follows; a task per state ([`Feed::follow`]) checks what arrives against
//! the version it delivered last. A gap is filled from the state's stream; a stream
//! trimmed past the gap, a new incarnation (the state was removed and created again)
//! or a version that went backwards (Redis lost data in a failover) is a resync: the
//! whole state, loaded at one version. Publishes lost while the subscription was down
//! are found when it is back (each follower catches up from the stream), and a lost
//! *last* publish, which no later gap reveals, by the periodic check of the version.
//!
//! Bounds: each follower queues at most [`QUEUE`] publishes; past that they are
//! dropped, and the gap they leave is filled from the stream.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::PubSubSink;
use tokio::sync::mpsc;

use super::{LoadedState, NOT_KEPT, RedisStore, RedisStoreError, channel, parse_u64};

/// Publishes a follower queues before it drops them (and catches up from the stream).
pub(crate) const QUEUE: usize = 4096;

/// What a follower delivers.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum FeedEvent {
    /// The update that made this version, as published (the text after the version).
    Update { version: u64, payload: String },
    /// What was delivered before is no longer the state's history: here is the state.
    Resync(LoadedState),
    /// The state is gone from Redis; why, when the server that removed it said.
    Gone(Option<String>),
    /// The periodic check is due (the handler may stop the follower).
    Tick,
    /// The state is not in Redis, and was not removed: Redis lost it (a restart
    /// without persistence, a failover to an empty replica).
    Vanished,
    /// Presence changes a server (`node`) published, in order: the JSON array.
    Presence { node: String, changes: String },
    /// Every presence entry, with its server (after a missed presence publish).
    PresenceSnapshot(Vec<(String, crate::presence::Present)>),
}

/// What the subscription hands a follower.
#[derive(Debug)]
enum Raw {
    /// A message on its channel.
    Message(String),
    /// The subscription was (re)established: publishes may have been missed.
    Subscribed,
}

#[derive(Default)]
struct Routes {
    followers: HashMap<String, mpsc::Sender<Raw>>,
    /// The live subscription's sink, `None` while it is down.
    sink: Option<PubSubSink>,
}

/// The subscription connection of one server, shared by the states it follows.
#[derive(Clone)]
pub(crate) struct Feed {
    store: RedisStore,
    routes: Arc<Mutex<Routes>>,
    check_every: Duration,
}

/// Where a follower stands.
struct Position {
    version: u64,
    epoch: String,
    /// The presence version delivered last (`None`: none yet).
    presence: Option<u64>,
}

/// What a follower does next.
pub(crate) enum Next {
    /// Go on.
    Continue,
    /// The handler could not apply an update: resync with the whole state.
    Reload,
    /// Stop following.
    Stop,
}

/// What a follower hands what it delivers to.
pub(crate) type Handler = Box<dyn FnMut(FeedEvent) -> Next + Send>;

impl Feed {
    /// Starts the subscription; it reconnects by itself, and ends once `store` and
    /// every follower are dropped... or never: it is one task per server.
    /// `check_every` is how often each state's version is checked.
    pub(crate) fn start(store: RedisStore, check_every: Duration) -> Feed {
        let feed = Feed {
            store,
            routes: Arc::new(Mutex::new(Routes::default())),
            check_every,
        };
        let routes = Arc::downgrade(&feed.routes);
        let clients = feed.store.clients.clone();
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(50);
            // The node subscribed to: the next one after every failure (a Redis
            // Cluster's nodes each carry every publish).
            let mut node = 0;
            loop {
                let Some(live) = routes.upgrade() else {
                    return;
                };
                let Some(client) = clients.get(node % clients.len().max(1)) else {
                    return;
                };
                node += 1;
                match subscribe_all(client, &live).await {
                    Ok(mut stream) => {
                        backoff = Duration::from_millis(50);
                        // It worked: stay on this node next time.
                        node -= 1;
                        drop(live);
                        while let Some(message) = stream.next().await {
                            let Some(live) = routes.upgrade() else {
                                return;
                            };
                            let Ok(text) = message.get_payload::<String>() else {
                                continue;
                            };
                            let follower = lock(&live)
                                .followers
                                .get(message.get_channel_name())
                                .cloned();
                            // A full queue drops the message: its follower fills the
                            // gap from the stream.
                            if let Some(follower) = follower {
                                let _ = follower.try_send(Raw::Message(text));
                            }
                        }
                        tracing::warn!("the redis subscription ended; subscribing again");
                        if let Some(live) = routes.upgrade() {
                            lock(&live).sink = None;
                        }
                    }
                    Err(error) => {
                        tracing::warn!(%error, "subscribing to redis failed; retrying");
                        drop(live);
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(2));
                    }
                }
            }
        });
        feed
    }

    /// The store this feed follows.
    pub(crate) fn store(&self) -> &RedisStore {
        &self.store
    }

    /// Follows state `id` from `version` (of incarnation `epoch`): `handler` gets every
    /// later update once, in order, or a resync, on the follower's task (it must not
    /// block), and a [`FeedEvent::Tick`] at every check. Stops when the handler says
    /// so or the state is gone.
    pub(crate) fn follow(&self, id: &str, version: u64, epoch: String, handler: Handler) {
        let mut sink = handler;
        let (raw_sender, raw) = mpsc::channel(QUEUE);
        let name = channel(id);
        let subscription = {
            let mut routes = lock(&self.routes);
            routes.followers.insert(name.clone(), raw_sender.clone());
            routes.sink.clone()
        };
        let feed = self.clone();
        let id = id.to_owned();
        tokio::spawn(async move {
            if let Some(mut subscription) = subscription {
                // Subscribed here; when this fails, the subscription is being made again
                // and includes this channel.
                if subscription.subscribe(&name).await.is_ok() {
                    let _ = raw_sender.try_send(Raw::Subscribed);
                }
            }
            // Kept to tell this follower's route from a later one's of the same state.
            let own = raw_sender;
            let mut position = Position {
                version,
                epoch,
                presence: None,
            };
            // Corked: what it delivers is written when it waits, one write per
            // connection.
            crate::outbox::corked(feed.run(&id, &mut position, raw, &mut sink)).await;
            let subscription = {
                let mut routes = lock(&feed.routes);
                if !routes
                    .followers
                    .get(&name)
                    .is_some_and(|route| route.same_channel(&own))
                {
                    // The state is followed again by a later follower: leave it be.
                    return;
                }
                routes.followers.remove(&name);
                routes.sink.clone()
            };
            if let Some(mut subscription) = subscription {
                let _ = subscription.unsubscribe(&name).await;
            }
        });
    }

    async fn run(
        &self,
        id: &str,
        position: &mut Position,
        mut raw: mpsc::Receiver<Raw>,
        sink: &mut Handler,
    ) {
        let mut next = Ok(Next::Continue);
        let mut ticks = tokio::time::interval(self.check_every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is at once: it catches up from where the caller stands.
        loop {
            next = match &next {
                // The handler could not apply an update: the whole state, then on.
                Ok(Next::Reload) => self.resync(id, position, sink).await,
                _ => tokio::select! {
                    message = raw.recv() => match message {
                        Some(Raw::Message(text)) => self.received(id, position, sink, &text).await,
                        Some(Raw::Subscribed) => self.check(id, position, sink).await,
                        None => return,
                    },
                    _ = ticks.tick() => match deliver(sink, FeedEvent::Tick) {
                        Next::Continue => self.check(id, position, sink).await,
                        other => Ok(other),
                    },
                },
            };
            match &next {
                Ok(Next::Continue | Next::Reload) => {}
                Ok(Next::Stop) => return,
                Err(error) => {
                    // The next tick (or subscription) tries again.
                    tracing::warn!(state = %id, %error, "following the state from redis");
                }
            }
        }
    }

    /// A published message: an update is delivered when it is the next one, after the
    /// missing ones when there is a gap, and ignored when already delivered.
    async fn received(
        &self,
        id: &str,
        position: &mut Position,
        sink: &mut Handler,
        text: &str,
    ) -> Result<Next, RedisStoreError> {
        let (head, rest) = text.split_once(' ').unwrap_or((text, ""));
        match head {
            "x" => {
                let (epoch, why) = rest.split_once(' ').unwrap_or((rest, ""));
                if epoch != position.epoch {
                    return Ok(Next::Continue);
                }
                deliver(sink, FeedEvent::Gone(Some(why.to_owned())));
                return Ok(Next::Stop);
            }
            "r" => {
                if rest == position.epoch {
                    return Ok(Next::Continue);
                }
                return self.resync(id, position, sink).await;
            }
            "p" => return self.presence_received(id, position, sink, rest).await,
            _ => {}
        }
        let version = parse_u64(id, head)?;
        if version <= position.version {
            return Ok(Next::Continue);
        }
        if version > position.version + 1 {
            if let Next::Stop = self.catch_up(id, position, sink, version - 1).await? {
                return Ok(Next::Stop);
            }
            if position.version + 1 != version {
                // Resynced past it, or to a state whose history differs.
                return Ok(Next::Continue);
            }
        }
        position.version = version;
        Ok(deliver(
            sink,
            FeedEvent::Update {
                version,
                payload: rest.to_owned(),
            },
        ))
    }

    /// Compares with the state's version and epoch in Redis: catches up when behind,
    /// resyncs when the history changed, stops when the state is gone.
    async fn check(
        &self,
        id: &str,
        position: &mut Position,
        sink: &mut Handler,
    ) -> Result<Next, RedisStoreError> {
        let Some((version, epoch, presence)) = self.store.position(id).await? else {
            return self.missing(id, sink).await;
        };
        // Loaded when the follower starts or resyncs (what the server holds of other
        // servers' entries may be of a Redis that lost its data), and when it differs.
        match position.presence {
            Some(known) if known == presence => {}
            _ => {
                if let Next::Stop = self.presence_reload(id, position, sink).await? {
                    return Ok(Next::Stop);
                }
            }
        }
        if epoch != position.epoch || version < position.version {
            return self.resync(id, position, sink).await;
        }
        if version > position.version {
            return self.catch_up(id, position, sink, version).await;
        }
        Ok(Next::Continue)
    }

    /// The state is not in Redis: removed (the publish that said so was missed), or
    /// lost.
    async fn missing(&self, id: &str, sink: &mut Handler) -> Result<Next, RedisStoreError> {
        let event = if self.store.removed(id).await? {
            FeedEvent::Gone(None)
        } else {
            FeedEvent::Vanished
        };
        deliver(sink, event);
        Ok(Next::Stop)
    }

    /// Delivers the versions after the position up to `to` from the stream; resyncs
    /// when the stream no longer has them all.
    async fn catch_up(
        &self,
        id: &str,
        position: &mut Position,
        sink: &mut Handler,
        to: u64,
    ) -> Result<Next, RedisStoreError> {
        let entries = self.store.log(id, position.version + 1, to).await?;
        // An update too large for the stream to keep is not there either.
        let complete = entries.len() as u64 == to - position.version
            && entries
                .first()
                .is_some_and(|(v, _)| *v == position.version + 1)
            && entries.iter().all(|(_, payload)| payload != NOT_KEPT);
        if !complete {
            return self.resync(id, position, sink).await;
        }
        for (version, payload) in entries {
            position.version = version;
            if let Next::Stop = deliver(sink, FeedEvent::Update { version, payload }) {
                return Ok(Next::Stop);
            }
        }
        Ok(Next::Continue)
    }

    async fn resync(
        &self,
        id: &str,
        position: &mut Position,
        sink: &mut Handler,
    ) -> Result<Next, RedisStoreError> {
        let Some(state) = self.store.load(id).await? else {
            return self.missing(id, sink).await;
        };
        tracing::info!(state = %id, from = position.version, to = state.version, "resync from redis");
        position.version = state.version;
        position.epoch = state.epoch.clone();
        // Presence is loaded again at the next check.
        position.presence = None;
        Ok(deliver(sink, FeedEvent::Resync(state)))
    }
}

impl Feed {
    /// A presence publish (`<pv> <node> <changes>`): delivered when it is the next one,
    /// ignored when already delivered; after a gap, every entry is loaded instead.
    async fn presence_received(
        &self,
        id: &str,
        position: &mut Position,
        sink: &mut Handler,
        text: &str,
    ) -> Result<Next, RedisStoreError> {
        let mut parts = text.splitn(3, ' ');
        let (Some(pv), Some(node), Some(changes)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(RedisStoreError::Corrupt(
                id.to_owned(),
                format!("a presence publish without its parts: {text:?}"),
            ));
        };
        let pv = parse_u64(id, pv)?;
        match position.presence {
            Some(known) if pv <= known => Ok(Next::Continue),
            Some(known) if pv == known + 1 => {
                position.presence = Some(pv);
                Ok(deliver(
                    sink,
                    FeedEvent::Presence {
                        node: node.to_owned(),
                        changes: changes.to_owned(),
                    },
                ))
            }
            _ => self.presence_reload(id, position, sink).await,
        }
    }

    /// Loads every presence entry, after a missed publish (or the first time).
    async fn presence_reload(
        &self,
        id: &str,
        position: &mut Position,
        sink: &mut Handler,
    ) -> Result<Next, RedisStoreError> {
        let (pv, entries) = self.store.presence_snapshot(id).await?;
        position.presence = Some(pv);
        Ok(deliver(sink, FeedEvent::PresenceSnapshot(entries)))
    }
}

fn lock(routes: &Mutex<Routes>) -> std::sync::MutexGuard<'_, Routes> {
    routes.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Makes a subscription with every followed channel, and tells each follower.
async fn subscribe_all(
    client: &redis::Client,
    routes: &Mutex<Routes>,
) -> Result<redis::aio::PubSubStream, RedisStoreError> {
    let (mut sink, stream) = client.get_async_pubsub().await?.split();
    // The sink is visible first: a follower that registers after the list below is
    // taken subscribes itself.
    let followers: Vec<_> = {
        let mut routes = lock(routes);
        routes.sink = Some(sink.clone());
        routes
            .followers
            .iter()
            .map(|(name, follower)| (name.clone(), follower.clone()))
            .collect()
    };
    for (name, follower) in followers {
        if let Err(error) = sink.subscribe(&name).await {
            lock(routes).sink = None;
            return Err(error.into());
        }
        let _ = follower.try_send(Raw::Subscribed);
    }
    Ok(stream)
}

fn deliver(sink: &mut Handler, event: FeedEvent) -> Next {
    sink(event)
}
