//! Durable states: what an acknowledged update leaves on disk survives the server,
//! real files in a temporary directory.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;
use state_sync_server::{Error, StateOptions, StateSyncer, Storage};
use state_sync_tests::{RawClient, serve};

fn data_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "state-sync-durable-{name}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn durable_syncer(dir: &PathBuf) -> StateSyncer {
    StateSyncer::builder()
        .storage(Storage::open(dir).unwrap())
        .build()
}

/// State `s` on `syncer`, served, and eight clients attached to it (with `session`).
async fn eight_clients_of_s(
    syncer: &StateSyncer,
    session: Option<&str>,
) -> (state_sync_server::Server, Vec<RawClient>) {
    syncer
        .create_state(StateOptions::new().identifier("s"))
        .unwrap();
    let (server, url) = serve(syncer).await;
    let mut clients = Vec::new();
    for c in 0..8 {
        let mut client = RawClient::connect(&url, &format!("c{c}"), None).await;
        match session {
            Some(session) => client.attach_session("s", session).await,
            None => client.attach("s").await,
        };
        clients.push(client);
    }
    (server, clients)
}

#[tokio::test]
async fn states_their_versions_order_and_sessions_come_back_after_a_restart() {
    let dir = data_dir("restart");
    {
        let syncer = durable_syncer(&dir);
        syncer
            .create_state(
                StateOptions::new()
                    .identifier("chat")
                    .initial_value(json!({"title": "t", "messages": []})),
            )
            .unwrap();
        let (server, url) = serve(&syncer).await;
        let mut client = RawClient::connect(&url, "alice", None).await;
        client.attach_session("chat", "s1").await;
        for (id, text) in [(1, "one"), (2, "two"), (3, "three")] {
            client
                .update_with_id(json!({"messages": [text], "zeta": id, "alpha": id}), id)
                .await;
            assert_eq!(client.expect(3).await["requestId"], id);
        }
        server.shutdown().await;
        syncer.sync().await.unwrap();
        syncer.close_storage();
    }
    let syncer = durable_syncer(&dir);
    // Declared again at start-up: the stored state wins over the initial value.
    syncer
        .create_state(
            StateOptions::new()
                .identifier("chat")
                .initial_value(json!({"title": "new"})),
        )
        .unwrap();
    assert_eq!(syncer.version_of_state("chat"), Some(3));
    let value = syncer.value_of_state("chat").unwrap();
    assert_eq!(
        serde_json::to_string(&value).unwrap(),
        r#"{"title":"t","messages":["three"],"zeta":3,"alpha":3}"#,
        "keys keep their order"
    );
    let (server, url) = serve(&syncer).await;
    let mut client = RawClient::connect(&url, "alice", None).await;
    assert_eq!(client.attach_session("chat", "s1").await["version"], 3);
    // A retry across the restart is answered, not applied again.
    client
        .update_with_id(json!({"messages": ["three"], "zeta": 3, "alpha": 3}), 3)
        .await;
    assert_eq!(
        client.expect(3).await,
        json!({"updates": {}, "version": 3, "requestId": 3})
    );
    client.update_with_id(json!({"n": 1}), 4).await;
    assert_eq!(client.expect(3).await["version"], 4);
    server.shutdown().await;
    syncer.close_storage();
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn removal_ttl_and_reset_are_saved_too() {
    let dir = data_dir("lifecycle");
    {
        let syncer = durable_syncer(&dir);
        for id in ["kept", "removed"] {
            syncer
                .create_state(StateOptions::new().identifier(id))
                .unwrap();
            syncer
                .update_state_value(id, json!({"k": id}), None)
                .await
                .unwrap();
        }
        syncer
            .create_state(
                StateOptions::new()
                    .identifier("short")
                    .ttl(Duration::from_millis(300)),
            )
            .unwrap();
        syncer
            .update_state_value("short", json!({"k": 1}), None)
            .await
            .unwrap();
        assert!(syncer.remove_state("removed"));
        syncer.sync().await.unwrap();
        syncer.close_storage();
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    let syncer = durable_syncer(&dir);
    for id in ["kept", "removed", "short"] {
        syncer
            .create_state(StateOptions::new().identifier(id))
            .unwrap();
    }
    assert_eq!(syncer.value_of_state("kept").unwrap()["k"], "kept");
    assert_eq!(
        syncer.version_of_state("removed"),
        Some(0),
        "removed stays removed"
    );
    assert_eq!(
        syncer.version_of_state("short"),
        Some(0),
        "expired while down"
    );
    syncer.remove_all_states();
    syncer
        .create_state(StateOptions::new().identifier("kept"))
        .unwrap();
    assert_eq!(
        syncer.version_of_state("kept"),
        Some(0),
        "remove_all is saved"
    );
    syncer
        .update_state_value("kept", json!({"again": true}), None)
        .await
        .unwrap();
    syncer.remove_all_states();
    syncer
        .create_state(
            StateOptions::new()
                .identifier("kept")
                .initial_value(json!({"fresh": 1}))
                .reset_stored(true),
        )
        .unwrap();
    assert_eq!(
        json!(syncer.value_of_state("kept").unwrap()),
        json!({"fresh": 1})
    );
    syncer.close_storage();
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn an_unusable_directory_is_a_clear_error() {
    let dir = data_dir("bad");
    // A path under a regular file.
    let file = dir.join("file");
    std::fs::write(&file, "x").unwrap();
    let error = Storage::open(file.join("data")).unwrap_err();
    assert!(matches!(error, Error::Storage(_)));
    assert!(error.to_string().contains("file/data"), "{error}");
    // In use by another server.
    let held = dir.join("held");
    let first = Storage::open(&held).unwrap();
    let error = Storage::open(&held).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("in use by another running server"),
        "{error}"
    );
    drop(first);
    // A corrupt or truncated file.
    let corrupt = dir.join("corrupt");
    std::fs::create_dir_all(&corrupt).unwrap();
    std::fs::write(
        corrupt.join("state-sync.redb"),
        b"definitely not a database",
    )
    .unwrap();
    let error = Storage::open(&corrupt).unwrap_err();
    assert!(error.to_string().contains("state-sync.redb"), "{error}");
    // A store written by a newer version.
    let newer = dir.join("newer");
    drop(Storage::open(&newer).unwrap());
    {
        let db = redb::Database::create(newer.join("state-sync.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(redb::TableDefinition::<&str, u64>::new("meta"))
            .unwrap()
            .insert("format", 99)
            .unwrap();
        txn.commit().unwrap();
    }
    let error = Storage::open(&newer).unwrap_err();
    assert!(
        error.to_string().contains("newer than this server"),
        "{error}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn an_update_is_acknowledged_once_saved_and_many_share_a_commit() {
    let dir = data_dir("group");
    let syncer = durable_syncer(&dir);
    let (server, mut clients) = eight_clients_of_s(&syncer, Some("x")).await;
    let started = std::time::Instant::now();
    for (c, client) in clients.iter_mut().enumerate() {
        for id in 1..=50 {
            client
                .update_with_id(json!({ format!("k{c}"): id }), id)
                .await;
        }
    }
    for client in &mut clients {
        let mut acknowledged = 0;
        while acknowledged < 50 {
            let frame = client.recv().await;
            if frame["data"]["requestId"].is_u64() {
                acknowledged += 1;
            }
        }
    }
    // 400 fsynced updates one by one would take several seconds here.
    println!("400 durable updates in {:?}", started.elapsed());
    assert_eq!(syncer.version_of_state("s"), Some(400));
    server.shutdown().await;
    syncer.close_storage();
    let reopened = durable_syncer(&dir);
    reopened
        .create_state(StateOptions::new().identifier("s"))
        .unwrap();
    assert_eq!(reopened.version_of_state("s"), Some(400));
    reopened.close_storage();
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn write_behind_acknowledges_before_the_fsync_and_still_saves() {
    use state_sync_server::Durability;
    let dir = data_dir("behind");
    {
        let storage =
            Storage::open_with(&dir, Durability::WriteBehind(Duration::from_millis(50))).unwrap();
        let syncer = StateSyncer::builder().storage(storage.clone()).build();
        syncer
            .create_state(StateOptions::new().identifier("s"))
            .unwrap();
        for n in 1..=100 {
            syncer
                .update_state_value("s", json!({ "n": n }), None)
                .await
                .unwrap();
        }
        // Acknowledged without an fsync each: far fewer fsyncs than commits.
        assert!(storage.stats().commits >= 1);
        tokio::time::sleep(Duration::from_millis(150)).await;
        syncer.close_storage();
    }
    let syncer = durable_syncer(&dir);
    syncer
        .create_state(StateOptions::new().identifier("s"))
        .unwrap();
    assert_eq!(syncer.value_of_state("s").unwrap()["n"], 100);
    assert_eq!(syncer.version_of_state("s"), Some(100));
    syncer.close_storage();
    std::fs::remove_dir_all(dir).unwrap();
}

/// A burst into a durable state: its broadcasts wait for the disk and are queued
/// together when a commit lands. Were many updates allowed to wait, one commit would
/// fill a reader's outgoing queue past its bound at once and close it (seen as a rare
/// benchmark failure); senders wait for the disk once a quarter of a queue waits.
#[tokio::test]
async fn a_burst_into_a_durable_state_overflows_no_reader() {
    let dir = data_dir("burst");
    let syncer = StateSyncer::builder()
        .storage(Storage::open(&dir).unwrap())
        .outgoing_queue(64)
        .build();
    let (server, mut clients) = eight_clients_of_s(&syncer, None).await;
    // Every client sends its 100 updates at once, then reads.
    for (c, client) in clients.iter_mut().enumerate() {
        for q in 0..100 {
            client.update(json!({ format!("k{c}"): q })).await;
        }
    }
    for (c, client) in clients.iter_mut().enumerate() {
        let mut received = 0;
        while received < 800 {
            match client.next().await {
                state_sync_tests::Received::Json(frame) if frame["type"] == 3 => received += 1,
                state_sync_tests::Received::Json(_) => {}
                state_sync_tests::Received::Closed(close) => {
                    panic!("client {c} closed after {received} of 800 updates: {close:?}")
                }
            }
        }
    }
    assert_eq!(syncer.version_of_state("s"), Some(800));
    server.shutdown().await;
    syncer.close_storage();
    std::fs::remove_dir_all(dir).unwrap();
}
