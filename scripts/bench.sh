#!/usr/bin/env bash
# The full benchmark: builds in release mode, installs the Node.js baseline's packages,
# runs every scenario against our server (in memory, durable, and two servers on one
# Redis) and both baselines, prints the table and
# writes docs/benchmarks.md with its chart. Takes a few minutes. Extra arguments go to
# the runner (for example `--servers ours,floor`).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
# The cluster runs start their own redis-server on a free port.
command -v redis-server >/dev/null || { step "installing redis-server"; apt_install redis-server; }
step "building (release)"
cargo build --locked --release -p state-sync-bench
ensure_npm_install crates/bench/baselines/node-ws
step "running the benchmarks"
./target/release/bench --write docs/benchmarks.md "$@"
