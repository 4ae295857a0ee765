#!/usr/bin/env python3
"""Where a folded forward's time goes, layer shape by layer shape.

Reads the lines that RESNET_TRANSFER_TRACE_LAYERS=1 makes the folded inference path print to
stderr (one when a forward starts, one per convolution call) and prints, per convolution shape,
its calls per forward, its method, its median milliseconds per forward, and its rate in
multiply-adds of the direct convolution per second (so that Winograd's saving shows as a rate
above the core's peak):

    RESNET_TRANSFER_TRACE_LAYERS=1 RAYON_NUM_THREADS=1 \\
        cargo run --release --example profile_step -- --infer --fused --batch 1 --size 224 \\
        --steps 10 2>&1 >/dev/null | python3 benches/layer_profile.py

Each convolution line names the pool thread that ran it. A batch at least as large as the pool
runs one share of whole images per thread (a line's first dimension is the images that call ran,
not the batch), and the images left over run with each layer split between the threads (" split",
traced by the thread that started the layer; its rate is that of all the threads together). So
the calls are summed per thread, one table per thread; threads run side by side, so their totals
are not to be added. The first forward also makes Winograd's transformed weights (once per
model and tile size), so it is left out wherever there are two or more (profile_step runs one
before its `--steps`: `--steps 5` gives 6 forwards, 5 counted). Each row is the lower median of
that layer shape's milliseconds over the counted forwards (with an even count, the lower of the
two middle ones, so that one slow forward beside a fast one does not weigh in half: an odd
`--steps`, 3 or more, gives a true median). The rows' sum comes first; then the median forward's
own convolutions, which on a busy machine can differ from the sum, since each row's median may
come from another forward.
"""

import re
import signal
import statistics
import sys
from collections import defaultdict

CONV = re.compile(
    r"resnet_transfer layer: conv (\d+)x(\d+)/(\d+) (\d+)x(\d+)x(\d+)x(\d+) -> "
    r"(\d+)x(\d+)x(\d+) (.+?)(?: thread (\S+))? ([0-9.]+) ms$"
)
FORWARD = re.compile(r"resnet_transfer forward: ")


def read(lines):
    """The forwards, each a list of calls, split at the forward lines."""
    forwards = []
    for line in lines:
        line = line.strip()
        if FORWARD.search(line):
            forwards.append([])
            continue
        match = CONV.search(line)
        if match:
            if not forwards:
                forwards.append([])
            forwards[-1].append(match.groups())
    return [f for f in forwards if f]


def table(forwards):
    """Prints one thread's calls of each forward, per layer shape."""
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
    print(f"{'convolution':44} {'calls':>5} {'method':34} {'ms':>7} {'GMAC/s':>7}")
    total = 0.0
    for key in order:
        kh, kw, stride, n, h, w, c, ho, wo, c_out, method = key
        ms = statistics.median_low(t for t, _ in per_shape[key])
        count = statistics.median_low(k for _, k in per_shape[key])
        total += ms
        macs = int(n) * int(ho) * int(wo) * int(c) * int(kh) * int(kw) * int(c_out) * count
        shape = f"{kh}x{kw}/{stride} {n}x{h}x{w}x{c} -> {c_out}"
        rate = f"{macs / ms / 1e6:7.1f}" if ms > 0 else f"{'-':>7}"
        print(f"{shape:44} {count:5} {method:34} {ms:7.2f} {rate}")
    print(f"{'all convolutions (the rows summed)':44} {'':5} {'':34} {total:7.2f}")
    sums = [sum(float(call[12]) for call in forward) for forward in forwards]
    print(f"{'all convolutions (the median forward)':44} {'':5} {'':34} "
          f"{statistics.median_low(sums):7.2f}")


def main() -> int:
    # Quiet under `| head`: stop at a closed pipe, as a shell tool does.
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    forwards = read(sys.stdin)
    if not forwards:
        print(
            "no trace lines: was RESNET_TRANSFER_TRACE_LAYERS=1 set, stderr piped here, and the "
            "model run folded on a CPU backend (profile_step needs --infer --fused)?"
        )
        return 1
    threads = sorted(
        {call[11] or "-" for forward in forwards for call in forward},
        key=lambda t: (not t.isdigit(), int(t) if t.isdigit() else 0),
    )
    if len(forwards) >= 2:
        print(f"{len(forwards)} forwards; the first (profile_step's warm-up, which also makes "
              f"Winograd's transformed weights) left out, {len(forwards) - 1} counted")
        forwards = forwards[1:]
    else:
        print("1 forward (it also made Winograd's transformed weights: run more with --steps)")
    if len(threads) > 1:
        print(
            f"{len(threads)} threads ran shares of the batch side by side: one table per thread "
            "(RAYON_NUM_THREADS=1 gives a single one)"
        )
    for thread in threads:
        print()
        if len(threads) > 1:
            print(f"thread {thread}:")
        mine = [[c for c in forward if (c[11] or "-") == thread] for forward in forwards]
        table([calls for calls in mine if calls])
    return 0


if __name__ == "__main__":
    sys.exit(main())
