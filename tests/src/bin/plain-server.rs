//! A server with default settings for tests that need one in a process of its own
//! (for example under a low open-file limit): `plain-server`
//!
//! Binds `127.0.0.1:0`, prints `listening on 127.0.0.1:PORT` and serves one empty state,
//! `s`. Stop it with a signal.

use state_sync_server::{StateOptions, StateSyncer};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    if let Some(arg) = std::env::args().nth(1) {
        if arg == "--help" || arg == "-h" {
            println!(
                "usage: plain-server\n\nServes one empty state, s, on 127.0.0.1 (a free port) \
                 with default settings, and prints `listening on ADDR`. No options."
            );
            return Ok(());
        }
        return Err(
            format!("unknown argument {arg:?}; plain-server takes none (see --help)").into(),
        );
    }
    let syncer = StateSyncer::new();
    syncer.create_state(StateOptions::new().identifier("s"))?;
    let server = syncer.bind("127.0.0.1:0").await?;
    println!("listening on {}", server.local_addr());
    tokio::signal::ctrl_c().await?;
    server.shutdown().await;
    Ok(())
}
