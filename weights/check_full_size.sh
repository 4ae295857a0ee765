#!/usr/bin/env bash
# The full-size parity check: real exports of full-size ResNet50s (width 64, 1000 classes,
# 224x224) with seeded random weights in every supported style, imported by resnet-transfer and
# compared with onnxruntime; then each import exported again by resnet-transfer (BatchNorm folded
# and kept) and that file run in onnxruntime against the original. torch-dynamo is
# torch.onnx.export with its default arguments (the dynamo exporter, weights in
# torch-dynamo.onnx.data beside the graph). About 1.5 GB of files in $OUT (default
# /tmp/resnet-full).
#
#   bash weights/check_full_size.sh [OUT]
#
# Needs the two Python environments of ../shared/peers/setup.sh (torch and tensorflow), or set
# TORCH_PY and TF_PY to pythons that have torch+torchvision+onnxscript+onnx+onnxruntime and
# tensorflow+keras+tf2onnx+onnxruntime.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-/tmp/resnet-full}"
TORCH_PY="${TORCH_PY:-/opt/peers/venv-torch/bin/python}"
TF_PY="${TF_PY:-/opt/peers/venv-tf/bin/python}"
mkdir -p "$OUT"
"$TORCH_PY" tests/fixtures/make_onnx.py "$OUT" --full --styles torch-folded torch-bn torch-dynamo zoo-v1
TF_CPP_MIN_LOG_LEVEL=3 "$TF_PY" tests/fixtures/make_onnx.py "$OUT" --full --keras-applications --styles keras
cargo build --release --example import_onnx --example export_onnx
TARGET="${CARGO_TARGET_DIR:-target}"
for style in torch-folded torch-bn torch-dynamo zoo-v1 keras; do
  echo "== $style"
  "$TARGET/release/examples/import_onnx" --onnx "$OUT/$style.onnx" --check "$OUT/$style.json" --out "$OUT/$style"
  for bn in folded kept; do
    "$TARGET/release/examples/export_onnx" --weights "$OUT/$style" --out "$OUT/$style-export-$bn.onnx" --batch-norm "$bn"
    "$TORCH_PY" weights/compare_export.py "$OUT/$style.onnx" "$OUT/$style-export-$bn.onnx"
  done
done
