//! Malformed frames get an answer that says what was wrong, change nothing, and do not
//! affect other clients; limits are enforced cleanly.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use serde_json::{Value, json};
use state_sync_server::{StateOptions, StateSyncer};
use state_sync_tests::{RawClient, serve};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

async fn answer(client: &mut RawClient, frame: &str) -> Value {
    client.send_text(frame).await;
    client.recv().await
}

#[tokio::test]
async fn every_malformed_frame_is_answered_and_changes_nothing() {
    let syncer = StateSyncer::new();
    syncer
        .create_state(
            StateOptions::new()
                .identifier("s")
                .initial_value(json!({"k": "v"})),
        )
        .unwrap();
    let (server, url) = serve(&syncer).await;
    let mut bad = RawClient::connect(&url, "bad", None).await;
    let mut good = RawClient::connect(&url, "good", None).await;
    bad.attach("s").await;
    good.attach("s").await;

    let cases: &[(&str, u64, &str)] = &[
        ("{not json", 9, "not valid JSON"),
        ("null", 10, "Message type undefined is not supported"),
        ("[1,2]", 10, "Message type undefined is not supported"),
        (
            r#"{"data":{}}"#,
            10,
            "Message type undefined is not supported",
        ),
        (
            r#"{"type":99,"data":{}}"#,
            10,
            "Message type 99 is not supported",
        ),
        (
            r#"{"type":1,"data":{}}"#,
            10,
            "Message type 1 is not supported",
        ),
        (r#"{"type":3}"#, 9, "needs data.updates"),
        (r#"{"type":3,"data":{}}"#, 9, "Could not update state"),
        (
            r#"{"type":3,"data":{"updates":[1,2]}}"#,
            9,
            "must be a JSON object, got an array",
        ),
        (
            r#"{"type":3,"data":{"updates":"x"}}"#,
            9,
            "must be a JSON object, got a string",
        ),
        (
            r#"{"type":3,"data":{"updates":{},"requestId":"7"}}"#,
            9,
            "requestId",
        ),
        (
            r#"{"type":2,"data":{}}"#,
            8,
            "No stateIdentifier was supplied",
        ),
        (r#"{"type":2}"#, 8, "No stateIdentifier was supplied"),
        (
            r#"{"type":2,"data":{"stateIdentifier":[]}}"#,
            8,
            "must be a string",
        ),
    ];
    for (frame, code, text) in cases {
        let reply = answer(&mut bad, frame).await;
        assert_eq!(reply["type"], *code, "{frame} -> {reply}");
        let message = reply["data"]["message"].as_str().unwrap();
        assert!(message.contains(text), "{frame} -> {message}");
    }
    bad.send_message(Message::binary(vec![1, 2, 3])).await;
    let reply = bad.expect(9).await;
    assert!(
        reply["message"]
            .as_str()
            .unwrap()
            .contains("binary frames are not supported"),
        "{reply}"
    );

    assert_eq!(
        json!(syncer.value_of_state("s").unwrap()),
        json!({"k": "v"}),
        "the state is unchanged"
    );
    assert_eq!(syncer.version_of_state("s"), Some(0));
    good.expect_silence(Duration::from_millis(100)).await;
    // Both connections still work, and the bad client is still attached.
    bad.update(json!({"k": "w"})).await;
    assert_eq!(bad.expect(3).await["updates"], json!({"k": "w"}));
    assert_eq!(good.expect(3).await["updates"], json!({"k": "w"}));
    server.shutdown().await;
}

#[tokio::test]
async fn an_oversized_frame_is_answered_then_the_connection_closed_with_1009() {
    let syncer = StateSyncer::builder().max_message_size(1024).build();
    syncer
        .create_state(StateOptions::new().identifier("s"))
        .unwrap();
    let (server, url) = serve(&syncer).await;
    let mut big = RawClient::connect(&url, "big", None).await;
    let mut other = RawClient::connect(&url, "other", None).await;
    big.attach("s").await;
    other.attach("s").await;
    big.update(json!({"blob": "x".repeat(2000)})).await;
    let reply = big.expect(9).await;
    assert!(
        reply["message"]
            .as_str()
            .unwrap()
            .contains("exceeds the maximum of 1024 bytes"),
        "{reply}"
    );
    assert_eq!(
        big.expect_close().await.expect("close frame").code,
        CloseCode::Size
    );
    assert!(syncer.value_of_state("s").unwrap().is_empty());
    other.update(json!({"small": 1})).await;
    assert_eq!(other.expect(3).await["updates"], json!({"small": 1}));
    server.shutdown().await;
}

#[tokio::test]
async fn past_the_connection_limit_new_connections_get_503() {
    let syncer = StateSyncer::builder().max_connections(2).build();
    let (server, url) = serve(&syncer).await;
    let _a = RawClient::connect(&url, "a", None).await;
    let b = RawClient::connect(&url, "b", None).await;
    match RawClient::try_connect(&url, "c", None).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status().as_u16(), 503)
        }
        other => panic!("expected 503, got {:?}", other.map(|_| ())),
    }
    drop(b);
    // The slot frees once the server notices the disconnect.
    tokio::time::timeout(state_sync_tests::PATIENCE, async {
        loop {
            if RawClient::try_connect(&url, "c", None).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn plain_http_requests_get_426() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let syncer = StateSyncer::new();
    let (server, _) = serve(&syncer).await;
    let mut tcp = tokio::net::TcpStream::connect(server.local_addr())
        .await
        .unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    tcp.read_to_string(&mut response).await.unwrap();
    assert!(
        response.starts_with("HTTP/1.1 426 Upgrade Required"),
        "{response}"
    );
    let mut tcp = tokio::net::TcpStream::connect(server.local_addr())
        .await
        .unwrap();
    tcp.write_all(b"\x16\x03\x01garbage\r\n\r\n").await.unwrap();
    let mut response = String::new();
    tcp.read_to_string(&mut response).await.unwrap();
    assert!(
        response.starts_with("HTTP/1.1 400 Bad Request"),
        "{response}"
    );
    server.shutdown().await;
}
