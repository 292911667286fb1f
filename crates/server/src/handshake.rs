//! The handshake of a new connection: TLS, the request head, static files for plain
//! requests, the authorization middleware, and the upgrade. Its outcome is a WebSocket
//! with the client information the middleware returned, or nothing (the client got an
//! HTTP answer, or went away).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use http::{HeaderMap, StatusCode};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::Role;

use crate::hooks::{HookFailure, run_async_hook};
use crate::http_io::{self, ErrorResponse, Incoming};
use crate::runtime::Runtime;
use crate::tls::Stream;

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

/// The authorization middleware's refusal of a client: it gets
/// `HTTP/1.1 401 Unauthorized` with this reason as the body, and no WebSocket.
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

/// A client that completed the handshake.
pub(crate) struct Upgraded<K> {
    pub(crate) ws: WebSocketStream<Stream>,
    pub(crate) client: Arc<K>,
    pub(crate) identifier: String,
}

/// What a handshake ended with.
// The common case is the large one; boxing it would cost every connection an allocation.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Handshake<K> {
    /// A WebSocket client.
    Upgraded(Upgraded<K>),
    /// A plain HTTP request for a file (static files are configured): answered outside
    /// the handshake's time limit, since a download may take long.
    File {
        stream: Box<Stream>,
        method: String,
        target: String,
    },
    /// The client was answered over HTTP (refused) or went away; already logged.
    Done,
}

/// TLS, the request head, authorization and the 101 answer.
pub(crate) async fn perform<K: Send + Sync + 'static>(
    runtime: &Runtime<K>,
    tcp: TcpStream,
    remote_addr: SocketAddr,
) -> Handshake<K> {
    let mut stream = match runtime.tls() {
        #[cfg(feature = "tls")]
        Some(tls) => match tls.acceptor.accept(tcp).await {
            Ok(tls_stream) => Stream::Tls(Box::new(tls_stream)),
            Err(e) => {
                tracing::debug!(%remote_addr, "TLS handshake failed: {e}");
                return Handshake::Done;
            }
        },
        _ => Stream::Plain(tcp),
    };
    let mut head = match http_io::read_request(&mut stream, remote_addr).await {
        Incoming::Upgrade(head) => *head,
        Incoming::Closed => return Handshake::Done,
        Incoming::Plain { method, target } => {
            if let Some(answer) = route(runtime, &method, &target).await {
                if let Err(e) = http_io::respond(&mut stream, &answer).await {
                    tracing::debug!(%remote_addr, "answering {target} failed: {e}");
                }
                return Handshake::Done;
            }
            if runtime.config.static_files.is_some() {
                return Handshake::File {
                    stream: Box::new(stream),
                    method,
                    target,
                };
            }
            refuse(&mut stream, remote_addr, &http_io::not_an_upgrade(&method)).await;
            return Handshake::Done;
        }
        Incoming::Invalid(error) => {
            refuse(&mut stream, remote_addr, &error).await;
            return Handshake::Done;
        }
    };
    let identifier = head.request.identifier.clone();
    let error = match authorize(runtime, head.request.clone()).await {
        Ok(client) => {
            if let Err(e) = http_io::accept(&mut stream, &head).await {
                tracing::debug!(%remote_addr, "writing the upgrade response failed: {e}");
                return Handshake::Done;
            }
            let config = runtime.config.websocket_config();
            let ws = WebSocketStream::from_partially_read(
                stream,
                std::mem::take(&mut head.leftover),
                Role::Server,
                Some(config),
            )
            .await;
            return Handshake::Upgraded(Upgraded {
                ws,
                client: Arc::new(client),
                identifier,
            });
        }
        Err(error) => error,
    };
    refuse(&mut stream, remote_addr, &error).await;
    Handshake::Done
}

/// Runs the authorization middleware within the hook time limit: the client
/// information, or the answer that refuses the upgrade (401 with the middleware's
/// reason, 500 when it panicked, 503 when it timed out).
pub(crate) async fn authorize<K: Send + Sync + 'static>(
    runtime: &Runtime<K>,
    request: UpgradeRequest,
) -> Result<K, ErrorResponse> {
    let limit = runtime.config.hook_timeout;
    let authorization = (runtime.authorizer)(request);
    match run_async_hook("authorization middleware", limit, authorization).await {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(rejection)) => Err(ErrorResponse::new(
            StatusCode::UNAUTHORIZED,
            rejection.reason,
        )),
        Err(HookFailure::Panicked(_)) => Err(ErrorResponse::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "authorization failed",
        )),
        Err(HookFailure::TimedOut(_)) => Err(ErrorResponse::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "authorization timed out",
        )),
    }
}

/// The answer to a plain `GET` of `/healthz`, `/readyz` or a configured route.
async fn route<K: Send + Sync + 'static>(
    runtime: &Runtime<K>,
    method: &str,
    target: &str,
) -> Option<http_io::Answer> {
    if method != "GET" {
        return None;
    }
    let path = target.split(['?', '#']).next().unwrap_or(target);
    let text = |status, body: String| http_io::Answer {
        status,
        content_type: "text/plain; charset=utf-8",
        body,
    };
    match path {
        "/healthz" => Some(text(StatusCode::OK, "ok\n".to_owned())),
        "/readyz" => Some(match runtime.ready().await {
            Ok(()) => text(StatusCode::OK, "ready\n".to_owned()),
            Err(why) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {why}\n"),
            ),
        }),
        _ => {
            let (_, content_type, handler) =
                runtime.config.routes.0.iter().find(|(p, _, _)| p == path)?;
            Some(http_io::Answer {
                status: StatusCode::OK,
                content_type,
                body: handler(),
            })
        }
    }
}

async fn refuse(stream: &mut Stream, remote_addr: SocketAddr, error: &ErrorResponse) {
    tracing::debug!(%remote_addr, status = %error.status, "upgrade refused: {}", error.body);
    count_refusal(error);
    let _ = http_io::respond_error(stream, error).await;
}

/// Counts a refused upgrade in the metrics, by cause.
pub(crate) fn count_refusal(error: &ErrorResponse) {
    crate::metrics::handshake_refused(match error.status.as_u16() {
        401 => "unauthorized",
        500 => "middleware_panicked",
        503 => "middleware_timed_out",
        426 => "not_an_upgrade",
        405 => "method_not_allowed",
        431 => "request_too_large",
        _ => "bad_request",
    });
}
