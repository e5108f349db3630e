#!/usr/bin/env python3
"""Golden output and gradient of the VQGAN decoder with circular padding (tests/fixtures/tile/).

    python tests/reference/make_tile_fixtures.py

`--tile` decodes the latent with every padded convolution of the decoder wrapping
around the image's edges, as PyTorch's `Conv2d(padding_mode="circular")` does (pixray
and the tiling notebooks switch the decoder's convolutions to it), so that a tile's
right edge continues into its left one. This script decodes a random latent with the
fixture VQGAN (`vqgan-tiny`, taming's Decoder) so switched, and stores the latent, the
image and the gradient of `sum(image * r)` for a random `r` with respect to the latent.
Needs torch and taming-transformers-rom1504 (see requirements.txt).
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_fixtures as mf  # noqa: E402  (the loaders of the fixture models)

FIX = Path(__file__).resolve().parents[1] / "fixtures"
OUT = FIX / "tile"


def main() -> None:
    mf._fake_pl_module()
    cfg = mf.load_yaml_model_cfg((FIX / "vqgan-tiny" / "model.yaml").read_text())
    vq = mf.instantiate_first_stage(cfg)
    missing, unexpected = vq.load_state_dict(mf.load_ckpt_state(FIX / "vqgan-tiny" / "model.ckpt"), strict=False)
    assert not missing and all(k.startswith("loss.") for k in unexpected), (missing, unexpected)
    vq.eval()
    for p in vq.parameters():
        p.requires_grad_(False)
    switched = 0
    for m in vq.decoder.modules():
        if isinstance(m, torch.nn.Conv2d) and m.padding != (0, 0):
            m.padding_mode = "circular"
            m._reversed_padding_repeated_twice = [p for p in reversed(m.padding) for _ in range(2)]
            switched += 1
    g = torch.Generator().manual_seed(700)
    # A latent of 6x10 tokens: not square, so rows and columns cannot be mixed up.
    z = (torch.randn(1, 8, 6, 10, generator=g) * 0.5).requires_grad_(True)
    out = vq.decode(z)
    r = torch.randn(out.shape, generator=g)
    (out * r).sum().backward()
    OUT.mkdir(parents=True, exist_ok=True)
    save_file({"z": z.detach().contiguous(), "decoded": out.detach().contiguous(), "r": r.contiguous(),
               "grad_z": z.grad.detach().contiguous()}, str(OUT / "expected.safetensors"))
    print(f"tile: {switched} convolutions made circular; z {list(z.shape)}, image {list(out.shape)}")


if __name__ == "__main__":
    main()
