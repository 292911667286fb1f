//! A client given several endpoints, against real servers on `127.0.0.1:0`: it connects
//! to the first that opens, moves on to the next when its server goes away (shut down,
//! or killed with SIGKILL in a child process), re-attaches there, and an update it
//! could not deliver is applied there once and acknowledged.
//!
//! Each "cluster" here is two independent in-memory servers that create the same state.
//! They share no session logs: an update sent to the server that went away, and resent
//! to the next, is answered `outcomeUnknown` there (it may have been applied), where
//! servers that share their session logs apply it once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex};

use common::{
    PATIENCE, SERVER_PROCESS, ServerProcess, closed_port, fast, holding_room, room,
    serve_until_killed, server, status_becomes,
};
use serde_json::{Value, json};
use state_sync_client::{Client, ConnectionStatus, Error, FailureReason, UpdateFailure};
use state_sync_server::{Rejection, StateSyncer};

/// What the client's listener heard, as `(updates, previous)`.
fn recorder(client: &Client) -> Arc<Mutex<Vec<Value>>> {
    let heard: Arc<Mutex<Vec<Value>>> = Arc::default();
    let sink = Arc::clone(&heard);
    client.add_state_update_listener("all", &[], move |updates, _| {
        sink.lock().unwrap().push(json!(updates));
    });
    heard
}

#[tokio::test]
async fn connect_tries_each_endpoint_in_turn_until_one_opens() {
    let (syncer, server, url) = server(room()).await;
    let client = Client::builder(closed_port(), "alice")
        .endpoints([closed_port(), closed_port(), url])
        .connect()
        .await
        .unwrap();
    assert_eq!(client.connect_to_state("room").await.unwrap()["n"], 0);
    client.update_state(json!({"n": 1})).await.unwrap();
    assert_eq!(syncer.value_of_state("room").unwrap()["n"], 1);
    client.close().await;
    server.shutdown().await;
}

#[tokio::test]
async fn when_no_endpoint_opens_the_error_says_why_for_each() {
    let (first, second) = (closed_port(), closed_port());
    let error = Client::builder("ws://unused", "alice")
        .endpoints([first.clone(), second.clone()])
        .connect()
        .await
        .unwrap_err();
    let Error::Connect(why) = &error else {
        panic!("{error:?}");
    };
    let port = |url: &str| url.rsplit(':').next().unwrap().to_owned();
    assert!(
        why.starts_with("none of the 2 endpoints could be reached: 127.0.0.1:")
            && why.contains(&format!("127.0.0.1:{}: ", port(&first)))
            && why.contains(&format!("; 127.0.0.1:{}: ", port(&second))),
        "{why}"
    );
    // One endpoint: the error it always gave.
    let error = Client::connect(&first, "alice", None).await.unwrap_err();
    assert!(
        matches!(&error, Error::Connect(why) if why.starts_with(&format!("127.0.0.1:{}: ", port(&first)))),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_bad_endpoint_in_the_list_or_an_empty_list_is_refused_before_connecting() {
    let (_, server, url) = server(room()).await;
    let refused = |result: Result<Client, Error>| match result {
        Err(error @ Error::InvalidEndpoint { .. }) => error.to_string(),
        other => panic!("not refused: {other:?}"),
    };
    let bad = Client::builder(&url, "alice")
        .endpoints([url.as_str(), "http://10.0.0.2:5000", "ws://h:port"])
        .connect()
        .await;
    assert_eq!(
        refused(bad),
        r#"invalid endpoint "http://10.0.0.2:5000": it must start with ws:// or wss://"#,
        "the error a single bad endpoint gets, though the first one works"
    );
    let empty = Client::builder(&url, "alice")
        .endpoints(Vec::<String>::new())
        .connect()
        .await;
    assert_eq!(
        refused(empty),
        r#"invalid endpoint "": no endpoint given (the list of endpoints is empty)"#
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_server_that_refuses_the_client_is_not_skipped() {
    // A 401 from the authorization middleware: every server of a cluster has the same
    // one, so the next endpoint would refuse the client too.
    let refusing = StateSyncer::builder()
        .authorize(|_| async { Err::<String, _>(Rejection::new("invalid token")) })
        .build();
    let refusing_server = refusing.bind("127.0.0.1:0").await.unwrap();
    let (_, server, url) = server(room()).await;
    let error = Client::builder("ws://unused", "alice")
        .endpoints([format!("ws://{}", refusing_server.local_addr()), url])
        .connect()
        .await
        .unwrap_err();
    assert!(
        matches!(&error, Error::Refused { status: 401, body } if body.contains("invalid token")),
        "{error:?}"
    );
    refusing_server.shutdown().await;
    server.shutdown().await;
}

#[tokio::test]
async fn when_its_server_shuts_down_the_client_moves_to_the_next_and_its_pending_update_is_applied_there()
 {
    let (a, server_a, url_a) = server(room()).await;
    let (b, server_b, url_b) = server(room()).await;
    // The reconnection waits 300 ms: the update below is sent while the client has no
    // connection, and waits for the next one.
    let client = Client::builder(&url_a, "alice")
        .endpoints([&url_a, &url_b])
        .reconnect(fast(300))
        .connect()
        .await
        .unwrap();
    client.connect_to_state("room").await.unwrap();
    client.update_state(json!({"n": 1})).await.unwrap();
    assert_eq!(a.value_of_state("room").unwrap()["n"], 1);
    let heard = recorder(&client);
    // Meanwhile, on the other server, somebody else wrote.
    b.update_state_value("room", json!({"onB": true}), None)
        .await
        .unwrap();

    server_a.shutdown().await;
    status_becomes(&client, ConnectionStatus::Reconnecting).await;
    let pending = client.update_state(json!({"n": 2, "from": "alice"}));
    let applied = tokio::time::timeout(PATIENCE, pending)
        .await
        .expect("the pending update was never acknowledged")
        .unwrap();

    assert_eq!(
        applied.version,
        Some(2),
        "B's version: onB, then this update"
    );
    assert_eq!(b.version_of_state("room"), Some(2), "applied once");
    assert_eq!(
        json!(b.value_of_state("room").unwrap()),
        json!({"n": 2, "onB": true, "from": "alice"})
    );
    assert_eq!(client.status(), ConnectionStatus::Connected);
    assert_eq!(
        client.state(),
        b.value_of_state("room").unwrap(),
        "re-attached to B's state"
    );
    let heard = heard.lock().unwrap().clone();
    assert!(
        heard.iter().any(|updates| updates["onB"] == true),
        "the resync told the listener what B had: {heard:?}"
    );
    assert_eq!(
        a.version_of_state("room"),
        Some(1),
        "nothing more reached A"
    );
    client.close().await;
    server_b.shutdown().await;
}

#[tokio::test]
async fn after_a_lost_connection_the_next_endpoint_is_tried_then_the_first_again() {
    let (a, server_a, url_a) = server(room()).await;
    let closed = closed_port();
    let client = Client::builder(&url_a, "alice")
        .endpoints([&url_a, &closed])
        .reconnect(fast(20))
        .connect()
        .await
        .unwrap();
    client.connect_to_state("room").await.unwrap();
    let mut errors = client.errors();
    assert_eq!(a.disconnect_client("alice"), 1);
    // The next attempt goes to the closed port, and fails; the one after that is A's.
    let error = tokio::time::timeout(PATIENCE, errors.recv())
        .await
        .unwrap()
        .unwrap();
    let closed_at = closed.trim_start_matches("ws://");
    assert!(
        matches!(&error, Error::Connect(why) if why.starts_with(&format!("{closed_at}: "))),
        "{error:?}"
    );
    status_becomes(&client, ConnectionStatus::Connected).await;
    let applied = tokio::time::timeout(PATIENCE, client.update_state(json!({"n": 5})))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(applied.version, Some(1));
    assert_eq!(a.value_of_state("room").unwrap()["n"], 5);
    client.close().await;
    server_a.shutdown().await;
}

/// Not a test: the server that the SIGKILL test starts in a child process (it does
/// nothing elsewhere): in memory, with [`holding_room`].
#[tokio::test(flavor = "multi_thread")]
#[ignore = "the server of a child process, started by the SIGKILL test"]
async fn server_process() {
    if std::env::var_os(SERVER_PROCESS).is_none() {
        return;
    }
    let syncer = StateSyncer::new();
    syncer.create_state(holding_room()).unwrap();
    serve_until_killed(syncer).await;
}

#[tokio::test]
async fn when_its_server_is_killed_the_client_moves_to_the_next_and_its_pending_update_is_applied_there()
 {
    let (server_a, url_a) = ServerProcess::start("server_process", &[]);
    let (b, server_b, url_b) = server(room()).await;
    // The reconnection waits 300 ms: the update sent after the kill waits for it.
    let client = Client::builder(&url_a, "alice")
        .endpoints([&url_a, &url_b])
        .reconnect(fast(300))
        .connect()
        .await
        .unwrap();
    client.connect_to_state("room").await.unwrap();
    client.update_state(json!({"n": 1})).await.unwrap();

    // Sent, and held by A's interceptor: unacknowledged when A is killed.
    let held = client.update_state(json!({"held": "by A"}));
    let server_a = tokio::task::spawn_blocking(move || {
        let mut server_a = server_a;
        server_a.wait_for("holding");
        server_a
    })
    .await
    .unwrap();
    server_a.kill_9();
    status_becomes(&client, ConnectionStatus::Reconnecting).await;
    let pending = client.update_state(json!({"n": 2, "after": "the kill"}));

    let applied = tokio::time::timeout(PATIENCE, pending)
        .await
        .expect("the pending update was never acknowledged")
        .unwrap();
    assert_eq!(applied.version, Some(1), "B's first update");
    assert_eq!(b.version_of_state("room"), Some(1), "applied once, on B");
    assert_eq!(
        json!(b.value_of_state("room").unwrap()),
        json!({"n": 2, "after": "the kill"})
    );
    assert_eq!(client.state(), b.value_of_state("room").unwrap());
    // The held update was resent to B with its session and request id; B, which does
    // not share A's session logs, cannot know whether A applied it and says so rather
    // than apply it a second time. (Servers that share their session logs apply it
    // once.)
    let error = tokio::time::timeout(PATIENCE, held)
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(
            &error,
            Error::Update(UpdateFailure::Rejected {
                reason: FailureReason::OutcomeUnknown,
                ..
            })
        ),
        "{error:?}"
    );
    // It goes on working on B.
    client.update_state(json!({"n": 3})).await.unwrap();
    assert_eq!(b.version_of_state("room"), Some(2));
    client.close().await;
    server_b.shutdown().await;
}
