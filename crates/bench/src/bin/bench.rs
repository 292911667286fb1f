//! Benchmark runner: `bench [--smoke] [--servers ours,floor,node] [--scenarios fanout,idle] [--repeat 3] [--write docs/benchmarks.md]`
//!
//! Starts each server pinned to core 1 and the load generator pinned to core 0 (with
//! `taskset`, where the machine has two cores or more), runs the scenarios against
//! every server in the same run, prints a table and, with `--write`, writes the
//! report and its chart (an SVG next to it). Exits with 1 when any run failed its
//! correctness check. `--smoke` runs small sizes for a quick check (ours and the floor).
//! Throughput scenarios run `--repeat` times (default 3) and the run with the median
//! server CPU per delivery is reported.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use state_sync_bench::report::Report;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Server {
    Ours,
    Floor,
    Node,
}

impl Server {
    fn name(self) -> &'static str {
        match self {
            Server::Ours => "ours",
            Server::Floor => "floor (baseline)",
            Server::Node => "node ws (baseline)",
        }
    }
}

struct Scenario {
    name: &'static str,
    clients: usize,
    seconds: f64,
    extra: Vec<String>,
    servers: Vec<Server>,
}

struct Outcome {
    scenario: String,
    server: Server,
    report: Report,
}

struct Setup {
    bin_dir: PathBuf,
    node_server: PathBuf,
    pinned: bool,
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn pinned(setup: &Setup, core: u32, command: &str) -> String {
    let pin = if setup.pinned {
        format!("taskset -c {core} ")
    } else {
        String::new()
    };
    format!("ulimit -n 20000 2>/dev/null || ulimit -n 4096; exec {pin}{command}")
}

fn start_server(setup: &Setup, server: Server, port: u16) -> Result<Child, String> {
    let addr = format!("127.0.0.1:{port}");
    let command = match server {
        Server::Ours => format!(
            "{} --addr {addr} --threads 1",
            setup.bin_dir.join("bench-server").display()
        ),
        Server::Floor => format!(
            "{} --addr {addr} --threads 1",
            setup.bin_dir.join("floor-server").display()
        ),
        Server::Node => format!("node {} --addr {addr}", setup.node_server.display()),
    };
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(pinned(setup, 1, &command))
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("starting {}: {e}", server.name()))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    if !line.starts_with("listening on") {
        let _ = child.kill();
        return Err(format!("{} did not start: {line:?}", server.name()));
    }
    Ok(child)
}

fn run_one(setup: &Setup, scenario: &Scenario, server: Server) -> Result<Report, String> {
    let port = free_port().map_err(|e| e.to_string())?;
    let mut child = start_server(setup, server, port)?;
    std::thread::sleep(Duration::from_millis(300));
    let mut command = format!(
        "{} {} --url ws://127.0.0.1:{port} --clients {} --seconds {} --server-pid {}",
        setup.bin_dir.join("loadgen").display(),
        scenario.name,
        scenario.clients,
        scenario.seconds,
        child.id()
    );
    for extra in &scenario.extra {
        command.push(' ');
        command.push_str(extra);
    }
    let output = Command::new("sh")
        .arg("-c")
        .arg(pinned(setup, 0, &command))
        .output();
    let _ = child.kill();
    let _ = child.wait();
    let output = output.map_err(|e| format!("loadgen: {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let last = stdout.lines().last().unwrap_or("");
    serde_json::from_str(last).map_err(|e| {
        format!(
            "loadgen gave no report ({e}): {stdout} {}",
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

fn scenarios(smoke: bool, servers: &[Server]) -> Vec<Scenario> {
    let all = servers.to_vec();
    let ours = vec![Server::Ours];
    if smoke {
        return vec![
            Scenario {
                name: "fanout",
                clients: 50,
                seconds: 1.0,
                extra: vec![],
                servers: all.clone(),
            },
            Scenario {
                name: "all-to-all",
                clients: 8,
                seconds: 1.0,
                extra: vec!["--in-flight".into(), "4".into()],
                servers: all.clone(),
            },
            Scenario {
                name: "idle",
                clients: 200,
                seconds: 0.0,
                extra: vec![],
                servers: ours,
            },
        ];
    }
    let mut list = Vec::new();
    for clients in [100, 1_000, 10_000] {
        list.push(Scenario {
            name: "fanout",
            clients,
            seconds: 5.0,
            extra: vec![],
            servers: all.clone(),
        });
    }
    list.push(Scenario {
        name: "all-to-all",
        clients: 32,
        seconds: 5.0,
        extra: vec!["--in-flight".into(), "4".into()],
        servers: all.clone(),
    });
    list.push(Scenario {
        name: "idle",
        clients: 10_000,
        seconds: 0.0,
        extra: vec![],
        servers: all,
    });
    list.push(Scenario {
        name: "hold",
        clients: 19_000,
        seconds: 0.0,
        extra: vec![
            "--max-updates".into(),
            "2".into(),
            "--in-flight".into(),
            "1".into(),
        ],
        servers: ours,
    });
    list
}

fn fmt_rate(value: f64) -> String {
    if value >= 1e6 {
        format!("{:.2} M", value / 1e6)
    } else if value >= 1e3 {
        format!("{:.0} k", value / 1e3)
    } else {
        format!("{value:.0}")
    }
}

fn table(outcomes: &[Outcome]) -> String {
    let mut out = String::from(
        "| scenario | clients | server | deliveries/s | p50 ms | p99 ms | server CPU µs/delivery | server RSS per connection | correct |\n|---|---:|---|---:|---:|---:|---:|---:|---|\n",
    );
    for o in outcomes {
        let r = &o.report;
        let traffic = r.deliveries > 0;
        let per_connection = if r.scenario == "idle" || r.scenario == "hold" {
            let bytes = r.rss_after.saturating_sub(r.rss_before) as f64 / r.clients.max(1) as f64;
            format!("{:.1} KB", bytes / 1024.0)
        } else {
            "".into()
        };
        let dash = |v: f64, text: String| if traffic && v > 0.0 { text } else { "".into() };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            o.scenario,
            r.clients,
            o.server.name(),
            dash(r.deliveries_per_second, fmt_rate(r.deliveries_per_second)),
            dash(r.p50_ms, format!("{:.2}", r.p50_ms)),
            dash(r.p99_ms, format!("{:.2}", r.p99_ms)),
            dash(
                r.server_cpu_us_per_delivery,
                format!("{:.2}", r.server_cpu_us_per_delivery)
            ),
            per_connection,
            if r.errors.is_empty() {
                "yes".to_owned()
            } else {
                format!("NO: {}", r.errors.join("; "))
            },
        ));
    }
    out
}

fn svg_chart(outcomes: &[Outcome]) -> String {
    let groups: Vec<(String, Vec<(Server, f64)>)> = {
        let mut groups: Vec<(String, Vec<(Server, f64)>)> = Vec::new();
        for o in outcomes
            .iter()
            .filter(|o| o.report.deliveries > 0 && o.report.scenario != "hold")
        {
            let label = format!("{} {}", o.scenario, o.report.clients);
            match groups.iter_mut().find(|(l, _)| *l == label) {
                Some((_, bars)) => bars.push((o.server, o.report.deliveries_per_second)),
                None => groups.push((label, vec![(o.server, o.report.deliveries_per_second)])),
            }
        }
        groups
    };
    let max = groups
        .iter()
        .flat_map(|(_, b)| b.iter().map(|(_, v)| *v))
        .fold(1.0, f64::max);
    let (width, height, left, bottom, top) = (760.0, 360.0, 70.0, 60.0, 40.0);
    let plot_h = height - bottom - top;
    let group_w = (width - left - 20.0) / groups.len().max(1) as f64;
    let colors = |s: Server| match s {
        Server::Ours => "#2f6fdb",
        Server::Floor => "#9aa5b1",
        Server::Node => "#e08a2c",
    };
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{left}\" y=\"22\" font-size=\"15\">Deliveries per second (higher is better)</text>\n"
    );
    for i in 0..=4 {
        let value = max * f64::from(i) / 4.0;
        let y = top + plot_h - plot_h * f64::from(i) / 4.0;
        svg.push_str(&format!(
            "<line x1=\"{left}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#e3e3e3\"/><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\n",
            width - 20.0,
            left - 6.0,
            y + 4.0,
            fmt_rate(value)
        ));
    }
    for (g, (label, bars)) in groups.iter().enumerate() {
        let x0 = left + group_w * g as f64;
        let bar_w = (group_w - 24.0) / bars.len().max(1) as f64;
        for (b, (server, value)) in bars.iter().enumerate() {
            let h = plot_h * value / max;
            let x = x0 + 12.0 + bar_w * b as f64;
            svg.push_str(&format!(
                "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{h:.1}\" fill=\"{}\"><title>{}: {}</title></rect>\n",
                top + plot_h - h,
                bar_w - 4.0,
                colors(*server),
                server.name(),
                fmt_rate(*value)
            ));
        }
        svg.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{label}</text>\n",
            x0 + group_w / 2.0,
            height - bottom + 18.0
        ));
    }
    for (i, server) in [Server::Ours, Server::Floor, Server::Node]
        .iter()
        .enumerate()
    {
        let x = left + 190.0 * i as f64;
        svg.push_str(&format!(
            "<rect x=\"{x}\" y=\"{}\" width=\"12\" height=\"12\" fill=\"{}\"/><text x=\"{}\" y=\"{}\">{}</text>\n",
            height - 24.0,
            colors(*server),
            x + 18.0,
            height - 14.0,
            server.name()
        ));
    }
    svg.push_str("</svg>\n");
    svg
}

fn command_output(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "unknown CPU".into());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory = meminfo
        .lines()
        .next()
        .unwrap_or("")
        .trim_start_matches("MemTotal:")
        .trim()
        .to_owned();
    format!(
        "{model}, {} cores, {memory} of memory, Linux {}, rustc {}, node {}",
        command_output("nproc", &[]),
        command_output("uname", &["-r"]),
        command_output("rustc", &["--version"]).trim_start_matches("rustc "),
        command_output("node", &["--version"])
    )
}

struct Target {
    what: &'static str,
    met: Option<bool>,
    figure: String,
}

fn find<'a>(
    outcomes: &'a [Outcome],
    scenario: &str,
    clients: usize,
    server: Server,
) -> Option<&'a Report> {
    outcomes
        .iter()
        .find(|o| o.scenario == scenario && o.report.clients == clients && o.server == server)
        .map(|o| &o.report)
}

fn targets(outcomes: &[Outcome]) -> Vec<Target> {
    let mut list = Vec::new();
    for clients in [1_000, 10_000] {
        let ours = find(outcomes, "fanout", clients, Server::Ours);
        let cpu = ours.map(|r| r.server_cpu_us_per_delivery);
        list.push(Target {
            what: if clients == 1_000 {
                "fanout 1,000: ≤ 2 µs server CPU per delivery"
            } else {
                "fanout 10,000: ≤ 2 µs server CPU per delivery"
            },
            met: cpu.map(|c| c <= 2.0),
            figure: cpu.map_or("not run".into(), |c| format!("{c:.2} µs")),
        });
        let rate = ours.map(|r| r.deliveries_per_second);
        let floor =
            find(outcomes, "fanout", clients, Server::Floor).map(|r| r.deliveries_per_second);
        list.push(Target {
            what: if clients == 1_000 {
                "fanout 1,000: ≥ 150,000 deliveries/s and ≥ 0.8 × floor"
            } else {
                "fanout 10,000: ≥ 150,000 deliveries/s and ≥ 0.8 × floor"
            },
            met: rate.map(|r| r >= 150_000.0 && floor.is_none_or(|f| r >= 0.8 * f)),
            figure: match (rate, floor) {
                (Some(r), Some(f)) => format!("{} ({:.2} × floor)", fmt_rate(r), r / f),
                (Some(r), None) => fmt_rate(r),
                _ => "not run".into(),
            },
        });
        let p99 = ours.map(|r| r.p99_ms);
        let limit = if clients == 1_000 { 10.0 } else { 100.0 };
        list.push(Target {
            what: if clients == 1_000 {
                "fanout 1,000: p99 ≤ 10 ms"
            } else {
                "fanout 10,000: p99 ≤ 100 ms"
            },
            met: p99.map(|p| p <= limit),
            figure: p99.map_or("not run".into(), |p| format!("{p:.2} ms")),
        });
    }
    let all = find(outcomes, "all-to-all", 32, Server::Ours).map(|r| r.deliveries_per_second);
    list.push(Target {
        what: "all-to-all 32: ≥ 500,000 deliveries/s",
        met: all.map(|r| r >= 500_000.0),
        figure: all.map_or("not run".into(), fmt_rate),
    });
    let idle = find(outcomes, "idle", 10_000, Server::Ours).map(|r| {
        r.rss_after.saturating_sub(r.rss_before) as f64 / r.clients.max(1) as f64 / 1024.0
    });
    list.push(Target {
        what: "idle 10,000: ≤ 8 KB server RSS per connection",
        met: idle.map(|kb| kb <= 8.0),
        figure: idle.map_or("not run".into(), |kb| format!("{kb:.1} KB")),
    });
    let hold = find(outcomes, "hold", 19_000, Server::Ours);
    list.push(Target {
        what: "19,000 connections held by one server process",
        met: hold.map(|r| r.errors.is_empty()),
        figure: hold.map_or("not run".into(), |r| {
            if r.errors.is_empty() {
                "held; every client got every update".into()
            } else {
                r.errors.join("; ")
            }
        }),
    });
    list
}

/// The run with the median server CPU per delivery (runs on a shared machine are
/// noisy); the first failure, if any run failed.
fn median(results: Vec<Result<Report, String>>) -> Result<Report, String> {
    let mut reports = Vec::new();
    for result in results {
        let report = result?;
        if !report.errors.is_empty() {
            return Ok(report);
        }
        reports.push(report);
    }
    reports.sort_by(|a, b| {
        a.server_cpu_us_per_delivery
            .total_cmp(&b.server_cpu_us_per_delivery)
    });
    let middle = reports.len() / 2;
    reports
        .into_iter()
        .nth(middle)
        .ok_or_else(|| "no run".to_owned())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let smoke = args.iter().any(|a| a == "--smoke");
    let repeat: usize = args
        .iter()
        .position(|a| a == "--repeat")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(if smoke { 1 } else { 3 })
        .max(1);
    let write = args
        .iter()
        .position(|a| a == "--write")
        .and_then(|i| args.get(i + 1))
        .map(PathBuf::from);
    let servers: Vec<Server> = args
        .iter()
        .position(|a| a == "--servers")
        .and_then(|i| args.get(i + 1))
        .map_or_else(
            || {
                if smoke {
                    vec![Server::Ours, Server::Floor]
                } else {
                    vec![Server::Ours, Server::Floor, Server::Node]
                }
            },
            |list| {
                list.split(',')
                    .filter_map(|s| match s {
                        "ours" => Some(Server::Ours),
                        "floor" => Some(Server::Floor),
                        "node" => Some(Server::Node),
                        _ => None,
                    })
                    .collect()
            },
        );
    let bin_dir = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let has_taskset = Command::new("taskset").arg("--version").output().is_ok();
    let setup = Setup {
        bin_dir,
        node_server: Path::new(env!("CARGO_MANIFEST_DIR")).join("baselines/node-ws/server.js"),
        pinned: cores >= 2 && has_taskset,
    };
    if !setup.pinned {
        eprintln!("note: not pinning (needs 2 cores and taskset); figures are noisier");
    }
    let only: Option<Vec<String>> = args
        .iter()
        .position(|a| a == "--scenarios")
        .and_then(|i| args.get(i + 1))
        .map(|list| list.split(',').map(str::to_owned).collect());
    let mut outcomes = Vec::new();
    let mut failed = false;
    for scenario in scenarios(smoke, &servers) {
        if only
            .as_ref()
            .is_some_and(|only| !only.iter().any(|name| name == scenario.name))
        {
            continue;
        }
        for &server in &scenario.servers {
            if !servers.contains(&server) {
                continue;
            }
            eprintln!(
                "running {} with {} clients against {}",
                scenario.name,
                scenario.clients,
                server.name()
            );
            let traffic = scenario.name == "fanout" || scenario.name == "all-to-all";
            let runs = if traffic { repeat } else { 1 };
            let results: Vec<_> = (0..runs)
                .map(|_| run_one(&setup, &scenario, server))
                .collect();
            match median(results) {
                Ok(report) => {
                    failed |= !report.errors.is_empty();
                    outcomes.push(Outcome {
                        scenario: scenario.name.to_owned(),
                        server,
                        report,
                    });
                }
                Err(e) => {
                    eprintln!("  failed: {e}");
                    failed = true;
                    let report = Report {
                        scenario: scenario.name.into(),
                        clients: scenario.clients,
                        errors: vec![e],
                        ..Report::default()
                    };
                    outcomes.push(Outcome {
                        scenario: scenario.name.to_owned(),
                        server,
                        report,
                    });
                }
            }
        }
    }
    let table = table(&outcomes);
    println!("\n{table}");
    let targets = targets(&outcomes);
    if !smoke {
        for t in &targets {
            let verdict = match t.met {
                Some(true) => "met",
                Some(false) => "NOT met",
                None => "not run",
            };
            println!("{verdict:8} {}: {}", t.what, t.figure);
        }
    }
    if let Some(path) = write {
        let chart = path.with_extension("svg");
        let chart_name = chart
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut doc = String::from("# Benchmarks\n\n");
        doc.push_str("Written by `./scripts/bench.sh` (the runner `crates/bench/src/bin/bench.rs`); do not edit by hand.\n\n");
        doc.push_str(&format!("Machine: {}.\n\n", machine()));
        doc.push_str(&format!(
            "Each server runs alone pinned to core 1, with one tokio worker thread (the Node.js one is single-threaded anyway); the load generator runs pinned to core 0 (`taskset`{}). Server CPU time (user + system, all threads) and RSS are read from `/proc/PID/stat` and `/proc/PID/status` at the start and end of each run. Every run checks that every client received every update exactly once and in order; a failure fails the run. The machine is a shared virtual machine where single runs vary by up to 30 %: each fanout and all-to-all run is repeated {repeat} times and the run with the median server CPU per delivery is shown.\n\n",
            if setup.pinned { "" } else { "; not available in this run" }
        ));
        doc.push_str("Commands: `./scripts/bench.sh` builds in release mode, installs the Node.js baseline's `ws` package and runs `target/release/bench --write docs/benchmarks.md`. Any load generator can drive our server alone: `target/release/bench-server --addr 127.0.0.1:PORT` (one empty state, `bench`).\n\n");
        doc.push_str("Scenarios: **fanout**: N clients attached to one state, one of them sending updates of about 100 bytes, at most 4 in flight (an update is in flight until the last client received it), for 5 s; latency is from the send to the last receiver. **all-to-all**: 32 clients, each sending with 4 in flight, every update delivered to all 32. **idle**: 10,000 attached idle connections, server RSS growth per connection. **hold**: 19,000 attached connections, then two updates that every one of them must receive.\n\n");
        doc.push_str("Servers: **ours** (`bench-server`); **floor** (baseline, `floor-server`): a minimal tokio-tungstenite broadcast server without state logic, forwarding each update frame as is; **node ws** (baseline, `baselines/node-ws/server.js`): the protocol on Node.js and the `ws` package, serializing each broadcast once per recipient like the original.\n\n");
        doc.push_str("## Results\n\n");
        doc.push_str(&table);
        doc.push_str(&format!("\n![Deliveries per second]({chart_name})\n\n## Targets\n\n| target | figure | met |\n|---|---|---|\n"));
        for t in &targets {
            let verdict = match t.met {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "not run",
            };
            doc.push_str(&format!("| {} | {} | {verdict} |\n", t.what, t.figure));
        }
        doc.push_str("\nThe load generator shares the machine (one core) and is often the bottleneck of the throughput figures, which is why server CPU time per delivery comes first.\n");
        if let Err(e) =
            std::fs::write(&path, doc).and_then(|()| std::fs::write(&chart, svg_chart(&outcomes)))
        {
            eprintln!("writing {}: {e}", path.display());
            failed = true;
        } else {
            println!("wrote {} and {}", path.display(), chart.display());
        }
    }
    if failed {
        eprintln!("bench: some runs failed their correctness check");
        std::process::exit(1);
    }
}
