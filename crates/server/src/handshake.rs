//! The HTTP upgrade: read the request head, authorize, answer 101 or an HTTP error.
//!
//! We read the head ourselves (instead of tungstenite's synchronous callback) so that
//! the asynchronous authorization middleware runs before the upgrade, and a refused
//! client gets a plain HTTP 401, never a broken WebSocket.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

/// Longest request head accepted, in bytes.
const MAX_HEAD: usize = 16 * 1024;
const MAX_HEADERS: usize = 64;

/// The HTTP upgrade request a client opened its WebSocket with, as the authorization
/// middleware sees it.
#[derive(Debug, Clone)]
pub struct UpgradeRequest {
    /// The request path, without the query string (`/` for `ws://host:port`).
    pub path: String,
    /// The raw query string, without `?`.
    pub query: String,
    /// The request headers.
    pub headers: HeaderMap,
    /// The client's address.
    pub remote_addr: SocketAddr,
    /// The `identifier` query parameter (URL-decoded; never empty: requests without
    /// one are refused before the middleware runs).
    pub identifier: String,
    /// The `token` query parameter (URL-decoded), `None` when absent or empty.
    pub token: Option<String>,
}

impl UpgradeRequest {
    /// The first value of a query parameter, URL-decoded.
    pub fn query_param(&self, name: &str) -> Option<String> {
        form_urlencoded::parse(self.query.as_bytes())
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.into_owned())
    }

    /// A header's value as text, when present and valid UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }
}

/// The middleware's refusal: the client gets `HTTP/1.1 401 Unauthorized` with this
/// reason as the body, and no WebSocket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub(crate) reason: String,
}

impl Rejection {
    /// A refusal with a reason for the client (sent as the response body).
    pub fn new(reason: impl Into<String>) -> Self {
        Rejection {
            reason: reason.into(),
        }
    }

    /// The reason given.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
pub(crate) type Authorizer<K> =
    Arc<dyn Fn(UpgradeRequest) -> BoxFuture<Result<K, Rejection>> + Send + Sync>;

pub(crate) fn authorizer<K, F, Fut>(middleware: F) -> Authorizer<K>
where
    F: Fn(UpgradeRequest) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<K, Rejection>> + Send + 'static,
{
    Arc::new(move |request| Box::pin(middleware(request)))
}

/// An upgrade refused before it happened: the HTTP status and body to send.
#[derive(Debug)]
pub(crate) struct Refusal {
    pub(crate) status: StatusCode,
    pub(crate) body: String,
    /// For a plain HTTP request (not an upgrade): its method and target, so that a
    /// server configured with static files can answer it instead.
    pub(crate) plain_request: Option<(String, String)>,
}

impl Refusal {
    pub(crate) fn new(status: StatusCode, body: impl Into<String>) -> Self {
        Refusal {
            status,
            body: body.into(),
            plain_request: None,
        }
    }

    fn plain(mut self, request: &httparse::Request<'_, '_>) -> Self {
        let method = request.method.unwrap_or("GET").to_owned();
        self.plain_request = Some((method, request.path.unwrap_or("/").to_owned()));
        self
    }
}

/// A parsed upgrade request and the bytes read past its head.
pub(crate) struct Head {
    pub(crate) request: UpgradeRequest,
    accept_key: String,
    pub(crate) leftover: Vec<u8>,
}

/// Reads and checks the request head. `Ok(None)` when the peer closed before sending
/// anything.
pub(crate) async fn read_head<S: AsyncRead + Unpin>(
    stream: &mut S,
    remote_addr: SocketAddr,
) -> Result<Option<Head>, Refusal> {
    let mut buffer = Vec::with_capacity(1024);
    // On the heap: an array here would live in every connection's task for its whole life.
    let mut chunk = vec![0u8; 1024];
    loop {
        let read = stream.read(&mut chunk).await.map_err(|e| {
            Refusal::new(StatusCode::BAD_REQUEST, format!("reading the request: {e}"))
        })?;
        if read == 0 {
            if buffer.is_empty() {
                return Ok(None);
            }
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                "incomplete request head",
            ));
        }
        buffer.extend_from_slice(&chunk[..read]);
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut headers);
        match request.parse(&buffer) {
            Ok(httparse::Status::Complete(length)) => {
                let head = check(&request, remote_addr)?;
                let leftover = buffer[length..].to_vec();
                return Ok(Some(Head { leftover, ..head }));
            }
            Ok(httparse::Status::Partial) if buffer.len() < MAX_HEAD => {}
            Ok(httparse::Status::Partial) => {
                return Err(Refusal::new(
                    StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                    format!("request head larger than {MAX_HEAD} bytes"),
                ));
            }
            Err(e) => {
                return Err(Refusal::new(
                    StatusCode::BAD_REQUEST,
                    format!("malformed request: {e}"),
                ));
            }
        }
    }
}

fn has_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|value| {
        value.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|part| part.trim().eq_ignore_ascii_case(token))
        })
    })
}

fn check(request: &httparse::Request<'_, '_>, remote_addr: SocketAddr) -> Result<Head, Refusal> {
    let mut headers = HeaderMap::new();
    for header in request.headers.iter() {
        let name = HeaderName::from_bytes(header.name.as_bytes());
        let value = HeaderValue::from_bytes(header.value);
        if let (Ok(name), Ok(value)) = (name, value) {
            headers.append(name, value);
        }
    }
    if request.method != Some("GET") {
        return Err(Refusal::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "a WebSocket upgrade is a GET request",
        )
        .plain(request));
    }
    if !has_token(&headers, http::header::UPGRADE, "websocket")
        || !has_token(&headers, http::header::CONNECTION, "upgrade")
    {
        return Err(Refusal::new(
            StatusCode::UPGRADE_REQUIRED,
            "this is a server-state-sync WebSocket endpoint: connect with a WebSocket client",
        )
        .plain(request));
    }
    if headers
        .get(http::header::SEC_WEBSOCKET_VERSION)
        .map(HeaderValue::as_bytes)
        != Some(b"13")
    {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "Sec-WebSocket-Version must be 13",
        ));
    }
    let Some(key) = headers.get(http::header::SEC_WEBSOCKET_KEY) else {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "Sec-WebSocket-Key is missing",
        ));
    };
    let accept_key = derive_accept_key(key.as_bytes());
    let target = request.path.unwrap_or("/");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let param = |name: &str| {
        form_urlencoded::parse(query.as_bytes())
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.into_owned())
            .filter(|value| !value.is_empty())
    };
    let Some(identifier) = param("identifier") else {
        return Err(Refusal::new(
            StatusCode::UNAUTHORIZED,
            "the identifier query parameter is missing: connect to ws://host:port/?identifier=<client id>&token=<access token>",
        ));
    };
    let token = param("token");
    Ok(Head {
        request: UpgradeRequest {
            path: path.to_owned(),
            query: query.to_owned(),
            headers,
            remote_addr,
            identifier,
            token,
        },
        accept_key,
        leftover: Vec::new(),
    })
}

/// Answers the upgrade with 101 Switching Protocols.
pub(crate) async fn accept<S: AsyncWrite + Unpin>(
    stream: &mut S,
    head: &Head,
) -> std::io::Result<()> {
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
        head.accept_key
    );
    stream.write_all(response.as_bytes()).await?;
    stream.flush().await
}

/// Answers with an HTTP error and a plain-text body; the connection is then closed.
pub(crate) async fn refuse<S: AsyncWrite + Unpin>(
    stream: &mut S,
    refusal: &Refusal,
) -> std::io::Result<()> {
    let status = refusal.status;
    let mut response = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        refusal.body.len() + 1,
    );
    if status == StatusCode::UPGRADE_REQUIRED {
        response.push_str("Upgrade: websocket\r\n");
    }
    response.push_str("\r\n");
    response.push_str(&refusal.body);
    response.push('\n');
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}
