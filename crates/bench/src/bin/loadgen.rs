//! Load generator: `loadgen <fanout|all-to-all|idle|hold> --url ws://127.0.0.1:PORT [options]`
//!
//! Options: `--clients N` (default 100), `--seconds S` of sending (default 5),
//! `--in-flight K` updates per sender not yet delivered to every client (default 4),
//! `--senders M` (all-to-all: every client sends; fanout: 1), `--server-pid PID` to
//! read the server's CPU time and RSS from /proc. Prints one JSON line (a `Report`);
//! exits with 1 when a client missed, duplicated or reordered an update.
//!
//! A cluster: `--url` lists its servers, comma-separated; client `i` connects to
//! server `i % n` (so fanout's sender is on the first, and most receivers elsewhere),
//! and `--pids server1=PID,server2=PID,redis=PID` reads each process's CPU time: a
//! server's per delivery counts its own clients' deliveries, Redis's all of them.
//!
//! A big state: `--state-bytes B` first fills the state with one key holding a string
//! of about B bytes (a client sends it and waits for its echo), then connects the
//! clients: each attach carries the whole state, and the report gives the wall time
//! and server CPU per attach; the traffic then goes into that big state.
//!
//! Every update is `{"s": sender, "q": sequence, "p": padding}` (about 100 bytes on
//! the wire); the last one of each sender also has `"e": 1`. Each client checks that
//! it receives every sender's updates exactly once and in order.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use state_sync_bench::args::{self, value};
use state_sync_bench::proc_stats::{cpu_time, cpu_times, rss_bytes};
use state_sync_bench::report::{ProcessCpu, Report};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Most updates one sender sends in a run.
const MAX_UPDATES_PER_SENDER: usize = 4_000_000;

struct Args {
    scenario: String,
    /// The servers; client `i` connects to `urls[i % len]`.
    urls: Vec<String>,
    clients: usize,
    seconds: f64,
    in_flight: usize,
    senders: Option<usize>,
    server_pid: Option<u32>,
    /// Named processes whose CPU time to read (a cluster's servers and Redis).
    pids: Vec<(String, u32)>,
    max_updates: Option<u64>,
    /// Fill the state with about this many bytes first (0: leave it empty).
    state_bytes: usize,
}

fn parse_args() -> Result<Args, String> {
    let args = args::parse(
        "loadgen <fanout|all-to-all|idle|hold> --url ws://HOST:PORT [options]",
        &[
            value(
                "--url",
                "URL",
                "the server, or a cluster's servers comma-separated (required)",
            ),
            value("--clients", "N", "clients to connect (default 100)"),
            value("--seconds", "S", "seconds of sending (default 5)"),
            value(
                "--in-flight",
                "K",
                "updates per sender not yet delivered to every client (default 4)",
            ),
            value(
                "--senders",
                "M",
                "clients that send (all-to-all: every client; fanout: 1)",
            ),
            value(
                "--server-pid",
                "PID",
                "read the server's CPU time and RSS from /proc",
            ),
            value("--max-updates", "N", "updates per sender at most"),
            value(
                "--state-bytes",
                "B",
                "fill the state with about B bytes of JSON before the clients attach",
            ),
            value(
                "--pids",
                "NAME=PID,...",
                "read the CPU time of these processes (a cluster's servers and Redis)",
            ),
        ],
    );
    let [scenario] = args.positional.as_slice() else {
        return Err("name one scenario: fanout, all-to-all, idle or hold".into());
    };
    let url = args.text("--url").ok_or("--url is required")?;
    let urls = url
        .split(',')
        .map(|url| url.trim_end_matches('/').to_owned())
        .collect();
    let pids = match args.text("--pids") {
        None => Vec::new(),
        Some(list) => list
            .split(',')
            .map(|pair| {
                pair.split_once('=')
                    .and_then(|(name, pid)| Some((name.to_owned(), pid.parse().ok()?)))
                    .ok_or_else(|| format!("--pids: {pair:?} is not NAME=PID"))
            })
            .collect::<Result<_, _>>()?,
    };
    Ok(Args {
        scenario: scenario.clone(),
        urls,
        pids,
        clients: args.get("--clients")?.unwrap_or(100),
        seconds: args.get("--seconds")?.unwrap_or(5.0),
        in_flight: args.get("--in-flight")?.unwrap_or(4),
        senders: args.get("--senders")?,
        server_pid: args.get("--server-pid")?,
        max_updates: args.get("--max-updates")?,
        state_bytes: args.get("--state-bytes")?.unwrap_or(0),
    })
}

async fn connect_attached(url: &str, id: usize) -> Result<Ws, String> {
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_message_size(Some(256 << 20))
        .max_frame_size(Some(256 << 20));
    let address = format!("{url}/?identifier=c{id}&token=");
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(address, Some(config), true)
        .await
        .map_err(|e| format!("client {id}: connect: {e}"))?;
    ws.send(Message::text(
        r#"{"type":2,"data":{"stateIdentifier":"bench"}}"#,
    ))
    .await
    .map_err(|e| format!("client {id}: send: {e}"))?;
    loop {
        match tokio::time::timeout(Duration::from_secs(30), ws.next()).await {
            Ok(Some(Ok(Message::Text(text)))) if text.as_str().starts_with(r#"{"type":7"#) => {
                return Ok(ws);
            }
            Ok(Some(Ok(_))) => {}
            other => {
                return Err(format!(
                    "client {id}: no STATE_CONNECTION_ESTABLISHED: {other:?}"
                ));
            }
        }
    }
}

/// Connects and attaches `n` clients, 256 at a time, client `i` to `urls[i % len]`.
async fn connect_all(urls: &[String], n: usize) -> (Vec<Ws>, Vec<String>) {
    let results: Vec<_> = futures_util::stream::iter(0..n)
        .map(|id| connect_attached(&urls[id % urls.len()], id))
        .buffered(256)
        .collect()
        .await;
    let mut clients = Vec::with_capacity(n);
    let mut errors = Vec::new();
    for result in results {
        match result {
            Ok(ws) => clients.push(ws),
            Err(e) => errors.push(e),
        }
    }
    (clients, errors)
}

/// Fills the state with one key (`"big"`) holding a string of about `bytes` bytes, and
/// waits until the server echoed it (so it is applied before anyone attaches).
async fn fill_state(url: &str, bytes: usize) -> Result<(), String> {
    let mut ws = connect_attached(url, usize::MAX).await?;
    let update = format!(
        r#"{{"type":3,"data":{{"updates":{{"big":"{}"}},"requestId":1}}}}"#,
        "x".repeat(bytes)
    );
    ws.send(Message::text(update))
        .await
        .map_err(|e| format!("filling the state: {e}"))?;
    loop {
        match tokio::time::timeout(Duration::from_secs(30), ws.next()).await {
            Ok(Some(Ok(Message::Text(text)))) if text.as_str().starts_with(r#"{"type":3"#) => {
                return Ok(());
            }
            Ok(Some(Ok(Message::Text(text)))) if text.as_str().starts_with(r#"{"type":9"#) => {
                return Err(format!(
                    "filling the state was refused: {}",
                    &text.as_str()[..text.len().min(300)]
                ));
            }
            Ok(Some(Ok(_))) => {}
            other => return Err(format!("filling the state: no echo: {other:?}")),
        }
    }
}

/// State shared by the senders and the receivers of one run.
struct Run {
    clients: usize,
    senders: usize,
    base: Instant,
    /// When sender 0 sent each update (ns since `base`).
    sent_at: Vec<AtomicU64>,
    /// When the last client received each of sender 0's updates (ns since `base`).
    completed_at: Vec<AtomicU64>,
    /// Per sender and sequence: clients that have not received it yet.
    remaining: Vec<AtomicU32>,
    per_sender: usize,
    permits: Vec<Semaphore>,
    deliveries: AtomicU64,
    /// Deliveries to the clients of each server.
    deliveries_per_server: Vec<AtomicU64>,
    last_delivery: AtomicU64,
    errors: Mutex<Vec<String>>,
}

impl Run {
    fn now(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn error(&self, message: String) {
        let mut errors = self
            .errors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if errors.len() < 20 {
            errors.push(message);
        }
    }
}

/// Finds `"key":NUMBER` in a frame.
fn number_after(text: &str, key: &str) -> Option<u64> {
    let start = text.find(key)? + key.len();
    let digits: &str = &text[start..];
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    digits[..end].parse().ok()
}

async fn receive(run: Arc<Run>, client: usize, mut stream: SplitStream<Ws>, deadline: Instant) {
    let mut expected = vec![0u64; run.senders];
    let mut finished = 0;
    // One timer for the whole run, not one per frame.
    let give_up = tokio::time::sleep_until(deadline.into());
    tokio::pin!(give_up);
    while finished < run.senders {
        let frame = tokio::select! {
            biased;
            frame = stream.next() => match frame {
                Some(Ok(Message::Text(text))) => text,
                Some(Ok(_)) => continue,
                other => return run.error(format!("client {client}: connection ended: {other:?}")),
            },
            () = &mut give_up => {
                return run.error(format!("client {client}: timed out waiting (expected {expected:?})"));
            }
        };
        let text = frame.as_str();
        if !text.starts_with(r#"{"type":3"#) {
            continue;
        }
        let (Some(sender), Some(sequence)) =
            (number_after(text, "\"s\":"), number_after(text, "\"q\":"))
        else {
            run.error(format!("client {client}: unreadable update {text}"));
            continue;
        };
        let sender = usize::try_from(sender).unwrap_or(usize::MAX);
        if sender >= run.senders {
            run.error(format!(
                "client {client}: update from unknown sender {sender}"
            ));
            continue;
        }
        if sequence != expected[sender] {
            run.error(format!(
                "client {client}: from sender {sender} expected update {} got {sequence}",
                expected[sender]
            ));
        }
        expected[sender] = sequence + 1;
        if text.contains("\"e\":1") {
            finished += 1;
            continue;
        }
        let now = run.now();
        run.deliveries.fetch_add(1, Ordering::Relaxed);
        let servers = run.deliveries_per_server.len();
        run.deliveries_per_server[client % servers].fetch_add(1, Ordering::Relaxed);
        run.last_delivery.fetch_max(now, Ordering::Relaxed);
        let index = sender * run.per_sender + usize::try_from(sequence).unwrap_or(0);
        if let Some(remaining) = run.remaining.get(index)
            && remaining.fetch_sub(1, Ordering::AcqRel) == 1
        {
            // The last client got it: one more update may go.
            if sender == 0
                && let Some(done) = run.completed_at.get(index)
            {
                done.store(now, Ordering::Relaxed);
            }
            run.permits[sender].add_permits(1);
        }
    }
}

async fn send(
    run: Arc<Run>,
    sender: usize,
    mut sink: SplitSink<Ws, Message>,
    until: Instant,
    max: u64,
) -> (u64, SplitSink<Ws, Message>) {
    let padding = "x".repeat(40);
    let mut sequence: u64 = 0;
    while Instant::now() < until && sequence < max && (sequence as usize) < run.per_sender {
        match run.permits[sender].acquire().await {
            Ok(permit) => permit.forget(),
            Err(_) => break,
        }
        let index = sender * run.per_sender + sequence as usize;
        run.remaining[index].store(
            u32::try_from(run.clients).unwrap_or(u32::MAX),
            Ordering::Relaxed,
        );
        if sender == 0 {
            run.sent_at[index].store(run.now(), Ordering::Relaxed);
        }
        let frame = format!(
            r#"{{"type":3,"data":{{"updates":{{"s":{sender},"q":{sequence},"p":"{padding}"}}}}}}"#
        );
        if let Err(e) = sink.send(Message::text(frame)).await {
            run.error(format!("sender {sender}: {e}"));
            return (sequence, sink);
        }
        sequence += 1;
    }
    let end = format!(r#"{{"type":3,"data":{{"updates":{{"s":{sender},"q":{sequence},"e":1}}}}}}"#);
    if let Err(e) = sink.send(Message::text(end)).await {
        run.error(format!("sender {sender}: {e}"));
    }
    // The caller keeps the sink (and so the connection) open until the run ends.
    (sequence, sink)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

async fn traffic(args: &Args, report: &mut Report) {
    let senders = match args.scenario.as_str() {
        "all-to-all" => args.senders.unwrap_or(args.clients),
        _ => 1,
    };
    if args.state_bytes > 0 {
        if let Err(e) = fill_state(&args.urls[0], args.state_bytes).await {
            report.errors.push(e);
            return;
        }
        report.state_bytes = args.state_bytes as u64;
    }
    let attach_cpu_before = args.server_pid.and_then(|pid| cpu_times(pid).ok());
    let attach_started = Instant::now();
    let (clients, errors) = connect_all(&args.urls, args.clients).await;
    let attach_wall = attach_started.elapsed();
    report.errors.extend(errors);
    if clients.len() < args.clients {
        return;
    }
    if args.state_bytes > 0 {
        let attached = clients.len().max(1) as f64;
        report.attach_ms = attach_wall.as_secs_f64() * 1e3 / attached;
        if let (Some((user_before, system_before)), Some((user_after, system_after))) = (
            attach_cpu_before,
            args.server_pid.and_then(|pid| cpu_times(pid).ok()),
        ) {
            let cpu = (user_after - user_before) + (system_after - system_before);
            report.attach_server_cpu_ms = cpu.as_secs_f64() * 1e3 / attached;
        }
    }
    report.rss_after = args
        .server_pid
        .and_then(|pid| rss_bytes(pid).ok())
        .unwrap_or(0);
    let per_sender = MAX_UPDATES_PER_SENDER / senders;
    let run = Arc::new(Run {
        clients: clients.len(),
        senders,
        base: Instant::now(),
        sent_at: (0..per_sender).map(|_| AtomicU64::new(0)).collect(),
        completed_at: (0..per_sender).map(|_| AtomicU64::new(0)).collect(),
        remaining: (0..per_sender * senders)
            .map(|_| AtomicU32::new(0))
            .collect(),
        per_sender,
        permits: (0..senders)
            .map(|_| Semaphore::new(args.in_flight.max(1)))
            .collect(),
        deliveries: AtomicU64::new(0),
        deliveries_per_server: args.urls.iter().map(|_| AtomicU64::new(0)).collect(),
        last_delivery: AtomicU64::new(0),
        errors: Mutex::new(Vec::new()),
    });
    let until = Instant::now() + Duration::from_secs_f64(args.seconds);
    let deadline = until + Duration::from_secs(60);
    let cpu_before = args.server_pid.and_then(|pid| cpu_times(pid).ok());
    let cpus_before: Vec<_> = args
        .pids
        .iter()
        .map(|(_, pid)| cpu_time(*pid).ok())
        .collect();
    let started = run.now();
    let mut receivers = Vec::new();
    let mut sending = Vec::new();
    let mut idle_sinks = Vec::new();
    for (id, ws) in clients.into_iter().enumerate() {
        let (sink, stream) = ws.split();
        receivers.push(tokio::spawn(receive(
            Arc::clone(&run),
            id,
            stream,
            deadline,
        )));
        if id < senders {
            let max = args.max_updates.unwrap_or(u64::MAX);
            sending.push(tokio::spawn(send(Arc::clone(&run), id, sink, until, max)));
        } else {
            idle_sinks.push(sink);
        }
    }
    for sender in sending {
        if let Ok((sent, sink)) = sender.await {
            report.updates += sent;
            idle_sinks.push(sink);
        }
    }
    for receiver in receivers {
        let _ = receiver.await;
    }
    let cpu_after = args.server_pid.and_then(|pid| cpu_times(pid).ok());
    for ((name, pid), before) in args.pids.iter().zip(cpus_before) {
        let (Some(before), Ok(after)) = (before, cpu_time(*pid)) else {
            report
                .errors
                .push(format!("cannot read the CPU time of {name} ({pid})"));
            continue;
        };
        let cpu_seconds = (after - before).as_secs_f64();
        // `serverN` (from 1) served the clients of `urls[N - 1]`.
        let served = name
            .strip_prefix("server")
            .and_then(|n| n.parse::<usize>().ok())
            .and_then(|n| run.deliveries_per_server.get(n.checked_sub(1)?))
            .map_or(run.deliveries.load(Ordering::Relaxed), |d| {
                d.load(Ordering::Relaxed)
            });
        report.processes.push(ProcessCpu {
            name: name.clone(),
            cpu_seconds,
            us_per_delivery: cpu_seconds * 1e6 / served.max(1) as f64,
        });
    }
    let elapsed_ns = run
        .last_delivery
        .load(Ordering::Relaxed)
        .saturating_sub(started)
        .max(1);
    report.deliveries = run.deliveries.load(Ordering::Relaxed);
    report.seconds = elapsed_ns as f64 / 1e9;
    report.deliveries_per_second = report.deliveries as f64 / report.seconds;
    let expected = report.updates * run.clients as u64;
    if report.deliveries != expected {
        report.errors.push(format!(
            "{} deliveries, expected {expected}",
            report.deliveries
        ));
    }
    if let (Some((user_before, system_before)), Some((user_after, system_after))) =
        (cpu_before, cpu_after)
    {
        let user = (user_after - user_before).as_secs_f64();
        let system = (system_after - system_before).as_secs_f64();
        let deliveries = report.deliveries.max(1) as f64;
        report.server_cpu_seconds = user + system;
        report.server_cpu_us_per_delivery = report.server_cpu_seconds * 1e6 / deliveries;
        report.server_user_us_per_delivery = user * 1e6 / deliveries;
    }
    let mut latencies: Vec<f64> = (0..per_sender.min(report.updates as usize))
        .filter_map(|q| {
            let sent = run.sent_at[q].load(Ordering::Relaxed);
            let done = run.completed_at[q].load(Ordering::Relaxed);
            (done >= sent && done > 0).then(|| (done - sent) as f64 / 1e6)
        })
        .collect();
    latencies.sort_by(f64::total_cmp);
    if senders == 1 {
        report.p50_ms = percentile(&latencies, 0.50);
        report.p99_ms = percentile(&latencies, 0.99);
    }
    report.errors.extend(
        run.errors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .drain(..),
    );
}

/// Connects and attaches every client, then measures the server's memory.
async fn idle(args: &Args, report: &mut Report) {
    let (clients, errors) = connect_all(&args.urls, args.clients).await;
    report.errors.extend(errors);
    tokio::time::sleep(Duration::from_secs(2)).await;
    report.rss_after = args
        .server_pid
        .and_then(|pid| rss_bytes(pid).ok())
        .unwrap_or(0);
    drop(clients);
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("loadgen: {message}");
            std::process::exit(2);
        }
    };
    let mut report = Report {
        scenario: args.scenario.clone(),
        clients: args.clients,
        ..Report::default()
    };
    report.rss_before = args
        .server_pid
        .and_then(|pid| rss_bytes(pid).ok())
        .unwrap_or(0);
    match args.scenario.as_str() {
        "fanout" | "all-to-all" | "hold" => traffic(&args, &mut report).await,
        "idle" => idle(&args, &mut report).await,
        other => {
            eprintln!("loadgen: unknown scenario {other}");
            std::process::exit(2);
        }
    }
    println!("{}", serde_json::to_string(&report).unwrap_or_default());
    std::process::exit(i32::from(!report.errors.is_empty()));
}
