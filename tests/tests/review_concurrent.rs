//! Review of concurrent writers: what an attacker or a demanding user could break.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use serde_json::json;
use state_sync_server::{StateOptions, StateSyncer, Storage};
use state_sync_tests::{RawClient, serve};

/// A client that re-attaches to its state (as ours do when they missed a version)
/// while its update waits for the durable store still gets that update's answer: its
/// new subscription starts after the update, and the echo used to go to the old one.
/// A large list makes each commit slow enough for the re-attach to overtake it.
#[tokio::test]
async fn with_the_durable_store_a_reattach_does_not_swallow_the_echo() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("state-sync-review-echo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let syncer: StateSyncer = StateSyncer::builder()
        .storage(Storage::open(&dir).unwrap())
        .build();
    syncer
        .create_state(
            StateOptions::new()
                .identifier("s")
                .initial_value(json!({"list": vec![json!("x".repeat(100)); 20_000]})),
        )
        .unwrap();
    let (server, url) = serve(&syncer).await;
    let mut raw = RawClient::connect(&url, "raw", None).await;
    raw.attach_session("s", "session-1").await;
    for round in 1..=5_u64 {
        // The update, then at once a re-attach: the connection reads the attach while
        // the update is being saved.
        raw.send_text(
            &json!({"type": 3, "data": {"updates": {}, "requestId": round,
                "ops": {"list": {"append": [round]}}}})
            .to_string(),
        )
        .await;
        raw.send_text(
            &json!({"type": 2, "data": {"stateIdentifier": "s", "session": "session-1"}})
                .to_string(),
        )
        .await;
        let mut echoed = false;
        let mut established = false;
        while !(echoed && established) {
            let frame = tokio::time::timeout(Duration::from_secs(5), raw.recv())
                .await
                .unwrap_or_else(|_| {
                    panic!("round {round}: echoed {echoed}, established {established}")
                });
            match frame["type"].as_u64() {
                Some(3) => {
                    assert_eq!(frame["data"]["requestId"], round, "{frame}");
                    echoed = true;
                }
                Some(7) => established = true,
                _ => panic!("{frame}"),
            }
        }
    }
    server.shutdown().await;
    syncer.close_storage();
    let _ = std::fs::remove_dir_all(dir);
}
