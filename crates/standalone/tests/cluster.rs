//! Three `state-sync-server --redis` processes on one real Redis: clients spread over
//! them send acknowledged updates continuously while one server is killed with SIGKILL
//! and Redis is killed and restarted (append-only file, `appendfsync always`). In the
//! end every acknowledged update is applied exactly once, nothing is applied twice,
//! every client converges, and no version is ever seen with two different contents.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use state_sync_client::{Client, ReconnectPolicy, Update};
use state_sync_tests::{RawClient, TestRedis};

fn start(redis: &str) -> (common::Running, String) {
    common::start_on_redis(redis, "s")
}

const CLIENTS: usize = 6;

/// Reads what an observer receives until told to stop: every version's contents.
async fn observe(
    url: String,
    name: String,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<BTreeMap<u64, Value>>>,
) -> Result<(), String> {
    let mut observer = RawClient::connect(&url, &name, None).await;
    observer.attach("s").await;
    let mut last = 0;
    while !stop.load(Ordering::Relaxed) {
        let Ok(received) = tokio::time::timeout(Duration::from_millis(200), observer.next()).await
        else {
            continue;
        };
        let state_sync_tests::Received::Json(message) = received else {
            return Err(format!("{name}: closed"));
        };
        if message["type"] != 3 {
            continue;
        }
        let version = message["data"]["version"].as_u64().unwrap();
        if version <= last {
            return Err(format!("{name}: version {version} after {last}"));
        }
        last = version;
        let updates = message["data"]["updates"].clone();
        let mut seen = seen.lock().unwrap();
        if let Some(before) = seen.insert(version, updates.clone())
            && before != updates
        {
            return Err(format!(
                "version {version} seen as {before} and as {updates}"
            ));
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_a_server_and_a_redis_restart_lose_nothing_acknowledged_and_apply_nothing_twice()
{
    let mut redis = TestRedis::start_persistent().await;
    let url = redis.url();
    let mut nodes = Vec::new();
    let mut endpoints = Vec::new();
    for _ in 0..3 {
        let (node, endpoint) = start(&url);
        nodes.push(Some(node));
        endpoints.push(endpoint);
    }
    // Observers on the two servers that stay up.
    let stop = Arc::new(AtomicBool::new(false));
    let seen: Arc<Mutex<BTreeMap<u64, Value>>> = Arc::default();
    let observers: Vec<_> = (1..3)
        .map(|n| {
            tokio::spawn(observe(
                endpoints[n].clone(),
                format!("observer-{n}"),
                Arc::clone(&stop),
                Arc::clone(&seen),
            ))
        })
        .collect();
    let acknowledged: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let mut writers = Vec::new();
    for c in 0..CLIENTS {
        // Each client starts on its own server and knows the others.
        let mut mine = endpoints.clone();
        mine.rotate_left(c % 3);
        let client = Client::builder(&mine[0], format!("writer-{c}"))
            .endpoints(mine)
            .reconnect(ReconnectPolicy {
                initial: Duration::from_millis(20),
                max: Duration::from_millis(250),
                ..ReconnectPolicy::default()
            })
            .connect()
            .await
            .unwrap();
        client.connect_to_state("s").await.unwrap();
        let (stop, acknowledged) = (Arc::clone(&stop), Arc::clone(&acknowledged));
        writers.push(tokio::spawn(async move {
            let mut i = 0;
            let mut failures = Vec::new();
            let mut sent = 0_u64;
            while !stop.load(Ordering::Relaxed) {
                // Four at a time, of three kinds: an append (resolved against a
                // version), an append with a set, and a set alone (sent to Redis
                // without waiting for the one before).
                let mut batch = Vec::new();
                for _ in 0..4 {
                    i += 1;
                    let item = format!("{c}-{i}");
                    let update = match i % 3 {
                        0 => Update::new().set_key(format!("c{c}"), i),
                        1 => Update::new().append("log", [json!(item)]),
                        _ => Update::new()
                            .append("log", [json!(item)])
                            .set_key(format!("c{c}"), i),
                    };
                    let appended = i % 3 != 0;
                    batch.push((item, appended, client.apply(update)));
                }
                for (item, appended, applied) in batch {
                    sent += 1;
                    match tokio::time::timeout(Duration::from_secs(30), applied).await {
                        Ok(Ok(_)) => {
                            if appended {
                                acknowledged.lock().unwrap().insert(item);
                            }
                        }
                        Ok(Err(error)) => failures.push(format!("{item}: {error}")),
                        Err(_) => failures.push(format!("{item}: no answer within 30 s")),
                    }
                }
            }
            (client, failures, sent)
        }));
    }
    let per_client = |acknowledged: &Mutex<BTreeSet<String>>| {
        let mut counts = vec![0_usize; CLIENTS];
        for item in acknowledged.lock().unwrap().iter() {
            counts[item.split_once('-').unwrap().0.parse::<usize>().unwrap()] += 1;
        }
        counts
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // A server dies mid-stream.
    let killed = nodes[0].take().unwrap();
    drop(killed);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Redis dies and comes back with what it acknowledged.
    redis.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = per_client(&acknowledged);
    redis.restart().await;
    let restarted = std::time::Instant::now();
    // Every client gets going again (within 10 s), then writes a little longer.
    let mut recovered = vec![None; CLIENTS];
    while recovered.iter().any(Option::is_none) && restarted.elapsed() < Duration::from_secs(10) {
        let now = per_client(&acknowledged);
        for c in 0..CLIENTS {
            if recovered[c].is_none() && now[c] > before[c] {
                recovered[c] = Some(restarted.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, Ordering::Relaxed);
    let after = per_client(&acknowledged);
    eprintln!(
        "acknowledged per client before the redis restart {before:?}, at the end {after:?}; \
         first acknowledgement after the restart {recovered:?}"
    );
    for c in 0..CLIENTS {
        assert!(
            after[c] > before[c],
            "client {c} made no progress after redis came back"
        );
    }
    let mut clients = Vec::new();
    let mut sent = 0;
    for writer in writers {
        let (client, failures, count) = writer.await.unwrap();
        assert!(failures.is_empty(), "updates failed: {failures:?}");
        clients.push(client);
        sent += count;
    }
    for observer in observers {
        observer.await.unwrap().unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(
        acknowledged.len() > 100,
        "only {} acknowledged",
        acknowledged.len()
    );
    // One value everywhere: what a new client of each surviving server reads.
    let mut values = Vec::new();
    for endpoint in &endpoints[1..] {
        let mut reader = RawClient::connect(endpoint, "reader", None).await;
        values.push(reader.attach("s").await);
    }
    assert_eq!(values[0], values[1]);
    let state = values[0]["state"].clone();
    let version = values[0]["version"].as_u64().unwrap();
    let log: Vec<&str> = state["log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item.as_str().unwrap())
        .collect();
    let distinct: BTreeSet<&str> = log.iter().copied().collect();
    assert_eq!(distinct.len(), log.len(), "an item was applied twice");
    for item in &acknowledged {
        assert!(
            distinct.contains(item.as_str()),
            "{item} was acknowledged and lost"
        );
    }
    // Every update was acknowledged (none failed), and each is one version: applied
    // once each, the set-only ones included.
    assert_eq!(version, sent, "{sent} updates sent and acknowledged");
    // Every client's copy converged to it.
    for client in &clients {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while client.state_version() != Some(version) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "a client did not converge"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(Value::Object(client.state()), state);
    }
    // The observers saw versions with one content each (checked as they came), and
    // what they saw of the last versions is what the state holds.
    let seen = seen.lock().unwrap();
    assert!(
        seen.len() as u64 > version / 2,
        "the observers saw {} versions",
        seen.len()
    );
}
