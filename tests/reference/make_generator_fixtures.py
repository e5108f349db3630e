#!/usr/bin/env python3
"""Golden renders and gradients of the pixel and Fourier generators (tests/fixtures/generators/).

    python tests/reference/make_generator_fixtures.py

Each case stores the parameters, a random weighting `w` of the image, the image and the
gradient of `sum(image * w)` with respect to the parameters, as PyTorch computes them:

- pixel: `F.interpolate(cells, size=(H, W), mode="nearest")` of the cells' colours
  (pixray's pixel drawer's flat cells);
- fft: pixray's fft drawer as it calls aphantasia (`fft_image(shape, sd=0.01,
  decay_power)` then `to_valid_rgb(image_f, colors)`, drawn with `contrast=0.9`): the
  scaled half spectrum through `torch.fft.irfftn(norm="ortho")`, normalised to the
  contrast by its std, mixed by Lucid's colour matrix, and a sigmoid. The functions below
  are that code with the `.cuda()` calls left out.

Sizes cover square and oblong canvases, an odd width and height, and a non-integer cell
scale. Needs torch, numpy and safetensors (see requirements.txt).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

OUT = Path(__file__).resolve().parents[1] / "fixtures" / "generators"


# --- aphantasia/image.py (as pixray's FftDrawer uses it), without the device moves ---
def rfft2d_freqs(h, w):
    fy = np.fft.fftfreq(h)[:, None]
    w2 = (w + 1) // 2 if w % 2 == 1 else w // 2 + 1
    fx = np.fft.fftfreq(w)[:w2]
    return np.sqrt(fx * fx + fy * fy)


def fft_image_inner(params, h, w, decay_power):
    freqs = rfft2d_freqs(h, w)
    scale = 1.0 / np.maximum(freqs, 4.0 / max(h, w)) ** decay_power
    scale *= np.sqrt(h * w)
    scale = torch.tensor(scale).float()[None, None, ..., None]

    def inner(contrast=1.0):
        scaled = torch.view_as_complex((scale * params).contiguous())
        image = torch.fft.irfftn(scaled, s=(h, w), norm="ortho")
        return image * contrast / image.std()

    return inner


def to_valid_rgb(image_f, colors=1.0):
    color_correlation_svd_sqrt = np.asarray(
        [[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]]
    ).astype("float32")
    color_correlation_svd_sqrt /= np.asarray([colors, 1.0, 1.0])
    max_norm_svd_sqrt = np.max(np.linalg.norm(color_correlation_svd_sqrt, axis=0))
    color_correlation_normalized = color_correlation_svd_sqrt / max_norm_svd_sqrt
    colcorr_t = torch.tensor(color_correlation_normalized.T)

    def inner(*args, **kwargs):
        image = image_f(*args, **kwargs)
        t = image.permute(0, 2, 3, 1)
        t = torch.matmul(t, colcorr_t)
        return torch.sigmoid(t.permute(0, 3, 1, 2))

    return inner


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(0)
    tensors: dict[str, torch.Tensor] = {}
    cases = []

    for name, (w, h, cx, cy) in {
        "pixel_square": (32, 32, 8, 8),
        "pixel_odd": (23, 17, 5, 4),
        "pixel_wide": (48, 24, 10, 7),
    }.items():
        cells = torch.rand(1, 3, cy, cx, generator=gen).requires_grad_(True)
        weight = torch.randn(1, 3, h, w, generator=gen)
        image = F.interpolate(cells, size=(h, w), mode="nearest")
        (image * weight).sum().backward()
        tensors |= {f"{name}.params": cells.detach(), f"{name}.weight": weight,
                    f"{name}.image": image.detach(), f"{name}.grad": cells.grad}
        cases.append({"name": name, "generator": "pixel", "width": w, "height": h, "cells_x": cx, "cells_y": cy})

    for name, (w, h, decay, colors, sd) in {
        "fft_square": (16, 16, 1.5, 1.5, 0.01),
        "fft_oblong": (20, 12, 1.0, 2.0, 0.01),
        "fft_odd": (15, 9, 1.5, 1.5, 1.0),
    }.items():
        params = (torch.randn(1, 3, h, w // 2 + 1, 2, generator=gen) * sd).requires_grad_(True)
        weight = torch.randn(1, 3, h, w, generator=gen)
        image = to_valid_rgb(fft_image_inner(params, h, w, decay), colors=colors)(contrast=0.9)
        (image * weight).sum().backward()
        tensors |= {f"{name}.params": params.detach(), f"{name}.weight": weight,
                    f"{name}.image": image.detach(), f"{name}.grad": params.grad}
        cases.append({"name": name, "generator": "fft", "width": w, "height": h, "decay": decay,
                      "colors": colors, "contrast": 0.9})

    save_file({k: v.contiguous() for k, v in tensors.items()}, str(OUT / "expected.safetensors"))
    (OUT / "cases.json").write_text(json.dumps({"torch": torch.__version__, "cases": cases}, indent=1) + "\n")
    print(f"wrote {len(cases)} cases to {OUT}")


if __name__ == "__main__":
    main()
