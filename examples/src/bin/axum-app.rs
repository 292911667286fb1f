//! An axum app with routes of its own that serves the state syncer at `/sync`, on one
//! listener: `cargo run -p state-sync-examples --bin axum-app -- --port 5000`, then
//! `curl localhost:5000/hello` and, in two terminals,
//! `cargo run -p state-sync-examples --bin chat -- --name ann --url ws://localhost:5000/sync`.
//! Prints `listening on HOST:PORT` once it accepts connections; Ctrl-C stops it.

use axum::Router;
use axum::routing::get;
use serde_json::json;
use state_sync_server::{StateOptions, StateSyncer};

const USAGE: &str = "usage: axum-app [--port PORT]

An axum app with its own routes (/hello, /states) that serves the state syncer at
/sync, and /healthz and /readyz, on the same port (default 5000; 0 picks a free one). Clients connect to
ws://HOST:PORT/sync?identifier=<client id>. The state 'chat' exists.";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut port = 5000u16;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--port" => port = args.next().ok_or("--port needs a value")?.parse()?,
            "--help" | "-h" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => return Err(format!("unknown argument {other:?}\n{USAGE}").into()),
        }
    }
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let syncer = StateSyncer::new();
    syncer.create_state(
        StateOptions::new()
            .identifier("chat")
            .initial_value(json!({"messages": []})),
    )?;
    let states = syncer.clone();
    let app = Router::new()
        .route("/hello", get(|| async { "hello from the app\n" }))
        .route(
            "/states",
            get(move || {
                let ids = states.state_identifiers();
                async move { format!("{}\n", ids.join("\n")) }
            }),
        )
        .nest("/sync", state_sync_server::axum::router(syncer.clone()))
        .merge(state_sync_server::axum::health_router(syncer.clone()));
    let listener = tokio::net::TcpListener::bind(("0.0.0.0", port)).await?;
    println!("listening on {}", listener.local_addr()?);
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    // The app stopped: the syncer's connections are its own, close them too.
    syncer.disconnect_all();
    Ok(())
}
