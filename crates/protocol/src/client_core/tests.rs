//! Behaviours of [`ClientCore`]: what it sends and tells for what happens.

use serde_json::{Value, json};

use super::*;
use crate::Waiters;

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
        [
            json!({"type": 2, "data": {"stateIdentifier": "room", "session": "s1", "acceptsOps": true, "presence": {}}})
        ]
    );
    let events = attach(&mut core, json!({"x": 0}), 5);
    assert_eq!(
        sent(&events),
        [json!({"type": 3, "data": {"updates": {"a": 1}, "requestId": 1}})]
    );
    assert!(matches!(&events[0], Event::Attached { changes: None, .. }));
    let events = core.on_text(r#"{"type":3,"data":{"updates":{"a":1},"version":6,"requestId":1}}"#);
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
    let events = core.on_text(r#"{"type":3,"data":{"updates":{"a":2},"version":2,"requestId":1}}"#);
    assert!(
        matches!(&events[..], [Event::Acknowledged { request_id: 1, .. }]),
        "not applied again: {events:?}"
    );
    let events = core.on_text(r#"{"type":3,"data":{"updates":{"c":3},"version":4,"requestId":2}}"#);
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
fn a_reattach_to_an_unchanged_state_reports_no_changes() {
    let mut core = ClientCore::new("s1");
    core.transport_up();
    core.connect_to_state("room");
    attach(&mut core, json!({"a": 1}), 1);
    core.transport_down();
    core.transport_up();
    let events = attach(&mut core, json!({"a": 1}), 1);
    assert!(
        matches!(&events[..], [Event::Attached { changes: None, .. }]),
        "listeners have nothing to hear: {events:?}"
    );
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
    let events = core.on_text(r#"{"type":3,"data":{"updates":{"i":0},"version":1,"requestId":1}}"#);
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
    let events = core
        .on_text(r#"{"type":8,"data":{"message":"State with identifier room does not exist"}}"#);
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
    let events = core
        .on_text(r#"{"type":8,"data":{"message":"State with identifier missing does not exist"}}"#);
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

fn last_sent_of(events: &[Event]) -> Option<Value> {
    let attach = sent(events)
        .into_iter()
        .find(|frame| frame["type"] == 2)
        .expect("an attach");
    attach["data"].get("lastSent").cloned()
}

#[test]
fn the_reattach_names_the_last_request_sent_to_the_state() {
    let mut core = ClientCore::new("s");
    core.transport_up();
    let events = core.connect_to_state("room");
    assert_eq!(last_sent_of(&events), None, "nothing sent yet");
    attach(&mut core, json!({}), 0);
    for i in 1..=3 {
        core.update(object(json!({"i": i})));
    }
    core.on_text(r#"{"type":3,"data":{"updates":{"i":1},"version":1,"requestId":1}}"#);
    core.transport_down();
    let events = core.transport_up();
    assert_eq!(
        last_sent_of(&events),
        Some(json!(3)),
        "acknowledged or not, 1 to 3 were sent"
    );
    // Queued while disconnected and not sent yet: not counted.
    core.transport_down();
    core.update(object(json!({"unsent": true})));
    assert_eq!(last_sent_of(&core.transport_up()), Some(json!(3)));

    let events = core.connect_to_state("other");
    assert_eq!(
        last_sent_of(&events),
        None,
        "another state: sent none to it"
    );
    attach(&mut core, json!({}), 0);
    let events = core.connect_to_state("room");
    assert_eq!(
        last_sent_of(&events),
        None,
        "not continuously targeted since it sent those"
    );
}

#[test]
fn an_unreadable_answer_to_the_attach_fails_it_and_the_next_attach_works() {
    let mut core = ClientCore::new("s");
    core.transport_up();
    core.connect_to_state("broken");
    core.update(object(json!({"queued": 1})));
    let events = core.on_text(r#"{"type":7,"data":{}}"#);
    let [
        Event::Failed {
            failure: UpdateFailure::Detached { .. },
            ..
        },
        Event::AttachFailed {
            state_identifier,
            message,
        },
    ] = &events[..]
    else {
        panic!("{events:?}")
    };
    assert_eq!(state_identifier, "broken");
    assert!(
        message.starts_with(
            "the server's answer could not be read: the server's STATE_CONNECTION_ESTABLISHED \
             (type 7) does not fit the protocol: missing field `state`"
        ),
        "{message}"
    );
    assert!(!core.is_attached());
    assert_eq!(core.state_identifier(), None);

    core.connect_to_state("good");
    let events = core.on_text(r#"{"type":7,"data":{"state":{"ok":true}}}"#);
    assert!(
        matches!(&events[..], [Event::Attached { state_identifier, .. }] if state_identifier == "good"),
        "the next answer is not taken for the broken one's: {events:?}"
    );

    // An unreadable refusal fails the attach too.
    core.connect_to_state("other");
    let events = core.on_text(r#"{"type":8,"data":{"message":42}}"#);
    assert!(
        matches!(&events[..], [Event::AttachFailed { state_identifier, .. }] if state_identifier == "other"),
        "{events:?}"
    );
    // With no attach in flight, it is only a server error.
    let events = core.on_text(r#"{"type":7,"data":{}}"#);
    assert!(
        matches!(&events[..], [Event::ServerError { .. }]),
        "{events:?}"
    );
}

#[test]
fn an_unreadable_answer_to_an_update_fails_that_update() {
    let mut core = ClientCore::new("s");
    core.transport_up();
    core.connect_to_state("room");
    attach(&mut core, json!({}), 0);
    for i in 1..=3 {
        core.update(object(json!({"i": i})));
    }
    let events = core.on_text(r#"{"type":9,"data":{"requestId":2,"reason":"vetoed"}}"#);
    let [
        Event::Failed {
            request_id: 2,
            failure:
                UpdateFailure::Rejected {
                    reason: FailureReason::Other,
                    message,
                },
        },
    ] = &events[..]
    else {
        panic!("{events:?}")
    };
    assert!(
        message.starts_with(
            "the server refused the update, but its answer could not be read: the server's \
             STATE_UPDATE_FAILED (type 9) for request 2 does not fit the protocol: missing \
             field `message`"
        ),
        "{message}"
    );
    let events = core.on_text(r#"{"type":3,"data":{"updates":"x","version":1,"requestId":1}}"#);
    assert!(
        matches!(
            &events[..],
            [Event::Failed {
                request_id: 1,
                failure: UpdateFailure::Rejected { reason: FailureReason::Other, message },
            }] if message.contains("may or may not have been applied")
        ),
        "{events:?}"
    );
    assert_eq!(core.pending_updates(), 1, "3 still waits");
    let events = core.on_text(r#"{"type":9,"data":{"requestId":1}}"#);
    assert!(
        matches!(&events[..], [Event::ServerError { .. }]),
        "no pending update 1 any more: {events:?}"
    );
}

#[test]
fn a_reattach_that_the_removal_of_its_state_overtakes_is_settled_by_the_removal() {
    let mut core = ClientCore::new("s");
    let mut waiters = Waiters::<&str, ()>::new();
    core.transport_up();
    core.connect_to_state("room");
    attach(&mut core, json!({}), 0);
    // A caller attaches again to the state it is on; the server removes the state
    // before it reads that attach, then refuses it.
    let _ = waiters.attach("room", "caller");
    assert_eq!(sent(&core.connect_to_state("room")).len(), 1);
    let events = core.on_text(
        r#"{"type":1,"data":{"stateIdentifier":"room","message":"State room was removed"}}"#,
    );
    let [
        Event::StateRemoved {
            state_identifier, ..
        },
    ] = &events[..]
    else {
        panic!("{events:?}")
    };
    // What both clients do on a removal: settle the callers waiting for that state.
    assert_eq!(waiters.answered(state_identifier), ["caller"]);
    let events = core
        .on_text(r#"{"type":8,"data":{"message":"State with identifier room does not exist"}}"#);
    assert!(
        events.is_empty(),
        "the refusal answers an attach the removal settled: {events:?}"
    );
    // So does an answer from a state created again meanwhile: the client stays detached.
    let mut core = ClientCore::new("s");
    core.transport_up();
    core.connect_to_state("room");
    attach(&mut core, json!({}), 0);
    core.connect_to_state("room");
    core.on_text(r#"{"type":1,"data":{"stateIdentifier":"room","message":"removed"}}"#);
    assert!(attach(&mut core, json!({"new": 1}), 0).is_empty());
    assert!(!core.is_attached());
    // And the client can attach to it again.
    core.connect_to_state("room");
    let events = attach(&mut core, json!({"new": 1}), 0);
    assert!(
        matches!(&events[..], [Event::Attached { state_identifier, .. }] if state_identifier == "room")
    );
}

#[test]
fn the_server_answered_once_it_sent_something_and_no_attach_waits() {
    let mut core = ClientCore::new("s");
    core.transport_up();
    assert!(!core.server_answered(), "nothing heard yet");
    core.connect_to_state("room");
    core.on_text(r#"{"type":10,"data":{"message":"m"}}"#);
    assert!(!core.server_answered(), "the attach waits");
    attach(&mut core, json!({}), 0);
    assert!(core.server_answered());
    core.transport_down();
    core.transport_up();
    assert!(!core.server_answered(), "a new connection");
}

fn presence_events(events: &[Event]) -> Vec<PresenceEvent> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Presence(change) => Some(change.clone()),
            _ => None,
        })
        .collect()
}

fn entry(id: &str, user: &str, presence: Value) -> PresenceEntry {
    PresenceEntry {
        id: id.into(),
        user: json!(user),
        presence: object(presence),
    }
}

#[test]
fn presence_goes_with_the_attach_then_at_most_once_per_interval() {
    let mut core = ClientCore::new("s1");
    assert!(core.set_presence(object(json!({"name": "ann"}))).is_empty());
    core.connect_to_state("room");
    let events = core.transport_up();
    assert_eq!(sent(&events)[0]["data"]["presence"], json!({"name": "ann"}));
    // Set while attaching: sent once attached.
    core.set_presence(object(json!({"name": "ann", "typing": true})));
    let events = attach(&mut core, json!({}), 1);
    assert_eq!(
        sent(&events),
        [json!({"type": 4, "data": {"presence": {"name": "ann", "typing": true}}})]
    );
    assert!(events.contains(&Event::PresenceDue(PRESENCE_INTERVAL)));
    // Within the interval: kept, the latest winning.
    assert!(
        core.set_presence(object(json!({"typing": false})))
            .is_empty()
    );
    assert!(core.set_presence(object(json!({"typing": 1}))).is_empty());
    let events = core.presence_due();
    assert_eq!(
        sent(&events),
        [json!({"type": 4, "data": {"presence": {"typing": 1}}})]
    );
    // Nothing new: the next due sends nothing and opens the window.
    assert!(core.presence_due().is_empty());
    assert_eq!(
        sent(&core.set_presence(object(json!({"typing": 2})))).len(),
        1
    );
    // The same presence again is not a change.
    core.presence_due();
    assert!(core.set_presence(object(json!({"typing": 2}))).is_empty());
}

#[test]
fn the_others_come_from_the_snapshot_then_change_in_order() {
    let mut core = ClientCore::new("s1");
    core.transport_up();
    core.connect_to_state("room");
    // Changes before the snapshot belong to a state being left: ignored.
    let early = core.on_text(
        &json!({"type": 12, "data": {"changes": [{"event": "join", "id": "z", "user": "zed", "presence": {}}]}})
            .to_string(),
    );
    assert!(presence_events(&early).is_empty());
    // A snapshot of another state is not ours either.
    let other = core.on_text(
        &json!({"type": 11, "data": {"stateIdentifier": "hall", "self": "q", "others": []}})
            .to_string(),
    );
    assert!(presence_events(&other).is_empty());
    let events = core.on_text(
        &json!({"type": 11, "data": {"stateIdentifier": "room", "self": "me", "others": [
            {"id": "a", "user": "ann", "presence": {"typing": false}}
        ]}})
        .to_string(),
    );
    assert_eq!(
        presence_events(&events),
        [PresenceEvent::Synced(vec![entry(
            "a",
            "ann",
            json!({"typing": false})
        )])]
    );
    assert_eq!(core.presence_id(), Some("me"));
    let events = core.on_text(
        &json!({"type": 12, "data": {"changes": [
            {"event": "join", "id": "b", "user": "bob", "presence": {}},
            {"event": "update", "id": "a", "presence": {"typing": true}},
            {"event": "update", "id": "me", "presence": {"typing": true}},
            {"event": "update", "id": "a", "presence": {"typing": true}},
            {"event": "leave", "id": "b"},
            {"event": "leave", "id": "nobody"},
        ]}})
        .to_string(),
    );
    assert_eq!(
        presence_events(&events),
        [
            PresenceEvent::Joined(entry("b", "bob", json!({}))),
            PresenceEvent::Updated(entry("a", "ann", json!({"typing": true}))),
            PresenceEvent::Left(entry("b", "bob", json!({}))),
        ]
    );
    assert_eq!(core.others(), [entry("a", "ann", json!({"typing": true}))]);
    // Reconnecting keeps the others until the new snapshot replaces them.
    core.transport_down();
    core.transport_up();
    assert_eq!(core.others().len(), 1);
    let events = core.on_text(
        &json!({"type": 11, "data": {"stateIdentifier": "room", "self": "me", "others": []}})
            .to_string(),
    );
    assert_eq!(presence_events(&events), [PresenceEvent::Synced(vec![])]);
    // Leaving the state forgets them.
    core.on_text(
        &json!({"type": 12, "data": {"changes": [{"event": "join", "id": "c", "user": "cy", "presence": {}}]}})
            .to_string(),
    );
    let events = core.connect_to_state("hall");
    assert_eq!(presence_events(&events), [PresenceEvent::Synced(vec![])]);
    assert!(core.others().is_empty());
    // A refusal of a presence is told.
    let events = core.on_text(
        r#"{"type":13,"data":{"message":"Could not set presence: too large","reason":"tooLarge"}}"#,
    );
    assert_eq!(
        events,
        [Event::PresenceFailed {
            reason: crate::PresenceFailureReason::TooLarge,
            message: "Could not set presence: too large".into()
        }]
    );
}

#[test]
fn the_original_server_is_never_sent_presence() {
    let mut core = ClientCore::new("s1");
    core.transport_up();
    core.connect_to_state("room");
    core.on_text(r#"{"type":7,"data":{"state":{}}}"#);
    assert!(core.is_legacy_server());
    assert!(core.set_presence(object(json!({"x": 1}))).is_empty());
}
