//! Running the suite: each server pinned to core 1 and the load generator to core 0
//! (with `taskset`, where the machine has two cores or more); every throughput run
//! repeated and the median kept.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::report::Report;
use crate::summary::{Outcome, Server, median};

/// One scenario: the load generator's arguments and the servers it runs against.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// The name in the report (and for `--scenarios`).
    pub label: &'static str,
    /// The load generator's scenario.
    pub name: &'static str,
    /// Clients to connect.
    pub clients: usize,
    /// Seconds of sending.
    pub seconds: f64,
    /// More load generator arguments.
    pub extra: Vec<String>,
    /// The servers it runs against.
    pub servers: Vec<Server>,
}

/// Where the binaries are and whether processes are pinned to cores.
#[derive(Debug, Clone)]
pub struct Setup {
    /// The folder of `bench-server`, `floor-server` and `loadgen`.
    pub bin_dir: PathBuf,
    /// The Node.js baseline's script.
    pub node_server: PathBuf,
    /// Whether servers and load generator are pinned to their own cores.
    pub pinned: bool,
    /// The reference build's `bench-server` (`--reference`), when one runs.
    pub reference: Option<PathBuf>,
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

/// The last `store: C commits, N changes` line a durable server printed.
type StoreLog = std::sync::Arc<std::sync::Mutex<(u64, u64)>>;

fn start_server(
    setup: &Setup,
    server: Server,
    port: u16,
    data: &std::path::Path,
) -> Result<(Child, StoreLog), String> {
    let addr = format!("127.0.0.1:{port}");
    let command = match server {
        Server::Ours => format!(
            "{} --addr {addr} --threads 1",
            setup.bin_dir.join("bench-server").display()
        ),
        Server::Durable => format!(
            "{} --addr {addr} --threads 1 --data {}",
            setup.bin_dir.join("bench-server").display(),
            data.display()
        ),
        // `data` is the Redis URL.
        Server::Cluster => format!(
            "{} --addr {addr} --threads 1 --redis {}",
            setup.bin_dir.join("bench-server").display(),
            data.display()
        ),
        Server::Floor => format!(
            "{} --addr {addr} --threads 1",
            setup.bin_dir.join("floor-server").display()
        ),
        Server::Node => format!("node {} --addr {addr}", setup.node_server.display()),
        Server::Syscall => return Err("the syscall floor is no server".into()),
        Server::Reference => match &setup.reference {
            Some(binary) => format!("{} --addr {addr} --threads 1", binary.display()),
            None => return Err("no reference build given (--reference PATH)".into()),
        },
    };
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(pinned(setup, 1, &command))
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting {}: {e}", server.name()))?;
    let store_log = StoreLog::default();
    if let Some(stderr) = child.stderr.take() {
        let store_log = std::sync::Arc::clone(&store_log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let numbers: Vec<u64> = line
                    .strip_prefix("store: ")
                    .map(|rest| rest.split(' ').filter_map(|w| w.parse().ok()).collect())
                    .unwrap_or_default();
                match numbers.as_slice() {
                    [commits, changes] => {
                        *store_log
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner) =
                            (*commits, *changes);
                    }
                    _ => eprintln!("{line}"),
                }
            }
        });
    }
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    if !line.starts_with("listening on") {
        let _ = child.kill();
        return Err(format!("{} did not start: {line:?}", server.name()));
    }
    Ok((child, store_log))
}

/// A process of a run; killed when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A Redis for a cluster run: no persistence files, on core 1 with the servers.
fn start_redis(setup: &Setup, dir: &std::path::Path) -> Result<(Running, String), String> {
    let port = free_port().map_err(|e| e.to_string())?;
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let command = format!(
        "redis-server --port {port} --bind 127.0.0.1 --save '' --appendonly no --dir {}",
        dir.display()
    );
    let child = Command::new("sh")
        .arg("-c")
        .arg(pinned(setup, 1, &command))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("starting redis-server: {e}"))?;
    let redis = Running(child);
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok((redis, format!("redis://127.0.0.1:{port}/")));
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    Err("redis-server did not start (scripts/setup.sh installs it)".into())
}

/// Runs one scenario once against a cluster: two of our servers on one Redis, the
/// clients split over both.
fn run_cluster(setup: &Setup, scenario: &Scenario) -> Result<Report, String> {
    let dir = std::env::temp_dir().join(format!(
        "state-sync-bench-redis-{}-{}",
        std::process::id(),
        free_port().map_err(|e| e.to_string())?
    ));
    let (redis, url) = start_redis(setup, &dir)?;
    let mut servers = Vec::new();
    let mut urls = Vec::new();
    for _ in 0..2 {
        let port = free_port().map_err(|e| e.to_string())?;
        let (child, _) = start_server(setup, Server::Cluster, port, std::path::Path::new(&url))?;
        servers.push(Running(child));
        urls.push(format!("ws://127.0.0.1:{port}"));
    }
    std::thread::sleep(Duration::from_millis(300));
    let pids = format!(
        "server1={},server2={},redis={}",
        servers[0].0.id(),
        servers[1].0.id(),
        redis.0.id()
    );
    let mut command = format!(
        "{} {} --url {} --clients {} --seconds {} --pids {pids}",
        setup.bin_dir.join("loadgen").display(),
        scenario.name,
        urls.join(","),
        scenario.clients,
        scenario.seconds,
    );
    for extra in &scenario.extra {
        command.push(' ');
        command.push_str(extra);
    }
    let output = Command::new("sh")
        .arg("-c")
        .arg(pinned(setup, 0, &command))
        .output();
    drop(servers);
    drop(redis);
    let _ = std::fs::remove_dir_all(&dir);
    let mut report = report_of(output)?;
    // The busier server's figure, for the table.
    report.server_cpu_us_per_delivery = report
        .processes
        .iter()
        .filter(|p| p.name.starts_with("server"))
        .map(|p| p.us_per_delivery)
        .fold(0.0, f64::max);
    report.server_cpu_seconds = report.processes.iter().map(|p| p.cpu_seconds).sum();
    Ok(report)
}

/// The report the load generator printed last.
fn report_of(output: std::io::Result<std::process::Output>) -> Result<Report, String> {
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

/// The syscall floor: its writer pinned to core 1, its readers to core 0.
fn run_syscall(setup: &Setup, scenario: &Scenario) -> Result<Report, String> {
    let drain = if setup.pinned { " --drain-core 0" } else { "" };
    let command = format!(
        "{} --clients {} --seconds {}{drain}",
        setup.bin_dir.join("syscall-floor").display(),
        scenario.clients,
        scenario.seconds,
    );
    report_of(
        Command::new("sh")
            .arg("-c")
            .arg(pinned(setup, 1, &command))
            .output(),
    )
}

/// Runs one scenario once against one server.
pub fn run_one(setup: &Setup, scenario: &Scenario, server: Server) -> Result<Report, String> {
    if server == Server::Cluster {
        return run_cluster(setup, scenario);
    }
    if server == Server::Syscall {
        return run_syscall(setup, scenario);
    }
    let port = free_port().map_err(|e| e.to_string())?;
    let data = std::env::temp_dir().join(format!("state-sync-bench-{}-{port}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let (mut child, store_log) = start_server(setup, server, port, &data)?;
    let before = *store_log
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
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
    // The store prints every 200 ms: let the last figures of the run arrive.
    if server == Server::Durable {
        std::thread::sleep(Duration::from_millis(300));
    }
    let after = *store_log
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&data);
    let mut report = report_of(output)?;
    report.commits = after.0.saturating_sub(before.0);
    report.changes = after.1.saturating_sub(before.1);
    Ok(report)
}

/// Every client sends `updates` at once, then waits for all of them to arrive.
fn burst(updates: u32) -> Vec<String> {
    [
        "--in-flight",
        &updates.to_string(),
        "--max-updates",
        &updates.to_string(),
    ]
    .map(str::to_owned)
    .to_vec()
}

/// A state of about 1 MB (one key; just under the server's 1 MiB frame limit, since one
/// update fills it) that every client attaches to, then updates at 1 in flight.
fn big_state() -> Vec<String> {
    ["--state-bytes", "1000000", "--in-flight", "1"]
        .map(str::to_owned)
        .to_vec()
}

/// The scenarios of a full run, or of a smoke run.
pub fn scenarios(smoke: bool, servers: &[Server]) -> Vec<Scenario> {
    // The cluster runs where the issue measures it, beside the others; the syscall
    // floor only where one update at a time goes to every client.
    let all: Vec<Server> = servers
        .iter()
        .copied()
        .filter(|s| *s != Server::Cluster && *s != Server::Syscall)
        .collect();
    let unbatched: Vec<Server> = servers
        .iter()
        .copied()
        .filter(|s| *s != Server::Cluster && *s != Server::Durable)
        .collect();
    let with_cluster: Vec<Server> = servers
        .iter()
        .copied()
        .filter(|s| *s != Server::Syscall)
        .collect();
    // Ours, and the reference build beside it when one runs.
    let ours: Vec<Server> = servers
        .iter()
        .copied()
        .filter(|s| matches!(s, Server::Ours | Server::Reference))
        .collect();
    // Servers that hold a state (not the floors, which forward frames).
    let stateful: Vec<Server> = servers
        .iter()
        .copied()
        .filter(|s| {
            matches!(
                s,
                Server::Ours | Server::Reference | Server::Durable | Server::Node
            )
        })
        .collect();
    if smoke {
        return vec![
            Scenario {
                label: "fanout 1 MB state",
                name: "fanout",
                clients: 20,
                seconds: 1.0,
                extra: big_state(),
                servers: stateful,
            },
            Scenario {
                label: "fanout",
                name: "fanout",
                clients: 50,
                seconds: 1.0,
                extra: vec![],
                servers: with_cluster.clone(),
            },
            Scenario {
                label: "fanout 1 in flight",
                name: "fanout",
                clients: 50,
                seconds: 1.0,
                extra: vec!["--in-flight".into(), "1".into()],
                servers: unbatched.clone(),
            },
            Scenario {
                label: "all-to-all",
                name: "all-to-all",
                clients: 8,
                seconds: 1.0,
                extra: vec!["--in-flight".into(), "4".into()],
                servers: all.clone(),
            },
            Scenario {
                label: "all-to-all burst",
                name: "all-to-all",
                clients: 8,
                seconds: 10.0,
                extra: burst(200),
                servers: all.clone(),
            },
            Scenario {
                label: "idle",
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
            label: "fanout",
            name: "fanout",
            clients,
            seconds: 5.0,
            extra: vec![],
            servers: if clients == 1_000 {
                with_cluster.clone()
            } else {
                all.clone()
            },
        });
    }
    for clients in [1_000, 10_000] {
        list.push(Scenario {
            label: "fanout 1 in flight",
            name: "fanout",
            clients,
            seconds: 5.0,
            extra: vec!["--in-flight".into(), "1".into()],
            servers: unbatched.clone(),
        });
    }
    list.push(Scenario {
        label: "fanout 1 MB state",
        name: "fanout",
        clients: 1_000,
        seconds: 5.0,
        extra: big_state(),
        servers: stateful,
    });
    list.push(Scenario {
        label: "all-to-all",
        name: "all-to-all",
        clients: 32,
        seconds: 5.0,
        extra: vec!["--in-flight".into(), "4".into()],
        servers: with_cluster.clone(),
    });
    list.push(Scenario {
        label: "all-to-all burst",
        name: "all-to-all",
        clients: 32,
        seconds: 30.0,
        extra: burst(200),
        servers: all.clone(),
    });
    list.push(Scenario {
        label: "idle",
        name: "idle",
        clients: 10_000,
        seconds: 0.0,
        extra: vec![],
        servers: all,
    });
    list.push(Scenario {
        label: "hold",
        name: "hold",
        clients: 19_000,
        seconds: 0.0,
        extra: vec![
            "--max-updates".into(),
            "2".into(),
            "--in-flight".into(),
            "1".into(),
        ],
        servers: vec![Server::Ours],
    });
    list
}

fn command_output(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// The machine, for the report: CPU, cores, memory, kernel, rustc and node.
pub fn machine() -> String {
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

/// Runs every scenario (or those named in `only`) against every server in `servers`,
/// `repeat` times for throughput scenarios, and returns the outcomes; a run that
/// failed is an outcome whose report carries the error.
pub fn run_suite(
    setup: &Setup,
    scenarios: &[Scenario],
    servers: &[Server],
    only: Option<&[String]>,
    repeat: usize,
) -> Vec<Outcome> {
    let mut outcomes = Vec::new();
    for scenario in scenarios {
        if only.is_some_and(|only| !only.iter().any(|name| name == scenario.label)) {
            continue;
        }
        let chosen: Vec<Server> = scenario
            .servers
            .iter()
            .copied()
            .filter(|s| servers.contains(s))
            .collect();
        let traffic = scenario.name == "fanout" || scenario.name == "all-to-all";
        let runs = if traffic { repeat.max(1) } else { 1 };
        // Each repeat runs every server once, in turn: a slow minute of the shared
        // machine then costs every server alike.
        let mut results: Vec<Vec<Result<Report, String>>> = vec![Vec::new(); chosen.len()];
        for run in 0..runs {
            for (i, &server) in chosen.iter().enumerate() {
                eprintln!(
                    "running {} with {} clients against {} ({}/{runs})",
                    scenario.label,
                    scenario.clients,
                    server.name(),
                    run + 1
                );
                results[i].push(run_one(setup, scenario, server));
            }
        }
        for (server, results) in chosen.into_iter().zip(results) {
            let report = median(results).unwrap_or_else(|e| {
                eprintln!("  {} failed: {e}", server.name());
                Report {
                    scenario: scenario.label.into(),
                    clients: scenario.clients,
                    errors: vec![e],
                    ..Report::default()
                }
            });
            outcomes.push(Outcome {
                scenario: scenario.label.to_owned(),
                server,
                report,
            });
        }
    }
    outcomes
}
