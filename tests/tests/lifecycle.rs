//! How states die (self-destruct, ttl, removal) and how the server stops.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use serde_json::json;
use state_sync_server::{CreateStateError, StateOptions, StateSyncer};
use state_sync_tests::{RawClient, eventually, serve, serve_states};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

#[tokio::test]
async fn create_state_generates_identifiers_and_refuses_duplicates() {
    let syncer = StateSyncer::new();
    let id = syncer.create_state(StateOptions::new()).unwrap();
    assert!(uuid_like(&id), "{id}");
    assert_eq!(syncer.value_of_state(&id), Some(Default::default()));
    assert_eq!(
        syncer.create_state(StateOptions::new().identifier(id.clone())),
        Err(CreateStateError::AlreadyExists(id))
    );
    assert!(matches!(
        syncer.create_state(StateOptions::new().initial_value(json!([1]))),
        Err(CreateStateError::InitialValueNotAnObject(_))
    ));
    assert_eq!(
        syncer.create_state(StateOptions::new().identifier("")),
        Err(CreateStateError::EmptyIdentifier)
    );
}

fn uuid_like(id: &str) -> bool {
    id.len() == 36 && id.chars().nth(14) == Some('4')
}

#[tokio::test]
async fn self_destruct_is_asked_on_every_disconnect_and_removes_the_state() {
    let syncer = StateSyncer::new();
    syncer
        .create_state(
            StateOptions::new()
                .identifier("room")
                .self_destruct(|clients_left, _created| clients_left == 0),
        )
        .unwrap();
    let (server, url) = serve(&syncer).await;
    let mut a = RawClient::connect(&url, "a", None).await;
    let mut b = RawClient::connect(&url, "b", None).await;
    a.attach("room").await;
    b.attach("room").await;
    a.send_message(tokio_tungstenite::tungstenite::Message::Close(None))
        .await;
    eventually("syncer.clients_of_state(\"room\") == Some(1)", || {
        syncer.clients_of_state("room") == Some(1)
    })
    .await;
    assert!(
        syncer.value_of_state("room").is_some(),
        "one client is left"
    );
    drop(b);
    eventually("syncer.value_of_state(\"room\").is_none()", || {
        syncer.value_of_state("room").is_none()
    })
    .await;
    server.shutdown().await;
}

#[tokio::test]
async fn re_attaching_to_the_same_state_is_not_leaving_it() {
    let syncer = StateSyncer::new();
    let asked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = std::sync::Arc::clone(&asked);
    syncer
        .create_state(StateOptions::new().identifier("room").self_destruct(
            move |clients_left, _| {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                clients_left == 0
            },
        ))
        .unwrap();
    syncer
        .create_state(StateOptions::new().identifier("other"))
        .unwrap();
    let (server, url) = serve(&syncer).await;
    let mut client = RawClient::connect(&url, "a", None).await;
    client.attach("room").await;
    client.attach("room").await;
    client.update(json!({"still": "here"})).await;
    assert_eq!(client.expect(3).await["updates"], json!({"still": "here"}));
    assert_eq!(asked.load(std::sync::atomic::Ordering::SeqCst), 0);
    // Moving to another state is leaving: the hook removes the empty room.
    client.attach("other").await;
    eventually("syncer.value_of_state(\"room\").is_none()", || {
        syncer.value_of_state("room").is_none()
    })
    .await;
    server.shutdown().await;
}

#[tokio::test]
async fn ttl_removes_the_state_and_tells_its_clients() {
    let syncer = StateSyncer::new();
    syncer
        .create_state(
            StateOptions::new()
                .identifier("short")
                .ttl(Duration::from_millis(300)),
        )
        .unwrap();
    let (server, url) = serve(&syncer).await;
    let mut client = RawClient::connect(&url, "a", None).await;
    client.attach("short").await;
    let notice = client.expect(1).await;
    assert_eq!(
        notice,
        json!({"stateIdentifier": "short", "message": "State short expired"})
    );
    assert!(syncer.value_of_state("short").is_none());
    client.update(json!({"k": 1})).await;
    assert_eq!(client.expect(9).await["reason"], "stateDoesNotExist");
    // The identifier is free again.
    syncer
        .create_state(StateOptions::new().identifier("short"))
        .unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn ttl_holds_without_a_runtime_too() {
    // Created outside any runtime: no timer, but the state still expires on lookup.
    let syncer = std::thread::spawn(|| {
        let syncer = StateSyncer::new();
        syncer
            .create_state(
                StateOptions::new()
                    .identifier("s")
                    .ttl(Duration::from_millis(50)),
            )
            .unwrap();
        syncer
    })
    .join()
    .unwrap();
    assert!(syncer.value_of_state("s").is_some());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(syncer.value_of_state("s").is_none());
    assert!(syncer.state_identifiers().is_empty());
}

#[tokio::test]
async fn remove_state_tells_attached_clients_and_detaches_them() {
    let (syncer, server, url) = serve_states(&["a", "b"]).await;
    let mut client = RawClient::connect(&url, "c", None).await;
    client.attach("a").await;
    assert!(syncer.remove_state("a"));
    assert!(!syncer.remove_state("a"));
    assert_eq!(
        client.expect(1).await,
        json!({"stateIdentifier": "a", "message": "State a was removed"})
    );
    client.update(json!({"k": 1})).await;
    assert_eq!(client.expect(9).await["reason"], "stateDoesNotExist");
    // The connection stays usable.
    client.attach("b").await;
    assert_eq!(syncer.remove_all_states(), 1);
    assert_eq!(client.expect(1).await["stateIdentifier"], "b");
    assert!(syncer.state_identifiers().is_empty());
    server.shutdown().await;
}

#[tokio::test]
async fn shutdown_closes_every_connection_with_going_away() {
    let (syncer, server, url) = serve_states(&["s"]).await;
    let mut a = RawClient::connect(&url, "a", None).await;
    let mut b = RawClient::connect(&url, "b", None).await;
    a.attach("s").await;
    let addr = server.local_addr();
    server.shutdown().await;
    for client in [&mut a, &mut b] {
        let frame = client.expect_close().await.expect("a close frame");
        assert_eq!(frame.code, CloseCode::Away);
    }
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the listener is closed"
    );
    assert_eq!(syncer.clients_of_state("s"), Some(0));
    // The syncer keeps its states and can serve again.
    let (server, url) = serve(&syncer).await;
    let mut c = RawClient::connect(&url, "c", None).await;
    c.attach("s").await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_failed_attach_leaves_the_connection_attached_to_nothing() {
    let (syncer, server, url) = serve_states(&["a"]).await;
    let mut client = RawClient::connect(&url, "c", None).await;
    client.attach("a").await;
    client
        .send(json!({"type": 2, "data": {"stateIdentifier": "missing"}}))
        .await;
    assert_eq!(
        client.expect(8).await,
        json!({"message": "State with identifier missing does not exist"})
    );
    assert_eq!(syncer.clients_of_state("a"), Some(0));
    // Updates of the old state no longer reach it, and it cannot update it.
    let mut other = RawClient::connect(&url, "o", None).await;
    other.attach("a").await;
    other.update(json!({"k": 1})).await;
    other.expect(3).await;
    client.expect_silence(Duration::from_millis(200)).await;
    client.update(json!({"k": 2})).await;
    assert_eq!(client.expect(9).await["reason"], "notAttached");
    assert_eq!(syncer.version_of_state("a"), Some(1));
    server.shutdown().await;
}
