//! Where a client's connection stands, with the names both clients show.

/// Where the connection to the server stands.
///
/// The native client returns from connecting only once connected, so it is never seen
/// `Connecting`; the browser client, whose constructor returns at once, starts in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConnectionStatus {
    /// The first connection is being opened.
    Connecting,
    /// Connected (attached to the state, or about to be).
    Connected,
    /// The connection was lost; the client is waiting or trying to reconnect.
    Reconnecting,
    /// Closed for good: by the application, by giving up reconnecting, or because the
    /// server refused the client.
    Closed,
}

impl ConnectionStatus {
    /// The name JavaScript sees: `"connecting"`, `"connected"`, `"reconnecting"` or
    /// `"closed"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionStatus::Connecting => "connecting",
            ConnectionStatus::Connected => "connected",
            ConnectionStatus::Reconnecting => "reconnecting",
            ConnectionStatus::Closed => "closed",
        }
    }

    /// The status while the client waits to try again after a connection was lost or
    /// could not be opened: still `Connecting` until a first connection opened,
    /// `Reconnecting` after; `Closed` stays closed.
    pub fn retrying(self) -> ConnectionStatus {
        match self {
            ConnectionStatus::Connecting => ConnectionStatus::Connecting,
            ConnectionStatus::Connected | ConnectionStatus::Reconnecting => {
                ConnectionStatus::Reconnecting
            }
            ConnectionStatus::Closed => ConnectionStatus::Closed,
        }
    }
}

impl std::fmt::Display for ConnectionStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_ones_javascript_sees() {
        let names = [
            ConnectionStatus::Connecting,
            ConnectionStatus::Connected,
            ConnectionStatus::Reconnecting,
            ConnectionStatus::Closed,
        ]
        .map(ConnectionStatus::as_str);
        assert_eq!(names, ["connecting", "connected", "reconnecting", "closed"]);
        assert_eq!(ConnectionStatus::Reconnecting.to_string(), "reconnecting");
    }

    #[test]
    fn a_client_that_never_connected_stays_connecting_while_it_retries() {
        assert_eq!(
            ConnectionStatus::Connecting.retrying(),
            ConnectionStatus::Connecting
        );
        assert_eq!(
            ConnectionStatus::Connected.retrying(),
            ConnectionStatus::Reconnecting
        );
        assert_eq!(
            ConnectionStatus::Reconnecting.retrying(),
            ConnectionStatus::Reconnecting
        );
        assert_eq!(
            ConnectionStatus::Closed.retrying(),
            ConnectionStatus::Closed
        );
    }
}
