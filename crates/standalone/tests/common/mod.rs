//! What the standalone server's tests share: starting it and reading its address.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// The binary under test.
pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_state-sync-server");

/// Starts the server with `args`; returns it and the first line it printed (for a
/// server that started: `listening on HOST:PORT`).
pub(crate) fn spawn(args: &[&std::ffi::OsStr]) -> (Child, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    (child, line)
}

/// The address in a `listening on HOST:PORT` line.
pub(crate) fn address(line: &str) -> String {
    line.trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("the server did not start: {line:?}"))
        .to_owned()
}
