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

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use state_sync_client::{
    Client, ConnectionStatus, Error, FailureReason, ReconnectPolicy, UpdateFailure,
};
use state_sync_server::{Rejection, Server, StateOptions, StateSyncer};

/// How long a test waits for something that should happen.
const PATIENCE: Duration = Duration::from_secs(10);

/// Set in the child process that [`server_process`] runs as.
const SERVER_PROCESS: &str = "STATE_SYNC_FAILOVER_SERVER_PROCESS";

/// The state every server of these tests creates, with the same initial value.
fn room() -> StateOptions<()> {
    StateOptions::new()
        .identifier("room")
        .initial_value(json!({"n": 0}))
}

/// A syncer with the state `room`, served on a fresh loopback port: the syncer, the
/// server and its `ws://` URL.
async fn server(options: StateOptions<()>) -> (StateSyncer, Server, String) {
    let syncer = StateSyncer::new();
    syncer.create_state(options).unwrap();
    let server = syncer.bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", server.local_addr());
    (syncer, server, url)
}

/// A `ws://` URL where nothing listens: a port bound, then released.
fn closed_port() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("ws://{}", listener.local_addr().unwrap())
}

/// Quick reconnection, without jitter.
fn fast(initial_ms: u64) -> ReconnectPolicy {
    ReconnectPolicy {
        initial: Duration::from_millis(initial_ms),
        max: Duration::from_millis(initial_ms * 4),
        jitter: 0.0,
        ..ReconnectPolicy::default()
    }
}

/// Waits until the client's status is `wanted`.
async fn status_becomes(client: &Client, wanted: ConnectionStatus) {
    let mut changes = client.status_changes();
    tokio::time::timeout(PATIENCE, changes.wait_for(|status| *status == wanted))
        .await
        .unwrap_or_else(|_| panic!("the status never became {wanted:?}"))
        .unwrap();
}

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

/// A server in a child process, killed with SIGKILL when dropped (a failing assertion
/// does not leave it running).
struct ServerProcess {
    child: Child,
    lines: std::io::Lines<BufReader<std::process::ChildStdout>>,
}

impl ServerProcess {
    /// This test binary again, running [`server_process`]: an in-memory server with the
    /// state `room`, whose interceptor holds an update with the key `held` forever.
    fn start() -> (ServerProcess, String) {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["server_process", "--exact", "--ignored", "--nocapture"])
            .env(SERVER_PROCESS, "1")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut process = ServerProcess {
            child,
            lines: BufReader::new(stdout).lines(),
        };
        let address = process.wait_for("listening on ");
        (process, format!("ws://{address}"))
    }

    /// Reads the child's output until a line starting with `prefix`; returns the rest.
    fn wait_for(&mut self, prefix: &str) -> String {
        for line in &mut self.lines {
            if let Some(rest) = line.unwrap().strip_prefix(prefix) {
                return rest.to_owned();
            }
        }
        panic!("the server process ended before printing {prefix:?}");
    }

    fn kill_9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Not a test: the server that [`ServerProcess::start`] runs in a child process (it
/// does nothing elsewhere). Prints `listening on ADDR`, then `holding` when the
/// interceptor got an update with the key `held`, which it never answers.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "the server of a child process, started by the SIGKILL test"]
async fn server_process() {
    if std::env::var_os(SERVER_PROCESS).is_none() {
        return;
    }
    let (_syncer, _server, url) = server(room().intercept_state_update(|update, _| {
        if update.set.contains_key("held") {
            println!("holding");
            std::thread::sleep(Duration::from_secs(3600));
        }
        Some(update)
    }))
    .await;
    println!("listening on {}", url.trim_start_matches("ws://"));
    std::future::pending::<()>().await;
}

#[tokio::test]
async fn when_its_server_is_killed_the_client_moves_to_the_next_and_its_pending_update_is_applied_there()
 {
    let (server_a, url_a) = ServerProcess::start();
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
