//! Presence across the servers of a cluster (a real `redis-server` per test, on a free
//! port): clients of two servers see each other join, change and leave, in order;
//! presence publishes lost with the subscriptions are repaired; a server that stops
//! writing its entries (it died) has them swept. The kill -9 of a server process is in
//! `crates/standalone/tests/presence.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use futures_util::{Stream, StreamExt};
use serde_json::{Value, json};
use state_sync_client::{Client, PresenceEntry, PresenceEvent};
use state_sync_server::{Redis, StateSyncer};
use state_sync_tests::{
    ClusterNode as Node, PATIENCE, TestRedis, cluster_node, eventually, plain_state as plain,
};

const CHECK: Duration = Duration::from_millis(200);

async fn node(redis: &TestRedis, states: impl Fn(&StateSyncer)) -> Node {
    cluster_node(Redis::new(redis.url()).unwrap().check_every(CHECK), states).await
}

async fn next_event(events: &mut (impl Stream<Item = PresenceEvent> + Unpin)) -> PresenceEvent {
    tokio::time::timeout(PATIENCE, events.next())
        .await
        .expect("a presence event in time")
        .expect("the stream goes on")
}

fn users(entries: &[PresenceEntry]) -> Vec<Value> {
    entries.iter().map(|e| e.user.clone()).collect()
}

fn users_of(node: &Node) -> Vec<Value> {
    node.syncer
        .presence_of_state("room")
        .unwrap()
        .iter()
        .map(|p| p.user.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_on_two_servers_see_each_other_in_order() {
    let redis = TestRedis::start().await;
    let a = node(&redis, plain("room")).await;
    let b = node(&redis, plain("room")).await;
    let ann = Client::connect(&a.url, "ann", None).await.unwrap();
    ann.set_presence(json!({"colour": "red"})).unwrap();
    let mut ann_events = ann.presence_events();
    ann.connect_to_state("room").await.unwrap();
    assert_eq!(
        next_event(&mut ann_events).await,
        PresenceEvent::Synced(vec![])
    );
    // Bob, on the other server, finds Ann there (once his server loaded what Redis
    // holds) and Ann hears him join.
    let bob = Client::connect(&b.url, "bob", None).await.unwrap();
    bob.connect_to_state("room").await.unwrap();
    eventually("bob sees ann", || users(&bob.others()) == [json!("ann")]).await;
    assert_eq!(
        bob.others()[0].presence,
        json!({"colour": "red"}).as_object().cloned().unwrap()
    );
    assert_eq!(Some(bob.others()[0].id.clone()), ann.presence_id());
    let PresenceEvent::Joined(entry) = next_event(&mut ann_events).await else {
        panic!("ann hears bob join");
    };
    assert_eq!(entry.user, json!("bob"));
    assert_eq!(Some(entry.id), bob.presence_id());
    // Both servers' API see both clients.
    eventually("both servers see both", || {
        users_of(&a).len() == 2 && users_of(&b).len() == 2
    })
    .await;
    let identifiers: Vec<String> = b
        .syncer
        .presence_of_state("room")
        .unwrap()
        .into_iter()
        .map(|p| p.identifier)
        .collect();
    assert!(identifiers.contains(&"ann".to_owned()), "{identifiers:?}");
    // Changes cross in order: the last one wins everywhere.
    for n in 0..10 {
        bob.set_presence(json!({"n": n})).unwrap();
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    let mut seen = Vec::new();
    while seen.last() != Some(&9) {
        match next_event(&mut ann_events).await {
            PresenceEvent::Updated(entry) => seen.push(entry.presence["n"].as_i64().unwrap()),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "in order: {seen:?}");
    // Bob closes: Ann hears him leave.
    bob.close().await;
    loop {
        if let PresenceEvent::Left(entry) = next_event(&mut ann_events).await {
            assert_eq!(entry.user, json!("bob"));
            break;
        }
    }
    eventually("both servers forget bob", || {
        users_of(&a) == [json!("ann")] && users_of(&b) == [json!("ann")]
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_published_while_subscriptions_were_down_is_repaired() {
    let redis = TestRedis::start().await;
    let a = node(&redis, plain("room")).await;
    let b = node(&redis, plain("room")).await;
    let ann = Client::connect(&a.url, "ann", None).await.unwrap();
    ann.connect_to_state("room").await.unwrap();
    let bob = Client::connect(&b.url, "bob", None).await.unwrap();
    bob.connect_to_state("room").await.unwrap();
    eventually("bob sees ann", || bob.others().len() == 1).await;
    for round in 0..3 {
        let killed = redis.kill_subscriptions().await;
        assert!(killed >= 1, "round {round}");
        ann.set_presence(json!({"round": round})).unwrap();
        eventually("bob sees ann's latest presence", || {
            bob.others()
                .first()
                .is_some_and(|e| e.presence.get("round") == Some(&json!(round)))
        })
        .await;
    }
    // A client that joined while Bob's server missed it is found too.
    redis.kill_subscriptions().await;
    let cy = Client::connect(&a.url, "cy", None).await.unwrap();
    cy.connect_to_state("room").await.unwrap();
    eventually("bob sees cy", || {
        users(&bob.others()) == [json!("ann"), json!("cy")]
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_entries_of_a_server_that_stops_writing_them_are_swept() {
    let redis = TestRedis::start().await;
    let b = node(&redis, plain("room")).await;
    let bob = Client::connect(&b.url, "bob", None).await.unwrap();
    bob.connect_to_state("room").await.unwrap();
    let mut events = bob.presence_events();
    // A server that died stops writing its entries, which then expire. In one process
    // its entry is written by hand, as it would have written it, already expired (the
    // kill -9 of a real server process is in crates/standalone/tests/presence.rs).
    let mut admin = redis::Client::open(redis.url().as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = redis::pipe()
        .atomic()
        .hset(
            "ss:{room}:presence",
            "deadbeefdeadbeef",
            r#"dead-node {"identifier":"ann","user":"ann","presence":{}}"#,
        )
        .ignore()
        .zadd("ss:{room}:presence:exp", "deadbeefdeadbeef", 0)
        .ignore()
        .hincr("ss:{room}:meta", "pv", 1)
        .ignore()
        .query_async(&mut admin)
        .await
        .unwrap();
    // Bob's server sweeps it at its next write (it may have loaded it first, at its
    // check: then Bob saw it join, and sees it leave; or swept it before ever showing
    // it).
    let started = Instant::now();
    loop {
        let left: Vec<(String, String)> = redis::cmd("HGETALL")
            .arg("ss:{room}:presence")
            .query_async(&mut admin)
            .await
            .unwrap();
        if left.len() == 1 {
            break;
        }
        assert!(started.elapsed() < CHECK * 10, "not swept: {left:?}");
        tokio::time::sleep(CHECK / 4).await;
    }
    // Whatever Bob saw of it, he ends without it: a join is followed by its leave.
    eventually("bob does not show the dead entry", || {
        bob.others().is_empty()
    })
    .await;
    let mut seen = Vec::new();
    while let Ok(Some(event)) = tokio::time::timeout(CHECK * 2, events.next()).await {
        seen.push(event);
    }
    let joined = seen
        .iter()
        .any(|e| matches!(e, PresenceEvent::Joined(entry) if entry.id == "deadbeefdeadbeef"));
    let left = seen
        .iter()
        .any(|e| matches!(e, PresenceEvent::Left(entry) if entry.id == "deadbeefdeadbeef"));
    assert_eq!(joined, left, "{seen:?}");
}
