//! The `[limits]` section of the configuration file: every bound and time limit the
//! server library's `Builder` exposes, under the same names in kebab-case. A key left
//! out keeps the library's default (documented on each `Builder` method and in the
//! README's "Behaviour worth knowing").

use std::time::Duration;

use serde::Deserialize;
use state_sync_server::Builder;

use crate::units::{Bytes, Span};

/// `Builder::hook_timeout`'s default: the time limit webhooks must stay under when the
/// file does not set `limits.hook-timeout`.
pub(crate) const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(5);

/// `Builder::max_state_bytes`'s default: what a webhook's answer may weigh when the
/// file does not set `limits.max-state-bytes`.
pub(crate) const DEFAULT_MAX_STATE_BYTES: usize = 4 << 20;

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct Limits {
    max_connections: Option<usize>,
    max_message_size: Option<Bytes>,
    max_state_bytes: Option<Bytes>,
    outgoing_queue: Option<usize>,
    outgoing_queue_bytes: Option<Bytes>,
    write_timeout: Option<Span>,
    handshake_timeout: Option<Span>,
    hook_timeout: Option<Span>,
    session_retention: Option<Span>,
    session_log_bytes_per_state: Option<Bytes>,
    session_log_bytes: Option<Bytes>,
    read_buffer_size: Option<Bytes>,
    presence_grace: Option<Span>,
    presence_interval: Option<Span>,
    max_presence_bytes: Option<Bytes>,
    presence_rate: Option<u32>,
    max_presence_entries: Option<usize>,
}

impl Limits {
    /// The hook time limit the server will use.
    pub(crate) fn hook_timeout(&self) -> Duration {
        self.hook_timeout
            .map_or(DEFAULT_HOOK_TIMEOUT, |span| span.0)
    }

    /// The largest state the server will allow, in bytes of JSON.
    pub(crate) fn max_state_bytes(&self) -> usize {
        self.max_state_bytes
            .map_or(DEFAULT_MAX_STATE_BYTES, |b| b.0)
    }

    /// A limit that cannot work, as (key, why).
    pub(crate) fn check(&self) -> Result<(), (&'static str, String)> {
        if self.max_connections == Some(0) {
            return Err(("max-connections", "must be at least 1".into()));
        }
        if self.hook_timeout.is_some_and(|span| span.0.is_zero()) {
            return Err((
                "hook-timeout",
                "must be longer than 0: every hook would fail".into(),
            ));
        }
        if self.max_message_size.is_some_and(|b| b.0 < 64) {
            return Err((
                "max-message-size",
                "must be at least 64 bytes: no message would fit".into(),
            ));
        }
        Ok(())
    }

    /// The builder with every limit the file sets.
    pub(crate) fn apply<K: Send + Sync + 'static>(&self, mut builder: Builder<K>) -> Builder<K> {
        if let Some(max) = self.max_connections {
            builder = builder.max_connections(max);
        }
        if let Some(Bytes(bytes)) = self.max_message_size {
            builder = builder.max_message_size(bytes);
        }
        if let Some(Bytes(bytes)) = self.max_state_bytes {
            builder = builder.max_state_bytes(bytes);
        }
        if let Some(frames) = self.outgoing_queue {
            builder = builder.outgoing_queue(frames);
        }
        if let Some(Bytes(bytes)) = self.outgoing_queue_bytes {
            builder = builder.outgoing_queue_bytes(bytes);
        }
        if let Some(Span(timeout)) = self.write_timeout {
            builder = builder.write_timeout(timeout);
        }
        if let Some(Span(timeout)) = self.handshake_timeout {
            builder = builder.handshake_timeout(timeout);
        }
        if let Some(Span(timeout)) = self.hook_timeout {
            builder = builder.hook_timeout(timeout);
        }
        if let Some(Span(retention)) = self.session_retention {
            builder = builder.session_retention(retention);
        }
        if let Some(Bytes(bytes)) = self.session_log_bytes_per_state {
            builder = builder.session_log_bytes_per_state(bytes);
        }
        if let Some(Bytes(bytes)) = self.session_log_bytes {
            builder = builder.session_log_bytes(bytes);
        }
        if let Some(Bytes(bytes)) = self.read_buffer_size {
            builder = builder.read_buffer_size(bytes);
        }
        if let Some(Span(grace)) = self.presence_grace {
            builder = builder.presence_grace(grace);
        }
        if let Some(Span(interval)) = self.presence_interval {
            builder = builder.presence_interval(interval);
        }
        if let Some(Bytes(bytes)) = self.max_presence_bytes {
            builder = builder.max_presence_bytes(bytes);
        }
        if let Some(rate) = self.presence_rate {
            builder = builder.presence_rate(rate);
        }
        if let Some(entries) = self.max_presence_entries {
            builder = builder.max_presence_entries(entries);
        }
        builder
    }
}
