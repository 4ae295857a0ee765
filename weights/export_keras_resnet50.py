#!/usr/bin/env python3
"""Exports Keras's ImageNet ResNet50 (keras.applications) to ONNX for resnet-transfer.

    pip install tensorflow keras tf2onnx onnx
    python export_keras_resnet50.py [OUT]              # default: keras-resnet50.onnx

Downloads the "imagenet" weights from Keras's storage (needs internet), then converts with
tf2onnx: NHWC input behind a Transpose, BatchNorm as Mul/Add, conv biases, softmax top.
Preprocessing: caffe (Keras preprocess_input: RGB to BGR, minus the ImageNet mean). Put the file
in ~/.cache/resnet-transfer/weights/ (or pass it with --weights).
"""
import sys

import keras
import tensorflow as tf
import tf2onnx

out = sys.argv[1] if len(sys.argv) > 1 else "keras-resnet50.onnx"
model = keras.applications.ResNet50(weights="imagenet")
spec = (tf.TensorSpec((None, 224, 224, 3), tf.float32, name="input"),)
tf2onnx.convert.from_keras(model, input_signature=spec, opset=13, output_path=out)
print(f"wrote {out}")
