//! Plain HTTP requests answered with files from a folder, so that a small deployment
//! (or the demo) serves its web app and its state syncer on one port.

use std::path::{Component, Path, PathBuf};

use tokio::io::{AsyncWrite, AsyncWriteExt};

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

/// Answers a plain HTTP request with a file (GET and HEAD), then closes.
pub(crate) async fn answer<S: AsyncWrite + Unpin>(
    stream: &mut S,
    root: &Path,
    method: &str,
    target: &str,
) -> std::io::Result<()> {
    let (status, kind, body) = match (method, resolve(root, target)) {
        ("GET" | "HEAD", Some(file)) => match tokio::fs::read(&file).await {
            Ok(body) => ("200 OK", content_type(&file), body),
            Err(_) => (
                "404 Not Found",
                "text/plain; charset=utf-8",
                b"not found\n".to_vec(),
            ),
        },
        ("GET" | "HEAD", None) => (
            "404 Not Found",
            "text/plain; charset=utf-8",
            b"not found\n".to_vec(),
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain; charset=utf-8",
            b"only GET and HEAD\n".to_vec(),
        ),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    if method != "HEAD" {
        stream.write_all(&body).await?;
    }
    stream.shutdown().await
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
