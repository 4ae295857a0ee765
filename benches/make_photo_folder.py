#!/usr/bin/env python3
"""A photo folder for measuring how fine_tune scales: COUNT JPEGs of 640x480 (a phone's
smallest), in CLASSES class folders, each a smooth random scene with noise so that it compresses
as photos do (about 40-60 KB), written with Pillow at quality 90. Seeded: the same folder each
time.

    python3 benches/make_photo_folder.py OUT COUNT [--classes 10] [--seed 0]
"""
import argparse
import os

import numpy as np
from PIL import Image


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("count", type=int)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    ys, xs = np.mgrid[0:480, 0:640].astype(np.float32)
    for k in range(args.classes):
        os.makedirs(os.path.join(args.out, f"class{k:02d}"), exist_ok=True)
    for i in range(args.count):
        k = i % args.classes
        # A colour gradient whose direction and hues depend on the class, plus noise.
        angle = 2 * np.pi * (k + rng.random() * 0.5) / args.classes
        t = (np.cos(angle) * xs + np.sin(angle) * ys) / 800.0
        base = rng.random(3) * 120 + 60
        tint = np.array([np.cos(angle), np.sin(angle), np.cos(2 * angle)]) * 60
        img = base + t[..., None] * tint + rng.normal(0, 6, (480, 640, 3))
        img = np.clip(img, 0, 255).astype(np.uint8)
        path = os.path.join(args.out, f"class{k:02d}", f"{i:06d}.jpg")
        Image.fromarray(img).save(path, quality=90)


if __name__ == "__main__":
    main()
