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

/// Why an update was not applied, as a client reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum UpdateFailure {
    /// The server refused it (vetoed, invalid, state gone, …).
    Rejected {
        /// Why, for programs.
        reason: FailureReason,
        /// Why, for people (the server's message).
        message: String,
    },
    /// The connection to a server that does not deduplicate (the original) was lost
    /// after the update was sent: it may or may not have been applied.
    Unconfirmed,
    /// The client is no longer attached to the update's state (it was removed, the
    /// re-attach was refused, or the client attached to another state).
    Detached {
        /// Why.
        message: String,
    },
    /// The client was closed, or gave up reconnecting, before the update was applied.
    Closed,
}

impl std::fmt::Display for UpdateFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpdateFailure::Rejected { message, .. } => f.write_str(message),
            UpdateFailure::Unconfirmed => f.write_str(
                "the connection was lost before the server acknowledged the update, and this \
                 server cannot tell whether it was applied",
            ),
            UpdateFailure::Detached { message } => {
                write!(f, "not attached to the state: {message}")
            }
            UpdateFailure::Closed => {
                f.write_str("the client was closed before the update was applied")
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
    /// The client's update `request_id` was not applied.
    Failed {
        /// The update's request id.
        request_id: u64,
        /// Why.
        failure: UpdateFailure,
    },
    /// Attaching was refused (STATE_CONNECTION_ERROR).
    AttachFailed {
        /// The server's message.
        message: String,
    },
    /// The attached state was removed on the server.
    StateRemoved {
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
    attached_before: bool,
    state: JsonObject,
    version: Option<u64>,
    legacy: bool,
    next_request_id: u64,
    pending: VecDeque<Pending>,
}

impl ClientCore {
    /// A core for a new client; `session` must be unique to this client (a random UUID).
    pub fn new(session: impl Into<String>) -> Self {
        ClientCore {
            session: session.into(),
            target: None,
            phase: Phase::Disconnected,
            attached_before: false,
            state: JsonObject::new(),
            version: None,
            legacy: false,
            next_request_id: 1,
            pending: VecDeque::new(),
        }
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

    fn connect_frame(&self) -> Option<Event> {
        let state_identifier = self.target.clone()?;
        let message = ClientMessage::ConnectToState(ConnectToState {
            state_identifier,
            session: Some(self.session.clone()),
        });
        Some(Event::Send(message.to_json()))
    }

    fn fail_all(&mut self, failure: &UpdateFailure, events: &mut Vec<Event>) {
        for pending in self.pending.drain(..) {
            events.push(Event::Failed {
                request_id: pending.request_id,
                failure: failure.clone(),
            });
        }
    }

    /// Sends unsent pending updates, keeping at most [`DEDUP_WINDOW`] unacknowledged
    /// on the wire. Against the original server, which acknowledges nothing, an update
    /// counts as applied once sent.
    fn flush(&mut self, events: &mut Vec<Event>) {
        if self.phase != Phase::Attached {
            return;
        }
        let in_flight = self.pending.iter().filter(|p| p.sent).count();
        let room = DEDUP_WINDOW.saturating_sub(in_flight);
        let legacy = self.legacy;
        for pending in self.pending.iter_mut().filter(|p| !p.sent).take(room) {
            let message = ClientMessage::UpdateState(UpdateState {
                updates: pending.updates.clone(),
                request_id: (!legacy).then_some(pending.request_id),
            });
            events.push(Event::Send(message.to_json()));
            pending.sent = true;
        }
        if legacy {
            while let Some(pending) = self.pending.pop_front() {
                events.push(Event::Acknowledged {
                    request_id: pending.request_id,
                    updates: Arc::new(pending.updates),
                    version: None,
                });
            }
        }
    }

    /// The transport connected (first time or again).
    pub fn transport_up(&mut self) -> Vec<Event> {
        self.phase = Phase::Connected;
        let mut events = Vec::new();
        if let Some(frame) = self.connect_frame() {
            self.phase = Phase::Attaching;
            events.push(frame);
        }
        events
    }

    /// The transport was lost. Sent updates become unsent (they are resent after the
    /// re-attach), except against the original server, where they fail as
    /// [`UpdateFailure::Unconfirmed`].
    pub fn transport_down(&mut self) -> Vec<Event> {
        self.phase = Phase::Disconnected;
        let mut events = Vec::new();
        if self.legacy {
            let mut kept = VecDeque::new();
            for pending in self.pending.drain(..) {
                if pending.sent {
                    events.push(Event::Failed {
                        request_id: pending.request_id,
                        failure: UpdateFailure::Unconfirmed,
                    });
                } else {
                    kept.push_back(pending);
                }
            }
            self.pending = kept;
        } else {
            for pending in &mut self.pending {
                pending.sent = false;
            }
        }
        events
    }

    /// The client is closed for good: every pending update fails with
    /// [`UpdateFailure::Closed`].
    pub fn close(&mut self) -> Vec<Event> {
        self.phase = Phase::Disconnected;
        let mut events = Vec::new();
        self.fail_all(&UpdateFailure::Closed, &mut events);
        events
    }

    /// Attach to a state (now if connected, else after connecting). Attaching to
    /// another state than before starts from an empty local state and fails the
    /// previous state's pending updates.
    pub fn connect_to_state(&mut self, state_identifier: &str) -> Vec<Event> {
        let mut events = Vec::new();
        if self.target.as_deref() != Some(state_identifier) {
            let message = format!("the client attached to state {state_identifier}");
            self.fail_all(&UpdateFailure::Detached { message }, &mut events);
            self.target = Some(state_identifier.to_owned());
            self.state = JsonObject::new();
            self.version = None;
            self.attached_before = false;
        }
        if self.phase != Phase::Disconnected {
            self.phase = Phase::Attaching;
            events.extend(self.connect_frame());
        }
        events
    }

    /// Queue an update; returns its request id. It is sent now when attached, else
    /// after (re-)attaching; the outcome comes as [`Event::Acknowledged`] or
    /// [`Event::Failed`] with this id.
    pub fn update(&mut self, updates: JsonObject) -> (u64, Vec<Event>) {
        let request_id = self.next_request_id;
        self.next_request_id += 1;
        let mut events = Vec::new();
        if self.target.is_none() {
            events.push(Event::Failed {
                request_id,
                failure: UpdateFailure::Rejected {
                    reason: FailureReason::NotAttached,
                    message: "Could not update state: the client is not attached to a state; call connectToState first"
                        .to_owned(),
                },
            });
            return (request_id, events);
        }
        self.pending.push_back(Pending {
            request_id,
            updates,
            sent: false,
        });
        self.flush(&mut events);
        (request_id, events)
    }

    /// Handle a text frame from the server.
    pub fn on_text(&mut self, text: &str) -> Vec<Event> {
        let mut events = Vec::new();
        match ServerMessage::from_json(text) {
            Ok(ServerMessage::StateConnectionEstablished(established)) => {
                self.on_established(established, &mut events)
            }
            Ok(ServerMessage::StateUpdated(updated)) => self.on_updated(updated, &mut events),
            Ok(ServerMessage::StateUpdateFailed(failed)) => self.on_failed(failed, &mut events),
            Ok(ServerMessage::StateConnectionError { message }) => {
                if self.phase == Phase::Attaching {
                    self.phase = Phase::Connected;
                }
                if self.attached_before {
                    // The state we were attached to is not there anymore.
                    self.fail_all(
                        &UpdateFailure::Detached {
                            message: message.clone(),
                        },
                        &mut events,
                    );
                }
                events.push(Event::AttachFailed { message });
            }
            Ok(ServerMessage::StateRemoved(StateRemoved {
                state_identifier,
                message,
            })) => {
                if self.target.as_deref() == Some(state_identifier.as_str()) {
                    self.phase = Phase::Connected;
                    self.attached_before = false;
                    self.fail_all(
                        &UpdateFailure::Detached {
                            message: message.clone(),
                        },
                        &mut events,
                    );
                    events.push(Event::StateRemoved { message });
                }
            }
            Ok(ServerMessage::UnsupportedMessageType { message }) => {
                events.push(Event::ServerError { message })
            }
            Err(ServerMessageError::UnknownType(_)) => {}
            Err(error) => events.push(Event::ServerError {
                message: error.to_string(),
            }),
        }
        events
    }

    fn on_established(&mut self, established: StateConnectionEstablished, events: &mut Vec<Event>) {
        let StateConnectionEstablished { state, version } = established;
        let changes = self.attached_before.then(|| diff(&self.state, &state));
        self.legacy = version.is_none();
        self.state = state.clone();
        self.version = version;
        self.attached_before = true;
        self.phase = Phase::Attached;
        events.push(Event::Attached { state, changes });
        self.flush(events);
    }

    fn on_updated(&mut self, updated: StateUpdated, events: &mut Vec<Event>) {
        let StateUpdated {
            updates,
            version,
            request_id,
        } = updated;
        let fresh = match (self.version, version) {
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
            if gap && self.phase == Phase::Attached {
                // Something was missed: re-attach to get the whole state.
                self.phase = Phase::Attaching;
                events.extend(self.connect_frame());
            }
        }
        if let Some(request_id) = request_id {
            if let Some(index) = self.pending.iter().position(|p| p.request_id == request_id) {
                self.pending.remove(index);
                events.push(Event::Acknowledged {
                    request_id,
                    updates,
                    version,
                });
                self.flush(events);
            }
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
                failure: UpdateFailure::Detached { .. }
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
}
