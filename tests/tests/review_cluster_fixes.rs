//! Review of the cluster mode (issue 13): reproductions of the defects an adversarial
//! review found, against real redis-servers started by each test; each failed before
//! its fix and guards it now.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use state_sync_client::{Client, Error, ReconnectPolicy, Update, UpdateFailure};
use state_sync_protocol::FailureReason;
use state_sync_server::{Redis, StateOptions, StateSyncer};
use state_sync_tests::{
    ClusterNode as Node, RawClient, Received, TestRedis, cluster_node, eventually,
    plain_state as plain, serve,
};

async fn node_every(redis: &TestRedis, every: Duration, states: impl Fn(&StateSyncer)) -> Node {
    cluster_node(Redis::new(redis.url()).unwrap().check_every(every), states).await
}

async fn admin(redis: &TestRedis) -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis.url().as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

async fn loaded(node: &Node, id: &str) {
    // Attaching waits for the replica to be loaded from Redis.
    let mut probe = RawClient::connect(&node.url, "probe", None).await;
    probe.attach(id).await;
}

/// An append with `ifVersion` ahead of the state is a conflict on one server; in a
/// cluster the server waits for a version that never comes, then closes the connection
/// with 1013, and the client retries the same update forever.
#[tokio::test]
async fn an_append_if_version_ahead_of_the_state_is_a_conflict() {
    let redis = TestRedis::start().await;
    let a = node_every(&redis, Duration::from_millis(200), plain("s")).await;
    loaded(&a, "s").await;
    let mut raw = RawClient::connect(&a.url, "ann", None).await;
    raw.attach_session("s", "tab").await;
    let started = Instant::now();
    raw.send(json!({"type": 3, "data": {
        "updates": {}, "ops": {"log": {"append": [1]}}, "ifVersion": 1000, "requestId": 1
    }}))
    .await;
    match raw.next().await {
        Received::Json(answer) => {
            assert_eq!(answer["type"], 9, "{answer}");
            assert_eq!(answer["data"]["reason"], "conflict", "{answer}");
        }
        Received::Closed(frame) => panic!(
            "the connection was closed after {:?} instead of a conflict: {frame:?}",
            started.elapsed()
        ),
    }
}

/// The same through the native client: `apply` must fail with a conflict, not hang
/// while the client reconnects and resends the update.
#[tokio::test]
async fn the_native_client_gets_a_conflict_for_an_append_if_version_ahead() {
    let redis = TestRedis::start().await;
    let a = node_every(&redis, Duration::from_millis(200), plain("s")).await;
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
    // The session is known to Redis (see the next test for a fresh one).
    client.update_state(json!({"before": 1})).await.unwrap();
    let result = tokio::time::timeout(
        Duration::from_secs(20),
        client.apply(Update::new().append("log", [json!(1)]).if_version(1000)),
    )
    .await;
    match result {
        Ok(Err(Error::Update(UpdateFailure::Rejected {
            reason: FailureReason::Conflict,
            ..
        }))) => {}
        Err(_) => panic!("apply() never resolved: the client keeps resending it"),
        Ok(other) => panic!("expected a conflict, got {other:?}"),
    }
}

/// Self-destruct counts the clients of every server, but a client that just attached
/// on another server is not counted until that server's next periodic report: the
/// state is removed under it.
#[tokio::test]
async fn self_destruct_does_not_remove_a_state_a_client_just_attached_to_elsewhere() {
    let redis = TestRedis::start().await;
    let states = |syncer: &StateSyncer| {
        syncer
            .create_state(
                StateOptions::new()
                    .identifier("room")
                    .self_destruct(|clients, _| clients == 0),
            )
            .unwrap();
    };
    // The default period (2 s).
    let a = node_every(&redis, Duration::from_secs(2), states).await;
    let b = node_every(&redis, Duration::from_secs(2), states).await;
    let mut on_a = RawClient::connect(&a.url, "ann", None).await;
    on_a.attach("room").await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let mut on_b = RawClient::connect(&b.url, "bob", None).await;
    on_b.attach("room").await;
    // Ann leaves right after Bob arrived on the other server.
    drop(on_a);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(
        b.syncer.value_of_state("room").is_some(),
        "the state self-destructed although bob is attached on the other server"
    );
    on_b.expect_silence(Duration::from_millis(200)).await;
}

async fn outcome_keys(admin: &mut redis::aio::MultiplexedConnection, id: &str) -> Vec<String> {
    redis::cmd("KEYS")
        .arg(format!("ss:{{{id}}}:out:*"))
        .query_async(admin)
        .await
        .unwrap()
}

/// A session's outcomes in Redis are capped to the dedup window only when its request
/// ids are consecutive: ids that grow by more than the window (or start above 2^53) are
/// never trimmed, so one client grows the hash by one entry per update, without bound.
#[tokio::test]
async fn a_sessions_outcomes_in_redis_stay_within_the_window_whatever_its_ids() {
    let redis = TestRedis::start().await;
    let a = node_every(&redis, Duration::from_millis(200), plain("s")).await;
    let mut raw = RawClient::connect(&a.url, "ann", None).await;
    raw.attach_session("s", "tab").await;
    const UPDATES: u64 = 400;
    for i in 1..=UPDATES {
        raw.update_with_id(json!({"k": i}), i * 1000).await;
        assert_eq!(raw.expect(3).await["requestId"], i * 1000);
    }
    let mut admin = admin(&redis).await;
    let keys = outcome_keys(&mut admin, "s").await;
    assert_eq!(keys.len(), 1, "{keys:?}");
    let len: usize = redis::cmd("HLEN")
        .arg(&keys[0])
        .query_async(&mut admin)
        .await
        .unwrap();
    let window = state_sync_protocol::DEDUP_WINDOW;
    assert!(
        len <= window + 1,
        "the outcomes hash holds {len} entries (window {window})"
    );
}

/// The same with consecutive ids above 2^53 (valid u64 request ids).
#[tokio::test]
async fn outcomes_of_request_ids_above_2_pow_53_are_trimmed_too() {
    let redis = TestRedis::start().await;
    let a = node_every(&redis, Duration::from_millis(200), plain("s")).await;
    let mut raw = RawClient::connect(&a.url, "ann", None).await;
    raw.attach_session("s", "tab").await;
    let base: u64 = 1 << 53;
    const UPDATES: u64 = 400;
    for i in 1..=UPDATES {
        raw.update_with_id(json!({"k": i}), base + i).await;
        raw.expect(3).await;
    }
    let mut admin = admin(&redis).await;
    let keys = outcome_keys(&mut admin, "s").await;
    let len: usize = redis::cmd("HLEN")
        .arg(&keys[0])
        .query_async(&mut admin)
        .await
        .unwrap();
    let window = state_sync_protocol::DEDUP_WINDOW;
    assert!(
        len <= window + 1,
        "the outcomes hash holds {len} entries (window {window})"
    );
}

/// One client identifier may not keep any number of sessions' outcomes in Redis: 64
/// per state once idle for a minute, and 256 whatever their age (a single server keeps
/// at most 64 detached ones per client).
#[tokio::test]
async fn one_client_cannot_keep_unbounded_sessions_in_redis() {
    let redis = TestRedis::start().await;
    let a = node_every(&redis, Duration::from_millis(200), plain("s")).await;
    for connection in 0..20 {
        let mut raw = RawClient::connect(&a.url, "mallory", None).await;
        for s in 0..16 {
            raw.attach_session("s", &format!("session-{connection}-{s}"))
                .await;
            raw.update_with_id(json!({"k": s}), 1).await;
            raw.expect(3).await;
        }
    }
    let mut admin = admin(&redis).await;
    let keys = outcome_keys(&mut admin, "s").await;
    assert!(
        keys.len() <= 256,
        "one client keeps {} session hashes in redis",
        keys.len()
    );
}

/// Redis restarted without its data (no persistence, or a failover to an empty
/// replica): every server drops the states it was told to serve (`--state`) and never
/// serves them again until it is restarted.
#[tokio::test]
async fn states_come_back_after_redis_lost_everything() {
    let mut redis = TestRedis::start().await;
    let a = node_every(&redis, Duration::from_millis(200), plain("s")).await;
    loaded(&a, "s").await;
    a.syncer
        .update_state_value("s", json!({"x": 1}), None)
        .await
        .unwrap();
    redis.restart().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    eventually("the server serves the state again", || {
        a.syncer.value_of_state("s").is_some()
    })
    .await;
    let mut late = RawClient::connect(&a.url, "late", None).await;
    late.attach("s").await;
}

/// `remove_state` then `create_state` of the same identifier on one server (a room
/// reset): the new state must live on.
#[tokio::test]
async fn a_state_removed_and_created_again_at_once_lives_on() {
    let redis = TestRedis::start().await;
    let a = node_every(&redis, Duration::from_millis(200), plain("s")).await;
    loaded(&a, "s").await;
    assert!(a.syncer.remove_state("s"));
    a.syncer
        .create_state(
            StateOptions::new()
                .identifier("s")
                .initial_value(json!({"fresh": true})),
        )
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        a.syncer.value_of_state("s").map(Value::Object),
        Some(json!({"fresh": true})),
        "the state created again is gone"
    );
    let mut admin = admin(&redis).await;
    let exists: i64 = redis::cmd("EXISTS")
        .arg("ss:{s}:meta")
        .query_async(&mut admin)
        .await
        .unwrap();
    assert_eq!(exists, 1, "redis no longer has the state");
}

/// `max_state_bytes` holds on one server because updates are checked and applied under
/// the state's lock; in a cluster a set-only update is checked against the replica,
/// which does not have the updates in flight: concurrent senders (on one server or
/// several) grow the state far past the limit, and every attach then sends all of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_set_only_updates_cannot_grow_a_state_past_its_limit() {
    let redis = TestRedis::start().await;
    const LIMIT: usize = 10_000;
    let build = || {
        StateSyncer::builder()
            .redis(
                Redis::new(redis.url())
                    .unwrap()
                    .check_every(Duration::from_millis(200)),
            )
            .max_state_bytes(LIMIT)
            .build()
    };
    let (a, b) = (build(), build());
    for syncer in [&a, &b] {
        syncer
            .create_state(StateOptions::new().identifier("s"))
            .unwrap();
    }
    let (_server_a, url_a) = serve(&a).await;
    let (_server_b, url_b) = serve(&b).await;
    let mut clients = Vec::new();
    for n in 0..10 {
        let url = if n % 2 == 0 { &url_a } else { &url_b };
        let mut raw = RawClient::connect(url, &format!("c{n}"), None).await;
        raw.attach_session("s", "tab").await;
        clients.push(raw);
    }
    // Each sets a key of its own with 6,000 bytes: at most one fits.
    let big = "x".repeat(6_000);
    for (n, raw) in clients.iter_mut().enumerate() {
        raw.update_with_id(json!({ format!("k{n}"): big }), 1).await;
    }
    for raw in &mut clients {
        let answer = raw.recv().await;
        assert!(answer["type"] == 3 || answer["type"] == 9, "{answer}");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let value = Value::Object(a.value_of_state("s").unwrap());
    let size = value.to_string().len();
    assert!(
        size <= LIMIT,
        "the state holds {size} bytes (limit {LIMIT}): {} keys",
        value.as_object().unwrap().len()
    );
}

/// Echoes (the sender's answer, registered per update until its publish comes back)
/// are forgotten only when their publish is delivered. When the server resyncs instead
/// (its subscription was down longer than the stream keeps, a new incarnation, ...)
/// the echoes of the updates it skipped stay for ever; at 65,536 the state refuses
/// every update of this server's clients (1013) until the process restarts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echoes_skipped_by_a_resync_are_not_kept_for_ever() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let redis = TestRedis::start().await;
    let mut admin = admin(&redis).await;
    // The server's Redis user, so that its subscription can be refused for a while.
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("node")
        .arg("on")
        .arg(">pw")
        .arg("~*")
        .arg("&*")
        .arg("+@all")
        .query_async(&mut admin)
        .await
        .unwrap();
    let url = redis.url().replace("redis://", "redis://node:pw@");
    let syncer = StateSyncer::builder()
        .redis(
            Redis::new(url)
                .unwrap()
                .check_every(Duration::from_secs(60)),
        )
        .build();
    syncer
        .create_state(StateOptions::new().identifier("s"))
        .unwrap();
    let (_server, ws_url) = serve(&syncer).await;
    let mut probe = RawClient::connect(&ws_url, "probe", None).await;
    probe.attach("s").await;
    drop(probe);
    // The subscription goes down and cannot come back.
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("node")
        .arg("-subscribe")
        .query_async(&mut admin)
        .await
        .unwrap();
    let _: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("USER")
        .arg("node")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(&mut admin)
        .await
        .unwrap();
    // One client sends updates with request ids: applied, their echoes waited for.
    let (ws, _) = tokio_tungstenite::connect_async(format!("{ws_url}/?identifier=ann&token="))
        .await
        .unwrap();
    let (mut sink, mut stream) = ws.split();
    let reader = tokio::spawn(async move {
        let mut last = None;
        while let Some(Ok(message)) = stream.next().await {
            last = Some(message);
        }
        last
    });
    sink.send(Message::text(
        json!({"type": 2, "data": {"stateIdentifier": "s", "session": "t"}}).to_string(),
    ))
    .await
    .unwrap();
    const SENT: u64 = 65_600;
    for id in 1..=SENT {
        let text = json!({"type": 3, "data": {"updates": {"n": id}, "requestId": id}}).to_string();
        if sink.send(Message::text(text)).await.is_err() {
            break;
        }
    }
    let last = tokio::time::timeout(Duration::from_secs(120), reader)
        .await
        .expect("closed")
        .unwrap();
    eprintln!("the sender's connection ended with {last:?}");
    // The subscription is allowed again: the server is far behind the stream, resyncs.
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("node")
        .arg("+subscribe")
        .query_async(&mut admin)
        .await
        .unwrap();
    // The server catches up with Redis (updates it sent before closing the connection
    // may still land after this line: the version is read again each time).
    let mut version = 0;
    let caught_up = tokio::time::timeout(state_sync_tests::PATIENCE, async {
        loop {
            version = redis::cmd("HGET")
                .arg("ss:{s}:meta")
                .arg("version")
                .query_async(&mut admin)
                .await
                .unwrap();
            if syncer.version_of_state("s") == Some(version) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(
        caught_up.is_ok(),
        "the server did not catch up: it is at {:?}, Redis at {version}",
        syncer.version_of_state("s")
    );
    // Anybody's update on this server, now.
    let mut bob = RawClient::connect(&ws_url, "bob", None).await;
    bob.attach_session("s", "t").await;
    bob.update_with_id(json!({"bob": 1}), 1).await;
    match bob.next().await {
        Received::Json(answer) => assert_eq!(answer["data"]["requestId"], 1, "{answer}"),
        Received::Closed(frame) => panic!("bob's update was refused: {frame:?}"),
    }
}

/// A state's stream in Redis does not keep large updates (a server that needs one
/// loads the whole state): one client sending 1 MB updates cannot fill Redis with
/// them; a server that missed them still converges.
#[tokio::test]
async fn a_states_stream_keeps_no_large_updates() {
    let redis = TestRedis::start().await;
    let a = node_every(&redis, Duration::from_millis(200), plain("s")).await;
    let b = node_every(&redis, Duration::from_millis(200), plain("s")).await;
    loaded(&a, "s").await;
    loaded(&b, "s").await;
    let mut raw = RawClient::connect(&a.url, "ann", None).await;
    raw.attach_session("s", "tab").await;
    let big = "x".repeat(200_000);
    for i in 1..=20_u64 {
        raw.update_with_id(json!({"big": big, "i": i}), i).await;
        raw.expect(3).await;
    }
    let mut admin = admin(&redis).await;
    let bytes: u64 = redis::cmd("MEMORY")
        .arg("USAGE")
        .arg("ss:{s}:log")
        .query_async(&mut admin)
        .await
        .unwrap();
    assert!(bytes < 64 << 10, "the stream holds {bytes} bytes");
    eventually("the other server has every update", || {
        b.syncer.version_of_state("s") == Some(20)
    })
    .await;
    assert_eq!(b.syncer.value_of_state("s").unwrap()["i"], json!(20));
}
