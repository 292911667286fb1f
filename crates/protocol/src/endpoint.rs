//! The server's endpoint: checking a `ws://` / `wss://` URL, and the URL a client
//! connects to, `endpoint?identifier=…&token=…` as the original client builds it.
//!
//! One algorithm for both clients:
//! - the endpoint must start with `ws://` or `wss://` (lower case) and name a host;
//!   the port, when given, is a number; a WebSocket URL has no fragment (`#`), and
//!   whitespace or control characters are refused rather than guessed at;
//! - an endpoint without a path gets `/` (`ws://host:5000` → `ws://host:5000/`);
//! - `identifier` and `token` (empty when there is none) are appended to the query the
//!   endpoint may already have, percent-encoded except for the characters RFC 3986
//!   leaves unreserved (`A-Z a-z 0-9 - . _ ~`), so they decode the same whether the
//!   server reads the query as a form (`+` is a space there) or with
//!   `decodeURIComponent`.
//!
//! A client may be given several endpoints, the servers of one cluster
//! ([`Endpoint::parse_all`]): each is checked by the same rules, the first bad one is
//! refused with the same error, and an empty list is refused too. Which of them a
//! client opens, and when it moves on to the next, is [`Reconnect`](crate::Reconnect)'s
//! policy (the first, then the next after every failure, round robin).

/// An endpoint that passed the checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The endpoint with at least `/` as its path.
    base: String,
    host: String,
    port: u16,
    secure: bool,
}

/// Why an endpoint was refused. Its text (`invalid endpoint "…": why`) is the error
/// both clients give.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointError {
    endpoint: String,
    reason: &'static str,
}

/// Why an empty list of endpoints is refused: the reason of its [`EndpointError`],
/// whose endpoint is `""`.
const EMPTY_LIST: &str = "no endpoint given (the list of endpoints is empty)";

impl EndpointError {
    /// The endpoint given (`""` when the list of endpoints was empty).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// What is wrong with it.
    pub fn reason(&self) -> &'static str {
        self.reason
    }
}

impl std::fmt::Display for EndpointError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid endpoint {:?}: {}", self.endpoint, self.reason)
    }
}

impl std::error::Error for EndpointError {}

impl Endpoint {
    /// Checks an endpoint (see the module documentation for the rules).
    ///
    /// # Errors
    /// [`EndpointError`] saying what is wrong.
    pub fn parse(endpoint: &str) -> Result<Endpoint, EndpointError> {
        let invalid = |reason| EndpointError {
            endpoint: endpoint.to_owned(),
            reason,
        };
        let (secure, rest) = if let Some(rest) = endpoint.strip_prefix("ws://") {
            (false, rest)
        } else if let Some(rest) = endpoint.strip_prefix("wss://") {
            (true, rest)
        } else {
            return Err(invalid("it must start with ws:// or wss://"));
        };
        if endpoint.contains(|c: char| c.is_whitespace() || c.is_control()) {
            return Err(invalid("it contains whitespace or control characters"));
        }
        if endpoint.contains('#') {
            return Err(invalid("a WebSocket URL has no fragment (#)"));
        }
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(authority_end);
        // Credentials (`user:password@`) are not part of the host.
        let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
        let (host, port) = match host_port.strip_prefix('[') {
            // An IPv6 address: `[::1]:5000`.
            Some(bracketed) => {
                let (host, after) = bracketed
                    .split_once(']')
                    .ok_or_else(|| invalid("the IPv6 address lacks its closing ]"))?;
                match after {
                    "" => (host, None),
                    _ => match after.strip_prefix(':') {
                        Some(port) => (host, Some(port)),
                        None => return Err(invalid("the port must follow the host after :")),
                    },
                }
            }
            None => match host_port.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (host_port, None),
            },
        };
        if host.is_empty() {
            return Err(invalid("it names no host"));
        }
        let default_port = if secure { 443 } else { 80 };
        let port = match port {
            None | Some("") => default_port,
            Some(port) => port
                .parse()
                .map_err(|_| invalid("the port must be a number from 0 to 65535"))?,
        };
        let base = match tail.chars().next() {
            Some('/') => endpoint.to_owned(),
            _ => format!(
                "{}{authority}/{tail}",
                &endpoint[..endpoint.len() - rest.len()]
            ),
        };
        Ok(Endpoint {
            base,
            host: host.to_owned(),
            port,
            secure,
        })
    }

    /// Checks a list of endpoints, the servers a client may connect to, in order:
    /// each as [`Endpoint::parse`] does.
    ///
    /// ```
    /// # use state_sync_protocol::Endpoint;
    /// let endpoints = Endpoint::parse_all(["ws://a:5000", "ws://b:5000"]).unwrap();
    /// assert_eq!(endpoints[1].host(), "b");
    /// assert_eq!(
    ///     Endpoint::parse_all(["ws://a:5000", "http://b"]).unwrap_err().to_string(),
    ///     r#"invalid endpoint "http://b": it must start with ws:// or wss://"#
    /// );
    /// assert_eq!(
    ///     Endpoint::parse_all::<[&str; 0]>([]).unwrap_err().to_string(),
    ///     r#"invalid endpoint "": no endpoint given (the list of endpoints is empty)"#
    /// );
    /// ```
    ///
    /// # Errors
    /// The [`EndpointError`] of the first endpoint refused, or one whose endpoint is
    /// `""` when the list is empty.
    pub fn parse_all<I>(endpoints: I) -> Result<Vec<Endpoint>, EndpointError>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let parsed = endpoints
            .into_iter()
            .map(|endpoint| Endpoint::parse(endpoint.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        if parsed.is_empty() {
            return Err(EndpointError {
                endpoint: String::new(),
                reason: EMPTY_LIST,
            });
        }
        Ok(parsed)
    }

    /// The host to connect to (an IPv6 address without its brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port to connect to: the endpoint's, or 80 for `ws://` and 443 for `wss://`.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether the endpoint is `wss://` (TLS).
    pub fn is_secure(&self) -> bool {
        self.secure
    }

    /// The URL to open: the endpoint with `identifier` and `token` (empty when `None`)
    /// in its query, both percent-encoded.
    ///
    /// ```
    /// # use state_sync_protocol::Endpoint;
    /// let endpoint = Endpoint::parse("ws://localhost:5000").unwrap();
    /// assert_eq!(
    ///     endpoint.connection_url("alice & bob", Some("t")),
    ///     "ws://localhost:5000/?identifier=alice%20%26%20bob&token=t"
    /// );
    /// ```
    pub fn connection_url(&self, identifier: &str, token: Option<&str>) -> String {
        let separator = match self.base.split_once('?') {
            None => "?",
            Some((_, "")) => "",
            Some((_, query)) if query.ends_with('&') => "",
            Some(_) => "&",
        };
        let mut url = format!("{}{separator}identifier=", self.base);
        encode_into(&mut url, identifier);
        url.push_str("&token=");
        encode_into(&mut url, token.unwrap_or(""));
        url
    }
}

/// Appends `value` percent-encoded: every byte but RFC 3986's unreserved characters.
fn encode_into(out: &mut String, value: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0xf)]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(endpoint: &str, identifier: &str, token: Option<&str>) -> String {
        Endpoint::parse(endpoint)
            .map(|e| e.connection_url(identifier, token))
            .unwrap_or_else(|e| e.to_string())
    }

    #[test]
    fn builds_the_original_url_with_an_empty_token_when_there_is_none() {
        assert_eq!(
            url("ws://localhost:5000", "alice", Some("t")),
            "ws://localhost:5000/?identifier=alice&token=t"
        );
        assert_eq!(
            url("ws://h:1/sync", "a", None),
            "ws://h:1/sync?identifier=a&token="
        );
        assert_eq!(url("wss://h/", "a", None), "wss://h/?identifier=a&token=");
    }

    #[test]
    fn identifier_and_token_are_percent_encoded_utf8() {
        assert_eq!(
            url("ws://h/", "a b&c=d+e", Some("é/?#%")),
            "ws://h/?identifier=a%20b%26c%3Dd%2Be&token=%C3%A9%2F%3F%23%25"
        );
        assert_eq!(
            url("ws://h/", "Az09-._~", None),
            "ws://h/?identifier=Az09-._~&token=",
            "unreserved characters stay"
        );
    }

    #[test]
    fn a_query_in_the_endpoint_is_kept() {
        assert_eq!(
            url("wss://h/sync?room=1", "a", None),
            "wss://h/sync?room=1&identifier=a&token="
        );
        assert_eq!(
            url("ws://h?room=1", "a", None),
            "ws://h/?room=1&identifier=a&token="
        );
        assert_eq!(url("ws://h/p?", "a", None), "ws://h/p?identifier=a&token=");
        assert_eq!(
            url("ws://h/p?x=1&", "a", None),
            "ws://h/p?x=1&identifier=a&token="
        );
    }

    #[test]
    fn host_and_port_are_where_to_connect() {
        let at = |endpoint| {
            let e = Endpoint::parse(endpoint).unwrap();
            (e.host().to_owned(), e.port(), e.is_secure())
        };
        assert_eq!(
            at("ws://localhost:5000/x"),
            ("localhost".into(), 5000, false)
        );
        assert_eq!(at("ws://example.com"), ("example.com".into(), 80, false));
        assert_eq!(at("wss://example.com?x"), ("example.com".into(), 443, true));
        assert_eq!(at("ws://[::1]:8080"), ("::1".into(), 8080, false));
        assert_eq!(at("wss://[::1]"), ("::1".into(), 443, true));
        assert_eq!(at("ws://user:pw@h:81"), ("h".into(), 81, false));
    }

    #[test]
    fn refusals_say_what_is_wrong() {
        let refused = |endpoint| Endpoint::parse(endpoint).unwrap_err().to_string();
        assert_eq!(
            refused("http://h"),
            r#"invalid endpoint "http://h": it must start with ws:// or wss://"#
        );
        assert!(refused("WS://h").contains("ws:// or wss://"), "lower case");
        assert!(refused("localhost:5000").contains("ws:// or wss://"));
        assert!(refused("ws://").contains("no host"));
        assert!(refused("ws://:5000/").contains("no host"));
        assert!(refused("ws://h:port").contains("port"));
        assert!(refused("ws://h:70000").contains("port"));
        assert!(refused("ws://[::1").contains("]"));
        assert!(refused("ws://h/#x").contains("fragment"));
        assert!(refused("ws://h /").contains("whitespace"));
        let error = Endpoint::parse("ftp://h").unwrap_err();
        assert_eq!(error.endpoint(), "ftp://h");
        assert_eq!(error.reason(), "it must start with ws:// or wss://");
    }

    #[test]
    fn a_list_is_checked_endpoint_by_endpoint_and_must_not_be_empty() {
        let hosts = |list: &[&str]| {
            Endpoint::parse_all(list)
                .map(|endpoints| endpoints.iter().map(|e| e.host().to_owned()).collect())
                .map_err(|e| e.to_string())
        };
        assert_eq!(
            hosts(&["ws://a", "wss://b:1/x"]),
            Ok(vec!["a".into(), "b".into()])
        );
        assert_eq!(hosts(&["ws://a"]), Ok(vec!["a".into()]), "one is a list");
        assert_eq!(
            hosts(&["ws://a", "ws://b:port", "http://c"]),
            Err(
                r#"invalid endpoint "ws://b:port": the port must be a number from 0 to 65535"#
                    .into()
            ),
            "the first bad one, with the error a single endpoint gets"
        );
        let empty = Endpoint::parse_all(Vec::<String>::new()).unwrap_err();
        assert_eq!(empty.endpoint(), "");
        assert_eq!(
            empty.reason(),
            "no endpoint given (the list of endpoints is empty)"
        );
        assert_eq!(
            hosts(&[""]),
            Err(r#"invalid endpoint "": it must start with ws:// or wss://"#.into()),
            "an empty endpoint is not an empty list"
        );
    }
}
