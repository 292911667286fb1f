//! Our server alone: `bench-server --addr 127.0.0.1:PORT [--threads N] [--data DIR]`
//!
//! One empty state named `bench`, no authorization, no hooks, default settings, so that
//! any load generator can drive it. Prints `listening on ADDR`; stops on Ctrl-C or a
//! signal. `--threads` sets the tokio worker threads (default: one per core). With
//! `--data` the states are saved in DIR, and every 200 ms a line
//! `store: C commits, N changes` on stderr tells how the group commit goes. With
//! `--redis URL` it is one server of a cluster on that Redis.

use serde_json::json;
use state_sync_bench::server_args::{ServerArgs, server_args};
use state_sync_server::{Redis, StateOptions, StateSyncer, Storage};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let ServerArgs {
        addr,
        runtime,
        data,
        redis,
    } = server_args("bench-server")?;
    runtime.block_on(async {
        let mut builder = StateSyncer::builder();
        if let Some(dir) = &data {
            let storage = Storage::open(dir)?;
            builder = builder.storage(storage.clone());
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    let stats = storage.stats();
                    eprintln!(
                        "store: {} commits, {} changes",
                        stats.commits, stats.changes
                    );
                }
            });
        }
        if let Some(url) = &redis {
            builder = builder.redis(Redis::new(url.as_str())?);
        }
        let syncer = builder.build();
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
