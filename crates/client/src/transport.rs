//! Opening the WebSocket, plain or TLS, at the URL the protocol crate builds.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite;

use state_sync_protocol::Endpoint;

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
    /// One target per endpoint, in order: the original's URL,
    /// `endpoint?identifier=…&token=…`, as the protocol crate builds it for both
    /// clients, once every endpoint passed its checks ([`Endpoint::parse_all`]: the
    /// first bad one, or an empty list, is refused).
    pub(crate) fn all(
        endpoints: &[String],
        identifier: &str,
        token: Option<&str>,
        tls: &Arc<rustls::ClientConfig>,
    ) -> Result<Vec<Self>, Error> {
        let invalid = |endpoint: &str, reason: String| Error::InvalidEndpoint {
            endpoint: endpoint.to_owned(),
            reason,
        };
        let parsed = Endpoint::parse_all(endpoints)
            .map_err(|e| invalid(e.endpoint(), e.reason().to_owned()))?;
        endpoints
            .iter()
            .zip(parsed)
            .map(|(endpoint, parsed)| {
                let url = parsed.connection_url(identifier, token);
                // The handshake request needs an `http::Uri`, which refuses a few
                // characters the browser's URL parser would encode (`<`, `` ` ``, `%` in
                // the host): refuse such an endpoint here rather than at every
                // connection attempt.
                url.parse::<http::Uri>()
                    .map_err(|e| invalid(endpoint, format!("not a valid URI: {e}")))?;
                Ok(Target {
                    url,
                    host: parsed.host().to_owned(),
                    port: parsed.port(),
                    secure: parsed.is_secure(),
                    tls: Arc::clone(tls),
                })
            })
            .collect()
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

    fn targets(endpoints: &[&str]) -> Result<Vec<Target>, Error> {
        let endpoints: Vec<String> = endpoints.iter().map(|e| (*e).to_owned()).collect();
        Target::all(&endpoints, "a b", Some("t"), &default_tls())
    }

    fn target(endpoint: &str) -> Result<Target, Error> {
        targets(&[endpoint]).map(|mut all| all.remove(0))
    }

    #[test]
    fn connects_where_the_protocol_crates_url_says() {
        let target = target("wss://[::1]:8443/sync").unwrap();
        assert_eq!(target.url, "wss://[::1]:8443/sync?identifier=a%20b&token=t");
        assert_eq!(
            (target.host.as_str(), target.port, target.secure),
            ("::1", 8443, true)
        );
    }

    #[test]
    fn an_invalid_endpoint_is_refused_with_the_protocol_crates_reason() {
        let Err(Error::InvalidEndpoint { endpoint, reason }) = target("http://h") else {
            panic!("not refused");
        };
        assert_eq!(endpoint, "http://h");
        assert_eq!(reason, "it must start with ws:// or wss://");
        assert!(
            matches!(target("ws://h/<"), Err(Error::InvalidEndpoint { .. })),
            "not an http::Uri"
        );
    }

    #[test]
    fn every_endpoint_of_a_list_is_checked_and_the_list_must_not_be_empty() {
        let all = targets(&["ws://a:1", "wss://b/x?room=2"]).unwrap();
        let urls: Vec<_> = all.iter().map(|t| t.url.as_str()).collect();
        assert_eq!(
            urls,
            [
                "ws://a:1/?identifier=a%20b&token=t",
                "wss://b/x?room=2&identifier=a%20b&token=t"
            ]
        );
        let Err(Error::InvalidEndpoint { endpoint, reason }) = targets(&["ws://a", "http://b"])
        else {
            panic!("not refused");
        };
        assert_eq!(
            (endpoint.as_str(), reason.as_str()),
            ("http://b", "it must start with ws:// or wss://")
        );
        assert!(
            matches!(targets(&["ws://a", "ws://h/<"]), Err(Error::InvalidEndpoint { endpoint, .. }) if endpoint == "ws://h/<")
        );
        assert_eq!(
            targets(&[]).unwrap_err().to_string(),
            r#"invalid endpoint "": no endpoint given (the list of endpoints is empty)"#
        );
    }
}
