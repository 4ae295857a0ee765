#!/usr/bin/env python3
"""Exports torchvision's ImageNet ResNet50 to ONNX for resnet-transfer.

    pip install torch torchvision onnx
    python export_torchvision_resnet50.py [OUT]        # default: torchvision-resnet50.onnx

Downloads the IMAGENET1K_V2 weights from PyTorch's hub (needs internet), then exports in eval
mode with the legacy exporter, which folds BatchNorm into the convolutions; resnet-transfer turns
the folded biases back into trainable BatchNorm shifts. Preprocessing: torch (/255, ImageNet
mean and std). Put the file in ~/.cache/resnet-transfer/weights/ (or pass it with --weights).
"""
import sys

import torch
import torchvision

out = sys.argv[1] if len(sys.argv) > 1 else "torchvision-resnet50.onnx"
model = torchvision.models.resnet50(weights=torchvision.models.ResNet50_Weights.IMAGENET1K_V2).eval()
x = torch.zeros(1, 3, 224, 224)
torch.onnx.export(model, x, out, dynamo=False, opset_version=17, do_constant_folding=True,
                  input_names=["input"], output_names=["logits"],
                  dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
print(f"wrote {out}")
