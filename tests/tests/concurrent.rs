//! Concurrent writers never lose data: conditional updates, functional updates and
//! atomic operations (append, increment, remove), over real sockets, with connections
//! dropped mid-run, and with the durable store.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use state_sync_client::{Client, Error, FailureReason, Update, UpdateFailure};
use state_sync_server::protocol::Operation;
use state_sync_server::{StateOptions, StateSyncer, Storage, UpdateError};
use state_sync_tests::{RawClient, serve, serve_states};

fn reason(error: &Error) -> Option<FailureReason> {
    match error {
        Error::Update(UpdateFailure::Rejected { reason, .. }) => Some(*reason),
        _ => None,
    }
}

#[tokio::test]
async fn a_stale_conditional_update_fails_with_conflict_and_changes_nothing() {
    let (syncer, server, url) = serve_states(&["s"]).await;
    let mut raw = RawClient::connect(&url, "raw", None).await;
    raw.attach_session("s", "session-1").await;
    raw.send(json!({"type": 3, "data": {"updates": {"a": 1}, "requestId": 1, "ifVersion": 0}}))
        .await;
    assert_eq!(raw.expect(3).await["version"], 1);
    // Computed from version 0, sent when the state is at 1.
    raw.send(json!({"type": 3, "data": {"updates": {"a": 2}, "requestId": 2, "ifVersion": 0}}))
        .await;
    let failed = raw.expect(9).await;
    assert_eq!(failed["reason"], "conflict", "{failed}");
    assert_eq!(failed["version"], 1, "{failed}");
    assert_eq!(failed["requestId"], 2, "{failed}");
    assert_eq!(
        Value::Object(syncer.value_of_state("s").unwrap()),
        json!({"a": 1})
    );
    // A retry of the same request is answered with its first outcome, even though it
    // would now match.
    raw.send(json!({"type": 3, "data": {"updates": {"a": 2}, "requestId": 2, "ifVersion": 1}}))
        .await;
    assert_eq!(raw.expect(9).await["reason"], "conflict");
    assert_eq!(
        Value::Object(syncer.value_of_state("s").unwrap()),
        json!({"a": 1})
    );
    // Malformed fields say what is wrong.
    raw.send(json!({"type": 3, "data": {"updates": {}, "ifVersion": "1"}}))
        .await;
    let failed = raw.expect(9).await;
    assert!(
        failed["message"].as_str().unwrap().contains("ifVersion"),
        "{failed}"
    );
    raw.send(json!({"type": 3, "data": {"updates": {"k": 1}, "ops": {"k": {"remove": true}}}}))
        .await;
    let failed = raw.expect(9).await;
    assert!(
        failed["message"].as_str().unwrap().contains("both"),
        "{failed}"
    );
    assert_eq!(failed["reason"], "invalid");

    // The native client: the same through its API.
    let client = Client::connect(&url, "native", None).await.unwrap();
    client.connect_to_state("s").await.unwrap();
    let error = client
        .update_state_if(json!({"a": 3}), 0)
        .await
        .unwrap_err();
    assert_eq!(reason(&error), Some(FailureReason::Conflict), "{error}");
    let applied = client.update_state_if(json!({"a": 3}), 1).await.unwrap();
    assert_eq!(applied.version, Some(2));
    // Server code too.
    let error = syncer
        .apply_update("s", Update::new().set_key("a", 4).if_version(1), None)
        .await
        .unwrap_err();
    assert_eq!(error, UpdateError::Conflict { version: 2 });
    client.close().await;
    server.shutdown().await;
}

#[tokio::test]
async fn operations_apply_atomically_and_reach_every_kind_of_client() {
    let syncer = StateSyncer::new();
    syncer
        .create_state(
            StateOptions::new()
                .identifier("s")
                .initial_value(json!({"list": [1], "n": 1, "gone": "x", "text": "t"})),
        )
        .unwrap();
    let (server, url) = serve(&syncer).await;
    // A client of the original protocol (no session, no extensions).
    let mut original = RawClient::connect(&url, "original", None).await;
    original.attach("s").await;
    let client = Client::connect(&url, "native", None).await.unwrap();
    client.connect_to_state("s").await.unwrap();
    // A listener hears whole values, and what they were before.
    let heard = Arc::new(std::sync::Mutex::new(Vec::new()));
    let listener = Client::connect(&url, "listener", None).await.unwrap();
    listener.connect_to_state("s").await.unwrap();
    let into = Arc::clone(&heard);
    listener.add_state_update_listener("l", &["list"], move |updates, previous| {
        into.lock()
            .unwrap()
            .push((updates["list"].clone(), previous.get("list").cloned()));
    });
    let applied = client
        .apply(
            Update::new()
                .append_capped("list", [json!(2), json!(3)], 2)
                .increment("n", 41)
                .remove_key("gone")
                .set_key("title", "new"),
        )
        .await
        .unwrap();
    assert_eq!(
        Value::Object((*applied.updates).clone()),
        json!({"title": "new", "list": [2, 3], "n": 42, "gone": null})
    );
    let expected = json!({"list": [2, 3], "n": 42, "text": "t", "title": "new"});
    assert_eq!(Value::Object(syncer.value_of_state("s").unwrap()), expected);
    assert_eq!(Value::Object(client.state()), expected);
    state_sync_tests::eventually("the listener hears", || !heard.lock().unwrap().is_empty()).await;
    assert_eq!(heard.lock().unwrap()[0], (json!([2, 3]), Some(json!([1]))));
    assert_eq!(Value::Object(listener.state()), expected);
    listener.close().await;
    // The original's clients get the resulting values; a removed key is null for them.
    let seen = original.expect(3).await;
    assert_eq!(
        seen["updates"],
        json!({"title": "new", "list": [2, 3], "n": 42, "gone": null})
    );
    assert_eq!(seen["removed"], json!(["gone"]));
    // An operation that does not fit the value fails, says why, and changes nothing.
    let error = client
        .apply(Update::new().append("text", [json!(1)]).increment("n", 1))
        .await
        .unwrap_err();
    assert_eq!(
        reason(&error),
        Some(FailureReason::InvalidOperation),
        "{error}"
    );
    assert!(error.to_string().contains("not an array"), "{error}");
    let error = client
        .apply(Update::new().increment("n", u64::MAX))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("out of range"), "{error}");
    assert_eq!(Value::Object(syncer.value_of_state("s").unwrap()), expected);
    client.close().await;
    server.shutdown().await;
}

#[tokio::test]
async fn the_interceptor_sees_rewrites_and_vetoes_operations() {
    let syncer: StateSyncer<String> = StateSyncer::builder()
        .authorize(|request| async move { Ok(request.identifier) })
        .build();
    syncer
        .create_state(
            StateOptions::new()
                .identifier("chat")
                .initial_value(json!({"messages": []}))
                .intercept_state_update(|mut update, user: Option<&String>| {
                    for (key, operation) in &mut update.ops {
                        match (key.as_str(), operation) {
                            ("messages", Operation::Append { items, max }) => {
                                // Stamp the author, and keep the history bounded.
                                for item in items.iter_mut() {
                                    item["author"] = json!(user?);
                                }
                                *max = Some(3);
                            }
                            ("messages", _) => return None,
                            _ => {}
                        }
                    }
                    Some(update)
                }),
        )
        .unwrap();
    let (server, url) = serve(&syncer).await;
    let client = Client::connect(&url, "ada", None).await.unwrap();
    client.connect_to_state("chat").await.unwrap();
    for n in 0..5 {
        client
            .apply(Update::new().append("messages", [json!({"text": n})]))
            .await
            .unwrap();
    }
    assert_eq!(
        Value::Object(syncer.value_of_state("chat").unwrap())["messages"],
        json!([
            {"text": 2, "author": "ada"},
            {"text": 3, "author": "ada"},
            {"text": 4, "author": "ada"}
        ])
    );
    let error = client
        .apply(Update::new().remove_key("messages"))
        .await
        .unwrap_err();
    assert_eq!(reason(&error), Some(FailureReason::Vetoed), "{error}");
    let error = client
        .apply(Update::new().increment("messages", 1))
        .await
        .unwrap_err();
    assert_eq!(reason(&error), Some(FailureReason::Vetoed), "{error}");
    assert_eq!(
        Value::Object(syncer.value_of_state("chat").unwrap())["messages"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    client.close().await;
    server.shutdown().await;
}

#[tokio::test]
async fn an_interceptor_that_changes_a_key_twice_fails_the_update_cleanly() {
    let syncer = StateSyncer::new();
    syncer
        .create_state(
            StateOptions::new()
                .identifier("s")
                .initial_value(json!({"a": [1], "b": 2}))
                // Sets the key it was asked to remove: not one change per key.
                .intercept_state_update(|mut update, _| {
                    update.set.insert("a".into(), json!("set"));
                    Some(update)
                }),
        )
        .unwrap();
    let (server, url) = serve(&syncer).await;
    let client = Client::connect(&url, "c", None).await.unwrap();
    client.connect_to_state("s").await.unwrap();
    let error = client
        .apply(Update::new().remove_key("a"))
        .await
        .unwrap_err();
    assert_eq!(
        reason(&error),
        Some(FailureReason::InvalidOperation),
        "{error}"
    );
    assert_eq!(
        Value::Object(syncer.value_of_state("s").unwrap()),
        json!({"a": [1], "b": 2})
    );
    // The state still takes updates.
    client.update_state(json!({"b": 3})).await.unwrap();
    client.close().await;
    server.shutdown().await;
}

const CLIENTS: usize = 50;
const ITEMS: usize = 100;

/// Drops every connection now and then until `stop`, so that clients reconnect and
/// resend mid-run.
fn chaos(syncer: &StateSyncer, stop: &Arc<AtomicBool>) -> tokio::task::JoinHandle<usize> {
    let syncer = syncer.clone();
    let stop = Arc::clone(stop);
    tokio::spawn(async move {
        let mut dropped = 0;
        while !stop.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(150)).await;
            for n in (0..CLIENTS).step_by(3) {
                dropped += syncer.disconnect_client(&format!("client-{n}"));
            }
        }
        dropped
    })
}

async fn clients(url: &str) -> Vec<Client> {
    let mut clients = Vec::new();
    for n in 0..CLIENTS {
        let client = Client::connect(url, &format!("client-{n}"), None)
            .await
            .unwrap();
        client.connect_to_state("s").await.unwrap();
        clients.push(client);
    }
    clients
}

async fn appends_all_land(drop_connections: bool) {
    let (syncer, server, url) = serve_states(&["s"]).await;
    let clients = clients(&url).await;
    let stop = Arc::new(AtomicBool::new(false));
    let chaos = drop_connections.then(|| chaos(&syncer, &stop));
    let mut tasks = Vec::new();
    for (n, client) in clients.iter().enumerate() {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            // All queued at once: they race with every other client's.
            let sends: Vec<_> = (0..ITEMS)
                .map(|i| client.apply(Update::new().append("items", [json!(format!("{n}-{i}"))])))
                .collect();
            for send in sends {
                send.await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    if let Some(chaos) = chaos {
        assert!(chaos.await.unwrap() > 0, "connections were dropped");
    }
    let state = Value::Object(syncer.value_of_state("s").unwrap());
    let items = state["items"].as_array().unwrap();
    let mut counts = BTreeMap::new();
    for item in items {
        *counts.entry(item.as_str().unwrap().to_owned()).or_insert(0) += 1;
    }
    assert_eq!(items.len(), CLIENTS * ITEMS, "every item, once");
    // Every client applied the appends itself, to the same result.
    let version = syncer.version_of_state("s").unwrap();
    for client in &clients {
        state_sync_tests::eventually("the client converges", || {
            client.state_version() == Some(version)
        })
        .await;
        assert_eq!(Value::Object(client.state()), state);
    }
    assert!(counts.values().all(|count| *count == 1));
    // Each client's items are in the order it sent them.
    for n in 0..CLIENTS {
        let mine: Vec<usize> = items
            .iter()
            .filter_map(|item| item.as_str()?.strip_prefix(&format!("{n}-"))?.parse().ok())
            .collect();
        assert_eq!(mine, (0..ITEMS).collect::<Vec<_>>());
    }
    for client in &clients {
        client.close().await;
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_clients_append_a_hundred_items_each_and_every_item_lands_once() {
    appends_all_land(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_all_land_with_connections_dropped_mid_run() {
    appends_all_land(true).await;
}

const INCREMENTS: usize = 20;

async fn functional_counter(drop_connections: bool) {
    let (syncer, server, url) = serve_states(&["s"]).await;
    let clients = clients(&url).await;
    let acknowledged = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let chaos = drop_connections.then(|| chaos(&syncer, &stop));
    let mut tasks = Vec::new();
    for client in &clients {
        let client = client.clone();
        let acknowledged = Arc::clone(&acknowledged);
        tasks.push(tokio::spawn(async move {
            let mut gave_up = 0;
            for _ in 0..INCREMENTS {
                let result = client
                    .update_state_with(|state| {
                        let count = state.get("count").and_then(Value::as_u64).unwrap_or(0);
                        json!({ "count": count + 1 })
                    })
                    .await;
                match result {
                    Ok(_) => {
                        acknowledged.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(error) if reason(&error) == Some(FailureReason::Conflict) => {
                        gave_up += 1;
                    }
                    Err(error) => panic!("{error}"),
                }
            }
            gave_up
        }));
    }
    let mut gave_up = 0;
    for task in tasks {
        gave_up += task.await.unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    if let Some(chaos) = chaos {
        assert!(chaos.await.unwrap() > 0, "connections were dropped");
    }
    let count = Value::Object(syncer.value_of_state("s").unwrap())["count"]
        .as_u64()
        .unwrap();
    let acknowledged = acknowledged.load(Ordering::Relaxed);
    assert_eq!(count, acknowledged, "{gave_up} gave up");
    assert!(
        acknowledged * 4 >= (CLIENTS * INCREMENTS) as u64 * 3,
        "most increments land: {acknowledged}, {gave_up} gave up"
    );
    for client in &clients {
        client.close().await;
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn functional_updates_on_a_shared_counter_count_every_acknowledged_increment() {
    functional_counter(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn functional_updates_count_right_with_connections_dropped_mid_run() {
    functional_counter(true).await;
}

#[tokio::test]
async fn a_functional_update_waits_for_the_connection_and_uses_the_state_it_finds() {
    let (syncer, server, url) = serve_states(&["s"]).await;
    let client = Client::connect(&url, "late", None).await.unwrap();
    client.connect_to_state("s").await.unwrap();
    // Offline: the server's state moves on meanwhile.
    syncer.disconnect_client("late");
    syncer
        .update_state_value("s", json!({"count": 10}), None)
        .await
        .unwrap();
    let applied = client
        .update_state_with(|state| {
            let count = state.get("count").and_then(Value::as_u64).unwrap_or(0);
            json!({ "count": count + 1 })
        })
        .await
        .unwrap();
    assert_eq!(applied.updates["count"], 11);
    assert_eq!(
        Value::Object(syncer.value_of_state("s").unwrap())["count"],
        11
    );
    client.close().await;
    server.shutdown().await;
}

#[tokio::test]
async fn operations_and_removals_are_durable() {
    let dir = std::env::temp_dir().join(format!("state-sync-ops-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    {
        let syncer: StateSyncer = StateSyncer::builder()
            .storage(Storage::open(&dir).unwrap())
            .build();
        syncer
            .create_state(
                StateOptions::new()
                    .identifier("s")
                    .initial_value(json!({"a": 1, "b": [1], "c": 0})),
            )
            .unwrap();
        syncer
            .apply_update(
                "s",
                Update::new()
                    .remove_key("a")
                    .append_capped("b", [json!(2), json!(3)], 2)
                    .increment("c", 5),
                None,
            )
            .await
            .unwrap();
        syncer
            .apply_update("s", Update::new().set_key("a", "back"), None)
            .await
            .unwrap();
        syncer.sync().await.unwrap();
        syncer.close_storage();
    }
    let syncer: StateSyncer = StateSyncer::builder()
        .storage(Storage::open(&dir).unwrap())
        .build();
    syncer
        .create_state(StateOptions::new().identifier("s"))
        .unwrap();
    let value = Value::Object(syncer.value_of_state("s").unwrap());
    assert_eq!(value, json!({"b": [2, 3], "c": 5, "a": "back"}));
    // The key order survives too: a removed and re-added key comes last.
    let keys: Vec<&String> = value.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["b", "c", "a"]);
    syncer.close_storage();
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn only_clients_that_accept_operations_receive_appends_as_operations() {
    let (_syncer, server, url) = serve_states(&["s"]).await;
    // A session alone (a third-party client of the session extension, or an older
    // build of ours) is not enough: it gets the whole array.
    let mut with_session = RawClient::connect(&url, "old", None).await;
    with_session.attach_session("s", "old-session").await;
    let mut accepting = RawClient::connect(&url, "new", None).await;
    accepting
        .send(json!({"type": 2, "data": {"stateIdentifier": "s", "session": "new-session", "acceptsOps": true}}))
        .await;
    accepting.expect(7).await;
    let client = Client::connect(&url, "writer", None).await.unwrap();
    client.connect_to_state("s").await.unwrap();
    for n in 0..2 {
        client
            .apply(Update::new().append("list", [json!(n)]))
            .await
            .unwrap();
    }
    let whole = with_session.expect(3).await;
    assert_eq!(whole["updates"], json!({"list": [0]}), "{whole}");
    assert!(whole.get("ops").is_none(), "{whole}");
    assert_eq!(
        with_session.expect(3).await["updates"],
        json!({"list": [0, 1]})
    );
    let compact = accepting.expect(3).await;
    assert_eq!(compact["updates"], json!({}), "{compact}");
    assert_eq!(
        compact["ops"],
        json!({"list": {"append": [0]}}),
        "{compact}"
    );
    // A malformed acceptsOps is refused with a message naming it.
    let mut bad = RawClient::connect(&url, "bad", None).await;
    bad.send(json!({"type": 2, "data": {"stateIdentifier": "s", "acceptsOps": "yes"}}))
        .await;
    let refused = bad.expect(8).await;
    assert!(
        refused["message"].as_str().unwrap().contains("acceptsOps"),
        "{refused}"
    );
    // A hand-built update that changes a key twice is refused before it is sent.
    let twice = Update {
        ops: vec![
            ("list".into(), Operation::Remove),
            ("list".into(), Operation::Increment(1.into())),
        ],
        ..Update::default()
    };
    let error = client.apply(twice).await.unwrap_err();
    assert_eq!(
        reason(&error),
        Some(FailureReason::InvalidOperation),
        "{error}"
    );
    client.close().await;
    server.shutdown().await;
}
