#!/usr/bin/env bash
# Builds the npm package (the browser client in WebAssembly) into npm/pkg and the React
# chat into examples/react-chat/dist, installing what that needs. Prints the gzipped
# size of the .wasm and its JavaScript glue.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
ensure_rust_components
ensure_wasm_tools
ensure_debian_packages

step "wasm-pack build (npm/pkg)"
wasm-pack --log-level warn build crates/client-wasm --target web --out-dir ../../npm/pkg --profile wasm --no-opt --no-pack
# No wasm-opt pass: the profile (opt-level "z", LTO) already gives the size, and the
# binaryen that Debian ships mis-optimizes the reference-types tables wasm-bindgen
# emits (the page then fails with "WebAssembly.Table.set(): Argument 1 is invalid").
# wasm-bindgen warns that `strip = true` hides the target_features section; the
# bindings it then generates work (the browser tests and the end-to-end test use them).
rm -f npm/pkg/package.json npm/pkg/.gitignore npm/pkg/README.md
wasm_gz=$(gzip -9 -c npm/pkg/state_sync_client_wasm_bg.wasm | wc -c)
js_gz=$(cat npm/index.js npm/pkg/state_sync_client_wasm.js | gzip -9 | wc -c)
printf 'npm package size: %s bytes .wasm (%s gzipped) + JS glue %s gzipped = %s bytes gzipped\n' \
  "$(wc -c < npm/pkg/state_sync_client_wasm_bg.wasm)" "$wasm_gz" "$js_gz" "$((wasm_gz + js_gz))"

step "React chat (examples/react-chat/dist)"
# The chat installs the package from npm/ as a user would (a copy, see its .npmrc);
# drop the old copy so that the one just built is installed.
rm -rf examples/react-chat/node_modules/server-state-sync-wasm
(cd examples/react-chat && npm install --no-audit --no-fund --loglevel=error)
(cd examples/react-chat && npx vite build --logLevel warn)
# A development build too (React's StrictMode double-mounts there): the end-to-end
# test checks that it still opens one connection per page.
(cd examples/react-chat && NODE_ENV=development npx vite build --logLevel warn --mode development --outDir dist-dev)
