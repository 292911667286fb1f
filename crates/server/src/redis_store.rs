//! Groundwork of the Redis backend (cargo feature `redis`): how one state lives in
//! Redis, and the scripts that create, read and update it atomically. Several servers
//! sharing one Redis get one order of updates per state from here; the server does not
//! use it yet (it becomes a [`Backend`](crate::backend::Backend) next).
//!
//! Layout, every key of a state carrying the hash tag `{id}` so that a state lives in
//! one Redis Cluster slot:
//! - `ss:{id}:meta`: a hash with `version`, `epoch` (a random id of this incarnation
//!   of the state, new when it is created again) and `next_slot`;
//! - `ss:{id}:fields`: a hash from each top-level key to `"<slot> <json>"`, the JSON
//!   text of its value after the slot that keeps the order keys were first written in;
//! - `ss:{id}:log`: a stream of applied updates, one entry per version (id
//!   `<version>-1`), capped, from which a server fills a gap in what it received;
//! - `ss:{id}:out:<client>:<session>`: a hash of one session's outcomes (request id
//!   to `applied <version>` or `conflict <version>`), capped to the last
//!   [`DEDUP_WINDOW`](state_sync_protocol::DEDUP_WINDOW) and expiring;
//! - channel `ss:{id}:updates`: every applied update, published as `<version> <payload>`.
//!
//! Values travel as the JSON text of each top-level key; the scripts never parse or
//! build JSON (Redis's cjson turns `[]` into `{}`, rounds big integers and reorders
//! keys).

use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Script};
use state_sync_protocol::{DEDUP_WINDOW, JsonObject};

/// How many applied updates a state's stream keeps (about: Redis trims it lazily).
pub(crate) const LOG_CAP: usize = 10_000;

/// Why a Redis operation failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RedisStoreError {
    /// Redis could not be reached, or answered with an error.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// Redis holds something this server cannot read.
    #[error("redis holds an unreadable state {0}: {1}")]
    Corrupt(String, String),
}

/// What [`RedisStore::apply`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ApplyOutcome {
    /// Applied as this version, and published.
    Applied(u64),
    /// The session sent this request before: its first outcome.
    Repeat(StoredOutcome),
    /// The request is older than what the session remembers: whether it was applied
    /// is unknown.
    Unknown,
    /// The state is at this version, not the expected one; nothing changed.
    Conflict(u64),
    /// The state does not exist.
    Gone,
}

/// A session's remembered outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StoredOutcome {
    /// Applied as this version.
    Applied(u64),
    /// Refused: the state was at this version.
    Conflict(u64),
}

/// A state as read from Redis, at one version.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LoadedState {
    pub(crate) value: JsonObject,
    pub(crate) version: u64,
    pub(crate) epoch: String,
}

/// One update, as the scripts take it: the JSON text of each key it sets, the keys it
/// removes, and the text subscribers receive after the version.
#[derive(Debug, Clone, Default)]
pub(crate) struct StoredUpdate<'a> {
    pub(crate) set: Vec<(&'a str, String)>,
    pub(crate) removed: Vec<&'a str>,
    pub(crate) payload: String,
}

/// Who sent an update, for the exactly-once check.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sender<'a> {
    pub(crate) client: &'a str,
    pub(crate) session: &'a str,
    pub(crate) request_id: u64,
}

/// The states of one Redis.
#[derive(Clone)]
pub(crate) struct RedisStore {
    /// For subscriptions, which need connections of their own.
    client: redis::Client,
    connection: ConnectionManager,
    apply: Script,
    create: Script,
    load: Script,
    /// How long a session's outcomes live after its last update, in seconds.
    outcome_ttl: u64,
}

fn key(id: &str, part: &str) -> String {
    format!("ss:{{{id}}}:{part}")
}

/// The channel a state's applied updates are published on.
pub(crate) fn channel(id: &str) -> String {
    key(id, "updates")
}

fn parse_u64(id: &str, text: &str) -> Result<u64, RedisStoreError> {
    text.parse()
        .map_err(|_| RedisStoreError::Corrupt(id.to_owned(), format!("{text:?} is not a number")))
}

impl RedisStore {
    /// Connects to `url` (`redis://host:port/`); reconnects by itself afterwards.
    ///
    /// # Errors
    /// When the URL is invalid or Redis cannot be reached.
    pub(crate) async fn connect(url: &str, outcome_ttl: u64) -> Result<Self, RedisStoreError> {
        let client = redis::Client::open(url)?;
        let connection = client.get_connection_manager().await?;
        Ok(RedisStore {
            client,
            connection,
            apply: Script::new(include_str!("redis_store/apply.lua")),
            create: Script::new(include_str!("redis_store/create.lua")),
            load: Script::new(include_str!("redis_store/load.lua")),
            outcome_ttl,
        })
    }

    /// Creates a state with `value` unless Redis has it (the first server wins).
    /// Returns whether this call created it.
    ///
    /// # Errors
    /// When Redis fails.
    pub(crate) async fn create(
        &self,
        id: &str,
        value: &JsonObject,
    ) -> Result<bool, RedisStoreError> {
        let mut invocation = self.create.key(key(id, "meta"));
        invocation.key(key(id, "fields"));
        invocation.arg(uuid::Uuid::new_v4().to_string());
        for (name, value) in value {
            invocation.arg(name).arg(value.to_string());
        }
        let created: i64 = invocation
            .invoke_async(&mut self.connection.clone())
            .await?;
        Ok(created == 1)
    }

    /// The state as Redis holds it, in the order its keys were first written.
    ///
    /// # Errors
    /// When Redis fails, or holds what this server cannot read.
    pub(crate) async fn load(&self, id: &str) -> Result<Option<LoadedState>, RedisStoreError> {
        let mut invocation = self.load.key(key(id, "meta"));
        invocation.key(key(id, "fields"));
        let reply: Vec<String> = invocation
            .invoke_async(&mut self.connection.clone())
            .await?;
        let mut reply = reply.into_iter();
        let (Some(version), Some(epoch)) = (reply.next(), reply.next()) else {
            return Ok(None);
        };
        let corrupt = |why: String| RedisStoreError::Corrupt(id.to_owned(), why);
        let mut entries = Vec::new();
        while let (Some(name), Some(stored)) = (reply.next(), reply.next()) {
            let (slot, json) = stored
                .split_once(' ')
                .ok_or_else(|| corrupt(format!("field {name:?} has no slot")))?;
            let slot = parse_u64(id, slot)?;
            let value = serde_json::from_str(json)
                .map_err(|e| corrupt(format!("field {name:?} is not JSON: {e}")))?;
            entries.push((slot, name, value));
        }
        entries.sort_by_key(|(slot, _, _)| *slot);
        Ok(Some(LoadedState {
            value: entries
                .into_iter()
                .map(|(_, name, value)| (name, value))
                .collect(),
            version: parse_u64(id, &version)?,
            epoch,
        }))
    }

    /// Applies an update atomically: the exactly-once check for `sender`, the
    /// `expected` version, the fields, the version, the stream entry and the publish.
    ///
    /// # Errors
    /// When Redis fails (then whether it was applied is unknown: retry with the same
    /// sender and request id, which answers with the first outcome).
    pub(crate) async fn apply(
        &self,
        id: &str,
        sender: Option<Sender<'_>>,
        expected: Option<u64>,
        update: &StoredUpdate<'_>,
    ) -> Result<ApplyOutcome, RedisStoreError> {
        let outcomes = match sender {
            Some(sender) => key(id, &format!("out:{}:{}", sender.client, sender.session)),
            // Untracked: a key the script never touches (it still must be in the slot).
            None => key(id, "out"),
        };
        let mut invocation = self.apply.key(key(id, "meta"));
        invocation
            .key(key(id, "fields"))
            .key(key(id, "log"))
            .key(outcomes)
            .key(channel(id))
            .arg(sender.map_or(String::new(), |s| s.request_id.to_string()))
            .arg(expected.map_or(String::new(), |v| v.to_string()))
            .arg(update.set.len());
        for (name, json) in &update.set {
            invocation.arg(*name).arg(json);
        }
        invocation.arg(update.removed.len());
        for name in &update.removed {
            invocation.arg(*name);
        }
        invocation
            .arg(&update.payload)
            .arg(LOG_CAP)
            .arg(self.outcome_ttl)
            .arg(DEDUP_WINDOW);
        let reply: Vec<String> = invocation
            .invoke_async(&mut self.connection.clone())
            .await?;
        let corrupt = |why: &str| RedisStoreError::Corrupt(id.to_owned(), why.to_owned());
        let number = |at: usize| {
            reply
                .get(at)
                .ok_or_else(|| corrupt("a short answer"))
                .and_then(|text| parse_u64(id, text))
        };
        match reply.first().map(String::as_str) {
            Some("applied") => Ok(ApplyOutcome::Applied(number(1)?)),
            Some("conflict") => Ok(ApplyOutcome::Conflict(number(1)?)),
            Some("unknown") => Ok(ApplyOutcome::Unknown),
            Some("gone") => Ok(ApplyOutcome::Gone),
            Some("repeat") => {
                let outcome = reply.get(1).ok_or_else(|| corrupt("a short answer"))?;
                match outcome.split_once(' ') {
                    Some(("applied", v)) => Ok(ApplyOutcome::Repeat(StoredOutcome::Applied(
                        parse_u64(id, v)?,
                    ))),
                    Some(("conflict", v)) => Ok(ApplyOutcome::Repeat(StoredOutcome::Conflict(
                        parse_u64(id, v)?,
                    ))),
                    _ => Err(corrupt("an unknown outcome")),
                }
            }
            _ => Err(corrupt("an unknown answer")),
        }
    }

    /// The updates of versions `from..=to` from the state's stream, to fill a gap:
    /// `(version, payload)` in order. Fewer than asked when the stream was trimmed.
    ///
    /// # Errors
    /// When Redis fails.
    pub(crate) async fn log(
        &self,
        id: &str,
        from: u64,
        to: u64,
    ) -> Result<Vec<(u64, String)>, RedisStoreError> {
        let reply: redis::streams::StreamRangeReply = self
            .connection
            .clone()
            .xrange(key(id, "log"), format!("{from}-1"), format!("{to}-1"))
            .await?;
        reply
            .ids
            .into_iter()
            .map(|entry| {
                let version = entry
                    .id
                    .split_once('-')
                    .map_or(entry.id.as_str(), |(v, _)| v);
                let version = parse_u64(id, version)?;
                let payload: String = entry.get("u").ok_or_else(|| {
                    RedisStoreError::Corrupt(id.to_owned(), "a log entry without payload".into())
                })?;
                Ok((version, payload))
            })
            .collect()
    }
}

mod feed;

#[cfg(test)]
use feed::FeedEvent;

#[cfg(test)]
mod tests;
