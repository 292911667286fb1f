//! Review probes: attach semantics, ordering under attach storms, state size.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use serde_json::json;
use state_sync_server::{StateOptions, StateSyncer};
use state_sync_tests::{RawClient, serve, serve_states};

/// docs/protocol.md: "A failed attach (8) leaves the connection attached to nothing".
/// A CONNECT_TO_STATE that cannot be read (bad session, bad lastSent, no
/// stateIdentifier) is answered 8 too; the connection should be detached as well.
#[tokio::test]
async fn an_attach_answered_8_because_it_could_not_be_read_detaches_too() {
    for bad in [
        json!({"type": 2, "data": {"stateIdentifier": "b", "session": ""}}),
        json!({"type": 2, "data": {"stateIdentifier": "b", "session": "s", "lastSent": -1}}),
        json!({"type": 2, "data": {}}),
    ] {
        let (_syncer, server, url) = serve_states(&["a", "b"]).await;
        let mut client = RawClient::connect(&url, "c", None).await;
        client.attach("a").await;
        client.send(bad.clone()).await;
        client.expect(8).await;
        // As after any other 8: an update is refused with notAttached.
        client.update_with_id(json!({"n": 1}), 1).await;
        let answer = client.recv().await;
        assert_eq!(
            answer["data"]["reason"], "notAttached",
            "after 8 for {bad}, the update was answered {answer}"
        );
        server.shutdown().await;
    }
}

/// Clients re-attaching over and over (to the same state, and to another one and
/// back) while updates stream: after each 7 with version v, the next updates of that
/// state are v+1, v+2, ... with no gap and no repeat, and nothing of the other state.
#[tokio::test]
async fn re_attach_storm_while_updates_stream() {
    let (syncer, server, url) = serve_states(&["s", "t"]).await;
    syncer
        .update_state_value("s", json!({"big": "x".repeat(400_000)}), None)
        .await
        .unwrap();
    let total = 2_000u64;
    let writer = {
        let syncer = syncer.clone();
        tokio::spawn(async move {
            for n in 0..total {
                syncer
                    .update_state_value("s", json!({ "n": n }), None)
                    .await
                    .unwrap();
                syncer
                    .update_state_value("t", json!({ "m": n }), None)
                    .await
                    .unwrap();
                if n % 8 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        })
    };
    let mut tasks = Vec::new();
    for c in 0..6 {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let mut client = RawClient::connect(&url, &format!("c{c}"), None).await;
            for round in 0..15 {
                let target = if c % 2 == 1 && round % 3 == 1 {
                    "t"
                } else {
                    "s"
                };
                client
                    .send(json!({"type": 2, "data": {"stateIdentifier": target}}))
                    .await;
                // Frames of the previous attachment may come first; then the 7.
                let snapshot = loop {
                    let v = client.recv().await;
                    if v["type"] == 7 {
                        break v["data"].clone();
                    }
                    assert_eq!(v["type"], 3, "{v}");
                };
                let mut version = snapshot["version"].as_u64().unwrap();
                let key = if target == "s" { "n" } else { "m" };
                for _ in 0..20 {
                    let update = client.expect(3).await;
                    assert_eq!(
                        update["version"],
                        version + 1,
                        "client {c} round {round}: {update}"
                    );
                    assert!(
                        update["updates"].get(key).is_some(),
                        "wrong state: {update}"
                    );
                    version += 1;
                    if version >= total {
                        break;
                    }
                }
            }
        }));
    }
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(120), t)
            .await
            .expect("storm finished")
            .unwrap();
    }
    writer.abort();
    server.shutdown().await;
}

/// The counted size of a state is its JSON text: a state of exactly
/// `max_state_bytes` bytes is within the limit (initial value and update).
#[tokio::test]
async fn a_state_of_exactly_the_limit_is_accepted() {
    let limit = 100;
    let syncer = StateSyncer::builder().max_state_bytes(limit).build();
    // {"k":"<pad>"} is 8 bytes plus the pad.
    let value = json!({"k": "x".repeat(limit - 8)});
    assert_eq!(value.to_string().len(), limit);
    let created = syncer.create_state(StateOptions::new().identifier("s").initial_value(value));
    assert!(
        created.is_ok(),
        "a {limit}-byte initial value was refused: {created:?}"
    );
}

#[tokio::test]
async fn an_update_to_exactly_the_limit_is_accepted() {
    let limit = 100;
    let syncer = StateSyncer::builder().max_state_bytes(limit).build();
    syncer
        .create_state(StateOptions::new().identifier("s"))
        .unwrap();
    let (server, url) = serve(&syncer).await;
    let mut c = RawClient::connect(&url, "c", None).await;
    c.attach("s").await;
    // A key with an escape, a unicode value, a float, a null; then overwrite to fit.
    let first = json!({"q\"k": "é\u{1}", "f": 1e2, "z": null});
    c.update_with_id(first, 1).await;
    assert_eq!(c.expect(3).await["version"], 1);
    let now = serde_json::to_string(&syncer.value_of_state("s").unwrap())
        .unwrap()
        .len();
    // Overwrite "z" with a string that makes the whole text exactly `limit` bytes:
    // "z":null (8) becomes "z":"<pad>" (6 + pad).
    let pad = limit - now + 8 - 6;
    c.update_with_id(json!({"z": "y".repeat(pad)}), 2).await;
    let answer = c.recv().await;
    let real = serde_json::to_string(&syncer.value_of_state("s").unwrap())
        .unwrap()
        .len();
    assert_eq!(
        answer["type"], 3,
        "refused though the state would be {limit} bytes: {answer} (now {real})"
    );
    assert_eq!(real, limit);
    server.shutdown().await;
}
