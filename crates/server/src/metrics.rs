//! What a running server counts, through the [`metrics`] facade: whoever runs the
//! server installs a recorder (the standalone server installs
//! `metrics-exporter-prometheus` and serves `/metrics`); without one, every count is a
//! no-op.
//!
//! | name | kind | labels | what |
//! |---|---|---|---|
//! | `state_sync_connections` | gauge | | open WebSocket connections |
//! | `state_sync_states` | gauge | | states held |
//! | `state_sync_clients` | gauge | `state` | attached clients: a label for each state named in [`Builder::metrics_states`](crate::Builder::metrics_states), `other` for the rest |
//! | `state_sync_updates_applied_total` | counter | | updates applied by this server |
//! | `state_sync_updates_refused_total` | counter | `reason` | updates refused (the reasons of STATE_UPDATE_FAILED: `vetoed`, `invalid`, `conflict`, …) |
//! | `state_sync_deliveries_total` | counter | | frames queued for clients by broadcasts (one per client per update) |
//! | `state_sync_outbox_overflows_total` | counter | | connections closed because their outgoing queue was full |
//! | `state_sync_slow_client_closes_total` | counter | | connections closed because a write made no progress in time |
//! | `state_sync_handshake_refusals_total` | counter | `cause` | upgrade requests refused (`unauthorized`, `middleware_panicked`, `middleware_timed_out`, `full`, `bad_request`, …) |
//! | `state_sync_hook_duration_seconds` | histogram | `hook` | how long user hooks ran |
//! | `state_sync_store_commit_seconds` | histogram | `backend` | how long a commit to the store took (`disk`: one fsync'd transaction; `redis`: one pipeline) |
//! | `state_sync_store_commit_batch` | histogram | `backend` | changes per commit |

use std::time::Duration;

use metrics::{Histogram, counter, gauge, histogram};

// Each count names its metric at the time (a lookup in the recorder, or nothing
// without one): a recorder installed after the server started still gets everything.

/// The open connections changed by `by`.
pub(crate) fn connections(by: f64) {
    gauge!("state_sync_connections").increment(by);
}

/// The states held changed by `by`.
pub(crate) fn states(by: f64) {
    gauge!("state_sync_states").increment(by);
}

/// The attached clients of a state changed by `by`; `label` is its own label, or
/// `None` for the states counted together.
pub(crate) fn clients(label: Option<&std::sync::Arc<str>>, by: f64) {
    let state = label.map_or_else(|| "other".to_owned(), ToString::to_string);
    gauge!("state_sync_clients", "state" => state).increment(by);
}

/// An update was applied.
pub(crate) fn update_applied() {
    counter!("state_sync_updates_applied_total").increment(1);
}

/// A broadcast queued this many frames.
pub(crate) fn delivered(frames: u64) {
    counter!("state_sync_deliveries_total").increment(frames);
}

/// A connection was closed because its outgoing queue was full.
pub(crate) fn overflowed() {
    counter!("state_sync_outbox_overflows_total").increment(1);
}

/// A connection was closed because a write to it made no progress in time.
pub(crate) fn slow_client_closed() {
    counter!("state_sync_slow_client_closes_total").increment(1);
}

/// An update was refused, for this reason.
pub(crate) fn update_refused(reason: &'static str) {
    counter!("state_sync_updates_refused_total", "reason" => reason).increment(1);
}

/// An upgrade request was refused, for this cause.
pub(crate) fn handshake_refused(cause: &'static str) {
    counter!("state_sync_handshake_refusals_total", "cause" => cause).increment(1);
}

/// A user hook ran this long.
pub(crate) fn hook_ran(hook: &'static str, took: Duration) {
    histogram!("state_sync_hook_duration_seconds", "hook" => hook).record(took.as_secs_f64());
}

/// The histograms of a store's commits: how long, and how many changes.
pub(crate) fn commit_histograms(backend: &'static str) -> (Histogram, Histogram) {
    (
        histogram!("state_sync_store_commit_seconds", "backend" => backend),
        histogram!("state_sync_store_commit_batch", "backend" => backend),
    )
}
