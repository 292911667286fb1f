//! Demo server: `cargo run -p state-sync-examples --bin demo-server -- [--port 5000]`
//!
//! Serves `ws://0.0.0.0:PORT` with one state, `demo-chat` (`{"chatMessages": []}`),
//! logs every client that connects and every update, and vetoes updates whose
//! `chatMessages` is not an array. Any client of server-state-sync (the original
//! JavaScript one included) can connect with `?identifier=<name>`; the token is ignored.
//! Stop it with Ctrl-C: connections are closed cleanly.

use serde_json::json;
use state_sync_server::{StateOptions, StateSyncer};

fn port_from_args() -> Result<u16, String> {
    let mut args = std::env::args().skip(1);
    let mut port = 5000;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--port" => {
                let value = args.next().ok_or("--port needs a value")?;
                port = value
                    .parse()
                    .map_err(|_| format!("--port: {value:?} is not a port number"))?;
            }
            "-h" | "--help" => {
                println!("usage: demo-server [--port PORT]   (default 5000)");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}; try --help")),
        }
    }
    Ok(port)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let port = port_from_args()?;

    // The client information of a connection is its identifier.
    let syncer = StateSyncer::builder()
        .authorize(|request| async move {
            tracing::info!(client = %request.identifier, from = %request.remote_addr, "client connecting");
            Ok(request.identifier)
        })
        .build();
    syncer.create_state(
        StateOptions::new()
            .identifier("demo-chat")
            .initial_value(json!({"chatMessages": []}))
            .allow_connecting_client(|client: &String| {
                tracing::info!(%client, "client attached to demo-chat");
                true
            })
            .intercept_state_update(|updates, client| {
                let client = client.map_or("server", String::as_str);
                if let Some(messages) = updates.get("chatMessages") {
                    if !messages.is_array() {
                        tracing::warn!(%client, "vetoed: chatMessages must be an array");
                        return None;
                    }
                }
                tracing::info!(%client, updates = %serde_json::Value::Object(updates.clone()), "update");
                Some(updates)
            }),
    )?;
    let server = syncer.start(port).await?;
    println!(
        "demo server listening on ws://{} (state: demo-chat); Ctrl-C stops it",
        server.local_addr()
    );
    tokio::signal::ctrl_c().await?;
    server.shutdown().await;
    Ok(())
}
