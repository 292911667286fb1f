//! Presence: who is attached to a state, and what they are doing.
//!
//! Every connection attached to a state has an entry here ([`Present`]): an id the
//! server gives it, its client's public identity, and a small JSON object the client
//! sets. Connections that asked for presence when they attached (our clients do)
//! receive everyone else's entries (PRESENCE), then the changes (PRESENCE_CHANGED).
//!
//! What keeps it cheap and bounded:
//! - Changes are coalesced per state: the first change after a quiet interval is sent
//!   at once, later ones are gathered and sent together once per
//!   [`presence_interval`](crate::Builder::presence_interval), each entry's latest
//!   presence winning. A watcher gets one frame per interval, whatever the traffic.
//! - A presence object is at most [`max_presence_bytes`](crate::Builder::max_presence_bytes)
//!   of JSON; a connection sets it at most
//!   [`presence_rate`](crate::Builder::presence_rate) times per second (a burst of as
//!   many is allowed); a state shows at most
//!   [`max_presence_entries`](crate::Builder::max_presence_entries) entries (later
//!   connections are attached and see the others, but are not shown).
//! - A connection lost without a close lingers for
//!   [`presence_grace`](crate::Builder::presence_grace), so that a client reconnecting
//!   with the same session takes its entry back without leaving and joining again; at
//!   most [`MAX_LINGERING`] entries of a state linger (the oldest leave first).
//! - Its own lock, apart from the state's: presence never waits for an update, nor an
//!   update for presence.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use serde_json::Value;
use state_sync_protocol::{
    DEFAULT_MAX_PRESENCE_BYTES, JsonObject, PRESENCE_INTERVAL, PresenceChange, PresenceChanged,
    PresenceEntry, PresenceFailed, PresenceFailureReason, PresenceSnapshot, ServerMessage,
};
use tokio::sync::mpsc;

use crate::fanout::frame;
use crate::hooks::run_hook;
use crate::outbox::Outbox;
use crate::session_log::SessionKey;

/// Most entries of one state that linger after their connection was lost.
pub const MAX_LINGERING: usize = 256;

/// Most calls of a state's join and leave hooks waiting to run; past that they are
/// dropped (and logged): a hook that hangs must not make the server hold every
/// join and leave of a busy state.
const MAX_HOOK_CALLS: usize = 1024;

/// Most changes gathered for one flush; past that they are sent at once.
const MAX_PENDING_CHANGES: usize = 4096;

/// One entry of a state's presence, as the server API and the join and leave hooks
/// see it.
#[derive(Debug, Clone, PartialEq)]
pub struct Present {
    /// The entry id clients see (unique among the state's entries).
    pub id: String,
    /// The client's `identifier` (what the authorization middleware accepted); not
    /// sent to other clients.
    pub identifier: String,
    /// The client's public identity, as the state's
    /// [`public_identity`](crate::StateOptions::public_identity) hook made it (by
    /// default the identifier).
    pub user: Value,
    /// What the client set (`{}` until it sets something).
    pub presence: JsonObject,
}

/// Presence settings of a server (see the [`Builder`](crate::Builder) methods).
#[derive(Debug, Clone, Copy)]
pub(crate) struct PresenceConfig {
    pub(crate) grace: Duration,
    pub(crate) interval: Duration,
    pub(crate) max_bytes: usize,
    pub(crate) rate: u32,
    pub(crate) max_entries: usize,
}

impl Default for PresenceConfig {
    fn default() -> Self {
        PresenceConfig {
            grace: Duration::from_secs(5),
            interval: PRESENCE_INTERVAL,
            max_bytes: DEFAULT_MAX_PRESENCE_BYTES,
            rate: 30,
            max_entries: 512,
        }
    }
}

/// A join or leave hook.
pub(crate) type PresenceHook = Arc<dyn Fn(&Present) + Send + Sync>;

/// Why a SET_PRESENCE did nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PresenceRefusal {
    TooLarge { size: usize, max: usize },
    RateLimited { rate: u32 },
    NotShown { max: usize },
    NotAttached,
}

impl PresenceRefusal {
    pub(crate) fn reply(&self) -> ServerMessage {
        let (reason, what) = match self {
            PresenceRefusal::TooLarge { size, max } => (
                PresenceFailureReason::TooLarge,
                format!("the presence is {size} bytes of JSON, over the limit of {max} bytes"),
            ),
            PresenceRefusal::RateLimited { rate } => (
                PresenceFailureReason::RateLimited,
                format!(
                    "more than {rate} presence updates per second from this connection; this \
                     one was dropped (send the latest again later)"
                ),
            ),
            PresenceRefusal::NotShown { max } => (
                PresenceFailureReason::Full,
                format!(
                    "the state already shows {max} present clients; this connection sees them \
                     but is not shown"
                ),
            ),
            PresenceRefusal::NotAttached => (
                PresenceFailureReason::NotAttached,
                "the connection is not attached to a state; attach first".to_owned(),
            ),
        };
        ServerMessage::PresenceFailed(PresenceFailed {
            message: format!("Could not set presence: {what}"),
            reason,
        })
    }
}

/// An entry's connection on this server.
struct Local {
    /// The connection that owns the entry (a client reconnecting with the same
    /// session takes it over).
    connection: u64,
    session: Option<SessionKey>,
    /// Where its presence messages go; `None` when it did not ask for them, and while
    /// it lingers.
    watcher: Option<Outbox>,
    /// When it lingers: when it leaves.
    lingering: Option<Instant>,
    tokens: f64,
    refilled: Instant,
}

struct Entry {
    id: Arc<str>,
    seq: u64,
    identifier: String,
    user: Value,
    presence: JsonObject,
    /// Shown to others (the state had room when it joined).
    shown: bool,
    local: Local,
}

impl Entry {
    fn wire(&self) -> PresenceEntry {
        PresenceEntry {
            id: self.id.to_string(),
            user: self.user.clone(),
            presence: self.presence.clone(),
        }
    }

    fn present(&self) -> Present {
        Present {
            id: self.id.to_string(),
            identifier: self.identifier.clone(),
            user: self.user.clone(),
            presence: self.presence.clone(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Join,
    Update,
    Leave,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<Arc<str>, Entry>,
    /// Entry ids in the order they joined.
    order: BTreeMap<u64, Arc<str>>,
    next_seq: u64,
    shown: usize,
    lingering: usize,
    /// Changes not sent yet, oldest first.
    pending: Vec<(Arc<str>, Kind)>,
    /// A flush is scheduled.
    scheduled: bool,
    last_flush: Option<Instant>,
    /// The state was removed: nothing joins any more.
    closed: bool,
}

/// The presence of one state.
pub(crate) struct Hub {
    state: String,
    config: PresenceConfig,
    on_join: Option<PresenceHook>,
    on_leave: Option<PresenceHook>,
    hook_timeout: Duration,
    hooks: Mutex<Option<mpsc::Sender<(PresenceHook, Present)>>>,
    me: Weak<Hub>,
    inner: Mutex<Inner>,
}

/// What [`Hub::join`] gives a connection: its entry.
#[derive(Debug, Clone)]
pub(crate) struct Membership {
    pub(crate) entry: Arc<str>,
    pub(crate) connection: u64,
}

/// A new entry's id: random, so that ids of several servers do not collide and say
/// nothing about the connection.
fn new_id() -> Arc<str> {
    let uuid = uuid::Uuid::new_v4().simple().to_string();
    Arc::from(&uuid[..16])
}

impl Hub {
    pub(crate) fn new(
        state: String,
        config: PresenceConfig,
        on_join: Option<PresenceHook>,
        on_leave: Option<PresenceHook>,
        hook_timeout: Duration,
    ) -> Arc<Self> {
        Arc::new_cyclic(|me| Hub {
            state,
            config,
            on_join,
            on_leave,
            hook_timeout,
            hooks: Mutex::new(None),
            me: me.clone(),
            inner: Mutex::new(Inner::default()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // No user code runs under this lock.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds a connection's entry (or gives it the entry its session left lingering,
    /// or still holds on a connection not known to be lost yet) and, when it watches,
    /// queues the snapshot of everybody else for it. `None` once the state was removed.
    pub(crate) fn join(
        &self,
        connection: u64,
        identifier: &str,
        session: Option<SessionKey>,
        user: Value,
        presence: JsonObject,
        watcher: Option<Outbox>,
    ) -> Option<Membership> {
        let mut inner = self.lock();
        if inner.closed {
            return None;
        }
        let now = Instant::now();
        let taken = session.as_ref().and_then(|session| {
            inner
                .entries
                .values()
                .find(|e| e.local.session.as_ref() == Some(session) && e.identifier == identifier)
                .map(|e| Arc::clone(&e.id))
        });
        let (id, change, hook) = if let Some(id) = taken {
            let inner = &mut *inner;
            let entry = inner.entries.get_mut(&id)?;
            if entry.local.lingering.take().is_some() {
                inner.lingering -= 1;
            }
            entry.local.connection = connection;
            entry.local.watcher = watcher.clone();
            entry.user = user;
            let changed = entry.presence != presence;
            entry.presence = presence;
            let change = (changed && entry.shown).then_some(Kind::Update);
            (id, change, None)
        } else {
            let id = new_id();
            let seq = inner.next_seq;
            inner.next_seq += 1;
            let shown = inner.shown < self.config.max_entries;
            let entry = Entry {
                id: Arc::clone(&id),
                seq,
                identifier: identifier.to_owned(),
                user,
                presence,
                shown,
                local: Local {
                    connection,
                    session,
                    watcher: watcher.clone(),
                    lingering: None,
                    tokens: f64::from(self.config.rate),
                    refilled: now,
                },
            };
            let present = entry.present();
            inner.order.insert(seq, Arc::clone(&id));
            inner.entries.insert(Arc::clone(&id), entry);
            if shown {
                inner.shown += 1;
            }
            let change = shown.then_some(Kind::Join);
            (id, change, self.on_join.clone().map(|hook| (hook, present)))
        };
        if let Some(watcher) = watcher {
            let others = inner
                .order
                .values()
                .filter_map(|other| inner.entries.get(other))
                .filter(|other| other.shown && other.id != id)
                .map(Entry::wire)
                .collect();
            watcher.push(frame(&ServerMessage::Presence(PresenceSnapshot {
                state_identifier: self.state.clone(),
                own: id.to_string(),
                others,
            })));
        }
        // After the snapshot: the others hear of this entry once it is in it.
        if let Some(kind) = change {
            self.note(&mut inner, &id, kind, now);
        }
        drop(inner);
        if let Some((hook, present)) = hook {
            self.call(hook, present);
        }
        Some(Membership {
            entry: id,
            connection,
        })
    }

    /// Sets an entry's presence (its size is checked by the caller).
    pub(crate) fn set(
        &self,
        membership: &Membership,
        presence: JsonObject,
    ) -> Result<(), PresenceRefusal> {
        let mut inner = self.lock();
        let now = Instant::now();
        let rate = self.config.rate;
        let Some(entry) = inner
            .entries
            .get_mut(&membership.entry)
            .filter(|e| e.local.connection == membership.connection)
        else {
            // Taken over by a newer connection of the same session.
            return Err(PresenceRefusal::NotAttached);
        };
        let local = &mut entry.local;
        let elapsed = now.saturating_duration_since(local.refilled).as_secs_f64();
        local.tokens = (local.tokens + elapsed * f64::from(rate)).min(f64::from(rate));
        local.refilled = now;
        if local.tokens < 1.0 {
            return Err(PresenceRefusal::RateLimited { rate });
        }
        local.tokens -= 1.0;
        if !entry.shown {
            return Err(PresenceRefusal::NotShown {
                max: self.config.max_entries,
            });
        }
        if entry.presence != presence {
            entry.presence = presence;
            let id = Arc::clone(&entry.id);
            self.note(&mut inner, &id, Kind::Update, now);
        }
        Ok(())
    }

    /// The connection left its entry: at once (`lost` false: it detached or closed),
    /// or after the grace period (`lost`: its connection failed), unless its session
    /// takes the entry back meanwhile. Nothing happens when another connection took
    /// the entry over.
    pub(crate) fn leave(&self, membership: &Membership, lost: bool) {
        let mut inner = self.lock();
        let owned = inner
            .entries
            .get(&membership.entry)
            .is_some_and(|e| e.local.connection == membership.connection);
        if !owned {
            return;
        }
        let grace = self.config.grace;
        if lost && !grace.is_zero() {
            let deadline = Instant::now() + grace;
            let too_many = inner.lingering >= MAX_LINGERING;
            if let Some(entry) = inner.entries.get_mut(&membership.entry) {
                entry.local.watcher = None;
                entry.local.lingering = Some(deadline);
            }
            inner.lingering += 1;
            if too_many {
                // The oldest lingering entry leaves now.
                let oldest = inner
                    .entries
                    .values()
                    .filter_map(|e| Some((e.local.lingering?, Arc::clone(&e.id))))
                    .min();
                if let Some((_, id)) = oldest {
                    let removed = self.remove(&mut inner, &id);
                    drop(inner);
                    self.left(removed);
                    inner = self.lock();
                }
            }
            drop(inner);
            self.expire_after(membership.clone(), deadline);
            return;
        }
        let removed = self.remove(&mut inner, &membership.entry);
        drop(inner);
        self.left(removed);
    }

    /// Removes an entry, noting its leave; the entry, for the leave hook.
    fn remove(&self, inner: &mut Inner, id: &Arc<str>) -> Option<Present> {
        let entry = inner.entries.remove(id)?;
        inner.order.remove(&entry.seq);
        if entry.local.lingering.is_some() {
            inner.lingering -= 1;
        }
        if entry.shown {
            inner.shown -= 1;
            self.note(inner, id, Kind::Leave, Instant::now());
        }
        Some(entry.present())
    }

    fn left(&self, removed: Option<Present>) {
        if let (Some(present), Some(hook)) = (removed, self.on_leave.clone()) {
            self.call(hook, present);
        }
    }

    /// After the grace period: the entry leaves unless its session took it back.
    fn expire_after(&self, membership: Membership, deadline: Instant) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let hub = self.me.clone();
        runtime.spawn(async move {
            tokio::time::sleep_until(deadline.into()).await;
            let Some(hub) = hub.upgrade() else { return };
            let mut inner = hub.lock();
            let expired = inner.entries.get(&membership.entry).is_some_and(|e| {
                e.local.connection == membership.connection && e.local.lingering == Some(deadline)
            });
            if expired {
                let removed = hub.remove(&mut inner, &membership.entry);
                drop(inner);
                hub.left(removed);
            }
        });
    }

    /// The state was removed: every entry goes (its watchers were told the state is
    /// gone), and nothing joins any more.
    pub(crate) fn close(&self) {
        let mut inner = self.lock();
        inner.closed = true;
        inner.pending.clear();
        inner.order.clear();
        inner.shown = 0;
        inner.lingering = 0;
        let removed: Vec<Present> = inner.entries.drain().map(|(_, e)| e.present()).collect();
        drop(inner);
        for present in removed {
            self.left(Some(present));
        }
    }

    /// Everyone present, in the order they joined (lingering entries included, entries
    /// not shown to clients left out).
    pub(crate) fn present(&self) -> Vec<Present> {
        let inner = self.lock();
        inner
            .order
            .values()
            .filter_map(|id| inner.entries.get(id))
            .filter(|e| e.shown)
            .map(Entry::present)
            .collect()
    }

    /// Notes a change to send, and sends now or schedules the flush.
    fn note(&self, inner: &mut Inner, id: &Arc<str>, kind: Kind, now: Instant) {
        inner.pending.push((Arc::clone(id), kind));
        if inner.scheduled {
            if inner.pending.len() >= MAX_PENDING_CHANGES {
                self.flush(inner);
            }
            return;
        }
        let due = inner
            .last_flush
            .map_or(now, |last| last + self.config.interval);
        if due <= now {
            self.flush(inner);
            return;
        }
        inner.scheduled = true;
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.flush(inner);
            return;
        };
        let hub = self.me.clone();
        runtime.spawn(async move {
            tokio::time::sleep_until(due.into()).await;
            if let Some(hub) = hub.upgrade() {
                let mut inner = hub.lock();
                hub.flush(&mut inner);
            }
        });
    }

    /// Sends the gathered changes to every watcher, each entry's latest presence
    /// winning.
    fn flush(&self, inner: &mut Inner) {
        inner.scheduled = false;
        inner.last_flush = Some(Instant::now());
        let pending = std::mem::take(&mut inner.pending);
        let mut sent: HashSet<&str> = HashSet::new();
        let mut changes = Vec::new();
        for (id, kind) in &pending {
            match kind {
                Kind::Leave => {
                    sent.remove(&**id);
                    changes.push(PresenceChange::Leave { id: id.to_string() });
                }
                Kind::Join | Kind::Update => {
                    if sent.contains(&**id) {
                        continue;
                    }
                    let Some(entry) = inner.entries.get(id).filter(|e| e.shown).map(Entry::wire)
                    else {
                        continue;
                    };
                    sent.insert(id);
                    changes.push(if *kind == Kind::Join {
                        PresenceChange::Join(entry)
                    } else {
                        PresenceChange::Update {
                            id: entry.id,
                            presence: entry.presence,
                        }
                    });
                }
            }
        }
        if changes.is_empty() {
            return;
        }
        // One frame for every watcher: a watcher's own changes are in it (clients skip
        // them), but a frame of nothing but its own changes is not sent to it.
        let first = changes[0].id().to_owned();
        let only = changes
            .iter()
            .all(|change| change.id() == first)
            .then_some(first);
        let message = frame(&ServerMessage::PresenceChanged(PresenceChanged { changes }));
        for entry in inner.entries.values() {
            if let Some(watcher) = &entry.local.watcher
                && only.as_deref() != Some(&*entry.id)
            {
                watcher.push(message.clone());
            }
        }
    }

    /// Runs a join or leave hook, in order with the others of this state, in a task of
    /// its own; a hook that panics or hangs costs its call only.
    fn call(&self, hook: PresenceHook, present: Present) {
        let mut hooks = self.hooks.lock().unwrap_or_else(PoisonError::into_inner);
        if hooks.is_none() {
            let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                return;
            };
            let (tx, mut rx) = mpsc::channel::<(PresenceHook, Present)>(MAX_HOOK_CALLS);
            let limit = self.hook_timeout;
            runtime.spawn(async move {
                while let Some((hook, present)) = rx.recv().await {
                    let _ = run_hook("presence", limit, move || hook(&present)).await;
                }
            });
            *hooks = Some(tx);
        }
        if let Some(tx) = hooks.as_ref()
            && tx.try_send((hook, present)).is_err()
        {
            tracing::warn!(state = %self.state, "a presence hook call was dropped: {MAX_HOOK_CALLS} wait for earlier ones");
        }
    }
}
