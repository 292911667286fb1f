//! Against a real `redis-server`, started for each test on a free port with no
//! persistence files (scripts/setup.sh installs Debian's when it is missing).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};

use super::feed::FeedEvent;
use super::*;

/// A redis-server of this test; killed when dropped.
struct TestRedis {
    child: Child,
    url: String,
    _dir: TempDir,
}

struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_redis() -> TestRedis {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = std::env::temp_dir().join(format!("state-sync-redis-{port}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server is installed (scripts/setup.sh installs it)");
    let url = format!("redis://127.0.0.1:{port}/");
    let redis = TestRedis {
        child,
        url,
        _dir: TempDir(dir),
    };
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return redis;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("redis-server did not start on port {port}");
}

async fn epoch_of(store: &RedisStore, id: &str) -> String {
    store
        .load(id)
        .await
        .unwrap()
        .map_or_else(|| "none".to_owned(), |state| state.epoch)
}

fn object(value: Value) -> JsonObject {
    value.as_object().cloned().unwrap()
}

fn set<'a>(pairs: &[(&'a str, Value)]) -> StoredUpdate<'a> {
    StoredUpdate {
        set: pairs.iter().map(|(k, v)| (*k, v.to_string())).collect(),
        removed: Vec::new(),
        payload: serde_json::to_string(&pairs.iter().map(|(k, v)| (*k, v)).collect::<Vec<_>>())
            .unwrap(),
    }
}

#[tokio::test]
async fn values_keep_their_json_their_numbers_and_their_key_order() {
    let redis = start_redis().await;
    let store = RedisStore::connect(&redis.url, 600).await.unwrap();
    // What Redis's cjson would break: empty arrays, big integers, key order.
    let value = object(json!({
        "z": [], "big": 12_345_678_901_234_567_890_u64, "nested": {"b": 1, "a": []}, "a": 1.5
    }));
    assert!(store.create("s", &value, None, false).await.unwrap());
    // The second server loses, and loads the first one's.
    assert!(
        !store
            .create("s", &object(json!({"other": 1})), None, false)
            .await
            .unwrap()
    );
    let loaded = store.load("s").await.unwrap().unwrap();
    assert_eq!(loaded.value, value);
    assert_eq!(
        loaded.value.keys().collect::<Vec<_>>(),
        ["z", "big", "nested", "a"]
    );
    assert_eq!(loaded.version, 0);
    assert!(store.load("missing").await.unwrap().is_none());
}

#[tokio::test]
async fn updates_set_and_remove_keys_in_one_order_and_a_removed_key_comes_back_last() {
    let redis = start_redis().await;
    let store = RedisStore::connect(&redis.url, 600).await.unwrap();
    store
        .create("s", &object(json!({"a": 1, "b": 2, "c": 3})), None, false)
        .await
        .unwrap();
    let outcome = store
        .apply(
            "s",
            &epoch_of(&store, "s").await,
            None,
            Expected::Any,
            &set(&[("b", json!([])), ("d", json!(4))]),
        )
        .await
        .unwrap();
    assert_eq!(outcome, ApplyOutcome::Applied(1));
    let remove = StoredUpdate {
        removed: vec!["a"],
        payload: "{}".into(),
        ..StoredUpdate::default()
    };
    assert_eq!(
        store
            .apply(
                "s",
                &epoch_of(&store, "s").await,
                None,
                Expected::Any,
                &remove
            )
            .await
            .unwrap(),
        ApplyOutcome::Applied(2)
    );
    store
        .apply(
            "s",
            &epoch_of(&store, "s").await,
            None,
            Expected::Any,
            &set(&[("a", json!("back"))]),
        )
        .await
        .unwrap();
    let loaded = store.load("s").await.unwrap().unwrap();
    assert_eq!(
        Value::Object(loaded.value.clone()),
        json!({"b": [], "c": 3, "d": 4, "a": "back"})
    );
    assert_eq!(
        loaded.value.keys().collect::<Vec<_>>(),
        ["b", "c", "d", "a"]
    );
    assert_eq!(loaded.version, 3);
    // The stream has every version, for a server that missed some.
    let log = store.log("s", 2, 3).await.unwrap();
    assert_eq!(log.iter().map(|(v, _)| *v).collect::<Vec<_>>(), [2, 3]);
    assert_eq!(log[0].1, "{}");
    assert_eq!(
        store
            .apply(
                "gone",
                &epoch_of(&store, "gone").await,
                None,
                Expected::Any,
                &set(&[("a", json!(1))])
            )
            .await
            .unwrap(),
        ApplyOutcome::Gone
    );
}

#[tokio::test]
async fn a_retried_request_gets_its_first_outcome_and_a_stale_one_changes_nothing() {
    let redis = start_redis().await;
    let store = RedisStore::connect(&redis.url, 600).await.unwrap();
    store
        .create("s", &JsonObject::new(), None, false)
        .await
        .unwrap();
    let sender = |request_id| {
        Some(Sender {
            client: "ada",
            session: "tab-1",
            request_id,
            floor: None,
            after: None,
        })
    };
    let first = store
        .apply(
            "s",
            &epoch_of(&store, "s").await,
            sender(1),
            Expected::Asked(0),
            &set(&[("n", json!(1))]),
        )
        .await
        .unwrap();
    assert_eq!(first, ApplyOutcome::Applied(1));
    // The retry is not applied again, whatever it carries now.
    let retry = store
        .apply(
            "s",
            &epoch_of(&store, "s").await,
            sender(1),
            Expected::Any,
            &set(&[("n", json!(99))]),
        )
        .await
        .unwrap();
    assert_eq!(retry, ApplyOutcome::Repeat(StoredOutcome::Applied(1)));
    // Computed from version 0, sent at version 1: a conflict, remembered as such.
    let stale = store
        .apply(
            "s",
            &epoch_of(&store, "s").await,
            sender(2),
            Expected::Asked(0),
            &set(&[("n", json!(2))]),
        )
        .await
        .unwrap();
    assert_eq!(stale, ApplyOutcome::Conflict(1));
    let again = store
        .apply(
            "s",
            &epoch_of(&store, "s").await,
            sender(2),
            Expected::Asked(1),
            &set(&[("n", json!(2))]),
        )
        .await
        .unwrap();
    assert_eq!(again, ApplyOutcome::Repeat(StoredOutcome::Conflict(1)));
    // A request id below what the session remembers, never seen: unknown, not applied.
    store
        .apply(
            "s",
            &epoch_of(&store, "s").await,
            sender(10),
            Expected::Any,
            &set(&[("n", json!(10))]),
        )
        .await
        .unwrap();
    let old = store
        .apply(
            "s",
            &epoch_of(&store, "s").await,
            sender(5),
            Expected::Any,
            &set(&[("n", json!(5))]),
        )
        .await
        .unwrap();
    assert_eq!(old, ApplyOutcome::Unknown);
    // Another session's ids are its own.
    let other = store
        .apply(
            "s",
            &epoch_of(&store, "s").await,
            Some(Sender {
                client: "bob",
                session: "tab-1",
                request_id: 1,
                floor: None,
                after: None,
            }),
            Expected::Any,
            &set(&[("m", json!(1))]),
        )
        .await
        .unwrap();
    assert_eq!(other, ApplyOutcome::Applied(3));
    let loaded = store.load("s").await.unwrap().unwrap();
    assert_eq!(Value::Object(loaded.value), json!({"n": 10, "m": 1}));
    assert_eq!(loaded.version, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_get_one_order_and_subscribers_see_it() {
    let redis = start_redis().await;
    let store = RedisStore::connect(&redis.url, 600).await.unwrap();
    store
        .create("s", &JsonObject::new(), None, false)
        .await
        .unwrap();
    let client = redis::Client::open(redis.url.as_str()).unwrap();
    let mut subscription = client.get_async_pubsub().await.unwrap();
    subscription.subscribe(channel("s")).await.unwrap();
    const WRITERS: u64 = 8;
    const EACH: u64 = 50;
    let mut tasks = Vec::new();
    for writer in 0..WRITERS {
        // Each writer on its own connection, as separate servers would be.
        let store = RedisStore::connect(&redis.url, 600).await.unwrap();
        tasks.push(tokio::spawn(async move {
            let mut versions = Vec::new();
            for n in 1..=EACH {
                let session = format!("w{writer}");
                let sender = Sender {
                    client: "c",
                    session: &session,
                    request_id: n,
                    floor: None,
                    after: None,
                };
                let key = format!("w{writer}");
                let update = StoredUpdate {
                    set: vec![(key.as_str(), n.to_string())],
                    removed: Vec::new(),
                    payload: format!("{writer}:{n}"),
                };
                match store
                    .apply(
                        "s",
                        &epoch_of(&store, "s").await,
                        Some(sender),
                        Expected::Any,
                        &update,
                    )
                    .await
                    .unwrap()
                {
                    ApplyOutcome::Applied(version) => versions.push(version),
                    other => panic!("{other:?}"),
                }
            }
            versions
        }));
    }
    let mut versions = Vec::new();
    for task in tasks {
        versions.extend(task.await.unwrap());
    }
    versions.sort_unstable();
    assert_eq!(versions, (1..=WRITERS * EACH).collect::<Vec<_>>());
    // The subscriber saw every version once, in order, each writer's in its order.
    let mut messages = subscription.on_message();
    let mut last_of = vec![0_u64; WRITERS as usize];
    for expected in 1..=WRITERS * EACH {
        let message = tokio::time::timeout(Duration::from_secs(10), messages.next())
            .await
            .expect("published")
            .unwrap();
        let text: String = message.get_payload().unwrap();
        let (version, payload) = text.split_once(' ').unwrap();
        assert_eq!(version.parse::<u64>().unwrap(), expected);
        let (writer, n) = payload.split_once(':').unwrap();
        let (writer, n): (usize, u64) = (writer.parse().unwrap(), n.parse().unwrap());
        assert_eq!(n, last_of[writer] + 1);
        last_of[writer] = n;
    }
    let loaded = store.load("s").await.unwrap().unwrap();
    assert_eq!(loaded.version, WRITERS * EACH);
    for writer in 0..WRITERS {
        assert_eq!(loaded.value[&format!("w{writer}")], json!(EACH));
    }
}

/// Follows state `s` from `version`, the events in a channel; ticks are left out.
fn follow(
    store: &RedisStore,
    check_every: Duration,
    version: u64,
    epoch: String,
) -> tokio::sync::mpsc::UnboundedReceiver<FeedEvent> {
    let (sender, events) = tokio::sync::mpsc::unbounded_channel();
    let handler: feed::Handler = Box::new(move |event| {
        if event != FeedEvent::Tick && sender.send(event).is_err() {
            return feed::Next::Stop;
        }
        feed::Next::Continue
    });
    feed::Feed::start(store.clone(), check_every).follow("s", version, epoch, handler);
    events
}

/// The next event about the state's value (presence loads, which every follower
/// makes when it starts, are skipped: they are tested with presence).
async fn next_event(events: &mut tokio::sync::mpsc::UnboundedReceiver<FeedEvent>) -> FeedEvent {
    loop {
        let event = tokio::time::timeout(Duration::from_secs(10), events.recv())
            .await
            .expect("an event within 10 s")
            .expect("the follower runs");
        if !matches!(
            event,
            FeedEvent::Presence { .. } | FeedEvent::PresenceSnapshot(_)
        ) {
            return event;
        }
    }
}

/// Applies `count` updates, `{"n": k}` with payload `k`, from another connection.
async fn apply_many(url: &str, id: &str, range: std::ops::RangeInclusive<u64>) {
    let store = RedisStore::connect(url, 600).await.unwrap();
    for n in range {
        let update = StoredUpdate {
            set: vec![("n", n.to_string())],
            removed: Vec::new(),
            payload: n.to_string(),
        };
        assert!(matches!(
            store
                .apply(
                    id,
                    &epoch_of(&store, id).await,
                    None,
                    Expected::Any,
                    &update
                )
                .await
                .unwrap(),
            ApplyOutcome::Applied(_)
        ));
    }
}

async fn expect_updates(
    events: &mut tokio::sync::mpsc::UnboundedReceiver<FeedEvent>,
    range: std::ops::RangeInclusive<u64>,
) {
    for expected in range {
        match next_event(events).await {
            FeedEvent::Update { version, payload } => {
                assert_eq!((version, payload), (expected, expected.to_string()));
            }
            other => panic!("expected version {expected}, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_follower_gets_every_update_once_in_order_even_when_its_subscription_drops() {
    let redis = start_redis().await;
    let store = RedisStore::connect(&redis.url, 600).await.unwrap();
    store
        .create("s", &JsonObject::new(), None, false)
        .await
        .unwrap();
    let loaded = store.load("s").await.unwrap().unwrap();
    let mut events = follow(&store, Duration::from_secs(60), 0, loaded.epoch);
    // Subscribed (the follower checks right after subscribing, with nothing to do).
    tokio::time::sleep(Duration::from_millis(200)).await;
    apply_many(&redis.url, "s", 1..=50).await;
    expect_updates(&mut events, 1..=50).await;
    // Every subscription connection is killed: what is published meanwhile is lost,
    // and the follower, subscribed again, catches up from the stream.
    let mut admin = redis::Client::open(redis.url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    for round in 0..3 {
        let killed: i64 = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg("pubsub")
            .query_async(&mut admin)
            .await
            .unwrap();
        assert!(killed >= 1, "round {round}: a subscription was killed");
        let from = 51 + round * 20;
        apply_many(&redis.url, "s", from..=from + 19).await;
        expect_updates(&mut events, from..=from + 19).await;
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(300), events.recv())
            .await
            .is_err(),
        "nothing twice"
    );
}

#[tokio::test]
async fn a_lost_last_publish_is_found_by_the_version_check() {
    let redis = start_redis().await;
    let store = RedisStore::connect(&redis.url, 600).await.unwrap();
    store
        .create("s", &JsonObject::new(), None, false)
        .await
        .unwrap();
    let epoch = store.load("s").await.unwrap().unwrap().epoch;
    let mut events = follow(&store, Duration::from_millis(100), 0, epoch);
    tokio::time::sleep(Duration::from_millis(200)).await;
    apply_many(&redis.url, "s", 1..=1).await;
    expect_updates(&mut events, 1..=1).await;
    // Version 2 is applied but its publish never happens (as when the publishing
    // connection dies in between): no later update reveals the gap.
    let mut admin = redis::Client::open(redis.url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = redis::pipe()
        .atomic()
        .cmd("HINCRBY")
        .arg(key("s", "meta"))
        .arg("version")
        .arg(1)
        .ignore()
        .cmd("XADD")
        .arg(key("s", "log"))
        .arg("2-1")
        .arg("u")
        .arg("2")
        .ignore()
        .query_async(&mut admin)
        .await
        .unwrap();
    expect_updates(&mut events, 2..=2).await;
}

#[tokio::test]
async fn a_trimmed_history_or_a_new_incarnation_resyncs_and_a_removed_state_ends() {
    let redis = start_redis().await;
    let store = RedisStore::connect(&redis.url, 600).await.unwrap();
    store
        .create("s", &object(json!({"keep": true})), None, false)
        .await
        .unwrap();
    let epoch = store.load("s").await.unwrap().unwrap().epoch;
    let mut admin = redis::Client::open(redis.url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    // Versions 1-5 happened before the follower starts from 0, and the stream no
    // longer has them.
    apply_many(&redis.url, "s", 1..=5).await;
    let _: i64 = redis::cmd("XTRIM")
        .arg(key("s", "log"))
        .arg("MAXLEN")
        .arg(0)
        .query_async(&mut admin)
        .await
        .unwrap();
    let mut events = follow(&store, Duration::from_millis(100), 0, epoch.clone());
    match next_event(&mut events).await {
        FeedEvent::Resync(state) => {
            assert_eq!(state.version, 5);
            assert_eq!(Value::Object(state.value), json!({"keep": true, "n": 5}));
        }
        other => panic!("expected a resync, got {other:?}"),
    }
    apply_many(&redis.url, "s", 6..=6).await;
    expect_updates(&mut events, 6..=6).await;
    // Removed and created again elsewhere, in one step (a follower that looks in
    // between sees the state gone, which is right too): another incarnation.
    let _: () = redis::pipe()
        .atomic()
        .del(&[key("s", "meta"), key("s", "fields"), key("s", "log")])
        .ignore()
        .hset_multiple(
            key("s", "meta"),
            &[("version", "0"), ("epoch", "another"), ("next_slot", "1")],
        )
        .ignore()
        .hset(key("s", "fields"), "new", "1 1")
        .ignore()
        .query_async(&mut admin)
        .await
        .unwrap();
    match next_event(&mut events).await {
        FeedEvent::Resync(state) => {
            assert_ne!(state.epoch, epoch);
            assert_eq!(state.version, 0);
            assert_eq!(Value::Object(state.value), json!({"new": 1}));
        }
        other => panic!("expected a resync, got {other:?}"),
    }
    // Removed for good: the follower says so and stops.
    // (as remove.lua does: the keys go and a tombstone stays; without the tombstone
    // the state would be lost, not removed).
    let _: () = redis::pipe()
        .atomic()
        .del(&[key("s", "meta"), key("s", "fields")])
        .ignore()
        .set(key("s", "removed"), "another")
        .ignore()
        .query_async(&mut admin)
        .await
        .unwrap();
    assert_eq!(next_event(&mut events).await, FeedEvent::Gone(None));
    assert!(
        tokio::time::timeout(Duration::from_secs(2), events.recv())
            .await
            .expect("the follower stops")
            .is_none()
    );
}
