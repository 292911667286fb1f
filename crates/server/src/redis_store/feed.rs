//! Following one state's updates from Redis, in version order, with nothing missed: what
//! every server of a cluster does for the states its clients are attached to.
//!
//! Updates arrive by publish (fast) and are checked against the version last delivered.
//! A gap is filled from the state's stream; a stream trimmed past the gap, an epoch
//! change (the state was removed and created again) or a version that went backwards
//! (Redis lost data in a failover) is a resync: the whole state, loaded at one version.
//! A publish lost while the subscription was down is found when it reconnects (it
//! catches up from the stream), and a lost *last* publish, which no later gap reveals,
//! by the periodic check of the state's version.

use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::{LoadedState, RedisStore, RedisStoreError, channel, key, parse_u64};

/// What a follower delivers.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum FeedEvent {
    /// The update that made this version, as published (the text after the version).
    Update { version: u64, payload: String },
    /// What was delivered before is no longer the state's history: here is the state.
    Resync(LoadedState),
    /// The state is gone from Redis.
    Gone,
}

/// Where a follower stands.
struct Position {
    version: u64,
    epoch: String,
}

enum Next {
    Continue,
    Stop,
}

impl RedisStore {
    /// Follows state `id` from `version` (of incarnation `epoch`): every later update
    /// once, in order, or a resync. Stops when the receiver is dropped or the state is
    /// gone. `check_every` is how often the state's version is checked (a lost last
    /// publish is delivered within about that).
    pub(crate) fn follow(
        &self,
        id: &str,
        version: u64,
        epoch: String,
        check_every: Duration,
    ) -> mpsc::Receiver<FeedEvent> {
        let (sender, receiver) = mpsc::channel(1024);
        let store = self.clone();
        let id = id.to_owned();
        tokio::spawn(async move {
            let mut position = Position { version, epoch };
            let mut backoff = Duration::from_millis(50);
            loop {
                match store
                    .follow_once(&id, &mut position, &sender, check_every)
                    .await
                {
                    Ok(Next::Stop) => return,
                    Ok(Next::Continue) => backoff = Duration::from_millis(50),
                    Err(error) => {
                        tracing::warn!(state = %id, %error, "following the state from redis; retrying");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(2));
                    }
                }
                if sender.is_closed() {
                    return;
                }
            }
        });
        receiver
    }

    /// One subscription's life: subscribe, catch up from the stream, then deliver what
    /// is published and check the version now and then. Returns when the subscription
    /// ends (to subscribe again), or `Stop`.
    async fn follow_once(
        &self,
        id: &str,
        position: &mut Position,
        sender: &mpsc::Sender<FeedEvent>,
        check_every: Duration,
    ) -> Result<Next, RedisStoreError> {
        let mut subscription = self.client.get_async_pubsub().await?;
        subscription.subscribe(channel(id)).await?;
        // Subscribed first, then caught up: nothing falls between the two.
        if let Next::Stop = self.check(id, position, sender).await? {
            return Ok(Next::Stop);
        }
        let mut messages = subscription.on_message();
        let mut ticks = tokio::time::interval(check_every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let next = tokio::select! {
                message = messages.next() => {
                    let Some(message) = message else {
                        // The subscription's connection ended: subscribe again.
                        return Ok(Next::Continue);
                    };
                    let text: String = message.get_payload()?;
                    let (version, payload) = text.split_once(' ').ok_or_else(|| {
                        RedisStoreError::Corrupt(id.to_owned(), "a publish without a version".into())
                    })?;
                    let version = parse_u64(id, version)?;
                    self.received(id, position, sender, version, payload.to_owned()).await?
                }
                _ = ticks.tick() => self.check(id, position, sender).await?,
                () = sender.closed() => Next::Stop,
            };
            if let Next::Stop = next {
                return Ok(Next::Stop);
            }
        }
    }

    /// A published update: delivered when it is the next one, after the missing ones
    /// when there is a gap, ignored when already delivered.
    async fn received(
        &self,
        id: &str,
        position: &mut Position,
        sender: &mpsc::Sender<FeedEvent>,
        version: u64,
        payload: String,
    ) -> Result<Next, RedisStoreError> {
        if version <= position.version {
            return Ok(Next::Continue);
        }
        if version > position.version + 1 {
            if let Next::Stop = self.catch_up(id, position, sender, version - 1).await? {
                return Ok(Next::Stop);
            }
            if position.version + 1 != version {
                // Resynced past it, or to a state whose history differs.
                return Ok(Next::Continue);
            }
        }
        position.version = version;
        Ok(deliver(sender, FeedEvent::Update { version, payload }).await)
    }

    /// Compares with the state's version and epoch in Redis: catches up when behind,
    /// resyncs when the history changed, stops when the state is gone.
    async fn check(
        &self,
        id: &str,
        position: &mut Position,
        sender: &mpsc::Sender<FeedEvent>,
    ) -> Result<Next, RedisStoreError> {
        let (version, epoch): (Option<String>, Option<String>) = redis::cmd("HMGET")
            .arg(key(id, "meta"))
            .arg("version")
            .arg("epoch")
            .query_async(&mut self.connection.clone())
            .await?;
        let (Some(version), Some(epoch)) = (version, epoch) else {
            deliver(sender, FeedEvent::Gone).await;
            return Ok(Next::Stop);
        };
        let version = parse_u64(id, &version)?;
        if epoch != position.epoch || version < position.version {
            return self.resync(id, position, sender).await;
        }
        if version > position.version {
            return self.catch_up(id, position, sender, version).await;
        }
        Ok(Next::Continue)
    }

    /// Delivers the versions after the position up to `to` from the stream; resyncs
    /// when the stream no longer has them all.
    async fn catch_up(
        &self,
        id: &str,
        position: &mut Position,
        sender: &mpsc::Sender<FeedEvent>,
        to: u64,
    ) -> Result<Next, RedisStoreError> {
        let entries = self.log(id, position.version + 1, to).await?;
        let complete = entries.len() as u64 == to - position.version
            && entries
                .first()
                .is_some_and(|(v, _)| *v == position.version + 1);
        if !complete {
            return self.resync(id, position, sender).await;
        }
        for (version, payload) in entries {
            position.version = version;
            if let Next::Stop = deliver(sender, FeedEvent::Update { version, payload }).await {
                return Ok(Next::Stop);
            }
        }
        Ok(Next::Continue)
    }

    async fn resync(
        &self,
        id: &str,
        position: &mut Position,
        sender: &mpsc::Sender<FeedEvent>,
    ) -> Result<Next, RedisStoreError> {
        let Some(state) = self.load(id).await? else {
            deliver(sender, FeedEvent::Gone).await;
            return Ok(Next::Stop);
        };
        tracing::info!(state = %id, from = position.version, to = state.version, "resync from redis");
        position.version = state.version;
        position.epoch = state.epoch.clone();
        Ok(deliver(sender, FeedEvent::Resync(state)).await)
    }
}

async fn deliver(sender: &mpsc::Sender<FeedEvent>, event: FeedEvent) -> Next {
    match sender.send(event).await {
        Ok(()) => Next::Continue,
        Err(_) => Next::Stop,
    }
}
