//! The HTTP side of a connection: reading the request head, answering 101 Switching
//! Protocols or an HTTP error.
//!
//! We read the head ourselves (instead of tungstenite's synchronous callback) so that
//! the asynchronous authorization middleware runs before the upgrade, and a refused
//! client gets a plain HTTP answer, never a broken WebSocket.

use std::net::SocketAddr;

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use crate::handshake::UpgradeRequest;

/// Longest request head accepted, in bytes.
const MAX_HEAD: usize = 16 * 1024;
const MAX_HEADERS: usize = 64;

/// An HTTP error response: the status and the plain-text body to send instead of an
/// upgrade (the middleware's [`Rejection`](crate::Rejection) becomes one with 401).
#[derive(Debug)]
pub(crate) struct ErrorResponse {
    pub(crate) status: StatusCode,
    pub(crate) body: String,
    /// More header lines (`Name: value`), each without its line end.
    pub(crate) headers: Vec<String>,
}

impl ErrorResponse {
    pub(crate) fn new(status: StatusCode, body: impl Into<String>) -> Self {
        ErrorResponse {
            status,
            body: body.into(),
            headers: Vec::new(),
        }
    }

    fn with_header(mut self, line: impl Into<String>) -> Self {
        self.headers.push(line.into());
        self
    }
}

/// What a client's first bytes were.
pub(crate) enum Incoming {
    /// A WebSocket upgrade request.
    Upgrade(Box<Head>),
    /// A plain HTTP request (not an upgrade): its method and target.
    Plain { method: String, target: String },
    /// Something to answer with an error.
    Invalid(ErrorResponse),
    /// The peer closed before sending anything.
    Closed,
}

/// A parsed upgrade request and the bytes read past its head.
pub(crate) struct Head {
    pub(crate) request: UpgradeRequest,
    accept_key: String,
    pub(crate) leftover: Vec<u8>,
}

#[cfg_attr(not(feature = "axum"), allow(dead_code))]
impl Head {
    /// The `Sec-WebSocket-Accept` of the answer.
    pub(crate) fn accept_key(&self) -> &str {
        &self.accept_key
    }
}

/// Reads the request head and tells what it is.
pub(crate) async fn read_request<S: AsyncRead + Unpin>(
    stream: &mut S,
    remote_addr: SocketAddr,
) -> Incoming {
    match read_head(stream, remote_addr).await {
        Ok(incoming) => incoming,
        Err(error) => Incoming::Invalid(error),
    }
}

async fn read_head<S: AsyncRead + Unpin>(
    stream: &mut S,
    remote_addr: SocketAddr,
) -> Result<Incoming, ErrorResponse> {
    let mut buffer = Vec::with_capacity(1024);
    // On the heap: an array here would live in every connection's task for its whole life.
    let mut chunk = vec![0u8; 1024];
    loop {
        let read = stream.read(&mut chunk).await.map_err(|e| {
            ErrorResponse::new(StatusCode::BAD_REQUEST, format!("reading the request: {e}"))
        })?;
        if read == 0 {
            if buffer.is_empty() {
                return Ok(Incoming::Closed);
            }
            return Err(ErrorResponse::new(
                StatusCode::BAD_REQUEST,
                "incomplete request head",
            ));
        }
        buffer.extend_from_slice(&chunk[..read]);
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut headers);
        match request.parse(&buffer) {
            Ok(httparse::Status::Complete(length)) => {
                return check(&request, remote_addr).map(|incoming| match incoming {
                    Incoming::Upgrade(mut head) => {
                        head.leftover = buffer[length..].to_vec();
                        Incoming::Upgrade(head)
                    }
                    other => other,
                });
            }
            Ok(httparse::Status::Partial) if buffer.len() < MAX_HEAD => {}
            Ok(httparse::Status::Partial) => {
                return Err(ErrorResponse::new(
                    StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                    format!("request head larger than {MAX_HEAD} bytes"),
                ));
            }
            Err(e) => {
                return Err(ErrorResponse::new(
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

fn check(
    request: &httparse::Request<'_, '_>,
    remote_addr: SocketAddr,
) -> Result<Incoming, ErrorResponse> {
    let mut headers = HeaderMap::new();
    for header in request.headers.iter() {
        let name = HeaderName::from_bytes(header.name.as_bytes());
        let value = HeaderValue::from_bytes(header.value);
        if let (Ok(name), Ok(value)) = (name, value) {
            headers.append(name, value);
        }
    }
    classify(
        request.method.unwrap_or("GET"),
        request.version == Some(1),
        headers,
        request.path.unwrap_or("/"),
        remote_addr,
    )
}

/// Tells an upgrade request from a plain one, and checks the upgrade (RFC 6455) and
/// the client's `identifier`. `http11`: the request is HTTP/1.1 or later.
pub(crate) fn classify(
    method: &str,
    http11: bool,
    headers: HeaderMap,
    target: &str,
    remote_addr: SocketAddr,
) -> Result<Incoming, ErrorResponse> {
    if method != "GET"
        || !has_token(&headers, http::header::UPGRADE, "websocket")
        || !has_token(&headers, http::header::CONNECTION, "upgrade")
    {
        return Ok(Incoming::Plain {
            method: method.to_owned(),
            target: target.to_owned(),
        });
    }
    // RFC 6455 section 4.1: an upgrade is an HTTP/1.1 (or later) GET.
    if !http11 {
        return Err(ErrorResponse::new(
            StatusCode::BAD_REQUEST,
            "a WebSocket upgrade needs HTTP/1.1",
        ));
    }
    // Section 4.4: a version we do not speak gets 426 and the versions we do.
    if headers
        .get(http::header::SEC_WEBSOCKET_VERSION)
        .map(HeaderValue::as_bytes)
        != Some(b"13")
    {
        return Err(ErrorResponse::new(
            StatusCode::UPGRADE_REQUIRED,
            "Sec-WebSocket-Version must be 13",
        )
        .with_header("Sec-WebSocket-Version: 13"));
    }
    let Some(key) = headers.get(http::header::SEC_WEBSOCKET_KEY) else {
        return Err(ErrorResponse::new(
            StatusCode::BAD_REQUEST,
            "Sec-WebSocket-Key is missing",
        ));
    };
    let accept_key = derive_accept_key(key.as_bytes());
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let param = |name: &str| {
        form_urlencoded::parse(query.as_bytes())
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.into_owned())
            .filter(|value| !value.is_empty())
    };
    let Some(identifier) = param("identifier") else {
        return Err(ErrorResponse::new(
            StatusCode::UNAUTHORIZED,
            "the identifier query parameter is missing: connect to ws://host:port/?identifier=<client id>&token=<access token>",
        ));
    };
    let token = param("token");
    Ok(Incoming::Upgrade(Box::new(Head {
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
    })))
}

/// The answer to a plain HTTP request when no static files are served.
pub(crate) fn not_an_upgrade(method: &str) -> ErrorResponse {
    if method == "GET" {
        ErrorResponse::new(
            StatusCode::UPGRADE_REQUIRED,
            "this is a server-state-sync WebSocket endpoint: connect with a WebSocket client",
        )
    } else {
        ErrorResponse::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "a WebSocket upgrade is a GET request",
        )
    }
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
/// A plain answer to a `GET`.
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) content_type: &'static str,
    pub(crate) body: String,
}

/// Writes `answer` and closes the connection.
pub(crate) async fn respond<S: AsyncWrite + Unpin>(
    stream: &mut S,
    answer: &Answer,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        answer.status.as_u16(),
        answer.status.canonical_reason().unwrap_or(""),
        answer.content_type,
        answer.body.len(),
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(answer.body.as_bytes()).await?;
    stream.shutdown().await
}

pub(crate) async fn respond_error<S: AsyncWrite + Unpin>(
    stream: &mut S,
    error: &ErrorResponse,
) -> std::io::Result<()> {
    let status = error.status;
    let mut response = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        error.body.len() + 1,
    );
    if status == StatusCode::UPGRADE_REQUIRED {
        response.push_str("Upgrade: websocket\r\n");
    }
    for line in &error.headers {
        response.push_str(line);
        response.push_str("\r\n");
    }
    response.push_str("\r\n");
    response.push_str(&error.body);
    response.push('\n');
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}
