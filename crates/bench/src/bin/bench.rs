//! Benchmark runner: `bench [--smoke] [--servers ours,durable,cluster,floor,node,syscall] [--scenarios fanout,idle] [--repeat 3] [--reference PATH [--reference-label TEXT]] [--write docs/benchmarks.md]`
//!
//! Starts each server pinned to core 1 and the load generator pinned to core 0 (with
//! `taskset`, where the machine has two cores or more), runs the scenarios against
//! every server in the same run, prints a table and, with `--write`, writes the
//! report and its chart (an SVG next to it). Exits with 1 when any run failed its
//! correctness check. `--smoke` runs small sizes for a quick check (ours and the floor).
//! Throughput scenarios run `--repeat` times (default 3) and the run with the median
//! server CPU per delivery is reported.

use std::path::{Path, PathBuf};
use std::process::Command;

use state_sync_bench::args::{self, switch, value};
use state_sync_bench::runner::{Setup, machine, run_suite, scenarios};
use state_sync_bench::summary::{
    RunInfo, Server, big_states, document, svg_chart, table, targets, verdict,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = args::parse(
        "bench [options]",
        &[
            switch(
                "--smoke",
                "small sizes, ours and the floor only (a quick check)",
            ),
            value(
                "--servers",
                "LIST",
                "servers to run: ours,durable,cluster,floor,node,syscall (default: all)",
            ),
            value("--scenarios", "LIST", "scenarios to run (default: all)"),
            value(
                "--repeat",
                "N",
                "runs of each throughput scenario (default 3, smoke 1)",
            ),
            value(
                "--reference",
                "PATH",
                "also run this bench-server (built from another commit) beside ours",
            ),
            value(
                "--reference-label",
                "TEXT",
                "what the reference build is, for the report (e.g. its commit)",
            ),
            value(
                "--write",
                "FILE",
                "write the report there, and its chart beside it",
            ),
        ],
    );
    let smoke = args.has("--smoke");
    let repeat = args.get("--repeat")?.unwrap_or(if smoke { 1 } else { 3 });
    let reference = args.text("--reference").map(PathBuf::from);
    let mut servers: Vec<Server> = match args.text("--servers") {
        Some(list) => list
            .split(',')
            .map(|name| Server::from_arg(name).ok_or(format!("unknown server {name:?}")))
            .collect::<Result<_, _>>()?,
        None if smoke => vec![
            Server::Ours,
            Server::Durable,
            Server::Cluster,
            Server::Floor,
            Server::Syscall,
        ],
        None => vec![
            Server::Ours,
            Server::Durable,
            Server::Cluster,
            Server::Floor,
            Server::Node,
            Server::Syscall,
        ],
    };
    if reference.is_some() && !servers.contains(&Server::Reference) {
        servers.insert(1, Server::Reference);
    }
    if reference.is_none() && servers.contains(&Server::Reference) {
        return Err("the reference server needs --reference PATH".into());
    }
    let only: Option<Vec<String>> = args
        .text("--scenarios")
        .map(|list| list.split(',').map(str::to_owned).collect());
    let bin_dir = std::env::current_exe()?
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let setup = Setup {
        bin_dir,
        node_server: Path::new(env!("CARGO_MANIFEST_DIR")).join("baselines/node-ws/server.js"),
        pinned: cores >= 2 && Command::new("taskset").arg("--version").output().is_ok(),
        reference,
    };
    if !setup.pinned {
        eprintln!("note: not pinning (needs 2 cores and taskset); figures are noisier");
    }
    let outcomes = run_suite(
        &setup,
        &scenarios(smoke, &servers),
        &servers,
        only.as_deref(),
        repeat,
    );
    let mut failed = outcomes.iter().any(|o| !o.report.errors.is_empty());
    println!("\n{}{}", table(&outcomes), big_states(&outcomes));
    if !smoke {
        for target in targets(&outcomes) {
            println!("{:8} {}: {}", verdict(&target), target.what, target.figure);
        }
    }
    if let Some(path) = args.text("--write").map(PathBuf::from) {
        let chart = path.with_extension("svg");
        let chart_name = chart
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let info = RunInfo {
            machine: machine(),
            pinned: setup.pinned,
            repeat,
            reference: setup.reference.as_ref().map(|path| {
                args.text("--reference-label")
                    .map_or_else(|| format!("from `{}`", path.display()), str::to_owned)
            }),
        };
        let written = std::fs::write(&path, document(&outcomes, &info, &chart_name))
            .and_then(|()| std::fs::write(&chart, svg_chart(&outcomes)));
        match written {
            Ok(()) => println!("wrote {} and {}", path.display(), chart.display()),
            Err(e) => {
                eprintln!("writing {}: {e}", path.display());
                failed = true;
            }
        }
    }
    if failed {
        eprintln!("bench: some runs failed their correctness check");
        std::process::exit(1);
    }
    Ok(())
}
