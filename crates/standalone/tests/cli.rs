//! The standalone server's command line: help, clear errors for unusable data
//! directories, graceful stop on SIGTERM.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

use common::{BIN, serving};

use serde_json::json;
use state_sync_client::Client;

fn temp(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("state-sync-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn help_lists_every_option() {
    let output = Command::new(BIN).arg("--help").output().unwrap();
    assert!(output.status.success());
    let text = String::from_utf8_lossy(&output.stdout);
    for flag in [
        "--config",
        "--addr",
        "--data",
        "--redis",
        "--redis-cluster",
        "--state",
        "--help",
    ] {
        assert!(text.contains(flag), "{text}");
    }
    let output = Command::new(BIN).arg("--nope").output().unwrap();
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn a_bad_redis_url_or_redis_with_data_is_a_clear_error() {
    let output = Command::new(BIN)
        .args(["--addr", "127.0.0.1:0", "--redis", "http://localhost/"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("invalid redis URL \"http://localhost/\""),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    let output = Command::new(BIN)
        .args(["--redis", "redis://127.0.0.1:1/", "--data", "x"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--data, --redis and --redis-cluster do not go together"),
        "{stderr}"
    );
    let output = Command::new(BIN)
        .args(["--redis-cluster", "redis://127.0.0.1:1/,nope://x"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("invalid redis URL \"nope://x\""),
        "{stderr}"
    );
}

#[test]
fn an_unusable_data_directory_is_an_error_naming_it() {
    let dir = temp("bad");
    let file = dir.join("a-file");
    std::fs::write(&file, "x").unwrap();
    let corrupt = dir.join("corrupt");
    std::fs::create_dir_all(&corrupt).unwrap();
    std::fs::write(corrupt.join("state-sync.redb"), "not a database").unwrap();
    for (data, cause) in [
        (file.join("data"), "a-file/data"),
        (corrupt.clone(), "state-sync.redb"),
    ] {
        let output = Command::new(BIN)
            .args(["--addr", "127.0.0.1:0", "--data"])
            .arg(&data)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(1), "{data:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(cause), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn sigterm_stops_gracefully_and_a_second_server_on_the_same_data_is_refused() {
    let dir = temp("term");
    let (mut child, addr) = serving("127.0.0.1:0", &dir);
    // The directory is held while it runs.
    let second = Command::new(BIN)
        .args(["--addr", "127.0.0.1:0", "--data"])
        .arg(&dir)
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&second.stderr).contains("in use by another running server"));
    let client = Client::connect(&format!("ws://{addr}"), "c", None)
        .await
        .unwrap();
    client.connect_to_state("s").await.unwrap();
    for n in 0..20 {
        client.update_state(json!({ "n": n })).await.unwrap();
    }
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    assert!(exit.success(), "exit 0 on SIGTERM: {exit:?}");
    client.close().await;
    // Everything is there for the next one.
    let (child, addr) = serving("127.0.0.1:0", &dir);
    // Killed when dropped, so that a failing assertion does not leave it running.
    struct Running(std::process::Child);
    impl Drop for Running {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let server = Running(child);
    let client = Client::connect(&format!("ws://{addr}"), "c", None)
        .await
        .unwrap();
    let state = client.connect_to_state("s").await.unwrap();
    assert_eq!(state["n"], 19);
    assert_eq!(client.state_version(), Some(20));
    client.close().await;
    drop(server);
    let _ = std::fs::remove_dir_all(dir);
}
