//! Plain HTTP requests answered with files from a folder, so that a small deployment
//! (or the demo) serves its web app and its state syncer on one port.

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "wasm" => "application/wasm",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

fn percent_decode(path: &str) -> Option<String> {
    let bytes = path.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            decoded.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            decoded.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(decoded).ok()
}

/// The file a request target names under `root`, or `None` when the target tries to
/// leave the folder. Paths without an extension that name no file get `index.html`
/// (client-side routes of a single-page app).
fn resolve(root: &Path, target: &str) -> Option<PathBuf> {
    let path = target.split(['?', '#']).next().unwrap_or("/");
    let path = percent_decode(path)?;
    let relative = Path::new(path.trim_start_matches('/'));
    if relative
        .components()
        .any(|c| !matches!(c, Component::Normal(_)))
        || path.contains('\0')
    {
        return None;
    }
    let file = root.join(relative);
    if file.is_file() {
        return Some(file);
    }
    if relative.extension().is_none() {
        return Some(root.join("index.html"));
    }
    Some(file)
}

/// One write, which must make progress within `limit`.
async fn timed(
    limit: Duration,
    write: impl std::future::Future<Output = std::io::Result<()>>,
) -> std::io::Result<()> {
    tokio::time::timeout(limit, write)
        .await
        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
}

/// Reads of a file are this large; one buffer per request being answered.
const CHUNK: usize = 64 * 1024;

/// The file to serve for `target`, or `None` (404): it must exist and stay inside
/// `root` once every symbolic link is followed.
async fn open(root: &Path, target: &str) -> Option<(PathBuf, tokio::fs::File, u64)> {
    let file = resolve(root, target)?;
    let real_root = tokio::fs::canonicalize(root).await.ok()?;
    let real_file = tokio::fs::canonicalize(&file).await.ok()?;
    if !real_file.starts_with(&real_root) {
        return None;
    }
    let opened = tokio::fs::File::open(&real_file).await.ok()?;
    let metadata = opened.metadata().await.ok()?;
    metadata.is_file().then_some((file, opened, metadata.len()))
}

/// Answers a plain HTTP request with a file (GET and HEAD), then closes. The file is
/// streamed in chunks, never read whole; each write must make progress within
/// `write_timeout`, the download as a whole may take as long as it needs.
pub(crate) async fn answer<S: AsyncWrite + Unpin>(
    mut stream: S,
    root: &Path,
    method: &str,
    target: &str,
    write_timeout: Duration,
) -> std::io::Result<()> {
    let found = match method {
        "GET" | "HEAD" => open(root, target).await,
        _ => None,
    };
    let Some((path, mut file, length)) = found else {
        let (status, body) = if matches!(method, "GET" | "HEAD") {
            ("404 Not Found", "not found\n")
        } else {
            ("405 Method Not Allowed", "only GET and HEAD\n")
        };
        let response = format!(
            "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        timed(write_timeout, stream.write_all(response.as_bytes())).await?;
        return timed(write_timeout, stream.shutdown()).await;
    };
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: {}\r\nContent-Length: {length}\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n",
        content_type(&path)
    );
    timed(write_timeout, stream.write_all(head.as_bytes())).await?;
    if method == "GET" {
        let mut buffer = vec![0; CHUNK];
        loop {
            let read = file.read(&mut buffer).await?;
            if read == 0 {
                break;
            }
            timed(write_timeout, stream.write_all(&buffer[..read])).await?;
        }
    }
    timed(write_timeout, stream.shutdown()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_inside_the_folder() {
        let root = Path::new("/srv/app");
        assert_eq!(resolve(root, "/../etc/passwd"), None);
        assert_eq!(resolve(root, "/%2e%2e/etc/passwd"), None);
        assert_eq!(
            resolve(root, "/assets/app.js?v=1"),
            Some(root.join("assets/app.js"))
        );
        assert_eq!(resolve(root, "/"), Some(root.join("index.html")));
        assert_eq!(resolve(root, "/chat/room"), Some(root.join("index.html")));
    }
}
