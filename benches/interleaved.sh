#!/usr/bin/env bash
# Ours against the peers, interleaved: for each round and each case, ours (flex), then PyTorch,
# Keras and onnxruntime, one after the other on the same 2 threads, so that a busy spell of the
# machine hits both sides of a ratio. Prints each round's ratios and, per case, the median and
# range of the ratio over the rounds, plus the peak memory of a training step (ours and
# PyTorch's). Says which CPU it ran on.
#
#   bash benches/interleaved.sh [SIZE] [BATCH] [ROUNDS]      # default 224 8 3; 32 32 3 for CIFAR
#
# Needs the peers' environments (bash ../shared/peers/setup.sh); writes $OUT (target/interleaved).
set -euo pipefail
cd "$(dirname "$0")/.."

SIZE="${1:-224}"
BATCH="${2:-8}"
ROUNDS="${3:-3}"
TORCH="${TORCH_PY:-/opt/peers/venv-torch/bin/python}"
TF="${TF_PY:-/opt/peers/venv-tf/bin/python}"
TARGET="${CARGO_TARGET_DIR:-target}"
OUT="$TARGET/interleaved"
STEPS="${STEPS:-5}"
mkdir -p "$OUT"
LOG="$OUT/s$SIZE-b$BATCH.txt"
: >"$LOG"

lscpu | grep -E "Model name|^Flags" | sed 's/^Flags:\s*/flags: /' | tr -s ' ' >"$OUT/cpu.txt"
echo "CPU: $(grep 'Model name' "$OUT/cpu.txt" | cut -d: -f2- | xargs);" \
     "AVX-512: $(grep -q avx512f "$OUT/cpu.txt" && echo yes || echo no);" \
     "AMX: $(grep -q amx_tile "$OUT/cpu.txt" && echo yes || echo no); load $(cut -d' ' -f1-3 /proc/loadavg)"

cargo build --release --example profile_step >/dev/null 2>&1
OURS="$TARGET/release/examples/profile_step"
ONNX="$OUT/resnet50-$SIZE.onnx"
[ -f "$ONNX" ] || "$TORCH" benches/export_peer_onnx.py "$ONNX" --size "$SIZE" >/dev/null 2>&1

peer() {  # peer NAME CASE
    case "$1" in
        torch) OMP_WAIT_POLICY=PASSIVE "$TORCH" benches/peer_case.py --peer torch --case "$2" \
                   --size "$SIZE" --batch "$BATCH" --iters "$STEPS" ;;
        keras) TF_ENABLE_ONEDNN_OPTS=1 "$TF" benches/peer_case.py --peer keras --case "$2" \
                   --size "$SIZE" --batch "$BATCH" --iters "$STEPS" 2>/dev/null | tail -1 ;;
        ort) "$TORCH" benches/peer_case.py --peer ort --case infer --onnx "$ONNX" \
                   --size "$SIZE" --batch "$BATCH" --iters "$((2 * STEPS))" ;;
    esac
}

for round in $(seq "$ROUNDS"); do
    for case in infer train head; do
        case "$case" in
            infer) flags="--infer --fused" ; peers="torch keras ort" ;;
            train) flags="" ; peers="torch keras" ;;
            head) flags="--frozen" ; peers="torch keras" ;;
        esac
        # shellcheck disable=SC2086
        line=$("$OURS" --backend flex --size "$SIZE" --batch "$BATCH" --steps "$STEPS" $flags)
        echo "$round ours $case $line" >>"$LOG"
        for p in $peers; do
            echo "$round $p $case $(peer "$p" "$case")" >>"$LOG"
        done
    done
    echo "round $round done (load $(cut -d' ' -f1-3 /proc/loadavg))"
done

# Peak memory of a training step: ours (resident set of the whole process) and PyTorch's.
/usr/bin/time -f '%M' -o "$OUT/ours_rss.txt" "$OURS" --backend flex --size "$SIZE" \
    --batch "$BATCH" --steps 2 >/dev/null
OMP_WAIT_POLICY=PASSIVE "$TORCH" benches/peak_memory_torch.py --size "$SIZE" --batch "$BATCH" \
    >"$OUT/torch_rss.json"

"$TORCH" - "$LOG" "$OUT" <<'EOF'
import json, re, statistics, sys, os
log, out = sys.argv[1], sys.argv[2]
rates = {}  # (round, case) -> {peer: img/s}
for line in open(log):
    rnd, who, case, rest = line.split(" ", 3)
    if who == "ours":
        value = float(re.search(r"\(([\d.]+) img/s\)", rest).group(1))
    else:
        value = json.loads(rest)["img_s_median"]
    rates.setdefault((int(rnd), case), {})[who] = value
cases = {"infer": "inference", "train": "training step", "head": "head-only step"}
ratios = {c: [] for c in cases}
print("| round | case | ours | PyTorch | Keras | onnxruntime | ours / best peer |")
print("| --- | --- | --- | --- | --- | --- | --- |")
for (rnd, case), r in sorted(rates.items()):
    peers = [r.get(p) for p in ("torch", "keras", "ort")]
    best = max(p for p in peers if p is not None)
    ratios[case].append(r["ours"] / best)
    cells = " | ".join("-" if p is None else f"{p:.2f}" for p in peers)
    print(f"| {rnd} | {cases[case]} | {r['ours']:.2f} | {cells} | {r['ours'] / best:.2f} |")
print()
for case, rs in ratios.items():
    print(f"{cases[case]}: ours / best peer median {statistics.median(rs):.2f} "
          f"(range {min(rs):.2f}-{max(rs):.2f} over {len(rs)} rounds)")
ours_mb = int(open(os.path.join(out, "ours_rss.txt")).read().split()[-1]) / 1024
torch_mb = json.loads(open(os.path.join(out, "torch_rss.json")).read())["peak_rss_mb"]
print(f"peak memory of a training step: ours {ours_mb:.0f} MB, PyTorch {torch_mb:.0f} MB "
      f"({ours_mb / torch_mb:.2f}x)")
EOF
