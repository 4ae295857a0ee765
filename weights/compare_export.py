"""Compares a resnet-transfer ONNX export with the file it was imported from, both in onnxruntime.

usage: python weights/compare_export.py ORIGINAL.onnx EXPORT.onnx [SIZE]

Runs both on the same images (tests/fixtures/make_onnx.py's input formula, NCHW; transposed for
an NHWC original; the original's softmax top left out) and prints the worst logit difference
relative to the largest logit. Used by weights/check_full_size.sh at full size.
"""
import os
import sys

import numpy as np
import onnxruntime as ort

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures"))
from make_onnx import input_value, run_ort  # noqa: E402

original, export = sys.argv[1], sys.argv[2]
size = int(sys.argv[3]) if len(sys.argv) > 3 else 224
x = input_value([2, 3, size, size])
nhwc = ort.InferenceSession(original).get_inputs()[0].shape[-1] == 3
theirs = run_ort(original, x.transpose(0, 2, 3, 1).copy() if nhwc else x, drop_softmax=True)
ours = run_ort(export, x)
worst = np.abs(ours - theirs).max()
scale = np.abs(theirs).max()
print(f"{os.path.basename(export)}: onnxruntime on the export against the original: "
      f"worst {worst:.3e} = {worst / scale:.3e} of the largest logit {scale:.4g}")
