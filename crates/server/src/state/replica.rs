//! A state shared by several servers through Redis, as one server holds it: a replica
//! that changes only by what Redis orders (see [`crate::cluster`]).
//!
//! An update is resolved against the replica ([`State::prepare`]), applied by Redis,
//! and comes back to every server, the sender's included, through the state's feed
//! ([`State::deliver`]); so every server's clients see every version once, in Redis's
//! order. The sender's echo travels in what Redis publishes (its server's node id and
//! a token), so it is queued in order with everything else.

// Without the `redis` feature no state has a replica.
#![cfg_attr(not(feature = "redis"), allow(dead_code))]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use state_sync_protocol::{
    JsonObject, Operation, Resolved, ServerMessage, StateUpdated, Update, append_in_place,
};
use tokio::sync::watch;

use super::{Inner, State};
use crate::failure::Failure;
use crate::fanout::{Broadcast, Echo, frame};

/// The close code of subscribers whose replica went back in history (1012).
pub(crate) const RESYNC_CLOSE_CODE: u16 = 1012;

/// Most updates of one state a server has sent to Redis and not yet seen come back.
pub(crate) const MAX_ECHOES: usize = 65_536;

/// What a server adds to a state it shares through Redis.
#[derive(Debug)]
pub(crate) struct Replica {
    /// The version the replica (and its subscribers) reached; it goes back only when
    /// Redis lost data.
    delivered: watch::Sender<u64>,
    /// Whether the replica was loaded from Redis and is followed.
    open: watch::Sender<bool>,
    /// This server's node id, which the echoes it waits for carry.
    node: Arc<str>,
}

impl Replica {
    pub(crate) fn new(node: Arc<str>) -> Self {
        Replica {
            delivered: watch::Sender::new(0),
            open: watch::Sender::new(false),
            node,
        }
    }
}

/// What the replica keeps while shared.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    /// The incarnation of the state the replica is of.
    pub(crate) epoch: String,
    /// Updates sent to Redis by this server's clients, by token, until they come back.
    pub(crate) echoes: HashMap<u64, Echo>,
}

/// The condition Redis applies an update under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Condition {
    /// None.
    Any,
    /// The sender's: the state at this version (its answer when not).
    Asked(u64),
    /// The replica's: its operations were resolved against this version.
    Read(u64),
}

/// An update resolved against the replica, for Redis.
#[derive(Debug)]
pub(crate) struct Prepared {
    pub(crate) epoch: String,
    pub(crate) condition: Condition,
    /// The JSON text of each key it sets.
    pub(crate) set: Vec<(String, String)>,
    pub(crate) removed: Vec<String>,
    /// What every server receives: the origin, then STATE_UPDATED's data without
    /// the version (appends as operations).
    pub(crate) payload: String,
    /// What the update resolved to (the resulting value of every key it touched).
    pub(crate) updates: Arc<JsonObject>,
}

/// Why an update cannot be prepared now.
#[derive(Debug)]
pub(crate) enum NotReady {
    /// It fails.
    Failed(Failure),
    /// It was computed against this version, which the replica has not reached.
    Behind(u64),
}

impl From<Failure> for NotReady {
    fn from(failure: Failure) -> Self {
        NotReady::Failed(failure)
    }
}

/// The published payload's origin: `<node>/<token>`, or `-` for an update nobody
/// waits for.
fn origin(node: &str, token: Option<u64>) -> String {
    token.map_or_else(|| "-".to_owned(), |token| format!("{node}/{token}"))
}

impl<K: Send + Sync + 'static> State<K> {
    fn replica(&self) -> Option<&Replica> {
        self.replica.as_ref()
    }

    /// Whether the replica was loaded from Redis.
    pub(crate) fn is_open(&self) -> bool {
        self.replica().is_none_or(|replica| *replica.open.borrow())
    }

    /// Waits until the replica was loaded from Redis (at most `limit`).
    pub(crate) async fn opened(&self, limit: Duration) -> bool {
        let Some(replica) = self.replica() else {
            return true;
        };
        let mut open = replica.open.subscribe();
        tokio::time::timeout(limit, open.wait_for(|open| *open))
            .await
            .is_ok_and(|result| result.is_ok())
    }

    /// Waits until the replica reached `version` (at most `limit`); whether it did.
    pub(crate) async fn reached(&self, version: u64, limit: Duration) -> bool {
        let Some(replica) = self.replica() else {
            return true;
        };
        let mut delivered = replica.delivered.subscribe();
        tokio::time::timeout(limit, delivered.wait_for(|at| *at >= version))
            .await
            .is_ok_and(|result| result.is_ok())
    }

    /// The incarnation and version the replica holds.
    pub(crate) fn position(&self) -> (String, u64) {
        let inner = self.lock();
        (inner.shared.epoch.clone(), inner.record.version())
    }

    /// The replica as loaded from Redis: its value, version and incarnation. A replica
    /// that held another version or incarnation tells its subscribers (see
    /// [`State::resync`]).
    pub(crate) fn load(&self, value: JsonObject, version: u64, epoch: String) {
        self.resync(value, version, epoch);
        if let Some(replica) = self.replica() {
            replica.open.send_replace(true);
        }
    }

    /// Resolves `update` against the replica, for Redis. With `echo` (the sender's
    /// subscription and request id), registers `token` so that the sender is answered
    /// when the update comes back.
    pub(crate) fn prepare(
        &self,
        update: &Update,
        echo: Option<(usize, u64)>,
        token: u64,
    ) -> Result<Prepared, NotReady> {
        let mut inner = self.lock();
        if inner.removed {
            return Err(Failure::StateGone(self.id.clone()).into());
        }
        let version = inner.record.version();
        let reads = update
            .ops
            .iter()
            .any(|(_, operation)| !matches!(operation, Operation::Remove));
        let condition = match update.expected_version {
            Some(expected) if !reads => Condition::Asked(expected),
            Some(expected) if expected < version => {
                return Err(Failure::Conflict { version }.into());
            }
            Some(expected) if expected > version => return Err(NotReady::Behind(expected)),
            Some(expected) => Condition::Asked(expected),
            None if reads => Condition::Read(version),
            None => Condition::Any,
        };
        let (resolved, _) = inner.record.resolve(update)?;
        let Resolved {
            values,
            removed,
            appended,
        } = resolved;
        let set = values
            .iter()
            .map(|(key, value)| (key.clone(), value.to_string()))
            .collect();
        let published: JsonObject = values
            .iter()
            .filter(|(key, _)| !appended.iter().any(|(appended, _)| appended == *key))
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect();
        let message = StateUpdated {
            updates: Arc::new(published),
            version: None,
            request_id: None,
            removed: removed.clone(),
            ops: appended,
        };
        let echo = echo.and_then(|(key, request_id)| inner.subscribers.sender(key, request_id));
        let node = self.replica().map_or("", |replica| &replica.node);
        let token = echo.as_ref().map(|_| token);
        let payload = format!(
            "{} {}",
            origin(node, token),
            serde_json::to_string(&message).unwrap_or_else(|_| "{}".into())
        );
        if let (Some(echo), Some(token)) = (echo, token) {
            if inner.shared.echoes.len() >= MAX_ECHOES {
                return Err(
                    Failure::Unreachable("too many updates are waiting for redis".into()).into(),
                );
            }
            inner.shared.echoes.insert(token, echo);
        }
        let mut updates = values;
        for key in &removed {
            updates.insert(key.clone(), Value::Null);
        }
        Ok(Prepared {
            epoch: inner.shared.epoch.clone(),
            condition,
            set,
            removed,
            payload,
            updates: Arc::new(updates),
        })
    }

    /// Forgets a registered echo (its update was not applied, or its answer is given
    /// otherwise). Returns the sender when it was still waiting.
    pub(crate) fn forget_echo(&self, token: u64) -> Option<Echo> {
        self.lock().shared.echoes.remove(&token)
    }

    /// Applies the update Redis made `version` with, as published, and queues it for
    /// every subscriber (the sender's echo when it is this server's). `false` when the
    /// replica cannot apply it (not the next version, or unreadable): it must resync.
    pub(crate) fn deliver(&self, version: u64, payload: &str) -> bool {
        let Some(replica) = self.replica() else {
            return false;
        };
        let (origin, data) = payload.split_once(' ').unwrap_or(("-", payload));
        let Ok(message) = serde_json::from_str::<StateUpdated>(data) else {
            tracing::error!(state = %self.id, version, "redis holds an unreadable update");
            return false;
        };
        let mut inner = self.lock();
        if inner.removed {
            return true;
        }
        let current = inner.record.version();
        if version <= current {
            return true;
        }
        if version != current + 1 {
            return false;
        }
        let StateUpdated {
            updates,
            removed,
            ops,
            ..
        } = message;
        let mut values = Arc::unwrap_or_clone(updates);
        for (key, operation) in &ops {
            let Operation::Append { items, max } = operation else {
                return false;
            };
            let mut array = match inner.record.value().get(key) {
                Some(Value::Array(array)) => array.clone(),
                None => Vec::new(),
                Some(_) => return false,
            };
            append_in_place(&mut array, items, *max);
            values.insert(key.clone(), Value::Array(array));
        }
        let resolved = Resolved {
            values,
            removed,
            appended: ops,
        };
        let bytes = inner.record.size_after(&resolved);
        inner.record.commit(&resolved, bytes, version);
        inner.snapshot = None;
        let change = Broadcast::new(resolved);
        let echo = origin
            .split_once('/')
            .filter(|(node, _)| *node == &*replica.node)
            .and_then(|(_, token)| token.parse::<u64>().ok())
            .and_then(|token| inner.shared.echoes.remove(&token));
        let reply = inner.subscribers.broadcast(&change, version, echo.as_ref());
        if let (None, Some(echo)) = (reply, echo) {
            echo.answer(&change, version);
        }
        drop(inner);
        replica.delivered.send_replace(version);
        true
    }

    /// The replica is replaced by the state as Redis holds it. Subscribers of the same
    /// incarnation at an older version get the whole value as an update (our clients
    /// see the version gap and attach again; the original's merge it); when the
    /// version went back or the incarnation changed, their connections are closed so
    /// that they reconnect and attach again.
    pub(crate) fn resync(&self, value: JsonObject, version: u64, epoch: String) {
        let Some(replica) = self.replica() else {
            return;
        };
        let mut inner = self.lock();
        let Inner {
            record,
            subscribers,
            snapshot,
            shared,
            ..
        } = &mut *inner;
        let same = shared.epoch == epoch || shared.epoch.is_empty();
        let current = record.version();
        let unchanged = same && current == version && **record.value() == value;
        if !unchanged && subscribers.len() > 0 {
            if same && version > current {
                let mut updates = value.clone();
                let removed: Vec<String> = record
                    .value()
                    .keys()
                    .filter(|key| !value.contains_key(*key))
                    .cloned()
                    .collect();
                for key in &removed {
                    updates.insert(key.clone(), Value::Null);
                }
                let notice = frame(&ServerMessage::StateUpdated(StateUpdated {
                    updates: Arc::new(updates),
                    version: Some(version),
                    request_id: None,
                    removed,
                    ops: Vec::new(),
                }));
                subscribers.push_all(&notice);
            } else {
                subscribers.close_all(
                    RESYNC_CLOSE_CODE,
                    "the state was reloaded from redis; attach again",
                );
            }
        }
        if !unchanged {
            // The updates skipped come back no more: their senders' clients see the
            // new version (or their connection closed), attach again and resend, and
            // Redis answers the resent ones.
            shared.echoes.clear();
        }
        record.replace(value, version);
        *snapshot = None;
        shared.epoch = epoch;
        drop(inner);
        replica.delivered.send_replace(version);
    }
}
