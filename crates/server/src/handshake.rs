//! The handshake of a new connection: TLS, HTTP by hyper (health, routes and static
//! files for plain requests), the authorization middleware, and the upgrade. Its
//! outcome is a WebSocket with the client information the middleware returned, or
//! nothing (the client got an HTTP answer, or went away).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{HeaderMap, Request, Response, StatusCode};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpStream;

use crate::hooks::{HookFailure, run_async_hook};
use crate::http_io::{self, Body, ErrorResponse, Incoming, WriteDeadline};
use crate::outbox::Closer;
use crate::runtime::Runtime;
use crate::static_files;
use crate::tls::Stream;
use crate::wire::Halves;

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
    /// The connection, and the bytes the client sent past its request.
    pub(crate) halves: Halves,
    pub(crate) client: Arc<K>,
    pub(crate) identifier: String,
}

/// An upgrade answered with 101, waiting for hyper to hand the connection over.
struct Accepted<K> {
    on_upgrade: hyper::upgrade::OnUpgrade,
    client: K,
    identifier: String,
}

/// The stream hyper serves: TLS or not, with a time limit on each write.
type Io = TokioIo<WriteDeadline<Stream>>;

/// Longest request head accepted, in bytes (hyper answers 431 past it), and most
/// headers in it.
const MAX_HEAD: usize = 16 * 1024;
const MAX_HEADERS: usize = 64;

/// Serves one accepted TCP connection's HTTP side with hyper: TLS, then requests
/// (plain ones answered: health, routes, static files; keep-alive allowed) until one
/// is an upgrade the authorization middleware accepts. Its outcome is a WebSocket with
/// the client information the middleware returned, or nothing (the client was
/// answered over HTTP, or went away, or `closer` fired).
///
/// Time limits: `handshake_timeout` for TLS and for each request head (hyper's
/// `header_read_timeout`, which also closes a keep-alive connection that stays idle
/// that long), the hook timeout for the middleware, and `write_timeout` for each write
/// of an answer (a download may take as long as it needs while it makes progress).
pub(crate) async fn perform<K: Send + Sync + 'static>(
    runtime: &Arc<Runtime<K>>,
    tcp: TcpStream,
    remote_addr: SocketAddr,
    closer: &Closer,
) -> Option<Upgraded<K>> {
    let config = &runtime.config;
    let stream = match runtime.tls() {
        #[cfg(feature = "tls")]
        Some(tls) => {
            let accept = tokio::time::timeout(config.handshake_timeout, tls.acceptor.accept(tcp));
            match tokio::select! {
                accepted = accept => accepted,
                () = closer.token().cancelled() => return None,
            } {
                Ok(Ok(tls_stream)) => Stream::Tls(Box::new(tls_stream)),
                Ok(Err(e)) => {
                    tracing::debug!(%remote_addr, "TLS handshake failed: {e}");
                    return None;
                }
                Err(_) => {
                    tracing::debug!(%remote_addr, "TLS handshake timed out");
                    crate::metrics::handshake_refused("timed_out");
                    return None;
                }
            }
        }
        _ => Stream::Plain(tcp),
    };
    let accepted: Arc<Mutex<Option<Accepted<K>>>> = Arc::default();
    let service = {
        let runtime = Arc::clone(runtime);
        let accepted = Arc::clone(&accepted);
        service_fn(move |request| {
            let runtime = Arc::clone(&runtime);
            let accepted = Arc::clone(&accepted);
            async move { Ok::<_, Infallible>(answer(&runtime, request, remote_addr, &accepted).await) }
        })
    };
    let io = TokioIo::new(WriteDeadline::new(stream, config.write_timeout));
    let mut http = hyper::server::conn::http1::Builder::new();
    // hyper adds the limit to the current instant: a huge one would overflow.
    let head_limit = config
        .handshake_timeout
        .min(Duration::from_secs(365 * 24 * 3600));
    http.timer(TokioTimer::new())
        .header_read_timeout(head_limit)
        // A client that shuts its sending side after its request (`nc -N`, scripts)
        // still gets its answer.
        .half_close(true)
        .max_buf_size(MAX_HEAD)
        .max_headers(MAX_HEADERS)
        // Title case (`Content-Type`, `Sec-Websocket-Accept`), the closest to what the
        // hand-written server sent; header names are compared without case anyway.
        .title_case_headers(true);
    let connection = http.serve_connection(io, service).with_upgrades();
    tokio::select! {
        served = connection => if let Err(e) = served {
            tracing::debug!(%remote_addr, "HTTP connection ended: {e}");
            // hyper answered these itself (400, 431) or closed (a head not sent in time).
            if e.is_parse_too_large() {
                crate::metrics::handshake_refused("request_too_large");
            } else if e.is_parse() {
                crate::metrics::handshake_refused("bad_request");
            } else if e.is_timeout() {
                crate::metrics::handshake_refused("timed_out");
            }
        },
        () = closer.token().cancelled() => return None,
    }
    let Accepted {
        on_upgrade,
        client,
        identifier,
    } = lock(&accepted).take()?;
    let upgraded = match on_upgrade.await {
        Ok(upgraded) => upgraded,
        Err(e) => {
            tracing::debug!(%remote_addr, "the upgrade did not complete: {e}");
            return None;
        }
    };
    // Our own stream back, and what hyper read past the request: from here on the
    // connection costs what it did before hyper (no buffers, no dynamic dispatch).
    let Ok(parts) = upgraded.downcast::<Io>() else {
        tracing::error!(%remote_addr, "hyper handed back another stream than it was given");
        return None;
    };
    let (read, write) = parts.io.into_inner().into_inner().split();
    Some(Upgraded {
        halves: Halves {
            read,
            write,
            leftover: parts.read_buf.to_vec(),
        },
        client: Arc::new(client),
        identifier,
    })
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Answers one request on the server's listener.
async fn answer<K: Send + Sync + 'static>(
    runtime: &Runtime<K>,
    mut request: Request<hyper::body::Incoming>,
    remote_addr: SocketAddr,
    accepted: &Mutex<Option<Accepted<K>>>,
) -> Response<Body> {
    let target = request
        .uri()
        .path_and_query()
        .map_or("/", http::uri::PathAndQuery::as_str)
        .to_owned();
    let incoming = http_io::classify(
        request.method().as_str(),
        request.version() >= http::Version::HTTP_11,
        request.headers().clone(),
        &target,
        remote_addr,
    );
    let head = match incoming {
        Ok(Incoming::Upgrade(head)) => head,
        Ok(Incoming::Plain { method }) => {
            if method == "GET"
                && let Some(answer) = route(runtime, request.uri().path()).await
            {
                return answer;
            }
            if let Some(root) = &runtime.config.static_files {
                return static_files::serve(root, request).await;
            }
            return refuse(remote_addr, &http_io::not_an_upgrade(&method));
        }
        Err(error) => return refuse(remote_addr, &error),
    };
    let identifier = head.request.identifier.clone();
    match authorize(runtime, head.request.clone()).await {
        Ok(client) => {
            *lock(accepted) = Some(Accepted {
                on_upgrade: hyper::upgrade::on(&mut request),
                client,
                identifier,
            });
            head.switching_protocols()
        }
        Err(error) => refuse(remote_addr, &error),
    }
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
    path: &str,
) -> Option<Response<Body>> {
    const TEXT: &str = "text/plain; charset=utf-8";
    match path {
        "/healthz" => Some(http_io::text(StatusCode::OK, TEXT, "ok\n".to_owned())),
        "/readyz" => Some(match runtime.ready().await {
            Ok(()) => http_io::text(StatusCode::OK, TEXT, "ready\n".to_owned()),
            Err(why) => http_io::text(
                StatusCode::SERVICE_UNAVAILABLE,
                TEXT,
                format!("not ready: {why}\n"),
            ),
        }),
        _ => {
            let (_, content_type, handler) =
                runtime.config.routes.0.iter().find(|(p, _, _)| p == path)?;
            Some(http_io::text(StatusCode::OK, content_type, handler()))
        }
    }
}

/// The answer that refuses a request, logged and counted.
fn refuse(remote_addr: SocketAddr, error: &ErrorResponse) -> Response<Body> {
    tracing::debug!(%remote_addr, status = %error.status, "upgrade refused: {}", error.body);
    count_refusal(error);
    error.response()
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
