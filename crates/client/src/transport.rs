//! Opening the WebSocket: URL with the identifier and token, plain or TLS.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite;

use crate::error::Error;

/// Where and as whom to connect.
#[derive(Clone)]
pub(crate) struct Target {
    /// The full URL, query string included.
    pub(crate) url: String,
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) secure: bool,
    pub(crate) tls: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("host", &self.host)
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

/// The default TLS settings: the Mozilla root certificates.
pub(crate) fn default_tls() -> Arc<rustls::ClientConfig> {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map(|builder| builder.with_root_certificates(roots).with_no_client_auth());
    // The ring provider supports the default protocol versions.
    Arc::new(config.unwrap_or_else(|_| unreachable!("ring supports TLS 1.2 and 1.3")))
}

impl Target {
    /// The original's URL, `endpoint?identifier=…&token=…`, with both values URL-encoded.
    pub(crate) fn new(
        endpoint: &str,
        identifier: &str,
        token: Option<&str>,
        tls: Arc<rustls::ClientConfig>,
    ) -> Result<Self, Error> {
        let invalid = |reason: &str| Error::InvalidEndpoint {
            endpoint: endpoint.to_owned(),
            reason: reason.to_owned(),
        };
        let uri: http::Uri = endpoint
            .parse()
            .map_err(|e: http::uri::InvalidUri| invalid(&e.to_string()))?;
        let secure = match uri.scheme_str() {
            Some("ws") => false,
            Some("wss") => true,
            _ => return Err(invalid("the scheme must be ws:// or wss://")),
        };
        let host = uri
            .host()
            .ok_or_else(|| invalid("no host"))?
            .trim_matches(['[', ']'])
            .to_owned();
        let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("identifier", identifier)
            .append_pair("token", token.unwrap_or(""))
            .finish();
        let base = endpoint.trim_end_matches('?');
        let separator = if uri.query().is_some() { '&' } else { '?' };
        let url = if uri.path() == "/" && !base.ends_with('/') && uri.query().is_none() {
            format!("{base}/?{query}")
        } else {
            format!("{base}{separator}{query}")
        };
        Ok(Target {
            url,
            host,
            port,
            secure,
            tls,
        })
    }
}

/// A connected byte stream: plain TCP or TLS.
#[derive(Debug)]
pub(crate) enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

pub(crate) type Socket = WebSocketStream<Stream>;

/// Opens the WebSocket.
pub(crate) async fn connect(target: &Target) -> Result<Socket, Error> {
    let tcp = TcpStream::connect((target.host.as_str(), target.port))
        .await
        .map_err(|e| Error::Connect(format!("{}:{}: {e}", target.host, target.port)))?;
    let _ = tcp.set_nodelay(true);
    let stream = if target.secure {
        let name = rustls_pki_types::ServerName::try_from(target.host.clone())
            .map_err(|e| Error::Connect(format!("invalid TLS server name {}: {e}", target.host)))?;
        let connector = tokio_rustls::TlsConnector::from(Arc::clone(&target.tls));
        let tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| Error::Connect(format!("TLS: {e}")))?;
        Stream::Tls(Box::new(tls))
    } else {
        Stream::Plain(tcp)
    };
    match tokio_tungstenite::client_async(target.url.as_str(), stream).await {
        Ok((socket, _response)) => Ok(socket),
        Err(tungstenite::Error::Http(response)) => Err(Error::Refused {
            status: response.status().as_u16(),
            body: response
                .body()
                .as_ref()
                .map(|body| String::from_utf8_lossy(body).trim_end().to_owned())
                .unwrap_or_default(),
        }),
        Err(e) => Err(Error::Connect(e.to_string())),
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(endpoint: &str, identifier: &str, token: Option<&str>) -> String {
        Target::new(endpoint, identifier, token, default_tls())
            .map(|t| t.url)
            .unwrap_or_else(|e| e.to_string())
    }

    #[test]
    fn builds_the_original_url_with_encoding() {
        assert_eq!(
            url("ws://localhost:5000", "alice", Some("t")),
            "ws://localhost:5000/?identifier=alice&token=t"
        );
        assert_eq!(
            url("ws://h:1/sync", "a b&c", None),
            "ws://h:1/sync?identifier=a+b%26c&token="
        );
        assert_eq!(
            url("wss://h/sync?room=1", "a", None),
            "wss://h/sync?room=1&identifier=a&token="
        );
        assert!(url("http://h", "a", None).contains("ws:// or wss://"));
    }
}
