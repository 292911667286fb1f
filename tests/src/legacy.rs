//! A minimal peer that speaks only the original protocol (server-state-sync 1.0.5):
//! no versions, no request ids, no sessions, silent on malformed frames. Used to show
//! that this project's clients still work against the original server.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

type Clients = Vec<(u64, mpsc::UnboundedSender<String>)>;

#[derive(Default)]
struct States {
    values: HashMap<String, (serde_json::Map<String, Value>, Clients)>,
    next_client: u64,
}

/// Starts the original-protocol peer with one state; returns its `ws://` URL.
pub async fn start_legacy_server(state: &str, initial: Value) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr: SocketAddr = listener.local_addr().expect("address");
    let states = Arc::new(Mutex::new(States::default()));
    let initial = initial.as_object().cloned().unwrap_or_default();
    states
        .lock()
        .expect("lock")
        .values
        .insert(state.to_owned(), (initial, Vec::new()));
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(serve(tcp, Arc::clone(&states)));
        }
    });
    format!("ws://{addr}")
}

async fn serve(tcp: tokio::net::TcpStream, states: Arc<Mutex<States>>) {
    let Ok(ws) = tokio_tungstenite::accept_async(tcp).await else {
        return;
    };
    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    let id = {
        let mut states = states.lock().expect("lock");
        states.next_client += 1;
        states.next_client
    };
    let writer = tokio::spawn(async move {
        while let Some(text) = rx.recv().await {
            if sink.send(Message::text(text)).await.is_err() {
                break;
            }
        }
    });
    let mut attached: Option<String> = None;
    while let Some(Ok(message)) = stream.next().await {
        let Message::Text(text) = message else {
            continue;
        };
        let Ok(frame) = serde_json::from_str::<Value>(text.as_str()) else {
            continue;
        };
        let mut states = states.lock().expect("lock");
        match frame["type"].as_u64() {
            Some(2) => {
                let Some(name) = frame["data"]["stateIdentifier"].as_str() else {
                    continue;
                };
                match states.values.get_mut(name) {
                    Some((value, clients)) => {
                        clients.push((id, tx.clone()));
                        let _ = tx.send(json!({"type": 7, "data": {"state": value}}).to_string());
                        attached = Some(name.to_owned());
                    }
                    None => {
                        let message = format!("State with identifier {name} does not exist");
                        let _ =
                            tx.send(json!({"type": 8, "data": {"message": message}}).to_string());
                    }
                }
            }
            Some(3) => {
                let (Some(name), Some(updates)) = (&attached, frame["data"]["updates"].as_object())
                else {
                    let _ = tx.send(
                        json!({"type": 9, "data": {"message": "Could not update state"}})
                            .to_string(),
                    );
                    continue;
                };
                if let Some((value, clients)) = states.values.get_mut(name) {
                    for (key, v) in updates {
                        value.insert(key.clone(), v.clone());
                    }
                    let broadcast = json!({"type": 3, "data": {"updates": updates}}).to_string();
                    for (_, client) in clients.iter() {
                        let _ = client.send(broadcast.clone());
                    }
                }
            }
            other => {
                let message = format!(
                    "Message type {} is not supported",
                    other.map_or("undefined".into(), |t| t.to_string())
                );
                let _ = tx.send(json!({"type": 10, "data": {"message": message}}).to_string());
            }
        }
    }
    let mut states = states.lock().expect("lock");
    for (_, clients) in states.values.values_mut() {
        clients.retain(|(client, _)| *client != id);
    }
    writer.abort();
}
