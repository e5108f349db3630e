#!/usr/bin/env python3
"""Golden outputs of the tiny fixture models in half precision (tests/fixtures/half/).

    python tests/reference/make_half_fixtures.py

`clipcanvas --precision f16|bf16` runs the frozen networks (the VQGAN decoder and
encoder, both CLIP towers) in half precision and keeps the latent, the cutouts and the
losses in f32. The PyTorch counterpart is autocast: this script runs the fixture
VQGAN (`vqgan-tiny`) and CLIP (`clip-tiny`) under `torch.autocast("cpu", dtype)` for
float16 and bfloat16 and stores what they give on the inputs of the f32 goldens
(`expected.safetensors` beside each model), together with how far autocast itself
lands from f32, which the Rust test uses to size its tolerance.

Needs torch, transformers and taming-transformers-rom1504 (see requirements.txt).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_fixtures as mf  # noqa: E402  (the loaders of the fixture models)

FIX = Path(__file__).resolve().parents[1] / "fixtures"
OUT = FIX / "half"


def max_rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| over the largest |b|: the error in units of the output's scale."""
    return float((a.float() - b.float()).abs().max() / b.float().abs().max())


def main() -> None:
    mf._fake_pl_module()
    torch.manual_seed(0)
    cfg = mf.load_yaml_model_cfg((FIX / "vqgan-tiny" / "model.yaml").read_text())
    vq = mf.instantiate_first_stage(cfg)
    missing, unexpected = vq.load_state_dict(mf.load_ckpt_state(FIX / "vqgan-tiny" / "model.ckpt"), strict=False)
    assert not missing and all(k.startswith("loss.") for k in unexpected), (missing, unexpected)
    vq.eval()
    clip = mf.load_clip_f32(FIX / "clip-tiny")
    gv = load_file(str(FIX / "vqgan-tiny" / "expected.safetensors"))
    gc = load_file(str(FIX / "clip-tiny" / "expected.safetensors"))

    out: dict[str, torch.Tensor] = {}
    report: dict[str, dict] = {}
    with torch.no_grad():
        f32 = {
            "decoded": vq.decode(gv["z_q"]),
            "h": vq.quant_conv(vq.encoder(gv["x"])),
            "image_embeds": mf._feat(clip.get_image_features(pixel_values=gc["pixel_values"])),
            "text_embeds": mf._feat(clip.get_text_features(input_ids=gc["input_ids"])),
        }
        for key, ref in [("decoded", gv["decoded"]), ("h", gv["h"]), ("image_embeds", gc["image_embeds"]),
                         ("text_embeds", gc["text_embeds"])]:
            assert torch.allclose(f32[key], ref, atol=1e-5), key
        for name, dtype in [("f16", torch.float16), ("bf16", torch.bfloat16)]:
            with torch.autocast("cpu", dtype=dtype):
                got = {
                    "decoded": vq.decode(gv["z_q"]),
                    "h": vq.quant_conv(vq.encoder(gv["x"])),
                    "image_embeds": mf._feat(clip.get_image_features(pixel_values=gc["pixel_values"])),
                    "text_embeds": mf._feat(clip.get_text_features(input_ids=gc["input_ids"])),
                }
            report[name] = {}
            for key, t in got.items():
                out[f"{key}_{name}"] = t.float().contiguous()
                report[name][key] = {"autocast_vs_f32": max_rel(t, f32[key]), "autocast_dtype": str(t.dtype)}
    OUT.mkdir(parents=True, exist_ok=True)
    save_file(out, str(OUT / "autocast.safetensors"))
    (OUT / "autocast.json").write_text(json.dumps({
        "torch": torch.__version__,
        "inputs": "vqgan-tiny/expected.safetensors (z_q, x) and clip-tiny/expected.safetensors "
                  "(pixel_values, input_ids)",
        "error": "max |autocast - f32| / max |f32|, per output",
        "report": report,
    }, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
