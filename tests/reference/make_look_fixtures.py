#!/usr/bin/env python3
"""Golden values and gradients of the look losses (tests/fixtures/looks/).

    python tests/reference/make_look_fixtures.py

pixray's `SaturationLoss.get_loss` (Hasler and Süsstrunk's colourfulness over every
pixel of the cutouts, at weight 1), `SymmetryLoss.get_loss` (`MSELoss(out,
flip(out, [3]))`), the same mirrored top-bottom (`flip(out, [2])`) and
`EdgeLoss.get_loss` without a mask image (orange, 10 % strips, global weight 0.05,
weight 1), `PaletteLoss.get_loss` (a four-colour palette, weight 1), written out as pixray has them, and `torch.roll` of the image by (5, 13)
(the tiler's roll), on a random image and random cutouts; with the gradients of each loss
with respect to its input. Needs torch and safetensors (see requirements.txt).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

OUT = Path(__file__).resolve().parents[1] / "fixtures" / "looks"


def saturation(cutouts: torch.Tensor) -> torch.Tensor:
    # pixray Losses/SaturationLoss.py, one group of cutouts, weight 1.
    _pixels = cutouts.permute(0, 2, 3, 1).reshape(-1, 3)
    rg = _pixels[:, 0] - _pixels[:, 1]
    yb = 0.5 * (_pixels[:, 0] + _pixels[:, 1]) - _pixels[:, 2]
    rg_std, rg_mean = torch.std_mean(rg)
    yb_std, yb_mean = torch.std_mean(yb)
    std_rggb = torch.sqrt(rg_std**2 + yb_std**2)
    mean_rggb = torch.sqrt(rg_mean**2 + yb_mean**2)
    colorfullness = std_rggb + 0.3 * mean_rggb
    return -colorfullness * 1.0 / 10.0


def symmetry(out: torch.Tensor, dim: int) -> torch.Tensor:
    # pixray Losses/SymmetryLoss.py, weight 1 (dim 3); dim 2 is the top-bottom mirror.
    return nn.MSELoss()(out, torch.flip(out, [dim]))


def map_number(n, start1, stop1, start2, stop2):
    return ((n - start1) / (stop1 - start1)) * (stop2 - start2) + start2


def edge(out: torch.Tensor, color, thickness, global_color_weight) -> torch.Tensor:
    # pixray Losses/EdgeLoss.py, no edge image or mask, edge_color_weight 1.
    zers = torch.zeros(out.size())
    zers[:, 0, :, :], zers[:, 1, :, :], zers[:, 2, :, :] = color
    cur_loss = torch.tensor(0.0)
    mseloss = nn.MSELoss()
    lmax, rmax = out.size()[2], out.size()[3]
    left = right = int(map_number(thickness, 0, 100, 0, rmax))
    upper = lower = int(map_number(thickness, 0, 100, 0, lmax))
    lloss = mseloss(out[:, :, :, :left], zers[:, :, :, :left])
    rloss = mseloss(out[:, :, :, rmax - right:], zers[:, :, :, rmax - right:])
    uloss = mseloss(out[:, :, :upper, left:rmax - right], zers[:, :, :upper, left:rmax - right])
    dloss = mseloss(out[:, :, lmax - lower:, left:rmax - right], zers[:, :, lmax - lower:, left:rmax - right])
    if left != 0:
        cur_loss += lloss
    if right != 0:
        cur_loss += rloss
    if upper != 0:
        cur_loss += uloss
    if lower != 0:
        cur_loss += dloss
    if global_color_weight:
        cur_loss += mseloss(out, zers) * global_color_weight
    return cur_loss


EDGE = {"color": [1.0, 165 / 255, 0.0], "thickness": 10.0, "global": 0.05}
PALETTE = [[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [1.0, 0.0, 0.0], [0.2, 0.6, 0.9]]


def palette(cutouts: torch.Tensor, colours) -> torch.Tensor:
    # pixray Losses/PaletteLoss.py, one group of cutouts, palette_weight 1.
    target_palette = torch.FloatTensor(colours).requires_grad_(False)
    _pixels = cutouts.permute(0, 2, 3, 1).reshape(-1, 3)
    palette_dists = torch.cdist(target_palette, _pixels, p=2)
    best_guesses = palette_dists.argmin(axis=0)
    diffs = _pixels - target_palette[best_guesses]
    palette_loss = torch.mean(torch.norm(diffs, 2, dim=1)) * cutouts.shape[0]
    return palette_loss * 1.0 / 10.0


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, 24, 40, generator=gen).requires_grad_(True)
    cutouts = torch.rand(5, 3, 16, 16, generator=gen).requires_grad_(True)
    values = {}
    tensors = {"image": image.detach().clone(), "cutouts": cutouts.detach().clone()}
    for name, fn, x in [
        ("saturation", lambda: saturation(cutouts), cutouts),
        ("symmetry", lambda: symmetry(image, 3), image),
        ("symmetry_vertical", lambda: symmetry(image, 2), image),
        ("edge", lambda: edge(image, EDGE["color"], EDGE["thickness"], EDGE["global"]), image),
        ("palette", lambda: palette(cutouts, PALETTE), cutouts),
    ]:
        x.grad = None
        loss = fn()
        loss.backward()
        values[name] = float(loss.detach())
        tensors[f"{name}.grad"] = x.grad.detach().clone()
    # pixray's tiler rolls the image before the cutouts: torch.roll by (dy, dx) = (5, 13).
    tensors["rolled"] = torch.roll(image.detach(), shifts=(5, 13), dims=(2, 3))
    save_file(tensors, str(OUT / "expected.safetensors"))
    (OUT / "values.json").write_text(json.dumps({"torch": torch.__version__, "edge": EDGE, "palette": PALETTE, "values": values}, indent=1) + "\n")
    print(values)


if __name__ == "__main__":
    main()
