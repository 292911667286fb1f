//! A soak run of about half a minute: acknowledged writers whose connections are reset
//! under them, bursts, readers, clients that never read and clients that attach and
//! vanish, all at once on one state. Asserts that readers are kept, memory stays
//! within its bounds and every acknowledged update was applied exactly once (counted
//! from what a reader attached from the start received: every application, in order).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use state_sync_client::{Client, ReconnectPolicy};
use state_sync_server::{StateOptions, StateSyncer};
use state_sync_tests::{attached_socket, serve};
use tokio_tungstenite::tungstenite::Message;

const RUN: Duration = Duration::from_secs(25);
const WRITERS: usize = 6;
const READERS: usize = 3;

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

async fn raw(
    url: &str,
    name: &str,
) -> (
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    Value,
) {
    attached_socket(url, name, "soak").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_at_once_for_half_a_minute() {
    // Every application the server makes, by writer and sequence number, as the first
    // reader (attached before anybody writes) receives them.
    let applied: Arc<Mutex<HashMap<(String, u64), u32>>> = Arc::default();
    let syncer = StateSyncer::builder()
        .outgoing_queue_bytes(2 << 20)
        .max_state_bytes(256 << 10)
        .session_log_bytes(4 << 20)
        .build();
    syncer
        .create_state(
            StateOptions::new()
                .identifier("soak")
                // User code on the path, so that updates wait while connections reset.
                .intercept_state_update(|updates, _| Some(updates)),
        )
        .unwrap();
    let (server, url) = serve(&syncer).await;
    let rss_before = rss_bytes();
    let until = Instant::now() + RUN;

    // Readers: read everything, must never be closed, see versions without gaps.
    let mut readers = Vec::new();
    for r in 0..READERS {
        let (ws, snapshot) = raw(&url, &format!("reader{r}")).await;
        let applied = Arc::clone(&applied);
        readers.push(tokio::spawn(async move {
            let (_sink, mut stream) = ws.split();
            let mut last = snapshot["version"].as_u64();
            let mut received = 0u64;
            loop {
                let next = tokio::time::timeout(Duration::from_secs(5), stream.next()).await;
                let frame = match next {
                    Err(_) if Instant::now() > until => break,
                    Err(_) => panic!("reader {r} got nothing for 5 s"),
                    Ok(None) => panic!("reader {r} was closed"),
                    Ok(Some(frame)) => frame.unwrap(),
                };
                let Message::Text(text) = frame else {
                    assert!(!frame.is_close(), "reader {r} closed: {frame:?}");
                    continue;
                };
                let value: Value = serde_json::from_str(text.as_str()).unwrap();
                let version = value["data"]["version"].as_u64().unwrap();
                let updates = &value["data"]["updates"];
                if let (0, Some(writer), Some(q)) =
                    (r, updates["w"].as_str(), updates["q"].as_u64())
                {
                    *applied
                        .lock()
                        .unwrap()
                        .entry((writer.to_owned(), q))
                        .or_default() += 1;
                }
                if let Some(last) = last {
                    assert_eq!(version, last + 1, "reader {r}: a gap or a repeat");
                }
                last = Some(version);
                received += 1;
            }
            received
        }));
    }

    // Writers: acknowledged updates, one at a time and in small bursts.
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let url = url.clone();
        writers.push(tokio::spawn(async move {
            let name = format!("writer{w}");
            let policy = ReconnectPolicy {
                initial: Duration::from_millis(20),
                max: Duration::from_millis(200),
                ..ReconnectPolicy::default()
            };
            let client = Client::builder(url, name.clone())
                .reconnect(policy)
                .connect()
                .await
                .unwrap();
            client.connect_to_state("soak").await.unwrap();
            let mut acknowledged = Vec::new();
            let mut q = 0u64;
            while Instant::now() < until {
                let burst = if q.is_multiple_of(50) { 20 } else { 1 };
                let pending: Vec<_> = (0..burst)
                    .map(|_| {
                        q += 1;
                        (
                            q,
                            client.update_state(json!({"w": name, "q": q, format!("k{w}"): q})),
                        )
                    })
                    .collect();
                for (q, outcome) in pending {
                    if outcome.await.is_ok() {
                        acknowledged.push(q);
                    }
                }
            }
            client.close().await;
            (name, acknowledged)
        }));
    }

    // Resets: the writers' connections are closed under them again and again.
    let resets = {
        let syncer = syncer.clone();
        tokio::spawn(async move {
            let mut n = 0;
            while Instant::now() < until {
                tokio::time::sleep(Duration::from_millis(700)).await;
                syncer.disconnect_client(&format!("writer{}", n % WRITERS));
                n += 1;
            }
            n
        })
    };

    // Bursts from a raw client that reads its echoes, clients that never read, and
    // clients that attach and vanish.
    let noise = {
        let url = url.clone();
        tokio::spawn(async move {
            let mut stuck = Vec::new();
            let mut round = 0;
            while Instant::now() < until {
                let (mut sink, mut stream) = raw(&url, "burster").await.0.split();
                let drain = tokio::spawn(async move { while stream.next().await.is_some() {} });
                for i in 0..500 {
                    let update =
                        json!({"type": 3, "data": {"updates": {"b": i, "pad": "x".repeat(64)}}});
                    sink.feed(Message::text(update.to_string())).await.unwrap();
                }
                sink.flush().await.unwrap();
                drop(sink);
                drain.abort();
                if stuck.len() < 10 {
                    stuck.push(raw(&url, &format!("stuck{round}")).await.0);
                }
                for v in 0..5 {
                    drop(raw(&url, &format!("vanish{round}-{v}")).await.0);
                }
                round += 1;
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            stuck.len()
        })
    };

    let mut acknowledged = HashMap::new();
    for writer in writers {
        let (name, acks) = writer.await.unwrap();
        assert!(!acks.is_empty(), "{name} got nothing acknowledged");
        acknowledged.insert(name, acks);
    }
    let resets = resets.await.unwrap();
    noise.await.unwrap();
    let mut received = Vec::new();
    for reader in readers {
        received.push(reader.await.unwrap());
    }
    let applied = applied.lock().unwrap().clone();
    for ((writer, q), times) in &applied {
        assert_eq!(*times, 1, "{writer} update {q} was applied {times} times");
    }
    for (name, acks) in &acknowledged {
        for q in acks {
            assert!(
                applied.contains_key(&(name.clone(), *q)),
                "{name} update {q} was acknowledged but never applied"
            );
        }
    }
    assert!(syncer.session_log_bytes() <= 4 << 20);
    let rss_growth = rss_bytes().saturating_sub(rss_before);
    let total: usize = acknowledged.values().map(Vec::len).sum();
    println!(
        "soak: {total} acknowledged updates, {} applications, {resets} resets, readers received {received:?}, RSS +{} MB",
        applied.len(),
        rss_growth >> 20
    );
    assert!(
        rss_growth < 512 << 20,
        "RSS grew by {} MB",
        rss_growth >> 20
    );
    server.shutdown().await;
}
