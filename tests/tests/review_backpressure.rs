//! Review probes: a client that never reads cannot make the server buffer without
//! bound, even when it never attaches and sends only frames that each get an error.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::SinkExt;
use serde_json::json;
use state_sync_server::{StateOptions, StateSyncer};
use state_sync_tests::{RawClient, serve};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn invalid_frames_from_a_client_that_never_reads_are_held_back() {
    let syncer = StateSyncer::builder()
        .write_timeout(Duration::from_secs(8))
        .build();
    syncer
        .create_state(StateOptions::new().identifier("s"))
        .unwrap();
    let (server, url) = serve(&syncer).await;
    let flooder = RawClient::connect(&url, "flood", None).await;
    let mut ws = flooder.into_inner();
    let sent = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&sent);
    // Each frame is answered 10 with the frame quoted back.
    let frame = format!("[{}]", "1,".repeat(400) + "1");
    let flood = tokio::spawn(async move {
        loop {
            if ws.send(Message::text(frame.clone())).await.is_err() {
                break;
            }
            counter.fetch_add(1, Ordering::Relaxed);
        }
    });
    // A well-behaved client is served meanwhile.
    let mut good = RawClient::connect(&url, "good", None).await;
    good.attach("s").await;
    good.update(json!({"n": 1})).await;
    assert_eq!(good.expect(3).await["version"], 1);
    let mut counts = Vec::new();
    for _ in 0..12 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        counts.push(sent.load(Ordering::Relaxed));
    }
    eprintln!("frames sent every 500 ms: {counts:?}");
    assert!(
        counts[11] - counts[9] < 100,
        "the server kept reading a client that never reads: {counts:?}"
    );
    // The write timeout ends it.
    tokio::time::timeout(Duration::from_secs(20), flood)
        .await
        .expect("the flooder's connection ends")
        .unwrap();
    eprintln!("frames sent in total: {}", sent.load(Ordering::Relaxed));
    good.update(json!({"n": 2})).await;
    assert_eq!(good.expect(3).await["version"], 2);
    server.shutdown().await;
}
