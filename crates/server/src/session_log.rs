//! The per-session outcome logs that make retried updates exactly-once, and their
//! bounds.
//!
//! Policy: a client of this project attaches with a session id and numbers its updates
//! (request ids that only grow). For each session a state remembers the highest request
//! id it has seen and the outcomes of the last [`DEDUP_WINDOW`] of them. An update
//! whose id is not above the highest is a retry: it is answered with its first outcome
//! and never applied again; one older than what is remembered is answered
//! `outcomeUnknown`. A client that re-attaches with a session the state does not know
//! (forgotten, or the state was re-created) says which ids it sent before (`lastSent`):
//! the new log starts there, so retries of those are answered `outcomeUnknown`, never
//! applied twice.
//!
//! Bounds, so that no client can grow them or push out another client's sessions:
//! - A session is keyed by the client identifier the middleware accepted *and* the
//!   session id ([`SessionKey`]): clients cannot reach each other's logs.
//! - Outcomes per session: [`DEDUP_WINDOW`]. An applied outcome keeps the answer's
//!   frame (shared with the frame sent to the client, so it costs nothing while that is
//!   queued); a failure keeps its reason and message.
//! - Bytes of kept frames: at most [`LogBudget::per_state`] per state and
//!   [`LogBudget::server_max`] for the whole server (defaults 8 MiB and 64 MiB); past
//!   them the oldest frames are dropped and a retry of such an update is answered with
//!   its version and empty `updates` (the client has resynced the state by then).
//! - Outcomes over all sessions of a state: [`MAX_OUTCOMES_PER_STATE`] (the least
//!   recently seen session without a connection goes first).
//! - Sessions without a connection: kept for the session retention (default 10
//!   minutes); at most [`MAX_SESSIONS_PER_CLIENT`] per client identifier (its own
//!   least recently seen goes first) and [`MAX_DETACHED_SESSIONS`] per state (the least
//!   recently seen of the identifier that has the most goes first).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::wire::Frame;
use state_sync_protocol::DEDUP_WINDOW;

use crate::failure::Failure;

/// Most sessions a state remembers that have no connection attached.
pub(crate) const MAX_DETACHED_SESSIONS: usize = 4096;
/// Most sessions without a connection a state remembers for one client identifier.
pub(crate) const MAX_SESSIONS_PER_CLIENT: usize = 64;
/// Most outcomes a state remembers, over all its sessions (about 70 bytes each besides
/// the kept frames): past it, the least recently seen session without a connection
/// goes.
pub(crate) const MAX_OUTCOMES_PER_STATE: usize = 65_536;

/// A session as a state knows it: the client identifier the middleware accepted and
/// the session id the client chose. Structured, so that no choice of either can make
/// two different pairs equal.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct SessionKey {
    pub(crate) client: String,
    pub(crate) session: String,
}

/// The outcome of an update, as remembered for its session.
#[derive(Debug, Clone)]
pub(crate) enum Outcome {
    /// Applied as `version`; `reply` is the frame the sender got (its echo), unless
    /// the byte budget dropped it.
    Applied {
        version: u64,
        reply: Option<Frame>,
    },
    Failed(Failure),
}

/// How many bytes of reply frames the session logs may keep.
#[derive(Debug, Clone)]
pub(crate) struct LogBudget {
    /// Per state.
    pub(crate) per_state: usize,
    /// For the whole server, counted in `server`.
    pub(crate) server_max: usize,
    pub(crate) server: Arc<AtomicUsize>,
}

impl LogBudget {
    pub(crate) fn new(per_state: usize, server_max: usize) -> Self {
        LogBudget {
            per_state,
            server_max,
            server: Arc::new(AtomicUsize::new(0)),
        }
    }
}

#[derive(Debug)]
struct SessionLog {
    /// The highest request id seen, `None` before the first.
    last_request_id: Option<u64>,
    outcomes: VecDeque<(u64, Outcome)>,
    attached: usize,
    last_seen: Instant,
}

impl SessionLog {
    fn is_new(&self, request_id: u64) -> bool {
        self.last_request_id.is_none_or(|last| request_id > last)
    }

    /// `Ok` for a request id never seen; otherwise the answer to give instead.
    fn check(&self, request_id: u64) -> Result<(), Failure> {
        if self.is_new(request_id) {
            return Ok(());
        }
        Err(self
            .outcomes
            .iter()
            .rev()
            .find(|(id, _)| *id == request_id)
            .map_or(Failure::OutcomeUnknown, |(_, outcome)| {
                Failure::Repeated(Box::new(outcome.clone()))
            }))
    }
}

fn reply_len(outcome: &Outcome) -> usize {
    match outcome {
        Outcome::Applied {
            reply: Some(frame), ..
        } => frame.len(),
        _ => 0,
    }
}

/// The session logs of one state.
#[derive(Debug)]
pub(crate) struct SessionLogs {
    logs: HashMap<SessionKey, SessionLog>,
    /// Sessions without a connection, per client identifier.
    detached_per_client: HashMap<String, usize>,
    detached: usize,
    retention: Duration,
    last_pruned: Instant,
    budget: LogBudget,
    /// Bytes of reply frames kept by this state's logs, and how many frames.
    kept: usize,
    kept_frames: usize,
    /// Where kept frames are, oldest first (entries whose frame is gone are skipped).
    kept_order: VecDeque<(SessionKey, u64)>,
    /// Outcomes remembered over all sessions.
    outcomes: usize,
}

impl SessionLogs {
    pub(crate) fn new(retention: Duration, budget: LogBudget) -> Self {
        SessionLogs {
            logs: HashMap::new(),
            detached_per_client: HashMap::new(),
            detached: 0,
            retention,
            last_pruned: Instant::now(),
            budget,
            kept: 0,
            kept_frames: 0,
            kept_order: VecDeque::new(),
            outcomes: 0,
        }
    }

    /// A connection of `key` attached. A session the state does not know starts after
    /// `last_sent` (the highest request id the client sent before, if any).
    pub(crate) fn attach(&mut self, key: &SessionKey, last_sent: Option<u64>) {
        let now = Instant::now();
        if !self.logs.contains_key(key) {
            self.make_room(now, &key.client);
            self.logs.insert(
                key.clone(),
                SessionLog {
                    last_request_id: last_sent,
                    outcomes: VecDeque::new(),
                    attached: 0,
                    last_seen: now,
                },
            );
            self.count_detached(&key.client, 1);
        }
        let Some(log) = self.logs.get_mut(key) else {
            return;
        };
        log.attached += 1;
        log.last_seen = now;
        if log.attached == 1 {
            self.count_detached(&key.client, -1);
        }
    }

    /// Restores a session loaded from storage, with no connection attached.
    pub(crate) fn restore(&mut self, key: SessionKey, mut outcomes: Vec<(u64, Outcome)>) {
        outcomes.sort_by_key(|(id, _)| *id);
        let skip = outcomes.len().saturating_sub(DEDUP_WINDOW);
        let outcomes: VecDeque<_> = outcomes.into_iter().skip(skip).collect();
        self.outcomes += outcomes.len();
        let client = key.client.clone();
        self.logs.insert(
            key,
            SessionLog {
                last_request_id: outcomes.back().map(|(id, _)| *id),
                outcomes,
                attached: 0,
                last_seen: Instant::now(),
            },
        );
        self.count_detached(&client, 1);
    }

    /// A connection of `key` detached.
    pub(crate) fn detach(&mut self, key: &SessionKey) {
        let Some(log) = self.logs.get_mut(key) else {
            return;
        };
        log.attached = log.attached.saturating_sub(1);
        log.last_seen = Instant::now();
        if log.attached == 0 {
            self.count_detached(&key.client, 1);
        }
    }

    fn count_detached(&mut self, client: &str, delta: isize) {
        let count = self
            .detached_per_client
            .entry(client.to_owned())
            .or_insert(0);
        *count = count.saturating_add_signed(delta);
        if *count == 0 {
            self.detached_per_client.remove(client);
        }
        self.detached = self.detached.saturating_add_signed(delta);
    }

    /// `Ok` when `request_id` is new for the session; otherwise the answer to give.
    pub(crate) fn check(&self, key: &SessionKey, request_id: u64) -> Result<(), Failure> {
        self.logs
            .get(key)
            .map_or(Ok(()), |log| log.check(request_id))
    }

    /// Remembers the outcome of a new request of the session; an id already seen keeps
    /// its first outcome (a late failure from a connection that was replaced must not
    /// overwrite an application).
    pub(crate) fn record(&mut self, key: &SessionKey, request_id: u64, mut outcome: Outcome) {
        let Some(log) = self.logs.get_mut(key) else {
            return;
        };
        if !log.is_new(request_id) {
            return;
        }
        log.last_request_id = Some(request_id);
        if log.outcomes.len() == DEDUP_WINDOW
            && let Some((_, old)) = log.outcomes.pop_front()
        {
            self.outcomes -= 1;
            self.release(reply_len(&old));
        }
        let size = reply_len(&outcome);
        let server = self.budget.server.load(Ordering::Relaxed);
        if size > self.budget.per_state || server + size > self.budget.server_max {
            // Over the server's budget (or alone over the state's): make room among
            // this state's frames, or keep the version only.
            self.trim(size);
            if self.kept + size > self.budget.per_state
                || self.budget.server.load(Ordering::Relaxed) + size > self.budget.server_max
            {
                drop_reply(&mut outcome);
            }
        }
        let size = reply_len(&outcome);
        if let Some(log) = self.logs.get_mut(key) {
            log.outcomes.push_back((request_id, outcome));
            self.outcomes += 1;
        }
        while self.outcomes > MAX_OUTCOMES_PER_STATE {
            let oldest = self
                .logs
                .iter()
                .filter(|(_, log)| log.attached == 0)
                .min_by_key(|(_, log)| log.last_seen)
                .map(|(key, _)| key.clone());
            match oldest {
                Some(oldest) => self.forget(&oldest),
                // Every session has a connection: they are bounded by the connections.
                None => break,
            }
        }
        if size > 0 {
            self.kept += size;
            self.kept_frames += 1;
            self.budget.server.fetch_add(size, Ordering::Relaxed);
            self.kept_order.push_back((key.clone(), request_id));
            self.trim(0);
        }
        self.compact_order();
    }

    /// Drops the oldest kept frames until `room` more bytes fit the state's budget and
    /// the server's, or nothing is kept.
    fn trim(&mut self, room: usize) {
        while self.kept > 0
            && (self.kept + room > self.budget.per_state
                || self.budget.server.load(Ordering::Relaxed) + room > self.budget.server_max)
        {
            let Some((key, request_id)) = self.kept_order.pop_front() else {
                break;
            };
            let freed = self
                .logs
                .get_mut(&key)
                .and_then(|log| log.outcomes.iter_mut().find(|(id, _)| *id == request_id))
                .map_or(0, |(_, outcome)| drop_reply(outcome));
            self.release(freed);
        }
    }

    /// Keeps the order queue no longer than twice what it points at.
    fn compact_order(&mut self) {
        if self.kept_order.len() <= 64 + 2 * self.kept_frames {
            return;
        }
        let logs = &self.logs;
        self.kept_order.retain(|(key, request_id)| {
            logs.get(key).is_some_and(|log| {
                log.outcomes
                    .iter()
                    .any(|(id, outcome)| id == request_id && reply_len(outcome) > 0)
            })
        });
    }

    /// Counts out one dropped frame of `bytes` (nothing for 0: no frame).
    fn release(&mut self, bytes: usize) {
        if bytes > 0 {
            self.kept_frames = self.kept_frames.saturating_sub(1);
            self.kept = self.kept.saturating_sub(bytes);
            self.budget.server.fetch_sub(bytes, Ordering::Relaxed);
        }
    }

    /// Forgets every session (the state was removed).
    pub(crate) fn clear(&mut self) {
        self.logs.clear();
        self.outcomes = 0;
        self.detached_per_client.clear();
        self.detached = 0;
        self.kept_order.clear();
        self.budget.server.fetch_sub(self.kept, Ordering::Relaxed);
        self.kept = 0;
        self.kept_frames = 0;
    }

    /// Bytes of reply frames kept by this state's logs.
    #[cfg(test)]
    pub(crate) fn kept_bytes(&self) -> usize {
        self.kept
    }

    /// Forgets sessions that have had no connection for the retention period (a full
    /// scan, at most a few times per period), then makes room for one more session of
    /// `client`: its own least recently seen past [`MAX_SESSIONS_PER_CLIENT`], the
    /// least recently seen of the biggest client past [`MAX_DETACHED_SESSIONS`].
    fn make_room(&mut self, now: Instant, client: &str) {
        if now.duration_since(self.last_pruned) >= self.retention / 8 {
            self.last_pruned = now;
            let retention = self.retention;
            let expired: Vec<SessionKey> = self
                .logs
                .iter()
                .filter(|(_, log)| {
                    log.attached == 0 && now.duration_since(log.last_seen) >= retention
                })
                .map(|(key, _)| key.clone())
                .collect();
            for key in expired {
                self.forget(&key);
            }
        }
        if self.detached_per_client.get(client).copied().unwrap_or(0) >= MAX_SESSIONS_PER_CLIENT {
            self.forget_oldest_of(client);
        }
        if self.detached >= MAX_DETACHED_SESSIONS {
            let biggest = self
                .detached_per_client
                .iter()
                .max_by_key(|(_, count)| **count)
                .map(|(client, _)| client.clone());
            if let Some(biggest) = biggest {
                self.forget_oldest_of(&biggest);
            }
        }
    }

    fn forget_oldest_of(&mut self, client: &str) {
        let oldest = self
            .logs
            .iter()
            .filter(|(key, log)| log.attached == 0 && key.client == client)
            .min_by_key(|(_, log)| log.last_seen)
            .map(|(key, _)| key.clone());
        if let Some(key) = oldest {
            self.forget(&key);
        }
    }

    /// Forgets a session without a connection.
    fn forget(&mut self, key: &SessionKey) {
        if let Some(log) = self.logs.remove(key) {
            self.outcomes -= log.outcomes.len();
            for (_, outcome) in &log.outcomes {
                self.release(reply_len(outcome));
            }
            if log.attached == 0 {
                self.count_detached(&key.client, -1);
            }
        }
    }
}

impl Drop for SessionLogs {
    fn drop(&mut self) {
        self.clear();
    }
}

/// Drops an applied outcome's reply frame; returns its size.
fn drop_reply(outcome: &mut Outcome) -> usize {
    match outcome {
        Outcome::Applied { reply, .. } => reply.take().map_or(0, |frame| frame.len()),
        Outcome::Failed(_) => 0,
    }
}

#[cfg(test)]
mod tests;
