#!/usr/bin/env bash
# Run each fuzz target for a while (default 60 s each):  scripts/fuzz.sh [SECONDS]
# cargo-fuzz needs nightly features; RUSTC_BOOTSTRAP lets the stable toolchain
# this project builds with provide them.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
secs=${1:-60}
for t in rtp telephone_event sdp jitter sip_vet; do
  RUSTC_BOOTSTRAP=1 cargo fuzz run --release "$t" -- -max_total_time="$secs"
done
