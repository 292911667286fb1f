//! Baseline, the floor: `floor-server --addr 127.0.0.1:PORT [--threads N]`
//!
//! A minimal tokio-tungstenite broadcast server with no state logic: it answers
//! CONNECT_TO_STATE with an empty state and forwards every UPDATE_STATE frame, as is,
//! to every connection (its shape is that of STATE_UPDATED). No JSON parsing, no
//! merge, no versions, no hooks: what this stack allows on this machine. Each
//! connection has a writer task that flushes once per batch, like our server.

use std::sync::{Arc, Mutex, PoisonError};

use futures_util::{SinkExt, StreamExt};
use state_sync_bench::server_args::{ServerArgs, server_args};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

type Registry = Arc<Mutex<Vec<Option<mpsc::UnboundedSender<Message>>>>>;

async fn serve(tcp: tokio::net::TcpStream, registry: Registry) {
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(64 * 1024);
    let Ok(ws) = tokio_tungstenite::accept_async_with_config(tcp, Some(config)).await else {
        return;
    };
    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
    let slot = {
        let mut registry = registry.lock().unwrap_or_else(PoisonError::into_inner);
        registry.push(Some(tx.clone()));
        registry.len() - 1
    };
    let writer = tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            if sink.feed(first).await.is_err() {
                return;
            }
            while let Ok(next) = rx.try_recv() {
                if sink.feed(next).await.is_err() {
                    return;
                }
            }
            if sink.flush().await.is_err() {
                return;
            }
        }
    });
    let established = Message::text(r#"{"type":7,"data":{"state":{}}}"#);
    while let Some(Ok(message)) = stream.next().await {
        let Message::Text(text) = message else {
            continue;
        };
        if text.as_str().starts_with(r#"{"type":2"#) {
            let _ = tx.send(established.clone());
        } else if text.as_str().starts_with(r#"{"type":3"#) {
            let frame = Message::Text(text);
            let registry = registry.lock().unwrap_or_else(PoisonError::into_inner);
            for client in registry.iter().flatten() {
                let _ = client.send(frame.clone());
            }
        }
    }
    registry.lock().unwrap_or_else(PoisonError::into_inner)[slot] = None;
    writer.abort();
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let ServerArgs { addr, runtime, .. } = server_args("floor-server")?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(addr.as_str()).await?;
        println!("listening on {}", listener.local_addr()?);
        let registry: Registry = Arc::default();
        loop {
            let (tcp, _) = listener.accept().await?;
            let _ = tcp.set_nodelay(true);
            tokio::spawn(serve(tcp, Arc::clone(&registry)));
        }
    })
}
