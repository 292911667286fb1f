//! The standalone server's `/healthz`, `/readyz` and Prometheus `/metrics`, on its own
//! port, as a real process: the figures move as clients connect and update, and
//! `/readyz` turns 503 when the data directory goes away.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use serde_json::json;
use state_sync_client::Client;
use state_sync_tests::{http_get, prometheus_figure};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_metrics_of_the_program() {
    let dir = common::temp_dir("metrics");
    let (child, address) = common::serving("127.0.0.1:0", &dir);
    let _server = common::Running(child);
    let url = format!("ws://{address}");
    assert_eq!(http_get(&url, "/healthz").await, (200, "ok\n".to_owned()));
    assert_eq!(http_get(&url, "/readyz").await, (200, "ready\n".to_owned()));
    let (status, before) = http_get(&url, "/metrics").await;
    assert_eq!(status, 200);
    let ann = Client::connect(&url, "ann", None).await.unwrap();
    ann.connect_to_state("s").await.unwrap();
    let bob = Client::connect(&url, "bob", None).await.unwrap();
    bob.connect_to_state("s").await.unwrap();
    ann.update_state(json!({"a": 1})).await.unwrap();
    let after = http_get(&url, "/metrics").await.1;
    assert_eq!(
        prometheus_figure(&after, "state_sync_connections"),
        Some(2.0),
        "{after}"
    );
    // The state the command line names has a label of its own.
    assert_eq!(
        prometheus_figure(&after, r#"state_sync_clients{state="s"}"#),
        Some(2.0),
        "{after}"
    );
    let applied =
        |render: &str| prometheus_figure(render, "state_sync_updates_applied_total").unwrap_or(0.0);
    assert!(
        applied(&after) >= applied(&before) + 1.0,
        "{before}\n---\n{after}"
    );
    assert!(
        prometheus_figure(&after, "state_sync_deliveries_total").unwrap() >= 2.0,
        "{after}"
    );
    assert!(
        after.contains(r#"state_sync_store_commit_seconds{backend="disk""#)
            || after.contains(r#"state_sync_store_commit_seconds_count{backend="disk"}"#),
        "{after}"
    );
    bob.close().await;
    let mut gone = false;
    for _ in 0..100 {
        let render = http_get(&url, "/metrics").await.1;
        if prometheus_figure(&render, r#"state_sync_clients{state="s"}"#) == Some(1.0) {
            gone = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(gone, "the gauge follows a client that leaves");
    // The data directory goes away: not ready, and why.
    std::fs::remove_dir_all(&dir).unwrap();
    let (status, body) = http_get(&url, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("not ready"), "{body}");
    assert_eq!(http_get(&url, "/healthz").await.0, 200);
    ann.close().await;
}
