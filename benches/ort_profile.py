"""onnxruntime's time per node shape, to set beside `layer_profile.py`'s table of ours.

Runs an ONNX model in onnxruntime with its profiler on (`SessionOptions.enable_profiling`), on
random input, and sums the nodes' kernel times per operator and shapes, per run:

    python benches/ort_profile.py MODEL.onnx [--batch 1] [--threads 2] [--size 224] [--runs 13]

MODEL.onnx takes NCHW float images: `benches/interleaved.sh` leaves one per size in
`$CARGO_TARGET_DIR/interleaved/resnet50-SIZE.onnx`, or make one with
`python benches/export_peer_onnx.py MODEL.onnx --size 224` (a dynamic batch). An export of your
own must have a dynamic batch or exactly `--batch`, and its side must be `--size`. Rows are
ordered by time, slowest first.

Shapes are onnxruntime's, NCHW (`[8, 256, 14, 14]` with weight `[1024, 256, 1, 1]` is our
`1x1/1 8x14x14x256 -> 1024`). With `--threads 2` the two threads split each node, so a row is the
wall time of that node; ours with shares of a batch on two threads gives one table per thread,
each with half the images. The profiler adds a little to each node.
"""

import argparse
import collections
import json
import os
import signal
import tempfile

import numpy as np
import onnxruntime as ort


def main():
    # Quiet under `| head`: stop at a closed pipe, as a shell tool does.
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--runs", type=int, default=13)
    a = ap.parse_args()

    options = ort.SessionOptions()
    options.intra_op_num_threads = a.threads
    options.inter_op_num_threads = 1
    options.enable_profiling = True
    options.profile_file_prefix = os.path.join(tempfile.mkdtemp(), "ort")
    session = ort.InferenceSession(a.model, options, providers=["CPUExecutionProvider"])
    model_input = session.get_inputs()[0]
    name = model_input.name
    wanted = [a.batch, 3, a.size, a.size]
    fixed = model_input.shape
    # A fixed dimension (an int) that differs from what is asked for: say so, not a traceback.
    if len(fixed) != 4 or any(isinstance(d, int) and d != w for d, w in zip(fixed, wanted)):
        raise SystemExit(
            f"{a.model}: its input {name!r} is {fixed}, but --batch {a.batch} --size {a.size} "
            f"asks for {wanted}: pass the model's own batch and side, or export it with a "
            "dynamic batch (benches/export_peer_onnx.py does)"
        )
    x = np.random.default_rng(0).random((a.batch, 3, a.size, a.size), dtype=np.float32)
    for _ in range(a.runs):
        session.run(None, {name: x})
    with open(session.end_profiling()) as f:
        events = json.load(f)

    runs = sum(1 for e in events if e.get("cat") == "Session" and e["name"] == "model_run")
    nodes = collections.defaultdict(lambda: [0, 0.0])
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            args = e["args"]
            shapes = [list(s.values())[0] for s in args.get("input_type_shape", [])][:2]
            key = (args.get("op_name"), " ".join(str(s).replace(" ", "") for s in shapes))
            nodes[key][0] += 1
            nodes[key][1] += e["dur"]
    print(f"onnxruntime {ort.__version__}, {a.threads} threads, batch {a.batch}, {runs} runs")
    print(f"{'ms':>8} {'calls':>5}  operator, input and weight shapes")
    for (op, shapes), (calls, us) in sorted(nodes.items(), key=lambda kv: -kv[1][1]):
        print(f"{us / runs / 1e3:8.2f} {calls // runs:5}  {op} {shapes}")
    total = sum(us for _, us in nodes.values())
    print(f"{total / runs / 1e3:8.2f}        all nodes")


if __name__ == "__main__":
    main()
