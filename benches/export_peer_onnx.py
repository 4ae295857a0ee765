#!/usr/bin/env python3
"""Exports a randomly initialised torchvision ResNet50 to ONNX with a dynamic batch, at 32x32 or
`--size`, for onnxruntime's rounds of `benches/interleaved.sh` (`peer_case.py --peer ort
--onnx FILE`) and for `benches/ort_profile.py`.

    python export_peer_onnx.py OUT.onnx [--size 32] [--classes 10]

Weights do not change the cost of inference, so a seeded random model is as good as ImageNet's.
The legacy exporter folds BatchNorm into the convolutions, as an exported inference model has it.
"""
import argparse

import torch
import torchvision


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--size", type=int, default=32)
    a = ap.parse_args()
    torch.manual_seed(0)
    model = torchvision.models.resnet50(num_classes=a.classes).eval()
    x = torch.zeros(1, 3, a.size, a.size)
    torch.onnx.export(model, x, a.out, dynamo=False, opset_version=17, do_constant_folding=True,
                      input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
