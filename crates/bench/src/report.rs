//! What the load generator reports for one scenario run (one JSON line on stdout).

use serde::{Deserialize, Serialize};

/// The figures of one run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Report {
    /// `fanout`, `all-to-all`, `idle` or `hold`.
    pub scenario: String,
    /// Clients connected.
    pub clients: usize,
    /// Updates sent.
    pub updates: u64,
    /// Update frames received by clients.
    pub deliveries: u64,
    /// Seconds from the first send to the last delivery.
    pub seconds: f64,
    /// Deliveries per second.
    pub deliveries_per_second: f64,
    /// Latency from send to the last receiver, median, in milliseconds.
    pub p50_ms: f64,
    /// Same, 99th percentile.
    pub p99_ms: f64,
    /// Server CPU time during the run, in seconds (when the server's pid was given).
    pub server_cpu_seconds: f64,
    /// Server CPU per delivery, in microseconds.
    pub server_cpu_us_per_delivery: f64,
    /// The part of it in user space (the rest is the kernel's), in microseconds.
    #[serde(default)]
    pub server_user_us_per_delivery: f64,
    /// Server RSS before the clients connected, in bytes.
    pub rss_before: u64,
    /// Server RSS with every client connected, in bytes.
    pub rss_after: u64,
    /// With a durable server: transactions it committed during the run (filled in by
    /// the runner from the server's log, not by the load generator).
    #[serde(default)]
    pub commits: u64,
    /// Changes it wrote in them.
    #[serde(default)]
    pub changes: u64,
    /// With several processes (a cluster): each one's CPU during the run. Each server's
    /// per delivery counts the deliveries to its own clients; Redis's, all of them.
    #[serde(default)]
    pub processes: Vec<ProcessCpu>,
    /// With `--state-bytes`: the size of the state the clients attached to, in bytes
    /// (its JSON), and the attaching of every client: the wall time per client, and
    /// the server's CPU time per client (user and system), in milliseconds.
    #[serde(default)]
    pub state_bytes: u64,
    /// Wall time from the first attach to the last, divided by the clients.
    #[serde(default)]
    pub attach_ms: f64,
    /// Server CPU time while they attached, divided by the clients.
    #[serde(default)]
    pub attach_server_cpu_ms: f64,
    /// Correctness problems (missing, duplicated or reordered updates, failed
    /// connections); empty when every client received every update exactly once and
    /// in order.
    pub errors: Vec<String>,
}

/// The CPU one process of a run used.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ProcessCpu {
    /// Its name (`server1`, `redis`).
    pub name: String,
    /// CPU time during the run, in seconds.
    pub cpu_seconds: f64,
    /// Per delivery it took part in, in microseconds.
    pub us_per_delivery: f64,
}
