//! The server as a program:
//! `state-sync-server [--config FILE] [--addr HOST:PORT] [--data DIR | --redis URL] [--state ID]...`
//!
//! `cargo build --release --bin state-sync-server`, then
//! `target/release/state-sync-server --data ./data --state chat`, or
//! `target/release/state-sync-server --config state-sync.toml` (see
//! `examples/state-sync.toml`). Prints `listening on HOST:PORT` once it accepts
//! connections. With `--data`, every state is saved in DIR (an update is acknowledged
//! once it is on disk) and comes back after a restart, a deploy or a crash; without it,
//! states live in memory. With `--redis`, the process is one server of a cluster:
//! several of them on the same Redis serve the same states, one order of updates per
//! state. SIGTERM or Ctrl-C: it stops accepting, closes every connection with 1001,
//! saves what is in flight and exits 0. `--help` lists the options.
//!
//! # Layout
//! - `args`: the command line; `config`: the configuration file and what it
//!   configures (`limits`: its `[limits]`; `units`: durations and sizes as written;
//!   `locate`: errors naming the file, line and key).
//! - `auth`: static tokens and JWT, the middleware and the per-state check.
//! - `webhook`: a state's interceptor as an HTTP webhook, and its failure policy.

mod args;
mod auth;
mod config;
mod limits;
mod locate;
mod units;
mod webhook;

use std::process::ExitCode;
use std::sync::Arc;

use state_sync_server::{Redis, StateSyncer, Storage};

use args::{Args, StoreFlag, USAGE};
use config::{Config, LogFormat, StateSpec, Store};

fn main() -> ExitCode {
    let args = match args::parse(std::env::args().skip(1)) {
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
    let config = match &args.config {
        Some(path) => match config::load(path) {
            Ok(config) => config,
            Err(mistake) => {
                eprintln!("state-sync-server: {mistake}");
                return ExitCode::from(2);
            }
        },
        None => Config::default(),
    };
    init_logs(&config);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("state-sync-server: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("state-sync-server: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr, as text or one JSON object per line; `RUST_LOG` wins over the
/// file's level.
fn init_logs(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(config.log.level.as_deref().unwrap_or("info"))
    });
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => logs.json().with_ansi(false).init(),
    }
}

/// The file's configuration with the flags' overrides.
fn merge(args: Args, mut config: Config) -> Result<Config, Box<dyn std::error::Error>> {
    if let Some(addr) = args.addr {
        config.addr = Some(addr);
    }
    match args.store {
        None => {}
        Some(StoreFlag::Data(dir)) => config.store = Store::Data(dir),
        Some(StoreFlag::Redis(url)) => config.store = Store::Redis(Redis::new(url)?),
        Some(StoreFlag::RedisCluster(nodes)) => config.store = Store::Redis(Redis::cluster(nodes)?),
    }
    for id in args.states {
        if !config.states.iter().any(|state| state.id == id) {
            config.states.push(StateSpec::plain(id));
        }
    }
    Ok(config)
}

async fn run(args: Args, config: Config) -> Result<(), Box<dyn std::error::Error>> {
    let config = merge(args, config)?;
    let auth = Arc::new(config.auth);
    let mut builder = StateSyncer::builder()
        .authorize(move |request| std::future::ready(auth.authorize(&request)));
    builder = config.limits.apply(builder);
    if config.metrics.enabled {
        // The process's recorder, before the server counts anything; its summaries are
        // kept from growing by an upkeep every few seconds.
        let prometheus = metrics_exporter_prometheus::PrometheusBuilder::new()
            .install_recorder()
            .map_err(|e| format!("cannot install the metrics recorder: {e}"))?;
        let upkeep = prometheus.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(std::time::Duration::from_secs(5));
            loop {
                every.tick().await;
                upkeep.run_upkeep();
            }
        });
        // Labelled: the states named, else those the file declares (bounded either way).
        let labelled = config
            .metrics
            .states
            .clone()
            .unwrap_or_else(|| config.states.iter().map(|state| state.id.clone()).collect());
        builder = builder.metrics_states(labelled).route(
            config.metrics.path.clone(),
            "text/plain; version=0.0.4",
            move || prometheus.render(),
        );
    }
    if let Some(tls) = config.tls {
        builder = builder.tls(tls);
    }
    if let Some(folder) = config.static_files {
        builder = builder.static_files(folder);
    }
    match config.store {
        Store::Memory => {}
        Store::Data(dir) => builder = builder.storage(Storage::open(dir)?),
        Store::Redis(redis) => builder = builder.redis(redis),
    }
    let syncer = builder.build();
    for state in &config.states {
        syncer.create_state(state.options())?;
    }
    let addr = config.addr.as_deref().unwrap_or("0.0.0.0:5000");
    let server = syncer
        .bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    // Listening for SIGTERM before saying we listen: a supervisor that stops the
    // server right after it started still gets a graceful stop.
    let stop = stopped()?;
    println!("listening on {}", server.local_addr());
    stop.await;
    tracing::info!("stopping");
    server.shutdown().await;
    syncer.sync().await?;
    syncer.close_storage();
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C (SIGINT); both are caught from the moment it returns
/// (`tokio::signal::ctrl_c` would install its handler only when first polled).
fn stopped() -> std::io::Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut terminate = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        Ok(async move {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = interrupt.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
        })
    }
}
