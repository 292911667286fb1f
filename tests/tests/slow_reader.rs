//! A client that stops reading never stalls the state, the sender or anyone else.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use serde_json::json;
use state_sync_server::{StateOptions, StateSyncer};
use state_sync_tests::{RawClient, serve};

/// A client with a tiny receive buffer that attaches and then never reads again.
async fn stuck_client(
    url: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let addr = url.trim_start_matches("ws://").parse().unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp = socket.connect(addr).await.unwrap();
    let (ws, _) = tokio_tungstenite::client_async(
        format!("{url}/?identifier=stuck"),
        tokio_tungstenite::MaybeTlsStream::Plain(tcp),
    )
    .await
    .unwrap();
    let mut client = RawClient::from_stream(ws);
    client.attach("s").await;
    client.into_inner()
}

#[tokio::test]
async fn a_client_that_never_reads_is_closed_and_the_others_get_everything() {
    let syncer = StateSyncer::builder().outgoing_queue(16).build();
    syncer
        .create_state(StateOptions::new().identifier("s"))
        .unwrap();
    let (server, url) = serve(&syncer).await;
    let _stuck = stuck_client(&url).await;
    let mut sender = RawClient::connect(&url, "sender", None).await;
    let mut reader = RawClient::connect(&url, "reader", None).await;
    sender.attach("s").await;
    reader.attach("s").await;
    assert_eq!(syncer.clients_of_state("s"), Some(3));

    // 400 updates of 16 KiB: far more than the stuck client's socket buffers and queue hold.
    let blob = "x".repeat(16 * 1024);
    let started = Instant::now();
    let send = async {
        for i in 0..400 {
            sender
                .send(
                    json!({"type": 3, "data": {"updates": {"i": i, "blob": blob}, "requestId": i}}),
                )
                .await;
            assert_eq!(
                sender.expect(3).await["requestId"],
                i,
                "the sender gets every echo"
            );
        }
    };
    let receive = async {
        for i in 0..400 {
            let data = reader.expect(3).await;
            assert_eq!(data["updates"]["i"], i, "in order, none missing");
        }
    };
    tokio::join!(send, receive);
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(8),
        "the stuck client must not slow the others ({elapsed:?})"
    );
    // The stuck client was dropped from the state once its queue overflowed.
    tokio::time::timeout(state_sync_tests::PATIENCE, async {
        while syncer.clients_of_state("s") != Some(2) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the stuck client is detached");
    assert_eq!(syncer.version_of_state("s"), Some(400));
    server.shutdown().await;
}
