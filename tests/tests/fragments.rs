//! A big message (a big state's snapshot) is sent as fragments of at most 16 KiB, which
//! every client reassembles (the frames are built once, and the same bytes go to every
//! client).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::json;
use state_sync_server::{StateOptions, StateSyncer};
use state_sync_tests::http::{RAW_UPGRADE, read_answer};
use state_sync_tests::{PATIENCE, RawClient, serve};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads one unmasked server frame: FIN, opcode and payload.
async fn frame(tcp: &mut TcpStream) -> (bool, u8, Vec<u8>) {
    let first = tcp.read_u8().await.unwrap();
    let length = match tcp.read_u8().await.unwrap() & 0x7f {
        126 => usize::from(tcp.read_u16().await.unwrap()),
        127 => usize::try_from(tcp.read_u64().await.unwrap()).unwrap(),
        short => usize::from(short),
    };
    let mut payload = vec![0; length];
    tcp.read_exact(&mut payload).await.unwrap();
    (first & 0x80 != 0, first & 0x0f, payload)
}

#[tokio::test]
async fn a_big_snapshot_arrives_in_fragments_and_whole() {
    // Multi-byte characters, so that fragments end inside a character too.
    let big: String = "é€x".repeat(40_000);
    let syncer = StateSyncer::new();
    syncer
        .create_state(
            StateOptions::new()
                .identifier("big")
                .initial_value(json!({"text": big})),
        )
        .unwrap();
    let (server, url) = serve(&syncer).await;

    let mut tcp = TcpStream::connect(server.local_addr()).await.unwrap();
    tcp.write_all(RAW_UPGRADE.as_bytes()).await.unwrap();
    let (head, _) = read_answer(&mut tcp).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let attach = br#"{"type":2,"data":{"stateIdentifier":"big"}}"#;
    let mut request = vec![0x81, 0x80 | u8::try_from(attach.len()).unwrap(), 0, 0, 0, 0];
    request.extend_from_slice(attach);
    tcp.write_all(&request).await.unwrap();
    let mut message = Vec::new();
    let mut fragments = 0;
    loop {
        let (fin, opcode, payload) = tokio::time::timeout(PATIENCE, frame(&mut tcp))
            .await
            .expect("the snapshot");
        assert_eq!(
            opcode,
            if fragments == 0 { 0x1 } else { 0x0 },
            "text, then continuations"
        );
        assert!(
            payload.len() <= 16 * 1024,
            "{} bytes in one frame",
            payload.len()
        );
        message.extend_from_slice(&payload);
        fragments += 1;
        if fin {
            break;
        }
    }
    assert!(fragments >= 12, "{fragments} fragments");
    let snapshot: serde_json::Value = serde_json::from_slice(&message).expect("whole JSON");
    assert_eq!(snapshot["type"], 7);
    assert_eq!(snapshot["data"]["state"]["text"], json!(big));

    // A WebSocket library reassembles them as one message; small frames stay whole.
    let mut client = RawClient::connect(&url, "reader", None).await;
    let established = client.attach("big").await;
    assert_eq!(established["state"]["text"], json!(big));
    client.update(json!({"small": 1})).await;
    let echo = client.expect(3).await;
    assert_eq!(echo["updates"]["small"], 1);
    server.shutdown().await;
}
