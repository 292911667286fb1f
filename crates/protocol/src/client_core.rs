//! The logic of a client, without I/O or timers: what to send, what the local state
//! is, which updates are pending, and what to tell the application. Both clients (the
//! native one and the browser one) drive a [`ClientCore`] from their transport; they
//! differ only in how they move frames and wait.
//!
//! The core implements the reconnect-and-resync and exactly-once rules of
//! `docs/protocol.md`: every update gets a request id in a session; unacknowledged
//! updates are resent after a reconnect (the server answers duplicates with their
//! first outcome); a re-attach replaces the local state and reports what changed.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::{
    ClientMessage, ConnectToState, DEDUP_WINDOW, FailureReason, JsonObject, ServerMessage,
    ServerMessageError, StateConnectionEstablished, StateDiff, StateRemoved, StateUpdated,
    UpdateFailed, UpdateState, diff, shallow_merge,
};

/// Largest UPDATE_STATE frame a client sends by default: the server's default limit.
pub const DEFAULT_MAX_FRAME: usize = 1 << 20;

/// Why an update was not applied, as a client reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum UpdateFailure {
    /// The server refused it (vetoed, invalid, state gone, …), or the client did
    /// before sending it (too large, not attached).
    Rejected {
        /// Why, for programs.
        reason: FailureReason,
        /// Why, for people.
        message: String,
    },
    /// The update was sent, but the client stopped waiting for its outcome (it was
    /// closed, attached to another state, or the state went away): the server may or
    /// may not have applied it. Check the state before sending it again.
    Unconfirmed,
    /// The update was never sent: the client is no longer attached to its state (it
    /// was removed, the attach was refused, or the client attached to another state).
    Detached {
        /// Why.
        message: String,
    },
    /// The update was never sent: the client was closed, or gave up reconnecting.
    Closed,
}

impl std::fmt::Display for UpdateFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpdateFailure::Rejected { message, .. } => f.write_str(message),
            UpdateFailure::Unconfirmed => f.write_str(
                "the update was sent, but the client stopped waiting for its outcome; the \
                 server may or may not have applied it",
            ),
            UpdateFailure::Detached { message } => {
                write!(
                    f,
                    "not sent, the client is not attached to the state: {message}"
                )
            }
            UpdateFailure::Closed => {
                f.write_str("not sent: the client was closed before the update could be sent")
            }
        }
    }
}

impl std::error::Error for UpdateFailure {}

/// What the core asks its driver to do or tell.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// Send this text frame.
    Send(String),
    /// Attached to the state (first time, or again after a reconnect). `changes` is
    /// what differs from the local copy on a re-attach (listeners should hear it);
    /// `None` on the first attach.
    Attached {
        /// The state attached to.
        state_identifier: String,
        /// The whole state.
        state: JsonObject,
        /// What changed while the client was away.
        changes: Option<StateDiff>,
    },
    /// An update was applied to the local state.
    Updated {
        /// The updates as applied by the server.
        updates: Arc<JsonObject>,
        /// The values the updated keys had just before (absent when new).
        previous: JsonObject,
    },
    /// The server applied the client's update `request_id`.
    Acknowledged {
        /// The update's request id.
        request_id: u64,
        /// The updates as applied (after the server's interceptor).
        updates: Arc<JsonObject>,
        /// The state's version after it (`None` from the original server).
        version: Option<u64>,
    },
    /// The client's update `request_id` was not applied (or its outcome is unknown).
    Failed {
        /// The update's request id.
        request_id: u64,
        /// Why.
        failure: UpdateFailure,
    },
    /// Attaching was refused (STATE_CONNECTION_ERROR); the client is attached to no
    /// state now.
    AttachFailed {
        /// The state the client tried to attach to.
        state_identifier: String,
        /// The server's message.
        message: String,
    },
    /// The attached state was removed on the server; the client is attached to no
    /// state now.
    StateRemoved {
        /// The state that was removed.
        state_identifier: String,
        /// The server's message.
        message: String,
    },
    /// The server reported an error not tied to one update, or sent an unreadable frame.
    ServerError {
        /// What went wrong.
        message: String,
    },
}

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
    updates: JsonObject,
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
    state: JsonObject,
    version: Option<u64>,
    legacy: bool,
    next_request_id: u64,
    pending: VecDeque<Pending>,
    max_frame: usize,
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
            state: JsonObject::new(),
            version: None,
            legacy: false,
            next_request_id: 1,
            pending: VecDeque::new(),
            max_frame: DEFAULT_MAX_FRAME,
        }
    }

    /// Refuse, without sending them, updates whose frame is larger than this (the
    /// server closes a connection that sends a frame over its limit). Default:
    /// [`DEFAULT_MAX_FRAME`].
    pub fn with_max_frame(mut self, bytes: usize) -> Self {
        self.max_frame = bytes;
        self
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
        });
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
        self.target = None;
        self.attached_before = false;
        if self.phase != Phase::Disconnected {
            self.phase = Phase::Connected;
        }
    }

    fn frame(&self, pending: &Pending) -> String {
        ClientMessage::UpdateState(UpdateState {
            updates: pending.updates.clone(),
            request_id: (!self.legacy).then_some(pending.request_id),
        })
        .to_json()
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
                events.push(Event::Send(self.frame(&pending)));
                events.push(Event::Acknowledged {
                    request_id: pending.request_id,
                    updates: Arc::new(pending.updates),
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
            events.push(Event::Send(frame));
        }
    }

    /// The transport connected (first time or again).
    pub fn transport_up(&mut self) -> Vec<Event> {
        self.phase = Phase::Connected;
        self.attaches_in_flight = 0;
        let mut events = Vec::new();
        self.attach(&mut events);
        events
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
        let pending = Pending {
            request_id,
            updates,
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
        let mut events = Vec::new();
        match ServerMessage::from_json(text) {
            Ok(ServerMessage::StateConnectionEstablished(established)) => {
                self.on_established(established, &mut events);
            }
            Ok(ServerMessage::StateUpdated(updated)) => self.on_updated(updated, &mut events),
            Ok(ServerMessage::StateUpdateFailed(failed)) => self.on_failed(failed, &mut events),
            Ok(ServerMessage::StateConnectionError { message }) => {
                if self.answers_last_attach() {
                    let state_identifier = self.target.clone().unwrap_or_default();
                    self.detach(
                        &UpdateFailure::Detached {
                            message: message.clone(),
                        },
                        &mut events,
                    );
                    events.push(Event::AttachFailed {
                        state_identifier,
                        message,
                    });
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
            Err(ServerMessageError::UnknownType(_)) => {}
            Err(error) => events.push(Event::ServerError {
                message: error.to_string(),
            }),
        }
        events
    }

    /// Counts an answer to a CONNECT_TO_STATE; `true` when it answers the last one sent
    /// (answers to superseded ones are ignored).
    fn answers_last_attach(&mut self) -> bool {
        match self.attaches_in_flight {
            0 => false,
            1 => {
                self.attaches_in_flight = 0;
                true
            }
            _ => {
                self.attaches_in_flight -= 1;
                false
            }
        }
    }

    fn on_established(&mut self, established: StateConnectionEstablished, events: &mut Vec<Event>) {
        if !self.answers_last_attach() {
            return;
        }
        let StateConnectionEstablished { state, version } = established;
        let changes = self.attached_before.then(|| diff(&self.state, &state));
        self.legacy = version.is_none();
        self.state = state.clone();
        self.version = version;
        self.attached_before = true;
        self.phase = Phase::Attached;
        let state_identifier = self.target.clone().unwrap_or_default();
        events.push(Event::Attached {
            state_identifier,
            state,
            changes,
        });
        self.flush(events);
    }

    fn on_updated(&mut self, updated: StateUpdated, events: &mut Vec<Event>) {
        let StateUpdated {
            updates,
            version,
            request_id,
        } = updated;
        // While (re-)attaching, broadcasts belong to a state being left, or are
        // covered by the whole state that is coming.
        let fresh = self.phase == Phase::Attached
            && match (self.version, version) {
                (Some(local), Some(remote)) => remote > local,
                _ => true,
            };
        if fresh {
            let merge = shallow_merge(&mut self.state, &updates);
            let gap = matches!((self.version, version), (Some(local), Some(remote)) if remote > local + 1);
            if version.is_some() {
                self.version = version;
            }
            events.push(Event::Updated {
                updates: Arc::clone(&updates),
                previous: merge.previous,
            });
            if gap {
                // Something was missed: re-attach to get the whole state.
                self.attach(events);
            }
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

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn object(value: Value) -> JsonObject {
        value.as_object().cloned().unwrap()
    }

    fn sent(events: &[Event]) -> Vec<Value> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::Send(text) => Some(serde_json::from_str(text).unwrap()),
                _ => None,
            })
            .collect()
    }

    fn attach(core: &mut ClientCore, state: Value, version: u64) -> Vec<Event> {
        core.on_text(&json!({"type": 7, "data": {"state": state, "version": version}}).to_string())
    }

    #[test]
    fn updates_wait_for_the_attach_then_go_with_request_ids() {
        let mut core = ClientCore::new("s1");
        assert!(
            core.connect_to_state("room").is_empty(),
            "not connected yet"
        );
        let (id, events) = core.update(object(json!({"a": 1})));
        assert_eq!(id, 1);
        assert!(sent(&events).is_empty());
        let events = core.transport_up();
        assert_eq!(
            sent(&events),
            [json!({"type": 2, "data": {"stateIdentifier": "room", "session": "s1"}})]
        );
        let events = attach(&mut core, json!({"x": 0}), 5);
        assert_eq!(
            sent(&events),
            [json!({"type": 3, "data": {"updates": {"a": 1}, "requestId": 1}})]
        );
        assert!(matches!(&events[0], Event::Attached { changes: None, .. }));
        let events =
            core.on_text(r#"{"type":3,"data":{"updates":{"a":1},"version":6,"requestId":1}}"#);
        assert!(matches!(
            &events[..],
            [
                Event::Updated { .. },
                Event::Acknowledged {
                    request_id: 1,
                    version: Some(6),
                    ..
                }
            ]
        ));
        assert_eq!(core.state(), &object(json!({"x": 0, "a": 1})));
        assert_eq!(core.pending_updates(), 0);
    }

    #[test]
    fn a_reconnect_resyncs_reports_changes_and_resends_without_applying_twice() {
        let mut core = ClientCore::new("s1");
        core.transport_up();
        core.connect_to_state("room");
        attach(&mut core, json!({"a": 1, "b": 1}), 1);
        core.update(object(json!({"a": 2})));
        core.update(object(json!({"c": 3})));
        core.transport_down();
        let events = core.transport_up();
        assert_eq!(
            sent(&events).len(),
            1,
            "only the re-attach before the state comes"
        );
        // While away: someone changed b, and our first update was applied (version 2).
        let events = attach(&mut core, json!({"a": 2, "b": 9}), 3);
        let Event::Attached {
            changes: Some(changes),
            ..
        } = &events[0]
        else {
            panic!("{events:?}")
        };
        assert_eq!(changes.updates, object(json!({"a": 2, "b": 9})));
        assert_eq!(changes.previous, object(json!({"a": 1, "b": 1})));
        assert_eq!(
            sent(&events).len(),
            2,
            "both unacknowledged updates are resent"
        );
        // The server replays the first (old version) and applies the second.
        let events =
            core.on_text(r#"{"type":3,"data":{"updates":{"a":2},"version":2,"requestId":1}}"#);
        assert!(
            matches!(&events[..], [Event::Acknowledged { request_id: 1, .. }]),
            "not applied again: {events:?}"
        );
        let events =
            core.on_text(r#"{"type":3,"data":{"updates":{"c":3},"version":4,"requestId":2}}"#);
        assert!(matches!(
            &events[..],
            [
                Event::Updated { .. },
                Event::Acknowledged { request_id: 2, .. }
            ]
        ));
        assert_eq!(core.state(), &object(json!({"a": 2, "b": 9, "c": 3})));
    }

    #[test]
    fn refusals_fail_the_update_they_name() {
        let mut core = ClientCore::new("s");
        core.transport_up();
        core.connect_to_state("room");
        attach(&mut core, json!({}), 0);
        core.update(object(json!({"x": 1})));
        let events =
            core.on_text(r#"{"type":9,"data":{"message":"no","requestId":1,"reason":"vetoed"}}"#);
        assert_eq!(
            events,
            [Event::Failed {
                request_id: 1,
                failure: UpdateFailure::Rejected {
                    reason: FailureReason::Vetoed,
                    message: "no".into()
                }
            }]
        );
        let events = core.on_text(r#"{"type":9,"data":{"message":"Could not update state"}}"#);
        assert!(matches!(&events[..], [Event::ServerError { .. }]));
    }

    #[test]
    fn previous_values_are_the_values_before_the_update() {
        let mut core = ClientCore::new("s");
        core.transport_up();
        core.connect_to_state("room");
        attach(&mut core, json!({"n": 1}), 0);
        let events = core.on_text(r#"{"type":3,"data":{"updates":{"n":2},"version":1}}"#);
        let Event::Updated { updates, previous } = &events[0] else {
            panic!()
        };
        assert_eq!(**updates, object(json!({"n": 2})));
        assert_eq!(*previous, object(json!({"n": 1})));
    }

    #[test]
    fn against_the_original_server_updates_count_as_applied_once_sent() {
        let mut core = ClientCore::new("s");
        core.transport_up();
        core.connect_to_state("room");
        core.on_text(r#"{"type":7,"data":{"state":{}}}"#);
        assert!(core.is_legacy_server());
        let (_, events) = core.update(object(json!({"a": 1})));
        assert_eq!(
            sent(&events),
            [json!({"type": 3, "data": {"updates": {"a": 1}}})],
            "no request id"
        );
        assert!(matches!(
            events[1],
            Event::Acknowledged {
                request_id: 1,
                version: None,
                ..
            }
        ));
        let events = core.on_text(r#"{"type":3,"data":{"updates":{"a":1}}}"#);
        assert!(matches!(&events[..], [Event::Updated { .. }]));
        assert_eq!(core.state(), &object(json!({"a": 1})));
    }

    #[test]
    fn no_more_than_the_window_is_in_flight() {
        let mut core = ClientCore::new("s");
        core.transport_up();
        core.connect_to_state("room");
        attach(&mut core, json!({}), 0);
        let mut frames = 0;
        for i in 0..DEDUP_WINDOW + 10 {
            frames += sent(&core.update(object(json!({"i": i}))).1).len();
        }
        assert_eq!(frames, DEDUP_WINDOW);
        let events =
            core.on_text(r#"{"type":3,"data":{"updates":{"i":0},"version":1,"requestId":1}}"#);
        assert_eq!(
            sent(&events).len(),
            1,
            "an acknowledgement lets one more go"
        );
    }

    #[test]
    fn removal_and_refused_reattach_fail_pending_updates() {
        let mut core = ClientCore::new("s");
        core.transport_up();
        core.connect_to_state("room");
        attach(&mut core, json!({}), 0);
        core.update(object(json!({"x": 1})));
        let events = core.on_text(
            r#"{"type":1,"data":{"stateIdentifier":"room","message":"State room was removed"}}"#,
        );
        assert!(matches!(
            &events[0],
            Event::Failed {
                request_id: 1,
                failure: UpdateFailure::Unconfirmed
            }
        ));
        assert!(matches!(&events[1], Event::StateRemoved { .. }));

        let mut core = ClientCore::new("s");
        core.transport_up();
        core.connect_to_state("room");
        attach(&mut core, json!({}), 0);
        core.transport_down();
        core.update(object(json!({"x": 1})));
        core.transport_up();
        let events = core.on_text(
            r#"{"type":8,"data":{"message":"State with identifier room does not exist"}}"#,
        );
        assert!(matches!(
            &events[0],
            Event::Failed {
                failure: UpdateFailure::Detached { .. },
                ..
            }
        ));
        assert!(matches!(&events[1], Event::AttachFailed { .. }));
    }

    #[test]
    fn a_refused_attach_detaches_and_fails_what_waits() {
        let mut core = ClientCore::new("s");
        core.transport_up();
        core.connect_to_state("missing");
        core.update(object(json!({"x": 1})));
        let events = core.on_text(
            r#"{"type":8,"data":{"message":"State with identifier missing does not exist"}}"#,
        );
        assert!(matches!(
            &events[0],
            Event::Failed {
                failure: UpdateFailure::Detached { .. },
                ..
            }
        ));
        assert!(
            matches!(&events[1], Event::AttachFailed { state_identifier, .. } if state_identifier == "missing")
        );
        let (_, events) = core.update(object(json!({"y": 1})));
        assert!(
            matches!(
                &events[..],
                [Event::Failed {
                    failure: UpdateFailure::Rejected {
                        reason: FailureReason::NotAttached,
                        ..
                    },
                    ..
                }]
            ),
            "later updates fail at once instead of waiting forever: {events:?}"
        );
    }

    #[test]
    fn switching_states_ignores_the_old_state_and_superseded_answers() {
        let mut core = ClientCore::new("s");
        core.transport_up();
        core.connect_to_state("a");
        attach(&mut core, json!({"in_a": 1}), 10);
        core.connect_to_state("b");
        // A broadcast of state a, sent before the server saw the switch.
        let events = core.on_text(r#"{"type":3,"data":{"updates":{"in_a":2},"version":11}}"#);
        assert!(events.is_empty(), "{events:?}");
        assert!(core.state().is_empty());
        let events = attach(&mut core, json!({"in_b": true}), 3);
        assert!(
            matches!(&events[0], Event::Attached { state_identifier, changes: None, .. } if state_identifier == "b")
        );
        assert_eq!(core.state(), &object(json!({"in_b": true})));

        // Two attaches in a row: only the answer to the last one counts.
        let mut core = ClientCore::new("s");
        core.transport_up();
        core.connect_to_state("a");
        core.connect_to_state("b");
        assert!(
            attach(&mut core, json!({"in_a": 1}), 1).is_empty(),
            "the answer for a is stale"
        );
        let events = attach(&mut core, json!({"in_b": 1}), 1);
        assert!(
            matches!(&events[0], Event::Attached { state_identifier, .. } if state_identifier == "b")
        );
        assert_eq!(core.state(), &object(json!({"in_b": 1})));
    }

    #[test]
    fn an_update_over_the_frame_limit_is_refused_before_sending() {
        let mut core = ClientCore::new("s").with_max_frame(100);
        core.transport_up();
        core.connect_to_state("room");
        attach(&mut core, json!({}), 0);
        let (_, events) = core.update(object(json!({"blob": "x".repeat(200)})));
        assert!(matches!(
            &events[..],
            [Event::Failed {
                failure: UpdateFailure::Rejected {
                    reason: FailureReason::Invalid,
                    ..
                },
                ..
            }]
        ));
        assert_eq!(core.pending_updates(), 0);
    }

    #[test]
    fn against_the_original_server_every_queued_update_is_sent() {
        let mut core = ClientCore::new("s");
        core.transport_up();
        core.connect_to_state("room");
        core.on_text(r#"{"type":7,"data":{"state":{}}}"#);
        core.transport_down();
        for i in 0..DEDUP_WINDOW + 10 {
            core.update(object(json!({"i": i})));
        }
        core.transport_up();
        let events = core.on_text(r#"{"type":7,"data":{"state":{}}}"#);
        let acks = events
            .iter()
            .filter(|e| matches!(e, Event::Acknowledged { .. }))
            .count();
        assert_eq!(sent(&events).len(), DEDUP_WINDOW + 10);
        assert_eq!(acks, DEDUP_WINDOW + 10);
    }

    #[test]
    fn closing_tells_sent_from_unsent() {
        let mut core = ClientCore::new("s");
        core.transport_up();
        core.connect_to_state("room");
        attach(&mut core, json!({}), 0);
        core.update(object(json!({"sent": 1})));
        core.transport_down();
        core.transport_up();
        let events = core.close();
        assert!(
            matches!(
                &events[..],
                [Event::Failed {
                    failure: UpdateFailure::Closed,
                    ..
                }]
            ),
            "{events:?}"
        );
        let mut core = ClientCore::new("s");
        core.transport_up();
        core.connect_to_state("room");
        attach(&mut core, json!({}), 0);
        core.update(object(json!({"sent": 1})));
        let events = core.close();
        assert!(
            matches!(
                &events[..],
                [Event::Failed {
                    failure: UpdateFailure::Unconfirmed,
                    ..
                }]
            ),
            "{events:?}"
        );
    }

    #[test]
    fn a_frame_the_server_found_too_large_fails_instead_of_looping() {
        let mut core = ClientCore::new("s");
        core.transport_up();
        core.connect_to_state("room");
        attach(&mut core, json!({}), 0);
        core.update(object(json!({"big": 1})));
        core.update(object(json!({"next": 1})));
        let events = core.frame_too_large();
        assert!(matches!(
            &events[..],
            [Event::Failed {
                request_id: 1,
                failure: UpdateFailure::Rejected {
                    reason: FailureReason::Invalid,
                    ..
                }
            }]
        ));
        core.transport_down();
        core.transport_up();
        let events = attach(&mut core, json!({}), 0);
        assert_eq!(sent(&events).len(), 1, "only the next update is resent");
    }
}
