//! A web app and its state syncer on one port: plain HTTP requests get files.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use state_sync_server::{StateOptions, StateSyncer};
use state_sync_tests::{RawClient, serve};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use state_sync_tests::http_request as http;

#[tokio::test]
async fn files_and_websockets_share_the_port() {
    let root = std::env::temp_dir().join(format!("state-sync-static-{}", std::process::id()));
    std::fs::create_dir_all(root.join("assets")).unwrap();
    std::fs::write(root.join("index.html"), "<h1>chat</h1>").unwrap();
    std::fs::write(root.join("assets/app.wasm"), b"\0asm").unwrap();
    let syncer = StateSyncer::builder().static_files(&root).build();
    syncer
        .create_state(StateOptions::new().identifier("s"))
        .unwrap();
    let (server, url) = serve(&syncer).await;
    let addr = server.local_addr();

    let index = http(addr, "GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(index.starts_with("HTTP/1.1 200 OK"), "{index}");
    assert!(
        index.contains("text/html") && index.ends_with("<h1>chat</h1>"),
        "{index}"
    );
    let route = http(addr, "GET /rooms/42 HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(
        route.ends_with("<h1>chat</h1>"),
        "client-side routes get index.html"
    );
    let wasm = http(addr, "GET /assets/app.wasm HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(wasm.contains("Content-Type: application/wasm"), "{wasm}");
    let head = http(addr, "HEAD /assets/app.wasm HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(
        head.starts_with("HTTP/1.1 200 OK") && head.ends_with("\r\n\r\n"),
        "no body: {head}"
    );
    let escape = http(addr, "GET /../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(escape.starts_with("HTTP/1.1 404"), "{escape}");
    let missing = http(addr, "GET /missing.js HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
    let post = http(
        addr,
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    )
    .await;
    assert!(post.starts_with("HTTP/1.1 405"), "{post}");

    let mut client = RawClient::connect(&url, "a", None).await;
    client.attach("s").await;
    server.shutdown().await;
    std::fs::remove_dir_all(root).unwrap();
}

#[tokio::test]
async fn a_symlink_out_of_the_folder_is_not_followed() {
    let base = std::env::temp_dir().join(format!("state-sync-symlink-{}", std::process::id()));
    let root = base.join("www");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(base.join("secret.txt"), "secret").unwrap();
    std::fs::write(root.join("index.html"), "<h1>app</h1>").unwrap();
    std::os::unix::fs::symlink(base.join("secret.txt"), root.join("leak.txt")).unwrap();
    std::os::unix::fs::symlink(root.join("index.html"), root.join("inside.html")).unwrap();
    let syncer = StateSyncer::builder().static_files(&root).build();
    let (server, _) = serve(&syncer).await;
    let addr = server.local_addr();
    let leak = http(addr, "GET /leak.txt HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(leak.starts_with("HTTP/1.1 404"), "{leak}");
    assert!(!leak.contains("secret"));
    for escape in ["/%2e%2e/secret.txt", "/..%2fsecret.txt", "/..\\secret.txt"] {
        let answer = http(addr, &format!("GET {escape} HTTP/1.1\r\nHost: x\r\n\r\n")).await;
        assert!(!answer.contains("secret"), "{escape}: {answer}");
    }
    let inside = http(addr, "GET /inside.html HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(
        inside.ends_with("<h1>app</h1>"),
        "links inside are fine: {inside}"
    );
    server.shutdown().await;
    std::fs::remove_dir_all(base).unwrap();
}

#[tokio::test]
async fn a_slow_download_outlasts_the_handshake_timeout() {
    let root = std::env::temp_dir().join(format!("state-sync-slow-{}", std::process::id()));
    std::fs::create_dir_all(&root).unwrap();
    let big = vec![b'x'; 8 << 20];
    std::fs::write(root.join("big.bin"), &big).unwrap();
    let syncer = StateSyncer::builder()
        .static_files(&root)
        .handshake_timeout(std::time::Duration::from_millis(300))
        .build();
    let (server, _) = serve(&syncer).await;
    let mut tcp = tokio::net::TcpStream::connect(server.local_addr())
        .await
        .unwrap();
    tcp.write_all(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    // Read slowly: 8 MiB over more than a second, well past the handshake timeout.
    let mut received = Vec::new();
    let mut chunk = vec![0; 256 * 1024];
    loop {
        let read = tcp.read(&mut chunk).await.unwrap();
        if read == 0 {
            break;
        }
        received.extend_from_slice(&chunk[..read]);
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    }
    let body_start = received.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert_eq!(received.len() - body_start, big.len(), "the whole file");
    server.shutdown().await;
    std::fs::remove_dir_all(root).unwrap();
}
