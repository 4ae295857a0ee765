#!/usr/bin/env python3
"""Where a folded forward's time goes, layer shape by layer shape.

Reads the lines that RESNET_TRANSFER_TRACE_LAYERS=1 makes the folded inference path print to
stderr (one per convolution call) and prints, per convolution shape, its calls per forward, its
method, its median milliseconds per forward, and its rate in multiply-adds of the direct
convolution per second (so that Winograd's saving shows as a rate above the core's peak):

    RESNET_TRANSFER_TRACE_LAYERS=1 RAYON_NUM_THREADS=1 \\
        cargo run --release --example profile_step -- --infer --fused --batch 1 --size 224 \\
        --steps 10 2>&1 >/dev/null | python3 benches/layer_profile.py

Each line names the pool thread that ran the convolution. A batch at least as large as the pool
runs one share of whole images per thread (each line's first dimension is the share, not the
batch), and the images left over run with each layer split between the threads (" split",
traced by the thread that started the layer). So the lines are summed per thread, and each
thread gets a table of its own: its forwards, its calls per forward, its milliseconds. Threads
run side by side, so their tables' totals are not to be added. The warm-up forward is counted
like the others; medians keep it out of the figures.
"""

import re
import statistics
import sys
from collections import defaultdict

LINE = re.compile(
    r"resnet_transfer layer: conv (\d+)x(\d+)/(\d+) (\d+)x(\d+)x(\d+)x(\d+) -> "
    r"(\d+)x(\d+)x(\d+) (.+?)(?: thread (\S+))? ([0-9.]+) ms$"
)


def table(calls):
    """Prints one thread's calls, per layer shape; the forwards start at the first call's shape."""
    first = calls[0][:10]
    forwards = []
    for call in calls:
        if call[:10] == first or not forwards:
            forwards.append([])
        forwards[-1].append(call)
    per_shape = defaultdict(list)
    order = []
    for forward in forwards:
        totals = defaultdict(float)
        counts = defaultdict(int)
        for call in forward:
            key = call[:11]
            totals[key] += float(call[12])
            counts[key] += 1
            if key not in order:
                order.append(key)
        for key in totals:
            per_shape[key].append((totals[key], counts[key]))
    print(f"{len(forwards)} forwards")
    print(f"{'convolution':44} {'calls':>5} {'method':34} {'ms':>7} {'GMAC/s':>7}")
    total = 0.0
    for key in order:
        kh, kw, stride, n, h, w, c, ho, wo, c_out, method = key
        ms = statistics.median(t for t, _ in per_shape[key])
        count = statistics.median_low(k for _, k in per_shape[key])
        total += ms
        macs = int(n) * int(ho) * int(wo) * int(c) * int(kh) * int(kw) * int(c_out) * count
        shape = f"{kh}x{kw}/{stride} {n}x{h}x{w}x{c} -> {c_out}"
        rate = f"{macs / ms / 1e6:7.1f}" if ms > 0 else f"{'-':>7}"
        print(f"{shape:44} {count:5} {method:34} {ms:7.2f} {rate}")
    print(f"{'all convolutions':44} {'':5} {'':34} {total:7.2f}")


def main() -> int:
    threads = defaultdict(list)
    for line in sys.stdin:
        match = LINE.search(line.strip())
        if match:
            groups = match.groups()
            threads[groups[11] or "-"].append(groups)
    if not threads:
        print(
            "no trace lines: was RESNET_TRANSFER_TRACE_LAYERS=1 set, stderr piped here, and the "
            "model run folded on a CPU backend (profile_step needs --infer --fused)?"
        )
        return 1
    if len(threads) > 1:
        print(
            f"{len(threads)} threads ran shares of the batch side by side: one table per thread "
            "(RAYON_NUM_THREADS=1 gives a single one)\n"
        )
    for thread in sorted(threads, key=lambda t: (not t.isdigit(), int(t) if t.isdigit() else 0)):
        if len(threads) > 1:
            print(f"thread {thread}: ", end="")
        table(threads[thread])
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
