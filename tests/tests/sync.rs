//! Attaching, updating and broadcasting, as a client of the original sees it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::json;
use state_sync_server::{StateOptions, StateSyncer};
use state_sync_tests::{RawClient, serve, serve_states};

#[tokio::test]
async fn attach_returns_the_whole_state_and_its_version() {
    let syncer = StateSyncer::new();
    syncer
        .create_state(
            StateOptions::new()
                .identifier("chat")
                .initial_value(json!({"chatMessages": [], "title": "t"})),
        )
        .unwrap();
    let (server, url) = serve(&syncer).await;
    let mut client = RawClient::connect(&url, "alice", None).await;
    let data = client.attach("chat").await;
    assert_eq!(
        data,
        json!({"state": {"chatMessages": [], "title": "t"}, "version": 0})
    );
    server.shutdown().await;
}

#[tokio::test]
async fn two_clients_see_every_update_in_the_same_order_and_the_sender_its_echo() {
    let (syncer, server, url) = serve_states(&["s"]).await;
    let mut a = RawClient::connect(&url, "a", None).await;
    let mut b = RawClient::connect(&url, "b", None).await;
    a.attach("s").await;
    b.attach("s").await;
    // Both send at once; each update carries who sent it and a sequence number.
    tokio::join!(
        async {
            for i in 0..50 {
                a.update(json!({"from_a": i})).await;
            }
        },
        async {
            for i in 0..50 {
                b.update(json!({"from_b": i})).await;
            }
        }
    );
    let mut seen_by_a = Vec::new();
    let mut seen_by_b = Vec::new();
    for _ in 0..100 {
        seen_by_a.push(a.expect(3).await);
        seen_by_b.push(b.expect(3).await);
    }
    assert_eq!(
        seen_by_a, seen_by_b,
        "both clients see the same updates in the same order"
    );
    let versions: Vec<u64> = seen_by_a
        .iter()
        .map(|d| d["version"].as_u64().unwrap())
        .collect();
    assert_eq!(versions, (1..=100).collect::<Vec<_>>());
    let from_a: Vec<_> = seen_by_a
        .iter()
        .filter_map(|d| d["updates"]["from_a"].as_i64())
        .collect();
    assert_eq!(
        from_a,
        (0..50).collect::<Vec<_>>(),
        "a's own updates come back to it, in order"
    );
    let state = syncer.value_of_state("s").unwrap();
    assert_eq!(json!(state), json!({"from_a": 49, "from_b": 49}));
    server.shutdown().await;
}

#[tokio::test]
async fn updates_are_shallow_merged() {
    let syncer = StateSyncer::new();
    syncer
        .create_state(
            StateOptions::new()
                .identifier("s")
                .initial_value(json!({"a": {"x": 1, "y": 2}, "b": 1})),
        )
        .unwrap();
    let (server, url) = serve(&syncer).await;
    let mut client = RawClient::connect(&url, "c", None).await;
    client.attach("s").await;
    client.update(json!({"a": {"x": 3}})).await;
    assert_eq!(
        client.expect(3).await,
        json!({"updates": {"a": {"x": 3}}, "version": 1})
    );
    assert_eq!(
        json!(syncer.value_of_state("s").unwrap()),
        json!({"a": {"x": 3}, "b": 1})
    );
    server.shutdown().await;
}

#[tokio::test]
async fn the_request_id_is_echoed_to_the_sender_only() {
    let (_syncer, server, url) = serve_states(&["s"]).await;
    let mut sender = RawClient::connect(&url, "a", None).await;
    let mut other = RawClient::connect(&url, "b", None).await;
    sender.attach("s").await;
    other.attach("s").await;
    sender
        .send(json!({"type": 3, "data": {"updates": {"k": 1}, "requestId": 41}}))
        .await;
    assert_eq!(
        sender.expect(3).await,
        json!({"updates": {"k": 1}, "version": 1, "requestId": 41})
    );
    assert_eq!(
        other.expect(3).await,
        json!({"updates": {"k": 1}, "version": 1})
    );
    server.shutdown().await;
}

#[tokio::test]
async fn attaching_to_a_missing_state_or_updating_unattached_fails_with_the_original_types() {
    let syncer = StateSyncer::new();
    let (server, url) = serve(&syncer).await;
    let mut client = RawClient::connect(&url, "a", None).await;
    client
        .send(json!({"type": 2, "data": {"stateIdentifier": "nope"}}))
        .await;
    assert_eq!(
        client.expect(8).await,
        json!({"message": "State with identifier nope does not exist"})
    );
    client.update(json!({"k": 1})).await;
    let data = client.expect(9).await;
    assert_eq!(data["reason"], "notAttached");
    assert!(
        data["message"]
            .as_str()
            .unwrap()
            .starts_with("Could not update state")
    );
    server.shutdown().await;
}

#[tokio::test]
async fn attaching_to_another_state_detaches_from_the_first() {
    let (syncer, server, url) = serve_states(&["one", "two"]).await;
    let mut mover = RawClient::connect(&url, "m", None).await;
    let mut stayer = RawClient::connect(&url, "s", None).await;
    stayer.attach("one").await;
    mover.attach("one").await;
    mover.attach("two").await;
    assert_eq!(syncer.clients_of_state("one"), Some(1));
    assert_eq!(syncer.clients_of_state("two"), Some(1));
    stayer.update(json!({"k": 1})).await;
    stayer.expect(3).await;
    mover.update(json!({"in_two": true})).await;
    assert_eq!(
        mover.expect(3).await["updates"],
        json!({"in_two": true}),
        "mover hears only state two"
    );
    assert_eq!(
        json!(syncer.value_of_state("two").unwrap()),
        json!({"in_two": true})
    );
    server.shutdown().await;
}

#[tokio::test]
async fn clients_with_the_same_identifier_are_independent() {
    // The original dropped every connection of an identifier when one disconnected.
    let (syncer, server, url) = serve_states(&["s"]).await;
    let mut first = RawClient::connect(&url, "same", None).await;
    let mut second = RawClient::connect(&url, "same", None).await;
    first.attach("s").await;
    second.attach("s").await;
    drop(first);
    tokio::time::timeout(state_sync_tests::PATIENCE, async {
        while syncer.clients_of_state("s") != Some(1) {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap();
    syncer
        .update_state_value("s", json!({"k": 1}), None)
        .await
        .unwrap();
    assert_eq!(second.expect(3).await["updates"], json!({"k": 1}));
    server.shutdown().await;
}

#[tokio::test]
async fn server_updates_reach_clients_and_report_the_version() {
    let (syncer, server, url) = serve_states(&["s"]).await;
    let mut client = RawClient::connect(&url, "a", None).await;
    client.attach("s").await;
    let applied = syncer
        .update_state_value("s", json!({"x": 1}), None)
        .await
        .unwrap();
    assert_eq!(applied.version, 1);
    assert_eq!(
        client.expect(3).await,
        json!({"updates": {"x": 1}, "version": 1})
    );
    assert_eq!(syncer.version_of_state("s"), Some(1));
    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct Typed {
        x: u32,
    }
    assert_eq!(
        syncer.value_of_state_as::<Typed>("s").unwrap(),
        Some(Typed { x: 1 })
    );
    assert!(syncer.value_of_state_as::<Vec<u8>>("s").is_err());
    assert!(
        syncer
            .update_state_value("s", json!([1]), None)
            .await
            .is_err()
    );
    assert!(
        syncer
            .update_state_value("missing", json!({}), None)
            .await
            .is_err()
    );
    server.shutdown().await;
}
