#!/usr/bin/env bash
# Every check and test of the project. Installs what it needs (rustfmt, clippy, the
# wasm32 target, wasm-bindgen-cli, wasm-pack, Chromium and ChromeDriver, npm packages)
# and skips what is already there. Run from anywhere.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh

step "toolchain and tools"
ensure_rust_components
ensure_wasm_tools
ensure_debian_packages

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (native)"
cargo clippy --locked --workspace --all-targets -- -D warnings

step "cargo clippy (the server library alone: default features, without Redis)"
cargo clippy --locked -p state-sync-server --all-targets -- -D warnings

step "cargo clippy (wasm32: the protocol and the browser client)"
cargo clippy --locked --target wasm32-unknown-unknown -p state-sync-protocol -p state-sync-client-wasm --all-targets -- -D warnings

step "cargo doc"
RUSTDOCFLAGS="-D warnings" cargo doc --locked --workspace --no-deps

log=$(mktemp)
server_pid=
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
  rm -f "$log"
}
trap cleanup EXIT

step "cargo test (with Redis: the tests start redis-server on free ports, no files left behind)"
cargo test --locked --workspace 2>&1 | tee -a "$log"

step "browser tests: wasm-bindgen-test in headless Chromium against a real server"
cargo build --locked -q -p state-sync-tests --bin browser-test-server
server_log=$(mktemp)
./target/debug/browser-test-server > "$server_log" 2>&1 &
server_pid=$!
for _ in $(seq 100); do grep -q '^listening on ' "$server_log" && break; sleep 0.1; done
address=$(sed -n 's/^listening on //p' "$server_log")
[ -n "$address" ] || { cat "$server_log"; echo "browser-test-server did not start"; exit 1; }
STATE_SYNC_TEST_URL="ws://$address" wasm-pack test --headless --chrome crates/client-wasm 2>&1 | tee -a "$log"
kill "$server_pid"; server_pid=

step "npm package and React chat"
./scripts/build-web.sh

step "the npm package's TypeScript types"
# tests/e2e installs the package from npm/ (a copy): drop the old copy first.
rm -rf tests/e2e/node_modules/server-state-sync-wasm
(cd tests/e2e && npm install --no-audit --no-fund --loglevel=error)
(cd tests/e2e && npx tsc --noEmit -p tsconfig.json)

step "end-to-end: the React chat in two Chromium pages"
cargo build --locked -q --release -p state-sync-examples --bin demo-server
e2e=$(mktemp)
(cd tests/e2e && node --test) 2>&1 | tee "$e2e"
# node's runner prints "# pass N" / "# fail N"; count them in the total below.
awk '/^# pass / { print "test result: ok. " $3 " passed; 0 failed" } /^# fail / { print "test result: e2e. 0 passed; " $3 " failed" }' "$e2e" >> "$log"
rm -f "$e2e"

step "the newcomer's path: a new Vite + React app outside the repository, as npm/README.md says"
(cd tests/newcomer && npm install --no-audit --no-fund --loglevel=error)
newcomer=$(mktemp)
(cd tests/newcomer && node --test) 2>&1 | tee "$newcomer"
awk '/^# pass / { print "test result: ok. " $3 " passed; 0 failed" } /^# fail / { print "test result: newcomer. 0 passed; " $3 " failed" }' "$newcomer" >> "$log"
rm -f "$newcomer"

step "benchmark smoke run (small sizes; the full run is ./scripts/bench.sh)"
cargo build --locked -q --release -p state-sync-bench
./target/release/bench --smoke
echo "test result: ok. 1 passed; 0 failed (benchmark smoke run)" >> "$log"

# One closing line for the whole run (each runner prints its own).
awk '/^test result:/ { passed += $4; failed += $6 } END { printf "\ntests: %d passed, %d failed\n", passed, failed }' "$log"
