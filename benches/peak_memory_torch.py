#!/usr/bin/env python3
"""Peak resident memory of PyTorch running ResNet50 training steps (32x32, batch 32, Adam; --size
and --batch for others), for
the side-by-side table. Prints one JSON line: {"peer": "pytorch", "peak_rss_mb": ...}.

    OMP_WAIT_POLICY=PASSIVE /opt/peers/venv-torch/bin/python peak_memory_torch.py [--steps 3]
"""
import argparse
import json
import resource

import torch
import torchvision


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--size", type=int, default=32)
    a = ap.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = torchvision.models.resnet50(num_classes=10).train()
    optim = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randn(a.batch, 3, a.size, a.size)
    y = torch.arange(a.batch) % 10
    loss_fn = torch.nn.CrossEntropyLoss()
    for _ in range(a.steps):
        optim.zero_grad()
        loss_fn(model(x), y).backward()
        optim.step()
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"peer": "pytorch", "torch": torch.__version__, "steps": a.steps,
                      "peak_rss_mb": round(peak_kb / 1024, 1)}))


if __name__ == "__main__":
    main()
