//! The native client against the real server (and against a peer that speaks only the
//! original protocol), over real sockets.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};
use state_sync_client::{Client, ConnectionStatus, Error, ReconnectPolicy, UpdateFailure};
use state_sync_protocol::FailureReason;
use state_sync_server::{StateOptions, StateSyncer};
use state_sync_tests::{
    PATIENCE, ScriptedPeer, eventually, serve, serve_states, start_legacy_server, vetoing_state,
};

type Heard = Arc<Mutex<Vec<(Value, Value)>>>;

fn recorder(client: &Client, id: &str, properties: &[&str]) -> Heard {
    let heard: Heard = Arc::default();
    let sink = Arc::clone(&heard);
    client.add_state_update_listener(id, properties, move |updates, previous| {
        sink.lock().unwrap().push((json!(updates), json!(previous)));
    });
    heard
}

fn fast_reconnect() -> ReconnectPolicy {
    ReconnectPolicy {
        initial: Duration::from_millis(20),
        max: Duration::from_millis(200),
        ..ReconnectPolicy::default()
    }
}

#[tokio::test]
async fn the_whole_api() {
    let syncer = StateSyncer::new();
    syncer
        .create_state(
            StateOptions::new()
                .identifier("doc")
                .initial_value(json!({"title": "t", "body": "b"}))
                .intercept_state_update(|mut updates, _| {
                    if let Some(Value::String(title)) = updates.set.get("title") {
                        let shouted = title.to_uppercase();
                        updates.set.insert("title".into(), json!(shouted));
                    }
                    Some(updates)
                }),
        )
        .unwrap();
    let (server, url) = serve(&syncer).await;
    let client = Client::connect(&url, "alice", Some("token")).await.unwrap();
    assert_eq!(client.status(), ConnectionStatus::Connected);
    let state = client.connect_to_state("doc").await.unwrap();
    assert_eq!(json!(state), json!({"title": "t", "body": "b"}));

    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct Doc {
        title: String,
        body: String,
    }
    assert_eq!(
        client.state_as::<Doc>().unwrap(),
        Doc {
            title: "t".into(),
            body: "b".into()
        }
    );

    let everything = recorder(&client, "all", &[]);
    let titles = recorder(&client, "titles", &["title"]);
    let bodies = recorder(&client, "bodies", &["body"]);
    let mut stream = Box::pin(client.updates());

    let applied = client
        .update_state(json!({"title": "hello"}))
        .await
        .unwrap();
    assert_eq!(
        json!(*applied.updates),
        json!({"title": "HELLO"}),
        "as applied, after the interceptor"
    );
    assert_eq!(applied.version, Some(1));
    assert_eq!(
        client.state()["title"],
        "HELLO",
        "the local state follows the server"
    );
    assert_eq!(
        *titles.lock().unwrap(),
        [(json!({"title": "HELLO"}), json!({"title": "t"}))]
    );
    assert!(bodies.lock().unwrap().is_empty(), "filtered out");
    let streamed = stream.next().await.unwrap();
    assert_eq!(json!(*streamed.updates), json!({"title": "HELLO"}));
    assert_eq!(json!(streamed.previous), json!({"title": "t"}));

    // Same id replaces; removal stops it.
    let replaced = recorder(&client, "titles", &["body"]);
    client.update_state(json!({"body": "new"})).await.unwrap();
    assert_eq!(titles.lock().unwrap().len(), 1);
    assert_eq!(
        *replaced.lock().unwrap(),
        [(json!({"body": "new"}), json!({"body": "b"}))]
    );
    assert!(client.remove_state_update_listener("all"));
    assert!(!client.remove_state_update_listener("all"));
    client.update_state(json!({"body": "newer"})).await.unwrap();
    assert_eq!(everything.lock().unwrap().len(), 2);

    assert!(matches!(
        client.update_state(json!([1])).await,
        Err(Error::NotAnObject(_))
    ));
    assert!(matches!(
        client.connect_to_state("missing").await,
        Err(Error::AttachFailed(_))
    ));

    // Removal on the server is reported.
    let mut errors = client.errors();
    let other = Client::connect(&url, "bob", None).await.unwrap();
    syncer
        .create_state(StateOptions::new().identifier("temp"))
        .unwrap();
    other.connect_to_state("temp").await.unwrap();
    let mut other_errors = other.errors();
    syncer.remove_state("temp");
    assert!(matches!(
        other_errors.recv().await.unwrap(),
        Error::StateRemoved(_)
    ));
    assert!(
        errors.try_recv().is_err(),
        "the other client is not affected"
    );

    client.close().await;
    assert_eq!(client.status(), ConnectionStatus::Closed);
    assert!(matches!(
        client.update_state(json!({"x": 1})).await,
        Err(Error::Closed)
    ));
    server.shutdown().await;
}

#[tokio::test]
async fn two_clients_converge_and_a_veto_fails_the_update() {
    let syncer = StateSyncer::new();
    syncer.create_state(vetoing_state("s")).unwrap();
    let (server, url) = serve(&syncer).await;
    let a = Client::connect(&url, "a", None).await.unwrap();
    let b = Client::connect(&url, "b", None).await.unwrap();
    a.connect_to_state("s").await.unwrap();
    b.connect_to_state("s").await.unwrap();
    let mut pending = Vec::new();
    for i in 0..100 {
        pending.push(a.update_state(json!({"shared": format!("a{i}"), "a": i})));
        pending.push(b.update_state(json!({"shared": format!("b{i}"), "b": i})));
    }
    for result in futures_util::future::join_all(pending).await {
        result.unwrap();
    }
    eventually("both clients converge", || {
        a.state() == b.state() && a.state().len() == 3
    })
    .await;
    assert_eq!(a.state(), syncer.value_of_state("s").unwrap());
    assert_eq!(a.state()["a"], 99);
    assert_eq!(a.state()["b"], 99);

    let vetoed = a.update_state(json!({"forbidden": true})).await;
    match vetoed {
        Err(Error::Update(UpdateFailure::Rejected {
            reason: FailureReason::Vetoed,
            ..
        })) => {}
        other => panic!("expected a veto, got {other:?}"),
    }
    assert!(!a.state().contains_key("forbidden"));
    server.shutdown().await;
}

#[tokio::test]
async fn a_connection_dropped_by_the_server_is_reopened_and_in_flight_updates_apply_once() {
    let syncer = StateSyncer::new();
    syncer
        .create_state(
            StateOptions::new()
                .identifier("s")
                .initial_value(json!({"n": 0})),
        )
        .unwrap();
    let (server, url) = serve(&syncer).await;
    let client = Client::builder(&url, "c")
        .reconnect(fast_reconnect())
        .connect()
        .await
        .unwrap();
    client.connect_to_state("s").await.unwrap();
    let mut status = client.status_changes();
    let statuses = tokio::spawn(async move {
        let mut seen = Vec::new();
        while status.changed().await.is_ok() {
            let now = *status.borrow_and_update();
            seen.push(now);
            if now == ConnectionStatus::Connected {
                break;
            }
        }
        seen
    });

    // 300 updates, and the server drops the connection while they are in flight.
    let mut pending = Vec::new();
    for i in 1..=300 {
        pending.push(client.update_state(json!({"n": i, format!("k{i}"): i})));
    }
    assert_eq!(syncer.disconnect_client("c"), 1);
    let results = futures_util::future::join_all(pending).await;
    for (i, result) in results.into_iter().enumerate() {
        let applied = result.unwrap_or_else(|e| panic!("update {} failed: {e}", i + 1));
        assert_eq!(applied.updates["n"], i + 1);
    }
    assert_eq!(
        syncer.version_of_state("s"),
        Some(300),
        "each update applied exactly once"
    );
    assert_eq!(syncer.value_of_state("s").unwrap()["n"], 300);
    assert_eq!(client.state(), syncer.value_of_state("s").unwrap());
    // The client went through Reconnecting and is connected again.
    let seen = tokio::time::timeout(PATIENCE, statuses)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        seen,
        [ConnectionStatus::Reconnecting, ConnectionStatus::Connected]
    );
    server.shutdown().await;
}

#[tokio::test]
async fn listeners_hear_what_changed_while_the_client_was_away() {
    let syncer = StateSyncer::new();
    syncer
        .create_state(
            StateOptions::new()
                .identifier("s")
                .initial_value(json!({"a": 1, "b": 1})),
        )
        .unwrap();
    let (server, url) = serve(&syncer).await;
    let addr = server.local_addr();
    let client = Client::builder(&url, "c")
        .reconnect(fast_reconnect())
        .connect()
        .await
        .unwrap();
    client.connect_to_state("s").await.unwrap();
    let heard = recorder(&client, "all", &[]);

    server.shutdown().await;
    // While the client is away, the server changes the state.
    syncer
        .update_state_value("s", json!({"b": 2, "c": 3}), None)
        .await
        .unwrap();
    let server = syncer
        .serve(tokio::net::TcpListener::bind(addr).await.unwrap())
        .unwrap();

    eventually("the client resyncs", || client.state().get("c").is_some()).await;
    assert_eq!(
        *heard.lock().unwrap(),
        [(json!({"b": 2, "c": 3}), json!({"b": 1}))]
    );
    assert_eq!(json!(client.state()), json!({"a": 1, "b": 2, "c": 3}));
    server.shutdown().await;
}

#[tokio::test]
async fn updates_sent_while_the_server_is_down_arrive_exactly_once_after_a_restart() {
    let first = StateSyncer::new();
    first
        .create_state(
            StateOptions::new()
                .identifier("s")
                .initial_value(json!({"log": []})),
        )
        .unwrap();
    let (server, url) = serve(&first).await;
    let addr = server.local_addr();
    let client = Client::builder(&url, "c")
        .reconnect(fast_reconnect())
        .connect()
        .await
        .unwrap();
    client.connect_to_state("s").await.unwrap();
    client.update_state(json!({"before": true})).await.unwrap();

    server.shutdown().await;
    eventually("the client notices", || {
        client.status() == ConnectionStatus::Reconnecting
    })
    .await;
    let pending: Vec<_> = (0..20)
        .map(|i| client.update_state(json!({format!("during{i}"): i})))
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // A new server process: the state is re-created, empty.
    let second = StateSyncer::new();
    second
        .create_state(
            StateOptions::new()
                .identifier("s")
                .initial_value(json!({"log": []})),
        )
        .unwrap();
    let server = second
        .serve(tokio::net::TcpListener::bind(addr).await.unwrap())
        .unwrap();
    for result in futures_util::future::join_all(pending).await {
        result.unwrap();
    }
    assert_eq!(
        second.version_of_state("s"),
        Some(20),
        "each of the 20 applied once"
    );
    let state = second.value_of_state("s").unwrap();
    assert!((0..20).all(|i| state[&format!("during{i}")] == i));
    eventually("the client matches the new server", || {
        client.state() == second.value_of_state("s").unwrap()
    })
    .await;
    assert!(
        !client.state().contains_key("before"),
        "the old state is gone, and the client knows"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn reconnection_delays_stay_within_the_backoff_bounds() {
    let syncer = StateSyncer::new();
    let (server, url) = serve(&syncer).await;
    let addr = server.local_addr();
    let policy = ReconnectPolicy {
        initial: Duration::from_millis(40),
        max: Duration::from_millis(320),
        multiplier: 2.0,
        jitter: 0.5,
        max_attempts: Some(7),
        ..ReconnectPolicy::default()
    };
    let client = Client::builder(&url, "c")
        .reconnect(policy.clone())
        .connect()
        .await
        .unwrap();
    server.shutdown().await;
    // In the server's place: a socket that accepts and hangs up, recording when.
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let lost_at = Instant::now();
    let mut attempts = Vec::new();
    while attempts.len() < 7 {
        let (tcp, _) = tokio::time::timeout(PATIENCE, listener.accept())
            .await
            .unwrap()
            .unwrap();
        attempts.push(Instant::now());
        drop(tcp);
    }
    let mut previous = lost_at;
    for (attempt, at) in attempts.iter().enumerate() {
        let (low, high) = policy.bounds(u32::try_from(attempt).unwrap());
        let waited = at.duration_since(previous);
        assert!(
            waited + Duration::from_millis(5) >= low && waited <= high + Duration::from_millis(150),
            "attempt {attempt}: waited {waited:?}, bounds {low:?}..{high:?}"
        );
        previous = *at;
    }
    eventually("the client gives up", || {
        client.status() == ConnectionStatus::Closed
    })
    .await;
    assert!(
        tokio::time::timeout(Duration::from_millis(700), listener.accept())
            .await
            .is_err(),
        "no attempt past max_attempts"
    );
}

#[tokio::test]
async fn with_reconnection_off_a_lost_connection_closes_the_client() {
    let (syncer, server, url) = serve_states(&["s"]).await;
    let client = Client::builder(&url, "c")
        .reconnect(ReconnectPolicy::disabled())
        .connect()
        .await
        .unwrap();
    client.connect_to_state("s").await.unwrap();
    syncer.disconnect_client("c");
    eventually("closed", || client.status() == ConnectionStatus::Closed).await;
    assert!(matches!(
        client.update_state(json!({"x": 1})).await,
        Err(Error::Closed)
    ));
    server.shutdown().await;
}

#[tokio::test]
async fn a_refused_client_gets_the_servers_reason() {
    let syncer = StateSyncer::builder()
        .authorize(|request| async move {
            if request.token.as_deref() == Some("good") {
                Ok(())
            } else {
                Err(state_sync_server::Rejection::new("bad token"))
            }
        })
        .build();
    let (server, url) = serve(&syncer).await;
    match Client::connect(&url, "c", Some("bad")).await {
        Err(Error::Refused { status: 401, body }) => assert_eq!(body, "bad token"),
        other => panic!("expected a 401, got {other:?}"),
    }
    Client::connect(&url, "c", Some("good")).await.unwrap();
    assert!(matches!(
        Client::connect("http://x", "c", None).await,
        Err(Error::InvalidEndpoint { .. })
    ));
    server.shutdown().await;
}

#[tokio::test]
async fn against_a_server_that_speaks_only_the_original_protocol() {
    let url = start_legacy_server("chat", json!({"chatMessages": []})).await;
    let alice = Client::connect(&url, "alice", None).await.unwrap();
    let bob = Client::connect(&url, "bob", None).await.unwrap();
    assert_eq!(
        json!(alice.connect_to_state("chat").await.unwrap()),
        json!({"chatMessages": []})
    );
    bob.connect_to_state("chat").await.unwrap();
    let heard = recorder(&bob, "messages", &["chatMessages"]);
    let applied = alice
        .update_state(json!({"chatMessages": [{"content": "hi"}]}))
        .await
        .unwrap();
    assert_eq!(applied.version, None, "the original has no versions");
    eventually("bob hears it", || !heard.lock().unwrap().is_empty()).await;
    assert_eq!(
        *heard.lock().unwrap(),
        [(
            json!({"chatMessages": [{"content": "hi"}]}),
            json!({"chatMessages": []})
        )]
    );
    eventually("alice's own copy follows the echo", || {
        alice.state()["chatMessages"][0]["content"] == "hi"
    })
    .await;
    assert!(matches!(
        alice.connect_to_state("nope").await,
        Err(Error::AttachFailed(_))
    ));
}

#[tokio::test]
async fn over_wss() {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let tls = state_sync_server::TlsConfig::from_pem(
        certified.cert.pem().as_bytes(),
        certified.signing_key.serialize_pem().as_bytes(),
    )
    .unwrap();
    let syncer = StateSyncer::builder().tls(tls).build();
    syncer
        .create_state(StateOptions::new().identifier("s"))
        .unwrap();
    let server = syncer.bind("127.0.0.1:0").await.unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(certified.cert.der().clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let url = format!("wss://localhost:{}", server.local_addr().port());
    let client = Client::builder(url, "c")
        .tls_config(Arc::new(config))
        .connect()
        .await
        .unwrap();
    client.connect_to_state("s").await.unwrap();
    assert_eq!(
        client
            .update_state(json!({"secure": true}))
            .await
            .unwrap()
            .version,
        Some(1)
    );
    server.shutdown().await;
}

#[tokio::test]
async fn an_update_over_the_servers_limit_fails_and_does_not_loop() {
    // The server's limit is lower than the client's default, so the server closes the
    // connection with 1009; the client must fail that update, not resend it forever.
    let syncer = StateSyncer::builder().max_message_size(2048).build();
    syncer
        .create_state(StateOptions::new().identifier("s"))
        .unwrap();
    let (server, url) = serve(&syncer).await;
    let client = Client::builder(&url, "c")
        .reconnect(fast_reconnect())
        .connect()
        .await
        .unwrap();
    client.connect_to_state("s").await.unwrap();
    let big = client.update_state(json!({"blob": "x".repeat(4096)}));
    match big.await {
        Err(Error::Update(UpdateFailure::Rejected {
            reason: FailureReason::Invalid,
            ..
        })) => {}
        other => panic!("expected the update to be refused as invalid, got {other:?}"),
    }
    let applied = client.update_state(json!({"small": true})).await.unwrap();
    assert_eq!(applied.version, Some(1), "the big one was never applied");
    assert_eq!(syncer.version_of_state("s"), Some(1));
    server.shutdown().await;
}

/// Waits up to [`PATIENCE`] for `future`; panics naming `what` when it never ends.
async fn within<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, future)
        .await
        .unwrap_or_else(|_| panic!("never settled: {what}"))
}

#[tokio::test]
async fn an_unreadable_answer_to_an_attach_fails_it_and_the_next_attach_works() {
    // A server like the original whose state is not an object: its answer cannot be
    // read, and must not leave the attach (and every later one) waiting forever.
    let peer = ScriptedPeer::start(|frame| match frame["data"]["stateIdentifier"].as_str() {
        Some("broken") => vec![json!({"type": 7, "data": {}})],
        Some(_) => vec![json!({"type": 7, "data": {"state": {"ok": true}}})],
        None => vec![],
    })
    .await;
    let client = Client::connect(peer.url(), "c", None).await.unwrap();
    match within("the broken attach", client.connect_to_state("broken")).await {
        Err(Error::AttachFailed(message)) => assert!(
            message.starts_with(
                "the server's answer could not be read: the server's \
                 STATE_CONNECTION_ESTABLISHED (type 7) does not fit the protocol: missing field \
                 `state`"
            ),
            "{message}"
        ),
        other => panic!("expected the attach to fail, got {other:?}"),
    }
    let state = within("the next attach", client.connect_to_state("good"))
        .await
        .unwrap();
    assert_eq!(json!(state), json!({"ok": true}));
    client.close().await;
}

#[tokio::test]
async fn a_reattach_overtaken_by_the_removal_of_its_state_is_settled() {
    // The server removes the state after the client attached to it again, before it
    // read that attach: the removal comes first, then the refusal of the attach.
    let attaches = AtomicUsize::new(0);
    let peer = ScriptedPeer::start(move |frame| {
        if frame["type"] != 2 {
            return vec![];
        }
        match attaches.fetch_add(1, Ordering::SeqCst) {
            0 => vec![json!({"type": 7, "data": {"state": {}, "version": 0}})],
            _ => vec![
                json!({"type": 1, "data": {"stateIdentifier": "room", "message": "State room was removed"}}),
                json!({"type": 8, "data": {"message": "State with identifier room does not exist"}}),
            ],
        }
    })
    .await;
    let client = Client::connect(peer.url(), "c", None).await.unwrap();
    client.connect_to_state("room").await.unwrap();
    let mut errors = client.errors();
    match within("the re-attach", client.connect_to_state("room")).await {
        Err(Error::AttachFailed(message)) => assert_eq!(message, "State room was removed"),
        other => panic!("expected the re-attach to fail, got {other:?}"),
    }
    assert!(matches!(
        errors.recv().await.unwrap(),
        Error::StateRemoved(_)
    ));
    // The refusal that follows answers an attach already settled: nothing to report.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(errors.try_recv().is_err());
    assert!(matches!(
        client.update_state(json!({"x": 1})).await,
        Err(Error::Update(UpdateFailure::Rejected {
            reason: FailureReason::NotAttached,
            ..
        }))
    ));
    client.close().await;
}

#[tokio::test]
async fn a_server_that_drops_every_connection_gets_growing_delays_and_one_error() {
    let peer = ScriptedPeer::dropping().await;
    let started = Instant::now();
    let policy = ReconnectPolicy {
        initial: Duration::from_millis(50),
        multiplier: 2.0,
        jitter: 0.0,
        ..ReconnectPolicy::default()
    };
    let client = Client::builder(peer.url(), "c")
        .reconnect(policy)
        .connect()
        .await
        .unwrap();
    let mut errors = client.errors();
    // Upgrades at 0, 50, 150, 350, 750 and 1550 ms; the next at 3150 ms. Starting the
    // backoff over on every opened connection made it one every 50 ms.
    tokio::time::sleep(Duration::from_secs(2).saturating_sub(started.elapsed())).await;
    let upgrades = peer.upgrades();
    assert!((3..=6).contains(&upgrades), "{upgrades} upgrades in 2 s");
    match errors.try_recv() {
        Ok(Error::Dropped(how)) => assert!(!how.is_empty()),
        other => panic!("expected the drop to be reported, got {other:?}"),
    }
    assert!(
        errors.try_recv().is_err(),
        "reported once, not on every attempt"
    );
    assert_eq!(client.status(), ConnectionStatus::Reconnecting);
    client.close().await;
}

#[tokio::test]
async fn a_client_that_gives_up_says_why_and_settles_its_attach() {
    let peer = ScriptedPeer::dropping().await;
    let policy = ReconnectPolicy {
        initial: Duration::from_millis(10),
        max_attempts: Some(3),
        ..ReconnectPolicy::default()
    };
    let client = Client::builder(peer.url(), "c")
        .reconnect(policy)
        .connect()
        .await
        .unwrap();
    let mut errors = client.errors();
    assert!(matches!(
        within("the attach", client.connect_to_state("s")).await,
        Err(Error::Closed)
    ));
    assert_eq!(peer.upgrades(), 4, "the first connection and 3 attempts");
    let dropped = errors.recv().await.unwrap();
    assert!(
        dropped
            .to_string()
            .starts_with("the server closed the connection before answering ("),
        "{dropped}"
    );
    let gave_up = errors.recv().await.unwrap();
    assert!(
        matches!(&gave_up, Error::GaveUp(message)
            if message.starts_with("gave up reconnecting after 3 attempts: the connection was lost (")),
        "{gave_up}"
    );
    assert_eq!(client.status(), ConnectionStatus::Closed);
}
