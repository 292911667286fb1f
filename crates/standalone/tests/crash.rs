//! The standalone server with `--data`, killed with SIGKILL while clients send
//! acknowledged updates, restarted on the same directory: nothing acknowledged is
//! lost, nothing is applied twice, versions never go back. Real processes, real files.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
mod common;

use std::path::Path;
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::try_serving;
use serde_json::{Value, json};
use state_sync_client::{Client, ReconnectPolicy, Update};

const CLIENTS: usize = 4;

/// The server process; killed (SIGKILL) when dropped.
struct ServerProcess(Child);

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start(dir: &Path, port: u16) -> ServerProcess {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (mut child, address) = try_serving(&format!("127.0.0.1:{port}"), dir);
        let Err(line) = address else {
            return ServerProcess(child);
        };
        // The port may still be held for a moment by the killed process.
        let _ = child.wait();
        assert!(
            Instant::now() < deadline,
            "the server did not restart: {line:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn sigkill(mut server: ServerProcess) {
    server.0.kill().unwrap();
    server.0.wait().unwrap();
    std::mem::forget(server);
}

/// What the writers send: every update its own key, or every update an append to one
/// array (an operation the server resolves against the state, so a replay after a
/// crash would show as an item twice).
#[derive(Clone, Copy)]
enum Kind {
    Keys,
    Appends,
}

/// What a run through four SIGKILLs left: the items acknowledged, and the state and
/// version a fresh client reads after a last kill and restart.
struct Outcome {
    acknowledged: BTreeSet<String>,
    state: serde_json::Map<String, Value>,
    version: Option<u64>,
    max_version: u64,
}

/// Clients write (8 updates in flight each) while the server is killed with SIGKILL
/// and restarted three times on the same directory.
async fn write_through_kills(kind: Kind) -> Outcome {
    let dir = std::env::temp_dir().join(format!(
        "state-sync-crash-{}-{}",
        std::process::id(),
        matches!(kind, Kind::Appends)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let port = free_port();
    let url = format!("ws://127.0.0.1:{port}");
    let mut server = start(&dir, port);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let acknowledged: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let max_version = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut writers = Vec::new();
    for c in 0..CLIENTS {
        let (url, stop, acknowledged, max_version) = (
            url.clone(),
            Arc::clone(&stop),
            Arc::clone(&acknowledged),
            Arc::clone(&max_version),
        );
        writers.push(tokio::spawn(async move {
            let policy = ReconnectPolicy {
                initial: Duration::from_millis(20),
                max: Duration::from_millis(200),
                ..ReconnectPolicy::default()
            };
            let client = Client::builder(url, format!("writer{c}"))
                .reconnect(policy)
                .connect()
                .await
                .unwrap();
            client.connect_to_state("s").await.unwrap();
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // A few in flight at once.
                let batch: Vec<_> = (0..8)
                    .map(|_| {
                        n += 1;
                        let item = format!("k{c}_{n}");
                        let update = match kind {
                            Kind::Keys => Update::new().set_key(item.clone(), true),
                            Kind::Appends => Update::new().append("log", [json!(item)]),
                        };
                        (item, client.apply(update))
                    })
                    .collect();
                for (item, outcome) in batch {
                    let applied = outcome.await.expect("resolved once the server is back");
                    acknowledged.lock().unwrap().insert(item);
                    if let Some(version) = applied.version {
                        max_version.fetch_max(version, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            }
            client.close().await;
        }));
    }
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        sigkill(server);
        tokio::time::sleep(Duration::from_millis(200)).await;
        server = start(&dir, port);
    }
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for writer in writers {
        tokio::time::timeout(Duration::from_secs(60), writer)
            .await
            .expect("the writers finish")
            .unwrap();
    }
    // Once more, then read what is on disk through a fresh client.
    sigkill(server);
    let server = start(&dir, port);
    let reader = Client::connect(&url, "reader", None).await.unwrap();
    let state = reader.connect_to_state("s").await.unwrap();
    let version = reader.state_version();
    reader.close().await;
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(
        acknowledged.len() > 100,
        "only {} acknowledged",
        acknowledged.len()
    );
    Outcome {
        acknowledged,
        state,
        version,
        max_version: max_version.load(std::sync::atomic::Ordering::Relaxed),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_stream_loses_nothing_acknowledged_and_applies_nothing_twice() {
    let Outcome {
        acknowledged,
        state,
        version,
        max_version,
    } = write_through_kills(Kind::Keys).await;
    for key in &acknowledged {
        assert_eq!(
            state.get(key),
            Some(&Value::Bool(true)),
            "{key} was acknowledged, then lost"
        );
    }
    let keys = state.keys().filter(|key| key.starts_with('k')).count() as u64;
    assert_eq!(
        version,
        Some(keys),
        "every applied update added one key: a version above the key count is an update applied twice"
    );
    assert!(version.unwrap() >= max_version);
    println!(
        "crash: {} acknowledged, {keys} applied, 4 kills",
        acknowledged.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_stream_of_atomic_appends_keeps_each_acknowledged_item_once() {
    let Outcome {
        acknowledged,
        state,
        version,
        max_version,
    } = write_through_kills(Kind::Appends).await;
    let log: Vec<&str> = state["log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item.as_str().unwrap())
        .collect();
    let distinct: BTreeSet<&str> = log.iter().copied().collect();
    assert_eq!(distinct.len(), log.len(), "an append was applied twice");
    for item in &acknowledged {
        assert!(
            distinct.contains(item.as_str()),
            "{item} was acknowledged, then lost"
        );
    }
    // Every applied update appended one item; each writer's items are in its order.
    assert_eq!(version, Some(log.len() as u64));
    assert!(version.unwrap() >= max_version);
    for c in 0..CLIENTS {
        let mine: Vec<u64> = log
            .iter()
            .filter_map(|item| item.strip_prefix(&format!("k{c}_"))?.parse().ok())
            .collect();
        assert!(
            mine.windows(2).all(|w| w[0] < w[1]),
            "writer {c}'s appends out of order"
        );
    }
    println!(
        "crash: {} appends acknowledged, {} applied, 4 kills",
        acknowledged.len(),
        log.len()
    );
}
