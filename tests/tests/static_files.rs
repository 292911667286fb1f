//! A web app and its state syncer on one port: plain HTTP requests get files.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use state_sync_server::{StateOptions, StateSyncer};
use state_sync_tests::{RawClient, serve};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn http(addr: std::net::SocketAddr, request: &str) -> String {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tcp.read_to_end(&mut response).await.unwrap();
    String::from_utf8_lossy(&response).into_owned()
}

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
