//! One state: its stored part ([`StateRecord`]), its subscribers ([`Subscribers`]) and
//! its hooks, with the lock that orders everything that happens to it.
//!
//! Ordering: an update is applied and queued for every subscriber under the state's
//! lock, and a subscriber is added (with the snapshot it starts from) under the same
//! lock, so every client sees every update after its snapshot, once, in version order.
//! No user code runs under the lock.
//!
//! With a storage backend ([`crate::backend`]) an update is applied in memory and
//! submitted to the store under the lock, but reaches subscribers only once it is
//! saved: what happens to the state waits in [`Delivery`]s, in order, until the store
//! releases it. A client attaching meanwhile gets its snapshot after the updates it
//! contains are saved, so no client ever sees anything a crash could take back.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Instant, SystemTime};

use crate::wire::Frame;
use state_sync_protocol::{JsonObject, ServerMessage, Update};

use crate::backend::{Backend, Change, Release, StoredOutcome};
use crate::failure::Failure;
use crate::fanout::{Broadcast, Echo, Subscribers, frame};
use crate::options::StateHooks;
use crate::outbox::Outbox;
use crate::session_log::SessionKey;
use crate::storage::StateRecord;

mod replica;

pub(crate) use replica::Replica;
use replica::Shared;
#[cfg(feature = "redis")]
pub(crate) use replica::{Condition, NotReady, RESYNC_CLOSE_CODE};

/// Who sent an update being applied.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Origin<'a> {
    /// The sender's subscription, which gets the echo with the request id.
    pub(crate) subscriber: usize,
    pub(crate) request_id: Option<u64>,
    pub(crate) session: Option<&'a SessionKey>,
    /// The highest request id the session sent before it attached, when it said.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) floor: Option<u64>,
}

/// What waits for the store before it reaches subscribers.
enum Delivery {
    Update {
        ticket: u64,
        version: u64,
        change: Broadcast,
        /// The sender: its answer reaches it even when it re-attached meanwhile (its
        /// new subscription starts after this update).
        echo: Option<Echo>,
    },
    Snapshot {
        ticket: u64,
        subscriber: (usize, u64),
        frame: Frame,
    },
}

impl Delivery {
    fn ticket(&self) -> u64 {
        match self {
            Delivery::Update { ticket, .. } | Delivery::Snapshot { ticket, .. } => *ticket,
        }
    }
}

struct Inner {
    record: StateRecord,
    /// Shared through Redis: the incarnation, and the echoes waited for.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    shared: Shared,
    subscribers: Subscribers,
    removed: bool,
    /// STATE_CONNECTION_ESTABLISHED for the current version, once encoded.
    snapshot: Option<(u64, Frame)>,
    /// With a durable store: what waits for it, in order.
    deliveries: VecDeque<Delivery>,
}

/// What [`State::apply`] did.
#[derive(Debug)]
pub(crate) struct Applied {
    pub(crate) version: u64,
    pub(crate) updates: Arc<JsonObject>,
    /// With a durable store: the ticket to wait for before telling anybody.
    pub(crate) ticket: Option<u64>,
}

/// One state of a server.
pub(crate) struct State<K> {
    pub(crate) id: String,
    pub(crate) created_at: SystemTime,
    pub(crate) expires_at: Option<Instant>,
    pub(crate) hooks: StateHooks<K>,
    store: Option<Arc<dyn Backend>>,
    /// Shared through Redis: what this server adds to it (see [`replica`]).
    replica: Option<Replica>,
    /// Who is attached, and what they are doing.
    pub(crate) presence: Arc<crate::presence::Hub>,
    /// The label of its attached clients in the metrics (`None`: counted with the
    /// states not named).
    metrics_label: Option<Arc<str>>,
    me: Weak<State<K>>,
    inner: Mutex<Inner>,
}

impl<K: Send + Sync + 'static> State<K> {
    pub(crate) fn new(
        id: String,
        record: StateRecord,
        hooks: StateHooks<K>,
        (created_at, expires_at): (SystemTime, Option<Instant>),
        store: Option<Arc<dyn Backend>>,
        replica: Option<Replica>,
        (presence, metrics_label): (Arc<crate::presence::Hub>, Option<Arc<str>>),
    ) -> Arc<Self> {
        Arc::new_cyclic(|me| State {
            id,
            created_at,
            expires_at,
            hooks,
            store,
            replica,
            presence,
            metrics_label,
            me: me.clone(),
            inner: Mutex::new(Inner {
                record,
                shared: Shared::default(),
                subscribers: Subscribers::default(),
                removed: false,
                snapshot: None,
                deliveries: VecDeque::new(),
            }),
        })
    }

    /// The backend, when the state is kept beyond the process.
    pub(crate) fn store(&self) -> Option<&Arc<dyn Backend>> {
        self.store.as_ref()
    }

    /// Submits a change to the store, released to this state once saved.
    fn submit(&self, store: &dyn Backend, change: Change) -> u64 {
        let release = self.me.upgrade().map(|me| me as Arc<dyn Release>);
        store.submit(change, release)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // No user code runs under this lock, so a poisoned lock still holds a
        // consistent state.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether it was removed (its clients were told).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn is_removed(&self) -> bool {
        self.lock().removed
    }

    /// Whether it is shared with other servers through Redis.
    pub(crate) fn is_shared(&self) -> bool {
        self.replica.is_some()
    }

    pub(crate) fn is_expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }

    /// The value and version, or `None` once removed.
    pub(crate) fn snapshot(&self) -> Option<(JsonObject, u64)> {
        let inner = self.lock();
        (!inner.removed).then(|| ((**inner.record.value()).clone(), inner.record.version()))
    }

    /// The largest its value may grow, as JSON text.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn max_bytes(&self) -> usize {
        self.lock().record.max_bytes()
    }

    pub(crate) fn clients(&self) -> usize {
        self.lock().subscribers.len()
    }

    /// Adds a subscriber and queues STATE_CONNECTION_ESTABLISHED for it. Fails when
    /// the state was removed meanwhile, or its backend failed (what memory holds may
    /// not be saved, and nobody is shown what a restart would take back).
    ///
    /// The snapshot is encoded once per version, and outside the lock: the subscriber
    /// is added first with its value (shared, not copied) and keeps what happens while
    /// the snapshot is encoded, to be queued after it.
    pub(crate) fn attach(
        &self,
        outbox: Outbox,
        session: Option<SessionKey>,
        last_sent: Option<u64>,
        compact: bool,
    ) -> Result<usize, Failure> {
        let gone = || Failure::NoSuchState(self.id.clone());
        if self.store.as_ref().is_some_and(|store| store.failed()) {
            return Err(Failure::StoreUnusable(self.id.clone()));
        }
        let (key, value, version) = {
            let mut inner = self.lock();
            let Inner {
                record,
                subscribers,
                removed,
                snapshot,
                deliveries,
                ..
            } = &mut *inner;
            if *removed {
                return Err(gone());
            }
            // Shared through Redis, sessions are remembered there.
            if let Some(session) = session.as_ref().filter(|_| self.replica.is_none()) {
                record.session_attached(session, last_sent);
            }
            let version = record.version();
            crate::metrics::clients(self.metrics_label.as_ref(), 1.0);
            if let Some((encoded, frame)) = snapshot
                && *encoded == version
                && deliveries.is_empty()
            {
                return Ok(subscribers.insert(outbox, session, compact, frame.clone(), version));
            }
            let key = subscribers.insert_pending(outbox, session, compact, version);
            (key, Arc::clone(record.value()), version)
        };
        let frame: Frame = ServerMessage::established_json(&value, Some(version)).into();
        drop(value);
        let mut inner = self.lock();
        if inner.removed {
            return Err(gone());
        }
        let (subscriber, serial) = key;
        match inner.deliveries.back().map(Delivery::ticket) {
            // Some of what the snapshot holds is not saved yet: it follows that.
            Some(ticket) => {
                inner.subscribers.queued(subscriber, serial);
                inner.deliveries.push_back(Delivery::Snapshot {
                    ticket,
                    subscriber: key,
                    frame,
                });
            }
            None => {
                inner
                    .subscribers
                    .activate(subscriber, serial, frame.clone());
                if inner.record.version() == version {
                    inner.snapshot = Some((version, frame));
                }
            }
        }
        Ok(subscriber)
    }

    /// Removes a subscriber. Returns how many clients are left, or `None` when it was
    /// not attached (or the state is gone).
    pub(crate) fn detach(&self, subscriber: usize) -> Option<usize> {
        let mut inner = self.lock();
        let session = inner.subscribers.remove(subscriber)?;
        crate::metrics::clients(self.metrics_label.as_ref(), -1.0);
        if let Some(session) = session.filter(|_| self.replica.is_none()) {
            inner.record.session_detached(&session);
        }
        Some(inner.subscribers.len())
    }

    /// `Ok` when the session never sent `request_id`; otherwise the answer it got.
    pub(crate) fn check(&self, session: &SessionKey, request_id: u64) -> Result<(), Failure> {
        self.lock().record.check(session, request_id)
    }

    /// Remembers that an update of `session` failed, so a retry fails the same way.
    /// With a durable store, returns the ticket to wait for before answering.
    pub(crate) fn record_failure(
        &self,
        session: &SessionKey,
        request_id: u64,
        failure: Failure,
    ) -> Option<u64> {
        let mut inner = self.lock();
        let stored = self.store.as_ref().zip(failure.stored());
        inner.record.record_failure(session, request_id, failure);
        let (store, (reason, message)) = stored?;
        Some(self.submit(
            store.as_ref(),
            Change::Outcome {
                id: self.id.clone(),
                session: session.clone(),
                request_id,
                outcome: StoredOutcome::Failed(reason, message),
            },
        ))
    }

    /// How many updates and snapshots wait for the store.
    pub(crate) fn unsaved(&self) -> usize {
        self.lock().deliveries.len()
    }

    /// The ticket to wait for before `version` may be told (`None`: it is saved, or
    /// nothing is durable).
    pub(crate) fn pending_ticket(&self, version: u64) -> Option<u64> {
        let inner = self.lock();
        inner.deliveries.iter().find_map(|delivery| match delivery {
            Delivery::Update {
                ticket, version: v, ..
            } if *v >= version => Some(*ticket),
            _ => None,
        })
    }

    /// Applies `update` and queues what it did for every subscriber (with a durable
    /// store: submits it, and queues it for once it is saved). Subscribers receive the
    /// resulting value of every key it touched; a removed key is `null` there and
    /// listed in `removed`.
    pub(crate) fn apply(
        &self,
        update: &Update,
        origin: Option<Origin<'_>>,
    ) -> Result<Applied, Failure> {
        let mut inner = self.lock();
        if inner.removed {
            return Err(Failure::StateGone(self.id.clone()));
        }
        if let Some(store) = &self.store
            && store.failed()
        {
            return Err(Failure::StorageFailed("the store failed earlier".into()));
        }
        let tracked = origin.and_then(|o| Some((o.session?, o.request_id?)));
        let (version, resolved) = inner.record.apply(update, tracked)?;
        crate::metrics::update_applied();
        inner.snapshot = None;
        let change = Broadcast::new(resolved);
        let updates = Arc::clone(&change.updates);
        let echo = origin.and_then(|o| inner.subscribers.sender(o.subscriber, o.request_id?));
        let Some(store) = &self.store else {
            let reply = inner.subscribers.broadcast(&change, version, echo.as_ref());
            if let (Some((session, request_id)), Some(reply)) = (tracked, reply) {
                inner
                    .record
                    .record_applied(session, request_id, version, reply);
            }
            return Ok(Applied {
                version,
                updates,
                ticket: None,
            });
        };
        let entries = updates
            .iter()
            .filter(|(key, _)| !change.removed.contains(key))
            .map(|(key, value)| (key.clone(), value.to_string()))
            .collect();
        let id = self.id.clone();
        let mut ticket = self.submit(
            store.as_ref(),
            Change::Update {
                id,
                version,
                entries,
                removed: change.removed.clone(),
            },
        );
        if let Some((session, request_id)) = tracked {
            inner.record.record_version(session, request_id, version);
            ticket = self.submit(
                store.as_ref(),
                Change::Outcome {
                    id: self.id.clone(),
                    session: session.clone(),
                    request_id,
                    outcome: StoredOutcome::Applied(version),
                },
            );
        }
        inner.deliveries.push_back(Delivery::Update {
            ticket,
            version,
            change,
            echo,
        });
        Ok(Applied {
            version,
            updates,
            ticket: Some(ticket),
        })
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
        crate::metrics::states(-1.0);
        #[allow(clippy::cast_precision_loss)]
        crate::metrics::clients(
            self.metrics_label.as_ref(),
            -(inner.subscribers.len() as f64),
        );
        let unattached = frame(&ServerMessage::StateConnectionError {
            message: state_sync_protocol::texts::state_does_not_exist(&self.id),
        });
        inner.subscribers.remove_all(&self.id, message, &unattached);
        if let Some(store) = &self.store {
            self.submit(
                store.as_ref(),
                Change::Remove {
                    id: self.id.clone(),
                },
            );
        }
        inner.record.forget_sessions();
        inner.snapshot = None;
        drop(inner);
        self.presence.close();
        true
    }
}

impl<K: Send + Sync + 'static> Release for State<K> {
    fn release(&self, committed: u64, failed: bool) {
        let mut inner = self.lock();
        let Inner {
            subscribers,
            deliveries,
            ..
        } = &mut *inner;
        while let Some(delivery) = deliveries.front() {
            let saved = delivery.ticket() <= committed;
            if !saved && !failed {
                break;
            }
            let Some(delivery) = deliveries.pop_front() else {
                break;
            };
            match delivery {
                Delivery::Update {
                    version,
                    change,
                    echo,
                    ..
                } => {
                    if saved {
                        let reply = subscribers.broadcast(&change, version, echo.as_ref());
                        if let (None, Some(echo)) = (reply, echo) {
                            // The sender re-attached while it was being saved.
                            echo.answer(&change, version);
                        }
                    } else if let Some(echo) = echo {
                        // Not saved: its sender is told, nobody else sees it.
                        let failure = Failure::StorageFailed(
                            "the server's store failed; restart it once the disk is fixed".into(),
                        );
                        if let Some(answer) = failure.reply(Some(echo.request_id)) {
                            echo.reply(answer);
                        }
                    }
                }
                Delivery::Snapshot {
                    subscriber: (key, serial),
                    frame: snapshot,
                    ..
                } => {
                    if saved {
                        subscribers.activate(key, serial, snapshot);
                    } else {
                        let answer = frame(&ServerMessage::StateConnectionError {
                            message: format!(
                                "Could not connect to state {}: the server could not save it",
                                self.id
                            ),
                        });
                        if subscribers.abandon(key, serial, answer) {
                            crate::metrics::clients(self.metrics_label.as_ref(), -1.0);
                        }
                    }
                }
            }
        }
    }
}
