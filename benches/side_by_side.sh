#!/usr/bin/env bash
# One command for README's performance table: our `cargo bench --bench model` (flex) beside
# PyTorch, Keras and onnxruntime, in one sitting on this machine, plus the peak memory of a
# training step (ours and PyTorch's). Needs the peers' environments (`bash ../shared/peers/setup.sh`).
# At 32x32, batch 32, ours first then the peers; benches/interleaved.sh alternates them, at any size.
#
#   bash benches/side_by_side.sh            # writes target/side_by_side/*.json and prints a table
set -euo pipefail
cd "$(dirname "$0")/.."

PEERS="${PEERS:-../shared/peers}"
TORCH="${TORCH_PY:-/opt/peers/venv-torch/bin/python}"
TF="${TF_PY:-/opt/peers/venv-tf/bin/python}"
OUT="${CARGO_TARGET_DIR:-target}/side_by_side"
mkdir -p "$OUT"

echo "== ours: cargo bench --bench model (flex)"
RESNET_BENCH_BACKENDS=flex RESNET_BENCH_SIZES=32 cargo bench --bench model -- --noplot >"$OUT/ours.log" 2>&1
# shellcheck source=benches/quietly.sh
. "$(dirname "$0")/quietly.sh"
quietly "building profile_step" cargo build --release --example profile_step
/usr/bin/time -f '{"peak_rss_mb": %M}' -o "$OUT/ours_memory.json" \
    target/release/examples/profile_step --steps 3 >"$OUT/ours_profile.txt"

echo "== PyTorch"
OMP_WAIT_POLICY=PASSIVE "$TORCH" "$PEERS/bench_torch.py" >"$OUT/torch.json"
OMP_WAIT_POLICY=PASSIVE "$TORCH" benches/peak_memory_torch.py >"$OUT/torch_memory.json"
echo "== Keras"
TF_ENABLE_ONEDNN_OPTS=1 "$TF" "$PEERS/bench_keras.py" 2>/dev/null | tail -1 >"$OUT/keras.json"
echo "== onnxruntime"
[ -f "$OUT/resnet50-32.onnx" ] || quietly "exporting torchvision's ResNet50 for onnxruntime" "$TORCH" benches/export_peer_onnx.py "$OUT/resnet50-32.onnx"
"$TORCH" "$PEERS/bench_ort.py" --onnx "$OUT/resnet50-32.onnx" >"$OUT/ort.json"

"$TORCH" - "$OUT" "${CARGO_TARGET_DIR:-target}/criterion" <<'EOF'
import json, sys, os
out, crit = sys.argv[1], sys.argv[2]
def ours(case):
    with open(os.path.join(crit, "model", "flex_" + case, "new", "estimates.json")) as f:
        return 32 / (json.load(f)["median"]["point_estimate"] / 1e9)
def peer(name):
    with open(os.path.join(out, name)) as f:
        return json.loads(f.read().strip().splitlines()[-1])
t, k, o = peer("torch.json"), peer("keras.json"), peer("ort.json")
g = lambda r, key: r[key]["img_s_median"]
rows = [
    ("inference", ours("infer"), g(t, "infer_32_b32"), g(k, "infer_32_b32"), g(o, "infer_32_b32")),
    ("training step", ours("train"), g(t, "train_full_32_b32"), g(k, "train_full_32_b32"), None),
    ("head-only step", ours("head"), g(t, "train_head_32_b32"), g(k, "train_head_32_b32"), None),
]
print("| case (img/s) | resnet-transfer (flex) | PyTorch | Keras | onnxruntime | ours / best peer |")
print("| --- | --- | --- | --- | --- | --- |")
for name, us, *peers in rows:
    best = max(p for p in peers if p is not None)
    cells = " | ".join("-" if p is None else f"{p:.1f}" for p in peers)
    print(f"| {name} | {us:.1f} | {cells} | {us / best:.2f} |")
mem_us = peer("ours_memory.json")["peak_rss_mb"] / 1024
mem_t = peer("torch_memory.json")["peak_rss_mb"]
print(f"| peak memory, training step (MB RSS) | {mem_us:.0f} | {mem_t:.0f} | - | - | {mem_us / mem_t:.2f} |")
print()
print("phase-1 epoch, 10,000 images: Keras (10,000 / its head-only rate) "
      f"{10000 / g(k, 'train_head_32_b32'):.1f} s; ours with the feature cache: one feature pass "
      f"(10,000 / our inference rate) {10000 / ours('infer'):.1f} s, then head epochs on cached features")
print(open(os.path.join(out, "ours_profile.txt")).read().strip())
EOF
