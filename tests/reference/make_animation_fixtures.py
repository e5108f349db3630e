#!/usr/bin/env python3
"""Golden fixtures for clipcanvas's animation (tests/fixtures/animation/).

    python tests/reference/make_animation_fixtures.py

Writes warp.safetensors / warp.json and color.safetensors:

- The warp: Deforum's 2D motion matrix (cv2.getRotationMatrix2D about the image's
  true centre, times the translation), resampled bicubically (a = -0.75) with each tap
  placed by the border rule. The exact reference is PyTorch's grid_sample (bicubic,
  float64, align_corners=True) on the image padded by its own size with np.pad's
  "edge" (replicate) or "wrap" mode, so every tap lands where the border rule puts it.
  OpenCV's warpAffine (INTER_CUBIC, BORDER_REPLICATE / BORDER_WRAP) is stored too: it
  places sample points on a 1/32-pixel grid, so it agrees only to a tolerance.
- Colour: scikit-image's rgb2lab / lab2rgb on fixed pixels, and the colour-coherence
  transfer (each LAB channel's mean and standard deviation moved to a target's).

Needs torch, numpy, opencv-python-headless and scikit-image (see requirements.txt).
Also prints the blur figure docs/animation.md quotes: how far a 60-frame zoom,
resampled at each frame with OpenCV's bilinear or bicubic kernel, ends from the same
zoom done in one warp.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from skimage import color

OUT = Path(__file__).resolve().parents[1] / "fixtures" / "animation"

CASES = [
    # zoom, angle (degrees), translation x, translation y, border
    (1.04, 0.0, 0.0, 0.0, "replicate"),
    (0.9, 0.0, 0.0, 0.0, "replicate"),
    (0.85, 0.0, 0.0, 0.0, "wrap"),
    (1.0, 7.5, 0.0, 0.0, "replicate"),
    (1.0, -30.0, 0.0, 0.0, "wrap"),
    (1.0, 0.0, 3.25, -1.5, "wrap"),
    (1.0, 0.0, -2.7, 4.1, "replicate"),
    (1.12, 15.0, 2.5, -3.0, "replicate"),
    (0.95, -8.0, -4.0, 1.75, "wrap"),
]


def matrix(zoom: float, angle: float, tx: float, ty: float, w: int, h: int) -> np.ndarray:
    centre = ((w - 1) / 2.0, (h - 1) / 2.0)
    rot = np.vstack([cv2.getRotationMatrix2D(centre, angle, zoom), [0.0, 0.0, 1.0]])
    trans = np.array([[1.0, 0.0, tx], [0.0, 1.0, ty], [0.0, 0.0, 1.0]])
    return (rot @ trans)[:2]


def torch_warp(img: np.ndarray, m: np.ndarray, border: str) -> np.ndarray:
    """img: [3, H, W] float; m: forward 2x3. Bicubic, taps placed by the border rule."""
    _, h, w = img.shape
    pad = max(w, h)
    mode = "edge" if border == "replicate" else "wrap"
    padded = np.pad(img.astype(np.float64), ((0, 0), (pad, pad), (pad, pad)), mode=mode)
    inv = cv2.invertAffineTransform(m)
    ys, xs = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij")
    sx = inv[0, 0] * xs + inv[0, 1] * ys + inv[0, 2] + pad
    sy = inv[1, 0] * xs + inv[1, 1] * ys + inv[1, 2] + pad
    hp, wp = padded.shape[1:]
    assert sx.min() >= 2 and sx.max() <= wp - 3 and sy.min() >= 2 and sy.max() <= hp - 3, "pad more"
    grid = np.stack([2 * sx / (wp - 1) - 1, 2 * sy / (hp - 1) - 1], axis=-1)[None]
    out = F.grid_sample(
        torch.from_numpy(padded)[None],
        torch.from_numpy(grid),
        mode="bicubic",
        padding_mode="border",
        align_corners=True,
    )
    return out[0].numpy().astype(np.float32)


def cv_warp(img: np.ndarray, m: np.ndarray, border: str, flags: int = cv2.INTER_CUBIC) -> np.ndarray:
    _, h, w = img.shape
    mode = cv2.BORDER_REPLICATE if border == "replicate" else cv2.BORDER_WRAP
    out = cv2.warpAffine(np.ascontiguousarray(img.transpose(1, 2, 0)), m, (w, h), flags=flags, borderMode=mode)
    return out.transpose(2, 0, 1).astype(np.float32)


def test_image(w: int = 48, h: int = 40) -> np.ndarray:
    rng = np.random.RandomState(0)
    ys, xs = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    smooth = np.stack([xs / (w - 1), ys / (h - 1), 0.5 + 0.5 * np.sin(xs / 4.0) * np.cos(ys / 5.0)])
    sharp = ((xs // 6 + ys // 6) % 2).astype(np.float64)[None].repeat(3, 0)
    noise = rng.rand(3, h, w)
    return (0.5 * smooth + 0.3 * sharp + 0.2 * noise).astype(np.float32)


def warp_fixtures() -> None:
    img = test_image()
    _, h, w = img.shape
    tensors = {"image": torch.from_numpy(img)}
    cases = []
    worst = 0.0
    for k, (zoom, angle, tx, ty, border) in enumerate(CASES):
        m = matrix(zoom, angle, tx, ty, w, h)
        ref = torch_warp(img, m, border)
        cv = cv_warp(img, m, border)
        tensors[f"torch_{k}"] = torch.from_numpy(ref)
        tensors[f"opencv_{k}"] = torch.from_numpy(cv)
        diff = float(np.abs(ref - cv).max())
        worst = max(worst, diff)
        cases.append(
            {"zoom": zoom, "angle": angle, "translation_x": tx, "translation_y": ty, "border": border,
             "matrix": m.flatten().tolist(), "opencv_max_abs_diff": diff}
        )
    OUT.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, OUT / "warp.safetensors")
    (OUT / "warp.json").write_text(json.dumps({"cases": cases}, indent=1) + "\n")
    print(f"warp: {len(CASES)} cases, OpenCV vs exact max |diff| {worst:.5f}")


def color_fixtures() -> None:
    rng = np.random.RandomState(1)
    rgb = rng.rand(64, 3)
    rgb[:4] = [[0, 0, 0], [1, 1, 1], [1, 0, 0], [0.02, 0.03, 0.01]]
    lab = color.rgb2lab(rgb[None])[0]
    lab_in = np.stack([rng.uniform(0, 100, 64), rng.uniform(-90, 90, 64), rng.uniform(-90, 90, 64)], axis=1)
    rgb_out = color.lab2rgb(lab_in[None])[0]
    # Colour coherence: an image [3, 8, 6] moved to a target's LAB statistics.
    img = rng.rand(8, 6, 3)
    target = rng.rand(5, 7, 3) * np.array([0.6, 0.4, 0.3]) + np.array([0.3, 0.2, 0.1])
    lab_img = color.rgb2lab(img)
    lab_t = color.rgb2lab(target).reshape(-1, 3)
    mean_i, std_i = lab_img.reshape(-1, 3).mean(0), lab_img.reshape(-1, 3).std(0)
    mean_t, std_t = lab_t.mean(0), lab_t.std(0)
    matched = color.lab2rgb((lab_img - mean_i) / std_i * std_t + mean_t)
    f32 = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))  # noqa: E731
    f64 = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float64))  # noqa: E731
    save_file(
        {
            "rgb": f64(rgb), "lab": f64(lab), "lab_in": f64(lab_in), "rgb_out": f64(rgb_out),
            "image": f32(img.transpose(2, 0, 1)), "target": f32(target.transpose(2, 0, 1)),
            "matched": f32(matched.transpose(2, 0, 1)),
        },
        OUT / "color.safetensors",
    )
    print("color: rgb2lab, lab2rgb, coherence")


def blur_figure(frames: int = 60, zoom: float = 1.02) -> None:
    """How far a long zoom, resampled at every frame, drifts from the same zoom done in
    one warp: bilinear (Deforum's) against bicubic (clipcanvas's), on a random 64x64
    block pattern shown at 256x256. Mean absolute difference in [0, 1] units."""
    rng = np.random.RandomState(2)
    card = (rng.rand(64, 64, 3) > 0.5).astype(np.float32)
    img = cv2.resize(card, (256, 256), interpolation=cv2.INTER_NEAREST).transpose(2, 0, 1)
    m = matrix(zoom, 0.0, 0.0, 0.0, 256, 256)
    once = np.clip(cv_warp(img, matrix(zoom**frames, 0.0, 0.0, 0.0, 256, 256), "replicate"), 0, 1)
    for name, flag in [("bilinear", cv2.INTER_LINEAR), ("bicubic", cv2.INTER_CUBIC)]:
        cur = img
        for _ in range(frames):
            cur = np.clip(cv_warp(cur, m, "replicate", flag), 0, 1)
        err = float(np.abs(cur - once).mean())
        print(f"blur: {frames} frames of zoom {zoom}, {name}: mean |difference| from one warp {err:.3f}")


if __name__ == "__main__":
    torch.set_num_threads(1)
    warp_fixtures()
    color_fixtures()
    blur_figure()
