//! Several servers on one Redis (a real `redis-server` per test, on a free port):
//! one order of updates per state, hooks on the receiving server, removal and ttl and
//! self-destruct on every server, clients that move between servers, lost publishes,
//! and Redis going away.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use state_sync_client::{Client, ReconnectPolicy, Update};
use state_sync_server::{Redis, StateOptions, StateSyncer};
use state_sync_tests::{
    ClusterNode as Node, PATIENCE, RawClient, TestRedis, TestRedisCluster, cluster_node,
    eventually, plain_state as plain,
};

async fn node(redis: &TestRedis, states: impl Fn(&StateSyncer)) -> Node {
    node_on(Redis::new(redis.url()).unwrap(), states).await
}

async fn node_on(redis: Redis, states: impl Fn(&StateSyncer)) -> Node {
    cluster_node(redis.check_every(Duration::from_millis(200)), states).await
}

/// Reads STATE_UPDATED frames until `last`: `(version, updates)` in arrival order.
async fn updates_until(observer: &mut RawClient, last: u64) -> Vec<(u64, Value)> {
    let mut seen = Vec::new();
    while seen.last().is_none_or(|(version, _)| *version < last) {
        let data = observer.expect(3).await;
        seen.push((data["version"].as_u64().unwrap(), data["updates"].clone()));
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_of_three_servers_see_every_update_once_in_one_order() {
    let redis = TestRedis::start().await;
    one_order(|| Redis::new(redis.url()).unwrap(), "s").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_redis_cluster_every_state_has_one_order_whichever_node_holds_it() {
    let redis = TestRedisCluster::start(3).await;
    // States whose slots are on different nodes, side by side.
    let states = ["a", "b", "c", "room-1", "room-2"];
    let mut runs = Vec::new();
    for id in states {
        let urls = redis.urls();
        runs.push(tokio::spawn(async move {
            one_order(|| Redis::cluster(urls.clone()).unwrap(), id).await;
        }));
    }
    for run in runs {
        run.await.unwrap();
    }
}

/// Three servers serve state `id`: a writer on each sends set-only updates and
/// appends, and an observer on each sees every version once, in one order, with the
/// same contents; every copy ends with the same value.
async fn one_order(redis: impl Fn() -> Redis, id: &str) {
    let plain = |syncer: &StateSyncer| {
        syncer
            .create_state(StateOptions::new().identifier(id))
            .unwrap();
    };
    let nodes = [
        node_on(redis(), plain).await,
        node_on(redis(), plain).await,
        node_on(redis(), plain).await,
    ];
    let mut observers = Vec::new();
    for (n, node) in nodes.iter().enumerate() {
        let mut observer = RawClient::connect(&node.url, &format!("observer-{n}"), None).await;
        observer.attach(id).await;
        observers.push(observer);
    }
    const EACH: u64 = 25;
    let mut writers = Vec::new();
    for (n, node) in nodes.iter().enumerate() {
        let client = Client::connect(&node.url, &format!("writer-{n}"), None)
            .await
            .unwrap();
        client.connect_to_state(id).await.unwrap();
        writers.push(tokio::spawn(async move {
            for i in 1..=EACH {
                // A set-only update and an append that reads the state, in turn: the
                // appends of three servers race for the same array.
                client
                    .update_state(json!({ format!("w{n}"): i }))
                    .await
                    .unwrap();
                client
                    .apply(Update::new().append("log", [json!(format!("{n}:{i}"))]))
                    .await
                    .unwrap();
            }
            client
        }));
    }
    let mut clients = Vec::new();
    for writer in writers {
        clients.push(writer.await.unwrap());
    }
    let total = 3 * 2 * EACH;
    let mut histories = Vec::new();
    for observer in &mut observers {
        histories.push(updates_until(observer, total).await);
    }
    // Every server's clients saw versions 1..=total, once each, in order, with the
    // same contents.
    assert_eq!(
        histories[0].iter().map(|(v, _)| *v).collect::<Vec<_>>(),
        (1..=total).collect::<Vec<_>>()
    );
    assert_eq!(histories[0], histories[1]);
    assert_eq!(histories[0], histories[2]);
    // One value everywhere: each writer's last set, and each append once, in each
    // writer's order.
    for node in &nodes {
        eventually("every replica has every version", || {
            node.syncer.version_of_state(id) == Some(total)
        })
        .await;
    }
    let value = nodes[0].syncer.value_of_state(id).unwrap();
    for node in &nodes[1..] {
        assert_eq!(node.syncer.value_of_state(id).unwrap(), value);
    }
    let log: Vec<&str> = value["log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item.as_str().unwrap())
        .collect();
    assert_eq!(log.len() as u64, 3 * EACH);
    for n in 0..3 {
        let mine: Vec<String> = log
            .iter()
            .filter(|item| item.starts_with(&format!("{n}:")))
            .map(|item| (*item).to_owned())
            .collect();
        let expected: Vec<String> = (1..=EACH).map(|i| format!("{n}:{i}")).collect();
        assert_eq!(mine, expected);
        assert_eq!(value[&format!("w{n}")], json!(EACH));
    }
    // The writers' own copies converged too.
    for client in &clients {
        eventually("the writer's copy converged", || {
            client.state_version() == Some(total)
        })
        .await;
        assert_eq!(client.state(), value);
    }
}

#[tokio::test]
async fn hooks_run_on_the_server_that_received_the_update() {
    let redis = TestRedis::start().await;
    let stamped = |name: &'static str| {
        move |syncer: &StateSyncer| {
            syncer
                .create_state(StateOptions::new().identifier("s").intercept_state_update(
                    move |update, _| {
                        (!update.set.contains_key("forbidden")).then(|| update.set_key("via", name))
                    },
                ))
                .unwrap();
        }
    };
    let a = node(&redis, stamped("a")).await;
    let b = node(&redis, stamped("b")).await;
    let mut on_a = RawClient::connect(&a.url, "ann", None).await;
    on_a.attach_session("s", "tab").await;
    let mut on_b = RawClient::connect(&b.url, "bob", None).await;
    on_b.attach("s").await;
    on_a.update_with_id(json!({"text": "hi"}), 1).await;
    let echo = on_a.expect(3).await;
    assert_eq!(echo["requestId"], 1);
    assert_eq!(echo["updates"], json!({"text": "hi", "via": "a"}));
    let seen = on_b.expect(3).await;
    assert_eq!(seen["updates"], json!({"text": "hi", "via": "a"}));
    assert_eq!(seen["version"], echo["version"]);
    // A veto: nothing anywhere, and the sender is told.
    on_a.update_with_id(json!({"forbidden": true}), 2).await;
    assert_eq!(on_a.expect(9).await["reason"], "vetoed");
    on_b.expect_silence(Duration::from_millis(300)).await;
    assert_eq!(
        Value::Object(b.syncer.value_of_state("s").unwrap()),
        json!({"text": "hi", "via": "a"})
    );
    // Server code's updates go through the same order.
    let applied = b
        .syncer
        .update_state_value("s", json!({"text": "from b"}), None)
        .await
        .unwrap();
    assert_eq!(applied.version, 2);
    assert_eq!(b.syncer.value_of_state("s").unwrap()["via"], "b");
    assert_eq!(on_a.expect(3).await["version"], 2);
}

#[tokio::test]
async fn a_removal_and_a_ttl_reach_the_clients_of_every_server() {
    let redis = TestRedis::start().await;
    let states = |syncer: &StateSyncer| {
        syncer
            .create_state(StateOptions::new().identifier("gone"))
            .unwrap();
        syncer
            .create_state(
                StateOptions::new()
                    .identifier("short")
                    .ttl(Duration::from_secs(1)),
            )
            .unwrap();
    };
    let a = node(&redis, states).await;
    let b = node(&redis, states).await;
    let mut on_b = RawClient::connect(&b.url, "bob", None).await;
    on_b.attach("gone").await;
    assert!(a.syncer.remove_state("gone"));
    let removed = on_b.expect(1).await;
    assert_eq!(removed["stateIdentifier"], "gone");
    eventually("the other server forgot it", || {
        b.syncer.value_of_state("gone").is_none()
    })
    .await;
    let mut on_a = RawClient::connect(&a.url, "ann", None).await;
    on_a.attach("short").await;
    let mut on_b = RawClient::connect(&b.url, "bob", None).await;
    on_b.attach("short").await;
    for observer in [&mut on_a, &mut on_b] {
        let expired = observer.expect(1).await;
        assert_eq!(expired["stateIdentifier"], "short");
    }
    for node in [&a, &b] {
        eventually("the expired state is gone", || {
            node.syncer.value_of_state("short").is_none()
        })
        .await;
    }
}

#[tokio::test]
async fn self_destruct_counts_the_clients_of_every_server() {
    let redis = TestRedis::start().await;
    let asked = Arc::new(std::sync::Mutex::new(Vec::new()));
    let states = |asked: Arc<std::sync::Mutex<Vec<usize>>>| {
        move |syncer: &StateSyncer| {
            let asked = Arc::clone(&asked);
            syncer
                .create_state(StateOptions::new().identifier("room").self_destruct(
                    move |clients, _| {
                        asked.lock().unwrap().push(clients);
                        clients == 0
                    },
                ))
                .unwrap();
        }
    };
    let a = node(&redis, states(Arc::clone(&asked))).await;
    let b = node(&redis, states(Arc::clone(&asked))).await;
    let mut on_a = RawClient::connect(&a.url, "ann", None).await;
    on_a.attach("room").await;
    let mut on_b = RawClient::connect(&b.url, "bob", None).await;
    on_b.attach("room").await;
    // Each server tells Redis its count within its check period.
    tokio::time::sleep(Duration::from_millis(600)).await;
    drop(on_a);
    eventually("a's hook was asked", || !asked.lock().unwrap().is_empty()).await;
    assert_eq!(
        *asked.lock().unwrap(),
        [1],
        "bob is still on the other server"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(b.syncer.value_of_state("room").is_some());
    drop(on_b);
    for node in [&a, &b] {
        eventually("the state self-destructed everywhere", || {
            node.syncer.value_of_state("room").is_none()
        })
        .await;
    }
    assert_eq!(*asked.lock().unwrap(), [1, 0]);
}

#[tokio::test]
async fn a_client_that_moves_to_another_server_gets_its_first_answers() {
    let redis = TestRedis::start().await;
    let vetoing = |syncer: &StateSyncer| {
        syncer
            .create_state(StateOptions::new().identifier("s").intercept_state_update(
                |update, _| (!update.set.contains_key("forbidden")).then_some(update),
            ))
            .unwrap();
    };
    let a = node(&redis, vetoing).await;
    // The other server would let the vetoed update through.
    let b = node(&redis, plain("s")).await;
    let mut on_a = RawClient::connect(&a.url, "ann", None).await;
    on_a.attach_session("s", "tab").await;
    on_a.update_with_id(json!({"n": 1}), 1).await;
    assert_eq!(on_a.expect(3).await["version"], 1);
    on_a.update_with_id(json!({"forbidden": 1}), 2).await;
    assert_eq!(on_a.expect(9).await["reason"], "vetoed");
    drop(on_a);
    // Its server died; it reconnects to the other one and retries both.
    let mut on_b = RawClient::connect(&b.url, "ann", None).await;
    on_b.send(
        json!({"type": 2, "data": {"stateIdentifier": "s", "session": "tab", "lastSent": 2}}),
    )
    .await;
    assert_eq!(on_b.expect(7).await["version"], 1);
    on_b.update_with_id(json!({"n": 100}), 1).await;
    let repeat = on_b.expect(3).await;
    assert_eq!(
        (repeat["requestId"].clone(), repeat["version"].clone()),
        (json!(1), json!(1))
    );
    assert_eq!(repeat["updates"], json!({}));
    on_b.update_with_id(json!({"forbidden": 1}), 2).await;
    assert_eq!(on_b.expect(9).await["reason"], "vetoed");
    on_b.update_with_id(json!({"n": 3}), 3).await;
    assert_eq!(on_b.expect(3).await["version"], 2);
    assert_eq!(
        Value::Object(a.syncer.value_of_state("s").unwrap_or_default()),
        Value::Object(b.syncer.value_of_state("s").unwrap())
    );
    assert_eq!(
        Value::Object(b.syncer.value_of_state("s").unwrap()),
        json!({"n": 3})
    );
}

#[tokio::test]
async fn publishes_lost_with_the_subscriptions_are_found_and_delivered_in_order() {
    let redis = TestRedis::start().await;
    let a = node(&redis, plain("s")).await;
    let b = node(&redis, plain("s")).await;
    let mut on_b = RawClient::connect(&b.url, "bob", None).await;
    on_b.attach("s").await;
    let mut expected = 0;
    for round in 0..3 {
        // Every subscription connection dies: what is published meanwhile is lost.
        let killed = redis.kill_subscriptions().await;
        assert!(killed >= 1, "round {round}");
        for i in 0..5 {
            a.syncer
                .update_state_value("s", json!({"round": round, "i": i}), None)
                .await
                .unwrap();
            expected += 1;
        }
        let seen = updates_until(&mut on_b, expected).await;
        assert_eq!(
            seen.iter().map(|(v, _)| *v).collect::<Vec<_>>(),
            (expected - 4..=expected).collect::<Vec<_>>(),
            "round {round}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_redis_is_down_updates_wait_and_are_applied_once_when_it_is_back() {
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
    client.update_state(json!({"before": 1})).await.unwrap();
    redis.kill();
    let sent = Arc::new(AtomicUsize::new(0));
    let updates = {
        let client = client.clone();
        let sent = Arc::clone(&sent);
        tokio::spawn(async move {
            let mut results = Vec::new();
            for i in 0..5 {
                sent.fetch_add(1, Ordering::Relaxed);
                results.push(client.apply(Update::new().increment("count", 1)).await);
                let _ = i;
            }
            results
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !updates.is_finished(),
        "nothing is acknowledged while redis is down"
    );
    redis.restart().await;
    let results = tokio::time::timeout(PATIENCE * 3, updates)
        .await
        .expect("acknowledged once redis is back")
        .unwrap();
    for result in &results {
        assert!(result.is_ok(), "{result:?}");
    }
    eventually("the server's copy has every update", || {
        a.syncer.version_of_state("s") == Some(6)
    })
    .await;
    assert_eq!(
        Value::Object(a.syncer.value_of_state("s").unwrap()),
        json!({"before": 1, "count": 5})
    );
    // A new client attaches once redis is back, and sees the same.
    let mut late = RawClient::connect(&a.url, "late", None).await;
    let snapshot = late.attach("s").await;
    assert_eq!(snapshot["state"], json!({"before": 1, "count": 5}));
    assert_eq!(snapshot["version"], 6);
}

#[tokio::test]
async fn on_a_redis_cluster_lost_publishes_are_repaired_and_a_moving_client_is_answered() {
    let redis = TestRedisCluster::start(3).await;
    let config = || Redis::cluster(redis.urls()).unwrap();
    let a = node_on(config(), plain("s")).await;
    let b = node_on(config(), plain("s")).await;
    let mut on_b = RawClient::connect(&b.url, "bob", None).await;
    on_b.attach("s").await;
    let mut expected = 0;
    for round in 0..3 {
        // Every subscription connection of every node dies.
        for url in redis.urls() {
            state_sync_tests::kill_subscriptions(&url).await;
        }
        for i in 0..5 {
            a.syncer
                .update_state_value("s", json!({"round": round, "i": i}), None)
                .await
                .unwrap();
            expected += 1;
        }
        let seen = updates_until(&mut on_b, expected).await;
        assert_eq!(
            seen.iter().map(|(v, _)| *v).collect::<Vec<_>>(),
            (expected - 4..=expected).collect::<Vec<_>>(),
            "round {round}"
        );
    }
    // A client that moves from one server to the other gets its first answer.
    let mut on_a = RawClient::connect(&a.url, "ann", None).await;
    on_a.attach_session("s", "tab").await;
    on_a.update_with_id(json!({"n": 1}), 1).await;
    let applied = on_a.expect(3).await["version"].clone();
    drop(on_a);
    let mut moved = RawClient::connect(&b.url, "ann", None).await;
    moved
        .send(json!({"type": 2, "data": {"stateIdentifier": "s", "session": "tab", "lastSent": 1}}))
        .await;
    moved.expect(7).await;
    moved.update_with_id(json!({"n": 100}), 1).await;
    let repeat = moved.expect(3).await;
    assert_eq!(repeat["version"], applied);
    assert_eq!(repeat["updates"], json!({}));
    assert_eq!(b.syncer.value_of_state("s").unwrap()["n"], json!(1));
}
