"""One case of one peer at any input size and batch, for benches/interleaved.sh: the peers' own
scripts in ../shared/peers/ measure 32x32 batch 32 only (and are read-only here), so this one
builds the same models the same way (seeded, 10-class head with Dropout 0.5, Adam, 2 threads)
with the size and batch as arguments. Prints one JSON line with images per second.

  python peer_case.py --peer torch|keras|ort --case infer|train|head --size 224 --batch 8
  python peer_case.py --peer ort --case infer --onnx FILE --size 224 --batch 8

Cases: infer (inference), train (full step: forward, cross-entropy, backward, Adam 1e-5),
head (backbone frozen with BatchNorm in inference mode, only the head learns, Adam 1e-3).
Run PyTorch with OMP_WAIT_POLICY=PASSIVE and Keras with TF_ENABLE_ONEDNN_OPTS=1 (their best
configurations here, see ../shared/peers/README.md).
"""
import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.environ.get("PEERS", os.path.join(HERE, "..", "..", "shared", "peers")))
from common import (caffe_preprocess, emit, loadavg, seeded_images, seeded_labels,  # noqa: E402
                    summarize, time_iters, torch_preprocess)


def torch_case(a):
    import torch
    import torch.nn as nn
    import torchvision

    torch.set_num_threads(a.threads)
    torch.set_num_interop_threads(1)
    torch.manual_seed(0)
    m = torchvision.models.resnet50(weights=None)
    m.fc = nn.Sequential(nn.Dropout(0.5), nn.Linear(2048, 10))
    x = torch.from_numpy(torch_preprocess(seeded_images(a.batch, a.size)))
    y = torch.from_numpy(seeded_labels(a.batch))
    loss_fn = nn.CrossEntropyLoss()
    if a.case == "infer":
        m.eval()
        with torch.inference_mode():
            return time_iters(lambda: m(x), a.warmup, a.iters), torch.__version__
    if a.case == "head":
        for name, p in m.named_parameters():
            p.requires_grad = name.startswith("fc.")
        m.eval()
        m.fc.train()
        opt = torch.optim.Adam(m.fc.parameters(), lr=1e-3)
    else:
        m.train()
        opt = torch.optim.Adam(m.parameters(), lr=1e-5)

    def step():
        opt.zero_grad(set_to_none=True)
        loss_fn(m(x), y).backward()
        opt.step()
    return time_iters(step, a.warmup, a.iters), torch.__version__


def keras_case(a):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    import keras

    tf.config.threading.set_intra_op_parallelism_threads(a.threads)
    tf.config.threading.set_inter_op_parallelism_threads(a.threads)
    keras.utils.set_random_seed(0)
    base = keras.applications.ResNet50(weights=None, include_top=False,
                                       input_shape=(a.size, a.size, 3), pooling="avg")
    out = keras.layers.Dense(10)(keras.layers.Dropout(0.5)(base.output))
    model = keras.Model(base.input, out)
    x = tf.constant(caffe_preprocess(seeded_images(a.batch, a.size)))
    y = tf.constant(seeded_labels(a.batch))
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    if a.case == "head":
        base.trainable = False
    rate = 1e-3 if a.case == "head" else 1e-5
    model.compile(optimizer=keras.optimizers.Adam(rate), loss=loss)
    if a.case == "infer":
        return time_iters(lambda: model.predict_on_batch(x), a.warmup, a.iters), keras.__version__
    return time_iters(lambda: model.train_on_batch(x, y), a.warmup, a.iters), keras.__version__


def ort_case(a):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = a.threads
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(a.onnx, opts, providers=["CPUExecutionProvider"])
    x = torch_preprocess(seeded_images(a.batch, a.size))
    name = session.get_inputs()[0].name
    return time_iters(lambda: session.run(None, {name: x}), a.warmup, a.iters), ort.__version__


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--peer", choices=["torch", "keras", "ort"], required=True)
    ap.add_argument("--case", choices=["infer", "train", "head"], required=True)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--onnx", help="the ResNet50 ONNX file onnxruntime runs")
    a = ap.parse_args()
    start = loadavg()
    times, version = {"torch": torch_case, "keras": keras_case, "ort": ort_case}[a.peer](a)
    emit({"peer": a.peer, "version": version, "case": a.case, "size": a.size, "batch": a.batch,
          "threads": a.threads, "loadavg_start": start, **summarize(times, a.batch)})


if __name__ == "__main__":
    main()
