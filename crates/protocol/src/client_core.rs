//! The logic of a client, without I/O or timers: what to send, what the local state
//! is, which updates are pending, and what to tell the application. Both clients (the
//! native one and the browser one) drive a [`ClientCore`] from their transport; they
//! differ only in how they move frames and wait.
//!
//! The core implements the reconnect-and-resync and exactly-once rules of
//! `docs/protocol.md`: every update gets a request id in a session; unacknowledged
//! updates are resent after a reconnect (the server answers duplicates with their
//! first outcome); every attach names the highest request id sent to its state
//! (`lastSent`), so that a server that forgot the session does not apply a resent one
//! twice; a re-attach replaces the local state and reports what changed. An answer
//! that cannot be read still settles what waits for it (`unreadable`).

use std::collections::VecDeque;
use std::sync::Arc;

use serde_json::Value;

use crate::update::append_in_place;

use crate::{
    ClientMessage, ConnectToState, DEDUP_WINDOW, Event, FailureReason, JsonObject, Operation,
    PRESENCE_INTERVAL, PresenceChange, PresenceChanged, PresenceEntry, PresenceEvent,
    PresenceFailed, PresenceSnapshot, ServerMessage, ServerMessageError, SetPresence,
    StateConnectionEstablished, StateRemoved, StateUpdated, Update, UpdateFailed, UpdateFailure,
    UpdateState, diff, shallow_merge,
};

/// Largest UPDATE_STATE frame a client sends by default: the server's default limit.
pub const DEFAULT_MAX_FRAME: usize = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Disconnected,
    Connected,
    Attaching,
    Attached,
}

#[derive(Debug)]
struct Pending {
    request_id: u64,
    update: Update,
    sent: bool,
}

/// A client's state machine: feed it what happens, send what it says.
#[derive(Debug)]
pub struct ClientCore {
    session: String,
    target: Option<String>,
    phase: Phase,
    /// CONNECT_TO_STATE frames sent on this connection and not answered yet; only the
    /// answer to the last one counts.
    attaches_in_flight: u32,
    attached_before: bool,
    /// The highest request id sent in this session to the target state since the
    /// client started targeting it; sent with every attach (`lastSent`).
    last_sent: Option<u64>,
    /// A text frame arrived on this connection.
    heard: bool,
    state: JsonObject,
    version: Option<u64>,
    legacy: bool,
    next_request_id: u64,
    pending: VecDeque<Pending>,
    max_frame: usize,
    /// Whether somebody looks at [`Event::Updated`]: without, appended arrays are not
    /// copied into it.
    observed: bool,
    presence: Presence,
}

/// The client's presence, and what it knows of the others'.
#[derive(Debug, Default)]
struct Presence {
    /// What the client set (sent with every attach).
    mine: JsonObject,
    /// Set since it was last sent.
    changed: bool,
    /// Waiting for [`ClientCore::presence_due`]: nothing is sent until then.
    throttled: bool,
    /// This connection's entry id, from the last snapshot.
    own: Option<String>,
    /// A snapshot of the target state arrived since the last attach was sent: changes
    /// apply.
    synced: bool,
    /// PRESENCE frames still to come on this connection (one per attach, unless it is
    /// refused): only the last one's counts, as for the answers to attaches.
    awaited: u32,
    /// Everybody else, in the order they joined.
    others: Vec<PresenceEntry>,
}

impl ClientCore {
    /// A core for a new client; `session` must be unique to this client (a random UUID).
    pub fn new(session: impl Into<String>) -> Self {
        ClientCore {
            session: session.into(),
            target: None,
            phase: Phase::Disconnected,
            attaches_in_flight: 0,
            attached_before: false,
            last_sent: None,
            heard: false,
            state: JsonObject::new(),
            version: None,
            legacy: false,
            next_request_id: 1,
            pending: VecDeque::new(),
            max_frame: DEFAULT_MAX_FRAME,
            observed: true,
            presence: Presence::default(),
        }
    }

    /// Refuse, without sending them, updates whose frame is larger than this (the
    /// server closes a connection that sends a frame over its limit). Default:
    /// [`DEFAULT_MAX_FRAME`].
    pub fn with_max_frame(mut self, bytes: usize) -> Self {
        self.max_frame = bytes;
        self
    }

    /// Tells whether anybody looks at [`Event::Updated`] (listeners, streams). Without
    /// (`false`), an atomic append is applied to the local array in place and the
    /// event carries only the other keys, so that a long list costs nothing per
    /// append. Default: `true`.
    pub fn set_observed(&mut self, observed: bool) {
        self.observed = observed;
    }

    /// The local copy of the state.
    pub fn state(&self) -> &JsonObject {
        &self.state
    }

    /// The local copy's version (`None` before attaching, or with the original server).
    pub fn version(&self) -> Option<u64> {
        self.version
    }

    /// The state the client is (or wants to be) attached to.
    pub fn state_identifier(&self) -> Option<&str> {
        self.target.as_deref()
    }

    /// Whether the client is attached right now.
    pub fn is_attached(&self) -> bool {
        self.phase == Phase::Attached
    }

    /// Whether the server speaks only the original protocol (known once attached).
    pub fn is_legacy_server(&self) -> bool {
        self.legacy
    }

    /// Updates not yet acknowledged, sent or not.
    pub fn pending_updates(&self) -> usize {
        self.pending.len()
    }

    /// The others present in the attached state, in the order they joined (as of the
    /// last thing the server said; kept while reconnecting).
    pub fn others(&self) -> &[PresenceEntry] {
        &self.presence.others
    }

    /// This client's presence, as last set.
    pub fn my_presence(&self) -> &JsonObject {
        &self.presence.mine
    }

    /// This connection's presence entry id in the attached state (what the others
    /// see as its `id`), once the server said.
    pub fn presence_id(&self) -> Option<&str> {
        self.presence.own.as_deref()
    }

    /// Sets this client's presence in its state (the whole object; others see it
    /// replace the previous one). It is sent at once when possible, at most once per
    /// [`PRESENCE_INTERVAL`] (later changes wait for [`ClientCore::presence_due`], the
    /// latest winning), and with every (re-)attach. The original server has no
    /// presence: there it is kept and never sent.
    pub fn set_presence(&mut self, presence: JsonObject) -> Vec<Event> {
        let mut events = Vec::new();
        if presence != self.presence.mine {
            self.presence.mine = presence;
            self.presence.changed = true;
            self.flush_presence(&mut events);
        }
        events
    }

    /// The delay of an [`Event::PresenceDue`] has passed: the presence set since the
    /// last one was sent is sent now.
    pub fn presence_due(&mut self) -> Vec<Event> {
        let mut events = Vec::new();
        self.presence.throttled = false;
        self.flush_presence(&mut events);
        events
    }

    /// Sends the presence when it changed since it was last sent, the client is
    /// attached, and the interval since the last one has passed.
    fn flush_presence(&mut self, events: &mut Vec<Event>) {
        let presence = &mut self.presence;
        if !presence.changed || presence.throttled || self.phase != Phase::Attached || self.legacy {
            return;
        }
        presence.changed = false;
        presence.throttled = true;
        let message = ClientMessage::SetPresence(SetPresence {
            presence: presence.mine.clone(),
        });
        events.push(Event::Send(message.to_json()));
        events.push(Event::PresenceDue(PRESENCE_INTERVAL));
    }

    /// Forgets the others (the client left their state).
    fn forget_others(&mut self, events: &mut Vec<Event>) {
        self.presence.synced = false;
        self.presence.own = None;
        if !self.presence.others.is_empty() {
            self.presence.others.clear();
            events.push(Event::Presence(PresenceEvent::Synced(Vec::new())));
        }
    }

    fn on_presence(&mut self, snapshot: PresenceSnapshot, events: &mut Vec<Event>) {
        self.presence.awaited = self.presence.awaited.saturating_sub(1);
        // The snapshot of an attach superseded by a later one (of this state or
        // another): its changes would be applied to the wrong list.
        if self.presence.awaited > 0
            || self.target.as_deref() != Some(snapshot.state_identifier.as_str())
        {
            return;
        }
        let PresenceSnapshot { own, others, .. } = snapshot;
        let others: Vec<PresenceEntry> = others.into_iter().filter(|e| e.id != own).collect();
        self.presence.own = Some(own);
        self.presence.synced = true;
        self.presence.others.clone_from(&others);
        events.push(Event::Presence(PresenceEvent::Synced(others)));
    }

    fn on_presence_changed(&mut self, changed: PresenceChanged, events: &mut Vec<Event>) {
        let presence = &mut self.presence;
        if !presence.synced {
            // Changes of a state being left, or covered by the snapshot to come.
            return;
        }
        for change in changed.changes {
            if presence.own.as_deref() == Some(change.id()) {
                continue;
            }
            let index = presence.others.iter().position(|e| e.id == change.id());
            match (change, index) {
                (PresenceChange::Join(entry), None) => {
                    presence.others.push(entry.clone());
                    events.push(Event::Presence(PresenceEvent::Joined(entry)));
                }
                (PresenceChange::Join(entry), Some(index)) => {
                    if presence.others[index] != entry {
                        presence.others[index] = entry.clone();
                        events.push(Event::Presence(PresenceEvent::Updated(entry)));
                    }
                }
                (
                    PresenceChange::Update {
                        presence: value, ..
                    },
                    Some(index),
                ) => {
                    let entry = &mut presence.others[index];
                    if entry.presence != value {
                        entry.presence = value;
                        events.push(Event::Presence(PresenceEvent::Updated(entry.clone())));
                    }
                }
                (PresenceChange::Leave { .. }, Some(index)) => {
                    let entry = presence.others.remove(index);
                    events.push(Event::Presence(PresenceEvent::Left(entry)));
                }
                (PresenceChange::Update { .. } | PresenceChange::Leave { .. }, None) => {}
            }
        }
    }

    /// Sends CONNECT_TO_STATE for the target, if there is one and a connection.
    fn attach(&mut self, events: &mut Vec<Event>) {
        let Some(state_identifier) = self.target.clone() else {
            return;
        };
        if self.phase == Phase::Disconnected {
            return;
        }
        let message = ClientMessage::ConnectToState(ConnectToState {
            state_identifier,
            session: Some(self.session.clone()),
            last_sent: self.last_sent,
            accepts_ops: true,
            presence: Some(self.presence.mine.clone()),
        });
        self.presence.changed = false;
        self.presence.synced = false;
        self.presence.awaited += 1;
        self.phase = Phase::Attaching;
        self.attaches_in_flight += 1;
        events.push(Event::Send(message.to_json()));
    }

    /// Fails every pending update: `Unconfirmed` for those already sent, `failure`
    /// for the others.
    fn fail_all(&mut self, failure: &UpdateFailure, events: &mut Vec<Event>) {
        for pending in self.pending.drain(..) {
            let failure = if pending.sent {
                UpdateFailure::Unconfirmed
            } else {
                failure.clone()
            };
            events.push(Event::Failed {
                request_id: pending.request_id,
                failure,
            });
        }
    }

    /// Leaves the target state: nothing is attached any more.
    fn detach(&mut self, failure: &UpdateFailure, events: &mut Vec<Event>) {
        self.fail_all(failure, events);
        self.forget_others(events);
        self.target = None;
        self.attached_before = false;
        self.last_sent = None;
        if self.phase != Phase::Disconnected {
            self.phase = Phase::Connected;
        }
    }

    fn frame(&self, pending: &Pending) -> String {
        let update = &pending.update;
        if self.legacy {
            return ClientMessage::UpdateState(UpdateState {
                updates: self.legacy_updates(update),
                request_id: None,
                ops: Vec::new(),
                if_version: None,
            })
            .to_json();
        }
        ClientMessage::UpdateState(UpdateState {
            updates: update.set.clone(),
            request_id: Some(pending.request_id),
            ops: update.ops.clone(),
            if_version: update.expected_version,
        })
        .to_json()
    }

    /// What the original server can be sent for `update`: it knows no operations and
    /// no versions, so operations are resolved against the local state (not atomic:
    /// the original cannot do better) and a removed key is set to `null`. An operation
    /// that does not fit the local value is left out.
    fn legacy_updates(&self, update: &Update) -> JsonObject {
        let mut updates = update.set.clone();
        for (key, operation) in &update.ops {
            let single = Update {
                ops: vec![(key.clone(), operation.clone())],
                ..Update::default()
            };
            if let Ok(resolved) = single.resolve(&self.state) {
                updates.extend(resolved.values);
                for key in resolved.removed {
                    updates.insert(key, Value::Null);
                }
            }
        }
        updates
    }

    /// Sends unsent pending updates, keeping at most [`DEDUP_WINDOW`] unacknowledged
    /// on the wire. The original server acknowledges nothing: there an update counts
    /// as applied once sent.
    fn flush(&mut self, events: &mut Vec<Event>) {
        if self.phase != Phase::Attached {
            return;
        }
        if self.legacy {
            while let Some(pending) = self.pending.pop_front() {
                let updates = self.legacy_updates(&pending.update);
                events.push(Event::Send(self.frame(&pending)));
                events.push(Event::Acknowledged {
                    request_id: pending.request_id,
                    updates: Arc::new(updates),
                    version: None,
                });
            }
            return;
        }
        let in_flight = self.pending.iter().filter(|p| p.sent).count();
        let room = DEDUP_WINDOW.saturating_sub(in_flight);
        let frames: Vec<String> = self
            .pending
            .iter()
            .filter(|p| !p.sent)
            .take(room)
            .map(|p| self.frame(p))
            .collect();
        for (pending, frame) in self.pending.iter_mut().filter(|p| !p.sent).zip(frames) {
            pending.sent = true;
            self.last_sent = self.last_sent.max(Some(pending.request_id));
            events.push(Event::Send(frame));
        }
    }

    /// The transport connected (first time or again).
    pub fn transport_up(&mut self) -> Vec<Event> {
        self.phase = Phase::Connected;
        self.attaches_in_flight = 0;
        self.presence.awaited = 0;
        self.heard = false;
        let mut events = Vec::new();
        self.attach(&mut events);
        events
    }

    /// Whether the server answered on the current connection: it sent a frame, and no
    /// attach waits for its answer. A connection lost before that was dropped before the
    /// server answered, which the clients report (see
    /// [`Reconnect::dropped`](crate::Reconnect::dropped)). Ask before
    /// [`ClientCore::transport_down`].
    pub fn server_answered(&self) -> bool {
        self.heard && self.attaches_in_flight == 0
    }

    /// The transport was lost. Sent updates become unsent: they are resent after the
    /// re-attach, and the server answers those it already applied with their outcome.
    pub fn transport_down(&mut self) -> Vec<Event> {
        self.phase = Phase::Disconnected;
        self.attaches_in_flight = 0;
        for pending in &mut self.pending {
            pending.sent = false;
        }
        Vec::new()
    }

    /// The server closed the connection because a frame was over its size limit
    /// (close code 1009). The oldest update on the wire is the one: earlier ones were
    /// answered before the close. It fails instead of being resent after every
    /// reconnect. Call this before [`ClientCore::transport_down`].
    pub fn frame_too_large(&mut self) -> Vec<Event> {
        let mut events = Vec::new();
        if let Some(index) = self.pending.iter().position(|p| p.sent)
            && let Some(pending) = self.pending.remove(index)
        {
            events.push(Event::Failed {
                    request_id: pending.request_id,
                    failure: UpdateFailure::Rejected {
                        reason: FailureReason::Invalid,
                        message: "Could not update state: the server closed the connection because the update is over its size limit".to_owned(),
                    },
                });
        }
        events
    }

    /// The client is closed for good: pending updates fail ([`UpdateFailure::Closed`],
    /// or [`UpdateFailure::Unconfirmed`] for those already sent).
    pub fn close(&mut self) -> Vec<Event> {
        let mut events = Vec::new();
        self.fail_all(&UpdateFailure::Closed, &mut events);
        self.forget_others(&mut events);
        self.phase = Phase::Disconnected;
        events
    }

    /// Attach to a state (now if connected, else after connecting). Attaching to
    /// another state than before starts from an empty local state and fails the
    /// previous state's pending updates.
    pub fn connect_to_state(&mut self, state_identifier: &str) -> Vec<Event> {
        let mut events = Vec::new();
        if self.target.as_deref() != Some(state_identifier) {
            let message = format!("the client attached to state {state_identifier} instead");
            self.detach(&UpdateFailure::Detached { message }, &mut events);
            self.target = Some(state_identifier.to_owned());
            self.state = JsonObject::new();
            self.version = None;
        }
        self.attach(&mut events);
        events
    }

    /// Queue an update; returns its request id. It is sent now when attached, else
    /// after (re-)attaching; the outcome comes as [`Event::Acknowledged`] or
    /// [`Event::Failed`] with this id.
    pub fn update(&mut self, updates: JsonObject) -> (u64, Vec<Event>) {
        self.submit(Update::from(updates))
    }

    /// Queue an [`Update`] (keys to set, atomic operations, an expected version), like
    /// [`ClientCore::update`]. Against the original server operations are resolved
    /// against the local state and the expected version is not checked (it has none).
    pub fn submit(&mut self, update: Update) -> (u64, Vec<Event>) {
        let request_id = self.next_request_id;
        self.next_request_id += 1;
        let mut events = Vec::new();
        let refuse = |reason, message: String| Event::Failed {
            request_id,
            failure: UpdateFailure::Rejected { reason, message },
        };
        if self.target.is_none() {
            let message =
                "Could not update state: the client is not attached to a state; attach first";
            events.push(refuse(FailureReason::NotAttached, message.to_owned()));
            return (request_id, events);
        }
        if let Err(error) = update.check_keys() {
            let message = format!("Could not update state: {error}");
            events.push(refuse(FailureReason::InvalidOperation, message));
            return (request_id, events);
        }
        let pending = Pending {
            request_id,
            update,
            sent: false,
        };
        let size = self.frame(&pending).len();
        if size > self.max_frame {
            let message = format!(
                "Could not update state: the update is {size} bytes, over the limit of {} bytes",
                self.max_frame
            );
            events.push(refuse(FailureReason::Invalid, message));
            return (request_id, events);
        }
        self.pending.push_back(pending);
        self.flush(&mut events);
        (request_id, events)
    }

    /// Handle a text frame from the server.
    pub fn on_text(&mut self, text: &str) -> Vec<Event> {
        self.heard = true;
        let mut events = Vec::new();
        match ServerMessage::from_json(text) {
            Ok(ServerMessage::StateConnectionEstablished(established)) => {
                self.on_established(established, &mut events);
            }
            Ok(ServerMessage::StateUpdated(updated)) => self.on_updated(updated, &mut events),
            Ok(ServerMessage::StateUpdateFailed(failed)) => self.on_failed(failed, &mut events),
            Ok(ServerMessage::StateConnectionError { message }) => {
                // A refused attach sends no PRESENCE.
                self.presence.awaited = self.presence.awaited.saturating_sub(1);
                if let Some(state_identifier) = self.answers_last_attach() {
                    self.refused(state_identifier, message, &mut events);
                }
            }
            Ok(ServerMessage::StateRemoved(StateRemoved {
                state_identifier,
                message,
            })) => {
                if self.target.as_deref() == Some(state_identifier.as_str()) {
                    self.detach(
                        &UpdateFailure::Detached {
                            message: message.clone(),
                        },
                        &mut events,
                    );
                    events.push(Event::StateRemoved {
                        state_identifier,
                        message,
                    });
                }
            }
            Ok(ServerMessage::UnsupportedMessageType { message }) => {
                events.push(Event::ServerError { message });
            }
            Ok(ServerMessage::Presence(snapshot)) => self.on_presence(snapshot, &mut events),
            Ok(ServerMessage::PresenceChanged(changed)) => {
                self.on_presence_changed(changed, &mut events);
            }
            Ok(ServerMessage::PresenceFailed(PresenceFailed { message, reason })) => {
                events.push(Event::PresenceFailed { reason, message });
            }
            Err(ServerMessageError::UnknownType(_)) => {}
            Err(error) => self.on_unreadable(&error, &mut events),
        }
        events
    }

    /// Counts an answer to a CONNECT_TO_STATE. It counts only when it answers the last
    /// one sent and the client still targets that state: then this returns that state.
    /// `None` for answers to superseded attaches, and for the answer to an attach whose
    /// state was removed before the answer came: the removal settled that attach (see
    /// [`Waiters`](crate::Waiters)), the client is attached to no state, and stays so.
    fn answers_last_attach(&mut self) -> Option<String> {
        match self.attaches_in_flight {
            0 => None,
            1 => {
                self.attaches_in_flight = 0;
                self.target.clone()
            }
            _ => {
                self.attaches_in_flight -= 1;
                None
            }
        }
    }

    /// The server refused the attach to `state_identifier` (or its answer could not be
    /// read): the client is attached to no state.
    fn refused(&mut self, state_identifier: String, message: String, events: &mut Vec<Event>) {
        self.detach(
            &UpdateFailure::Detached {
                message: message.clone(),
            },
            events,
        );
        events.push(Event::AttachFailed {
            state_identifier,
            message,
        });
    }

    fn on_established(&mut self, established: StateConnectionEstablished, events: &mut Vec<Event>) {
        let Some(state_identifier) = self.answers_last_attach() else {
            return;
        };
        let StateConnectionEstablished { state, version } = established;
        let changes = self
            .attached_before
            .then(|| diff(&self.state, &state))
            .filter(|changes| !changes.is_empty());
        self.legacy = version.is_none();
        self.state = state.clone();
        self.version = version;
        self.attached_before = true;
        self.phase = Phase::Attached;
        events.push(Event::Attached {
            state_identifier,
            state,
            changes,
        });
        self.flush(events);
        self.flush_presence(events);
    }

    fn on_updated(&mut self, updated: StateUpdated, events: &mut Vec<Event>) {
        let StateUpdated {
            updates,
            version,
            request_id,
            removed,
            ops,
        } = updated;
        // While (re-)attaching, broadcasts belong to a state being left, or are
        // covered by the whole state that is coming.
        let fresh = self.phase == Phase::Attached
            && match (self.version, version) {
                (Some(local), Some(remote)) => remote > local,
                _ => true,
            };
        let acknowledges =
            request_id.is_some_and(|id| self.pending.iter().any(|p| p.request_id == id));
        let gap =
            matches!((self.version, version), (Some(local), Some(remote)) if remote > local + 1);
        let mut updates = updates;
        if fresh && gap && !ops.is_empty() {
            // Appends apply to the version just before, which this copy missed: get
            // the whole state instead.
            self.attach(events);
        } else if fresh {
            let merge = shallow_merge(&mut self.state, &updates);
            let mut previous = merge.previous;
            for key in &removed {
                self.state.shift_remove(key);
            }
            // Appends come as operations on the previous version's arrays: applied here,
            // in place. Whole arrays are copied only for whoever looks at them.
            let mut appended = JsonObject::new();
            let mut applicable = true;
            for (key, operation) in &ops {
                let Operation::Append { items, max } = operation else {
                    applicable = false;
                    continue;
                };
                let existed = self.state.contains_key(key);
                let array = self
                    .state
                    .entry(key.clone())
                    .or_insert_with(|| Value::Array(Vec::new()));
                let Value::Array(array) = array else {
                    applicable = false;
                    continue;
                };
                if self.observed && existed {
                    previous.insert(key.clone(), Value::Array(array.clone()));
                }
                append_in_place(array, items, *max);
                if self.observed || acknowledges {
                    appended.insert(key.clone(), Value::Array(array.clone()));
                }
            }
            if !appended.is_empty() {
                let mut whole = (*updates).clone();
                whole.extend(appended);
                updates = Arc::new(whole);
            }
            if version.is_some() {
                self.version = version;
            }
            events.push(Event::Updated {
                updates: Arc::clone(&updates),
                previous,
            });
            if gap || !applicable {
                // Something was missed (or cannot be applied here, which one connection
                // never sees): re-attach to get the whole state.
                self.attach(events);
            }
        } else if acknowledges && !ops.is_empty() {
            // A replayed acknowledgement: the appends are in the state already.
            let mut whole = (*updates).clone();
            for (key, _) in &ops {
                if let Some(value) = self.state.get(key) {
                    whole.insert(key.clone(), value.clone());
                }
            }
            updates = Arc::new(whole);
        }
        if let Some(request_id) = request_id
            && let Some(index) = self.pending.iter().position(|p| p.request_id == request_id)
        {
            self.pending.remove(index);
            events.push(Event::Acknowledged {
                request_id,
                updates,
                version,
            });
            self.flush(events);
        }
    }

    fn on_failed(&mut self, failed: UpdateFailed, events: &mut Vec<Event>) {
        let UpdateFailed {
            message,
            request_id,
            reason,
            version: _,
        } = failed;
        let index = request_id.and_then(|id| self.pending.iter().position(|p| p.request_id == id));
        match (request_id, index) {
            (Some(request_id), Some(index)) => {
                self.pending.remove(index);
                let reason = reason.unwrap_or(FailureReason::Other);
                events.push(Event::Failed {
                    request_id,
                    failure: UpdateFailure::Rejected { reason, message },
                });
                self.flush(events);
            }
            _ => events.push(Event::ServerError { message }),
        }
    }
}

mod unreadable;

#[cfg(test)]
mod tests;
