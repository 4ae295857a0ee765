#!/usr/bin/env python3
"""Where a folded forward's time goes, layer shape by layer shape.

Reads the lines that RESNET_TRANSFER_TRACE_LAYERS=1 makes the folded inference path print to
stderr (one per convolution call) and prints, per convolution shape, its calls per forward, its
method, its median milliseconds per forward, and its rate in multiply-adds of the direct
convolution per second (so that Winograd's saving shows as a rate above the core's peak):

    RESNET_TRANSFER_TRACE_LAYERS=1 RAYON_NUM_THREADS=1 \\
        cargo run --release --example profile_step -- --infer --fused --batch 1 --size 224 \\
        --steps 10 2>&1 >/dev/null | python3 benches/layer_profile.py

The warm-up forward is counted like the others; medians keep it out of the figures.
"""

import re
import statistics
import sys
from collections import defaultdict

LINE = re.compile(
    r"resnet_transfer layer: conv (\d+)x(\d+)/(\d+) (\d+)x(\d+)x(\d+)x(\d+) -> "
    r"(\d+)x(\d+)x(\d+) (.+?) ([0-9.]+) ms$"
)


def main() -> int:
    calls = []
    for line in sys.stdin:
        match = LINE.search(line.strip())
        if match:
            calls.append(match.groups())
    if not calls:
        print("no trace lines: was RESNET_TRANSFER_TRACE_LAYERS=1 set, and stderr piped?")
        return 1
    # A forward starts wherever the first call's shape comes again (the stem).
    first = calls[0][:10]
    forwards = []
    for call in calls:
        if call[:10] == first:
            forwards.append([])
        forwards[-1].append(call)
    per_shape = defaultdict(list)
    order = []
    for forward in forwards:
        totals = defaultdict(float)
        counts = defaultdict(int)
        for call in forward:
            key = call[:11]
            totals[key] += float(call[11])
            counts[key] += 1
            if key not in order:
                order.append(key)
        for key in totals:
            per_shape[key].append((totals[key], counts[key]))
    print(f"{len(forwards)} forwards")
    print(f"{'convolution':44} {'calls':>5} {'method':28} {'ms':>7} {'GMAC/s':>7}")
    total = 0.0
    for key in order:
        kh, kw, stride, n, h, w, c, ho, wo, c_out, method = key
        ms = statistics.median(t for t, _ in per_shape[key])
        count = per_shape[key][0][1]
        total += ms
        macs = int(n) * int(ho) * int(wo) * int(c) * int(kh) * int(kw) * int(c_out) * count
        shape = f"{kh}x{kw}/{stride} {n}x{h}x{w}x{c} -> {c_out}"
        print(f"{shape:44} {count:5} {method:28} {ms:7.2f} {macs / ms / 1e6:7.1f}")
    print(f"{'all convolutions':44} {'':5} {'':28} {total:7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
