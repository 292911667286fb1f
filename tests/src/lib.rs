//! Shared helpers for the integration tests: a server on `127.0.0.1:0` and a raw
//! WebSocket client that speaks the wire protocol frame by frame (what a client of the
//! original JavaScript package sends), so tests assert exactly what goes over the wire.

use std::time::Duration;

pub mod http;
mod legacy;
mod presence;
mod redis;
mod scripted;
pub use legacy::start_legacy_server;
pub use presence::{PresenceView, attach_watching, follow};
pub use redis::{
    ClusterNode, TestRedis, TestRedisCluster, cluster_node, kill_subscriptions, plain_state,
};
pub use scripted::ScriptedPeer;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use state_sync_server::{Server, StateOptions, StateSyncer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long a test waits for a frame that should come.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// Waits (up to [`PATIENCE`]) until `condition` holds; panics naming `what` otherwise.
pub async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    tokio::time::timeout(PATIENCE, async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("never happened: {what}"));
}

/// Installs a log subscriber once (set `RUST_LOG=debug` to see the server's logs).
pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// Serves `syncer` on a fresh loopback port; returns the server and its `ws://` URL.
pub async fn serve<K: Send + Sync + 'static>(syncer: &StateSyncer<K>) -> (Server, String) {
    init_logs();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let server = syncer.serve(listener).expect("serve");
    let url = format!("ws://{}", server.local_addr());
    (server, url)
}

/// Sends a raw HTTP request and returns the whole answer (the server closes after it).
pub async fn http_request(addr: std::net::SocketAddr, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // The server keeps a connection open for the next request unless asked not to.
    let request = match request.split_once("\r\n") {
        Some((line, rest)) if !request.to_ascii_lowercase().contains("\r\nconnection:") => {
            format!("{line}\r\nConnection: close\r\n{rest}")
        }
        _ => request.to_owned(),
    };
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(request.as_bytes()).await.expect("send");
    let mut response = Vec::new();
    tcp.read_to_end(&mut response).await.expect("read");
    String::from_utf8_lossy(&response).into_owned()
}

/// A plain `GET` of `path` on the server at `url` (`ws://HOST:PORT`): the status and
/// the body.
pub async fn http_get(url: &str, path: &str) -> (u16, String) {
    let address = url
        .trim_start_matches("ws://")
        .parse()
        .expect("a ws://HOST:PORT url");
    let answer = http_request(
        address,
        &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
    )
    .await;
    let status = answer
        .get(9..12)
        .and_then(|status| status.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer:?}"));
    let body = answer
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, body)| body.to_owned());
    (status, body)
}

/// The value of a series (`name{labels}`) in a Prometheus text render.
pub fn prometheus_figure(render: &str, series: &str) -> Option<f64> {
    render
        .lines()
        .find(|line| line.starts_with(series) && line[series.len()..].starts_with(' '))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

/// The public identities present in a state, as its server lists them.
pub fn present_users<K: Send + Sync + 'static>(syncer: &StateSyncer<K>, state: &str) -> Vec<Value> {
    syncer
        .presence_of_state(state)
        .unwrap_or_default()
        .iter()
        .map(|p| p.user.clone())
        .collect()
}

/// A WebSocket of a client `name` attached to `state`, to split into its sink and
/// stream (for tests that send and read at once), with the data of its
/// STATE_CONNECTION_ESTABLISHED.
pub async fn attached_socket(
    url: &str,
    name: &str,
    state: &str,
) -> (WebSocketStream<MaybeTlsStream<TcpStream>>, Value) {
    let mut client = RawClient::connect(url, name, None).await;
    let snapshot = client.attach(state).await;
    (client.into_inner(), snapshot)
}

/// A syncer with an empty state for each identifier, served on a fresh loopback
/// port: the syncer, the server and its `ws://` URL.
pub async fn serve_states(ids: &[&str]) -> (StateSyncer, Server, String) {
    let syncer = StateSyncer::new();
    for id in ids {
        syncer
            .create_state(StateOptions::new().identifier(*id))
            .expect("create state");
    }
    let (server, url) = serve(&syncer).await;
    (syncer, server, url)
}

/// A state whose interceptor vetoes every update with the key `forbidden` and lets
/// the others through unchanged.
pub fn vetoing_state<K>(id: &str) -> StateOptions<K> {
    StateOptions::new()
        .identifier(id)
        .intercept_state_update(|updates, _| {
            (!updates.set.contains_key("forbidden")).then_some(updates)
        })
}

/// A WebSocket client that sends and receives raw JSON frames, over any stream
/// (plain TCP by default; TLS in the `wss://` tests).
pub struct RawClient<S = MaybeTlsStream<TcpStream>> {
    ws: WebSocketStream<S>,
}

/// A frame as the client saw it.
#[derive(Debug)]
pub enum Received {
    /// A text frame, parsed as JSON.
    Json(Value),
    /// A close frame.
    Closed(Option<CloseFrame>),
}

impl RawClient {
    /// Connects to `url` with `?identifier=<identifier>` (and `&token=` when given),
    /// as the original client builds it.
    pub async fn connect(url: &str, identifier: &str, token: Option<&str>) -> RawClient {
        Self::try_connect(url, identifier, token)
            .await
            .expect("connect")
    }

    /// Like [`RawClient::connect`], returning the error (for example an HTTP 401).
    pub async fn try_connect(
        url: &str,
        identifier: &str,
        token: Option<&str>,
    ) -> Result<RawClient, tungstenite::Error> {
        let url = format!(
            "{url}/?identifier={identifier}&token={}",
            token.unwrap_or("")
        );
        let (ws, _) = tokio_tungstenite::connect_async(url).await?;
        Ok(RawClient { ws })
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> RawClient<S> {
    /// Wraps an established WebSocket.
    pub fn from_stream(ws: WebSocketStream<S>) -> RawClient<S> {
        RawClient { ws }
    }

    /// The underlying WebSocket.
    pub fn into_inner(self) -> WebSocketStream<S> {
        self.ws
    }

    /// Sends a text frame.
    pub async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.expect("send");
    }

    /// Sends a JSON value as a text frame.
    pub async fn send(&mut self, value: Value) {
        self.send_text(&value.to_string()).await;
    }

    /// Sends any frame.
    pub async fn send_message(&mut self, message: Message) {
        self.ws.send(message).await.expect("send");
    }

    /// The next text frame as sent, or the close frame (pings are skipped); panics
    /// after [`PATIENCE`].
    async fn next_frame(&mut self) -> Result<String, Option<CloseFrame>> {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let item = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .expect("timed out waiting for a frame");
            match item {
                Some(Ok(Message::Text(text))) => return Ok(text.as_str().to_owned()),
                Some(Ok(Message::Close(frame))) => return Err(frame),
                Some(Ok(_)) => {}
                Some(Err(e)) => panic!("stream error: {e}"),
                None => return Err(None),
            }
        }
    }

    /// The next text or close frame (pings are skipped); panics after [`PATIENCE`].
    pub async fn next(&mut self) -> Received {
        match self.next_frame().await {
            Ok(text) => Received::Json(serde_json::from_str(&text).expect("server sent JSON")),
            Err(frame) => Received::Closed(frame),
        }
    }

    /// The next text frame, as sent (pings are skipped); panics on a close.
    pub async fn next_text(&mut self) -> String {
        self.next_frame()
            .await
            .unwrap_or_else(|frame| panic!("closed: {frame:?}"))
    }

    /// The next JSON frame; panics on a close.
    pub async fn recv(&mut self) -> Value {
        match self.next().await {
            Received::Json(value) => value,
            Received::Closed(frame) => panic!("closed while waiting for a message: {frame:?}"),
        }
    }

    /// The next JSON frame, which must have this `type`; returns its `data`.
    pub async fn expect(&mut self, code: u64) -> Value {
        let value = self.recv().await;
        assert_eq!(value["type"], code, "unexpected message: {value}");
        value["data"].clone()
    }

    /// Asserts that nothing arrives within `window`.
    pub async fn expect_silence(&mut self, window: Duration) {
        if let Ok(item) = tokio::time::timeout(window, self.ws.next()).await {
            panic!("expected nothing, got {item:?}");
        }
    }

    /// The close frame that should come next.
    pub async fn expect_close(&mut self) -> Option<CloseFrame> {
        match self.next().await {
            Received::Closed(frame) => frame,
            Received::Json(value) => panic!("expected a close, got {value}"),
        }
    }

    /// Sends CONNECT_TO_STATE and returns the data of STATE_CONNECTION_ESTABLISHED.
    pub async fn attach(&mut self, state: &str) -> Value {
        self.send(json!({"type": 2, "data": {"stateIdentifier": state}}))
            .await;
        self.expect(7).await
    }

    /// Sends CONNECT_TO_STATE with a session (our extension) and returns the data of
    /// STATE_CONNECTION_ESTABLISHED.
    pub async fn attach_session(&mut self, state: &str, session: &str) -> Value {
        self.send(json!({"type": 2, "data": {"stateIdentifier": state, "session": session}}))
            .await;
        self.expect(7).await
    }

    /// Sends UPDATE_STATE with these updates.
    pub async fn update(&mut self, updates: Value) {
        self.send(json!({"type": 3, "data": {"updates": updates}}))
            .await;
    }

    /// Sends UPDATE_STATE with these updates and a request id (our extension).
    pub async fn update_with_id(&mut self, updates: Value, request_id: u64) {
        self.send(json!({"type": 3, "data": {"updates": updates, "requestId": request_id}}))
            .await;
    }
}

/// The README's Rust examples, compiled and run as doc tests (this crate depends on
/// every other one).
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;
