//! Our server alone: `bench-server --addr 127.0.0.1:PORT [--threads N]`
//!
//! One empty state named `bench`, no authorization, no hooks, default settings, so that
//! any load generator can drive it. Prints `listening on ADDR`; stops on Ctrl-C or a
//! signal. `--threads` sets the tokio worker threads (default: one per core).

use serde_json::json;
use state_sync_bench::server_args::{ServerArgs, server_args};
use state_sync_server::{StateOptions, StateSyncer};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let ServerArgs { addr, runtime } = server_args("bench-server")?;
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
