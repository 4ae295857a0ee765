#!/usr/bin/env bash
# Draws README's pictures of steering a fine-tune (docs/pictures/*.png) from a real run: a
# generated photo folder in which each class is marked by a patch of its own colour at a random
# place, beside a decoy patch of a colour no class uses, on a noisy background; a narrow
# torchvision ResNet18 with seeded random weights (tests/fixtures/make_onnx.py) stands in for
# ImageNet weights. The run sweeps phase 1's rate, releases the backbone gradually with per-stage
# rates, and draws Grad-CAM maps at 128 pixels.
#
#   PYTHON=/path/to/python-with-numpy-pillow-torch-onnx bash docs/pictures.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
WORK="${WORK:-/tmp/resnet-transfer-pictures}"
TARGET="${CARGO_TARGET_DIR:-target}"
mkdir -p "$WORK"
"$PY" - "$WORK/photos" <<'PYEOF'
import os, sys
import numpy as np
from PIL import Image
out = sys.argv[1]
rng = np.random.default_rng(0)
colours = {"red": (220, 40, 40), "green": (40, 200, 60), "blue": (40, 70, 220), "yellow": (230, 210, 40)}
decoy = (200, 60, 200)
for name, colour in colours.items():
    os.makedirs(os.path.join(out, name), exist_ok=True)
    for i in range(40):
        img = rng.normal(110, 30, (240, 320, 3))
        for c, side in ((colour, 70), (decoy, 70)):
            y, x = rng.integers(0, 240 - side), rng.integers(0, 320 - side)
            img[y:y + side, x:x + side] = c
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(
            os.path.join(out, name, f"{i:03d}.jpg"), quality=92)
PYEOF
[ -f "$WORK/weights/torch-folded.onnx" ] ||
    "$PY" tests/fixtures/make_onnx.py "$WORK/weights" --styles torch-folded --depth 18 --width 16 --size 128
cargo build --features wgpu --example fine_tune
rm -rf "$WORK/run"
"$TARGET/debug/examples/fine_tune" --images "$WORK/photos" --weights "$WORK/weights/torch-folded.onnx" \
    --input-size 128 --batch-size 16 --phase1-epochs 4 --phase2-epochs 6 --find-lr 1 \
    --phase1-lr suggested --phase2-lr 1e-3 --unfreeze gradual --unfreeze-every 2 \
    --stage-lr-decay 0.5 --offline --quiet --out "$WORK/run"
for f in curves.png lr-finder-phase1.png explanations.png; do
    cp "$WORK/run/$f" "docs/pictures/$f"
done
ls -l docs/pictures
