//! How states live in Redis (cargo feature `redis`), and the scripts that create, read,
//! update and remove them atomically. Several servers sharing one Redis get one order
//! of updates per state from here; [`crate::cluster`] is the server's side of it.
//!
//! Layout, every key of a state carrying the hash tag `{id}` so that a state lives in
//! one Redis Cluster slot:
//! - `ss:{id}:meta`: a hash with `version`, `epoch` (a random id of this incarnation
//!   of the state, new when it is created again), `next_slot`, `created` and
//!   `expires` (unix milliseconds; no `expires` without a ttl);
//! - `ss:{id}:fields`: a hash from each top-level key to `"<slot> <json>"`, the JSON
//!   text of its value after the slot that keeps the order keys were first written in;
//! - `ss:{id}:log`: a stream of applied updates, one entry per version (id
//!   `<version>-1`), capped to [`LOG_CAP`], from which a server fills a gap in what it
//!   received;
//! - `ss:{id}:out:<epoch>:<length of client>:<client>:<session>`: a hash of one
//!   session's outcomes (request id to `applied <version>`, `conflict <version>` or
//!   `failed <reason> <message>`, and `max`), capped to the last
//!   [`DEDUP_WINDOW`](state_sync_protocol::DEDUP_WINDOW) and expiring after the
//!   session retention;
//! - `ss:{id}:clients`: a hash from each server (node id) to `"<clients> <deadline>"`,
//!   how many clients it has attached, valid until the deadline (unix ms) unless it
//!   refreshes it;
//! - `ss:{id}:removed`: that the state was removed (for an hour), so that a server
//!   that missed the removal's publish tells it from a state Redis lost;
//! - channel `ss:{id}:updates`: every applied update, published as
//!   `<version> <payload>`; `x <epoch> <why>` when the state was removed and
//!   `r <epoch>` when it was created again in place.
//!
//! Values travel as the JSON text of each top-level key; the scripts never parse or
//! build JSON (Redis's cjson turns `[]` into `{}`, rounds big integers and reorders
//! keys).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Script};
use state_sync_protocol::{DEDUP_WINDOW, FailureReason, JsonObject};

use crate::session_log::MAX_SESSIONS_PER_CLIENT;
use crate::storage::{json_len, state_len};
use tokio::sync::mpsc;

/// How many applied updates a state's stream keeps (about: Redis trims it lazily).
/// It only fills short gaps (a server that is further behind loads the whole state),
/// and bounds what a state's stream holds in Redis: about this many times the size of
/// an update (at most the server's message size limit).
pub(crate) const LOG_CAP: usize = 1024;

/// Why a Redis operation failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RedisStoreError {
    /// Redis could not be reached, or answered with an error.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// Redis did not answer in time.
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    /// A pipeline this request was part of failed (why).
    #[error("{0}")]
    Failed(String),
    /// The store is gone (the server is stopping).
    #[error("the redis store was closed")]
    Closed,
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
    /// The state is another incarnation (this epoch) than the sender's copy.
    Epoch(String),
    /// The request that had to be answered first was not: nothing changed.
    Gap,
    /// The state would be this many bytes, over its limit: nothing changed.
    TooLarge(u64),
}

/// A session's remembered outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StoredOutcome {
    /// Applied as this version.
    Applied(u64),
    /// Refused: the state was at this version.
    Conflict(u64),
    /// Refused for this reason, told with this message.
    Failed(FailureReason, String),
    /// Refused: the state would have been this many bytes, over its limit.
    TooLarge(u64),
}

impl StoredOutcome {
    fn parse(text: &str) -> Option<StoredOutcome> {
        let (kind, rest) = text.split_once(' ')?;
        match kind {
            "applied" => rest.parse().ok().map(StoredOutcome::Applied),
            "conflict" => rest.parse().ok().map(StoredOutcome::Conflict),
            "toolarge" => rest.parse().ok().map(StoredOutcome::TooLarge),
            "failed" => {
                let (reason, message) = rest.split_once(' ')?;
                let reason = serde_json::from_value(serde_json::Value::String(reason.into()))
                    .unwrap_or(FailureReason::Other);
                Some(StoredOutcome::Failed(reason, message.to_owned()))
            }
            _ => None,
        }
    }

    fn text(&self) -> String {
        match self {
            StoredOutcome::Applied(version) => format!("applied {version}"),
            StoredOutcome::Conflict(version) => format!("conflict {version}"),
            StoredOutcome::TooLarge(bytes) => format!("toolarge {bytes}"),
            StoredOutcome::Failed(reason, message) => {
                let reason = serde_json::to_value(reason)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_else(|| "other".into());
                format!("failed {reason} {message}")
            }
        }
    }
}

/// What [`RedisStore::outcome`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Seen {
    /// The request was never seen (and is now remembered, when an outcome was given).
    New,
    /// Its first outcome.
    Repeat(StoredOutcome),
    /// Older than what the session remembers.
    Unknown,
    /// The state does not exist.
    Gone,
    /// The state is another incarnation.
    Epoch(String),
}

/// A state as read from Redis, at one version.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LoadedState {
    pub(crate) value: JsonObject,
    pub(crate) version: u64,
    pub(crate) epoch: String,
    pub(crate) created: SystemTime,
    pub(crate) expires: Option<SystemTime>,
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
    /// The highest request id the session sent before it attached, if it said.
    pub(crate) floor: Option<u64>,
    /// A request id of the session that must have been answered before this one.
    pub(crate) after: Option<u64>,
}

/// The condition an update is applied under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expected {
    /// None: applied at whatever version the state is.
    Any,
    /// The sender asked for this version: a conflict is its answer, remembered.
    Asked(u64),
    /// The server read the state at this version (to resolve operations): on a
    /// conflict it reads again and retries, so nothing is remembered.
    Read(u64),
}

/// A connection to one Redis (reconnecting by itself) or to a Redis Cluster.
#[derive(Clone)]
enum Connection {
    Single(ConnectionManager),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl redis::aio::ConnectionLike for Connection {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Connection::Single(connection) => connection.req_packed_command(cmd),
            Connection::Cluster(connection) => connection.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Connection::Single(connection) => {
                connection.req_packed_commands(pipeline, offset, count)
            }
            Connection::Cluster(connection) => {
                connection.req_packed_commands(pipeline, offset, count)
            }
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Single(connection) => connection.get_db(),
            Connection::Cluster(connection) => connection.get_db(),
        }
    }
}

/// Most updates one pipeline carries.
const PIPELINE: usize = 512;

/// An update queued for a pipeline.
struct Job {
    id: String,
    command: redis::Cmd,
    reply: Answer,
}

/// What is told a job's outcome: called by the pipeline task, so it must not block.
pub(crate) type Answer = Box<dyn FnOnce(Result<ApplyOutcome, RedisStoreError>) + Send + Sync>;

fn is_noscript(error: &redis::RedisError) -> bool {
    error.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript)
}

/// What the apply script answered.
fn parse_applied(id: &str, reply: &[String]) -> Result<ApplyOutcome, RedisStoreError> {
    let corrupt = |why: &str| RedisStoreError::Corrupt(id.to_owned(), why.to_owned());
    let text = |at: usize| reply.get(at).ok_or_else(|| corrupt("a short answer"));
    match reply.first().map(String::as_str) {
        Some("applied") => Ok(ApplyOutcome::Applied(parse_u64(id, text(1)?)?)),
        Some("conflict") => Ok(ApplyOutcome::Conflict(parse_u64(id, text(1)?)?)),
        Some("unknown") => Ok(ApplyOutcome::Unknown),
        Some("gone") => Ok(ApplyOutcome::Gone),
        Some("epoch") => Ok(ApplyOutcome::Epoch(text(1)?.clone())),
        Some("gap") => Ok(ApplyOutcome::Gap),
        Some("too_large") => Ok(ApplyOutcome::TooLarge(parse_u64(id, text(1)?)?)),
        Some("repeat") => StoredOutcome::parse(text(1)?)
            .map(ApplyOutcome::Repeat)
            .ok_or_else(|| corrupt("an unknown outcome")),
        _ => Err(corrupt("an unknown answer")),
    }
}

/// The states of one Redis.
#[derive(Clone)]
pub(crate) struct RedisStore {
    /// Updates queued for the pipeline task ([`RedisStore::submit`]).
    pipeline: mpsc::UnboundedSender<Job>,
    /// For subscriptions, which need connections of their own: every node given.
    pub(crate) clients: Vec<redis::Client>,
    connection: Connection,
    apply: Script,
    create: Script,
    load: Script,
    remove: Script,
    outcome: Script,
    session: Script,
    presence: Script,
    /// How long a session's outcomes live after its last update, in seconds.
    outcome_ttl: u64,
    /// How long a command may take before it counts as failed.
    timeout: Duration,
    /// The largest a state may grow, as JSON text (`Builder::max_state_bytes`).
    max_bytes: usize,
}

fn key(id: &str, part: &str) -> String {
    format!("ss:{{{id}}}:{part}")
}

/// The channel a state's applied updates are published on.
pub(crate) fn channel(id: &str) -> String {
    key(id, "updates")
}

/// The key of one session's outcomes in one incarnation of a state. The client's
/// length comes first, so that no choice of client and session collides with another.
fn outcomes_key(id: &str, epoch: &str, client: &str, session: &str) -> String {
    format!("{}{session}", session_prefix(id, "out", epoch, client))
}

/// The request ids whose outcomes a session keeps, oldest first.
fn ids_key(id: &str, epoch: &str, client: &str, session: &str) -> String {
    format!("{}{session}", session_prefix(id, "outids", epoch, client))
}

/// What comes before a session id in the keys of a client's sessions (`part` is
/// `out` or `outids`): the client's length first, so that no choice of client and
/// session collides with another.
fn session_prefix(id: &str, part: &str, epoch: &str, client: &str) -> String {
    key(id, &format!("{part}:{epoch}:{}:{client}:", client.len()))
}

/// The sessions of a client in one incarnation of a state.
fn sessions_key(id: &str, epoch: &str, client: &str) -> String {
    key(id, &format!("sessions:{epoch}:{}:{client}", client.len()))
}

/// A client's sessions past [`MAX_SESSIONS_PER_CLIENT`] are forgotten (least recently
/// active first) only once idle this long, up to four times that many sessions.
const SESSION_GRACE_SECONDS: u64 = 60;

/// Payloads longer than this are not kept in a state's stream (a server that needs
/// one loads the whole state instead): the stream holds at most [`LOG_CAP`] times this.
pub(crate) const KEEP_LIMIT: usize = 16 << 10;

/// What the stream keeps of a payload too long to keep.
pub(crate) const NOT_KEPT: &str = "~";

fn parse_u64(id: &str, text: &str) -> Result<u64, RedisStoreError> {
    text.parse()
        .map_err(|_| RedisStoreError::Corrupt(id.to_owned(), format!("{text:?} is not a number")))
}

pub(crate) fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn from_unix_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

impl RedisStore {
    /// Connects to `url` (`redis://host:port/`); reconnects by itself afterwards.
    ///
    /// # Errors
    /// When the URL is invalid or Redis cannot be reached.
    #[cfg(test)]
    pub(crate) async fn connect(url: &str, outcome_ttl: u64) -> Result<Self, RedisStoreError> {
        Self::connect_to(&[url.to_owned()], false, outcome_ttl, 4 << 20).await
    }

    /// Connects to one Redis (`cluster` false: `urls` has one URL), or to a Redis
    /// Cluster through any of its nodes. Subscriptions go to one node at a time (in
    /// a Redis Cluster, what is published on any node reaches the subscribers of
    /// every node).
    ///
    /// # Errors
    /// When a URL is invalid or Redis cannot be reached.
    pub(crate) async fn connect_to(
        urls: &[String],
        cluster: bool,
        outcome_ttl: u64,
        max_bytes: usize,
    ) -> Result<Self, RedisStoreError> {
        let clients = urls
            .iter()
            .map(|url| redis::Client::open(url.as_str()))
            .collect::<Result<Vec<_>, _>>()?;
        let timeout = Duration::from_secs(5);
        let connection = if cluster {
            let client = redis::cluster::ClusterClient::builder(urls.iter().map(String::as_str))
                .connection_timeout(timeout)
                .response_timeout(timeout)
                // No resending: a pipeline resent after a connection failure could apply
                // untracked updates twice. A redirect (a slot moved) fails the update,
                // its client reconnects and resends, and the next attempt finds the slot.
                .retries(0)
                .build()?;
            let connection = tokio::time::timeout(timeout, client.get_async_connection())
                .await
                .map_err(|_| RedisStoreError::Timeout(timeout))??;
            Connection::Cluster(connection)
        } else {
            let client = clients
                .first()
                .ok_or_else(|| RedisStoreError::Failed("no redis URL given".into()))?;
            let config = redis::aio::ConnectionManagerConfig::new()
                .set_connection_timeout(Some(timeout))
                .set_response_timeout(Some(timeout))
                .set_number_of_retries(2)
                .set_max_delay(Duration::from_secs(1));
            let connection =
                tokio::time::timeout(timeout, client.get_connection_manager_with_config(config))
                    .await
                    .map_err(|_| RedisStoreError::Timeout(timeout))??;
            Connection::Single(connection)
        };
        let (pipeline, jobs) = mpsc::unbounded_channel();
        let store = RedisStore {
            pipeline,
            clients,
            connection,
            apply: Script::new(include_str!("redis_store/apply.lua")),
            create: Script::new(include_str!("redis_store/create.lua")),
            load: Script::new(include_str!("redis_store/load.lua")),
            remove: Script::new(include_str!("redis_store/remove.lua")),
            outcome: Script::new(include_str!("redis_store/outcome.lua")),
            session: Script::new(include_str!("redis_store/session.lua")),
            presence: Script::new(include_str!("redis_store/presence.lua")),
            outcome_ttl,
            timeout,
            max_bytes,
        };
        // The task holds a store whose own queue is closed, so that it ends when every
        // other handle is dropped.
        let mut sender_of_task = store.clone();
        sender_of_task.pipeline = mpsc::unbounded_channel().0;
        tokio::spawn(sender_of_task.send_pipelines(jobs));
        Ok(store)
    }

    /// Runs a command within the time limit.
    async fn run<T: redis::FromRedisValue>(
        &self,
        invocation: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, RedisStoreError> {
        tokio::time::timeout(self.timeout, invocation)
            .await
            .map_err(|_| RedisStoreError::Timeout(self.timeout))?
            .map_err(RedisStoreError::from)
    }

    /// Creates a state with `value` unless Redis has it (the first server wins), or
    /// replaces it when `reset`. Returns whether this call created it.
    ///
    /// # Errors
    /// When Redis fails.
    pub(crate) async fn create(
        &self,
        id: &str,
        value: &JsonObject,
        expires: Option<SystemTime>,
        reset: bool,
    ) -> Result<bool, RedisStoreError> {
        let mut invocation = self.create.key(key(id, "meta"));
        invocation
            .key(key(id, "fields"))
            .key(key(id, "log"))
            .key(channel(id))
            .key(key(id, "removed"))
            .arg(uuid::Uuid::new_v4().simple().to_string())
            .arg(unix_ms(SystemTime::now()))
            .arg(expires.map_or(String::new(), |at| unix_ms(at).to_string()))
            .arg(if reset { "1" } else { "0" })
            .arg(state_len(value));
        for (name, value) in value {
            invocation.arg(name).arg(value.to_string());
        }
        let mut connection = self.connection.clone();
        let created: i64 = self.run(invocation.invoke_async(&mut connection)).await?;
        Ok(created == 1)
    }

    /// The state as Redis holds it, in the order its keys were first written.
    ///
    /// # Errors
    /// When Redis fails, or holds what this server cannot read.
    pub(crate) async fn load(&self, id: &str) -> Result<Option<LoadedState>, RedisStoreError> {
        let mut invocation = self.load.key(key(id, "meta"));
        invocation.key(key(id, "fields"));
        let mut connection = self.connection.clone();
        let reply: Vec<String> = self.run(invocation.invoke_async(&mut connection)).await?;
        let mut reply = reply.into_iter();
        let (Some(version), Some(epoch), Some(created), Some(expires)) =
            (reply.next(), reply.next(), reply.next(), reply.next())
        else {
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
        let expires = if expires.is_empty() {
            None
        } else {
            Some(from_unix_ms(parse_u64(id, &expires)?))
        };
        Ok(Some(LoadedState {
            value: entries
                .into_iter()
                .map(|(_, name, value)| (name, value))
                .collect(),
            version: parse_u64(id, &version)?,
            epoch,
            created: from_unix_ms(parse_u64(id, &created)?),
            expires,
        }))
    }

    /// Applies an update atomically to incarnation `epoch`: the exactly-once check for
    /// `sender`, the `expected` version, the fields, the version, the stream entry and
    /// the publish.
    ///
    /// # Errors
    /// When Redis fails (then whether it was applied is unknown: retry with the same
    /// sender and request id, which answers with the first outcome).
    pub(crate) async fn apply(
        &self,
        id: &str,
        epoch: &str,
        sender: Option<Sender<'_>>,
        expected: Expected,
        update: &StoredUpdate<'_>,
    ) -> Result<ApplyOutcome, RedisStoreError> {
        let command = self.apply_command(id, epoch, sender, expected, update);
        let mut connection = self.connection.clone();
        let reply: Vec<String> = match self.run(command.query_async(&mut connection)).await {
            Err(RedisStoreError::Redis(error)) if is_noscript(&error) => {
                self.load_apply().await?;
                self.run(command.query_async(&mut connection)).await?
            }
            other => other?,
        };
        parse_applied(id, &reply)
    }

    /// Queues an update for Redis and returns at once; updates queued one after the
    /// other reach Redis in that order (several share one round trip). `answer` is
    /// called with [`RedisStore::apply`]'s outcome, from the task that sends them.
    pub(crate) fn submit(
        &self,
        id: &str,
        epoch: &str,
        sender: Option<Sender<'_>>,
        expected: Expected,
        update: &StoredUpdate<'_>,
        answer: Answer,
    ) {
        let job = Job {
            id: id.to_owned(),
            command: self.apply_command(id, epoch, sender, expected, update),
            reply: answer,
        };
        if let Err(mpsc::error::SendError(job)) = self.pipeline.send(job) {
            (job.reply)(Err(RedisStoreError::Closed));
        }
    }

    /// The EVALSHA of the apply script.
    fn apply_command(
        &self,
        id: &str,
        epoch: &str,
        sender: Option<Sender<'_>>,
        expected: Expected,
        update: &StoredUpdate<'_>,
    ) -> redis::Cmd {
        // Untracked: keys the script never touches (they still must be in the slot).
        let (outcomes, ids, sessions) = match sender {
            Some(s) => (
                outcomes_key(id, epoch, s.client, s.session),
                ids_key(id, epoch, s.client, s.session),
                sessions_key(id, epoch, s.client),
            ),
            None => (key(id, "out"), key(id, "outids"), key(id, "sessions")),
        };
        let (expected, remember) = match expected {
            Expected::Any => (String::new(), "0"),
            Expected::Asked(version) => (version.to_string(), "1"),
            Expected::Read(version) => (version.to_string(), "0"),
        };
        let mut command = redis::cmd("EVALSHA");
        command
            .arg(self.apply.get_hash())
            .arg(7)
            .arg(key(id, "meta"))
            .arg(key(id, "fields"))
            .arg(key(id, "log"))
            .arg(&outcomes)
            .arg(channel(id))
            .arg(ids)
            .arg(sessions)
            .arg(epoch)
            .arg(sender.map_or(String::new(), |s| s.request_id.to_string()))
            .arg(
                sender
                    .and_then(|s| s.floor)
                    .map_or(String::new(), |floor| floor.to_string()),
            )
            .arg(expected)
            .arg(remember)
            .arg(
                sender
                    .and_then(|s| s.after)
                    .map_or(String::new(), |after| after.to_string()),
            )
            .arg(self.max_bytes)
            .arg(update.set.len());
        for (name, json) in &update.set {
            command.arg(*name).arg(json).arg(json_len(*name));
        }
        command.arg(update.removed.len());
        for name in &update.removed {
            command.arg(*name).arg(json_len(*name));
        }
        let kept = if update.payload.len() > KEEP_LIMIT {
            NOT_KEPT
        } else {
            update.payload.as_str()
        };
        command
            .arg(&update.payload)
            .arg(kept)
            .arg(LOG_CAP)
            .arg(sender.map_or("", |s| s.session))
            .arg(self.outcome_ttl)
            .arg(DEDUP_WINDOW);
        command
    }

    /// Loads the apply script (after Redis lost its scripts: a restart, a failover).
    async fn load_apply(&self) -> Result<(), RedisStoreError> {
        let mut connection = self.connection.clone();
        let _: String = self
            .run(self.apply.prepare_invoke().load_async(&mut connection))
            .await?;
        Ok(())
    }

    /// Sends what is queued in pipelines, one at a time, in order, until the store is
    /// dropped.
    async fn send_pipelines(self, mut jobs: mpsc::UnboundedReceiver<Job>) {
        let mut batch = Vec::new();
        while let Some(job) = jobs.recv().await {
            batch.push(job);
            while batch.len() < PIPELINE
                && let Ok(job) = jobs.try_recv()
            {
                batch.push(job);
            }
            // One pipeline per state: a state's keys are in one slot of a Redis Cluster
            // (and a pipeline must be), its updates stay in order within it, and the
            // states' pipelines run side by side.
            let mut states: Vec<(&str, Vec<usize>)> = Vec::new();
            for (at, job) in batch.iter().enumerate() {
                match states.iter_mut().find(|(id, _)| *id == job.id) {
                    Some((_, jobs)) => jobs.push(at),
                    None => states.push((&job.id, vec![at])),
                }
            }
            let groups: Vec<Vec<&Job>> = states
                .iter()
                .map(|(_, jobs)| jobs.iter().map(|at| &batch[*at]).collect())
                .collect();
            let results =
                futures_util::future::join_all(groups.iter().map(|jobs| self.send_state(jobs)))
                    .await;
            let mut outcomes: Vec<Option<Result<ApplyOutcome, RedisStoreError>>> =
                (0..batch.len()).map(|_| None).collect();
            for ((_, jobs), results) in states.iter().zip(results) {
                match results {
                    Ok(results) => {
                        for (at, result) in jobs.iter().zip(results) {
                            outcomes[*at] = Some(
                                result
                                    .map_err(RedisStoreError::from)
                                    .and_then(|reply| parse_applied(&batch[*at].id, &reply)),
                            );
                        }
                    }
                    Err(error) => {
                        let why = error.to_string();
                        for at in jobs {
                            outcomes[*at] = Some(Err(RedisStoreError::Failed(why.clone())));
                        }
                    }
                }
            }
            for (job, outcome) in batch.drain(..).zip(outcomes) {
                (job.reply)(outcome.unwrap_or(Err(RedisStoreError::Closed)));
            }
        }
    }

    /// Sends one state's jobs in one pipeline; after Redis lost its scripts (a
    /// restart, a failover), the jobs refused for it were not run and are sent again,
    /// in order, once the script is loaded (only them: another server may have loaded
    /// it meanwhile, and the others ran).
    async fn send_state(
        &self,
        jobs: &[&Job],
    ) -> Result<Vec<redis::RedisResult<Vec<String>>>, RedisStoreError> {
        let started = std::time::Instant::now();
        let mut results = self.send_pipeline(jobs).await?;
        let (took, size) = crate::metrics::commit_histograms("redis");
        took.record(started.elapsed().as_secs_f64());
        #[allow(clippy::cast_precision_loss)]
        size.record(jobs.len() as f64);
        if results.iter().any(|r| r.as_ref().is_err_and(is_noscript)) {
            let again: Vec<usize> = (0..results.len())
                .filter(|at| results[*at].as_ref().is_err_and(is_noscript))
                .collect();
            self.load_apply().await?;
            let retried: Vec<&Job> = again.iter().map(|at| jobs[*at]).collect();
            let retried = self.send_pipeline(&retried).await?;
            for (at, result) in again.into_iter().zip(retried) {
                results[at] = result;
            }
        }
        Ok(results)
    }

    async fn send_pipeline<J: std::borrow::Borrow<Job>>(
        &self,
        batch: &[J],
    ) -> Result<Vec<redis::RedisResult<Vec<String>>>, RedisStoreError> {
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for job in batch {
            pipe.add_command(job.borrow().command.clone());
        }
        let mut connection = self.connection.clone();
        self.run(pipe.query_async(&mut connection)).await
    }

    /// What the session's request `sender.request_id` got, and with `remember`,
    /// remembers that outcome for it when it was never seen.
    ///
    /// # Errors
    /// When Redis fails.
    pub(crate) async fn outcome(
        &self,
        id: &str,
        epoch: &str,
        sender: Sender<'_>,
        remember: Option<&StoredOutcome>,
    ) -> Result<Seen, RedisStoreError> {
        let mut invocation = self.outcome.key(key(id, "meta"));
        invocation
            .key(outcomes_key(id, epoch, sender.client, sender.session))
            .key(ids_key(id, epoch, sender.client, sender.session))
            .arg(epoch)
            .arg(sender.request_id)
            .arg(
                sender
                    .floor
                    .map_or(String::new(), |floor| floor.to_string()),
            )
            .arg(remember.map_or(String::new(), StoredOutcome::text))
            .arg(self.outcome_ttl)
            .arg(DEDUP_WINDOW);
        let mut connection = self.connection.clone();
        let reply: Vec<String> = self.run(invocation.invoke_async(&mut connection)).await?;
        let corrupt = |why: &str| RedisStoreError::Corrupt(id.to_owned(), why.to_owned());
        match reply.first().map(String::as_str) {
            Some("new") => Ok(Seen::New),
            Some("unknown") => Ok(Seen::Unknown),
            Some("gone") => Ok(Seen::Gone),
            Some("epoch") => Ok(Seen::Epoch(reply.get(1).cloned().unwrap_or_default())),
            Some("repeat") => reply
                .get(1)
                .and_then(|text| StoredOutcome::parse(text))
                .map(Seen::Repeat)
                .ok_or_else(|| corrupt("an unknown outcome")),
            _ => Err(corrupt("an unknown answer")),
        }
    }

    /// A session attached to the state: its outcomes exist from now on (starting after
    /// `last_sent`), so that their absence later means they expired.
    ///
    /// # Errors
    /// When Redis fails.
    pub(crate) async fn session(
        &self,
        id: &str,
        epoch: &str,
        client: &str,
        session: &str,
        last_sent: Option<u64>,
    ) -> Result<(), RedisStoreError> {
        let mut invocation = self.session.key(outcomes_key(id, epoch, client, session));
        invocation
            .key(sessions_key(id, epoch, client))
            .arg(last_sent.unwrap_or(0))
            .arg(self.outcome_ttl)
            .arg(MAX_SESSIONS_PER_CLIENT)
            .arg(session)
            .arg(session_prefix(id, "out", epoch, client))
            .arg(session_prefix(id, "outids", epoch, client))
            .arg(MAX_SESSIONS_PER_CLIENT * 4)
            .arg(SESSION_GRACE_SECONDS);
        let mut connection = self.connection.clone();
        let _: i64 = self.run(invocation.invoke_async(&mut connection)).await?;
        Ok(())
    }

    /// Removes incarnation `epoch` of a state (any, with `None`) and tells every server
    /// following it `why`. Returns whether it was there.
    ///
    /// # Errors
    /// When Redis fails.
    pub(crate) async fn remove(
        &self,
        id: &str,
        epoch: Option<&str>,
        why: &str,
    ) -> Result<bool, RedisStoreError> {
        let mut invocation = self.remove.key(key(id, "meta"));
        invocation
            .key(key(id, "fields"))
            .key(key(id, "log"))
            .key(key(id, "clients"))
            .key(channel(id))
            .key(key(id, "removed"))
            .key(key(id, "presence"))
            .key(key(id, "presence:exp"))
            .key(key(id, "presence:writers"))
            .arg(epoch.unwrap_or(""))
            .arg(why);
        let mut connection = self.connection.clone();
        let removed: i64 = self.run(invocation.invoke_async(&mut connection)).await?;
        Ok(removed == 1)
    }

    /// Says that server `node` has `clients` attached to the state, until `valid_for`
    /// from now unless said again.
    ///
    /// # Errors
    /// When Redis fails.
    pub(crate) async fn set_clients(
        &self,
        id: &str,
        node: &str,
        clients: usize,
        valid_for: Duration,
    ) -> Result<(), RedisStoreError> {
        let deadline = unix_ms(SystemTime::now() + valid_for);
        let mut connection = self.connection.clone();
        let key = key(id, "clients");
        if clients == 0 {
            let _: i64 = self.run(connection.hdel(key, node)).await?;
        } else {
            let _: i64 = self
                .run(connection.hset(key, node, format!("{clients} {deadline}")))
                .await?;
        }
        Ok(())
    }

    /// How many clients every server has attached to the state (entries past their
    /// deadline, of servers that stopped saying, do not count).
    ///
    /// # Errors
    /// When Redis fails.
    pub(crate) async fn clients(&self, id: &str) -> Result<usize, RedisStoreError> {
        let mut connection = self.connection.clone();
        let all: Vec<(String, String)> = self.run(connection.hgetall(key(id, "clients"))).await?;
        let now = unix_ms(SystemTime::now());
        let live = |entry: &str| {
            let (count, deadline) = entry.split_once(' ')?;
            let deadline: u64 = deadline.parse().ok()?;
            (deadline >= now).then(|| count.parse::<usize>().ok())?
        };
        // Servers that stopped saying (they died) are forgotten.
        let dead: Vec<&String> = all
            .iter()
            .filter(|(_, entry)| live(entry).is_none())
            .map(|(node, _)| node)
            .collect();
        if !dead.is_empty() {
            let _: i64 = self.run(connection.hdel(key(id, "clients"), dead)).await?;
        }
        Ok(all.iter().filter_map(|(_, entry)| live(entry)).sum())
    }

    /// Whether Redis answers a PING within `limit`.
    ///
    /// # Errors
    /// When it does not.
    pub(crate) async fn ping(&self, limit: Duration) -> Result<(), RedisStoreError> {
        let mut connection = self.connection.clone();
        let pong: String =
            tokio::time::timeout(limit, redis::cmd("PING").query_async(&mut connection))
                .await
                .map_err(|_| RedisStoreError::Timeout(limit))??;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(RedisStoreError::Corrupt(
                String::new(),
                format!("PING answered {pong:?}"),
            ))
        }
    }

    /// Whether the state was removed (within the last hour), as opposed to lost.
    ///
    /// # Errors
    /// When Redis fails.
    pub(crate) async fn removed(&self, id: &str) -> Result<bool, RedisStoreError> {
        let mut connection = self.connection.clone();
        let exists: i64 = self.run(connection.exists(key(id, "removed"))).await?;
        Ok(exists == 1)
    }

    /// The state's version, epoch and presence version, `None` when it does not exist.
    ///
    /// # Errors
    /// When Redis fails.
    pub(crate) async fn position(
        &self,
        id: &str,
    ) -> Result<Option<(u64, String, u64)>, RedisStoreError> {
        let mut connection = self.connection.clone();
        let (version, epoch, presence): (Option<String>, Option<String>, Option<String>) = self
            .run(
                redis::cmd("HMGET")
                    .arg(key(id, "meta"))
                    .arg("version")
                    .arg("epoch")
                    .arg("pv")
                    .query_async(&mut connection),
            )
            .await?;
        match (version, epoch) {
            (Some(version), Some(epoch)) => {
                let presence = presence.as_deref().map_or(Ok(0), |pv| parse_u64(id, pv))?;
                Ok(Some((parse_u64(id, &version)?, epoch, presence)))
            }
            _ => Ok(None),
        }
    }

    /// Writes server `node`'s presence entries of incarnation `epoch` of a state (see
    /// `presence.lua`): the entries put and removed, or with `sync` all of them (its
    /// others are removed, and every server's expired entries swept, unless this
    /// server itself wrote nothing for longer than `silence`: then Redis or this server
    /// stalled, and the others' entries only look expired). Each entry is swept `ttl`
    /// after this unless written again. `false` when Redis holds another incarnation
    /// of the state, or none: nothing was written.
    ///
    /// # Errors
    /// When Redis fails.
    pub(crate) async fn presence(
        &self,
        (id, epoch): (&str, &str),
        node: &str,
        (ttl, silence): (Duration, Duration),
        outgoing: &crate::presence::Outgoing,
    ) -> Result<bool, RedisStoreError> {
        let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let mut invocation = self.presence.key(key(id, "meta"));
        invocation
            .key(key(id, "presence"))
            .key(key(id, "presence:exp"))
            .key(channel(id))
            .key(key(id, "presence:writers"))
            .arg(node)
            .arg(millis(ttl))
            .arg(if outgoing.sync { "s" } else { "c" })
            .arg(epoch)
            .arg(millis(silence));
        for present in &outgoing.put {
            let texts = PresenceTexts::of(node, present);
            invocation
                .arg(&present.id)
                .arg(texts.stored)
                .arg(texts.join);
        }
        for removed in &outgoing.removed {
            invocation.arg(removed).arg("").arg("");
        }
        let mut connection = self.connection.clone();
        let presence_version: i64 = self.run(invocation.invoke_async(&mut connection)).await?;
        Ok(presence_version >= 0)
    }

    /// Every presence entry of a state, with the server each is on, and the presence
    /// version they are at.
    ///
    /// # Errors
    /// When Redis fails, or an entry cannot be read.
    pub(crate) async fn presence_snapshot(
        &self,
        id: &str,
    ) -> Result<(u64, Vec<(String, crate::presence::Present)>), RedisStoreError> {
        let mut connection = self.connection.clone();
        let (entries, presence): (Vec<(String, String)>, Option<String>) = self
            .run(
                redis::pipe()
                    .atomic()
                    .hgetall(key(id, "presence"))
                    .hget(key(id, "meta"), "pv")
                    .query_async(&mut connection),
            )
            .await?;
        let presence = presence.as_deref().map_or(Ok(0), |pv| parse_u64(id, pv))?;
        let mut read = Vec::with_capacity(entries.len());
        for (entry, stored) in entries {
            // One unreadable entry costs only itself.
            let Some((node, stored)) = stored.split_once(' ').and_then(|(node, json)| {
                Some((node, serde_json::from_str::<StoredPresence>(json).ok()?))
            }) else {
                tracing::warn!(state = %id, %entry, "an unreadable presence entry in redis, skipped");
                continue;
            };
            read.push((
                node.to_owned(),
                crate::presence::Present {
                    id: entry,
                    identifier: stored.identifier,
                    user: stored.user,
                    presence: stored.presence,
                },
            ));
        }
        Ok((presence, read))
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
        let mut connection = self.connection.clone();
        let reply: redis::streams::StreamRangeReply = self
            .run(connection.xrange(key(id, "log"), format!("{from}-1"), format!("{to}-1")))
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

/// A presence entry as Redis keeps it (after its server's node id).
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredPresence {
    identifier: String,
    user: serde_json::Value,
    presence: JsonObject,
}

/// The texts `presence.lua` takes for an entry: what it stores, and the change it
/// publishes when the entry is new or different (a join, which replaces a known entry).
struct PresenceTexts {
    stored: String,
    join: String,
}

impl PresenceTexts {
    fn of(node: &str, present: &crate::presence::Present) -> Self {
        #[derive(serde::Serialize)]
        struct Stored<'a> {
            identifier: &'a str,
            user: &'a serde_json::Value,
            presence: &'a JsonObject,
        }
        #[derive(serde::Serialize)]
        struct Join<'a> {
            event: &'static str,
            id: &'a str,
            identifier: &'a str,
            user: &'a serde_json::Value,
            presence: &'a JsonObject,
        }
        let stored = Stored {
            identifier: &present.identifier,
            user: &present.user,
            presence: &present.presence,
        };
        let join = Join {
            event: "join",
            id: &present.id,
            identifier: &present.identifier,
            user: &present.user,
            presence: &present.presence,
        };
        // Serializing these cannot fail: every map key is a string.
        PresenceTexts {
            stored: format!(
                "{node} {}",
                serde_json::to_string(&stored).unwrap_or_default()
            ),
            join: serde_json::to_string(&join).unwrap_or_default(),
        }
    }
}

pub(crate) mod feed;

#[cfg(test)]
mod tests;
