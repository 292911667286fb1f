//! Sessions and request ids: an update retried after a reconnect is answered with its
//! first outcome, never applied twice.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::json;
use state_sync_server::{StateOptions, StateSyncer};
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

#[tokio::test]
async fn session_logs_keep_at_most_their_byte_budget_and_answer_old_retries_with_the_version() {
    let syncer = StateSyncer::builder()
        .session_log_bytes_per_state(2 << 20)
        .session_log_bytes(3 << 20)
        .build();
    for id in ["one", "two"] {
        syncer
            .create_state(StateOptions::new().identifier(id))
            .unwrap();
    }
    let (server, url) = serve(&syncer).await;
    // 48 updates of ~0.5 MB each to one key, then the key set to null: what the
    // session logs keep must stay within the budget, not grow with what was sent.
    let big = "x".repeat(500_000);
    for state in ["one", "two"] {
        let mut client = RawClient::connect(&url, "c", None).await;
        client.attach_session(state, "s").await;
        for id in 1..=48 {
            client.update_with_id(json!({ "k": big }), id).await;
            client.expect(3).await;
            assert!(
                syncer.session_log_bytes() <= 3 << 20,
                "{}",
                syncer.session_log_bytes()
            );
        }
        client.update_with_id(json!({ "k": null }), 49).await;
        client.expect(3).await;
    }
    assert!(syncer.session_log_bytes() <= 3 << 20);
    // The oldest retry is answered with its version alone, the newest in full.
    let mut again = RawClient::connect(&url, "c", None).await;
    again.attach_session("one", "s").await;
    again.update_with_id(json!({ "k": big }), 1).await;
    assert_eq!(
        again.expect(3).await,
        json!({"updates": {}, "version": 1, "requestId": 1})
    );
    again.update_with_id(json!({ "k": null }), 49).await;
    assert_eq!(
        again.expect(3).await,
        json!({"updates": {"k": null}, "version": 49, "requestId": 49})
    );
    assert_eq!(
        syncer.version_of_state("one"),
        Some(49),
        "nothing applied twice"
    );
    syncer.remove_all_states();
    assert_eq!(syncer.session_log_bytes(), 0, "released with the states");
    server.shutdown().await;
}

#[tokio::test]
async fn another_client_flooding_sessions_cannot_make_a_retry_apply_twice() {
    let (syncer, server, url) = serve_states(&["s"]).await;
    let mut victim = RawClient::connect(&url, "victim", None).await;
    victim.attach_session("s", "v").await;
    victim.update_with_id(json!({"n": 1}), 1).await;
    victim.expect(3).await;
    drop(victim);
    // One connection may not cycle through session ids ...
    let mut flood = RawClient::connect(&url, "mallory", None).await;
    for i in 0..16 {
        flood.attach_session("s", &format!("f{i}")).await;
    }
    flood
        .send(json!({"type": 2, "data": {"stateIdentifier": "s", "session": "f16"}}))
        .await;
    assert!(
        flood.expect(8).await["message"]
            .as_str()
            .unwrap()
            .contains("at most 16 session ids"),
    );
    // ... and many connections of one identifier, together past the state's 4,096
    // sessions, push out only their own sessions.
    for i in 0..280 {
        let mut flood = RawClient::connect(&url, "mallory", None).await;
        for j in 0..16 {
            flood.attach_session("s", &format!("g{i}-{j}")).await;
        }
    }
    let mut victim = RawClient::connect(&url, "victim", None).await;
    victim.attach_session("s", "v").await;
    victim.update_with_id(json!({"n": 1}), 1).await;
    assert_eq!(
        victim.expect(3).await,
        json!({"updates": {"n": 1}, "version": 1, "requestId": 1})
    );
    assert_eq!(syncer.version_of_state("s"), Some(1));
    server.shutdown().await;
}

#[tokio::test]
async fn a_retry_into_a_forgotten_session_is_answered_outcome_unknown_not_applied() {
    let (syncer, server, url) = serve_states(&["s"]).await;
    let mut client = RawClient::connect(&url, "c", None).await;
    client.attach_session("s", "session").await;
    client.update_with_id(json!({"n": 1}), 1).await;
    client.expect(3).await;
    drop(client);
    // The state is re-created: its sessions are gone.
    let value = syncer.value_of_state("s").unwrap();
    syncer.remove_state("s");
    syncer
        .create_state(StateOptions::new().identifier("s").initial_value(value))
        .unwrap();
    let mut client = RawClient::connect(&url, "c", None).await;
    client
        .send(json!({"type": 2, "data": {"stateIdentifier": "s", "session": "session", "lastSent": 1}}))
        .await;
    client.expect(7).await;
    client.update_with_id(json!({"n": 1}), 1).await;
    assert_eq!(client.expect(9).await["reason"], "outcomeUnknown");
    client.update_with_id(json!({"n": 2}), 2).await;
    assert_eq!(client.expect(3).await["version"], 1);
    assert_eq!(syncer.version_of_state("s"), Some(1));
    server.shutdown().await;
}
