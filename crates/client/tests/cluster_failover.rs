//! A client given the endpoints of two servers of one cluster (the server's `redis`
//! feature, against a real `redis-server` on a free port): the server it uses is killed
//! with SIGKILL while its interceptor holds an update; the client moves to the other
//! server, re-attaches, resends the update with its session and request id, and the
//! update is applied there exactly once, because the session logs are in Redis.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{
    PATIENCE, SERVER_PROCESS, ServerProcess, TestRedis, fast, holding_room, room,
    serve_until_killed,
};
use serde_json::json;
use state_sync_client::Client;
use state_sync_server::{Redis, StateSyncer};

/// The Redis URL of the cluster, in the child process that runs [`cluster_server_process`].
const REDIS_URL: &str = "STATE_SYNC_FAILOVER_REDIS_URL";

/// A node of the cluster on `redis_url`.
fn node(redis_url: &str) -> StateSyncer {
    StateSyncer::builder()
        .redis(
            Redis::new(redis_url)
                .unwrap()
                .check_every(Duration::from_millis(200)),
        )
        .build()
}

/// Not a test: the cluster node that the SIGKILL test starts in a child process (it does
/// nothing elsewhere), with [`holding_room`].
#[tokio::test(flavor = "multi_thread")]
#[ignore = "the server of a child process, started by the SIGKILL test"]
async fn cluster_server_process() {
    let (Some(_), Ok(redis_url)) = (std::env::var_os(SERVER_PROCESS), std::env::var(REDIS_URL))
    else {
        return;
    };
    let syncer = node(&redis_url);
    syncer.create_state(holding_room()).unwrap();
    serve_until_killed(syncer).await;
}

#[tokio::test]
async fn when_its_cluster_server_is_killed_mid_update_the_update_is_applied_once_on_the_next() {
    let redis = TestRedis::start().await;
    let (server_a, url_a) =
        ServerProcess::start("cluster_server_process", &[(REDIS_URL, &redis.url())]);
    let b = node(&redis.url());
    b.create_state(room()).unwrap();
    let server_b = b.bind("127.0.0.1:0").await.unwrap();
    let url_b = format!("ws://{}", server_b.local_addr());

    let client = Client::builder(&url_a, "alice")
        .endpoints([&url_a, &url_b])
        .reconnect(fast(20))
        .connect()
        .await
        .unwrap();
    client.connect_to_state("room").await.unwrap();
    let applied = client.update_state(json!({"n": 1})).await.unwrap();
    assert_eq!(applied.version, Some(1));

    // Sent, and held by A's interceptor: unacknowledged when A is killed.
    let held = client.update_state(json!({"held": "by A", "n": 2}));
    let server_a = tokio::task::spawn_blocking(move || {
        let mut server_a = server_a;
        server_a.wait_for("holding");
        server_a
    })
    .await
    .unwrap();
    server_a.kill_9();

    let applied = tokio::time::timeout(PATIENCE, held)
        .await
        .expect("the held update was never acknowledged")
        .unwrap();
    assert_eq!(applied.version, Some(2));
    assert_eq!(b.version_of_state("room"), Some(2), "applied once, on B");
    assert_eq!(
        json!(b.value_of_state("room").unwrap()),
        json!({"n": 2, "held": "by A"})
    );
    assert_eq!(client.state(), b.value_of_state("room").unwrap());
    // It goes on working on B, and nothing was applied twice meanwhile.
    let applied = client.update_state(json!({"n": 3})).await.unwrap();
    assert_eq!(applied.version, Some(3));
    assert_eq!(b.version_of_state("room"), Some(3));
    client.close().await;
    server_b.shutdown().await;
}
