//! The example programs answer `--help` with their options, and exit 0.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

#[test]
fn every_program_answers_help_with_its_options() {
    for (program, flags) in [
        (
            env!("CARGO_BIN_EXE_demo-server"),
            &["--port", "--static", "--data", "--memory"][..],
        ),
        (env!("CARGO_BIN_EXE_chat"), &["--name", "--url"][..]),
        (env!("CARGO_BIN_EXE_axum-app"), &["--port"][..]),
    ] {
        let output = Command::new(program).arg("--help").output().unwrap();
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{program}: {output:?}");
        assert!(text.starts_with("usage: "), "{program}: {text}");
        for flag in flags {
            assert!(text.contains(flag), "{program} --help lists {flag}: {text}");
        }
    }
}

/// The demo server's log, redirected (as `demo.sh` and CI do), is plain text: no
/// terminal colour codes.
#[tokio::test]
async fn the_demo_servers_log_has_no_colour_codes_when_redirected() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    let mut child = Command::new(env!("CARGO_BIN_EXE_demo-server"))
        .args(["--port", "0", "--memory"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut log = Vec::new();
    let url = loop {
        let line = lines.next().expect("the server prints").unwrap();
        log.push(line.clone());
        if let Some(rest) = line.strip_prefix("demo server listening on ") {
            break rest.split_whitespace().next().unwrap().to_owned();
        }
    };
    // Something worth logging: an update (logged at info) and a refused one (warn).
    let client = state_sync_client::Client::connect(&url, "ada", None)
        .await
        .unwrap();
    client.connect_to_state("demo-chat").await.unwrap();
    let message = serde_json::json!({"sender": "ada", "content": "hi", "sentAt": 1});
    client
        .apply(state_sync_client::Update::new().append_capped("chatMessages", [message], 100))
        .await
        .unwrap();
    let spam = serde_json::json!({"sender": "ada", "content": "spam"});
    let _ = client
        .apply(state_sync_client::Update::new().append("chatMessages", [spam]))
        .await;
    client.close().await;
    child.kill().unwrap();
    child.wait().unwrap();
    log.extend(lines.map_while(Result::ok));
    let text = log.join("\n");
    assert!(text.contains("update"), "the update is logged: {text}");
    assert!(text.contains("vetoed"), "the refusal is logged: {text}");
    assert!(!text.contains('\u{1b}'), "no escape codes: {text:?}");
}
