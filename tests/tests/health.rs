//! `/healthz` and `/readyz`, with a durable store and with Redis, also when they are
//! gone.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use state_sync_server::{Redis, StateOptions, StateSyncer, Storage};
use state_sync_tests::{TestRedis, http_get as get, serve};

#[tokio::test]
async fn health_and_readiness_with_a_durable_store() {
    let dir = std::env::temp_dir().join(format!("state-sync-readyz-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let syncer = StateSyncer::builder()
        .storage(Storage::open(&dir).unwrap())
        .build();
    syncer
        .create_state(StateOptions::new().identifier("room"))
        .unwrap();
    let (_server, url) = serve(&syncer).await;
    assert_eq!(get(&url, "/healthz").await, (200, "ok\n".to_owned()));
    assert_eq!(get(&url, "/readyz").await, (200, "ready\n".to_owned()));
    assert_eq!(syncer.ready().await, Ok(()));
    // The data directory goes away (an unmounted disk): not ready, and why.
    std::fs::remove_dir_all(&dir).unwrap();
    let (status, body) = get(&url, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.starts_with("not ready: the store"), "{body}");
    // Still alive: it serves.
    assert_eq!(get(&url, "/healthz").await.0, 200);
    // Other paths are what they were: 426 without static files.
    assert_eq!(get(&url, "/metrics").await.0, 426);
    syncer.close_storage();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_redis() {
    let mut redis = TestRedis::start_persistent().await;
    let syncer = StateSyncer::builder()
        .redis(Redis::new(redis.url()).unwrap())
        .build();
    syncer
        .create_state(StateOptions::new().identifier("room"))
        .unwrap();
    let (_server, url) = serve(&syncer).await;
    assert_eq!(get(&url, "/readyz").await, (200, "ready\n".to_owned()));
    redis.kill();
    let (status, body) = get(&url, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("redis"), "{body}");
    assert_eq!(get(&url, "/healthz").await.0, 200);
    redis.restart().await;
    let mut ready = false;
    for _ in 0..100 {
        if get(&url, "/readyz").await.0 == 200 {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "ready again once redis is back");
}
