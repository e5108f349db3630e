#!/usr/bin/env python3
"""Measures region prompts in the built-in shapes world (docs/generators.md, "Region
prompts"): for each base prompt, mask, region prompt and seed, one run without the region
prompt and one with it in each cutout mode (masked, centres). It prints how much the region
prompt changed the image inside its mask against outside it (the mean absolute pixel
difference from the run without it), and how much closer to the region prompt's colour the
inside came.

    /work/venv/bin/python tests/shapes/regions.py OUT_DIR   (needs numpy and Pillow)
"""
import itertools
import os
import subprocess
import sys

import numpy as np
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.join(ROOT, "target", "release", "clipcanvas")
COLOURS = {"red": (230, 25, 25), "yellow": (240, 220, 30), "blue": (30, 60, 220), "white": (245, 245, 245)}


def masks(out):
    yy, xx = np.mgrid[0:128, 0:128]
    shapes = {"left": xx < 64, "centre": (abs(xx - 63.5) < 32) & (abs(yy - 63.5) < 32)}
    paths = {}
    for name, m in shapes.items():
        path = os.path.join(out, f"mask-{name}.png")
        Image.fromarray((m * 255).astype(np.uint8)).save(path)
        paths[name] = (path, m)
    return paths


def run(out, name, args):
    path = os.path.join(out, name + ".png")
    if not os.path.exists(path):
        subprocess.run([BIN, "generate", *args, "-o", path], check=True, capture_output=True)
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float64)


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "region-measure"
    os.makedirs(out, exist_ok=True)
    cases = [
        ("a green background", "a red background", "left"),
        ("a green background", "a yellow background", "centre"),
        ("a purple background", "a white background", "left"),
        ("a blue background", "a yellow background", "centre"),
    ]
    seeds = [1, 2]
    table = {mode: [] for mode in ("masked", "centres")}
    mask_paths = masks(out)
    for (base, region, mask), seed in itertools.product(cases, seeds):
        path, m = mask_paths[mask]
        colour = np.array(COLOURS[region.split()[1]], dtype=np.float64)
        key = f"{base}|{seed}".replace(" ", "_")
        plain = run(out, key, ["-p", base, "--seed", str(seed)])
        for mode in table:
            tag = f"{key}|{region}|{mask}|{mode}".replace(" ", "_")
            img = run(out, tag, ["-p", base, "--seed", str(seed), "--region", region, "--region-mask", path,
                                 "--region-cutouts", mode])
            diff = np.abs(img - plain).mean(axis=2)
            ratio = diff[m].mean() / max(diff[~m].mean(), 1e-9)
            dist = lambda im, sel: np.linalg.norm(im[sel] - colour, axis=1).mean()
            closer = dist(plain, m) - dist(img, m)
            table[mode].append((ratio, closer))
            print(f"{mode:8s} seed {seed} {base!r} + {region!r} in {mask}: inside/outside change {ratio:5.2f}, "
                  f"inside {closer:+6.1f} closer to {region.split()[1]}", flush=True)
    for mode, rows in table.items():
        r = np.array(rows)
        print(f"{mode}: median inside/outside change {np.median(r[:, 0]):.2f} (min {r[:, 0].min():.2f}), "
              f"inside closer to the colour by {r[:, 1].mean():+.1f} on average, in {int((r[:, 1] > 0).sum())} of "
              f"{len(r)} runs")


if __name__ == "__main__":
    main()
