//! The syncer mounted in an axum app (cargo feature `axum`), on the app's listener next
//! to its own routes: the native client attaches and updates through `/sync`, the app's
//! routes answer, the upgrade's refusals are those of the server's own listener, and
//! `disconnect_all` closes the mounted connections.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use axum::Router;
use axum::routing::get;
use serde_json::json;
use state_sync_client::{Client, ConnectionStatus, Error};
use state_sync_server::{Rejection, StateOptions, StateSyncer};
use state_sync_tests::{RawClient, eventually, http_get};

async fn app(syncer: &StateSyncer<String>) -> String {
    let app = Router::new()
        .route("/hello", get(|| async { "hello from the app" }))
        .nest("/sync", state_sync_server::axum::router(syncer.clone()))
        .merge(state_sync_server::axum::health_router(syncer.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await
        .unwrap();
    });
    format!("ws://{address}")
}

fn syncer() -> StateSyncer<String> {
    let syncer = StateSyncer::builder()
        .authorize(|request| {
            std::future::ready(match request.token.as_deref() {
                Some("secret") => Ok(request.identifier.clone()),
                _ => Err(Rejection::new("wrong token")),
            })
        })
        .build();
    syncer
        .create_state(
            StateOptions::new()
                .identifier("chat")
                .initial_value(json!({"messages": []}))
                .allow_connecting_client(|client: &String| client != "mallory"),
        )
        .unwrap();
    syncer
}

#[tokio::test]
async fn the_syncer_serves_at_a_path_of_an_axum_app() {
    let syncer = syncer();
    let url = app(&syncer).await;
    // The app's own route, and the syncer's health routes merged into the app.
    assert_eq!(
        http_get(&url, "/hello").await,
        (200, "hello from the app".to_owned())
    );
    assert_eq!(http_get(&url, "/healthz").await, (200, "ok\n".to_owned()));
    assert_eq!(http_get(&url, "/readyz").await, (200, "ready\n".to_owned()));
    // Two clients through /sync: attached, updates acknowledged and broadcast.
    let ann = Client::connect(&format!("{url}/sync"), "ann", Some("secret"))
        .await
        .unwrap();
    let bob = Client::connect(&format!("{url}/sync"), "bob", Some("secret"))
        .await
        .unwrap();
    assert_eq!(
        json!(ann.connect_to_state("chat").await.unwrap()),
        json!({"messages": []})
    );
    bob.connect_to_state("chat").await.unwrap();
    let applied = ann.update_state(json!({"title": "mounted"})).await.unwrap();
    assert_eq!(applied.version, Some(1));
    eventually("bob sees ann's update", || {
        bob.state().get("title") == Some(&json!("mounted"))
    })
    .await;
    assert_eq!(syncer.connection_count(), 2);
    // Presence works through the mount too.
    eventually("bob sees ann", || bob.others().len() == 1).await;
    // The state's hooks run on the client information the middleware returned.
    let mallory = Client::connect(&format!("{url}/sync"), "mallory", Some("secret"))
        .await
        .unwrap();
    let refused = mallory.connect_to_state("chat").await.unwrap_err();
    assert!(refused.to_string().contains("Not allowed"), "{refused}");
    // The app stops: its syncer closes the mounted connections with 1001, and the
    // clients try to reconnect.
    assert_eq!(syncer.disconnect_all(), 3);
    eventually("the connections are closed", || {
        syncer.connection_count() == 0 || ann.status() != ConnectionStatus::Connected
    })
    .await;
    ann.close().await;
    bob.close().await;
    mallory.close().await;
}

#[tokio::test]
async fn refusals_are_those_of_the_servers_own_listener() {
    let syncer = syncer();
    let url = app(&syncer).await;
    // The middleware refuses: 401 with its reason.
    match Client::connect(&format!("{url}/sync"), "ann", Some("wrong")).await {
        Err(Error::Refused { status, body }) => {
            assert_eq!(status, 401);
            assert!(body.contains("wrong token"), "{body}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // No identifier: 401 saying so.
    let (status, body) = raw_upgrade(&url, "/sync").await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("identifier"), "{body}");
    // A plain GET of the endpoint: 426.
    assert_eq!(http_get(&url, "/sync?identifier=ann").await.0, 426);
    // A client of the original protocol (the endpoint, then the query) works through
    // the mount too.
    let (ws, _) =
        tokio_tungstenite::connect_async(format!("{url}/sync?identifier=carol&token=secret"))
            .await
            .unwrap();
    let mut raw = RawClient::from_stream(ws);
    assert_eq!(raw.attach("chat").await["state"], json!({"messages": []}));
    raw.update(json!({"x": 1})).await;
    assert_eq!(raw.expect(3).await["updates"], json!({"x": 1}));
    tokio::time::sleep(Duration::from_millis(10)).await;
}

/// A WebSocket upgrade request without an identifier: the status and body.
async fn raw_upgrade(url: &str, path: &str) -> (u16, String) {
    let address = url.trim_start_matches("ws://").parse().unwrap();
    let answer = state_sync_tests::http_request(
        address,
        &format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade, close\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        ),
    )
    .await;
    let status = answer[9..12].parse().unwrap();
    let body = answer
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_owned());
    (status, body)
}
