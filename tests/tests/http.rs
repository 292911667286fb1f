//! The HTTP side of the server's own listener, served by hyper: keep-alive, the time
//! limits of a connection that has not upgraded, and the bytes a client sends right
//! behind its upgrade request.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use state_sync_server::{StateOptions, StateSyncer};
use state_sync_tests::http::{RAW_UPGRADE as UPGRADE, kept_alive, read_answer};
use state_sync_tests::{PATIENCE, RawClient, serve};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::Role;

/// A masked client text frame (mask 0 keeps the payload readable).
fn client_text(payload: &str) -> Vec<u8> {
    let mut frame = vec![
        0x81,
        0x80 | u8::try_from(payload.len()).unwrap(),
        0,
        0,
        0,
        0,
    ];
    frame.extend_from_slice(payload.as_bytes());
    frame
}

#[tokio::test]
async fn one_connection_serves_several_requests_then_upgrades() {
    let syncer = StateSyncer::builder()
        .route("/version", "text/plain", || "1.2.3\n".to_owned())
        .build();
    syncer
        .create_state(StateOptions::new().identifier("s"))
        .unwrap();
    let (server, _) = serve(&syncer).await;
    let mut tcp = TcpStream::connect(server.local_addr()).await.unwrap();
    // Two plain requests in one write (pipelined), answered in order on one connection.
    tcp.write_all(
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /version HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await
    .unwrap();
    let (head, body) = read_answer(&mut tcp).await;
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert_eq!(body, "ok\n");
    let (head, body) = read_answer(&mut tcp).await;
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert_eq!(body, "1.2.3\n");
    // Then the same connection becomes a WebSocket.
    tcp.write_all(UPGRADE.as_bytes()).await.unwrap();
    let (head, _) = read_answer(&mut tcp).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.contains("Sec-Websocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"),
        "{head}"
    );
    let ws = WebSocketStream::from_raw_socket(tcp, Role::Client, None).await;
    let mut client = RawClient::from_stream(ws);
    client.attach("s").await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_frame_sent_with_the_upgrade_request_is_read() {
    let syncer = StateSyncer::new();
    syncer
        .create_state(StateOptions::new().identifier("s"))
        .unwrap();
    let (server, _) = serve(&syncer).await;
    let mut tcp = TcpStream::connect(server.local_addr()).await.unwrap();
    // The upgrade request and the first frame in one write: hyper reads both, and
    // the frame must reach the connection.
    let mut bytes = UPGRADE.as_bytes().to_vec();
    bytes.extend(client_text(r#"{"type":2,"data":{"stateIdentifier":"s"}}"#));
    tcp.write_all(&bytes).await.unwrap();
    let (head, _) = read_answer(&mut tcp).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let ws = WebSocketStream::from_raw_socket(tcp, Role::Client, None).await;
    let mut client = RawClient::from_stream(ws);
    let established = tokio::time::timeout(PATIENCE, client.expect(7))
        .await
        .expect("the attach sent with the request is answered");
    assert_eq!(established["state"], serde_json::json!({}));
    server.shutdown().await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_at_the_handshake_timeout() {
    let (syncer, server, mut tcp) = kept_alive(Duration::from_millis(300)).await;
    // Nothing more: the connection does not hold its slot for ever.
    let started = Instant::now();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(PATIENCE, tcp.read_to_end(&mut rest)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "closed: {read:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(syncer.connection_count(), 0);
    // A client that connects and sends nothing at all is cut the same way.
    let mut silent = TcpStream::connect(server.local_addr()).await.unwrap();
    let started = Instant::now();
    let read = tokio::time::timeout(PATIENCE, silent.read_to_end(&mut rest)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "closed: {read:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_client_that_stops_reading_a_download_is_cut_at_the_write_timeout() {
    let root = std::env::temp_dir().join(format!("state-sync-stall-{}", std::process::id()));
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("big.bin"), vec![b'x'; 32 << 20]).unwrap();
    let syncer = StateSyncer::builder()
        .static_files(&root)
        .write_timeout(Duration::from_millis(300))
        .build();
    let (server, _) = serve(&syncer).await;
    let mut tcp = TcpStream::connect(server.local_addr()).await.unwrap();
    tcp.write_all(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    // Read a little, then nothing for a while: the socket buffers fill, the server's
    // writes stop making progress, and it gives up.
    let mut chunk = vec![0; 64 * 1024];
    let _ = tcp.read(&mut chunk).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let started = Instant::now();
    let mut received = 0usize;
    let outcome = tokio::time::timeout(PATIENCE, async {
        loop {
            match tcp.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(read) => received += read,
            }
        }
    })
    .await;
    assert!(outcome.is_ok(), "the server ended the download");
    assert!(
        received < 32 << 20,
        "cut before the end: {received} bytes after the stall"
    );
    assert!(started.elapsed() < PATIENCE);
    server.shutdown().await;
    std::fs::remove_dir_all(root).unwrap();
}

#[tokio::test]
async fn a_request_head_over_16_kib_gets_431_and_a_plain_post_body_is_not_kept() {
    let syncer = StateSyncer::new();
    let (server, _) = serve(&syncer).await;
    let big = format!(
        "GET /?identifier=a HTTP/1.1\r\nHost: x\r\nX-Fill: {}\r\n\r\n",
        "a".repeat(20 * 1024)
    );
    let answer = state_sync_tests::http_request(server.local_addr(), &big).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    // A POST with a body: answered 405 at once (the body is never buffered).
    let mut tcp = TcpStream::connect(server.local_addr()).await.unwrap();
    tcp.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000\r\n\r\nabc")
        .await
        .unwrap();
    let (head, body) = tokio::time::timeout(PATIENCE, read_answer(&mut tcp))
        .await
        .unwrap();
    assert!(head.starts_with("HTTP/1.1 405"), "{head}");
    assert!(head.contains("Allow: GET\r\n"), "{head}");
    assert!(body.contains("GET request"), "{body}");
    server.shutdown().await;
}
