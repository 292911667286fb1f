//! One state: its stored part ([`StateRecord`]), its subscribers ([`Subscribers`]) and
//! its hooks, with the lock that orders everything that happens to it.
//!
//! Ordering: an update is applied and queued for every subscriber under the state's
//! lock, and a subscriber is added (with the snapshot it starts from) under the same
//! lock, so every client sees every update after its snapshot, once, in version order.
//! No user code runs under the lock.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Instant, SystemTime};

use state_sync_protocol::{JsonObject, ServerMessage};
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::failure::Failure;
use crate::fanout::Subscribers;
use crate::options::StateHooks;
use crate::outbox::Outbox;
use crate::session_log::SessionKey;
use crate::storage::StateRecord;

/// Who sent an update being applied.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Origin<'a> {
    /// The sender's subscription, which gets the echo with the request id.
    pub(crate) subscriber: usize,
    pub(crate) request_id: Option<u64>,
    pub(crate) session: Option<&'a SessionKey>,
}

struct Inner {
    record: StateRecord,
    subscribers: Subscribers,
    removed: bool,
    /// STATE_CONNECTION_ESTABLISHED for the current version, once encoded.
    snapshot: Option<(u64, Utf8Bytes)>,
}

/// One state of a server.
pub(crate) struct State<K> {
    pub(crate) id: String,
    pub(crate) created_at: SystemTime,
    pub(crate) expires_at: Option<Instant>,
    pub(crate) hooks: StateHooks<K>,
    inner: Mutex<Inner>,
}

impl<K> State<K> {
    pub(crate) fn new(
        id: String,
        record: StateRecord,
        hooks: StateHooks<K>,
        expires_at: Option<Instant>,
    ) -> Self {
        State {
            id,
            created_at: SystemTime::now(),
            expires_at,
            hooks,
            inner: Mutex::new(Inner {
                record,
                subscribers: Subscribers::default(),
                removed: false,
                snapshot: None,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // No user code runs under this lock, so a poisoned lock still holds a
        // consistent state.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn is_expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }

    /// The value and version, or `None` once removed.
    pub(crate) fn snapshot(&self) -> Option<(JsonObject, u64)> {
        let inner = self.lock();
        (!inner.removed).then(|| ((**inner.record.value()).clone(), inner.record.version()))
    }

    pub(crate) fn clients(&self) -> usize {
        self.lock().subscribers.len()
    }

    /// Adds a subscriber and queues STATE_CONNECTION_ESTABLISHED for it. `None` when
    /// the state was removed meanwhile.
    ///
    /// The snapshot is encoded once per version, and outside the lock: the subscriber
    /// is added first with its value (shared, not copied) and keeps what happens while
    /// the snapshot is encoded, to be queued after it.
    pub(crate) fn attach(
        &self,
        outbox: Outbox,
        session: Option<SessionKey>,
        last_sent: Option<u64>,
    ) -> Option<usize> {
        let (key, value, version) = {
            let mut inner = self.lock();
            let Inner {
                record,
                subscribers,
                removed,
                snapshot,
            } = &mut *inner;
            if *removed {
                return None;
            }
            if let Some(session) = &session {
                record.session_attached(session, last_sent);
            }
            let version = record.version();
            if let Some((encoded, frame)) = snapshot
                && *encoded == version
            {
                return Some(subscribers.insert(outbox, session, frame.clone()));
            }
            let key = subscribers.insert_pending(outbox, session);
            (key, Arc::clone(record.value()), version)
        };
        let frame: Utf8Bytes = ServerMessage::established_json(&value, Some(version)).into();
        drop(value);
        let mut inner = self.lock();
        if inner.removed {
            return None;
        }
        inner.subscribers.activate(key, frame.clone());
        if inner.record.version() == version {
            inner.snapshot = Some((version, frame));
        }
        Some(key)
    }

    /// Removes a subscriber. Returns how many clients are left, or `None` when it was
    /// not attached (or the state is gone).
    pub(crate) fn detach(&self, subscriber: usize) -> Option<usize> {
        let mut inner = self.lock();
        let session = inner.subscribers.remove(subscriber)?;
        if let Some(session) = session {
            inner.record.session_detached(&session);
        }
        Some(inner.subscribers.len())
    }

    /// `Ok` when the session never sent `request_id`; otherwise the answer it got.
    pub(crate) fn check(&self, session: &SessionKey, request_id: u64) -> Result<(), Failure> {
        self.lock().record.check(session, request_id)
    }

    /// Remembers that an update of `session` failed, so a retry fails the same way.
    pub(crate) fn record_failure(&self, session: &SessionKey, request_id: u64, failure: Failure) {
        self.lock()
            .record
            .record_failure(session, request_id, failure);
    }

    /// Applies `updates` and queues them for every subscriber. Returns the new version
    /// and the updates as applied.
    pub(crate) fn apply(
        &self,
        updates: JsonObject,
        origin: Option<Origin<'_>>,
    ) -> Result<(u64, Arc<JsonObject>), Failure> {
        let mut inner = self.lock();
        if inner.removed {
            return Err(Failure::StateGone(self.id.clone()));
        }
        let tracked = origin.and_then(|o| Some((o.session?, o.request_id?)));
        let version = inner.record.apply(&updates, tracked)?;
        let updates = Arc::new(updates);
        let echo = origin.and_then(|o| Some((o.subscriber, o.request_id?)));
        inner.snapshot = None;
        let reply = inner.subscribers.broadcast(&updates, version, echo);
        if let (Some((session, request_id)), Some(reply)) = (tracked, reply) {
            inner
                .record
                .record_applied(session, request_id, version, reply);
        }
        Ok((version, updates))
    }

    /// Marks the state removed, tells every subscriber with STATE_DOES_NOT_EXIST and
    /// detaches them all. `false` when it was already removed, or when it has more
    /// than `max_clients` clients (some attached since the caller decided).
    pub(crate) fn mark_removed(&self, message: &str, max_clients: usize) -> bool {
        let mut inner = self.lock();
        if inner.removed || inner.subscribers.len() > max_clients {
            return false;
        }
        inner.removed = true;
        inner.subscribers.remove_all(&self.id, message);
        inner.record.forget_sessions();
        inner.snapshot = None;
        true
    }
}
