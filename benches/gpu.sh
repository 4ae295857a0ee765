#!/usr/bin/env bash
# The GPU check of issue 6, as one short script for a machine with a GPU (and Vulkan):
# wgpu parity with the CPU, then training-step and forward images per second at 32x32 batch 256
# and 224x224 batch 64. Prints everything to stdout; about 5 minutes once built.
#
#   bash benches/gpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --features wgpu --example profile_step --tests
cargo test --release --features wgpu --test backends -- --nocapture 2>&1 | grep -E "wgpu:|test result"
for args in "--size 32 --batch 256" "--size 224 --batch 64"; do
    target/release/examples/profile_step --backend wgpu --steps 5 $args
    target/release/examples/profile_step --backend wgpu --steps 5 --frozen $args
done
