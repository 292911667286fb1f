//! Review probes: session logs (quotas, byte budgets, lastSent).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use serde_json::json;
use state_sync_server::{StateOptions, StateSyncer};
use state_sync_tests::{RawClient, eventually, serve, serve_states};

/// Opens `count` connections, each with its own identifier, each attaching to `state`
/// with one session and closing again (so its session is left without a connection).
async fn flood_identifiers(url: &str, state: &str, count: usize) {
    let mut handles = Vec::new();
    for batch in 0..count.div_ceil(64) {
        for i in 0..64 {
            let n = batch * 64 + i;
            if n >= count {
                break;
            }
            let url = url.to_owned();
            let state = state.to_owned();
            handles.push(tokio::spawn(async move {
                let mut c = RawClient::connect(&url, &format!("m{n}"), None).await;
                c.attach_session(&state, "s").await;
            }));
        }
        for h in handles.drain(..) {
            h.await.unwrap();
        }
    }
}

/// A victim with two sessions without a connection is the "biggest client" once an
/// attacker uses many (unauthenticated) identifiers of one session each: the victim's
/// sessions go first. Its retry, with the `lastSent` every client of this project
/// sends, is then answered `outcomeUnknown`: never applied a second time.
#[tokio::test]
async fn many_identifiers_can_push_out_a_session_but_never_make_a_retry_apply_twice() {
    let (syncer, server, url) = serve_states(&["s"]).await;
    for session in ["v1", "v2"] {
        let mut victim = RawClient::connect(&url, "victim", None).await;
        victim.attach_session("s", session).await;
        victim.update_with_id(json!({ session: 1 }), 1).await;
        victim.expect(3).await;
    }
    eventually("victims detached", || {
        syncer.clients_of_state("s") == Some(0)
    })
    .await;
    let version = syncer.version_of_state("s").unwrap();
    assert_eq!(version, 2);

    flood_identifiers(&url, "s", 4_200).await;
    eventually("flood detached", || syncer.clients_of_state("s") == Some(0)).await;

    // The victim reconnects and retries request 1 of session v1, saying it sent it.
    let mut victim = RawClient::connect(&url, "victim", None).await;
    victim
        .send(json!({"type": 2, "data": {"stateIdentifier": "s", "session": "v1", "lastSent": 1}}))
        .await;
    victim.expect(7).await;
    victim.update_with_id(json!({"v1": 1}), 1).await;
    let answer = victim.recv().await;
    let version_after = syncer.version_of_state("s").unwrap();
    assert_eq!(version_after, 2, "never applied twice: {answer}");
    assert!(
        (answer["type"] == 3 && answer["data"]["version"] == 1)
            || answer["data"]["reason"] == "outcomeUnknown",
        "its first outcome, or outcomeUnknown: {answer}"
    );
    server.shutdown().await;
}

/// The server-wide counter of kept answer bytes returns to 0 when every state is
/// removed, after rotations out of the window, trims by both budgets, forgotten
/// sessions and re-created states.
#[tokio::test]
async fn the_servers_log_byte_counter_does_not_drift() {
    let syncer = StateSyncer::builder()
        .session_log_bytes_per_state(6_000)
        .session_log_bytes(10_000)
        .session_retention(Duration::from_millis(50))
        .build();
    for id in ["a", "b", "c"] {
        syncer
            .create_state(StateOptions::new().identifier(id))
            .unwrap();
    }
    let (server, url) = serve(&syncer).await;
    for round in 0..2 {
        for id in ["a", "b", "c"] {
            for session in 0..3 {
                let mut c = RawClient::connect(&url, &format!("c{session}"), None).await;
                c.attach_session(id, &format!("s{round}-{session}")).await;
                for r in 1..=300u64 {
                    let pad = "x".repeat((r as usize * 7) % 90);
                    c.update_with_id(json!({ "k": pad }), r).await;
                }
                for _ in 1..=300 {
                    c.expect(3).await;
                }
                assert!(syncer.session_log_bytes() <= 10_000 + 200);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        // Forgotten sessions (retention is over) release their frames.
        let mut c = RawClient::connect(&url, "late", None).await;
        c.attach_session("a", &format!("late{round}")).await;
        drop(c);
        // Re-create one state.
        syncer.remove_state("b");
        syncer
            .create_state(StateOptions::new().identifier("b"))
            .unwrap();
    }
    syncer.remove_all_states();
    assert_eq!(
        syncer.session_log_bytes(),
        0,
        "nothing kept once every state is gone"
    );
    server.shutdown().await;
}

/// A huge lastSent only wedges the session that sent it.
#[tokio::test]
async fn a_huge_last_sent_wedges_only_its_own_session() {
    let (syncer, server, url) = serve_states(&["s"]).await;
    let mut evil = RawClient::connect(&url, "c", None).await;
    evil.send(
        json!({"type": 2, "data": {"stateIdentifier": "s", "session": "x", "lastSent": u64::MAX}}),
    )
    .await;
    evil.expect(7).await;
    evil.update_with_id(json!({"n": 1}), 5).await;
    assert_eq!(evil.expect(9).await["reason"], "outcomeUnknown");
    // Same identifier, another session; another identifier, the same session id.
    let mut other = RawClient::connect(&url, "c", None).await;
    other.attach_session("s", "y").await;
    other.update_with_id(json!({"n": 2}), 5).await;
    assert_eq!(other.expect(3).await["requestId"], 5);
    let mut third = RawClient::connect(&url, "d", None).await;
    third.attach_session("s", "x").await;
    third.update_with_id(json!({"n": 3}), 5).await;
    assert_eq!(third.expect(3).await["requestId"], 5);
    assert_eq!(syncer.version_of_state("s"), Some(2));
    server.shutdown().await;
}
