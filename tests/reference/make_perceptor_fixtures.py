#!/usr/bin/env python3
"""Several CLIPs scoring one image (tests/fixtures/perceptors/ and clip-tiny-48/).

    python tests/reference/make_perceptor_fixtures.py

Writes a second tiny CLIP, clip-tiny-48 (the clip-tiny architecture with 48-pixel
inputs, other random weights, the same tokenizer), as Hugging Face writes one
(config.json, f16 model.safetensors, tokenizer.json). Then, as pixray scores with
several perceptors: for a random 32×32 image and four crops, each CLIP cuts the crops
out at its own input size (the notebook's MakeCutouts with those crops), normalises
them, embeds them and scores them against its own embedding of "a lighthouse" with the
notebook's Prompt loss; the total is the CLIPs' losses times their weights (2 and 0.5).
Saves the image, each CLIP's loss, the total and its gradient with respect to the image.
Needs torch, transformers, open_clip and safetensors (see requirements.txt).
"""
from __future__ import annotations

import shutil

import open_clip
import torch

from make_engine_fixtures import Prompt
from make_fixtures import (
    CLIP_MEAN,
    CLIP_STD,
    FIX,
    assert_same_params,
    load_clip_f32,
    perturb_,
    rewrite_safetensors_f16,
    round_f16_,
    save_st,
    seed,
    tiny_clip_config,
    write_json,
)
from notebook import make_cutouts

OUT = FIX / "perceptors"
CROPS = [
    {"size": 12, "x": 0, "y": 3},
    {"size": 20, "x": 12, "y": 0},
    {"size": 8, "x": 1, "y": 20},
    {"size": 32, "x": 0, "y": 0},
]
WEIGHTS = [2.0, 0.5]
PROMPT = "a lighthouse"


def build_clip_48():
    from transformers import CLIPModel

    seed(300)
    cfg = tiny_clip_config(49408, 49407, 49406, 1)
    cfg.vision_config.image_size = 48
    model = CLIPModel(cfg)
    model.config._attn_implementation = "eager"
    perturb_(model, torch.Generator().manual_seed(301))
    round_f16_(model)
    return model.eval()


def main() -> None:
    out = FIX / "clip-tiny-48"
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    model = build_clip_48()
    model.save_pretrained(str(out), safe_serialization=True)
    rewrite_safetensors_f16(out / "model.safetensors")
    shutil.copy(FIX / "clip-tiny" / "tokenizer.json", out / "tokenizer.json")
    clips = [load_clip_f32(FIX / "clip-tiny"), load_clip_f32(out)]
    assert_same_params(model, clips[1])
    assert clips[1].config.vision_config.image_size == 48

    g = seed(310)
    image = torch.rand(1, 3, 32, 32, generator=g).requires_grad_(True)
    ids = open_clip.tokenize([PROMPT])
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    losses = []
    for clip in clips:
        size = clip.config.vision_config.image_size
        with torch.no_grad():
            text = clip.get_text_features(input_ids=ids)
            text = text if isinstance(text, torch.Tensor) else text.pooler_output
        cut = make_cutouts(image, size, CROPS)
        feats = clip.get_image_features(pixel_values=(cut - mean) / std)
        feats = feats if isinstance(feats, torch.Tensor) else feats.pooler_output
        losses.append(Prompt(text.float()).forward(feats.float()))
    total = sum(w * l for w, l in zip(WEIGHTS, losses))
    total.backward()
    OUT.mkdir(parents=True, exist_ok=True)
    save_st(OUT / "expected.safetensors", {
        "image": image.detach(),
        "loss_32": losses[0].detach().reshape(()),
        "loss_48": losses[1].detach().reshape(()),
        "total": total.detach().reshape(()),
        "grad": image.grad,
    })
    write_json(OUT / "expected.json", {
        "crops": CROPS,
        "weights": WEIGHTS,
        "prompt": PROMPT,
        "clips": ["clip-tiny", "clip-tiny-48"],
        "notes": "total = 2 * loss(clip-tiny, 32-pixel cutouts) + 0.5 * loss(clip-tiny-48, 48-pixel "
                 "cutouts); grad = d total / d image.",
    })
    for p in list(OUT.rglob("*")) + list(out.rglob("*")):
        if p.is_file():
            p.chmod(0o644)
    print(f"losses {[float(l.detach()) for l in losses]}, total {float(total.detach()):.6f}")


if __name__ == "__main__":
    main()
