//! The HTTP side of a connection, shared by the server's own listener (hyper) and the
//! axum router: telling an upgrade request from a plain one, checking it, and the
//! answers (101 Switching Protocols, or an error with its reason as the body).
//!
//! The asynchronous authorization middleware runs before the upgrade is answered, so a
//! refused client gets a plain HTTP answer, never a broken WebSocket.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode, header};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use crate::handshake::UpgradeRequest;

/// The body of every answer: text, or a file being streamed.
pub(crate) type Body = UnsyncBoxBody<Bytes, io::Error>;

/// A body holding `bytes`.
pub(crate) fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// An HTTP error response: the status and the plain-text body to send instead of an
/// upgrade (the middleware's [`Rejection`](crate::Rejection) becomes one with 401).
#[derive(Debug)]
pub(crate) struct ErrorResponse {
    pub(crate) status: StatusCode,
    pub(crate) body: String,
    /// More headers.
    pub(crate) headers: Vec<(HeaderName, HeaderValue)>,
}

impl ErrorResponse {
    pub(crate) fn new(status: StatusCode, body: impl Into<String>) -> Self {
        ErrorResponse {
            status,
            body: body.into(),
            headers: Vec::new(),
        }
    }

    fn with_header(mut self, name: HeaderName, value: &'static str) -> Self {
        self.headers.push((name, HeaderValue::from_static(value)));
        self
    }

    /// The answer: the reason as a plain-text body, and the connection closed after it
    /// (a refused client does not send another request).
    pub(crate) fn response(&self) -> Response<Body> {
        let mut response = Response::new(full(format!("{}\n", self.body)));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, TEXT_PLAIN);
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        if self.status == StatusCode::UPGRADE_REQUIRED {
            headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        }
        for (name, value) in &self.headers {
            headers.insert(name, value.clone());
        }
        response
    }
}

const TEXT_PLAIN: HeaderValue = HeaderValue::from_static("text/plain; charset=utf-8");

/// A plain-text answer that may be cached by nobody.
pub(crate) fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Body> {
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    // A route's content type is the app's text: one that is no header value is
    // answered as plain text rather than panicking.
    let content_type = HeaderValue::from_str(content_type).unwrap_or(TEXT_PLAIN);
    headers.insert(header::CONTENT_TYPE, content_type);
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// What a request is.
pub(crate) enum Incoming {
    /// A WebSocket upgrade request.
    Upgrade(Box<Head>),
    /// A plain HTTP request (not an upgrade): its method.
    Plain { method: String },
}

/// A checked upgrade request.
pub(crate) struct Head {
    pub(crate) request: UpgradeRequest,
    accept_key: String,
}

impl Head {
    /// The `101 Switching Protocols` answer to it.
    pub(crate) fn switching_protocols(&self) -> Response<Body> {
        let mut response = Response::new(full(Bytes::new()));
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let headers = response.headers_mut();
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        if let Ok(accept) = HeaderValue::from_str(&self.accept_key) {
            headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
        }
        response
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

/// Tells an upgrade request from a plain one, and checks the upgrade (RFC 6455) and
/// the client's `identifier`. `http11`: the request is HTTP/1.1 or later; `target`:
/// its path and query.
pub(crate) fn classify(
    method: &str,
    http11: bool,
    headers: HeaderMap,
    target: &str,
    remote_addr: SocketAddr,
) -> Result<Incoming, ErrorResponse> {
    if method != "GET"
        || !has_token(&headers, header::UPGRADE, "websocket")
        || !has_token(&headers, header::CONNECTION, "upgrade")
    {
        return Ok(Incoming::Plain {
            method: method.to_owned(),
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
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(HeaderValue::as_bytes)
        != Some(b"13")
    {
        return Err(ErrorResponse::new(
            StatusCode::UPGRADE_REQUIRED,
            "Sec-WebSocket-Version must be 13",
        )
        .with_header(header::SEC_WEBSOCKET_VERSION, "13"));
    }
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY) else {
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
        .with_header(header::ALLOW, "GET")
    }
}

/// Writes an HTTP error at once, before reading anything, and shuts the stream: the
/// answer to a connection over the limit, which gets no parser and no buffers.
pub(crate) async fn write_refusal<S: AsyncWrite + Unpin>(
    stream: &mut S,
    error: &ErrorResponse,
) -> io::Result<()> {
    let status = error.status;
    let response = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        error.body.len() + 1,
        error.body,
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// A stream whose writes must make progress within a time limit: hyper has no write
/// timeout of its own, and a client that stops reading an answer (a download, a
/// refusal) must not hold its connection for ever. Reads are not limited here (the
/// request head has hyper's `header_read_timeout`).
#[derive(Debug)]
pub(crate) struct WriteDeadline<S> {
    inner: S,
    limit: Duration,
    /// Started when a write could not make progress; cleared when one does.
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S> WriteDeadline<S> {
    pub(crate) fn new(inner: S, limit: Duration) -> Self {
        WriteDeadline {
            inner,
            limit,
            stalled: None,
        }
    }

    pub(crate) fn into_inner(self) -> S {
        self.inner
    }

    /// `result` of a write: a pending one starts (or checks) the deadline.
    fn progress<T>(
        &mut self,
        cx: &mut Context<'_>,
        result: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if result.is_ready() {
            self.stalled = None;
            return result;
        }
        let limit = self.limit;
        let stalled = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        ready!(stalled.as_mut().poll(cx));
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("the client read nothing for {limit:?}"),
        )))
    }
}

use std::future::Future as _;

impl<S: AsyncRead + Unpin> AsyncRead for WriteDeadline<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.progress(cx, result)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.progress(cx, result)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_flush(cx);
        this.progress(cx, result)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.progress(cx, result)
    }
}
