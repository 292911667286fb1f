//! The command line both benchmark servers take: `--addr HOST:PORT [--threads N]`.

use crate::args::{self, value};

/// A benchmark server's address and tokio runtime.
#[derive(Debug)]
pub struct ServerArgs {
    /// Where to listen.
    pub addr: String,
    /// The runtime, with `--threads` worker threads (default: one per core).
    pub runtime: tokio::runtime::Runtime,
    /// `--data DIR`: save the states there (our server only).
    pub data: Option<String>,
    /// `--redis URL`: one server of a cluster on that Redis (our server only).
    pub redis: Option<String>,
}

/// Reads `--addr HOST:PORT [--threads N]` from the command line (`--help` prints the
/// options and exits); `program` names the binary in the usage message.
///
/// # Errors
/// A message for a missing address or a malformed value, or when the runtime cannot
/// be built.
pub fn server_args(program: &str) -> Result<ServerArgs, Box<dyn std::error::Error>> {
    let args = args::parse(
        &format!("{program} --addr HOST:PORT [--threads N] [--data DIR | --redis URL]"),
        &[
            value(
                "--addr",
                "HOST:PORT",
                "where to listen (required; port 0 picks one)",
            ),
            value(
                "--threads",
                "N",
                "tokio worker threads (default: one per core)",
            ),
            value(
                "--data",
                "DIR",
                "save the states in DIR (bench-server only)",
            ),
            value(
                "--redis",
                "URL",
                "one server of a cluster on the Redis at URL (bench-server only)",
            ),
        ],
    );
    let addr = args
        .text("--addr")
        .ok_or(format!(
            "{program}: --addr HOST:PORT is required (see --help)"
        ))?
        .to_owned();
    let threads = args
        .get("--threads")?
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()?;
    let data = args.text("--data").map(str::to_owned);
    let redis = args.text("--redis").map(str::to_owned);
    Ok(ServerArgs {
        addr,
        runtime,
        data,
        redis,
    })
}
