//! Plain HTTP requests answered with files from a folder, so that a small deployment
//! (or the demo) serves its web app and its state syncer on one port.
//!
//! `tower-http`'s `ServeDir` does the serving: content types, `HEAD`, byte ranges,
//! `Last-Modified` / `If-Modified-Since`, and precompressed `.br` / `.gz` siblings for
//! clients that accept them. Around it, this module:
//! - refuses every path that leaves the folder, also through a symbolic link (ServeDir
//!   refuses `..` but follows links): the file, and its precompressed siblings, must
//!   stay inside the folder once every link is followed;
//! - gives paths without an extension that name no file `index.html` (client-side
//!   routes of a single-page app), and never lists or redirects directories;
//! - adds a strong `ETag` (size, modification time and encoding), answers
//!   `If-None-Match` with 304, honours `If-Range`, and says `Vary: Accept-Encoding`.

use std::path::{Component, Path, PathBuf};
use std::time::UNIX_EPOCH;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Empty};
use tower_http::services::ServeDir;

use crate::http_io::{Body, full};

/// A file found for a request: the URI path to hand ServeDir, and its validators.
struct Found {
    /// `None`: the request's own path; `Some`: `/index.html` (a client-side route).
    rewrite: Option<&'static str>,
    /// The `ETag` of each representation, quoted: the file itself, and its `.br` and
    /// `.gz` siblings when they exist (each from its own size and time, so that a
    /// rebuilt sibling is another representation).
    identity: String,
    brotli: Option<String>,
    gzip: Option<String>,
}

impl Found {
    /// The `ETag` of the representation in `response`.
    fn tag(&self, response: &Response<Body>) -> String {
        let encoding = response
            .headers()
            .get(header::CONTENT_ENCODING)
            .and_then(|v| v.to_str().ok());
        let sibling = match encoding {
            None => return self.identity.clone(),
            Some("br") => self.brotli.as_ref(),
            Some("gzip") => self.gzip.as_ref(),
            Some(_) => None,
        };
        sibling.cloned().unwrap_or_else(|| {
            format!(
                "{}-{}\"",
                self.identity.trim_end_matches('"'),
                encoding.unwrap_or_default()
            )
        })
    }
}

/// Answers a plain request (not an upgrade) with a file from `root`.
pub(crate) async fn serve<B>(root: &Path, request: Request<B>) -> Response<Body> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let Some(found) = locate(root, request.uri().path()).await else {
        return plain(StatusCode::NOT_FOUND, "not found\n");
    };
    let (mut parts, _body) = request.into_parts();
    if let Some(path) = found.rewrite {
        parts.uri = http::Uri::from_static(path);
    }
    // RFC 9110 section 13.2.2: If-None-Match, when present, decides; If-Modified-Since
    // is then ignored (ServeDir would answer 304 on the date alone).
    if parts.headers.contains_key(header::IF_NONE_MATCH) {
        parts.headers.remove(header::IF_MODIFIED_SINCE);
    }
    let headers = parts.headers.clone();
    let mut response = serve_dir(root, again(&parts)).await;
    let mut tag = found.tag(&response);
    let ranged = matches!(
        response.status(),
        StatusCode::PARTIAL_CONTENT | StatusCode::RANGE_NOT_SATISFIABLE
    );
    // If-Range: the range only when the client's copy is this one, else the whole
    // file (also when the range could not have been satisfied).
    if ranged && !if_range_holds(&headers, &tag, response.headers()) {
        parts.headers.remove(header::RANGE);
        response = serve_dir(root, again(&parts)).await;
        tag = found.tag(&response);
    }
    let status = response.status();
    // If-None-Match comes before Range (RFC 9110 section 13.2.2).
    if matches!(
        status,
        StatusCode::OK | StatusCode::PARTIAL_CONTENT | StatusCode::RANGE_NOT_SATISFIABLE
    ) && none_match_fails(&headers, &tag)
    {
        let (mut parts, _) = response.into_parts();
        parts.status = StatusCode::NOT_MODIFIED;
        for name in [
            header::CONTENT_LENGTH,
            header::CONTENT_TYPE,
            header::CONTENT_RANGE,
            header::ACCEPT_RANGES,
            header::CONTENT_ENCODING,
        ] {
            parts.headers.remove(name);
        }
        let mut response = Response::from_parts(parts, full(Bytes::new()));
        validators(&mut response, &tag);
        return response;
    }
    if status.is_success() || status == StatusCode::NOT_MODIFIED {
        validators(&mut response, &tag);
        with_charset(&mut response);
    }
    response
}

/// The `ETag`, `Vary` and `Cache-Control` of an answer with a file.
fn validators(response: &mut Response<Body>, tag: &str) {
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(tag) {
        headers.insert(header::ETAG, value);
    }
    headers.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
}

/// Text is UTF-8 (a page without `<meta charset>` would be read as Latin-1 otherwise),
/// and a source map is JSON.
fn with_charset(response: &mut Response<Body>) {
    let Some(content_type) = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return;
    };
    let textual = content_type.starts_with("text/")
        || content_type == "application/javascript"
        || content_type == "application/json";
    if textual && !content_type.contains("charset") {
        let with = format!("{content_type}; charset=utf-8");
        if let Ok(value) = HeaderValue::from_str(&with) {
            response.headers_mut().insert(header::CONTENT_TYPE, value);
        }
    }
}

/// A request with the method, target, version and headers of `parts` (no body, no
/// extensions).
fn again(parts: &http::request::Parts) -> Request<()> {
    let mut request = Request::new(());
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = parts.uri.clone();
    *request.version_mut() = parts.version;
    *request.headers_mut() = parts.headers.clone();
    request
}

/// ServeDir's answer to `request` (GET or HEAD of a checked path).
async fn serve_dir(root: &Path, request: Request<()>) -> Response<Body> {
    let request = request.map(|()| Empty::<Bytes>::new());
    let answer = ServeDir::new(root)
        .append_index_html_on_directories(false)
        .precompressed_br()
        .precompressed_gzip()
        .try_call(request)
        .await;
    match answer {
        Ok(response) => response.map(BodyExt::boxed_unsync),
        Err(e) => {
            tracing::warn!("serving a file from {}: {e}", root.display());
            plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the file could not be read\n",
            )
        }
    }
}

fn plain(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Whether `If-None-Match` names this representation (or `*`): then 304. Weak
/// comparison, as RFC 9110 section 13.1.2 says.
fn none_match_fails(request: &HeaderMap, tag: &str) -> bool {
    request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|candidate| candidate.trim())
        .any(|candidate| candidate == "*" || candidate.trim_start_matches("W/") == tag)
}

/// Whether a range may be served: no `If-Range`, or one that is this representation's
/// `ETag` (strong comparison) or exactly its `Last-Modified`.
fn if_range_holds(request: &HeaderMap, tag: &str, response: &HeaderMap) -> bool {
    let Some(condition) = request.get(header::IF_RANGE) else {
        return true;
    };
    condition.as_bytes() == tag.as_bytes()
        || response
            .get(header::LAST_MODIFIED)
            .is_some_and(|modified| modified == condition)
}

/// The file `path` (a request's URI path) names under `root`, checked: `None` (404)
/// when the path is malformed, tries to leave the folder, names no regular file, or
/// when the file or a precompressed sibling leads out of the folder through a link.
async fn locate(root: &Path, path: &str) -> Option<Found> {
    // Decoded exactly as ServeDir decodes it, so that the file checked is the file served.
    let decoded = percent_encoding::percent_decode_str(path)
        .decode_utf8()
        .ok()?;
    if decoded.contains(['\0', '\\']) {
        return None;
    }
    let relative = Path::new(decoded.trim_start_matches('/'));
    if relative
        .components()
        .any(|c| !matches!(c, Component::Normal(_)))
    {
        return None;
    }
    let real_root = tokio::fs::canonicalize(root).await.ok()?;
    let inside = |real: &PathBuf| real.starts_with(&real_root);
    let candidate = root.join(relative);
    let (file, rewrite) = match tokio::fs::canonicalize(&candidate).await {
        Ok(real) if !inside(&real) => return None,
        Ok(real) if tokio::fs::metadata(&real).await.ok()?.is_file() => (candidate, None),
        // A directory, or nothing: a client-side route gets the app, a file is missing.
        _ if relative.extension().is_none() => (root.join("index.html"), Some("/index.html")),
        _ => return None,
    };
    let real = tokio::fs::canonicalize(&file).await.ok().filter(inside)?;
    let mut siblings = [None, None];
    for (suffix, tag) in [".br", ".gz"].into_iter().zip(&mut siblings) {
        let mut sibling = file.clone().into_os_string();
        sibling.push(suffix);
        if tokio::fs::symlink_metadata(&sibling).await.is_ok() {
            // It exists (maybe a link): it must lead inside too, or nothing is served.
            let real = tokio::fs::canonicalize(&sibling)
                .await
                .ok()
                .filter(inside)?;
            *tag = etag(&real).await;
        }
    }
    let [brotli, gzip] = siblings;
    Some(Found {
        rewrite,
        identity: etag(&real).await?,
        brotli,
        gzip,
    })
}

/// A strong `ETag` for a regular file: its size and modification time. `None` when it
/// is not a regular file.
async fn etag(path: &Path) -> Option<String> {
    let metadata = tokio::fs::metadata(path).await.ok()?;
    if !metadata.is_file() {
        return None;
    }
    let modified = metadata
        .modified()
        .ok()
        .and_then(|time| time.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |since| since.as_nanos());
    Some(format!("\"{:x}-{modified:x}\"", metadata.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn paths_stay_inside_the_folder() {
        let root = std::env::temp_dir().join(format!("static-unit-{}", std::process::id()));
        std::fs::create_dir_all(root.join("assets")).unwrap_or_default();
        std::fs::write(root.join("index.html"), "app").unwrap_or_default();
        std::fs::write(root.join("assets/app.js"), "js").unwrap_or_default();
        for escape in [
            "/../etc/passwd",
            "/%2e%2e/etc/passwd",
            "/a/%2e%2e/%2e%2e/etc/passwd",
            "/..%5cetc",
            "/%00",
            "/./index.html",
        ] {
            assert!(locate(&root, escape).await.is_none(), "{escape}");
        }
        assert!(
            locate(&root, "/assets/app.js")
                .await
                .is_some_and(|f| f.rewrite.is_none())
        );
        assert!(locate(&root, "/missing.js").await.is_none());
        for route in ["/", "/chat/room", "/assets"] {
            assert_eq!(
                locate(&root, route).await.and_then(|f| f.rewrite),
                Some("/index.html"),
                "{route}"
            );
        }
        let _ = std::fs::remove_dir_all(root);
    }
}
