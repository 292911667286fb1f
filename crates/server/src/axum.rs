//! Serving the syncer from an [axum](https://docs.rs/axum) app (cargo feature `axum`):
//! its WebSocket endpoint becomes a route of the app, next to the app's own routes, on
//! the app's listener (and its TLS, when it has some).
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use axum::{Router, routing::get};
//! use state_sync_server::{StateOptions, StateSyncer};
//!
//! let syncer = StateSyncer::new();
//! syncer.create_state(StateOptions::new().identifier("chat"))?;
//! let app = Router::new()
//!     .route("/hello", get(|| async { "hello" }))
//!     .nest("/sync", state_sync_server::axum::router(syncer.clone()));
//! let listener = tokio::net::TcpListener::bind("0.0.0.0:5000").await?;
//! // Clients connect to ws://host:5000/sync?identifier=<client id>&token=<token>.
//! axum::serve(listener, app).await?;
//! syncer.disconnect_all();
//! # Ok(()) }
//! ```
//!
//! Everything the server's own listener does happens here too: the upgrade is checked
//! (400 / 426 with the reason), the authorization middleware runs on the request (401,
//! 500, 503), the connection limit answers 503, and the connection is then served
//! exactly as on the server's listener. The app's own middleware (its layers, its auth
//! extractors) runs before it, like for any route. What the app does not get from
//! this router: the handshake time limit (set the app's own, for example
//! `tower_http::timeout`), and shutdown: call [`StateSyncer::disconnect_all`] when the
//! app stops.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, OriginalUri, Request};
use axum::response::Response;
use axum::routing::any;
use http::StatusCode;
use hyper_util::rt::TokioIo;
use tokio_util::sync::CancellationToken;

use crate::connection::run;
use crate::handshake::{authorize, count_refusal};
use crate::http_io::{self, ErrorResponse, Incoming};
use crate::outbox::Closer;
use crate::syncer::StateSyncer;

/// A router that serves the syncer's WebSocket endpoint at its root: nest it where the
/// app wants it (`app.nest("/sync", router(syncer))`); clients then connect to
/// `ws://host/sync?identifier=…` (the path, then the query, as the clients build it).
pub fn router<K: Send + Sync + 'static>(syncer: StateSyncer<K>) -> Router {
    Router::new().route(
        "/",
        any(move |request: Request| {
            let syncer = syncer.clone();
            async move { upgrade(&syncer, request).await }
        }),
    )
}

/// A router with `/healthz` (200 `ok` while the process serves) and `/readyz` (200
/// `ready`, or 503 with the reason when the syncer's backend cannot take changes: see
/// [`StateSyncer::ready`]), to merge into the app's (`app.merge(health_router(syncer))`).
pub fn health_router<K: Send + Sync + 'static>(syncer: StateSyncer<K>) -> Router {
    Router::new()
        .route("/healthz", axum::routing::get(|| async { "ok\n" }))
        .route(
            "/readyz",
            axum::routing::get(move || {
                let syncer = syncer.clone();
                async move {
                    match syncer.ready().await {
                        Ok(()) => (StatusCode::OK, "ready\n".to_owned()),
                        Err(why) => (
                            StatusCode::SERVICE_UNAVAILABLE,
                            format!("not ready: {why}\n"),
                        ),
                    }
                }
            }),
        )
}

/// Answers one request for the syncer: the `101 Switching Protocols` of a WebSocket
/// client (served from then on in a task of its own), or the refusal. For an app
/// that routes to it itself.
pub async fn upgrade<K: Send + Sync + 'static>(
    syncer: &StateSyncer<K>,
    mut request: Request,
) -> Response {
    let runtime = Arc::clone(&syncer.runtime);
    let remote_addr = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(SocketAddr::from(([0, 0, 0, 0], 0)), |info| info.0);
    let target = request
        .extensions()
        .get::<OriginalUri>()
        .map_or(request.uri(), |original| &original.0)
        .path_and_query()
        .map_or_else(|| "/".to_owned(), |target| target.as_str().to_owned());
    let on_upgrade = hyper::upgrade::on(&mut request);
    let http11 = request.version() >= http::Version::HTTP_11;
    let incoming = http_io::classify(
        request.method().as_str(),
        http11,
        request.headers().clone(),
        &target,
        remote_addr,
    );
    let head = match incoming {
        Ok(Incoming::Upgrade(head)) => head,
        Ok(Incoming::Plain { method }) => return refusal(&http_io::not_an_upgrade(&method)),
        Err(error) => return refusal(&error),
    };
    if runtime.connection_count() >= crate::server::connection_limit(runtime.config.max_connections)
    {
        crate::metrics::handshake_refused("full");
        return refusal(&ErrorResponse::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many connections; try again later",
        ));
    }
    let identifier = head.request.identifier.clone();
    let client = match authorize(&runtime, head.request.clone()).await {
        Ok(client) => Arc::new(client),
        Err(error) => return refusal(&error),
    };
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(e) => {
                tracing::debug!(%remote_addr, "the upgrade did not complete: {e}");
                return;
            }
        };
        // Closed one by one (disconnect_client, disconnect_all, overflow, …): no
        // server's shutdown is its parent.
        let closer = Arc::new(Closer::child_of(&CancellationToken::new()));
        let (read, write) = crate::wire::split_other(TokioIo::new(upgraded));
        let halves = crate::wire::Halves {
            read,
            write,
            leftover: Vec::new(),
        };
        Box::pin(run(
            runtime,
            halves,
            client,
            identifier,
            closer,
            remote_addr,
        ))
        .await;
    });
    head.switching_protocols().map(Body::new)
}

/// The HTTP answer that refuses an upgrade, counted in the metrics.
fn refusal(error: &ErrorResponse) -> Response {
    count_refusal(error);
    error.response().map(Body::new)
}
