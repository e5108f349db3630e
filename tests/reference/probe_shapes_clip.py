"""Probe a shapes-world CLIP folder (models/shapes-world or a train-demo --out) with
transformers: does its image tower tell where a shape is, and which shape it is?

Draws a red circle on blue at each of the five places (and a square in the centre) at
the CLIP's 64x64 input, and prints the cosine of each image embedding with the
left-hand one, the same for the captions, and the image-by-caption logits (x100).
An image tower that only pools colour gives cosines of ~1.0000 everywhere.

    python tests/reference/probe_shapes_clip.py models/shapes-world
"""
import sys

import numpy as np
import torch
from transformers import CLIPModel, CLIPTokenizer

MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073])[:, None, None]
STD = torch.tensor([0.26862954, 0.26130258, 0.27577711])[:, None, None]
PLACES = {"left": (16, 32), "right": (48, 32), "top": (32, 16), "bottom": (32, 48), "centre": (32, 32)}


def scene(cx, cy, shape="circle", side=64):
    a = np.zeros((side, side, 3), np.float32)
    a[:] = [0, 0, 1]
    yy, xx = np.mgrid[0:side, 0:side]
    if shape == "circle":
        mask = (xx - cx) ** 2 + (yy - cy) ** 2 < 12**2
    else:
        mask = (abs(xx - cx) < 11) & (abs(yy - cy) < 11)
    a[mask] = [1, 0, 0]
    return ((torch.tensor(a).permute(2, 0, 1) - MEAN) / STD)[None]


def caption(place, shape="circle"):
    where = "in the centre" if place == "centre" else f"on the {place}"
    return f"a big red {shape} {where} on a blue background"


def main(folder):
    model = CLIPModel.from_pretrained(f"{folder}/clip").float().eval()
    tok = CLIPTokenizer.from_pretrained(f"{folder}/clip")
    context = model.config.text_config.max_position_embeddings

    def image(p):
        return torch.nn.functional.normalize(model.visual_projection(model.vision_model(pixel_values=p).pooler_output), dim=-1)

    def text(c):
        ids = tok([c], padding="max_length", max_length=context, return_tensors="pt")
        return torch.nn.functional.normalize(model.text_projection(model.text_model(**ids).pooler_output), dim=-1)

    with torch.no_grad():
        images = {k: image(scene(*v)) for k, v in PLACES.items()}
        images["square"] = image(scene(32, 32, "square"))
        texts = {k: text(caption(k)) for k in PLACES}
        texts["square"] = text(caption("centre", "square"))
    cos = lambda a, b: round(float((a * b).sum()), 4)
    print("image cosine with 'left':", {k: cos(images["left"], v) for k, v in images.items()})
    print("caption cosine with 'left':", {k: cos(texts["left"], v) for k, v in texts.items()})
    print("logits x100, rows images, columns captions:", list(PLACES))
    for a in PLACES:
        print(f"  {a:7}", [round(100 * float((images[a] * texts[b]).sum()), 1) for b in PLACES])


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "models/shapes-world")
