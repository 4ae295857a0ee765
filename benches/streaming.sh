#!/usr/bin/env bash
# Photo sets larger than memory (issue 29): fine_tune's peak memory on 2,000 and on 20,000
# generated 640x480 JPEGs at --input-size 224, streamed from their files; and a phase-2 epoch's
# images per second with the photos streamed against held in memory, with a narrow ResNet18
# (decoding weighs most) and with a full-size ResNet50 (the model weighs most).
#
#   PYTHON=/path/to/python-with-numpy-pillow-torch-onnx bash benches/streaming.sh [SMALL] [LARGE]
#
# Photos come from benches/make_photo_folder.py (seeded), weights from
# tests/fixtures/make_onnx.py (torchvision layout, seeded random weights). Everything is written
# under $WORK (default /tmp/resnet-transfer-streaming; about 1.3 GB of photos for 20,000).
# Prints one line per run: photos, how they were kept, peak RSS, phase-2 seconds and images/s.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
WORK="${WORK:-/tmp/resnet-transfer-streaming}"
SMALL="${1:-2000}"
LARGE="${2:-20000}"
TARGET="${CARGO_TARGET_DIR:-target}"
mkdir -p "$WORK"
lscpu | grep "Model name" || true
grep MemTotal /proc/meminfo || true

cargo build --features wgpu --example fine_tune
BIN="$TARGET/debug/examples/fine_tune"

[ -f "$WORK/narrow/torch-folded.onnx" ] ||
    "$PY" tests/fixtures/make_onnx.py "$WORK/narrow" --styles torch-folded --depth 18 --width 8 --size 224
[ -f "$WORK/full/torch-folded.onnx" ] ||
    "$PY" tests/fixtures/make_onnx.py "$WORK/full" --styles torch-folded --full
for n in "$SMALL" "$LARGE" 500 256; do
    [ -d "$WORK/photos-$n" ] || "$PY" benches/make_photo_folder.py "$WORK/photos-$n" "$n"
done

# run NAME PHOTOS WEIGHTS PHASE1 PHASE2 [OPTIONS...]: one fine_tune, its peak RSS and phase 2's pace.
run() {
    local name=$1 photos=$2 weights=$3 p1=$4 p2=$5
    shift 5
    local out="$WORK/run-$name"
    rm -rf "$out"
    /usr/bin/time -f "%M" -o "$WORK/rss-$name" "$BIN" --images "$WORK/photos-$photos" \
        --weights "$weights" --input-size 224 --valid-share 0.05 --batch-size 32 \
        --phase1-epochs "$p1" --phase2-epochs "$p2" --offline --quiet --out "$out" "$@" >/dev/null
    "$PY" - "$out" "$WORK/rss-$name" "$name" "$photos" <<'PYEOF'
import json, sys
out, rss, name, photos = sys.argv[1:]
h = json.load(open(out + "/history.json"))["epochs"]
kept = [l for l in open(out + "/summary.md") if l.startswith("- photos:")]
two = [e for e in h if e["phase"] == 2]
train = int(photos) * 0.95
pace = f"phase 2 {two[0]['seconds']:.1f} s, {train / two[0]['seconds']:.1f} images/s" if two else "no phase 2"
print(f"{name}: {photos} photos, peak RSS {int(open(rss).read()) / 1024:.0f} MB, {pace};"
      f" {kept[0][2:].strip() if kept else ''}")
PYEOF
}

NARROW="$WORK/narrow/torch-folded.onnx"
FULL="$WORK/full/torch-folded.onnx"
# Memory: streamed (budget 0) and held, the narrow model, phase 1 (listing, the check of every
# photo, the digest, the feature pass and the head's epoch; phase 2's batches are the same path).
run "rss-$SMALL" "$SMALL" "$NARROW" 1 0 --memory-budget 0
run "rss-$LARGE" "$LARGE" "$NARROW" 1 0 --memory-budget 0
run "held-$SMALL" "$SMALL" "$NARROW" 1 0 --cache-decoded
run "held-$LARGE" "$LARGE" "$NARROW" 1 0 --cache-decoded
# Pace of a phase-2 epoch, streamed against held: the narrow model, then a full ResNet50.
run "pace-narrow-streamed" 500 "$NARROW" 0 1 --memory-budget 0
run "pace-narrow-held" 500 "$NARROW" 0 1 --cache-decoded
run "pace-full-streamed" 256 "$FULL" 0 1 --memory-budget 0
run "pace-full-held" 256 "$FULL" 0 1 --cache-decoded
