//! Review probes of the hyper / ServeDir HTTP side (commit "HTTP by hyper 1.x on the
//! server's own listener"). The tests named in the review's report as defects fail on
//! that commit; the others are attacks that held up, kept because they are cheap.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use state_sync_server::{Rejection, StateSyncer};
use state_sync_tests::http::{RAW_UPGRADE as UPGRADE, header, kept_alive};
use state_sync_tests::http_request as http;
use state_sync_tests::{PATIENCE, serve};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn folder(name: &str) -> PathBuf {
    let root = std::env::temp_dir().join(format!("review-hyper-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    root
}

// ---------------------------------------------------------------------------------
// Defects
// ---------------------------------------------------------------------------------

/// The old file server said `charset=utf-8` for HTML, text, JS and CSS; ServeDir's
/// `mime_guess` types do not, so a browser decodes a UTF-8 `.txt` (or an `.html`
/// without `<meta charset>`) as windows-1252.
#[tokio::test]
async fn static_text_files_keep_their_utf8_charset() {
    let root = folder("charset");
    std::fs::write(root.join("index.html"), "<p>héllo</p>").unwrap();
    std::fs::write(root.join("notes.txt"), "héllo wörld").unwrap();
    std::fs::write(root.join("app.js"), "console.log('é')").unwrap();
    let syncer = StateSyncer::builder().static_files(&root).build();
    let (server, _) = serve(&syncer).await;
    let addr = server.local_addr();
    for path in ["/notes.txt", "/index.html", "/app.js"] {
        let answer = http(addr, &format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n")).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        let content_type = header(&answer, "content-type").unwrap_or("");
        assert!(
            content_type.to_ascii_lowercase().contains("charset=utf-8"),
            "{path}: Content-Type {content_type:?} (before: `; charset=utf-8`)"
        );
    }
    server.shutdown().await;
    std::fs::remove_dir_all(root).unwrap();
}

/// RFC 9110 13.2.2: If-None-Match is evaluated before Range; a matching tag is 304
/// even when a range is asked for (ServeDir's own If-Modified-Since already works so).
#[tokio::test]
async fn a_matching_if_none_match_wins_over_a_range() {
    let root = folder("inm-range");
    std::fs::write(root.join("data.txt"), "0123456789").unwrap();
    let syncer = StateSyncer::builder().static_files(&root).build();
    let (server, _) = serve(&syncer).await;
    let addr = server.local_addr();
    let whole = http(addr, "GET /data.txt HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let etag = header(&whole, "etag").expect("an ETag").to_owned();
    let ranged = http(
        addr,
        &format!(
            "GET /data.txt HTTP/1.1\r\nHost: x\r\nRange: bytes=0-1\r\nIf-None-Match: {etag}\r\n\r\n"
        ),
    )
    .await;
    assert!(ranged.starts_with("HTTP/1.1 304"), "{ranged}");
    server.shutdown().await;
    std::fs::remove_dir_all(root).unwrap();
}

/// RFC 9110 13.1.5: an If-Range that does not match means the Range MUST be ignored
/// (200 and the whole file), also when that range would not be satisfiable.
#[tokio::test]
async fn a_failed_if_range_ignores_even_an_unsatisfiable_range() {
    let root = folder("if-range-416");
    std::fs::write(root.join("data.txt"), "0123456789").unwrap();
    let syncer = StateSyncer::builder().static_files(&root).build();
    let (server, _) = serve(&syncer).await;
    let answer = http(
        server.local_addr(),
        "GET /data.txt HTTP/1.1\r\nHost: x\r\nRange: bytes=50-60\r\nIf-Range: \"old\"\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("0123456789"), "{answer}");
    server.shutdown().await;
    std::fs::remove_dir_all(root).unwrap();
}

/// A strong ETag must change when the bytes sent change. The `.gz` sibling's tag is
/// made from the plain file's size and time only: a rebuilt `app.js.gz` next to an
/// unchanged `app.js` keeps its tag, so a cache gets 304 for bytes it does not have
/// (and an If-Range resume would splice old and new bytes).
#[tokio::test]
async fn a_changed_precompressed_sibling_gets_another_etag() {
    let root = folder("gz-etag");
    std::fs::write(root.join("app.js"), "console.log('plain')").unwrap();
    std::fs::write(root.join("app.js.gz"), b"GZIP-ONE").unwrap();
    let syncer = StateSyncer::builder().static_files(&root).build();
    let (server, _) = serve(&syncer).await;
    let addr = server.local_addr();
    let get = |extra: String| {
        let request =
            format!("GET /app.js HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n{extra}\r\n");
        async move { http(addr, &request).await }
    };
    let first = get(String::new()).await;
    assert!(first.ends_with("GZIP-ONE"), "{first}");
    let etag = header(&first, "etag").unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(20)).await;
    std::fs::write(root.join("app.js.gz"), b"GZIP-TWO-LONGER").unwrap();
    let again = get(format!("If-None-Match: {etag}\r\n")).await;
    assert!(
        again.starts_with("HTTP/1.1 200") && again.ends_with("GZIP-TWO-LONGER"),
        "the new .gz, not 304 with the old tag: {again}"
    );
    server.shutdown().await;
    std::fs::remove_dir_all(root).unwrap();
}

/// `route`'s content type went from text in the head to `HeaderValue::from_static`,
/// which panics on bytes past ASCII (legal obs-text in a header value): the
/// connection's task panics on every request and the client gets no answer.
#[tokio::test]
async fn a_route_whose_content_type_is_not_ascii_is_answered_not_panicked() {
    let syncer = StateSyncer::builder()
        .route("/about", "text/plain; charset=utf-8; title=café", || {
            "about\n".to_owned()
        })
        .build();
    let (server, _) = serve(&syncer).await;
    let answer = http(
        server.local_addr(),
        "GET /about HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "no answer: {answer:?}");
    server.shutdown().await;
}

/// `handshake_timeout(Duration::MAX)` ("no limit") worked with tokio's timeout, which
/// saturates; hyper computes `Instant::now() + header_read_timeout`, which overflows
/// and panics in every connection's task.
#[tokio::test]
async fn a_handshake_timeout_of_duration_max_does_not_panic_every_connection() {
    let syncer = StateSyncer::builder()
        .handshake_timeout(Duration::MAX)
        .build();
    let (server, _) = serve(&syncer).await;
    let mut tcp = TcpStream::connect(server.local_addr()).await.unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(PATIENCE, tcp.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "no answer: {read:?} {answer:?}"
    );
    server.shutdown().await;
}

/// A client that shuts down its sending side after its request (`nc -N`, HTTP/1.0
/// style scripts) got its file from the old server. hyper's default `half_close(false)`
/// treats the FIN seen while the answer is being prepared as an aborted request: the
/// connection ends with no answer.
#[tokio::test]
async fn a_client_that_half_closes_after_its_request_still_gets_the_file() {
    let root = folder("half-close");
    std::fs::write(root.join("index.html"), "<h1>app</h1>").unwrap();
    std::fs::write(root.join("big.bin"), vec![b'x'; 4 << 20]).unwrap();
    let syncer = StateSyncer::builder().static_files(&root).build();
    let (server, _) = serve(&syncer).await;
    for (path, length) in [("/index.html", 12usize), ("/big.bin", 4 << 20)] {
        let mut tcp = TcpStream::connect(server.local_addr()).await.unwrap();
        tcp.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        tcp.shutdown().await.unwrap();
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(PATIENCE, tcp.read_to_end(&mut answer)).await;
        let text = String::from_utf8_lossy(&answer[..answer.len().min(200)]).into_owned();
        assert!(text.starts_with("HTTP/1.1 200"), "{path}: {text:?}");
        let body = answer.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        assert_eq!(answer.len() - body, length, "{path}: the whole file");
    }
    server.shutdown().await;
    std::fs::remove_dir_all(root).unwrap();
}

/// The symlink check decodes the path with its own decoder, ServeDir with
/// `percent_encoding`: they disagree on `%+1` (`u8::from_str_radix("+1", 16)` is 1,
/// `percent_encoding` keeps `%+1` as text). The check then approves one file and
/// ServeDir serves another: here a link out of the folder.
#[tokio::test]
async fn the_checked_file_is_the_served_file() {
    let base = folder("plus-decode");
    let root = base.join("www");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(base.join("secret.txt"), "SECRET").unwrap();
    std::fs::write(root.join("a\u{1}.txt"), "harmless").unwrap();
    std::os::unix::fs::symlink(base.join("secret.txt"), root.join("a%+1.txt")).unwrap();
    let syncer = StateSyncer::builder().static_files(&root).build();
    let (server, _) = serve(&syncer).await;
    let answer = http(
        server.local_addr(),
        "GET /a%+1.txt HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    assert!(!answer.contains("SECRET"), "left the folder: {answer}");
    server.shutdown().await;
    std::fs::remove_dir_all(base).unwrap();
}

// ---------------------------------------------------------------------------------
// Attacks that held up
// ---------------------------------------------------------------------------------

/// A refused upgrade closes the connection: pipelined upgrade requests cannot make the
/// authorization middleware run again and again on one connection.
#[tokio::test]
async fn the_middleware_runs_once_per_connection_however_many_upgrades_are_pipelined() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    let syncer = StateSyncer::builder()
        .authorize(move |_request| {
            counted.fetch_add(1, Ordering::SeqCst);
            async move { Err::<(), _>(Rejection::new("no")) }
        })
        .build();
    let (server, _) = serve(&syncer).await;
    let mut tcp = TcpStream::connect(server.local_addr()).await.unwrap();
    tcp.write_all(UPGRADE.repeat(20).as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(PATIENCE, tcp.read_to_end(&mut answer))
        .await
        .expect("closed")
        .ok();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    assert_eq!(answer.matches("HTTP/1.1 401").count(), 1, "{answer}");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    server.shutdown().await;
}

/// Slowloris on a keep-alive connection: after one answered request, a head dripped
/// one line at a time is cut at the handshake timeout, counted from its first byte.
#[tokio::test]
async fn a_dripped_second_head_on_a_keep_alive_connection_is_cut() {
    let (_syncer, server, tcp) = kept_alive(Duration::from_millis(300)).await;
    let (mut reader, mut writer) = tcp.into_split();
    let started = Instant::now();
    let drip = tokio::spawn(async move {
        let _ = writer.write_all(b"GET /healthz HTTP/1.1\r\n").await;
        for i in 0..100 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if writer
                .write_all(format!("X-{i}: y\r\n").as_bytes())
                .await
                .is_err()
            {
                return;
            }
        }
    });
    let mut rest = Vec::new();
    let read = tokio::time::timeout(PATIENCE, reader.read_to_end(&mut rest)).await;
    assert!(matches!(read, Ok(Ok(_)) | Ok(Err(_))), "closed: {read:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    drip.abort();
    server.shutdown().await;
}

/// An HTTP/1.0 request without keep-alive is answered in HTTP/1.0 and closed at once
/// (no wait for the handshake timeout).
#[tokio::test]
async fn an_http_1_0_request_is_answered_and_closed() {
    let syncer = StateSyncer::new();
    let (server, _) = serve(&syncer).await;
    let mut tcp = TcpStream::connect(server.local_addr()).await.unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.0\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(2), tcp.read_to_end(&mut answer))
        .await
        .expect("closed at once")
        .unwrap();
    let answer = String::from_utf8(answer).unwrap();
    assert!(answer.starts_with("HTTP/1.0 200"), "{answer}");
    assert!(answer.ends_with("ok\n"), "{answer}");
    server.shutdown().await;
}

/// The 101 carries the upgrade headers and no body framing (no Content-Length, no
/// Transfer-Encoding) that a client could wait on.
#[tokio::test]
async fn the_101_has_no_body_framing() {
    let syncer = StateSyncer::new();
    let (server, _) = serve(&syncer).await;
    let mut tcp = TcpStream::connect(server.local_addr()).await.unwrap();
    tcp.write_all(UPGRADE.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(tcp.read_u8().await.unwrap());
    }
    let head = String::from_utf8(head).unwrap();
    assert!(
        head.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
        "{head}"
    );
    assert_eq!(header(&head, "upgrade"), Some("websocket"));
    assert_eq!(header(&head, "connection"), Some("Upgrade"));
    assert_eq!(
        header(&head, "sec-websocket-accept"),
        Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    );
    assert_eq!(header(&head, "content-length"), None, "{head}");
    assert_eq!(header(&head, "transfer-encoding"), None, "{head}");
    server.shutdown().await;
}

/// Directories, trailing slashes and malformed encodings: never a panic, never a
/// listing, never anything from outside.
#[tokio::test]
async fn odd_static_targets_get_plain_answers() {
    let root = folder("odd");
    std::fs::create_dir_all(root.join("dir.d")).unwrap();
    std::fs::write(root.join("index.html"), "INDEX").unwrap();
    let syncer = StateSyncer::builder().static_files(&root).build();
    let (server, _) = serve(&syncer).await;
    let addr = server.local_addr();
    for (target, status) in [
        ("/dir.d", "404"),
        ("/dir.d/", "404"),
        ("/index.html/", "404"),
        // Not percent-encodings: taken literally (as ServeDir takes them), names
        // without an extension that are no file: the app's client-side routes.
        ("/%", "200"),
        ("/%2", "200"),
        ("/%ff.txt", "404"),
        ("/a%00b", "404"),
        ("*", "200"),
        ("//index.html", "200"),
        ("/index.html?x=%zz", "200"),
    ] {
        let answer = http(addr, &format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n")).await;
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}")),
            "{target}: {answer}"
        );
    }
    // The server is still there.
    let health = http(addr, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    server.shutdown().await;
    std::fs::remove_dir_all(root).unwrap();
}
