"""Golden scores for `clipcanvas score` on the tiny CLIP fixture.

Writes two images (one at CLIP's input size, one that needs resizing and cropping) and
the cosine similarity of each with three prompts, preprocessed as CLIP does
(torchvision Resize(bicubic, shorter side) → CenterCrop → ToTensor → Normalize) and
tokenized with open_clip.

Run after make_fixtures.py:  python tests/reference/make_score_golden.py
"""
import json
import os

import numpy as np
import open_clip
import torch
from PIL import Image
from torchvision import transforms as T
from transformers import CLIPModel

HERE = os.path.dirname(os.path.abspath(__file__))
FIX = os.path.join(HERE, "..", "fixtures")
OUT = os.path.join(FIX, "score")
os.makedirs(OUT, exist_ok=True)

PROMPTS = ["a red circle on a blue background", "a watercolor painting of a fox", "unreal engine, trending on artstation"]


def make_image(w, h, seed):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([
        128 + 100 * np.sin(x / 5.0 + seed),
        128 + 100 * np.cos(y / 7.0),
        128 + 60 * np.sin((x + y) / 9.0),
    ], -1) + rng.normal(0, 10, (h, w, 3))
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")


def features(x):
    """transformers 5 returns an output object whose pooler_output is the projection."""
    return x if isinstance(x, torch.Tensor) else x.pooler_output


def main():
    model = CLIPModel.from_pretrained(os.path.join(FIX, "clip-tiny")).eval()
    size = model.config.vision_config.image_size
    pre = T.Compose([
        T.Resize(size, interpolation=T.InterpolationMode.BICUBIC),
        T.CenterCrop(size),
        T.ToTensor(),
        T.Normalize((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
    ])
    ids = open_clip.tokenize(PROMPTS)
    out = {"prompts": PROMPTS, "images": []}
    with torch.no_grad():
        t = features(model.get_text_features(input_ids=ids))
        t = t / t.norm(dim=-1, keepdim=True)
        for name, (w, h, seed) in {"exact.png": (size, size, 1), "wide.png": (48, 40, 2), "tall.png": (30, 70, 3)}.items():
            img = make_image(w, h, seed)
            img.save(os.path.join(OUT, name))
            px = pre(img).unsqueeze(0)
            e = features(model.get_image_features(pixel_values=px))
            e = e / e.norm(dim=-1, keepdim=True)
            out["images"].append({"file": name, "scores": (e @ t.T)[0].tolist()})
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(out, f, indent=1)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
