//! Baseline, the machine's floor for one delivery:
//! `syscall-floor --clients N --seconds S [--drain-core C]`
//!
//! No WebSocket, no JSON, no async runtime on the writing side: it writes the same
//! 100-byte payload once to each of N loopback TCP sockets (one `write` each), then
//! waits until a reader process has drained all of them (one update at a time, like a
//! fan-out with 1 update in flight), for S seconds. The readers run in a child process
//! (pinned to core C with `taskset` when given), so this process's CPU time is the
//! writing alone; it prints one JSON line (a `Report`), CPU per delivery split into
//! user space and kernel.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use state_sync_bench::args::{self, value};
use state_sync_bench::proc_stats::cpu_times;
use state_sync_bench::report::Report;

const PAYLOAD: usize = 100;

fn main() {
    let args = args::parse(
        "syscall-floor --clients N --seconds S [--drain-core C]",
        &[
            value("--clients", "N", "sockets to write to (default 1000)"),
            value("--seconds", "S", "seconds of writing (default 5)"),
            value(
                "--drain-core",
                "C",
                "pin the reading process to this core (taskset)",
            ),
            value("--drain", "ADDR", "(internal) be the reading process"),
        ],
    );
    let clients: usize = args.get("--clients").ok().flatten().unwrap_or(1000);
    if let Some(addr) = args.text("--drain") {
        drain(addr, clients);
        return;
    }
    let seconds: f64 = args.get("--seconds").ok().flatten().unwrap_or(5.0);
    let core: Option<u32> = args.get("--drain-core").ok().flatten();
    let report = match write(clients, seconds, core) {
        Ok(report) => report,
        Err(error) => Report {
            scenario: "fanout".into(),
            clients,
            errors: vec![error],
            ..Report::default()
        },
    };
    println!("{}", serde_json::to_string(&report).unwrap_or_default());
    std::process::exit(i32::from(!report.errors.is_empty()));
}

fn write(clients: usize, seconds: f64, core: Option<u32>) -> Result<Report, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut command = match core {
        Some(core) => {
            let mut command = Command::new("taskset");
            command.arg("-c").arg(core.to_string()).arg(&exe);
            command
        }
        None => Command::new(&exe),
    };
    let mut child = command
        .args([
            "--drain",
            &addr.to_string(),
            "--clients",
            &clients.to_string(),
        ])
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| format!("starting the readers: {e}"))?;
    let mut sockets = Vec::with_capacity(clients);
    for _ in 0..clients {
        let (socket, _) = listener.accept().map_err(|e| e.to_string())?;
        socket.set_nodelay(true).map_err(|e| e.to_string())?;
        sockets.push(socket);
    }
    let payload = [b'x'; PAYLOAD];
    let mut ack = [0_u8; 1];
    let mut latencies = Vec::new();
    let (user_before, system_before) = cpu_times(std::process::id()).map_err(|e| e.to_string())?;
    let started = Instant::now();
    let until = started + Duration::from_secs_f64(seconds);
    let mut rounds = 0_u64;
    while Instant::now() < until {
        let sent = Instant::now();
        for socket in &mut sockets {
            socket.write_all(&payload).map_err(|e| e.to_string())?;
        }
        // The readers say when every socket has it.
        sockets[0].read_exact(&mut ack).map_err(|e| e.to_string())?;
        latencies.push(sent.elapsed().as_secs_f64() * 1e3);
        rounds += 1;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let (user_after, system_after) = cpu_times(std::process::id()).map_err(|e| e.to_string())?;
    drop(sockets);
    let _ = child.wait();
    let deliveries = rounds * clients as u64;
    let user = (user_after - user_before).as_secs_f64();
    let system = (system_after - system_before).as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    let percentile = |p: f64| {
        latencies
            .get(((latencies.len().saturating_sub(1)) as f64 * p).round() as usize)
            .copied()
            .unwrap_or(0.0)
    };
    Ok(Report {
        scenario: "fanout".into(),
        clients,
        updates: rounds,
        deliveries,
        seconds: elapsed,
        deliveries_per_second: deliveries as f64 / elapsed,
        p50_ms: percentile(0.5),
        p99_ms: percentile(0.99),
        server_cpu_seconds: user + system,
        server_cpu_us_per_delivery: (user + system) * 1e6 / deliveries.max(1) as f64,
        server_user_us_per_delivery: user * 1e6 / deliveries.max(1) as f64,
        ..Report::default()
    })
}

/// The reading process: connects `clients` sockets and drains them; once every socket
/// has received a round's payload, acknowledges the round on the first socket.
fn drain(addr: &str, clients: usize) {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    runtime.block_on(async move {
        let received = Arc::new(AtomicU64::new(0));
        let (round_done, mut rounds) = tokio::sync::mpsc::unbounded_channel::<()>();
        let mut first_writer = None;
        // The other sockets' writing halves, kept open until the writer closes.
        let mut open = Vec::new();
        let mut readers = Vec::new();
        for n in 0..clients {
            let Ok(socket) = tokio::net::TcpStream::connect(addr).await else {
                return;
            };
            let _ = socket.set_nodelay(true);
            let (mut read, write) = socket.into_split();
            if n == 0 {
                first_writer = Some(write);
            } else {
                open.push(write);
            }
            let (received, round_done) = (Arc::clone(&received), round_done.clone());
            readers.push(tokio::spawn(async move {
                use tokio::io::AsyncReadExt;
                let mut buffer = [0_u8; PAYLOAD];
                while read.read_exact(&mut buffer).await.is_ok() {
                    let total = received.fetch_add(1, Ordering::AcqRel) + 1;
                    if total % clients as u64 == 0 {
                        let _ = round_done.send(());
                    }
                }
            }));
        }
        drop(round_done);
        let Some(mut writer) = first_writer else {
            return;
        };
        use tokio::io::AsyncWriteExt;
        while rounds.recv().await.is_some() {
            if writer.write_all(b"!").await.is_err() {
                break;
            }
        }
        for reader in readers {
            let _ = reader.await;
        }
        drop(open);
    });
}
