#!/usr/bin/env bash
# The GPU check, as one short script for a machine with a GPU: which GPU and CPU, parity of every
# compiled GPU backend with the CPU (tests/it/backends.rs), then inference, training-step and
# head-only-step images per second at 32x32 batch 256 and 224x224 batch 64, for wgpu and, where
# an NVIDIA driver is present, CUDA. `FEATURES=wgpu,vulkan` adds the vulkan backend (SPIR-V);
# wgpu on a Vulkan driver then compiles SPIR-V as well (docs/LIBRARY.md, Backends), so WGSL's
# numbers come from the default build. Prints everything to stdout. Builds first (release), then
# about 5 minutes.
#
#   bash benches/gpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET="${CARGO_TARGET_DIR:-target}"
date -u
lscpu | grep "Model name" || true
FEATURES="${FEATURES:-wgpu}"
BACKENDS=wgpu
case "$FEATURES" in *vulkan*) BACKENDS="wgpu vulkan" ;; esac
if command -v nvidia-smi >/dev/null; then
    nvidia-smi -L
    FEATURES="$FEATURES,cuda"
    BACKENDS="$BACKENDS cuda"
fi
cargo build --release --features "$FEATURES" --example profile_step --tests
cargo test --release --features "$FEATURES" --test it backends:: -- --nocapture 2>&1 \
    | grep -E "wgpu|vulkan|cuda|test result"
for backend in $BACKENDS; do
    for args in "--size 32 --batch 256" "--size 224 --batch 64"; do
        # shellcheck disable=SC2086
        {
            "$TARGET/release/examples/profile_step" --backend "$backend" --steps 5 --infer $args
            "$TARGET/release/examples/profile_step" --backend "$backend" --steps 5 $args
            "$TARGET/release/examples/profile_step" --backend "$backend" --steps 5 --frozen $args
        }
    done
done
