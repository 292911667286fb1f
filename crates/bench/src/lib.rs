//! Benchmarks of server-state-sync. Binaries:
//!
//! - `bench-server`: our server alone, one empty state named `bench`, no auth, no hooks.
//! - `floor-server` (baseline): a minimal tokio-tungstenite broadcast server with no
//!   state logic: what this stack allows on this machine.
//! - `syscall-floor` (baseline): one `write` per delivery on raw TCP sockets, no
//!   WebSocket and no JSON: the machine's floor for one update at a time.
//! - `loadgen`: the load generator (fanout, all-to-all, idle); checks that every client
//!   received every update exactly once and in order, and fails otherwise.
//! - `bench`: the runner: starts each server pinned to one core and the load generator
//!   on the other, reads the server's CPU time and RSS from `/proc`, prints a table and
//!   writes `docs/benchmarks.md` and its chart.
//!
//! The Node.js baseline (`baselines/node-ws/server.js`) speaks the same protocol on the
//! `ws` package, serializing each broadcast once per recipient like the original.
//!
//! # Layout
//! - `args`: the one command-line parser of every binary (`--help` included).
//! - `proc_stats`: CPU time and RSS of a process, from `/proc`.
//! - `report`: the result of one scenario run, as the load generator prints it.
//! - `runner`: the scenarios, starting servers pinned to cores, repeated runs.
//! - `server_args`: the command line of the benchmark servers.
//! - `summary`: the report's table, chart, targets and document.

pub mod args;
pub mod proc_stats;
pub mod report;
pub mod runner;
pub mod server_args;
pub mod summary;
