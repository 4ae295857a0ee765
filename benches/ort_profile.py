"""onnxruntime's time per node shape, to set beside `layer_profile.py`'s table of ours.

Runs an ONNX model in onnxruntime with its profiler on (`SessionOptions.enable_profiling`), on
random input, sums the nodes' kernel times per operator and shapes in each run, and prints per
operator and shapes the lower median over the runs after the first (a warm-up), as
`layer_profile.py` does for ours. Run it with the Python that has onnxruntime (the peers'
environment, `/opt/peers/venv-torch/bin/python` after `../shared/peers/setup.sh`):

    python benches/ort_profile.py MODEL.onnx [--batch 1] [--threads 2] [--size 224] [--runs 13]

MODEL.onnx takes NCHW float images: `benches/interleaved.sh` leaves one per size in
`$CARGO_TARGET_DIR/interleaved/resnet50-SIZE.onnx`, or make one with
`python benches/export_peer_onnx.py MODEL.onnx --size 224` (a dynamic batch). An export of your
own must have a dynamic batch or exactly `--batch`, and its side must be `--size`. Rows are
ordered by time, slowest first.

Shapes are onnxruntime's, NCHW (`[8, 256, 14, 14]` with weight `[1024, 256, 1, 1]` is our
`1x1/1 8x14x14x256 -> 1024`). With `--threads 2` the two threads split each node, so a row is the
wall time of that node; ours with shares of a batch on two threads gives one table per thread,
each with half the images. The profiler adds to each node: on a Zen 5, one photo's nodes summed
to 24.4 ms against about 21 unprofiled.
"""

import argparse
import collections
import json
import os
import signal
import statistics
import tempfile

import numpy as np
import onnxruntime as ort


def main():
    # Quiet under `| head`: stop at a closed pipe, as a shell tool does.
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="an ONNX model of NCHW float images")
    ap.add_argument("--batch", type=int, default=1, help="images per run (default 1)")
    ap.add_argument("--threads", type=int, default=2, help="intra-op threads (default 2)")
    ap.add_argument("--size", type=int, default=224, help="image side (default 224)")
    ap.add_argument("--runs", type=int, default=13,
                    help="runs, the first a warm-up left out (default 13)")
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
        fixes = []
        if len(fixed) == 4 and isinstance(fixed[0], int) and fixed[0] != a.batch:
            fixes.append(f"--batch {fixed[0]} (or an export with a dynamic batch, as "
                         "benches/export_peer_onnx.py makes)")
        if len(fixed) == 4 and isinstance(fixed[2], int) and fixed[2] != a.size:
            fixes.append(f"--size {fixed[2]} (or an export at side {a.size})")
        raise SystemExit(
            f"{a.model}: its input {name!r} is {fixed}, but --batch {a.batch} --size {a.size} "
            f"asks for {wanted}: pass {' and '.join(fixes) or 'NCHW images of 3 channels'}"
        )
    x = np.random.default_rng(0).random((a.batch, 3, a.size, a.size), dtype=np.float32)
    for _ in range(a.runs):
        session.run(None, {name: x})
    with open(session.end_profiling()) as f:
        events = json.load(f)

    # Each node's time in each run (the run whose span holds it), the first run left out as the
    # warm-up; then per node shape the lower median over the runs, as layer_profile.py does.
    spans = sorted((e["ts"], e["ts"] + e["dur"]) for e in events
                   if e.get("cat") == "Session" and e["name"] == "model_run")[1:]
    per_run = [collections.defaultdict(lambda: [0, 0.0]) for _ in spans]
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            run = next((i for i, (t0, t1) in enumerate(spans) if t0 <= e["ts"] <= t1), None)
            if run is None:
                continue
            args = e["args"]
            shapes = [list(s.values())[0] for s in args.get("input_type_shape", [])][:2]
            key = (args.get("op_name"), " ".join(str(s).replace(" ", "") for s in shapes))
            per_run[run][key][0] += 1
            per_run[run][key][1] += e["dur"]
    if not per_run:
        raise SystemExit("fewer than 2 runs: pass --runs 2 or more (the first is a warm-up)")
    keys = {key for run in per_run for key in run}
    nodes = {key: (statistics.median_low(run[key][0] for run in per_run),
                   statistics.median_low(run[key][1] for run in per_run)) for key in keys}
    print(f"onnxruntime {ort.__version__}, {a.threads} threads, batch {a.batch}, "
          f"{len(per_run)} runs counted (a warm-up left out); lower medians, slowest first")
    print(f"{'ms':>8} {'calls':>5}  operator, input and weight shapes")
    for (op, shapes), (calls, us) in sorted(nodes.items(), key=lambda kv: -kv[1][1]):
        print(f"{us / 1e3:8.2f} {calls:5}  {op} {shapes}")
    total = sum(us for _, us in nodes.values())
    runs_total = statistics.median_low(sum(us for _, us in run.values()) for run in per_run)
    print(f"{total / 1e3:8.2f}        all nodes (the rows summed)")
    print(f"{runs_total / 1e3:8.2f}        all nodes (the median run)")


if __name__ == "__main__":
    main()
