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
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

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

/// With Redis: where a state's presence tells the other servers about this server's
/// entries (a task writes them to Redis, in order).
pub(crate) struct Link {
    pub(crate) sender: mpsc::Sender<Outgoing>,
}

/// This server's entries of a state to write to Redis.
#[derive(Debug, Default)]
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) struct Outgoing {
    /// All of them (the others this server had there are removed).
    pub(crate) sync: bool,
    pub(crate) put: Vec<Present>,
    pub(crate) removed: Vec<String>,
}

/// A change of another server's entry, as Redis published it.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) enum RemoteChange {
    Join(Present),
    Update { id: String, presence: JsonObject },
    Leave { id: String },
}

#[cfg_attr(not(feature = "redis"), allow(dead_code))]
impl RemoteChange {
    /// Reads the changes `presence.lua` published (a JSON array).
    pub(crate) fn parse(text: &str) -> Result<Vec<RemoteChange>, serde_json::Error> {
        #[derive(serde::Deserialize)]
        #[serde(tag = "event", rename_all = "camelCase")]
        enum Wire {
            Join {
                id: String,
                identifier: String,
                user: Value,
                presence: JsonObject,
            },
            Update {
                id: String,
                presence: JsonObject,
            },
            Leave {
                id: String,
            },
        }
        let changes: Vec<Wire> = serde_json::from_str(text)?;
        Ok(changes
            .into_iter()
            .map(|change| match change {
                Wire::Join {
                    id,
                    identifier,
                    user,
                    presence,
                } => RemoteChange::Join(Present {
                    id,
                    identifier,
                    user,
                    presence,
                }),
                Wire::Update { id, presence } => RemoteChange::Update { id, presence },
                Wire::Leave { id } => RemoteChange::Leave { id },
            })
            .collect())
    }
}

/// Join and leave hook calls waiting to run, in order.
#[derive(Default)]
struct HookQueue {
    calls: std::collections::VecDeque<HookCall>,
    /// A task runs them.
    running: bool,
}

struct HookCall {
    hook: PresenceHook,
    present: Present,
    join: bool,
}

/// A join or leave hook.
pub(crate) type PresenceHook = Arc<dyn Fn(&Present) + Send + Sync>;

/// Why a SET_PRESENCE did nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PresenceRefusal {
    TooLarge { size: usize, max: usize },
    RateLimited { rate: u32 },
    NotShown { max: usize },
    IdentityTooLarge { max: usize },
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
            PresenceRefusal::IdentityTooLarge { max } => (
                PresenceFailureReason::TooLarge,
                format!(
                    "this client's public identity is over the limit of {max} bytes of JSON; \
                     this connection sees the others but is not shown"
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
    /// Its connection's queue, to close it when another connection of its session
    /// takes the entry while it still looks alive.
    outbox: Outbox,
    /// When it lingers: when it leaves.
    lingering: Option<Instant>,
    /// It may be shown once there is room (not when its public identity is too large).
    showable: bool,
}

struct Entry {
    id: Arc<str>,
    seq: u64,
    identifier: Arc<str>,
    user: Value,
    presence: JsonObject,
    /// Shown to others (the state had room when it joined, or since).
    shown: bool,
    /// Its connection, when it is on this server (else it is another server's, known
    /// through Redis).
    local: Option<Local>,
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
            identifier: self.identifier.to_string(),
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
    /// Boxed: the table's free slots (up to half of it) then cost a pointer each, not
    /// a whole entry (a state with 10,000 clients has 10,000 entries).
    entries: HashMap<Arc<str>, Box<Entry>>,
    /// Entry ids in the order they joined.
    order: BTreeMap<u64, Arc<str>>,
    next_seq: u64,
    /// Entries of this server shown, and not shown.
    shown: usize,
    hidden: usize,
    lingering: usize,
    /// Changes not sent yet, oldest first, and whether each is of an entry of this
    /// server (what other servers are told).
    pending: Vec<(Arc<str>, Kind, bool)>,
    /// With Redis: what Redis holds of this server's entries may differ from them (a
    /// write was dropped or failed): the next check writes them all.
    unsynced: bool,
    /// Snapshots sent so far.
    snapshots: u64,
    /// Entries of this server that joined since the last flush, with how many
    /// snapshots had been sent then: one that leaves before any other snapshot and
    /// before the flush was seen by nobody, and its join and leave are not sent (an
    /// attach and detach loop costs the others nothing).
    unannounced: HashMap<Arc<str>, u64>,
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
    /// Shared with the task that runs them, which outlives the hub when the state is
    /// removed (its leave calls still run).
    hooks: Arc<Mutex<HookQueue>>,
    /// With Redis: where this server's entries go.
    link: std::sync::OnceLock<Link>,
    me: Weak<Hub>,
    inner: Mutex<Inner>,
}

/// What [`Hub::join`] gives a connection: its entry.
#[derive(Debug, Clone)]
pub(crate) struct Membership {
    pub(crate) entry: Arc<str>,
    pub(crate) connection: u64,
    /// Shown to others when it joined.
    pub(crate) shown: bool,
}

/// How a connection joins a state's presence.
pub(crate) struct Joining {
    /// The connection's id among the server's.
    pub(crate) connection: u64,
    pub(crate) identifier: Arc<str>,
    pub(crate) session: Option<SessionKey>,
    pub(crate) user: Value,
    pub(crate) presence: JsonObject,
    pub(crate) outbox: Outbox,
    /// It asked for presence messages.
    pub(crate) watches: bool,
    /// Never to be shown (its public identity is over the size limit).
    pub(crate) hidden: bool,
}

/// Whether the entry is this connection's.
fn owns(entry: &Entry, membership: &Membership) -> bool {
    entry
        .local
        .as_ref()
        .is_some_and(|l| l.connection == membership.connection)
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
            hooks: Arc::default(),
            link: std::sync::OnceLock::new(),
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
    pub(crate) fn join(&self, joining: Joining) -> Option<Membership> {
        let Joining {
            connection,
            identifier,
            session,
            user,
            presence,
            outbox,
            watches,
            hidden,
        } = joining;
        let watcher = watches.then(|| outbox.clone());
        let mut inner = self.lock();
        if inner.closed {
            return None;
        }
        let now = Instant::now();
        let taken = session.as_ref().and_then(|session| {
            inner
                .entries
                .values()
                .find(|e| {
                    e.identifier == identifier
                        && e.local
                            .as_ref()
                            .is_some_and(|l| l.session.as_ref() == Some(session))
                })
                .map(|e| Arc::clone(&e.id))
        });
        let fresh = taken.is_none();
        let (id, change, hook, shown) = if let Some(id) = taken {
            let inner = &mut *inner;
            let room = inner.shown < self.config.max_entries;
            let entry = inner.entries.get_mut(&id)?;
            let local = entry.local.as_mut()?;
            let lingered = local.lingering.take().is_some();
            if !lingered && local.connection != connection {
                // Its connection still looks alive (a half-open one the server has not
                // found lost yet, or a client using one session twice): it would stay
                // attached without presence, so it is closed.
                local.outbox.close(
                    CloseCode::Policy,
                    "another connection of this session took its place in the state's presence",
                );
            }
            local.connection = connection;
            local.watcher = watcher.clone();
            local.outbox = outbox;
            local.showable = !hidden;
            // A new public identity is a new entry to the others (a join replaces it).
            let rejoined = entry.user != user;
            let changed = entry.presence != presence;
            entry.user = user;
            entry.presence = presence;
            // Shown again when it may be (its identity fits now, and there is room),
            // hidden when its new identity is over the limit.
            let was_shown = entry.shown;
            let shown = !hidden && (was_shown || room);
            entry.shown = shown;
            let change = match (was_shown, shown) {
                (true, true) if rejoined => Some(Kind::Join),
                (true, true) => changed.then_some(Kind::Update),
                (false, true) => Some(Kind::Join),
                (true, false) => Some(Kind::Leave),
                (false, false) => None,
            };
            if lingered {
                inner.lingering -= 1;
            }
            if was_shown && !shown {
                inner.shown -= 1;
                inner.hidden += 1;
                self.show_next(inner);
            } else if shown && !was_shown {
                inner.shown += 1;
                inner.hidden -= 1;
            }
            (id, change, None, shown)
        } else {
            let id = new_id();
            let seq = inner.next_seq;
            inner.next_seq += 1;
            let shown = !hidden && inner.shown < self.config.max_entries;
            let entry = Entry {
                id: Arc::clone(&id),
                seq,
                identifier,
                user,
                presence,
                shown,
                local: Some(Local {
                    connection,
                    session,
                    watcher: watcher.clone(),
                    outbox,
                    lingering: None,
                    showable: !hidden,
                }),
            };
            let present = entry.present();
            inner.order.insert(seq, Arc::clone(&id));
            inner.entries.insert(Arc::clone(&id), Box::new(entry));
            if shown {
                inner.shown += 1;
            } else {
                inner.hidden += 1;
            }
            let change = shown.then_some(Kind::Join);
            (
                id,
                change,
                self.on_join.clone().map(|hook| (hook, present)),
                shown,
            )
        };
        if let Some(watcher) = watcher {
            let others = inner
                .order
                .values()
                .filter_map(|other| inner.entries.get(other))
                .filter(|other| other.shown && other.id != id)
                .map(|entry| entry.wire())
                .collect();
            watcher.push(frame(&ServerMessage::Presence(PresenceSnapshot {
                state_identifier: self.state.clone(),
                own: id.to_string(),
                others,
            })));
            inner.snapshots += 1;
        }
        // After the snapshot: the others hear of this entry once it is in it. A new
        // entry nobody saw yet may go unannounced (not one taken over: it was seen).
        if change == Some(Kind::Join) && fresh {
            let snapshots = inner.snapshots;
            inner.unannounced.insert(Arc::clone(&id), snapshots);
        }
        if let Some(kind) = change {
            self.note(&mut inner, &id, kind, now);
        }
        drop(inner);
        if let Some((hook, present)) = hook {
            self.call(hook, present, true);
        }
        Some(Membership {
            entry: id,
            connection,
            shown,
        })
    }

    /// Sets an entry's presence (its size and rate are checked by the caller). An entry
    /// not shown keeps it for when it is, and is told it is not shown.
    pub(crate) fn set(
        &self,
        membership: &Membership,
        presence: JsonObject,
    ) -> Result<(), PresenceRefusal> {
        let mut inner = self.lock();
        let now = Instant::now();
        let Some(entry) = inner
            .entries
            .get_mut(&membership.entry)
            .filter(|e| owns(e, membership))
        else {
            // Taken over by a newer connection of the same session.
            return Err(PresenceRefusal::NotAttached);
        };
        let changed = entry.presence != presence;
        entry.presence = presence;
        if !entry.shown {
            return Err(self.not_shown(entry));
        }
        if changed {
            let id = Arc::clone(&entry.id);
            self.note(&mut inner, &id, Kind::Update, now);
        }
        Ok(())
    }

    /// Why an entry is not shown.
    fn not_shown(&self, entry: &Entry) -> PresenceRefusal {
        if entry.local.as_ref().is_some_and(|l| !l.showable) {
            PresenceRefusal::IdentityTooLarge {
                max: self.config.max_bytes,
            }
        } else {
            PresenceRefusal::NotShown {
                max: self.config.max_entries,
            }
        }
    }

    /// Why the connection's entry is not shown, when it is not.
    pub(crate) fn refusal(&self, membership: &Membership) -> Option<PresenceRefusal> {
        let inner = self.lock();
        let entry = inner.entries.get(&membership.entry)?;
        (!entry.shown).then(|| self.not_shown(entry))
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
            .is_some_and(|e| owns(e, membership));
        if !owned {
            return;
        }
        let grace = self.config.grace;
        if lost && !grace.is_zero() {
            let deadline = Instant::now() + grace;
            let too_many = inner.lingering >= MAX_LINGERING;
            if let Some(local) = inner
                .entries
                .get_mut(&membership.entry)
                .and_then(|e| e.local.as_mut())
            {
                local.watcher = None;
                local.lingering = Some(deadline);
            }
            inner.lingering += 1;
            if too_many {
                // The oldest lingering entry leaves now.
                let oldest = inner
                    .entries
                    .values()
                    .filter_map(|e| Some((e.local.as_ref()?.lingering?, Arc::clone(&e.id))))
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
        if !entry.shown && entry.local.is_some() {
            inner.hidden -= 1;
        }
        if entry.local.as_ref().is_some_and(|l| l.lingering.is_some()) {
            inner.lingering -= 1;
        }
        let snapshots = inner.snapshots;
        if inner.unannounced.remove(id) == Some(snapshots) {
            // Nobody heard of it: nobody hears of it leaving either (a check may have
            // written it to Redis: the next one removes it).
            inner.shown -= 1;
            inner.unsynced = true;
            inner.pending.retain(|(pending, _, _)| pending != id);
            self.show_next(inner);
            return Some(entry.present());
        }
        if entry.shown {
            if entry.local.is_some() {
                inner.shown -= 1;
            }
            self.note_from(
                inner,
                id,
                Kind::Leave,
                entry.local.is_some(),
                Instant::now(),
            );
            self.show_next(inner);
        }
        Some(entry.present())
    }

    /// There may be room: the oldest entry of this server not shown (for want of room)
    /// is shown now.
    fn show_next(&self, inner: &mut Inner) {
        if inner.shown >= self.config.max_entries || inner.hidden == 0 {
            return;
        }
        let next = inner
            .order
            .values()
            .filter_map(|id| inner.entries.get(id))
            .find(|e| {
                !e.shown
                    && e.local
                        .as_ref()
                        .is_some_and(|l| l.showable && l.lingering.is_none())
            })
            .map(|e| Arc::clone(&e.id));
        if let Some(id) = next {
            if let Some(entry) = inner.entries.get_mut(&id) {
                entry.shown = true;
            }
            inner.shown += 1;
            inner.hidden -= 1;
            self.note_from(inner, &id, Kind::Join, true, Instant::now());
        }
    }

    fn left(&self, removed: Option<Present>) {
        let Some(present) = removed else { return };
        // Its join hook has not run yet: neither runs (an attach and detach loop does
        // not fill the queue with calls nobody needs).
        if self.on_join.is_some() && self.cancel_join(&present.id) {
            return;
        }
        if let Some(hook) = self.on_leave.clone() {
            self.call(hook, present, false);
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
                owns(e, &membership)
                    && e.local
                        .as_ref()
                        .is_some_and(|l| l.lingering == Some(deadline))
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
        inner.hidden = 0;
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
            .map(|entry| entry.present())
            .collect()
    }

    /// Notes a change to send, and sends now or schedules the flush.
    fn note(&self, inner: &mut Inner, id: &Arc<str>, kind: Kind, now: Instant) {
        let local = inner.entries.get(id).is_none_or(|e| e.local.is_some());
        self.note_from(inner, id, kind, local, now);
    }

    /// Notes a change, of an entry of this server (`local`) or of another.
    fn note_from(&self, inner: &mut Inner, id: &Arc<str>, kind: Kind, local: bool, now: Instant) {
        inner.pending.push((Arc::clone(id), kind, local));
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
        inner.unannounced.clear();
        let mut sent: HashSet<&str> = HashSet::new();
        let mut changes = Vec::new();
        self.publish(inner, &pending);
        for (id, kind, _) in &pending {
            match kind {
                Kind::Leave => {
                    sent.remove(&**id);
                    changes.push(PresenceChange::Leave { id: id.to_string() });
                }
                Kind::Join | Kind::Update => {
                    if sent.contains(&**id) {
                        continue;
                    }
                    let Some(entry) = inner
                        .entries
                        .get(id)
                        .filter(|e| e.shown)
                        .map(|entry| entry.wire())
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
            if let Some(watcher) = entry.local.as_ref().and_then(|l| l.watcher.as_ref())
                && only.as_deref() != Some(&*entry.id)
            {
                watcher.push(message.clone());
            }
        }
    }
}

/// With Redis: the other servers' entries, and this server's in Redis.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
impl Hub {
    /// Links the presence of a shared state to the other servers' (through Redis).
    pub(crate) fn link(&self, link: Link) {
        let _ = self.link.set(link);
    }

    /// With Redis: tells the other servers about this server's entries that changed.
    fn publish(&self, inner: &mut Inner, pending: &[(Arc<str>, Kind, bool)]) {
        let Some(link) = self.link.get() else {
            return;
        };
        let mut outgoing = Outgoing::default();
        let mut seen = HashSet::new();
        for (id, kind, local) in pending.iter().rev() {
            if !local || !seen.insert(&**id) {
                continue;
            }
            // Only this server's entries (another server's under the same id is not
            // this server's to write).
            match inner
                .entries
                .get(id)
                .filter(|e| e.shown && e.local.is_some())
            {
                Some(entry) => outgoing.put.push(entry.present()),
                None if *kind == Kind::Leave => outgoing.removed.push(id.to_string()),
                None => {}
            }
        }
        if outgoing.put.is_empty() && outgoing.removed.is_empty() {
            return;
        }
        if link.sender.try_send(outgoing).is_err() {
            // Redis is slow: the next check writes them all.
            inner.unsynced = true;
        }
    }

    /// With Redis, at every check: writes all of this server's entries (refreshing
    /// their expiry, repairing what a dropped write left), which also sweeps the
    /// entries of servers that died. Nothing when there is nothing to say.
    pub(crate) fn tick(&self) {
        let Some(link) = self.link.get() else {
            return;
        };
        let mut inner = self.lock();
        if inner.entries.is_empty() && !inner.unsynced {
            return;
        }
        let put = inner
            .entries
            .values()
            .filter(|e| e.shown && e.local.is_some())
            .map(|entry| entry.present())
            .collect();
        let outgoing = Outgoing {
            sync: true,
            put,
            removed: Vec::new(),
        };
        inner.unsynced = link.sender.try_send(outgoing).is_err();
    }

    /// With Redis: a write of this server's entries failed; the next check repeats it.
    pub(crate) fn unsynced(&self) {
        self.lock().unsynced = true;
    }

    /// Changes of another server's entries, as Redis published them.
    pub(crate) fn apply_remote(&self, changes: Vec<RemoteChange>) {
        let mut inner = self.lock();
        if inner.closed {
            return;
        }
        let now = Instant::now();
        for change in changes {
            match change {
                RemoteChange::Join(present) => self.put_remote(&mut inner, present, now),
                RemoteChange::Update { id, presence } => {
                    let id: Arc<str> = Arc::from(id.as_str());
                    if let Some(entry) = inner.entries.get_mut(&id).filter(|e| e.local.is_none())
                        && entry.presence != presence
                    {
                        entry.presence = presence;
                        self.note_from(&mut inner, &id, Kind::Update, false, now);
                    }
                }
                RemoteChange::Leave { id } => {
                    let id: Arc<str> = Arc::from(id.as_str());
                    if inner.entries.get(&id).is_some_and(|e| e.local.is_none()) {
                        self.remove(&mut inner, &id);
                    }
                }
            }
        }
    }

    /// Every other server's entries, as Redis holds them now.
    pub(crate) fn replace_remote(&self, entries: Vec<Present>) {
        let mut inner = self.lock();
        if inner.closed {
            return;
        }
        let now = Instant::now();
        let keep: HashSet<&str> = entries.iter().map(|p| p.id.as_str()).collect();
        let gone: Vec<Arc<str>> = inner
            .entries
            .values()
            .filter(|e| e.local.is_none() && !keep.contains(&*e.id))
            .map(|e| Arc::clone(&e.id))
            .collect();
        for id in gone {
            self.remove(&mut inner, &id);
        }
        for present in entries {
            self.put_remote(&mut inner, present, now);
        }
    }

    /// Adds or changes another server's entry.
    fn put_remote(&self, inner: &mut Inner, present: Present, now: Instant) {
        let id: Arc<str> = Arc::from(present.id.as_str());
        match inner.entries.get_mut(&id) {
            Some(entry) if entry.local.is_some() => {}
            Some(entry) => {
                // A new public identity is a new entry to the clients (a join replaces
                // it); a new presence, an update.
                let kind = if entry.user != present.user {
                    Kind::Join
                } else if entry.presence != present.presence {
                    Kind::Update
                } else {
                    return;
                };
                entry.user = present.user;
                entry.presence = present.presence;
                self.note_from(inner, &id, kind, false, now);
            }
            None => {
                let seq = inner.next_seq;
                inner.next_seq += 1;
                inner.order.insert(seq, Arc::clone(&id));
                inner.entries.insert(
                    Arc::clone(&id),
                    Box::new(Entry {
                        id: Arc::clone(&id),
                        seq,
                        identifier: present.identifier.into(),
                        user: present.user,
                        presence: present.presence,
                        shown: true,
                        local: None,
                    }),
                );
                self.note_from(inner, &id, Kind::Join, false, now);
            }
        }
    }
}

impl Hub {
    /// Runs a join or leave hook, in order with the others of this state, in a task of
    /// its own; a hook that panics or hangs costs its call only. At most
    /// [`MAX_HOOK_CALLS`] wait; past that a call is dropped (and logged).
    fn call(&self, hook: PresenceHook, present: Present, join: bool) {
        let mut queue = self.hooks.lock().unwrap_or_else(PoisonError::into_inner);
        if queue.calls.len() >= MAX_HOOK_CALLS {
            tracing::warn!(state = %self.state, "a presence hook call was dropped: {MAX_HOOK_CALLS} wait for earlier ones");
            return;
        }
        queue.calls.push_back(HookCall {
            hook,
            present,
            join,
        });
        if queue.running {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            queue.calls.clear();
            return;
        };
        queue.running = true;
        let hooks = Arc::clone(&self.hooks);
        let limit = self.hook_timeout;
        runtime.spawn(async move {
            loop {
                let call = {
                    let mut queue = hooks.lock().unwrap_or_else(PoisonError::into_inner);
                    match queue.calls.pop_front() {
                        Some(call) => call,
                        None => {
                            queue.running = false;
                            return;
                        }
                    }
                };
                let HookCall { hook, present, .. } = call;
                let _ = run_hook("presence", limit, move || hook(&present)).await;
            }
        });
    }

    /// Takes back the join hook call of this entry when it has not run yet.
    fn cancel_join(&self, id: &str) -> bool {
        let mut queue = self.hooks.lock().unwrap_or_else(PoisonError::into_inner);
        let position = queue
            .calls
            .iter()
            .position(|call| call.join && call.present.id == id);
        position.and_then(|at| queue.calls.remove(at)).is_some()
    }
}
