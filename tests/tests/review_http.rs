//! Review probes: static files must never leave their folder, whatever the encoding.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use state_sync_server::StateSyncer;
use state_sync_tests::serve;

use state_sync_tests::http_request as http;

#[tokio::test]
async fn no_encoding_of_a_path_leaves_the_folder() {
    let base = std::env::temp_dir().join(format!("review-static-{}", std::process::id()));
    let root = base.join("www");
    let outside = base.join("outside");
    std::fs::create_dir_all(root.join("sub")).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(root.join("index.html"), "INDEX").unwrap();
    std::fs::write(base.join("secret.txt"), "SECRET").unwrap();
    std::fs::write(outside.join("secret.txt"), "SECRET").unwrap();
    std::fs::write(outside.join("secret"), "SECRET").unwrap();
    let _ = std::os::unix::fs::symlink(&outside, root.join("link"));
    let _ = std::os::unix::fs::symlink(outside.join("secret.txt"), root.join("file.txt"));
    let _ = std::os::unix::fs::symlink(&outside, root.join("sub/deeper"));
    let syncer = StateSyncer::builder().static_files(&root).build();
    let (server, _url) = serve(&syncer).await;
    let addr = server.local_addr();
    let targets = [
        "/../secret.txt",
        "/%2e%2e/secret.txt",
        "/%2E%2E/secret.txt",
        "/..%2fsecret.txt",
        "/sub/..%2f..%2fsecret.txt",
        "/sub/%2e%2e/%2e%2e/secret.txt",
        "/.%2e/secret.txt",
        "/%2e%2e%5csecret.txt",
        "/..\\secret.txt",
        "//../secret.txt",
        "/%252e%252e/secret.txt",
        "/%c0%ae%c0%ae/secret.txt",
        "/..%00/secret.txt",
        "http://x/../secret.txt",
        "/link/secret.txt",
        "/link/secret",
        "/link/",
        "/link",
        "/file.txt",
        "/sub/deeper/secret.txt",
        "/sub/deeper/secret",
        "/%2flink/secret.txt",
        "/./link/secret.txt",
        "/sub/../link/secret.txt",
        &format!("/{}", outside.join("secret.txt").display()),
        &format!("//{}", outside.join("secret.txt").display()),
        &format!("/%2f{}", outside.join("secret.txt").display()),
    ];
    for target in targets {
        for method in ["GET", "HEAD"] {
            let response = http(
                addr,
                &format!("{method} {target} HTTP/1.1\r\nHost: x\r\n\r\n"),
            )
            .await;
            assert!(
                !response.contains("SECRET"),
                "{method} {target} leaked: {response}"
            );
            // A length of 6 would be the secret's (HEAD has no body).
            assert!(
                !response.contains("Content-Length: 6\r\n"),
                "{method} {target}: {response}"
            );
        }
    }
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&base);
}
