//! The metrics a server counts, rendered by a real Prometheus recorder (installed for
//! this test binary alone: a recorder is global to a process) and served by a route on
//! the server's port, moving as clients connect and update.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::json;
use state_sync_client::Client;
use state_sync_server::{StateOptions, StateSyncer};
use state_sync_tests::{RawClient, eventually, http_get as get, prometheus_figure, serve};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_as_clients_connect_and_update() {
    // The process's recorder, installed before the server counts anything.
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .unwrap();
    let render = recorder.clone();
    let syncer = StateSyncer::builder()
        .authorize(|request| {
            std::future::ready(if request.token.as_deref() == Some("bad") {
                Err(state_sync_server::Rejection::new("bad token"))
            } else {
                Ok(())
            })
        })
        .metrics_states(["room"])
        .route("/metrics", "text/plain; version=0.0.4", move || {
            render.render()
        })
        .build();
    syncer
        .create_state(
            StateOptions::new()
                .identifier("room")
                .intercept_state_update(|update, _| {
                    (!update.set.contains_key("forbidden")).then_some(update)
                }),
        )
        .unwrap();
    syncer
        .create_state(StateOptions::new().identifier("hall"))
        .unwrap();
    let (_server, url) = serve(&syncer).await;
    let scrape = || async { get(&url, "/metrics").await.1 };
    let ann = Client::connect(&url, "ann", None).await.unwrap();
    ann.connect_to_state("room").await.unwrap();
    let bob = Client::connect(&url, "bob", None).await.unwrap();
    bob.connect_to_state("room").await.unwrap();
    let mut cy = RawClient::connect(&url, "cy", None).await;
    cy.attach("hall").await;
    let before = scrape().await;
    assert_eq!(
        prometheus_figure(&before, "state_sync_connections"),
        Some(3.0),
        "{before}"
    );
    assert_eq!(
        prometheus_figure(&before, "state_sync_states"),
        Some(2.0),
        "{before}"
    );
    assert_eq!(
        prometheus_figure(&before, r#"state_sync_clients{state="room"}"#),
        Some(2.0),
        "{before}"
    );
    assert_eq!(
        prometheus_figure(&before, r#"state_sync_clients{state="other"}"#),
        Some(1.0),
        "{before}"
    );
    // Two updates applied, each delivered to both clients of the room; one vetoed.
    ann.update_state(json!({"a": 1})).await.unwrap();
    bob.update_state(json!({"b": 2})).await.unwrap();
    assert!(ann.update_state(json!({"forbidden": 1})).await.is_err());
    // A client refused at the upgrade.
    assert!(Client::connect(&url, "eve", Some("bad")).await.is_err());
    let after = scrape().await;
    let applied = prometheus_figure(&after, "state_sync_updates_applied_total").unwrap();
    assert!(applied >= 2.0, "{after}");
    let deliveries = prometheus_figure(&after, "state_sync_deliveries_total").unwrap();
    assert!(deliveries >= 4.0, "{after}");
    assert_eq!(
        prometheus_figure(
            &after,
            r#"state_sync_updates_refused_total{reason="vetoed"}"#
        ),
        Some(1.0),
        "{after}"
    );
    assert_eq!(
        prometheus_figure(
            &after,
            r#"state_sync_handshake_refusals_total{cause="unauthorized"}"#
        ),
        Some(1.0),
        "{after}"
    );
    assert!(
        after.contains(r#"state_sync_hook_duration_seconds_count{hook="intercept_state_update"}"#)
            || after.contains(r#"state_sync_hook_duration_seconds{hook="intercept_state_update""#),
        "{after}"
    );
    // Clients leave: the gauges come down.
    ann.close().await;
    drop(cy);
    eventually("the gauges follow", || {
        let render = recorder.render();
        prometheus_figure(&render, "state_sync_connections") == Some(1.0)
            && prometheus_figure(&render, r#"state_sync_clients{state="room"}"#) == Some(1.0)
            && prometheus_figure(&render, r#"state_sync_clients{state="other"}"#) == Some(0.0)
    })
    .await;
    syncer.remove_state("room");
    eventually("a state less", || {
        let render = recorder.render();
        prometheus_figure(&render, "state_sync_states") == Some(1.0)
            && prometheus_figure(&render, r#"state_sync_clients{state="room"}"#) == Some(0.0)
    })
    .await;
}
