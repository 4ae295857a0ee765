#!/usr/bin/env bash
# Draws README's pictures of steering a fine-tune (docs/pictures/*.png) from a real run: a
# generated photo folder in which each class is marked by a patch of its own colour at a random
# place, beside a decoy patch of a colour no class uses, on a noisy background; torchvision's
# ResNet18 as torchvision initializes it (seeded; no download) stands in for ImageNet weights. The run sweeps phase 1's rate, releases the backbone gradually with per-stage
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
[ -f "$WORK/resnet18.onnx" ] || "$PY" - "$WORK/resnet18.onnx" <<'PYEOF'
import sys
import torch, torchvision
torch.manual_seed(0)
model = torchvision.models.resnet18(weights=None).eval()
torch.onnx.export(model, torch.zeros(1, 3, 128, 128), sys.argv[1], dynamo=False,
                  input_names=["input"], output_names=["logits"],
                  dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
PYEOF
cargo build --features wgpu --example fine_tune
rm -rf "$WORK/run"
"$TARGET/debug/examples/fine_tune" --images "$WORK/photos" --weights "$WORK/resnet18.onnx" \
    --input-size 128 --batch-size 16 --phase1-epochs 4 --phase2-epochs 6 --find-lr 1 \
    --phase2-lr 1e-3 --unfreeze gradual --unfreeze-every 2 \
    --stage-lr-decay 0.5 --offline --quiet --out "$WORK/run"
for f in curves.png lr-finder-phase1.png; do
    cp "$WORK/run/$f" "docs/pictures/$f"
done
# explanations.png is a megabyte of photos: a JPEG of it for README.
"$PY" -c 'import sys; from PIL import Image; Image.open(sys.argv[1]).convert("RGB").save(sys.argv[2], quality=80)' \
    "$WORK/run/explanations.png" docs/pictures/explanations.jpg
ls -l docs/pictures
