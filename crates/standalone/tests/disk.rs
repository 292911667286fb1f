//! The standalone server when the disk fails under it, and on a directory its user
//! cannot write. Real processes, real files: the disk is "full" because the process's
//! file size limit (`ulimit -f`) stops the store from growing, which the kernel reports
//! to the writer exactly as it reports a full disk (a failed `write`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::{BIN, serving};
use serde_json::json;
use state_sync_client::protocol::FailureReason;
use state_sync_client::{Client, Error, ReconnectPolicy, UpdateFailure};

/// A fresh directory under the system's temporary directory, readable by everyone.
fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("state-sync-disk-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// Starts the server on `dir` in a shell that caps the size of any file it writes at
/// `blocks` (the shell's `ulimit -f` unit) and ignores SIGXFSZ, so a write past the
/// cap fails with an error instead of killing the process.
fn serving_with_file_limit(dir: &Path, blocks: u64) -> (Child, String) {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "trap '' XFSZ; ulimit -f {blocks} && exec \"$0\" --addr 127.0.0.1:0 --state s --data \"$1\""
        ))
        .arg(BIN)
        .arg(dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("the server did not start: {line:?}"))
        .to_owned();
    (child, addr)
}

/// A server process, killed when dropped: a failing assertion does not leave it running.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn is_storage_failure(error: &Error) -> bool {
    matches!(
        error,
        Error::Update(UpdateFailure::Rejected {
            reason: FailureReason::StorageFailed,
            ..
        })
    )
}

#[tokio::test]
async fn a_full_disk_fails_updates_clearly_and_loses_nothing_acknowledged() {
    let dir = temp("full");
    // A few MiB: the store's first commits fit, 64 KiB updates soon do not.
    let (child, addr) = serving_with_file_limit(&dir, 8192);
    let server = Running(child);
    let client = Client::builder(format!("ws://{addr}"), "writer")
        .reconnect(ReconnectPolicy::disabled())
        .connect()
        .await
        .unwrap();
    client.connect_to_state("s").await.unwrap();
    let reader = Client::connect(&format!("ws://{addr}"), "reader", None)
        .await
        .unwrap();
    reader.connect_to_state("s").await.unwrap();
    let filler = "x".repeat(64 * 1024);
    let mut acknowledged = Vec::new();
    let mut failure = None;
    for n in 0..2000 {
        match client
            .update_state(json!({ format!("k{}", n % 200): { "n": n, "filler": filler } }))
            .await
        {
            Ok(applied) => acknowledged.push((n, applied.version.unwrap())),
            Err(error) => {
                failure = Some(error);
                break;
            }
        }
    }
    let failure = failure.expect("the store never filled the disk");
    eprintln!(
        "{} updates acknowledged, then: {failure}",
        acknowledged.len()
    );
    assert!(is_storage_failure(&failure), "{failure:?}");
    assert!(
        acknowledged.len() > 5,
        "the first commits fit: {acknowledged:?}"
    );
    // From now on every update fails the same way; nothing is acknowledged.
    for _ in 0..3 {
        let error = client
            .update_state(json!({ "late": true }))
            .await
            .unwrap_err();
        assert!(is_storage_failure(&error), "{error:?}");
    }
    // Nobody saw anything the store did not save: the reader's state holds exactly
    // the acknowledged updates.
    let (last, last_version) = *acknowledged.last().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while reader.state_version() != Some(last_version) {
        assert!(std::time::Instant::now() < deadline, "the reader lags");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let seen = reader.state();
    assert!(seen.get("late").is_none(), "{:?}", seen.keys());
    // A client attaching now is refused: memory may hold what was never saved.
    let late = Client::builder(format!("ws://{addr}"), "late")
        .reconnect(ReconnectPolicy::disabled())
        .connect()
        .await
        .unwrap();
    let refused = late.connect_to_state("s").await.unwrap_err();
    assert!(refused.to_string().contains("store failed"), "{refused}");
    client.close().await;
    reader.close().await;
    late.close().await;
    drop(server);

    // Restarted without the limit: every acknowledged update is there.
    let (child, addr) = serving("127.0.0.1:0", &dir);
    let server = Running(child);
    let client = Client::connect(&format!("ws://{addr}"), "after", None)
        .await
        .unwrap();
    let state = client.connect_to_state("s").await.unwrap();
    assert_eq!(client.state_version(), Some(last_version));
    for (n, _) in acknowledged.iter().rev().take(200) {
        let entry = &state[format!("k{}", n % 200).as_str()];
        if entry["n"] == *n {
            continue;
        }
        // Overwritten by a later acknowledged update to the same key.
        assert!(entry["n"].as_u64().unwrap() > *n as u64, "{n}: {entry}");
    }
    assert_eq!(state[format!("k{}", last % 200).as_str()]["n"], last);
    assert!(state.get("late").is_none());
    client.update_state(json!({ "again": 1 })).await.unwrap();
    client.close().await;
    drop(server);
    let _ = std::fs::remove_dir_all(dir);
}

/// Runs the server on `data` as a user that cannot write there: as root (whom file
/// modes do not stop), as the unprivileged user `nobody`, from a copy of the binary
/// that user can run.
fn run_unprivileged(data: &Path, bin_dir: &Path) -> std::process::Output {
    let mut command;
    // Who we are, from `id` (the standard library does not say).
    let root = String::from_utf8(Command::new("id").arg("-u").output().unwrap().stdout)
        .unwrap()
        .trim()
        == "0";
    if root {
        use std::os::unix::process::CommandExt;
        let bin = bin_dir.join("state-sync-server");
        std::fs::copy(BIN, &bin).unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        command = Command::new(bin);
        command.uid(65534).gid(65534);
    } else {
        command = Command::new(BIN);
    }
    command
        .args(["--addr", "127.0.0.1:0", "--data"])
        .arg(data)
        .output()
        .unwrap()
}

#[test]
fn a_directory_that_is_not_writable_is_an_error_naming_it() {
    let dir = temp("readonly");
    // An empty directory nobody but its owner may write.
    let empty = dir.join("empty");
    std::fs::create_dir(&empty).unwrap();
    // A store written earlier, now read-only.
    let stored = dir.join("stored");
    let (child, _) = serving("127.0.0.1:0", &stored);
    drop(Running(child));
    let file = stored.join("state-sync.redb");
    for path in [&empty, &stored] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o555)).unwrap();
    }
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o444)).unwrap();
    for (data, named) in [(&empty, &empty), (&stored, &file)] {
        let output = run_unprivileged(data, &dir);
        assert_eq!(output.status.code(), Some(1), "{data:?}: {output:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(named.to_str().unwrap()),
            "names {named:?}: {stderr}"
        );
        assert!(stderr.contains("ermission denied"), "says why: {stderr}");
        eprintln!("{}", stderr.trim());
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    for path in [&empty, &stored] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let _ = std::fs::remove_dir_all(dir);
}
