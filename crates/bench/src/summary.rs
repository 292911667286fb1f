//! The benchmark report: its table, its chart, the targets and whether they are met,
//! and the whole `docs/benchmarks.md` document.

use crate::report::Report;

/// A server the suite measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    /// Our `bench-server`.
    Ours,
    /// Our `bench-server --data DIR`: every update saved (group commit) before it is
    /// broadcast.
    Durable,
    /// Two `bench-server --redis URL` on one Redis, the clients split over both.
    Cluster,
    /// The tokio-tungstenite broadcast server without state logic.
    Floor,
    /// The Node.js `ws` server of the same protocol.
    Node,
    /// `syscall-floor`: one `write` of the payload per delivery on raw TCP, no
    /// WebSocket, no JSON (fan-out at 1 update in flight only).
    Syscall,
    /// Our `bench-server` built from another commit (`bench --reference PATH`): the
    /// figures a change is compared with, in the same run.
    Reference,
}

impl Server {
    /// The name shown in the report.
    pub fn name(self) -> &'static str {
        match self {
            Server::Ours => "ours",
            Server::Durable => "ours, durable",
            Server::Cluster => "ours, 2 servers + Redis",
            Server::Floor => "floor (baseline)",
            Server::Node => "node ws (baseline)",
            Server::Syscall => "syscall floor (baseline)",
            Server::Reference => "ours, reference build",
        }
    }

    /// The server named on the command line (`ours`, `floor`, `node`).
    pub fn from_arg(name: &str) -> Option<Server> {
        match name {
            "ours" => Some(Server::Ours),
            "durable" => Some(Server::Durable),
            "cluster" => Some(Server::Cluster),
            "floor" => Some(Server::Floor),
            "node" => Some(Server::Node),
            "syscall" => Some(Server::Syscall),
            "reference" => Some(Server::Reference),
            _ => None,
        }
    }
}

/// One scenario's result against one server.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The scenario's name.
    pub scenario: String,
    /// The server it ran against.
    pub server: Server,
    /// What the load generator reported.
    pub report: Report,
}

/// A rate for people: `1.23 M`, `456 k`, `789`.
pub fn fmt_rate(value: f64) -> String {
    if value >= 1e6 {
        format!("{:.2} M", value / 1e6)
    } else if value >= 1e3 {
        format!("{:.0} k", value / 1e3)
    } else {
        format!("{value:.0}")
    }
}

/// CPU per delivery, with its user-space part when it was measured apart.
fn cpu_cell(report: &Report) -> String {
    if report.server_user_us_per_delivery > 0.0 {
        format!(
            "{:.2} (user {:.2})",
            report.server_cpu_us_per_delivery, report.server_user_us_per_delivery
        )
    } else {
        format!("{:.2}", report.server_cpu_us_per_delivery)
    }
}

/// The results as a Markdown table.
pub fn table(outcomes: &[Outcome]) -> String {
    let mut out = String::from(
        "| scenario | clients | server | deliveries/s | p50 ms | p99 ms | server CPU µs/delivery (user space) | server RSS per connection | correct |\n|---|---:|---|---:|---:|---:|---:|---:|---|\n",
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
            dash(r.server_cpu_us_per_delivery, cpu_cell(r)),
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

/// Deliveries per second of every traffic run, as an SVG bar chart.
pub fn svg_chart(outcomes: &[Outcome]) -> String {
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
        Server::Durable => "#1b3f80",
        Server::Cluster => "#5fa3e8",
        Server::Floor => "#9aa5b1",
        Server::Node => "#e08a2c",
        Server::Syscall => "#5c6670",
        Server::Reference => "#8fb3f0",
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
    let mut x = left;
    for server in [
        Server::Ours,
        Server::Durable,
        Server::Cluster,
        Server::Floor,
        Server::Node,
        Server::Syscall,
        Server::Reference,
    ] {
        if !outcomes.iter().any(|o| o.server == server) {
            continue;
        }
        let here = x;
        // Each entry as wide as its name (about 6.2 px per character at 12 px).
        x += 30.0 + 6.2 * server.name().len() as f64;
        let x = here;
        svg.push_str(&format!(
            "<rect x=\"{x}\" y=\"{}\" width=\"12\" height=\"12\" fill=\"{}\"/><text x=\"{}\" y=\"{}\">{}</text>\n",
            height - 24.0,
            colors(server),
            x + 18.0,
            height - 14.0,
            server.name()
        ));
    }
    svg.push_str("</svg>\n");
    svg
}

/// A target of the suite and how the run fared.
#[derive(Debug, Clone)]
pub struct Target {
    /// The target, for people.
    pub what: &'static str,
    /// Met, missed, or `None` when its scenario did not run.
    pub met: Option<bool>,
    /// The measured figure.
    pub figure: String,
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

/// How a durable run committed: commits per second and updates per commit.
fn commits(report: &Report) -> String {
    if report.commits == 0 {
        return "no commit count".into();
    }
    format!(
        "{:.0} commits/s, {:.1} updates per commit",
        report.commits as f64 / report.seconds.max(1e-9),
        report.changes as f64 / report.commits as f64
    )
}

/// Every target, judged on `outcomes`.
pub fn targets(outcomes: &[Outcome]) -> Vec<Target> {
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
    let in_memory = find(outcomes, "all-to-all", 32, Server::Ours).map(|r| r.deliveries_per_second);
    let durable = find(outcomes, "all-to-all", 32, Server::Durable);
    list.push(Target {
        what: "durable all-to-all 32: ≥ 0.5 × in-memory deliveries/s",
        met: durable
            .zip(in_memory)
            .map(|(d, m)| d.deliveries_per_second >= 0.5 * m),
        figure: durable.map_or("not run".into(), |d| {
            format!(
                "{} ({:.2} × in-memory); {}",
                fmt_rate(d.deliveries_per_second),
                in_memory.map_or(0.0, |m| d.deliveries_per_second / m),
                commits(d)
            )
        }),
    });
    let durable = find(outcomes, "fanout", 1_000, Server::Durable);
    // The same run's in-memory server and floor, for what the disk adds.
    let beside = |server: Server| {
        find(outcomes, "fanout", 1_000, server).map_or(String::new(), |r| {
            format!("; {} {:.2} ms", server.name(), r.p99_ms)
        })
    };
    list.push(Target {
        what: "durable fanout 1,000: p99 ≤ 20 ms",
        met: durable.map(|d| d.p99_ms <= 20.0),
        figure: durable.map_or("not run".into(), |d| {
            format!(
                "{:.2} ms; {}{}{}",
                d.p99_ms,
                commits(d),
                beside(Server::Ours),
                beside(Server::Floor)
            )
        }),
    });
    let cluster = find(outcomes, "fanout", 1_000, Server::Cluster);
    list.push(Target {
        what: "cluster fanout 1,000 (2 servers + Redis): p99 ≤ 20 ms",
        met: cluster.map(|c| c.p99_ms <= 20.0),
        figure: cluster.map_or("not run".into(), |c| {
            format!(
                "{:.2} ms (to the last client of either server){}",
                c.p99_ms,
                beside(Server::Ours)
            )
        }),
    });
    for (scenario, clients, what) in [
        (
            "fanout",
            1_000,
            "cluster fanout 1,000: each server's CPU per delivery ≤ 1.5 × one in-memory server's",
        ),
        (
            "all-to-all",
            32,
            "cluster all-to-all 32: each server's CPU per delivery ≤ 1.5 × one in-memory server's",
        ),
    ] {
        let single = find(outcomes, scenario, clients, Server::Ours);
        let cluster = find(outcomes, scenario, clients, Server::Cluster);
        let servers: Vec<f64> = cluster.map_or(Vec::new(), |c| {
            c.processes
                .iter()
                .filter(|p| p.name.starts_with("server"))
                .map(|p| p.us_per_delivery)
                .collect()
        });
        let worst = servers.iter().copied().fold(0.0, f64::max);
        list.push(Target {
            what,
            met: single
                .zip(cluster)
                .map(|(s, _)| !servers.is_empty() && worst <= 1.5 * s.server_cpu_us_per_delivery),
            figure: match (single, cluster) {
                (Some(s), Some(c)) => {
                    format!(
                        "{} µs per delivery ({:.2} ×; one server {:.2} µs); Redis {}; {}/s",
                        servers
                            .iter()
                            .map(|v| format!("{v:.2}"))
                            .collect::<Vec<_>>()
                            .join(" and "),
                        worst / s.server_cpu_us_per_delivery.max(1e-9),
                        s.server_cpu_us_per_delivery,
                        c.processes.iter().find(|p| p.name == "redis").map_or(
                            "?".into(),
                            |p| format!("{:.2} µs per delivery", p.us_per_delivery)
                        ),
                        fmt_rate(c.deliveries_per_second)
                    )
                }
                _ => "not run".into(),
            },
        });
    }
    for clients in [1_000, 10_000] {
        let ours = find(outcomes, "fanout 1 in flight", clients, Server::Ours);
        let floor = find(outcomes, "fanout 1 in flight", clients, Server::Syscall);
        list.push(Target {
            what: if clients == 1_000 {
                "fanout 1,000, 1 in flight: ≤ 1 µs user-space CPU per delivery, total ≤ 1.2 × the syscall floor"
            } else {
                "fanout 10,000, 1 in flight: ≤ 1 µs user-space CPU per delivery, total ≤ 1.2 × the syscall floor"
            },
            met: ours.map(|o| {
                o.server_user_us_per_delivery <= 1.0
                    && floor.is_none_or(|f| {
                        o.server_cpu_us_per_delivery <= 1.2 * f.server_cpu_us_per_delivery
                    })
            }),
            figure: ours.map_or("not run".into(), |o| {
                format!(
                    "{:.2} µs in user space, {:.2} µs in all{}",
                    o.server_user_us_per_delivery,
                    o.server_cpu_us_per_delivery,
                    floor.map_or(String::new(), |f| format!(
                        " ({:.2} × the syscall floor's {:.2} µs, of which {:.2} in user space)",
                        o.server_cpu_us_per_delivery / f.server_cpu_us_per_delivery.max(1e-9),
                        f.server_cpu_us_per_delivery,
                        f.server_user_us_per_delivery
                    ))
                )
            }),
        });
    }
    let burst = find(outcomes, "all-to-all burst", 32, Server::Ours);
    list.push(Target {
        what: "all-to-all burst 32 × 200: every update reaches every client",
        met: burst.map(|r| r.errors.is_empty()),
        figure: burst.map_or("not run".into(), |r| {
            if r.errors.is_empty() {
                format!(
                    "{} deliveries, {}/s",
                    r.deliveries,
                    fmt_rate(r.deliveries_per_second)
                )
            } else {
                r.errors.join("; ")
            }
        }),
    });
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
        what: "idle 10,000: ≤ 4 KB server RSS per connection",
        met: idle.map(|kb| kb <= 4.0),
        figure: idle.map_or("not run".into(), |kb| format!("{kb:.1} KB")),
    });
    // A change compared with the reference build (HTTP by hyper: within 5 % of the
    // CPU per delivery, and idle connections no bigger).
    for (scenario, clients, what) in [
        (
            "fanout",
            1_000,
            "fanout 1,000: server CPU per delivery within 5 % of the reference build's",
        ),
        (
            "fanout 1 in flight",
            1_000,
            "fanout 1,000, 1 in flight: server CPU per delivery within 5 % of the reference build's",
        ),
        (
            "fanout",
            10_000,
            "fanout 10,000: server CPU per delivery within 5 % of the reference build's",
        ),
    ] {
        let ours = find(outcomes, scenario, clients, Server::Ours);
        let Some(reference) = find(outcomes, scenario, clients, Server::Reference) else {
            continue;
        };
        let ratio = ours
            .map(|o| o.server_cpu_us_per_delivery / reference.server_cpu_us_per_delivery.max(1e-9));
        list.push(Target {
            what,
            met: ratio.map(|ratio| ratio <= 1.05),
            figure: match (ours, ratio) {
                (Some(o), Some(ratio)) => format!(
                    "{:.2} µs against {:.2} µs ({ratio:.2} ×)",
                    o.server_cpu_us_per_delivery, reference.server_cpu_us_per_delivery
                ),
                _ => "not run".into(),
            },
        });
    }
    let idle_of = |server| {
        find(outcomes, "idle", 10_000, server).map(|r| {
            r.rss_after.saturating_sub(r.rss_before) as f64 / r.clients.max(1) as f64 / 1024.0
        })
    };
    if let Some(reference) = idle_of(Server::Reference) {
        let ours = idle_of(Server::Ours);
        list.push(Target {
            what: "idle 10,000: server RSS per connection no bigger than the reference build's",
            met: ours.map(|kb| kb <= reference + 0.05),
            figure: ours.map_or("not run".into(), |kb| {
                format!("{kb:.1} KB against {reference:.1} KB")
            }),
        });
    }
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
pub fn median(results: Vec<Result<Report, String>>) -> Result<Report, String> {
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

/// The attach figures of the big-state runs: what each attach of the whole state cost.
pub fn big_states(outcomes: &[Outcome]) -> String {
    let mut text = String::new();
    for o in outcomes.iter().filter(|o| o.report.state_bytes > 0) {
        let r = &o.report;
        if text.is_empty() {
            text.push_str("\nAttaching to a big state (each attach carries the whole state; figures per attached client, while the clients attach 256 at a time):\n\n| scenario | state | clients | server | wall ms per attach | server CPU ms per attach | server CPU per MB sent | server RSS per connection once attached |\n|---|---:|---:|---|---:|---:|---:|---:|\n");
        }
        let megabytes = r.state_bytes as f64 / 1e6;
        text.push_str(&format!(
            "| {} | {:.1} MB | {} | {} | {:.2} | {:.2} | {:.2} ms | {:.1} KB |\n",
            o.scenario,
            megabytes,
            r.clients,
            o.server.name(),
            r.attach_ms,
            r.attach_server_cpu_ms,
            r.attach_server_cpu_ms / megabytes.max(1e-9),
            r.rss_after.saturating_sub(r.rss_before) as f64 / r.clients.max(1) as f64 / 1024.0
        ));
    }
    text
}

/// What the document says about how the figures were taken.
#[derive(Debug, Clone)]
pub struct RunInfo {
    /// The machine ([`crate::runner::machine`]).
    pub machine: String,
    /// Whether processes were pinned to cores.
    pub pinned: bool,
    /// How many times each throughput run was repeated.
    pub repeat: usize,
    /// What the reference build is (`--reference-label`), when one ran.
    pub reference: Option<String>,
}

/// `met`, `NOT met` or `not run`.
pub fn verdict(target: &Target) -> &'static str {
    match target.met {
        Some(true) => "met",
        Some(false) => "NOT met",
        None => "not run",
    }
}

/// The whole `docs/benchmarks.md`; `chart_name` is the SVG's file name beside it.
pub fn document(outcomes: &[Outcome], info: &RunInfo, chart_name: &str) -> String {
    let mut doc = String::from("# Benchmarks\n\n");
    doc.push_str("Written by `./scripts/bench.sh` (the runner `crates/bench/src/bin/bench.rs`); do not edit by hand.\n\n");
    doc.push_str(&format!("Machine: {}.\n\n", info.machine));
    doc.push_str(&format!(
        "Each server runs alone pinned to core 1, with one tokio worker thread (the Node.js one is single-threaded anyway); the load generator runs pinned to core 0 (`taskset`{}). Server CPU time (user + system, all threads) and RSS are read from `/proc/PID/stat` and `/proc/PID/status` at the start and end of each run. Every run checks that every client received every update exactly once and in order; a failure fails the run. The machine is a shared virtual machine where single runs vary by up to 30 %: each fanout and all-to-all run is repeated {} times and the run with the median server CPU per delivery is shown.\n\n",
        if info.pinned { "" } else { "; not available in this run" },
        info.repeat
    ));
    doc.push_str("Commands: `./scripts/bench.sh` builds in release mode, installs the Node.js baseline's `ws` package and runs `target/release/bench --write docs/benchmarks.md`. Any load generator can drive our server alone: `target/release/bench-server --addr 127.0.0.1:PORT` (one empty state, `bench`).\n\n");
    doc.push_str("Scenarios: **fanout**: N clients attached to one state, one of them sending updates of about 100 bytes, at most 4 in flight (an update is in flight until the last client received it), for 5 s; latency is from the send to the last receiver. **all-to-all**: 32 clients, each sending with 4 in flight, every update delivered to all 32. **all-to-all burst**: 32 clients each send 200 updates at once (6,400 in flight), then wait until every client received all 6,400: no client may be dropped. **fanout 1 in flight**: the same with at most 1 update in flight: one update at a time, as a chat or a form sends, so that no two frames for a client are ever written together. **fanout 1 MB state**: a client first fills the state with about 1 MB (one key), then 1,000 clients attach to it (each attach carries the whole state: its cost is in the attach table below), then one sends updates of about 100 bytes into it with 1 in flight. **idle**: 10,000 attached idle connections, server RSS growth per connection. **hold**: 19,000 attached connections, then two updates that every one of them must receive.\n\n");
    doc.push_str("Servers: **ours** (`bench-server`); **ours, durable** (`bench-server --data DIR` on this machine's disk: every update committed and fsynced, by group commit, before it is broadcast); **floor** (baseline, `floor-server`): a minimal tokio-tungstenite broadcast server without state logic, forwarding each update frame as is; **node ws** (baseline, `baselines/node-ws/server.js`): the protocol on Node.js and the `ws` package, serializing each broadcast once per recipient like the original; **syscall floor** (baseline, `syscall-floor`): one `write` of the same payload per delivery on raw TCP sockets, no WebSocket and no JSON, the kernel's cost of a delivery on this machine.\n\n");
    if let Some(reference) = &info.reference {
        doc.push_str(&format!("**ours, reference build** (`bench --reference PATH`): our `bench-server` {reference}, run in the same run, each repeat alternating with ours, so that a change is compared with what it replaced.\n\n"));
    }
    doc.push_str("## Results\n\n");
    doc.push_str(&table(outcomes));
    doc.push_str(&big_states(outcomes));
    doc.push_str(&format!("\n![Deliveries per second]({chart_name})\n\n## Targets\n\n| target | figure | met |\n|---|---|---|\n"));
    for target in targets(outcomes) {
        let met = match target.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "not run",
        };
        doc.push_str(&format!(
            "| {} | {} | {met} |\n",
            target.what, target.figure
        ));
    }
    doc.push_str("\nThe load generator shares the machine (one core) and is often the bottleneck of the throughput figures, which is why server CPU time per delivery comes first.\n");
    doc.push_str(&many_cores(outcomes));
    doc
}

/// How one state's fan-out spreads over many cores, and what 10,000 receivers would
/// cost on 16, from the figures measured here (an estimate, said to be one).
pub fn many_cores(outcomes: &[Outcome]) -> String {
    let Some(one) = find(outcomes, "fanout 1 in flight", 10_000, Server::Ours) else {
        return String::new();
    };
    let batched = find(outcomes, "fanout", 10_000, Server::Ours);
    let per = one.server_cpu_us_per_delivery;
    let user = one.server_user_us_per_delivery;
    let broadcast_ms = per * 10_000.0 / 1_000.0;
    let cores = 16.0;
    // Each of the 15 other cores is handed its share by a wake-up.
    let handoff_us = 15.0 * 5.0;
    let spread_ms = broadcast_ms / cores + handoff_us / 1_000.0;
    let mut text = String::from("\n## Many cores\n\n");
    text.push_str(&format!(
        "Measured here, one update at a time to 10,000 clients costs {per:.2} µs of server CPU per delivery ({user:.2} µs of it in user space, the rest the kernel's `send`), so one broadcast is {broadcast_ms:.0} ms of CPU{}.\n\n",
        batched.map_or(String::new(), |b| format!(
            " ({:.2} µs per delivery when frames are written several at a time, as with 4 updates in flight)",
            b.server_cpu_us_per_delivery
        ))
    ));
    text.push_str("**Today.** Every state is served by whichever tokio worker runs the task that applied the update: the frame is built once, queued for every subscriber, and that task writes the sockets itself (one `send` per connection each time it waits). Different states, and different senders, run on different cores (tokio's work stealing), and a connection whose socket is full is written by a writer task of its own on any core. One state's fan-out, though, is one core's work: 10,000 receivers of one state take one core for the time above per update, whatever the machine.\n\n");
    text.push_str(&format!(
        "**Spread over cores.** The next step is to cut a state's subscribers into as many shards as the runtime has workers (the slab is already indexed; a shard is a range of it): the task that applied the update writes the first shard itself and wakes one task per other shard, each of which writes its own range with the same frame (the bytes are shared, nothing is copied). The sockets are independent, so the kernel's work spreads as well; order per connection is kept because each connection belongs to one shard. With the figure measured here and a wake-up of about 5 µs per shard, 10,000 receivers on 16 cores would take about {broadcast_ms:.0} ms / 16 + 15 × 5 µs ≈ {spread_ms:.1} ms per update instead of {broadcast_ms:.0} ms, that is about {:.0} updates per second to all 10,000 ({:.1} million deliveries per second), if the machine's network stack scales with its cores as loopback does. This is arithmetic from this machine's single-core figures, not a measurement: this machine has 2 cores.\n",
        1_000.0 / spread_ms,
        10_000.0 * 1_000.0 / spread_ms / 1e6
    ));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(scenario: &str, clients: usize, server: Server, rate: f64, cpu: f64) -> Outcome {
        Outcome {
            scenario: scenario.into(),
            server,
            report: Report {
                scenario: scenario.into(),
                clients,
                deliveries: 1000,
                deliveries_per_second: rate,
                server_cpu_us_per_delivery: cpu,
                p99_ms: 5.0,
                ..Report::default()
            },
        }
    }

    #[test]
    fn rates_read_as_people_write_them() {
        assert_eq!(fmt_rate(1_234_567.0), "1.23 M");
        assert_eq!(fmt_rate(456_000.0), "456 k");
        assert_eq!(fmt_rate(789.0), "789");
    }

    #[test]
    fn a_target_is_met_missed_or_not_run() {
        let outcomes = [
            outcome("fanout", 1_000, Server::Ours, 600_000.0, 1.5),
            outcome("fanout", 1_000, Server::Floor, 500_000.0, 1.6),
            outcome("fanout", 10_000, Server::Ours, 100_000.0, 2.5),
        ];
        let targets = targets(&outcomes);
        let find = |what: &str| targets.iter().find(|t| t.what.starts_with(what)).unwrap();
        assert_eq!(find("fanout 1,000: ≤ 2 µs").met, Some(true));
        assert_eq!(
            find("fanout 1,000: ≥ 150,000").figure,
            "600 k (1.20 × floor)"
        );
        assert_eq!(find("fanout 10,000: ≤ 2 µs").met, Some(false));
        assert_eq!(find("all-to-all 32").met, None);
        assert_eq!(verdict(find("all-to-all 32")), "not run");
    }

    #[test]
    fn the_median_run_is_kept_and_a_failure_wins() {
        let report = |cpu| {
            Ok(Report {
                server_cpu_us_per_delivery: cpu,
                ..Report::default()
            })
        };
        let kept = median(vec![report(3.0), report(1.0), report(2.0)]).unwrap();
        assert_eq!(kept.server_cpu_us_per_delivery, 2.0);
        assert!(median(vec![report(1.0), Err("boom".into())]).is_err());
    }

    #[test]
    fn a_change_is_held_to_five_percent_of_the_reference_build() {
        let target = |ours: f64, reference: f64| {
            let outcomes = [
                outcome("fanout", 1_000, Server::Ours, 300_000.0, ours),
                outcome("fanout", 1_000, Server::Reference, 300_000.0, reference),
            ];
            targets(&outcomes)
                .into_iter()
                .find(|t| t.what.contains("reference build"))
                .map(|t| (t.met, t.figure))
        };
        assert_eq!(
            target(3.0, 2.95),
            Some((Some(true), "3.00 µs against 2.95 µs (1.02 ×)".into()))
        );
        assert_eq!(target(3.3, 3.0).map(|t| t.0), Some(Some(false)));
        let without = [outcome("fanout", 1_000, Server::Ours, 300_000.0, 3.0)];
        assert!(
            targets(&without)
                .iter()
                .all(|t| !t.what.contains("reference build")),
            "no reference build, no comparison"
        );
    }

    #[test]
    fn the_document_has_the_table_the_chart_and_the_targets() {
        let outcomes = [outcome("fanout", 100, Server::Ours, 500_000.0, 1.5)];
        let info = RunInfo {
            machine: "test machine".into(),
            pinned: true,
            repeat: 3,
            reference: None,
        };
        let doc = document(&outcomes, &info, "benchmarks.svg");
        assert!(doc.contains("| fanout | 100 | ours | 500 k |"), "{doc}");
        assert!(doc.contains("![Deliveries per second](benchmarks.svg)"));
        assert!(doc.contains("## Targets") && doc.contains("test machine"));
        assert!(svg_chart(&outcomes).starts_with("<svg"));
        assert!(!doc.contains("## Many cores"), "no figure to reason from");
    }

    #[test]
    fn the_many_cores_estimate_follows_the_measured_figure() {
        let outcomes = [outcome(
            "fanout 1 in flight",
            10_000,
            Server::Ours,
            100_000.0,
            8.0,
        )];
        let text = many_cores(&outcomes);
        // 8 µs × 10,000 = 80 ms of CPU per update; / 16 + 75 µs = 5.075 ms.
        assert!(text.contains("one broadcast is 80 ms of CPU"), "{text}");
        assert!(text.contains("≈ 5.1 ms per update"), "{text}");
        assert!(text.contains("about 197 updates per second"), "{text}");
    }
}
