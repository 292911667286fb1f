//! Helpers shared by the failover tests: servers on `127.0.0.1:0`, a closed port, a
//! server in a child process to kill with SIGKILL, and a `redis-server` of one test.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::json;
use state_sync_client::{Client, ConnectionStatus, ReconnectPolicy};
use state_sync_server::{Server, StateOptions, StateSyncer};

/// How long a test waits for something that should happen.
pub(crate) const PATIENCE: Duration = Duration::from_secs(10);

/// Set in a child process started by [`ServerProcess::start`]: it runs as a server.
pub(crate) const SERVER_PROCESS: &str = "STATE_SYNC_FAILOVER_SERVER_PROCESS";

/// The state every server of these tests creates, with the same initial value.
pub(crate) fn room() -> StateOptions<()> {
    StateOptions::new()
        .identifier("room")
        .initial_value(json!({"n": 0}))
}

/// A syncer with the state `room`, served on a fresh loopback port: the syncer, the
/// server and its `ws://` URL.
pub(crate) async fn server(options: StateOptions<()>) -> (StateSyncer, Server, String) {
    let syncer = StateSyncer::new();
    syncer.create_state(options).unwrap();
    let server = syncer.bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", server.local_addr());
    (syncer, server, url)
}

/// A `ws://` URL where nothing listens: a port bound, then released.
pub(crate) fn closed_port() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("ws://{}", listener.local_addr().unwrap())
}

/// Quick reconnection, without jitter.
pub(crate) fn fast(initial_ms: u64) -> ReconnectPolicy {
    ReconnectPolicy {
        initial: Duration::from_millis(initial_ms),
        max: Duration::from_millis(initial_ms * 4),
        jitter: 0.0,
        ..ReconnectPolicy::default()
    }
}

/// Waits until the client's status is `wanted`.
pub(crate) async fn status_becomes(client: &Client, wanted: ConnectionStatus) {
    let mut changes = client.status_changes();
    tokio::time::timeout(PATIENCE, changes.wait_for(|status| *status == wanted))
        .await
        .unwrap_or_else(|_| panic!("the status never became {wanted:?}"))
        .unwrap();
}

/// The state `room`, whose interceptor holds an update with the key `held` forever,
/// after printing `holding` (for [`ServerProcess::wait_for`]).
pub(crate) fn holding_room() -> StateOptions<()> {
    room().intercept_state_update(|update, _| {
        if update.set.contains_key("held") {
            println!("holding");
            std::thread::sleep(Duration::from_secs(3600));
        }
        Some(update)
    })
}

/// Serves `syncer` on a fresh loopback port, prints `listening on ADDR` and serves
/// until killed: the body of the helper a [`ServerProcess`] runs.
pub(crate) async fn serve_until_killed(syncer: StateSyncer) {
    let serving = syncer.bind("127.0.0.1:0").await.unwrap();
    println!("listening on {}", serving.local_addr());
    std::future::pending::<()>().await;
}

/// A server in a child process, killed with SIGKILL when dropped (a failing assertion
/// does not leave it running).
pub(crate) struct ServerProcess {
    child: Child,
    lines: std::io::Lines<BufReader<std::process::ChildStdout>>,
}

impl ServerProcess {
    /// This test binary again, running only the (ignored) test `helper` with
    /// [`SERVER_PROCESS`] and `env` set: a server that prints `listening on ADDR`
    /// ([`serve_until_killed`]). Returns it and its `ws://` URL.
    pub(crate) fn start(helper: &str, env: &[(&str, &str)]) -> (ServerProcess, String) {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([helper, "--exact", "--ignored", "--nocapture"])
            .env(SERVER_PROCESS, "1")
            .envs(env.iter().copied())
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
    pub(crate) fn wait_for(&mut self, prefix: &str) -> String {
        for line in &mut self.lines {
            if let Some(rest) = line.unwrap().strip_prefix(prefix) {
                return rest.to_owned();
            }
        }
        panic!("the server process ended before printing {prefix:?}");
    }

    pub(crate) fn kill_9(mut self) {
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

/// A `redis-server` of one test, without persistence, on a free port and in a
/// temporary directory; killed, and the directory removed, when dropped.
/// (scripts/setup.sh installs Debian's `redis-server`.)
pub(crate) struct TestRedis {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl TestRedis {
    pub(crate) async fn start() -> TestRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = std::env::temp_dir().join(format!(
            "state-sync-client-test-redis-{port}-{}",
            std::process::id()
        ));
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
        let redis = TestRedis { child, port, dir };
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return redis;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("redis-server did not start on port {port}");
    }

    /// `redis://127.0.0.1:PORT/`.
    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
