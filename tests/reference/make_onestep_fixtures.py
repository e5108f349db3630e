#!/usr/bin/env python3
"""Generate tests/fixtures/onestep-tiny/: golden files for the one-step generator.

Run from the repository root (needs only torch, safetensors and numpy):

    python tests/reference/make_onestep_fixtures.py

The model is onestep.py's plain-PyTorch `OneStep` (written from
src/models/onestep/mod.rs), tiny and seeded: clip_dim 16, n_codes 40, grid 3x4,
width 32, 2 layers, 4 heads, MLP 128. Its weights are written in float16, as
every fixture's are (tests/reference/README.md): each parameter is rounded to f16
in place before anything is computed, and the expected outputs come from the model
reloaded from the written folder and widened to float32, so a loader that widens
the f16 tensors reproduces them exactly.

Deterministic (seeded generators, one thread, deterministic algorithms): a re-run
reproduces the files byte for byte with the pinned versions.
"""

from __future__ import annotations

import json
import sys
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from onestep import FORMAT, OneStep, load, pick, pick_batch  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "tests" / "fixtures" / "onestep-tiny"

torch.set_num_threads(1)  # bit-for-bit reproducible CPU reductions
torch.use_deterministic_algorithms(True)

CONFIG = OrderedDict(
    format=FORMAT,
    clip_dim=16,
    n_codes=40,
    grid=[3, 4],
    width=32,
    layers=2,
    heads=4,
    mlp=128,
    trained_with=OrderedDict(clip_sha256="", vqgan_sha256="", image_side=0),
)
MODEL_SEED = 300
COND_SEED = 301
TOKENS_SEED = 302
UNIFORM_SEED = 304
# The head's weights are scaled up so the logits spread like a trained model's
# (a few units), which keeps the greedy and sampled draws clear of ties.
HEAD_GAIN = 4.0
SAMPLING = dict(temperature=1.0, top_k=0, top_p=0.9)

# Smallest allowed gap between the best and second-best logit at every greedy step
# (the Rust test compares logits to 1e-4), and the smallest allowed distance of a
# sampled draw from going another way (top-p cut or inverse-CDF boundary, as a
# share of the probability mass).
MIN_GREEDY_MARGIN = 1e-2
MIN_DRAW_SLACK = 1e-3


def gen(n: int) -> torch.Generator:
    torch.manual_seed(n)
    return torch.Generator().manual_seed(n)


def write_json(path: Path, obj) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


def build() -> OneStep:
    """PyTorch's default initialisation under MODEL_SEED, every parameter (norms and
    biases too) moved by N(0, 0.1), the head scaled by HEAD_GAIN, rounded to f16."""
    g = gen(MODEL_SEED)
    model = OneStep(dict(CONFIG))
    with torch.no_grad():
        for _, p in model.named_parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.1)
        model.head.weight.mul_(HEAD_GAIN)
        for p in model.parameters():
            p.data = p.data.half().float()
    return model.eval()


def write_model(model: OneStep) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    write_json(OUT / "config.json", CONFIG)
    tensors = OrderedDict()
    for k, v in model.state_dict().items():
        h = v.detach().half().contiguous()
        assert torch.equal(h.float(), v), f"{k} is not f16-exact"
        tensors[k] = h
    save_file(dict(tensors), str(OUT / "model.safetensors"), metadata={"state": "clipcanvas one-step model"})


def margin(logits: torch.Tensor) -> float:
    """Smallest gap between the best and second-best logit over all rows."""
    top2 = logits.reshape(-1, logits.shape[-1]).topk(2, dim=-1).values
    return float((top2[:, 0] - top2[:, 1]).min())


def main() -> None:
    in_memory = build()
    write_model(in_memory)
    model = load(OUT)
    sa, sb = in_memory.state_dict(), model.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)

    b, cells, n = 3, model.cells, CONFIG["n_codes"]
    g = gen(COND_SEED)
    cond = torch.randn(b, CONFIG["clip_dim"], generator=g)
    cond = cond / cond.norm(dim=-1, keepdim=True)
    tokens = torch.randint(0, n, (b, cells), generator=gen(TOKENS_SEED))
    # Uniform numbers in the order generate draws them (position by position, rows in
    # order), exact in float32 so both sides read the same value.
    uniform = torch.rand(cells, b, generator=gen(UNIFORM_SEED), dtype=torch.float64).float()

    with torch.no_grad():
        logits = model(cond, tokens)

        # Greedy (temperature 0: the first largest logit), with the KV cache.
        def greedy_choose(row_logits, i):
            return torch.tensor([pick(r.numpy(), 0.0, 0, 1.0, 0.5) for r in row_logits])

        greedy, greedy_seen = model.generate(cond, greedy_choose)
        assert torch.equal(greedy.flatten(1), greedy_seen.argmax(-1))
        greedy_logits = model(cond, greedy.flatten(1))
        cached_vs_full = float((greedy_seen - greedy_logits).abs().max())
        assert cached_vs_full < 1e-5, cached_vs_full
        greedy_margin = margin(greedy_seen)
        assert greedy_margin >= MIN_GREEDY_MARGIN, (
            f"greedy argmax margin {greedy_margin:.3g} < {MIN_GREEDY_MARGIN}: change MODEL_SEED or COND_SEED")

        # Sampled: sample.rs's rule with the uniform numbers above.
        slack = {"top_p": 1.0, "draw": 1.0}

        def sampled_choose(row_logits, i):
            codes = []
            for r in range(row_logits.shape[0]):
                st = {}
                codes.append(pick(row_logits[r].numpy(), SAMPLING["temperature"], SAMPLING["top_k"],
                                  SAMPLING["top_p"], float(uniform[i, r]), st))
                slack["top_p"] = min(slack["top_p"], st.get("top_p_slack", 1.0))
                slack["draw"] = min(slack["draw"], st["draw_slack"])
            codes = torch.tensor(codes)
            # The batched rule bench_onestep_reference.py times draws the same.
            batched = pick_batch(row_logits, SAMPLING["temperature"], SAMPLING["top_p"], uniform[i].double())
            assert torch.equal(codes, batched), (i, codes, batched)
            return codes

        sampled, sampled_seen = model.generate(cond, sampled_choose)
        sampled_logits = model(cond, sampled.flatten(1))
        cached_vs_full = max(cached_vs_full, float((sampled_seen - sampled_logits).abs().max()))
        assert cached_vs_full < 1e-5, cached_vs_full
        assert min(slack.values()) >= MIN_DRAW_SLACK, (
            f"a sampled draw within {min(slack.values()):.3g} of going another way: change UNIFORM_SEED")
        assert not torch.equal(sampled, greedy)

    save_file({
        "cond": cond.contiguous(),
        "tokens": tokens.contiguous(),
        "logits": logits.contiguous(),
        "greedy": greedy.contiguous(),
        "greedy_logits": greedy_logits.contiguous(),
        "uniform": uniform.contiguous(),
        "sampled": sampled.contiguous(),
        "sampled_logits": sampled_logits.contiguous(),
    }, str(OUT / "expected.safetensors"))
    write_json(OUT / "expected.json", {
        "notes": "cond [3,16]: unit rows. tokens [3,12] (int64): random codes; logits [3,12,40] = the "
                 "teacher-forced forward (row i predicts code i from cond and codes < i). greedy [3,3,4] "
                 "(int64): KV-cached sampling at temperature 0 (the first largest logit); greedy_logits = "
                 "the full forward on the greedy grids (= what the cached steps saw, to float rounding). "
                 "sampled [3,3,4] (int64): KV-cached sampling with sample.rs's rule at the settings below, "
                 "uniform [12,3] (float32, position-major: the order generate draws them) the uniform "
                 "numbers; sampled_logits = the full forward on the sampled grids. Weights stored in "
                 "float16; everything computed in float32 from exactly those values.",
        "sampling": SAMPLING,
        "min_greedy_margin": greedy_margin,
        "min_top_p_slack": slack["top_p"],
        "min_draw_slack": slack["draw"],
        "max_cached_vs_full": cached_vs_full,
        "logit_range": [float(logits.min()), float(logits.max())],
    })
    for p in OUT.glob("*"):
        p.chmod(0o644)  # safetensors writes 0600
    print(f"onestep-tiny: greedy margin {greedy_margin:.3g}, top-p slack {slack['top_p']:.3g}, "
          f"draw slack {slack['draw']:.3g}, cached vs full {cached_vs_full:.2g}, "
          f"logits in [{float(logits.min()):.2f}, {float(logits.max()):.2f}]")
    print("greedy:", greedy.flatten(1).tolist())
    print("sampled:", sampled.flatten(1).tolist())


if __name__ == "__main__":
    main()
