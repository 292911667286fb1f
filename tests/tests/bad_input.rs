//! Malformed frames get an answer that says what was wrong, change nothing, and do not
//! affect other clients; limits are enforced cleanly.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use serde_json::{Value, json};
use state_sync_server::{StateOptions, StateSyncer};
use state_sync_tests::{PATIENCE, RawClient, serve};
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
    // Both connections still work. A refused attach (8) left the bad client attached
    // to nothing, as any failed attach does; it attaches again.
    bad.update(json!({"k": "x"})).await;
    assert_eq!(bad.expect(9).await["reason"], "notAttached");
    bad.attach("s").await;
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

/// Opens a WebSocket by hand on a raw TCP stream (the request head is `head` plus the
/// usual headers) and returns the stream after the 101 answer.
async fn raw_upgrade(addr: std::net::SocketAddr) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(
        b"GET /?identifier=raw HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(tcp.read_u8().await.unwrap());
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    tcp
}

/// Reads one unmasked server frame: its opcode and payload.
async fn raw_frame(tcp: &mut tokio::net::TcpStream) -> (u8, Vec<u8>) {
    use tokio::io::AsyncReadExt;
    let first = tcp.read_u8().await.unwrap();
    let length = usize::from(tcp.read_u8().await.unwrap() & 0x7f);
    assert!(length < 126, "short frames only");
    let mut payload = vec![0; length];
    tcp.read_exact(&mut payload).await.unwrap();
    (first & 0x0f, payload)
}

/// A masked client frame (mask 0 keeps the payload readable).
fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![
        0x80 | opcode,
        0x80 | u8::try_from(payload.len()).unwrap(),
        0,
        0,
        0,
        0,
    ];
    frame.extend_from_slice(payload);
    frame
}

fn close_code(payload: &[u8]) -> u16 {
    u16::from_be_bytes([payload[0], payload[1]])
}

#[tokio::test]
async fn a_client_close_is_answered_with_a_close_then_the_connection_ends() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let syncer = StateSyncer::new();
    let (server, _) = serve(&syncer).await;
    let mut tcp = raw_upgrade(server.local_addr()).await;
    tcp.write_all(&client_frame(0x8, &[0x03, 0xe8, b'b', b'y', b'e']))
        .await
        .unwrap();
    let (opcode, payload) = tokio::time::timeout(PATIENCE, raw_frame(&mut tcp))
        .await
        .expect("the server answers the close");
    assert_eq!(opcode, 0x8, "a close frame");
    assert_eq!(close_code(&payload), 1000);
    let mut rest = Vec::new();
    let read = tokio::time::timeout(PATIENCE, tcp.read_to_end(&mut rest)).await;
    assert!(
        matches!(read, Ok(Ok(0))),
        "then FIN, nothing else: {read:?} {rest:?}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn protocol_errors_close_with_1002_and_invalid_utf8_with_1007() {
    use tokio::io::AsyncWriteExt;
    let syncer = StateSyncer::new();
    let (server, _) = serve(&syncer).await;
    // Client frames must be masked (RFC 6455 section 5.1).
    let mut tcp = raw_upgrade(server.local_addr()).await;
    tcp.write_all(b"\x81\x02hi").await.unwrap();
    let (opcode, payload) = tokio::time::timeout(PATIENCE, raw_frame(&mut tcp))
        .await
        .unwrap();
    assert_eq!((opcode, close_code(&payload)), (0x8, 1002));

    let mut tcp = raw_upgrade(server.local_addr()).await;
    tcp.write_all(&client_frame(0x1, b"\xff\xfe"))
        .await
        .unwrap();
    let (opcode, payload) = tokio::time::timeout(PATIENCE, raw_frame(&mut tcp))
        .await
        .unwrap();
    assert_eq!((opcode, close_code(&payload)), (0x8, 1007));
    server.shutdown().await;
}

#[tokio::test]
async fn an_http_1_0_upgrade_is_refused_and_a_wrong_version_gets_426_with_13() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let syncer = StateSyncer::new();
    let (server, _) = serve(&syncer).await;
    let ask = |version: &'static str, ws_version: &'static str| {
        let addr = server.local_addr();
        async move {
            let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let request = format!(
                "GET /?identifier=a HTTP/{version}\r\nHost: x\r\nUpgrade: websocket\r\n\
                 Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                 Sec-WebSocket-Version: {ws_version}\r\n\r\n"
            );
            tcp.write_all(request.as_bytes()).await.unwrap();
            let mut response = String::new();
            let _ = tokio::time::timeout(PATIENCE, tcp.read_to_string(&mut response)).await;
            response
        }
    };
    let response = ask("1.0", "13").await;
    // Answered in the request's version.
    assert!(
        response.starts_with("HTTP/1.0 400 Bad Request"),
        "{response}"
    );
    assert!(response.contains("HTTP/1.1"), "{response}");
    let response = ask("1.1", "8").await;
    assert!(
        response.starts_with("HTTP/1.1 426 Upgrade Required"),
        "{response}"
    );
    assert!(
        response
            .to_ascii_lowercase()
            .contains("\r\nsec-websocket-version: 13\r\n"),
        "{response}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_client_that_never_finishes_its_request_is_cut_at_the_handshake_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let syncer = StateSyncer::builder()
        .handshake_timeout(Duration::from_millis(300))
        .build();
    let (server, _) = serve(&syncer).await;
    // Slowloris: half a request head, then nothing.
    let mut tcp = tokio::net::TcpStream::connect(server.local_addr())
        .await
        .unwrap();
    tcp.write_all(b"GET /?identifier=slow HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(PATIENCE, tcp.read_to_end(&mut rest)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "closed: {read:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(syncer.connection_count(), 0);
    server.shutdown().await;
}
