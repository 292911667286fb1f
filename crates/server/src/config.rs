//! The settings of a server, with their defaults (each documented on its
//! [`Builder`](crate::Builder) method).

use std::time::Duration;

use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// Settings of a [`StateSyncer`]; see the [`Builder`] methods for each default.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) max_connections: usize,
    pub(crate) max_message_size: usize,
    pub(crate) outgoing_queue: usize,
    pub(crate) outgoing_queue_bytes: usize,
    pub(crate) write_timeout: Duration,
    pub(crate) handshake_timeout: Duration,
    pub(crate) hook_timeout: Duration,
    pub(crate) max_state_bytes: usize,
    pub(crate) session_retention: Duration,
    pub(crate) session_log_bytes_per_state: usize,
    pub(crate) session_log_bytes: usize,
    pub(crate) read_buffer_size: usize,
    pub(crate) static_files: Option<std::path::PathBuf>,
    pub(crate) presence: crate::presence::PresenceConfig,
    /// States whose attached clients have a metrics label of their own.
    pub(crate) metrics_states: std::sync::Arc<std::collections::HashSet<String>>,
    /// Plain `GET` routes answered on the server's port (`/metrics`, …).
    pub(crate) routes: Routes,
    pub(crate) storage: Option<crate::durable::Storage>,
    #[cfg(feature = "redis")]
    pub(crate) redis: Option<crate::cluster::Redis>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_connections: 25_000,
            max_message_size: 1 << 20,
            outgoing_queue: 4096,
            outgoing_queue_bytes: 16 << 20,
            write_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            hook_timeout: Duration::from_secs(5),
            max_state_bytes: 4 << 20,
            session_retention: Duration::from_secs(600),
            session_log_bytes_per_state: 8 << 20,
            session_log_bytes: 64 << 20,
            read_buffer_size: 256,
            static_files: None,
            presence: crate::presence::PresenceConfig::default(),
            metrics_states: std::sync::Arc::default(),
            routes: Routes::default(),
            storage: None,
            #[cfg(feature = "redis")]
            redis: None,
        }
    }
}

/// What answers a plain `GET` of a path: its content type and body.
pub(crate) type RouteHandler = std::sync::Arc<dyn Fn() -> String + Send + Sync>;

/// Plain `GET` routes, by path.
#[derive(Clone, Default)]
pub(crate) struct Routes(pub(crate) Vec<(String, &'static str, RouteHandler)>);

impl std::fmt::Debug for Routes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(path, _, _)| path))
            .finish()
    }
}

impl Config {
    pub(crate) fn websocket_config(&self) -> WebSocketConfig {
        WebSocketConfig::default()
            .read_buffer_size(self.read_buffer_size)
            // tungstenite writes only control frames (into the outbox, see
            // wire::Duplex): its buffer stays small.
            .write_buffer_size(crate::wire::MAX_FRAGMENT)
            .max_write_buffer_size(usize::MAX)
            .max_message_size(Some(self.max_message_size))
            .max_frame_size(Some(self.max_message_size))
    }
}
