#!/usr/bin/env bash
# Ours against the peers, interleaved: for each round and each case, ours (flex), onnxruntime (for
# inference), Keras and PyTorch, one after the other on the same 2 threads, so that a busy spell
# of the machine hits both sides of a ratio; every other round in the reverse order. Prints each round's ratios and, per case, the median and
# range of the ratio over the rounds, plus the peak memory of a training step (ours and
# PyTorch's). Says which CPU it ran on.
#
#   bash benches/interleaved.sh [SIZE] [BATCH] [ROUNDS]      # default 224 8 3; 32 32 3 for CIFAR
#   bash benches/interleaved.sh 224 1 3                      # one photo: latency, inference only
#   CASES="infer" bash benches/interleaved.sh 224 8 3        # some of the cases (infer train head)
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
# A single photo is a deployed model's case: its latency, inference only.
if [ "$BATCH" = 1 ]; then CASES="${CASES:-infer}"; else CASES="${CASES:-infer train head}"; fi
mkdir -p "$OUT"
LOG="$OUT/s$SIZE-b$BATCH.txt"
: >"$LOG"

lscpu | grep -E "Model name|^CPU family|^Model:|^Flags" | sed 's/^Flags:\s*/flags: /' \
    | tr -s ' ' >"$OUT/cpu.txt"
field() { grep "^$1" "$OUT/cpu.txt" | cut -d: -f2- | xargs; }
# One core's cache of a level and type (lscpu sums them over the cores).
cache() {
    for d in /sys/devices/system/cpu/cpu0/cache/index*; do
        if [ "$(cat "$d/level" 2>/dev/null)" = "$1" ] && [ "$(cat "$d/type" 2>/dev/null)" != "$2" ]; then
            cat "$d/size"; return
        fi
    done
    echo "?"
}
# A virtual machine often names only the vendor ("AMD EPYC"): the family and model say which
# generation, and the caches are what the block sizes meet.
family=$(field 'CPU family')
case "$(field 'Model name')/$family" in
    *AMD*/23) generation=", Zen or Zen 2" ;;
    *AMD*/25) generation=", Zen 3 or Zen 4" ;;
    *AMD*/26) generation=", Zen 5" ;;
    *) generation="" ;;
esac
echo "CPU: $(field 'Model name') (family $family, model $(field 'Model:')$generation);" \
     "AVX-512: $(grep -q avx512f "$OUT/cpu.txt" && echo yes || echo no);" \
     "AMX: $(grep -q amx_tile "$OUT/cpu.txt" && echo yes || echo no);" \
     "per core L1d $(cache 1 Instruction), L2 $(cache 2 Instruction), L3 $(cache 3 Instruction)" \
     "(shared); load $(cut -d' ' -f1-3 /proc/loadavg)"
# The widest vector set, which decides the folded path's tile (AVX-512 or AVX2 with FMA);
# RESNET_TRANSFER_NO_AVX512 turns the AVX-512 tile off unless empty, 0, off, false or no.
# Read as the crate reads it: whitespace trimmed at both ends, any case.
no512="${RESNET_TRANSFER_NO_AVX512:-}"
no512="${no512#"${no512%%[![:space:]]*}"}"
no512="${no512%"${no512##*[![:space:]]}"}"
no512=$(printf '%s' "$no512" | tr 'A-Z' 'a-z')
case "$no512" in
    "" | 0 | off | false | no) no512="" ;;
    *) no512=" (AVX-512 tile off: RESNET_TRANSFER_NO_AVX512=\"$RESNET_TRANSFER_NO_AVX512\"; the peers"
       no512="$no512 still use AVX-512, so a ratio is not an AVX2 CPU's)" ;;
esac
echo "widest vector set: $(if grep -qw avx512f "$OUT/cpu.txt"; then echo AVX-512;
    elif grep -qw avx2 "$OUT/cpu.txt" && grep -qw fma "$OUT/cpu.txt"; then echo AVX2+FMA;
    else echo "below AVX2 (gemm crate path)"; fi)$no512"

# shellcheck source=benches/quietly.sh
. "$(dirname "$0")/quietly.sh"
quietly "building profile_step" cargo build --release --example profile_step
OURS="$TARGET/release/examples/profile_step"
ONNX="$OUT/resnet50-$SIZE.onnx"
[ -f "$ONNX" ] || quietly "exporting torchvision's ResNet50 for onnxruntime" "$TORCH" benches/export_peer_onnx.py "$ONNX" --size "$SIZE"

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

# Ours runs next to the peer a case's ratio is usually taken against (onnxruntime for inference,
# Keras for training), so that both meet the same spell of a busy machine (spells last about a
# minute there, a round of inference takes two), and the order turns round every other round
# (ours first, then last), so that neither side always runs after the other.
for round in $(seq "$ROUNDS"); do
    for case in $CASES; do
        case "$case" in
            infer) flags="--infer --fused" ; order="ours ort keras torch" ;;
            train) flags="" ; order="ours keras torch" ;;
            head) flags="--frozen" ; order="ours keras torch" ;;
        esac
        if [ $((round % 2)) = 0 ]; then order=$(echo "$order" | tr ' ' '\n' | tac | xargs); fi
        for who in $order; do
            if [ "$who" = ours ]; then
                # shellcheck disable=SC2086
                line=$("$OURS" --backend flex --size "$SIZE" --batch "$BATCH" --steps "$STEPS" $flags)
                echo "$round ours $case $line" >>"$LOG"
            else
                echo "$round $who $case $(peer "$who" "$case")" >>"$LOG"
            fi
        done
    done
    echo "round $round done (load $(cut -d' ' -f1-3 /proc/loadavg))"
done

# Peak memory of a training step: ours (resident set of the whole process) and PyTorch's.
rm -f "$OUT/ours_rss.txt" "$OUT/torch_rss.json"
if [[ " $CASES " == *" train "* ]]; then
    /usr/bin/time -f '%M' -o "$OUT/ours_rss.txt" "$OURS" --backend flex --size "$SIZE" \
        --batch "$BATCH" --steps 2 >/dev/null
    OMP_WAIT_POLICY=PASSIVE "$TORCH" benches/peak_memory_torch.py --size "$SIZE" --batch "$BATCH" \
        >"$OUT/torch_rss.json"
fi

"$TORCH" - "$LOG" "$OUT" "$BATCH" <<'EOF'
import json, re, statistics, sys, os
log, out, batch = sys.argv[1], sys.argv[2], int(sys.argv[3])
rates = {}  # (round, case) -> {peer: img/s}
for line in open(log):
    rnd, who, case, rest = line.split(" ", 3)
    try:
        if who == "ours":
            value = float(re.search(r"\(([\d.]+) img/s\)", rest).group(1))
        else:
            value = json.loads(rest)["img_s_median"]
    except (AttributeError, ValueError, KeyError):
        # A peer that failed (a missing environment) prints nothing the table can use: say which,
        # and leave it out rather than end the script on a traceback.
        print(f"round {rnd}: {who} gave no result for {case} (its line: {rest.strip()!r}); "
              f"left out. Run it alone to see why, e.g. benches/peer_case.py --peer {who}",
              file=sys.stderr)
        continue
    rates.setdefault((int(rnd), case), {})[who] = value
cases = {"infer": "inference", "train": "training step", "head": "head-only step"}
ratios = {c: [] for c in cases}
bests = {c: [] for c in cases}
against_ort = []  # ours over onnxruntime, images/s, each inference round
names = {"torch": "PyTorch", "keras": "Keras", "ort": "onnxruntime"}
print("| round | case | ours | PyTorch | Keras | onnxruntime | ours / best peer |")
print("| --- | --- | --- | --- | --- | --- | --- |")
for (rnd, case), r in sorted(rates.items()):
    peers = [r.get(p) for p in ("torch", "keras", "ort")]
    best = max(p for p in peers if p is not None)
    ratios[case].append(r["ours"] / best)
    bests[case].append(max((v, k) for k, v in r.items() if k != "ours")[1])
    if case == "infer" and "ort" in r:
        against_ort.append(r["ours"] / r["ort"])
    cells = " | ".join("-" if p is None else f"{p:.2f}" for p in peers)
    print(f"| {rnd} | {cases[case]} | {r['ours']:.2f} | {cells} | {r['ours'] / best:.2f} |")
print()
for case, rs in ratios.items():
    if rs:
        counts = ", ".join(f"{names[p]} in {bests[case].count(p)}"
                           for p in names if p in bests[case])
        print(f"{cases[case]}: ours / best peer median {statistics.median(rs):.2f} "
              f"(range {min(rs):.2f}-{max(rs):.2f} over {len(rs)} rounds; best peer: {counts})")
if against_ort:
    print(f"inference: ours / onnxruntime (images/s) median {statistics.median(against_ort):.2f} "
          f"(range {min(against_ort):.2f}-{max(against_ort):.2f})")
# Latency (milliseconds a batch) of inference, ours and onnxruntime's: for a single photo, the
# figure a deployed model is judged by.
times = [(1e3 * batch / r["ours"], 1e3 * batch / r["ort"])
         for (rnd, case), r in sorted(rates.items()) if case == "infer" and "ort" in r]
if times:
    ours_ms = statistics.median(t[0] for t in times)
    ort_ms = statistics.median(t[1] for t in times)
    shares = [o / p for o, p in times]
    print(f"inference latency, batch {batch}: ours {ours_ms:.1f} ms, onnxruntime {ort_ms:.1f} ms "
          f"(ours / onnxruntime's time median {statistics.median(shares):.2f}, "
          f"range {min(shares):.2f}-{max(shares):.2f})")
if os.path.exists(os.path.join(out, "ours_rss.txt")):
    ours_mb = int(open(os.path.join(out, "ours_rss.txt")).read().split()[-1]) / 1024
    torch_mb = json.loads(open(os.path.join(out, "torch_rss.json")).read())["peak_rss_mb"]
    print(f"peak memory of a training step: ours {ours_mb:.0f} MB, PyTorch {torch_mb:.0f} MB "
          f"({ours_mb / torch_mb:.2f}x)")
EOF
