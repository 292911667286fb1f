#!/usr/bin/env bash
# Fuzzes the protocol crate's decoder, merge rules and client core with cargo fuzz
# (libFuzzer) on the nightly toolchain. Not part of ./scripts/test.sh (the property
# tests in tests/tests/properties.rs are): run it on its own.
#   ./scripts/fuzz.sh            every target for FUZZ_SECONDS (default 60) seconds
#   ./scripts/fuzz.sh decode     one target
# Installs the nightly toolchain and cargo-fuzz when missing. Findings are written to
# fuzz/artifacts/<target>/; the corpus grows in fuzz/corpus/<target>/ (both ignored).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh

rustup toolchain list | grep -q '^nightly' || { step "installing the nightly toolchain"; rustup toolchain install nightly --profile minimal; }
command -v cargo-fuzz >/dev/null || { step "installing cargo-fuzz"; cargo install cargo-fuzz; }

seconds=${FUZZ_SECONDS:-60}
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(decode merge client_core)
for target in "${targets[@]}"; do
  step "fuzzing $target for ${seconds}s"
  (cd fuzz && cargo +nightly fuzz run "$target" -- -max_total_time="$seconds" -max_len=4096)
done
echo "fuzz: no failure in ${#targets[@]} target(s)"
