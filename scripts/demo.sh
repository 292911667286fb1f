#!/usr/bin/env bash
# Builds and starts the demo server on ws://localhost:${PORT:-5000}.
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo run --locked --release -p state-sync-examples --bin demo-server -- --port "${PORT:-5000}"
