#!/usr/bin/env bash
# Builds everything the demo needs (the browser client, the npm package, the React
# chat, the Rust server) and starts it: open the printed address in two tabs and chat.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/build-web.sh
printf '\n==> starting the demo server\n'
exec cargo run --locked --release -q -p state-sync-examples --bin demo-server -- \
  --port "${PORT:-5000}" --static examples/react-chat/dist
