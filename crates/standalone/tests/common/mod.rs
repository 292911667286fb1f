//! What the standalone server's tests share: starting it and reading its address.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// The binary under test.
pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_state-sync-server");

/// Starts the server with `args`; returns it and the first line it printed (for a
/// server that started: `listening on HOST:PORT`). With `SERVER_LOG` set (a
/// `RUST_LOG` filter), the server logs to the test's stderr.
pub(crate) fn spawn(args: &[&std::ffi::OsStr]) -> (Child, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .env(
            "RUST_LOG",
            std::env::var("SERVER_LOG").unwrap_or("warn".into()),
        )
        .stdout(Stdio::piped())
        .stderr(if std::env::var("SERVER_LOG").is_ok() {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    (child, line)
}

/// Starts the server on `addr` with the state `s` saved in `dir`; returns it and the
/// address it listens on, or the line it printed instead.
pub(crate) fn try_serving(addr: &str, dir: &std::path::Path) -> (Child, Result<String, String>) {
    let (child, line) = spawn(&[
        "--addr".as_ref(),
        addr.as_ref(),
        "--state".as_ref(),
        "s".as_ref(),
        "--data".as_ref(),
        dir.as_os_str(),
    ]);
    let address = line
        .trim()
        .strip_prefix("listening on ")
        .map(str::to_owned)
        .ok_or(line);
    (child, address)
}

/// [`try_serving`] that must start.
pub(crate) fn serving(addr: &str, dir: &std::path::Path) -> (Child, String) {
    let (child, address) = try_serving(addr, dir);
    (
        child,
        address.unwrap_or_else(|line| panic!("the server did not start: {line:?}")),
    )
}

/// A fresh, empty directory for one test.
pub(crate) fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("state-sync-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A server process, killed when dropped (so that a failing assertion does not leave
/// it running).
pub(crate) struct Running(pub(crate) Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the server with `args`; returns it and its address, or panics with what it
/// printed instead.
pub(crate) fn start(args: &[&std::ffi::OsStr]) -> (Running, String) {
    let (child, line) = spawn(args);
    let running = Running(child);
    let address = line
        .trim()
        .strip_prefix("listening on ")
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("the server did not start: {line:?}"));
    (running, address)
}

/// Starts a server of a cluster on the Redis at `redis`, with the state `state`;
/// returns it (killed when dropped) and its `ws://` URL.
pub(crate) fn start_on_redis(redis: &str, state: &str) -> (Running, String) {
    let (child, line) = spawn(&[
        "--addr".as_ref(),
        "127.0.0.1:0".as_ref(),
        "--redis".as_ref(),
        redis.as_ref(),
        "--state".as_ref(),
        state.as_ref(),
    ]);
    let address = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("the server did not start: {line:?}"))
        .to_owned();
    (Running(child), format!("ws://{address}"))
}
