//! Bursts: a client that reads is never dropped because another one sends fast, and
//! states have a size limit.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use state_sync_server::{CreateStateError, StateOptions, StateSyncer, UpdateError};
use state_sync_tests::{PATIENCE, RawClient, attached_socket, serve, serve_states};
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn attached(url: &str, name: &str) -> Ws {
    attached_socket(url, name, "s").await.0
}

/// Reads until `count` updates arrived; fails on a close or anything else.
async fn read_updates(mut stream: futures_util::stream::SplitStream<Ws>, count: usize) -> usize {
    let mut received = 0;
    while received < count {
        let frame = tokio::time::timeout(PATIENCE * 3, stream.next())
            .await
            .expect("updates keep coming")
            .expect("not closed")
            .expect("no error");
        match frame {
            Message::Text(text) => {
                let value: Value = serde_json::from_str(text.as_str()).unwrap();
                assert_eq!(value["type"], 3, "{value}");
                received += 1;
            }
            Message::Close(frame) => panic!("closed after {received} updates: {frame:?}"),
            _ => {}
        }
    }
    received
}

/// `senders` clients each pipeline `burst` updates of about 60 bytes at once, while
/// `readers` more clients only read; everyone must receive every update.
async fn burst(senders: usize, readers: usize, burst: usize) {
    let (syncer, server, url) = serve_states(&["s"]).await;
    let total = senders * burst;
    let mut tasks = Vec::new();
    for r in 0..readers {
        let (_, stream) = attached(&url, &format!("reader{r}")).await.split();
        tasks.push(tokio::spawn(read_updates(stream, total)));
    }
    let mut sinks = Vec::new();
    for s in 0..senders {
        let (sink, stream) = attached(&url, &format!("sender{s}")).await.split();
        tasks.push(tokio::spawn(read_updates(stream, total)));
        sinks.push(sink);
    }
    let sending: Vec<_> = sinks
        .into_iter()
        .enumerate()
        .map(|(s, mut sink)| {
            tokio::spawn(async move {
                for q in 0..burst {
                    let update = json!({"type": 3, "data": {"updates": {format!("k{s}"): q, "p": "xxxxxxxxxxxx"}}});
                    sink.feed(Message::text(update.to_string())).await.unwrap();
                }
                sink.flush().await.unwrap();
                sink
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), total);
    }
    for sender in sending {
        drop(sender.await.unwrap());
    }
    assert_eq!(syncer.version_of_state("s"), Some(total as u64));
    server.shutdown().await;
}

#[tokio::test]
async fn a_burst_of_10000_from_one_sender_keeps_every_reading_client() {
    burst(1, 10, 10_000).await;
}

#[tokio::test]
async fn bursts_of_200_from_32_clients_at_once_all_land_everywhere() {
    burst(32, 0, 200).await;
}

#[tokio::test]
async fn a_state_cannot_grow_past_its_size_limit() {
    let syncer = StateSyncer::builder().max_state_bytes(10_000).build();
    syncer
        .create_state(StateOptions::new().identifier("s"))
        .unwrap();
    assert!(matches!(
        syncer.create_state(
            StateOptions::new()
                .identifier("big")
                .initial_value(json!({"k": "x".repeat(20_000)}))
        ),
        Err(CreateStateError::InitialValueTooLarge { limit: 10_000, .. })
    ));
    let (server, url) = serve(&syncer).await;
    let mut client = RawClient::connect(&url, "c", None).await;
    client.attach("s").await;
    client.update(json!({"a": "x".repeat(6_000)})).await;
    client.expect(3).await;
    client
        .send(json!({"type": 3, "data": {"updates": {"b": "y".repeat(6_000)}, "requestId": 7}}))
        .await;
    let failed = client.expect(9).await;
    assert_eq!(failed["reason"], "stateTooLarge", "{failed}");
    assert!(
        failed["message"]
            .as_str()
            .unwrap()
            .contains("over its limit of 10000 bytes"),
        "{failed}"
    );
    // Replacing a key with a smaller value is fine, and shrinking makes room.
    client.update(json!({"a": "z".repeat(3_000)})).await;
    client.expect(3).await;
    client.update(json!({"b": "y".repeat(6_000)})).await;
    client.expect(3).await;
    assert_eq!(syncer.version_of_state("s"), Some(3));
    assert!(matches!(
        syncer
            .update_state_value("s", json!({"c": "w".repeat(5_000)}), None)
            .await,
        Err(UpdateError::StateTooLarge { limit: 10_000, .. })
    ));
    server.shutdown().await;
}

#[tokio::test]
async fn clients_attaching_while_updates_stream_see_each_update_once_after_their_snapshot() {
    let (syncer, server, url) = serve_states(&["s"]).await;
    syncer
        .update_state_value("s", json!({"big": "x".repeat(500_000)}), None)
        .await
        .unwrap();
    let writer = {
        let syncer = syncer.clone();
        tokio::spawn(async move {
            for n in 0..300 {
                syncer
                    .update_state_value("s", json!({ "n": n }), None)
                    .await
                    .unwrap();
                tokio::task::yield_now().await;
            }
        })
    };
    for c in 0..6 {
        let mut client = RawClient::connect(&url, &format!("c{c}"), None).await;
        let snapshot = client.attach("s").await;
        let mut version = snapshot["version"].as_u64().unwrap();
        // Every update after the snapshot, once and in order, up to the last one.
        while version < 301 {
            let update = client.expect(3).await;
            assert_eq!(update["version"], version + 1, "{update}");
            version += 1;
        }
    }
    writer.await.unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn keys_keep_the_order_they_were_written_in() {
    let (_syncer, server, url) = serve_states(&["s"]).await;
    let mut client = RawClient::connect(&url, "c", None).await;
    client.attach("s").await;
    client
        .send_text(r#"{"type":3,"data":{"updates":{"sender":"a","content":"hi","at":1}}}"#)
        .await;
    let broadcast = client.next_text().await;
    assert_eq!(
        broadcast,
        r#"{"type":3,"data":{"updates":{"sender":"a","content":"hi","at":1},"version":1}}"#
    );
    client
        .send_text(r#"{"type":2,"data":{"stateIdentifier":"s"}}"#)
        .await;
    assert_eq!(
        client.next_text().await,
        r#"{"type":7,"data":{"state":{"sender":"a","content":"hi","at":1},"version":1}}"#
    );
    server.shutdown().await;
}
