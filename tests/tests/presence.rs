//! Presence on one server: who is attached to a state and what they are doing, with
//! native clients and raw WebSockets over real sockets.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use serde_json::{Value, json};
use state_sync_client::{Client, Error, PresenceEntry, PresenceEvent, PresenceFailureReason};
use state_sync_server::{Present, StateOptions, StateSyncer};
use state_sync_tests::{PATIENCE, RawClient, attach_watching, eventually, serve};

async fn next_event(events: &mut (impl Stream<Item = PresenceEvent> + Unpin)) -> PresenceEvent {
    tokio::time::timeout(PATIENCE, events.next())
        .await
        .expect("a presence event in time")
        .expect("the stream goes on")
}

/// Presence events until one matches `done`.
async fn events_until(
    events: &mut (impl Stream<Item = PresenceEvent> + Unpin),
    done: impl Fn(&PresenceEvent) -> bool,
) -> Vec<PresenceEvent> {
    let mut seen = Vec::new();
    loop {
        let event = next_event(events).await;
        let last = done(&event);
        seen.push(event);
        if last {
            return seen;
        }
    }
}

fn users(entries: &[PresenceEntry]) -> Vec<Value> {
    entries.iter().map(|e| e.user.clone()).collect()
}

async fn syncer_with(
    state: StateOptions<()>,
    tune: impl FnOnce(state_sync_server::Builder<()>) -> state_sync_server::Builder<()>,
) -> StateSyncer {
    let syncer = tune(StateSyncer::builder()).build();
    syncer.create_state(state).unwrap();
    syncer
}

#[tokio::test]
async fn three_clients_see_joins_changes_and_leaves_in_order() {
    let syncer = syncer_with(StateOptions::new().identifier("room"), |b| b).await;
    let (_server, url) = serve(&syncer).await;
    let ann = Client::connect(&url, "ann", None).await.unwrap();
    let mut ann_events = ann.presence_events();
    ann.set_presence(json!({"colour": "red"})).unwrap();
    ann.connect_to_state("room").await.unwrap();
    assert_eq!(
        next_event(&mut ann_events).await,
        PresenceEvent::Synced(vec![])
    );

    let bob = Client::connect(&url, "bob", None).await.unwrap();
    let mut bob_events = bob.presence_events();
    bob.connect_to_state("room").await.unwrap();
    // Bob sees Ann as she set herself before attaching.
    let PresenceEvent::Synced(others) = next_event(&mut bob_events).await else {
        panic!("a snapshot first");
    };
    assert_eq!(users(&others), [json!("ann")]);
    assert_eq!(
        others[0].presence,
        json!({"colour": "red"}).as_object().cloned().unwrap()
    );
    assert_eq!(Some(others[0].id.clone()), ann.presence_id());
    let PresenceEvent::Joined(bob_entry) = next_event(&mut ann_events).await else {
        panic!("Ann sees Bob join");
    };
    assert_eq!(bob_entry.user, json!("bob"));
    assert_eq!(Some(bob_entry.id.clone()), bob.presence_id());

    let cy = Client::connect(&url, "cy", None).await.unwrap();
    let mut cy_events = cy.presence_events();
    cy.connect_to_state("room").await.unwrap();
    let PresenceEvent::Synced(others) = next_event(&mut cy_events).await else {
        panic!("a snapshot first");
    };
    assert_eq!(
        users(&others),
        [json!("ann"), json!("bob")],
        "in the order they joined"
    );

    // Bob types, then stops: the others see the last presence, in order.
    bob.set_presence(json!({"typing": true})).unwrap();
    for events in [&mut ann_events, &mut cy_events] {
        let seen = events_until(events, |e| {
            matches!(e, PresenceEvent::Updated(entry) if entry.presence.get("typing") == Some(&json!(true)))
        })
        .await;
        assert!(
            seen.iter().all(|e| !matches!(e, PresenceEvent::Left(_))),
            "{seen:?}"
        );
    }
    bob.set_presence(json!({"typing": false})).unwrap();
    for events in [&mut ann_events, &mut cy_events] {
        events_until(events, |e| {
            matches!(e, PresenceEvent::Updated(entry) if entry.user == json!("bob") && entry.presence.get("typing") == Some(&json!(false)))
        })
        .await;
    }
    assert_eq!(
        ann.others()
            .iter()
            .find(|e| e.user == json!("bob"))
            .unwrap()
            .presence,
        json!({"typing": false}).as_object().cloned().unwrap()
    );

    // Cy closes: the others see it leave at once (no grace period for a close).
    cy.close().await;
    for events in [&mut ann_events, &mut bob_events] {
        let seen = events_until(events, |e| matches!(e, PresenceEvent::Left(_))).await;
        let PresenceEvent::Left(entry) = seen.last().unwrap() else {
            unreachable!()
        };
        assert_eq!(entry.user, json!("cy"));
    }
    assert_eq!(users(&ann.others()), [json!("bob")]);
    assert_eq!(users(&bob.others()), [json!("ann")]);
    let present: Vec<Value> = syncer
        .presence_of_state("room")
        .unwrap()
        .iter()
        .map(|p| p.user.clone())
        .collect();
    assert_eq!(present, [json!("ann"), json!("bob")]);
}

#[tokio::test]
async fn two_tabs_of_one_user_are_two_entries() {
    let syncer = syncer_with(StateOptions::new().identifier("room"), |b| b).await;
    let (_server, url) = serve(&syncer).await;
    let tab1 = Client::connect(&url, "ann", None).await.unwrap();
    let tab2 = Client::connect(&url, "ann", None).await.unwrap();
    tab1.set_presence(json!({"tab": 1})).unwrap();
    tab2.set_presence(json!({"tab": 2})).unwrap();
    tab1.connect_to_state("room").await.unwrap();
    tab2.connect_to_state("room").await.unwrap();
    let watcher = Client::connect(&url, "bob", None).await.unwrap();
    watcher.connect_to_state("room").await.unwrap();
    eventually("bob sees both tabs", || watcher.others().len() == 2).await;
    let others = watcher.others();
    assert_eq!(users(&others), [json!("ann"), json!("ann")]);
    assert_ne!(others[0].id, others[1].id);
    assert_eq!(others[0].presence.get("tab"), Some(&json!(1)));
    assert_eq!(others[1].presence.get("tab"), Some(&json!(2)));
    // Each tab sees the other one, not itself.
    eventually("tab 1 sees tab 2 and bob", || tab1.others().len() == 2).await;
    assert!(
        tab1.others()
            .iter()
            .all(|e| Some(e.id.clone()) != tab1.presence_id())
    );
    tab2.close().await;
    eventually("one tab left", || watcher.others().len() == 1).await;
    assert_eq!(watcher.others()[0].presence.get("tab"), Some(&json!(1)));
}

#[tokio::test]
async fn the_wire_snapshot_changes_and_clients_of_the_original() {
    let syncer = syncer_with(StateOptions::new().identifier("room"), |b| b).await;
    let (_server, url) = serve(&syncer).await;
    // A client of the original: present with {}, never sent a presence message.
    let mut legacy = RawClient::connect(&url, "old", None).await;
    legacy.attach("room").await;
    let mut ann = RawClient::connect(&url, "ann", None).await;
    let snapshot = attach_watching(&mut ann, "room", json!({"presence": {"x": 1}})).await;
    assert_eq!(snapshot["stateIdentifier"], "room");
    let own = snapshot["self"].as_str().unwrap().to_owned();
    assert_eq!(snapshot["others"].as_array().unwrap().len(), 1);
    assert_eq!(snapshot["others"][0]["user"], "old");
    assert_eq!(snapshot["others"][0]["presence"], json!({}));
    let mut bob = RawClient::connect(&url, "bob", None).await;
    let snapshot = attach_watching(&mut bob, "room", json!({})).await;
    let others = snapshot["others"].as_array().unwrap();
    assert_eq!(
        others[1],
        json!({"id": own, "user": "ann", "presence": {"x": 1}})
    );
    let bob_id = snapshot["self"].as_str().unwrap().to_owned();
    // Ann hears Bob join (her own join may come in the same frame, when both joined
    // within one interval: clients skip their own entry).
    let mut changed = ann.expect(12).await;
    changed["changes"]
        .as_array_mut()
        .unwrap()
        .retain(|change| change["id"] != own);
    assert_eq!(
        changed,
        json!({"changes": [{"event": "join", "id": bob_id, "user": "bob", "presence": {}}]})
    );
    bob.send(json!({"type": 4, "data": {"presence": {"cursor": [3, 4]}}}))
        .await;
    let changed = ann.expect(12).await;
    assert_eq!(
        changed,
        json!({"changes": [{"event": "update", "id": bob_id, "presence": {"cursor": [3, 4]}}]})
    );
    // The state's updates still reach everyone, the original's client included, and
    // it never sees a presence message.
    bob.update(json!({"a": 1})).await;
    assert_eq!(legacy.expect(3).await["updates"], json!({"a": 1}));
    bob.send_message(tokio_tungstenite::tungstenite::Message::Close(None))
        .await;
    let changed = ann.expect(3).await;
    assert_eq!(changed["updates"], json!({"a": 1}));
    let changed = ann.expect(12).await;
    assert_eq!(
        changed,
        json!({"changes": [{"event": "leave", "id": bob_id}]})
    );
    legacy.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn changes_are_coalesced_the_latest_winning() {
    let syncer = syncer_with(StateOptions::new().identifier("room"), |b| {
        b.presence_interval(Duration::from_millis(300))
            .presence_rate(1000)
    })
    .await;
    let (_server, url) = serve(&syncer).await;
    let mut watcher = RawClient::connect(&url, "w", None).await;
    attach_watching(&mut watcher, "room", json!({})).await;
    let mut mover = RawClient::connect(&url, "m", None).await;
    attach_watching(&mut mover, "room", json!({})).await;
    watcher.expect(12).await; // the mover's join
    for x in 0..50 {
        mover
            .send(json!({"type": 4, "data": {"presence": {"x": x}}}))
            .await;
    }
    // Within about a second, the watcher gets a few frames, not fifty, and the last
    // one holds the last presence.
    let mut frames = 0;
    let mut last = Value::Null;
    while last != json!(49) {
        let changed = watcher.expect(12).await;
        frames += 1;
        for change in changed["changes"].as_array().unwrap() {
            last = change["presence"]["x"].clone();
        }
    }
    assert!(frames <= 4, "{frames} frames for 50 changes");
}

#[tokio::test]
async fn limits_are_answered_with_errors() {
    let syncer = syncer_with(StateOptions::new().identifier("room"), |b| {
        b.max_presence_bytes(100)
            .presence_rate(5)
            .max_presence_entries(1)
    })
    .await;
    let (_server, url) = serve(&syncer).await;
    let mut raw = RawClient::connect(&url, "raw", None).await;
    // Not attached yet.
    raw.send(json!({"type": 4, "data": {"presence": {}}})).await;
    let failed = raw.expect(13).await;
    assert_eq!(failed["reason"], "notAttached");
    assert!(
        failed["message"]
            .as_str()
            .unwrap()
            .starts_with("Could not set presence")
    );
    attach_watching(&mut raw, "room", json!({})).await;
    // Not an object.
    raw.send(json!({"type": 4, "data": {"presence": [1]}}))
        .await;
    let failed = raw.expect(13).await;
    assert_eq!(failed["reason"], "invalid");
    assert!(
        failed["message"].as_str().unwrap().contains("got an array"),
        "{failed}"
    );
    // Too large.
    raw.send(json!({"type": 4, "data": {"presence": {"name": "x".repeat(200)}}}))
        .await;
    let failed = raw.expect(13).await;
    assert_eq!(failed["reason"], "tooLarge");
    assert!(
        failed["message"]
            .as_str()
            .unwrap()
            .contains("over the limit of 100 bytes"),
        "{failed}"
    );
    // Too fast: a burst of 5 passes, the rest is refused.
    for x in 0..10 {
        raw.send(json!({"type": 4, "data": {"presence": {"x": x}}}))
            .await;
    }
    let mut limited = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(500);
    while let Ok(failed) = tokio::time::timeout_at(deadline, raw.expect(13)).await {
        assert_eq!(failed["reason"], "rateLimited");
        limited += 1;
    }
    assert!(limited >= 4, "{limited} refused");
    // The state's updates are not slowed by any of it.
    raw.update_with_id(json!({"a": 1}), 1).await;
    assert_eq!(raw.expect(3).await["requestId"], 1);
    // A native client hears the refusal on its errors.
    let client = Client::connect(&url, "native", None).await.unwrap();
    let mut errors = client.errors();
    client.connect_to_state("room").await.unwrap();
    // The state shows 1 entry at most: the second is attached but not shown.
    client.set_presence(json!({"small": true})).unwrap();
    let error = tokio::time::timeout(PATIENCE, errors.recv())
        .await
        .unwrap()
        .unwrap();
    let Error::Presence { reason, message } = error else {
        panic!("a presence error, got {error:?}")
    };
    assert_eq!(reason, PresenceFailureReason::Full);
    assert!(message.contains("shows 1 present clients"), "{message}");
    assert_eq!(client.others().len(), 1, "it still sees the others");
    // Not an object: refused before sending.
    assert!(matches!(
        client.set_presence(json!(3)),
        Err(Error::NotAnObject("a number"))
    ));
}

#[tokio::test]
async fn a_lost_connection_lingers_and_its_session_takes_the_entry_back() {
    let syncer = syncer_with(StateOptions::new().identifier("room"), |b| {
        b.presence_grace(Duration::from_millis(800))
    })
    .await;
    let (_server, url) = serve(&syncer).await;
    let mut watcher = RawClient::connect(&url, "w", None).await;
    attach_watching(&mut watcher, "room", json!({})).await;
    let mut tab = RawClient::connect(&url, "ann", None).await;
    let first = attach_watching(
        &mut tab,
        "room",
        json!({"session": "s1", "presence": {"p": 1}}),
    )
    .await;
    let id = first["self"].clone();
    watcher.expect(12).await; // join
    // The network drops (no close frame): Ann stays, within the grace period.
    drop(tab);
    watcher.expect_silence(Duration::from_millis(400)).await;
    // She reconnects with the same session: the same entry, no leave nor join; her
    // new presence arrives as an update.
    let mut tab = RawClient::connect(&url, "ann", None).await;
    let again = attach_watching(
        &mut tab,
        "room",
        json!({"session": "s1", "presence": {"p": 2}}),
    )
    .await;
    assert_eq!(again["self"], id);
    let changed = watcher.expect(12).await;
    assert_eq!(
        changed,
        json!({"changes": [{"event": "update", "id": id, "presence": {"p": 2}}]})
    );
    watcher.expect_silence(Duration::from_millis(1000)).await;
    // Dropped again and not back: it leaves once the grace period is over.
    drop(tab);
    let started = tokio::time::Instant::now();
    let changed = watcher.expect(12).await;
    assert_eq!(changed, json!({"changes": [{"event": "leave", "id": id}]}));
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(600),
        "left after {waited:?}"
    );
    // Another identifier with the same session id does not take an entry.
    let mut a = RawClient::connect(&url, "ann", None).await;
    attach_watching(&mut a, "room", json!({"session": "s2"})).await;
    let mut b = RawClient::connect(&url, "eve", None).await;
    let eve = attach_watching(&mut b, "room", json!({"session": "s2"})).await;
    assert_eq!(eve["others"].as_array().unwrap().len(), 2, "{eve}");
}

#[tokio::test]
async fn lingering_entries_are_bounded() {
    let syncer = syncer_with(StateOptions::new().identifier("room"), |b| {
        b.presence_grace(Duration::from_secs(60))
    })
    .await;
    let (_server, url) = serve(&syncer).await;
    let total = state_sync_server::MAX_LINGERING + 20;
    for n in 0..total {
        let mut client = RawClient::connect(&url, "drop", None).await;
        client
            .send(
                json!({"type": 2, "data": {"stateIdentifier": "room", "session": format!("s{n}")}}),
            )
            .await;
        client.expect(7).await;
        drop(client);
    }
    eventually("every connection is gone", || {
        syncer.connection_count() == 0
    })
    .await;
    let present = syncer.presence_of_state("room").unwrap().len();
    assert_eq!(present, state_sync_server::MAX_LINGERING);
}

#[tokio::test]
async fn hooks_and_the_public_identity() {
    let joined: Arc<Mutex<Vec<String>>> = Arc::default();
    let left: Arc<Mutex<Vec<String>>> = Arc::default();
    let (j, l) = (Arc::clone(&joined), Arc::clone(&left));
    let syncer = StateSyncer::builder()
        .authorize(|request| {
            let name = request.identifier.clone();
            std::future::ready(Ok(json!({"name": name, "secret": "s3cret"})))
        })
        .build();
    syncer
        .create_state(
            StateOptions::new()
                .identifier("room")
                .public_identity(|_identifier, client: &Value| json!({"name": client["name"]}))
                .on_join(move |p: &Present| {
                    j.lock().unwrap().push(p.identifier.clone());
                    assert!(p.identifier != "boom", "a join hook that panics");
                })
                .on_leave(move |p: &Present| l.lock().unwrap().push(p.identifier.clone())),
        )
        .unwrap();
    syncer
        .create_state(
            StateOptions::new()
                .identifier("broken")
                .public_identity(|_, _: &Value| panic!("identity hook")),
        )
        .unwrap();
    let (_server, url) = serve(&syncer).await;
    let ann = Client::connect(&url, "ann", None).await.unwrap();
    ann.connect_to_state("room").await.unwrap();
    let boom = Client::connect(&url, "boom", None).await.unwrap();
    boom.connect_to_state("room").await.unwrap();
    eventually("ann sees boom", || ann.others().len() == 1).await;
    // Others see the public identity only.
    assert_eq!(ann.others()[0].user, json!({"name": "boom"}));
    let present = syncer.presence_of_state("room").unwrap();
    assert_eq!(present[0].identifier, "ann");
    assert_eq!(present[1].user, json!({"name": "boom"}));
    boom.close().await;
    eventually("hooks ran in order", || left.lock().unwrap().len() == 1).await;
    assert_eq!(*joined.lock().unwrap(), ["ann", "boom"]);
    assert_eq!(*left.lock().unwrap(), ["boom"]);
    // A public_identity hook that panics fails the attach, not the server.
    let error = ann.connect_to_state("broken").await.unwrap_err();
    assert!(
        error.to_string().contains("public_identity hook failed"),
        "{error}"
    );
    ann.connect_to_state("room").await.unwrap();
    // Removing the state: everyone leaves.
    syncer.remove_state("room");
    eventually("ann left with the state", || {
        left.lock().unwrap().len() == 2
    })
    .await;
    assert!(syncer.presence_of_state("room").is_none());
}

#[tokio::test]
async fn attach_loops_cost_the_others_nothing_and_a_reattach_keeps_the_entry() {
    let syncer = StateSyncer::new();
    for id in ["room", "hall"] {
        syncer
            .create_state(StateOptions::new().identifier(id))
            .unwrap();
    }
    let (_server, url) = serve(&syncer).await;
    let mut watcher = RawClient::connect(&url, "w", None).await;
    attach_watching(&mut watcher, "room", json!({})).await;
    // A client attaches to the room and leaves it again, a thousand times, asking for
    // presence and not: entries that nobody saw come and go without a word.
    let mut looper = RawClient::connect(&url, "loop", None).await;
    for n in 0..1000 {
        looper
            .send(json!({"type": 2, "data": {"stateIdentifier": "room", "presence": {"n": n}}}))
            .await;
        looper
            .send(json!({"type": 2, "data": {"stateIdentifier": "hall"}}))
            .await;
    }
    // Its last attach is answered: everything before it was handled.
    looper
        .send(json!({"type": 2, "data": {"stateIdentifier": "hall", "session": "z"}}))
        .await;
    loop {
        let message = looper.recv().await;
        if message["type"] == 7 && message["data"]["version"] == 0 {
            // Count the answers: 2001 attaches.
            break;
        }
    }
    let mut frames = 0;
    let mut changes = 0;
    while let Ok(message) =
        tokio::time::timeout(Duration::from_millis(300), watcher.expect(12)).await
    {
        frames += 1;
        changes += message["changes"].as_array().unwrap().len();
    }
    assert!(
        changes <= 40,
        "{changes} changes in {frames} frames for 1,000 unseen attaches"
    );
    // Re-attaching to the same state with its session keeps the entry: same id, no
    // leave nor join, only the new presence.
    let mut tab = RawClient::connect(&url, "ann", None).await;
    let first = attach_watching(
        &mut tab,
        "room",
        json!({"session": "s", "presence": {"v": 1}}),
    )
    .await;
    let id = first["self"].clone();
    let joined = watcher.expect(12).await;
    assert_eq!(joined["changes"][0]["event"], "join");
    let again = attach_watching(
        &mut tab,
        "room",
        json!({"session": "s", "presence": {"v": 2}}),
    )
    .await;
    assert_eq!(again["self"], id);
    let changed = watcher.expect(12).await;
    assert_eq!(
        changed,
        json!({"changes": [{"event": "update", "id": id, "presence": {"v": 2}}]})
    );
    // Without a session there is nothing to take back: a new entry joins, then the
    // old one leaves.
    let mut plain = RawClient::connect(&url, "bo", None).await;
    let first = attach_watching(&mut plain, "room", json!({})).await;
    watcher.expect(12).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let again = attach_watching(&mut plain, "room", json!({})).await;
    assert_ne!(again["self"], first["self"]);
    let mut events = Vec::new();
    while events.len() < 2 {
        let changed = watcher.expect(12).await;
        for change in changed["changes"].as_array().unwrap() {
            events.push(change["event"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(events, ["join", "leave"]);
}
