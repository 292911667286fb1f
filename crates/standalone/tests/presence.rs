//! Presence across two `state-sync-server --redis` processes on one real Redis: a
//! client of each sees the other; when one server is killed with SIGKILL, its client
//! leaves the other's presence within the stated bound (four checks: its entries
//! outlive its last write by three, and the next check of a live server sweeps them;
//! 8 s with the default check of 2 s).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::json;
use state_sync_client::{Client, PresenceEvent, ReconnectPolicy};
use state_sync_tests::{TestRedis, eventually};

fn start(redis: &str) -> (common::Running, String) {
    common::start_on_redis(redis, "room")
}

/// The bound the README states for the default check interval.
const BOUND: Duration = Duration::from_secs(8);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_servers_clients_leave_within_the_bound() {
    let redis = TestRedis::start().await;
    let (mut a, url_a) = start(&redis.url());
    let (_b, url_b) = start(&redis.url());
    let ann = Client::builder(&url_a, "ann")
        .reconnect(ReconnectPolicy {
            initial: Duration::from_millis(50),
            max: Duration::from_millis(200),
            ..ReconnectPolicy::default()
        })
        .connect()
        .await
        .unwrap();
    ann.set_presence(json!({"typing": true})).unwrap();
    ann.connect_to_state("room").await.unwrap();
    let bob = Client::connect(&url_b, "bob", None).await.unwrap();
    let mut events = bob.presence_events();
    bob.connect_to_state("room").await.unwrap();
    eventually("bob sees ann", || {
        bob.others().first().is_some_and(|e| {
            e.user == json!("ann") && e.presence.get("typing") == Some(&json!(true))
        })
    })
    .await;
    // Give server A time to write its entries again (a check), so the bound is measured
    // from a kill at any point of its cycle.
    tokio::time::sleep(Duration::from_millis(700)).await;
    a.0.kill().unwrap();
    a.0.wait().unwrap();
    let killed = Instant::now();
    let left = loop {
        let event = tokio::time::timeout(BOUND + Duration::from_secs(4), events.next())
            .await
            .expect("ann leaves in time")
            .expect("the stream goes on");
        if let PresenceEvent::Left(entry) = event {
            assert_eq!(entry.user, json!("ann"));
            break killed.elapsed();
        }
    };
    eprintln!("a killed server's client left the others' presence after {left:?}");
    // The bound, with room for a busy machine's scheduling.
    assert!(
        left <= BOUND + Duration::from_secs(2),
        "left after {left:?}"
    );
    assert!(bob.others().is_empty());
    ann.close().await;
}
