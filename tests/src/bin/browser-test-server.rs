//! Server for the browser tests: `cargo run -p state-sync-tests --bin browser-test-server`
//!
//! Binds `127.0.0.1:0` (or `--port`), prints `listening on 127.0.0.1:PORT` and serves
//! the states the wasm-bindgen tests use: `api`, `veto`, `converge`, `reconnect` and
//! `close` (`browser.rs`); `ops`, `conditional`, `functional` and `counter`
//! (`concurrent.rs`). In every state an update with the key `forbidden` is vetoed, and
//! one with the key `__disconnect` makes the server drop the sender's connections (and
//! is vetoed), so that a test can exercise reconnection. A client whose token is `refused`
//! is refused (HTTP 401); one whose token is `dropped` is upgraded, then dropped at
//! once, every time. Stop it with Ctrl-C or a signal.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde_json::json;
use state_sync_server::{Rejection, StateOptions, StateSyncer};

/// Drops the connections of `identifier` as soon as it has one (within a second).
fn drop_when_connected(syncer: &Arc<OnceLock<StateSyncer<String>>>, identifier: String) {
    let syncer = Arc::clone(syncer);
    tokio::spawn(async move {
        for _ in 0..200 {
            tokio::time::sleep(Duration::from_millis(5)).await;
            if syncer
                .get()
                .is_some_and(|syncer| syncer.disconnect_client(&identifier) > 0)
            {
                return;
            }
        }
    });
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    state_sync_tests::init_logs();
    let mut port = 0;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--port" => port = args.next().ok_or("--port needs a value")?.parse()?,
            "-h" | "--help" => {
                println!(
                    "usage: browser-test-server [--port PORT]\n\n\
                     --port PORT  where to listen on 127.0.0.1 (default: a free port)\n\n\
                     Serves the states the browser tests use; prints `listening on ADDR`."
                );
                return Ok(());
            }
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }
    let dropper: Arc<OnceLock<StateSyncer<String>>> = Arc::default();
    let to_drop = Arc::clone(&dropper);
    let syncer = StateSyncer::builder()
        .authorize(move |request| {
            let to_drop = Arc::clone(&to_drop);
            async move {
                match request.token.as_deref() {
                    Some("refused") => return Err(Rejection::new("refused token")),
                    Some("dropped") => drop_when_connected(&to_drop, request.identifier.clone()),
                    _ => {}
                }
                Ok(request.identifier)
            }
        })
        .build();
    let _ = dropper.set(syncer.clone());
    let states = [
        "api",
        "veto",
        "converge",
        "reconnect",
        "close",
        "ops",
        "conditional",
        "functional",
        "counter",
    ];
    for id in states {
        let kicker = syncer.clone();
        syncer.create_state(
            StateOptions::new()
                .identifier(id)
                .initial_value(json!({"title": "t", "items": []}))
                .intercept_state_update(move |updates, client: Option<&String>| {
                    if updates.set.contains_key("__disconnect") {
                        if let Some(client) = client {
                            kicker.disconnect_client(client);
                        }
                        return None;
                    }
                    (!updates.set.contains_key("forbidden")).then_some(updates)
                }),
        )?;
    }
    let server = syncer.bind(("127.0.0.1", port)).await?;
    println!("listening on {}", server.local_addr());
    tokio::signal::ctrl_c().await?;
    server.shutdown().await;
    Ok(())
}
