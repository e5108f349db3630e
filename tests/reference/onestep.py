"""clipcanvas's one-step generator (src/models/onestep/) in plain PyTorch.

Shared by make_onestep_fixtures.py (the golden files) and bench_onestep_reference.py
(the sampling speed reference). Written from src/models/onestep/mod.rs, not from an
upstream model: the Rust module is the specification.

The model (CLIP-GEN's GPT in spirit), for a config.json with clip_dim C, n_codes N,
grid [h, w] (cells = h*w), width W, layers L, heads H, mlp M:

* position 0's input is ``cond_proj(cond)`` (Linear C -> W, bias), the unit CLIP
  embedding projected to the width; position i >= 1's is ``tok_emb[codes[i-1]]``;
  every position adds its learnt ``pos_emb[i]`` ([cells, W], no sinusoids);
* L pre-LN blocks: ``x += proj(attn(ln1(x)))``, ``x += fc2(quick_gelu(fc1(ln2(x))))``,
  with ``attn.qkv`` one packed Linear W -> 3W (columns [q | k | v], each split into H
  heads of W/H contiguous columns), causal softmax attention scaled by (W/H)^-0.5,
  ``quick_gelu(x) = x * sigmoid(1.702 x)``, LayerNorm eps 1e-5 (biased variance);
* ``ln_f``, then ``head`` (Linear W -> N, no bias): row i's logits predict code i.

Tensor names (model.safetensors): cond_proj.{weight,bias}, tok_emb.weight,
pos_emb.weight, blocks.{i}.{ln1,ln2}.{weight,bias},
blocks.{i}.attn.{qkv,proj}.{weight,bias}, blocks.{i}.mlp.{fc1,fc2}.{weight,bias},
ln_f.{weight,bias}, head.weight. Linear weights are [out, in] as in PyTorch.

Sampling draws one position at a time with each layer's keys and values cached
(``OneStep.generate``); ``pick`` is src/models/onestep/sample.rs line for line (one
row, float64 arithmetic on the float32 logits), ``pick_batch`` the same rule as
batched torch ops for timing.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

EPS = 1e-5
FORMAT = "clipcanvas-onestep"


def quick_gelu(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(1.702 * x)


class Attention(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)


class Mlp(nn.Module):
    def __init__(self, width: int, mlp: int):
        super().__init__()
        self.fc1 = nn.Linear(width, mlp)
        self.fc2 = nn.Linear(mlp, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(quick_gelu(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, width: int, heads: int, mlp: int):
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(width, eps=EPS)
        self.attn = Attention(width)
        self.ln2 = nn.LayerNorm(width, eps=EPS)
        self.mlp = Mlp(width, mlp)

    def _qkv(self, x: torch.Tensor):
        """q, k, v as [B, heads, T, head_dim] from the packed projection of ln1(x)."""
        b, t, w = x.shape
        qkv = self.attn.qkv(self.ln1(x)).view(b, t, 3, self.heads, w // self.heads)
        return qkv.permute(2, 0, 3, 1, 4).unbind(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The whole sequence [B, T, W], causally (the reference form)."""
        b, t, w = x.shape
        q, k, v = self._qkv(x)
        scale = (w // self.heads) ** -0.5
        mask = torch.full((t, t), float("-inf"), dtype=x.dtype).triu(1)
        p = torch.softmax((q * scale) @ k.transpose(-1, -2) + mask, dim=-1)
        x = x + self.attn.proj((p @ v).transpose(1, 2).reshape(b, t, w))
        return x + self.mlp(self.ln2(x))

    def step(self, x: torch.Tensor, cache: tuple, i: int, sdpa: bool = False) -> torch.Tensor:
        """Position i, [B, 1, W], against the cached keys and values of positions < i;
        writes its own into the cache ([B, heads, cells, head_dim] each)."""
        b, _, w = x.shape
        q, k, v = self._qkv(x)
        ck, cv = cache
        ck[:, :, i : i + 1] = k
        cv[:, :, i : i + 1] = v
        keys, values = ck[:, :, : i + 1], cv[:, :, : i + 1]
        if sdpa:
            a = F.scaled_dot_product_attention(q, keys, values)
        else:
            scale = (w // self.heads) ** -0.5
            a = torch.softmax((q * scale) @ keys.transpose(-1, -2), dim=-1) @ values
        x = x + self.attn.proj(a.transpose(1, 2).reshape(b, 1, w))
        return x + self.mlp(self.ln2(x))


class OneStep(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        self.cfg = cfg
        w = cfg["width"]
        self.cells = cfg["grid"][0] * cfg["grid"][1]
        self.cond_proj = nn.Linear(cfg["clip_dim"], w)
        self.tok_emb = nn.Embedding(cfg["n_codes"], w)
        self.pos_emb = nn.Embedding(self.cells, w)
        self.blocks = nn.ModuleList(Block(w, cfg["heads"], cfg["mlp"]) for _ in range(cfg["layers"]))
        self.ln_f = nn.LayerNorm(w, eps=EPS)
        self.head = nn.Linear(w, cfg["n_codes"], bias=False)

    def forward(self, cond: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits [B, cells, n_codes] for cond [B, clip_dim] and the
        grids' codes tokens [B, cells]: row i predicts code i from cond and codes < i."""
        assert tokens.shape[1] == self.cells, tokens.shape
        x = torch.cat([self.cond_proj(cond)[:, None], self.tok_emb(tokens[:, :-1])], dim=1)
        x = x + self.pos_emb.weight[None]
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))

    def new_cache(self, b: int) -> list:
        c = self.cfg
        shape = (b, c["heads"], self.cells, c["width"] // c["heads"])
        dtype = self.pos_emb.weight.dtype
        return [(torch.zeros(shape, dtype=dtype), torch.zeros(shape, dtype=dtype)) for _ in self.blocks]

    def step(self, x: torch.Tensor, i: int, cache: list, sdpa: bool = False) -> torch.Tensor:
        """Logits [B, n_codes] of position i from its input x [B, W] (before pos_emb)."""
        x = (x + self.pos_emb.weight[i])[:, None]
        for block, layer_cache in zip(self.blocks, cache):
            x = block.step(x, layer_cache, i, sdpa)
        return self.head(self.ln_f(x[:, 0]))

    def generate(self, cond: torch.Tensor, choose, sdpa: bool = False, keep_logits: bool = True):
        """Draws one grid per row of cond, position by position with a KV cache.
        choose(logits [B, n_codes], i) -> codes [B] (int64). Returns the codes
        [B, h, w] and every step's logits [B, cells, n_codes] (None without
        keep_logits)."""
        b = cond.shape[0]
        cache = self.new_cache(b)
        codes = torch.zeros(b, self.cells, dtype=torch.int64)
        seen = []
        x = self.cond_proj(cond)
        for i in range(self.cells):
            logits = self.step(x, i, cache, sdpa)
            if keep_logits:
                seen.append(logits)
            codes[:, i] = choose(logits, i)
            if i + 1 < self.cells:
                x = self.tok_emb(codes[:, i])
        return codes.view(b, *self.cfg["grid"]), torch.stack(seen, 1) if keep_logits else None


def load(folder: Path) -> OneStep:
    """A one-step model folder (config.json + model.safetensors), widened to float32."""
    from safetensors.torch import load_file

    cfg = json.loads((Path(folder) / "config.json").read_text())
    assert cfg["format"] == FORMAT, cfg.get("format")
    model = OneStep(cfg)
    state = {k: v.float() for k, v in load_file(str(Path(folder) / "model.safetensors")).items()}
    model.load_state_dict(state, strict=True)
    return model.eval()


def pick(logits: np.ndarray, temperature: float, top_k: int, top_p: float, u: float, stats: dict | None = None) -> int:
    """sample.rs's `pick`, line for line: the code drawn from one row of float32
    logits with the uniform number u. With `stats`, records how close the draw came
    to going another way: `top_p_slack` (distance of the cumulative share from top_p
    at the cut) and `draw_slack` (distance of u*total from the nearest boundary of
    a kept code's share, as a share of the total)."""
    logits = np.asarray(logits, dtype=np.float32)
    n = len(logits)
    if temperature == 0.0 or n < 2:
        best, best_v = 0, -math.inf
        for i, v in enumerate(logits):
            if v > best_v:
                best, best_v = i, v
        return best
    finite = np.isfinite(logits)
    if not finite.any():
        return 0
    top = float(logits[finite].max())
    floor = top - temperature * math.log(1e9)
    order = [i for i in range(n) if finite[i] and float(logits[i]) >= floor]
    order.sort(key=lambda i: (-float(logits[i]), i))
    if 0 < top_k < len(order):
        order = order[:top_k]

    def weight(i: int) -> float:
        return math.exp((float(logits[i]) - top) / temperature)

    if top_p < 1.0:
        total = sum(weight(i) for i in order)
        acc, keep, prev = 0.0, len(order), 0.0
        for j, code in enumerate(order):
            acc += weight(code) / total
            if acc >= top_p:
                keep = j + 1
                if stats is not None:
                    stats["top_p_slack"] = min(acc - top_p, top_p - prev) if j > 0 else acc - top_p
                break
            prev = acc
        order = order[:keep]
    probs = [weight(i) for i in order]
    total = sum(probs)
    target = min(max(u, 0.0), 1.0) * total
    for j, p in enumerate(probs):
        if target < p:
            if stats is not None:
                # the first code has no boundary below it, the last none above
                lower = target if j > 0 else total
                upper = p - target if j + 1 < len(probs) else total
                stats["draw_slack"] = min(lower, upper) / total
            return order[j]
        target -= p
    if stats is not None:
        stats["draw_slack"] = 0.0
    return order[-1]


def pick_batch(logits: torch.Tensor, temperature: float, top_p: float, u: torch.Tensor) -> torch.Tensor:
    """The draw of `pick` (top-k off, without its 1e-9 floor, which holds at most
    n*1e-9 of the mass) as batched torch ops: logits [B, N], u [B] -> codes [B]."""
    probs = torch.softmax(logits / temperature, dim=-1)
    sorted_p, order = probs.sort(dim=-1, descending=True, stable=True)
    before = sorted_p.cumsum(-1) - sorted_p
    kept = torch.where(before < top_p, sorted_p, torch.zeros_like(sorted_p))
    total = kept.sum(-1, keepdim=True)
    j = (kept.cumsum(-1) <= u[:, None] * total).sum(-1, keepdim=True)
    j = torch.minimum(j, (before < top_p).sum(-1, keepdim=True) - 1)
    return order.gather(-1, j)[:, 0]
