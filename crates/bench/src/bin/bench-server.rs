//! Our server alone: `bench-server --addr 127.0.0.1:PORT [--threads N]`
//!
//! One empty state named `bench`, no authorization, no hooks, default settings, so that
//! any load generator can drive it. Prints `listening on ADDR`; stops on Ctrl-C or a
//! signal. `--threads` sets the tokio worker threads (default: one per core).

use serde_json::json;
use state_sync_server::{StateOptions, StateSyncer};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut addr = "127.0.0.1:5000".to_owned();
    let mut threads = std::thread::available_parallelism().map_or(1, usize::from);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--addr" => addr = value,
            "--threads" => threads = value.parse()?,
            other => {
                return Err(format!(
                    "unknown option {other}; usage: bench-server --addr HOST:PORT [--threads N]"
                )
                .into());
            }
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let syncer = StateSyncer::new();
        syncer.create_state(
            StateOptions::new()
                .identifier("bench")
                .initial_value(json!({})),
        )?;
        let server = syncer.bind(addr.as_str()).await?;
        println!("listening on {}", server.local_addr());
        tokio::signal::ctrl_c().await?;
        server.shutdown().await;
        Ok(())
    })
}
