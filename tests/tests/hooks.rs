//! The authorization middleware and the state hooks, including hooks that misbehave.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use state_sync_server::{Rejection, StateOptions, StateSyncer, UpdateError};
use state_sync_tests::{RawClient, serve, vetoing_state};
use tokio_tungstenite::tungstenite;

#[derive(Debug, Clone, PartialEq)]
struct User {
    name: String,
    admin: bool,
}

fn syncer_with_auth() -> StateSyncer<User> {
    StateSyncer::builder()
        .authorize(|request| async move {
            match request.token.as_deref() {
                Some("admin-token") => Ok(User {
                    name: request.identifier,
                    admin: true,
                }),
                Some("user-token") => Ok(User {
                    name: request.identifier,
                    admin: false,
                }),
                _ => Err(Rejection::new("invalid token")),
            }
        })
        .hook_timeout(Duration::from_millis(500))
        .build()
}

fn http_status(error: tungstenite::Error) -> (u16, String) {
    match error {
        tungstenite::Error::Http(response) => {
            let body = response
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            (response.status().as_u16(), body)
        }
        other => panic!("expected an HTTP error, got {other}"),
    }
}

#[tokio::test]
async fn the_middleware_refuses_with_401_before_the_upgrade() {
    let syncer = syncer_with_auth();
    let (server, url) = serve(&syncer).await;
    let error = RawClient::try_connect(&url, "eve", Some("wrong"))
        .await
        .err()
        .expect("refused");
    assert_eq!(http_status(error), (401, "invalid token\n".to_owned()));
    let error = RawClient::try_connect(&url, "eve", None)
        .await
        .err()
        .expect("refused");
    assert_eq!(http_status(error).0, 401);
    server.shutdown().await;
}

#[tokio::test]
async fn a_missing_identifier_is_refused_with_401() {
    let syncer = StateSyncer::new();
    let (server, url) = serve(&syncer).await;
    let error = tokio_tungstenite::connect_async(format!("{url}/?token=x"))
        .await
        .expect_err("refused");
    let (status, body) = http_status(error);
    assert_eq!(status, 401);
    assert!(body.contains("identifier"), "{body}");
    server.shutdown().await;
}

#[tokio::test]
async fn client_information_reaches_the_hooks() {
    let syncer = syncer_with_auth();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen_by_hook = Arc::clone(&seen);
    syncer
        .create_state(
            StateOptions::new()
                .identifier("admins")
                .allow_connecting_client(|user: &User| user.admin)
                .intercept_state_update(move |mut updates, user| {
                    let user = user.expect("sent by a client");
                    seen_by_hook.lock().unwrap().push(user.clone());
                    updates.set.insert("by".into(), json!(user.name));
                    Some(updates)
                }),
        )
        .unwrap();
    let (server, url) = serve(&syncer).await;
    let mut admin = RawClient::connect(&url, "ada", Some("admin-token")).await;
    admin.attach("admins").await;
    admin.update(json!({"text": "hi"})).await;
    assert_eq!(
        admin.expect(3).await["updates"],
        json!({"text": "hi", "by": "ada"}),
        "the interceptor rewrote it"
    );
    assert_eq!(
        *seen.lock().unwrap(),
        vec![User {
            name: "ada".into(),
            admin: true
        }]
    );

    let mut user = RawClient::connect(&url, "bob", Some("user-token")).await;
    user.send(json!({"type": 2, "data": {"stateIdentifier": "admins"}}))
        .await;
    assert_eq!(
        user.expect(8).await,
        json!({"message": "Not allowed to connect to this state"})
    );
    assert_eq!(syncer.clients_of_state("admins"), Some(1));
    server.shutdown().await;
}

#[tokio::test]
async fn a_veto_is_silent_for_original_clients_and_reported_to_clients_with_a_request_id() {
    let syncer = StateSyncer::new();
    syncer.create_state(vetoing_state("s")).unwrap();
    let (server, url) = serve(&syncer).await;
    let mut client = RawClient::connect(&url, "a", None).await;
    let mut watcher = RawClient::connect(&url, "w", None).await;
    client.attach("s").await;
    watcher.attach("s").await;
    client.update(json!({"forbidden": 1})).await;
    client
        .send(json!({"type": 3, "data": {"updates": {"forbidden": 2}, "requestId": 5}}))
        .await;
    assert_eq!(
        client.expect(9).await,
        json!({"message": "Update vetoed by the server", "requestId": 5, "reason": "vetoed"}),
        "only the update with a request id is answered"
    );
    client.update(json!({"allowed": 1})).await;
    assert_eq!(client.expect(3).await["updates"], json!({"allowed": 1}));
    assert_eq!(
        watcher.expect(3).await,
        json!({"updates": {"allowed": 1}, "version": 1}),
        "vetoed updates are not broadcast"
    );
    assert_eq!(
        json!(syncer.value_of_state("s").unwrap()),
        json!({"allowed": 1})
    );
    assert_eq!(
        syncer
            .update_state_value("s", json!({"forbidden": 0}), None)
            .await,
        Err(UpdateError::Vetoed)
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_panicking_or_hanging_hook_fails_one_operation_and_the_server_carries_on() {
    let syncer = StateSyncer::builder()
        // Long enough that a panicking hook is reported as a panic even on a loaded
        // machine (spawning onto the blocking pool can take a while there); the hanging
        // hook sleeps a little longer than this.
        .hook_timeout(Duration::from_secs(2))
        .build();
    syncer
        .create_state(
            StateOptions::new()
                .identifier("panics")
                .intercept_state_update(|updates, _| {
                    if updates.set.contains_key("boom") {
                        panic!("interceptor exploded");
                    }
                    Some(updates)
                }),
        )
        .unwrap();
    syncer
        .create_state(
            StateOptions::new()
                .identifier("hangs")
                .intercept_state_update(|updates, _| {
                    if updates.set.contains_key("sleep") {
                        std::thread::sleep(Duration::from_millis(2500));
                    }
                    Some(updates)
                }),
        )
        .unwrap();
    syncer
        .create_state(
            StateOptions::new()
                .identifier("refuses")
                .allow_connecting_client(|_| panic!("allow exploded")),
        )
        .unwrap();
    let (server, url) = serve(&syncer).await;
    let mut client = RawClient::connect(&url, "a", None).await;
    client.attach("panics").await;
    client
        .send(json!({"type": 3, "data": {"updates": {"boom": 1}, "requestId": 1}}))
        .await;
    let failed = client.expect(9).await;
    assert_eq!(failed["reason"], "interceptorFailed");
    assert!(
        failed["message"]
            .as_str()
            .unwrap()
            .contains("interceptor exploded"),
        "{failed}"
    );
    client.update(json!({"fine": 1})).await;
    assert_eq!(client.expect(3).await["updates"], json!({"fine": 1}));

    client.attach("hangs").await;
    client.update(json!({"sleep": 1})).await;
    let failed = client.expect(9).await;
    assert!(
        failed["message"]
            .as_str()
            .unwrap()
            .contains("did not return within"),
        "{failed}"
    );
    client.update(json!({"fine": 2})).await;
    assert_eq!(client.expect(3).await["updates"], json!({"fine": 2}));

    client
        .send(json!({"type": 2, "data": {"stateIdentifier": "refuses"}}))
        .await;
    let refused = client.expect(8).await;
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("allow exploded"),
        "{refused}"
    );

    let mut other = RawClient::connect(&url, "b", None).await;
    other.attach("panics").await;
    assert_eq!(syncer.value_of_state("panics").unwrap()["fine"], json!(1));
    server.shutdown().await;
}

#[tokio::test]
async fn a_panicking_middleware_refuses_with_500_and_the_server_carries_on() {
    let syncer = StateSyncer::builder()
        .authorize(|request| async move {
            if request.identifier == "crash" {
                panic!("middleware exploded");
            }
            Ok(request.identifier)
        })
        .build();
    let (server, url) = serve(&syncer).await;
    let error = RawClient::try_connect(&url, "crash", None)
        .await
        .err()
        .expect("refused");
    assert_eq!(http_status(error).0, 500);
    RawClient::connect(&url, "fine", None).await;
    server.shutdown().await;
}
