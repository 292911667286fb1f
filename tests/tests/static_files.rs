//! A web app and its state syncer on one port: plain HTTP requests get files.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use state_sync_server::{StateOptions, StateSyncer};
use state_sync_tests::{RawClient, serve};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use state_sync_tests::http::header;
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

#[tokio::test]
async fn ranges_etags_and_precompressed_files() {
    let root = std::env::temp_dir().join(format!("state-sync-etag-{}", std::process::id()));
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("index.html"), "<h1>app</h1>").unwrap();
    std::fs::write(root.join("data.txt"), "0123456789").unwrap();
    std::fs::write(root.join("app.js"), "console.log('plain')").unwrap();
    std::fs::write(root.join("app.js.gz"), b"\x1f\x8bGZIPPED").unwrap();
    std::fs::write(root.join("app.js.br"), b"BROTLI").unwrap();
    let syncer = StateSyncer::builder().static_files(&root).build();
    let (server, _) = serve(&syncer).await;
    let addr = server.local_addr();
    let get = |path: &str, extra: &str| {
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n{extra}\r\n");
        async move { http(addr, &request).await }
    };

    // A byte range.
    let range = get("/data.txt", "Range: bytes=2-5\r\n").await;
    assert!(range.starts_with("HTTP/1.1 206"), "{range}");
    assert_eq!(header(&range, "content-range"), Some("bytes 2-5/10"));
    assert!(range.ends_with("\r\n\r\n2345"), "{range}");
    let unsatisfiable = get("/data.txt", "Range: bytes=50-60\r\n").await;
    assert!(unsatisfiable.starts_with("HTTP/1.1 416"), "{unsatisfiable}");

    // ETag and If-None-Match: 304 without a body while the file is the same.
    let whole = get("/data.txt", "").await;
    assert!(whole.starts_with("HTTP/1.1 200"), "{whole}");
    assert!(whole.ends_with("0123456789"), "{whole}");
    let etag = header(&whole, "etag").expect("an ETag").to_owned();
    assert!(
        etag.starts_with('"') && etag.ends_with('"'),
        "strong: {etag}"
    );
    assert_eq!(header(&whole, "accept-ranges"), Some("bytes"));
    assert!(header(&whole, "last-modified").is_some(), "{whole}");
    let cached = get("/data.txt", &format!("If-None-Match: {etag}\r\n")).await;
    assert!(cached.starts_with("HTTP/1.1 304"), "{cached}");
    assert!(cached.ends_with("\r\n\r\n"), "no body: {cached}");
    assert_eq!(header(&cached, "etag"), Some(etag.as_str()));
    let weak = get("/data.txt", &format!("If-None-Match: \"x\", W/{etag}\r\n")).await;
    assert!(weak.starts_with("HTTP/1.1 304"), "weak comparison: {weak}");
    // If-Modified-Since does not overrule an If-None-Match that differs.
    let modified = header(&whole, "last-modified").unwrap().to_owned();
    let stale = get(
        "/data.txt",
        &format!("If-None-Match: \"old\"\r\nIf-Modified-Since: {modified}\r\n"),
    )
    .await;
    assert!(stale.starts_with("HTTP/1.1 200"), "{stale}");

    // If-Range: the range only for the client's own copy.
    let resumed = get(
        "/data.txt",
        &format!("Range: bytes=8-\r\nIf-Range: {etag}\r\n"),
    )
    .await;
    assert!(resumed.starts_with("HTTP/1.1 206"), "{resumed}");
    assert!(resumed.ends_with("89"), "{resumed}");
    let changed = get("/data.txt", "Range: bytes=8-\r\nIf-Range: \"old\"\r\n").await;
    assert!(changed.starts_with("HTTP/1.1 200"), "{changed}");
    assert!(changed.ends_with("0123456789"), "{changed}");

    // The file changes: another ETag, and the old one gets the whole file again.
    std::fs::write(root.join("data.txt"), "abcdefghijklmnop").unwrap();
    let after = get("/data.txt", &format!("If-None-Match: {etag}\r\n")).await;
    assert!(after.starts_with("HTTP/1.1 200"), "{after}");
    assert!(after.ends_with("abcdefghijklmnop"), "{after}");
    assert_ne!(header(&after, "etag"), Some(etag.as_str()));

    // HEAD: the GET's headers, no body.
    let head = http(addr, "HEAD /data.txt HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(header(&head, "content-length"), Some("16"));
    assert!(head.ends_with("\r\n\r\n"), "{head}");

    // Precompressed siblings for clients that take them, each with its own ETag.
    let gzip = get("/app.js", "Accept-Encoding: gzip\r\n").await;
    assert_eq!(header(&gzip, "content-encoding"), Some("gzip"), "{gzip}");
    assert!(gzip.ends_with("GZIPPED"), "{gzip}");
    assert_eq!(header(&gzip, "vary"), Some("Accept-Encoding"));
    let brotli = get("/app.js", "Accept-Encoding: br, gzip\r\n").await;
    assert_eq!(header(&brotli, "content-encoding"), Some("br"), "{brotli}");
    assert!(brotli.ends_with("BROTLI"), "{brotli}");
    let identity = get("/app.js", "").await;
    assert_eq!(header(&identity, "content-encoding"), None, "{identity}");
    assert!(identity.ends_with("console.log('plain')"), "{identity}");
    assert!(
        header(&identity, "content-type").is_some_and(|t| t.contains("javascript")),
        "{identity}"
    );
    let tags = [&gzip, &brotli, &identity].map(|answer| header(answer, "etag").unwrap().to_owned());
    assert!(
        tags[0] != tags[1] && tags[1] != tags[2] && tags[0] != tags[2],
        "{tags:?}"
    );
    let gzip_cached = get(
        "/app.js",
        &format!("Accept-Encoding: gzip\r\nIf-None-Match: {}\r\n", tags[0]),
    )
    .await;
    assert!(gzip_cached.starts_with("HTTP/1.1 304"), "{gzip_cached}");
    let identity_not_cached = get("/app.js", &format!("If-None-Match: {}\r\n", tags[0])).await;
    assert!(
        identity_not_cached.starts_with("HTTP/1.1 200"),
        "another representation: {identity_not_cached}"
    );
    server.shutdown().await;
    std::fs::remove_dir_all(root).unwrap();
}

#[tokio::test]
async fn a_precompressed_sibling_that_leads_out_of_the_folder_is_not_served() {
    let base = std::env::temp_dir().join(format!("state-sync-gz-link-{}", std::process::id()));
    let root = base.join("www");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(base.join("secret.gz"), "SECRET").unwrap();
    std::fs::write(root.join("app.js"), "app").unwrap();
    std::os::unix::fs::symlink(base.join("secret.gz"), root.join("app.js.gz")).unwrap();
    let syncer = StateSyncer::builder().static_files(&root).build();
    let (server, _) = serve(&syncer).await;
    let addr = server.local_addr();
    for encoding in ["gzip", "identity"] {
        let answer = http(
            addr,
            &format!("GET /app.js HTTP/1.1\r\nHost: x\r\nAccept-Encoding: {encoding}\r\n\r\n"),
        )
        .await;
        assert!(!answer.contains("SECRET"), "{answer}");
        assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    }
    server.shutdown().await;
    std::fs::remove_dir_all(base).unwrap();
}
