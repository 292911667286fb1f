//! The server as a program:
//! `state-sync-server [--addr HOST:PORT] [--data DIR | --redis URL] [--state ID]...`
//!
//! `cargo build --release --bin state-sync-server`, then
//! `target/release/state-sync-server --data ./data --state chat`. Prints
//! `listening on HOST:PORT` once it accepts connections. With `--data`, every state is
//! saved in DIR (an update is acknowledged once it is on disk) and comes back after a
//! restart, a deploy or a crash; without it, states live in memory. With `--redis`,
//! the process is one server of a cluster: several of them on the same Redis serve the
//! same states, one order of updates per state. SIGTERM or Ctrl-C:
//! it stops accepting, closes every connection with 1001, saves what is in flight and
//! exits 0. `--help` lists the options.

use std::process::ExitCode;

use state_sync_server::{Redis, StateOptions, StateSyncer, Storage};

const USAGE: &str =
    "usage: state-sync-server [--addr HOST:PORT] [--data DIR | --redis URL | --redis-cluster URL,URL...] [--state ID]...

options:
  --addr HOST:PORT   where to listen (default 0.0.0.0:5000; port 0 picks a free one)
  --data DIR         save every state in DIR (created if missing); without it, states
                     live in memory only
  --redis URL        be one server of a cluster: keep the states in the Redis at URL
                     (redis://HOST:PORT/), shared with every server started with it
  --redis-cluster URL,URL...
                     the same on a Redis Cluster, reached through any of these nodes
  --state ID         create the state ID with the value {} unless it exists (repeatable)
  --help             print this and exit

Clients connect to ws://HOST:PORT/?identifier=<client id>&token=<token>.
Logs go to stderr; RUST_LOG=debug shows more.";

#[derive(Debug)]
struct Args {
    addr: String,
    data: Option<std::path::PathBuf>,
    redis: Option<String>,
    redis_cluster: Option<Vec<String>>,
    states: Vec<String>,
}

fn parse(mut words: impl Iterator<Item = String>) -> Result<Option<Args>, String> {
    let mut args = Args {
        addr: "0.0.0.0:5000".into(),
        data: None,
        redis: None,
        redis_cluster: None,
        states: Vec::new(),
    };
    while let Some(word) = words.next() {
        let mut value = |flag: &str| words.next().ok_or_else(|| format!("{flag} needs a value"));
        match word.as_str() {
            "--help" | "-h" => return Ok(None),
            "--addr" => args.addr = value("--addr")?,
            "--data" => args.data = Some(value("--data")?.into()),
            "--redis" => args.redis = Some(value("--redis")?),
            "--redis-cluster" => {
                let nodes: Vec<String> = value("--redis-cluster")?
                    .split(',')
                    .filter(|node| !node.is_empty())
                    .map(str::to_owned)
                    .collect();
                if nodes.is_empty() {
                    return Err("--redis-cluster needs the URL of at least one node".into());
                }
                args.redis_cluster = Some(nodes);
            }
            "--state" => {
                let id = value("--state")?;
                if id.is_empty() {
                    return Err("--state needs a non-empty identifier".into());
                }
                args.states.push(id);
            }
            other => return Err(format!("unknown option {other}")),
        }
    }
    let stores = [
        args.data.is_some(),
        args.redis.is_some(),
        args.redis_cluster.is_some(),
    ];
    if stores.iter().filter(|given| **given).count() > 1 {
        return Err(
            "--data, --redis and --redis-cluster do not go together: one place keeps the states"
                .into(),
        );
    }
    Ok(Some(args))
}

fn main() -> ExitCode {
    let args = match parse(std::env::args().skip(1)) {
        Ok(Some(args)) => args,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(mistake) => {
            eprintln!("state-sync-server: {mistake}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("state-sync-server: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("state-sync-server: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let mut builder = StateSyncer::builder();
    if let Some(dir) = &args.data {
        builder = builder.storage(Storage::open(dir)?);
    }
    if let Some(url) = &args.redis {
        builder = builder.redis(Redis::new(url.as_str())?);
    }
    if let Some(nodes) = &args.redis_cluster {
        builder = builder.redis(Redis::cluster(nodes.iter().cloned())?);
    }
    let syncer = builder.build();
    for id in &args.states {
        syncer.create_state(StateOptions::new().identifier(id.as_str()))?;
    }
    let server = syncer
        .bind(args.addr.as_str())
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.addr))?;
    println!("listening on {}", server.local_addr());
    stopped().await;
    tracing::info!("stopping");
    server.shutdown().await;
    syncer.sync().await?;
    syncer.close_storage();
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C (SIGINT).
async fn stopped() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = terminate.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
