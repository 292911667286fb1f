//! Review of the cluster mode (issue 13): guarantees checked by review, against real
//! redis-servers started by each test: awkward input through the scripts, Redis absent
//! at start-up, stalled, or down while a new session writes, backoff during an outage,
//! and appends racing another server's writes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use state_sync_client::{Client, ReconnectPolicy, Update};
use state_sync_server::{Redis, StateOptions, StateSyncer};
use state_sync_tests::{
    ClusterNode as Node, PATIENCE, RawClient, TestRedis, cluster_node, eventually,
    plain_state as plain, serve,
};

async fn node(redis: &TestRedis, states: impl Fn(&StateSyncer)) -> Node {
    let redis = Redis::new(redis.url()).unwrap();
    cluster_node(redis.check_every(Duration::from_millis(200)), states).await
}

/// Identifiers, keys and values that would break a script that built keys or JSON
/// carelessly: hash-tag braces and colons in the identifier, a session with them too,
/// keys with spaces and braces, integers past 2^53, empty arrays and objects, and
/// strings that look like the payload formats. Every server sees them exactly, in
/// the order the keys were first written.
#[tokio::test]
async fn awkward_identifiers_keys_and_values_cross_redis_exactly() {
    let redis = TestRedis::start().await;
    const ID: &str = "a}:b{c}:meta x";
    let initial = json!({
        "big": 12_345_678_901_234_567_890_u64,
        "empty": [],
        "obj": {},
        "z first": "x 1 r e",
    });
    let states = |syncer: &StateSyncer| {
        syncer
            .create_state(
                StateOptions::new()
                    .identifier(ID)
                    .initial_value(initial.clone()),
            )
            .unwrap();
    };
    let a = node(&redis, states).await;
    let b = node(&redis, states).await;
    let mut on_a = RawClient::connect(&a.url, "ann:{x}", None).await;
    assert_eq!(on_a.attach_session(ID, "t}:a{b").await["state"], initial);
    let mut on_b = RawClient::connect(&b.url, "bob", None).await;
    let snapshot = on_b.attach(ID).await;
    assert_eq!(snapshot["state"].to_string(), initial.to_string());
    let update = json!({
        "k e}y{": [[], {}, -0.5, 18_446_744_073_709_551_615_u64],
        "big": -9_223_372_036_854_775_808_i64,
        "x": "1/2 {\"updates\":{}}",
    });
    on_a.update_with_id(update.clone(), 1).await;
    assert_eq!(on_a.expect(3).await["requestId"], 1);
    let seen = on_b.expect(3).await;
    assert_eq!(seen["updates"], update);
    // A retry is answered, not applied again.
    on_a.update_with_id(json!({"x": "again"}), 1).await;
    assert_eq!(on_a.expect(3).await["version"], 1);
    on_b.expect_silence(Duration::from_millis(300)).await;
    // A third server loads it from Redis: the same text, keys in the same order.
    let c = node(&redis, states).await;
    let mut on_c = RawClient::connect(&c.url, "cy", None).await;
    let loaded = on_c.attach(ID).await;
    let expected = json!({
        "big": -9_223_372_036_854_775_808_i64,
        "empty": [],
        "obj": {},
        "z first": "x 1 r e",
        "k e}y{": [[], {}, -0.5, 18_446_744_073_709_551_615_u64],
        "x": "1/2 {\"updates\":{}}",
    });
    assert_eq!(loaded["state"].to_string(), expected.to_string());
    assert_eq!(loaded["version"], 1);
}

/// Redis is not running when a server starts; it comes up a little later: the server
/// loads its states and serves them without a restart, and a client that was turned
/// away meanwhile gets in by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_started_before_redis_serves_once_redis_is_up() {
    let mut redis = TestRedis::start().await;
    redis.kill();
    let a = node(&redis, |syncer| {
        syncer
            .create_state(StateOptions::new().identifier("s"))
            .unwrap();
    })
    .await;
    let client = Client::builder(&a.url, "ann")
        .reconnect(ReconnectPolicy {
            initial: Duration::from_millis(50),
            max: Duration::from_millis(300),
            ..ReconnectPolicy::default()
        })
        .connect()
        .await
        .unwrap();
    let attach = {
        let client = client.clone();
        tokio::spawn(async move { client.connect_to_state("s").await })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    redis.restart().await;
    tokio::time::timeout(PATIENCE, attach)
        .await
        .expect("attached once redis is up")
        .unwrap()
        .unwrap();
    tokio::time::timeout(PATIENCE, client.update_state(json!({"a": 1})))
        .await
        .expect("applied in time")
        .unwrap();
    eventually("the server's copy has it", || {
        a.syncer.value_of_state("s").map(Value::Object) == Some(json!({"a": 1}))
    })
    .await;
}

/// Redis stalls (a long script holds it for 7 s: commands wait, time out, then get
/// BUSY) while clients on two servers write: their connections are closed with 1013,
/// they reconnect and resend, and in the end every update is acknowledged and applied
/// exactly once (one version each), nothing fails, and every client converges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_redis_loses_nothing_and_applies_nothing_twice() {
    let redis = TestRedis::start().await;
    let a = node(&redis, |s| {
        s.create_state(StateOptions::new().identifier("s")).unwrap();
    })
    .await;
    let b = node(&redis, |s| {
        s.create_state(StateOptions::new().identifier("s")).unwrap();
    })
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let mut writers = Vec::new();
    for c in 0..4 {
        let endpoints = if c % 2 == 0 {
            [a.url.clone(), b.url.clone()]
        } else {
            [b.url.clone(), a.url.clone()]
        };
        let client = Client::builder(&endpoints[0], format!("w{c}"))
            .endpoints(endpoints)
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
            let mut failures = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let item = format!("{c}-{i}");
                // Set-only (any version): one new key per update.
                let update = Update::new().set_key(item.clone(), c);
                match tokio::time::timeout(Duration::from_secs(30), client.apply(update)).await {
                    Ok(Ok(_)) => {
                        acknowledged.lock().unwrap().insert(item);
                    }
                    Ok(Err(e)) => failures.push(format!("{item}: {e}")),
                    Err(_) => failures.push(format!("{item}: no answer")),
                }
            }
            (client, failures)
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut admin = redis::Client::open(redis.url().as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let busy = "local s = redis.call('TIME')[1] while tonumber(redis.call('TIME')[1]) - s < 7 do end return 1";
    let started = std::time::Instant::now();
    // The admin connection stops waiting before the script ends; Redis does not.
    let _: redis::RedisResult<i64> = redis::cmd("EVAL")
        .arg(busy)
        .arg(0)
        .query_async(&mut admin)
        .await;
    tokio::time::sleep(Duration::from_secs(7) - started.elapsed().min(Duration::from_secs(7)))
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    let mut clients = Vec::new();
    let mut all_failures = Vec::new();
    for w in writers {
        let (c, f) = w.await.unwrap();
        clients.push(c);
        all_failures.extend(f);
    }
    assert!(all_failures.is_empty(), "{all_failures:?}");
    let acknowledged = acknowledged.lock().unwrap().clone();
    eventually("the server's copy has every acknowledged update", || {
        a.syncer
            .value_of_state("s")
            .is_some_and(|state| acknowledged.iter().all(|item| state.contains_key(item)))
    })
    .await;
    let mut reader = RawClient::connect(&a.url, "reader", None).await;
    let snapshot = reader.attach("s").await;
    let state = snapshot["state"].as_object().unwrap();
    assert_eq!(state.len(), acknowledged.len(), "an update nobody sent");
    let version = snapshot["version"].as_u64().unwrap();
    // Every update one version: none applied twice.
    assert_eq!(
        version,
        acknowledged.len() as u64,
        "an update applied twice"
    );
    assert!(acknowledged.len() > 50, "too few acknowledged");
    for client in &clients {
        eventually("every client converged", || {
            client.state_version() == Some(version)
        })
        .await;
    }
}

/// A fresh session's first update, sent while Redis is down: the server closes the
/// connection with 1013 without applying it, the client reconnects and resends it once
/// Redis is back, and it is applied (not answered `outcomeUnknown` because Redis had
/// never heard of the session).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_sessions_update_sent_while_redis_is_down_is_applied_once_it_is_back() {
    let mut redis = TestRedis::start_persistent().await;
    let a = node(&redis, plain("s")).await;
    let client = Client::builder(&a.url, "ann")
        .reconnect(ReconnectPolicy {
            initial: Duration::from_millis(50),
            max: Duration::from_millis(300),
            ..ReconnectPolicy::default()
        })
        .connect()
        .await
        .unwrap();
    client.connect_to_state("s").await.unwrap();
    redis.kill();
    let update = {
        let client = client.clone();
        tokio::spawn(async move { client.update_state(json!({"hello": 1})).await })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    redis.restart().await;
    let result = tokio::time::timeout(PATIENCE * 3, update)
        .await
        .expect("answered once redis is back")
        .unwrap();
    assert!(result.is_ok(), "{result:?}");
    eventually("applied", || {
        a.syncer
            .value_of_state("s")
            .is_some_and(|v| v.get("hello").is_some())
    })
    .await;
}

/// While Redis is down, a client with an update to send is closed with 1013 and
/// reconnects with a growing backoff (a successful attach followed by 1013 must not
/// start its backoff over: every client of the cluster would reconnect every few
/// hundred milliseconds for as long as the outage lasts); once Redis is back its update
/// is applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_back_off_while_redis_is_down() {
    let mut redis = TestRedis::start_persistent().await;
    let upgrades = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&upgrades);
    let syncer = StateSyncer::builder()
        .redis(
            Redis::new(redis.url())
                .unwrap()
                .check_every(Duration::from_millis(200)),
        )
        .authorize(move |request| {
            counted.fetch_add(1, Ordering::Relaxed);
            async move { Ok(request.identifier) }
        })
        .build();
    syncer
        .create_state(StateOptions::new().identifier("s"))
        .unwrap();
    let (_server, url) = serve(&syncer).await;
    // The default policy: 100 ms doubling up to 10 s.
    let client = Client::connect(&url, "ann", None).await.unwrap();
    client.connect_to_state("s").await.unwrap();
    client.update_state(json!({"before": 1})).await.unwrap();
    redis.kill();
    let pending = {
        let client = client.clone();
        tokio::spawn(async move { client.update_state(json!({"during": 1})).await })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = upgrades.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(6)).await;
    let during = upgrades.load(Ordering::Relaxed) - before;
    redis.restart().await;
    let result = tokio::time::timeout(PATIENCE * 2, pending).await;
    assert!(
        during <= 8,
        "{during} connections in 6 s of outage from one client (backoff: a handful)"
    );
    assert!(matches!(result, Ok(Ok(Ok(_)))), "{result:?}");
}

/// A plain append (no ifVersion) is resolved against the server's copy and retried when
/// another server's update came first: it lands, and is never answered with a
/// conflict, while another server keeps updating other keys of the state (as on one
/// server, where an append never conflicts).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_land_while_another_server_updates_other_keys() {
    let redis = TestRedis::start().await;
    let a = node(&redis, plain("s")).await;
    let b = node(&redis, plain("s")).await;
    for node in [&a, &b] {
        // Attaching waits for the copy to be loaded from Redis.
        RawClient::connect(&node.url, "probe", None)
            .await
            .attach("s")
            .await;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..4 {
        // Server code of the other server updating other keys (presence, cursors).
        let syncer = b.syncer.clone();
        let stop = Arc::clone(&stop);
        writers.push(tokio::spawn(async move {
            let mut i = 0_u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let _ = syncer
                    .update_state_value("s", json!({ format!("presence{w}"): i }), None)
                    .await;
            }
        }));
    }
    // The writers get going first.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let client = Client::connect(&a.url, "ann", None).await.unwrap();
    client.connect_to_state("s").await.unwrap();
    let mut failures = 0;
    let mut first = None;
    let mut sent = 0;
    let until = Instant::now() + Duration::from_secs(8);
    while Instant::now() < until {
        sent += 1;
        if let Err(e) = client
            .apply(Update::new().append("log", [json!(sent)]))
            .await
        {
            failures += 1;
            first.get_or_insert(format!("{e:?}"));
        }
    }
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.await.unwrap();
    }
    assert_eq!(
        failures, 0,
        "plain appends failed (of {sent}); first: {first:?}"
    );
}
