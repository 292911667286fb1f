//! A peer whose answers the test writes, to play a server that misbehaves: one that
//! sends frames the protocol does not allow, or drops every connection right after
//! the upgrade, as the original does to a request without an identifier.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;

type Answer = dyn Fn(&Value) -> Vec<Value> + Send + Sync;

/// A running scripted peer (it stops with the test's runtime).
pub struct ScriptedPeer {
    url: String,
    upgrades: Arc<AtomicUsize>,
}

impl ScriptedPeer {
    /// A peer that answers each text frame (parsed as JSON; others are ignored) with
    /// the frames `answer` returns for it, in order.
    pub async fn start(answer: impl Fn(&Value) -> Vec<Value> + Send + Sync + 'static) -> Self {
        Self::spawn(Some(Arc::new(answer))).await
    }

    /// A peer that completes the WebSocket upgrade of every connection and then does
    /// what the original does to a request without an identifier: writes the raw bytes
    /// of an HTTP 401 into the WebSocket stream and closes the socket.
    pub async fn dropping() -> Self {
        Self::spawn(None).await
    }

    async fn spawn(answer: Option<Arc<Answer>>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr: SocketAddr = listener.local_addr().expect("address");
        let upgrades = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&upgrades);
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let answer = answer.clone();
                let counter = Arc::clone(&counter);
                tokio::spawn(async move { serve(tcp, answer, counter).await });
            }
        });
        ScriptedPeer {
            url: format!("ws://{addr}"),
            upgrades,
        }
    }

    /// The peer's `ws://` URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// How many WebSocket upgrades it completed so far.
    pub fn upgrades(&self) -> usize {
        self.upgrades.load(Ordering::SeqCst)
    }
}

async fn serve(tcp: TcpStream, answer: Option<Arc<Answer>>, upgrades: Arc<AtomicUsize>) {
    let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
        return;
    };
    upgrades.fetch_add(1, Ordering::SeqCst);
    let Some(answer) = answer else {
        let tcp = ws.get_mut();
        let _ = tcp.write_all(b"HTTP/1.1 401 Unauthorized\r\n\r\n").await;
        let _ = tcp.shutdown().await;
        return;
    };
    while let Some(Ok(message)) = ws.next().await {
        let Message::Text(text) = message else {
            continue;
        };
        let Ok(frame) = serde_json::from_str::<Value>(text.as_str()) else {
            continue;
        };
        for reply in answer(&frame) {
            if ws.send(Message::text(reply.to_string())).await.is_err() {
                return;
            }
        }
    }
}
