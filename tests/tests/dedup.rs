//! Sessions and request ids: an update retried after a reconnect is answered with its
//! first outcome, never applied twice.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::json;
use state_sync_server::StateSyncer;
use state_sync_tests::{RawClient, serve, serve_states, vetoing_state};

#[tokio::test]
async fn a_retried_update_is_acknowledged_again_not_applied_again() {
    let syncer = StateSyncer::new();
    syncer.create_state(vetoing_state("counter")).unwrap();
    let (server, url) = serve(&syncer).await;
    let mut watcher = RawClient::connect(&url, "w", None).await;
    watcher.attach("counter").await;

    let mut first = RawClient::connect(&url, "c", None).await;
    first.attach_session("counter", "session-1").await;
    first.update_with_id(json!({"n": 1}), 1).await;
    first.update_with_id(json!({"forbidden": true}), 2).await;
    assert_eq!(first.expect(3).await["requestId"], 1);
    assert_eq!(first.expect(9).await["reason"], "vetoed");
    drop(first);

    // The same session reconnects and resends both, plus a new one.
    let mut second = RawClient::connect(&url, "c", None).await;
    assert_eq!(
        second.attach_session("counter", "session-1").await,
        json!({"state": {"n": 1}, "version": 1})
    );
    second.update_with_id(json!({"n": 1}), 1).await;
    second.update_with_id(json!({"forbidden": true}), 2).await;
    second.update_with_id(json!({"n": 2}), 3).await;
    assert_eq!(
        second.expect(3).await,
        json!({"updates": {"n": 1}, "version": 1, "requestId": 1}),
        "replayed"
    );
    assert_eq!(
        second.expect(9).await["reason"],
        "vetoed",
        "a vetoed update fails again"
    );
    assert_eq!(
        second.expect(3).await,
        json!({"updates": {"n": 2}, "version": 2, "requestId": 3})
    );

    assert_eq!(
        syncer.version_of_state("counter"),
        Some(2),
        "each update applied exactly once"
    );
    assert_eq!(watcher.expect(3).await["version"], 1);
    assert_eq!(watcher.expect(3).await["version"], 2);
    watcher
        .expect_silence(std::time::Duration::from_millis(100))
        .await;
    server.shutdown().await;
}

#[tokio::test]
async fn sessions_are_per_state_and_updates_without_one_are_not_deduplicated() {
    let (_syncer, server, url) = serve_states(&["s"]).await;
    let mut client = RawClient::connect(&url, "c", None).await;
    client.attach("s").await;
    client.update_with_id(json!({"a": 1}), 1).await;
    client.update_with_id(json!({"a": 1}), 1).await;
    assert_eq!(client.expect(3).await["version"], 1);
    assert_eq!(
        client.expect(3).await["version"],
        2,
        "no session: the original's behaviour"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_request_older_than_the_window_fails_with_outcome_unknown() {
    let (syncer, server, url) = serve_states(&["s"]).await;
    let mut client = RawClient::connect(&url, "c", None).await;
    client.attach_session("s", "sess").await;
    let window = state_sync_server::protocol::DEDUP_WINDOW as u64;
    for id in 1..=window + 1 {
        client.update_with_id(json!({"i": id}), id).await;
        client.expect(3).await;
    }
    client.update_with_id(json!({"i": 1}), 1).await;
    assert_eq!(client.expect(9).await["reason"], "outcomeUnknown");
    client.update_with_id(json!({"i": 2}), 2).await;
    assert_eq!(client.expect(3).await["version"], 2, "still remembered");
    assert_eq!(syncer.version_of_state("s"), Some(window + 1));
    server.shutdown().await;
}

#[tokio::test]
async fn request_id_zero_is_an_ordinary_first_request() {
    let (syncer, server, url) = serve_states(&["s"]).await;
    let mut client = RawClient::connect(&url, "c", None).await;
    client.attach_session("s", "sess").await;
    client.update_with_id(json!({"z": 0}), 0).await;
    assert_eq!(
        client.expect(3).await,
        json!({"updates": {"z": 0}, "version": 1, "requestId": 0})
    );
    client.update_with_id(json!({"z": 0}), 0).await;
    assert_eq!(
        client.expect(3).await["version"],
        1,
        "replayed, not applied again"
    );
    assert_eq!(syncer.version_of_state("s"), Some(1));
    server.shutdown().await;
}

#[tokio::test]
async fn sessions_of_different_clients_do_not_collide() {
    let (syncer, server, url) = serve_states(&["s"]).await;
    let mut alice = RawClient::connect(&url, "alice", None).await;
    let mut bob = RawClient::connect(&url, "bob", None).await;
    alice.attach_session("s", "same").await;
    bob.attach_session("s", "same").await;
    alice.update_with_id(json!({"a": 1}), 1).await;
    assert_eq!(alice.expect(3).await["requestId"], 1);
    bob.expect(3).await;
    bob.update_with_id(json!({"b": 1}), 1).await;
    assert_eq!(
        bob.expect(3).await,
        json!({"updates": {"b": 1}, "version": 2, "requestId": 1})
    );
    assert_eq!(syncer.version_of_state("s"), Some(2));
    server.shutdown().await;
}
