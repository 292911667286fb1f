#!/usr/bin/env bash
# Builds the npm package (the browser client in WebAssembly) into npm/pkg, packs it into
# a ready-to-install npm/server-state-sync-wasm-<version>.tgz (printed at the end), and
# builds the React chat into examples/react-chat/dist, installing what that needs.
# Prints the gzipped size of the .wasm and its JavaScript glue.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
ensure_rust_components
ensure_wasm_tools
ensure_debian_packages

step "the browser client in WebAssembly (npm/pkg)"
# What `wasm-pack build` does, minus what we do not want from it: cargo, then the
# wasm-bindgen CLI (the version of the crate, see setup.sh).
# - No wasm-opt pass: the profile (opt-level "z", LTO) already gives the size, and the
#   binaryen that Debian ships mis-optimizes the reference-types tables wasm-bindgen
#   emits (the page then fails with "WebAssembly.Table.set(): Argument 1 is invalid").
# - The `wasm` profile strips debug info only: the linker's full strip would also drop
#   the target_features section that wasm-bindgen reads (it then warns on every build
#   and guesses the features). The name section goes here instead.
cargo build --locked -q --profile wasm --target wasm32-unknown-unknown -p state-sync-client-wasm
rm -rf npm/pkg
wasm-bindgen --target web --out-dir npm/pkg --remove-name-section --remove-producers-section \
  target/wasm32-unknown-unknown/wasm/state_sync_client_wasm.wasm
wasm_gz=$(gzip -9 -c npm/pkg/state_sync_client_wasm_bg.wasm | wc -c)
js_gz=$(cat npm/index.js npm/pkg/state_sync_client_wasm.js | gzip -9 | wc -c)
printf 'npm package size: %s bytes .wasm (%s gzipped) + JS glue %s gzipped = %s bytes gzipped\n' \
  "$(wc -c < npm/pkg/state_sync_client_wasm_bg.wasm)" "$wasm_gz" "$js_gz" "$((wasm_gz + js_gz))"

step "the npm package (npm/*.tgz)"
# The package is not on the npm registry: this tarball is how to install it (see
# npm/README.md). npm pack takes the files listed in npm/package.json.
rm -f npm/server-state-sync-wasm-*.tgz
tarball=npm/$(cd npm && npm pack --silent --ignore-scripts)
tar -tzf "$tarball" | grep -qx 'package/pkg/state_sync_client_wasm_bg.wasm' \
  || { echo "$tarball has no .wasm"; exit 1; }

step "React chat (examples/react-chat/dist)"
# The chat installs the package from npm/ as a user would (a copy, see its .npmrc);
# drop the old copy so that the one just built is installed.
rm -rf examples/react-chat/node_modules/server-state-sync-wasm
(cd examples/react-chat && npm install --no-audit --no-fund --loglevel=error)
(cd examples/react-chat && npx vite build --logLevel warn)
# A development build too (React's StrictMode double-mounts there): the end-to-end
# test checks that it still opens one connection per page.
(cd examples/react-chat && NODE_ENV=development npx vite build --logLevel warn --mode development --outDir dist-dev)

printf '\nnpm package: %s\ninstall it in your app with: npm install %s\n' "$tarball" "$PWD/$tarball"
