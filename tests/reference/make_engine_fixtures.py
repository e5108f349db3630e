#!/usr/bin/env python3
"""Golden fixtures for the clipcanvas optimisation engine (tests/fixtures/engine/).

Run from the repository root, after make_fixtures.py has written the model
fixtures (this script LOADS tests/fixtures/clip-tiny and tests/fixtures/vqgan-tiny
at run time, so it can simply be re-run whenever those change):

    python tests/reference/make_engine_fixtures.py              # everything
    python tests/reference/make_engine_fixtures.py resample step # some sections

Sections: resample, augment, step, curve.

The math is the shared spec (engine_spec.md): the z+quantize notebook's
resample / MakeCutouts / ReplaceGrad / ClampWithGrad / vector_quantize / Prompt
(copied verbatim below) and the precisely defined augmentations, implemented
with F.grid_sample on grids computed (in float64) from explicit per-cutout
parameters. Everything runs in float32 on CPU, one thread, deterministic
algorithms, fixed seeds, models in eval mode.
"""

from __future__ import annotations

import copy
import importlib
import json
import math
import pickle
import sys
import types
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
import yaml
from safetensors.torch import save_file
from notebook import (  # the notebook's pieces, shared by both reference scripts
    _feat,
    affine_inverse,
    clamp_with_grad,
    gray,
    hue_matrix,
    make_cutouts,
    perspective_h,
    pixel_centres,
    plan_crops,
    replace_grad,
    resample,
    vector_quantize,
)

REPO = Path(__file__).resolve().parents[2]
FIX = REPO / "tests" / "fixtures"
OUT = FIX / "engine"

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)


# ---------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------

def gen(n: int) -> torch.Generator:
    torch.manual_seed(n)
    return torch.Generator().manual_seed(n)


def save_st(path: Path, tensors: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    out = {}
    for k, v in tensors.items():
        v = torch.as_tensor(v).detach().cpu().contiguous()
        if v.is_floating_point():
            v = v.to(torch.float32)
        elif v.dtype != torch.int64:
            v = v.to(torch.int64)
        out[k] = v.clone()
    save_file(out, str(path))
    path.chmod(0o644)


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1, ensure_ascii=False)
        f.write("\n")


def smooth_image(g: torch.Generator, shape, coarse=6, detail=0.15) -> torch.Tensor:
    """Smooth random image in [0, 1]: a bilinearly upsampled coarse uniform
    grid plus a little per-pixel uniform detail, rescaled into [0.02, 0.98]."""
    n, c, h, w = shape
    lo = torch.rand(n, c, coarse, coarse, generator=g)
    x = F.interpolate(lo, (h, w), mode="bilinear", align_corners=False)
    x = (1 - detail) * x + detail * torch.rand(n, c, h, w, generator=g)
    x = (x - x.min()) / (x.max() - x.min())
    return (0.02 + 0.96 * x).contiguous()


def r4(x: float) -> float:
    """Parameters are rounded to 4 decimals so the JSON value is exactly what was used."""
    return float(round(float(x), 4))


def stop_json(s: float):
    return "-inf" if s == float("-inf") else s


# ---------------------------------------------------------------------------
# model loading (models are read from the fixture files at run time)
# ---------------------------------------------------------------------------

def _install_taming_shim() -> None:
    """taming/main.py imports pytorch_lightning.utilities.distributed (gone in
    Lightning >= 1.8); install a stand-in taming.main with exact copies of the
    two functions taming.models.vqgan needs (same shim as make_fixtures.py)."""
    if "taming.main" in sys.modules:
        return
    shim = types.ModuleType("taming.main")

    def get_obj_from_str(string, reload=False):
        module, cls = string.rsplit(".", 1)
        if reload:
            importlib.reload(importlib.import_module(module))
        return getattr(importlib.import_module(module, package=None), cls)

    def instantiate_from_config(config):
        if "target" not in config:
            raise KeyError("Expected key `target` to instantiate.")
        return get_obj_from_str(config["target"])(**config.get("params", dict()))

    shim.get_obj_from_str = get_obj_from_str
    shim.instantiate_from_config = instantiate_from_config
    sys.modules["taming.main"] = shim
    import transformers
    if not hasattr(transformers, "top_k_top_p_filtering"):
        def top_k_top_p_filtering(*args, **kwargs):
            raise NotImplementedError
        transformers.top_k_top_p_filtering = top_k_top_p_filtering


class _LenientUnpickler(pickle.Unpickler):
    """model.ckpt pickles Lightning-style classes from a module that only exists
    while make_fixtures.py runs; stand in a plain dict subclass for any global
    that cannot be imported (only the 'state_dict' entry is used)."""

    def find_class(self, module, name):
        try:
            return super().find_class(module, name)
        except (ImportError, AttributeError):
            return type(name, (dict,), {"__module__": module})


_lenient_pickle = types.ModuleType("lenient_pickle")
_lenient_pickle.__dict__.update({k: getattr(pickle, k) for k in dir(pickle) if not k.startswith("__")})
_lenient_pickle.Unpickler = _LenientUnpickler


def load_vqgan():
    _install_taming_shim()
    from taming.main import instantiate_from_config
    cfg = yaml.safe_load((FIX / "vqgan-tiny" / "model.yaml").read_text())["model"]
    cfg = copy.deepcopy(cfg)
    assert cfg["target"] == "taming.models.vqgan.VQModel", cfg["target"]
    p = cfg["params"]
    model = instantiate_from_config({
        "target": "taming.models.vqgan.VQModel",
        "params": {"ddconfig": p["ddconfig"], "embed_dim": p["embed_dim"], "n_embed": p["n_embed"],
                   "lossconfig": {"target": "taming.modules.losses.vqperceptual.DummyLoss"}},
    })
    ck = torch.load(str(FIX / "vqgan-tiny" / "model.ckpt"), map_location="cpu",
                    weights_only=False, pickle_module=_lenient_pickle)
    sd = {k: v for k, v in ck["state_dict"].items() if not k.startswith("loss.")}
    model.load_state_dict(sd, strict=True)  # f16 values copied into the float32 parameters
    model = model.float().eval()
    for q in model.parameters():
        q.requires_grad_(False)
    f = 2 ** (len(p["ddconfig"]["ch_mult"]) - 1)
    return model, f


def load_clip():
    from transformers import CLIPModel
    m = CLIPModel.from_pretrained(str(FIX / "clip-tiny"), attn_implementation="eager",
                                  dtype=torch.float32).float().eval()
    for q in m.parameters():
        q.requires_grad_(False)
    return m


# ---------------------------------------------------------------------------
# notebook functions (verbatim)
# ---------------------------------------------------------------------------


class Prompt(torch.nn.Module):
    def __init__(self, embed, weight=1., stop=float('-inf')):
        super().__init__()
        self.register_buffer('embed', embed)
        self.register_buffer('weight', torch.as_tensor(weight))
        self.register_buffer('stop', torch.as_tensor(stop))

    def forward(self, input):
        input_normed = F.normalize(input.unsqueeze(1), dim=2)
        embed_normed = F.normalize(self.embed.unsqueeze(0), dim=2)
        dists = input_normed.sub(embed_normed).norm(dim=2).div(2).arcsin().pow(2).mul(2)
        dists = dists * self.weight.sign()
        return self.weight.abs() * replace_grad(dists, torch.maximum(dists, self.stop)).mean()

    def dists(self, input):
        """The same dists (before the sign), for reporting."""
        input_normed = F.normalize(input.unsqueeze(1), dim=2)
        embed_normed = F.normalize(self.embed.unsqueeze(0), dim=2)
        return input_normed.sub(embed_normed).norm(dim=2).div(2).arcsin().pow(2).mul(2)


def pooled_cutouts(input, cut_size):
    """nerdyrodent 'updatedpooling': (adaptive avg pool + adaptive max pool) / 2."""
    return (F.adaptive_avg_pool2d(input, cut_size) + F.adaptive_max_pool2d(input, cut_size)) / 2


# ---------------------------------------------------------------------------
# augmentations (spec section 3), one cutout [1,3,S,S] at a time
# ---------------------------------------------------------------------------


def sample_grid(img: torch.Tensor, fn) -> torch.Tensor:
    """Output pixel (row i, col j) at normalised u = (u_x[j], u_y[i]) samples img at
    fn(u_x, u_y) (float64 maths, grid rounded to float32), bilinear / border /
    align_corners=False."""
    S_h, S_w = img.shape[-2:]
    ux = pixel_centres(S_w)[None, :].repeat(S_h, 0)
    uy = pixel_centres(S_h)[:, None].repeat(S_w, 1)
    sx, sy = fn(ux, uy)
    grid = torch.from_numpy(np.stack([sx, sy], -1)).to(torch.float32)[None]
    return F.grid_sample(img, grid, mode="bilinear", padding_mode="border", align_corners=False)


def augment_one(x: torch.Tensor, p: dict) -> torch.Tensor:
    """x: [1,3,S,S]; p: AugmentParams. Order: flip, affine, perspective, jitter, erase, blur."""
    if p["flip"]:
        x = sample_grid(x, lambda ux, uy: (-ux, uy))
    if p["affine"] is not None:
        Ainv, t = affine_inverse(p["affine"])

        def fn(ux, uy):
            vx, vy = ux - t[0], uy - t[1]
            return Ainv[0, 0] * vx + Ainv[0, 1] * vy, Ainv[1, 0] * vx + Ainv[1, 1] * vy
        x = sample_grid(x, fn)
    if p["perspective"] is not None:
        Hm = perspective_h(p["perspective"])

        def fn(ux, uy):
            X = Hm[0, 0] * ux + Hm[0, 1] * uy + Hm[0, 2]
            Y = Hm[1, 0] * ux + Hm[1, 1] * uy + Hm[1, 2]
            Wh = Hm[2, 0] * ux + Hm[2, 1] * uy + Hm[2, 2]
            return X / Wh, Y / Wh
        x = sample_grid(x, fn)
    if p["jitter"] is not None:
        j = p["jitter"]
        x = x * (1 + j["brightness"])
        m = gray(x).mean(dim=(1, 2, 3), keepdim=True)
        x = (x - m) * (1 + j["contrast"]) + m
        g = gray(x)
        x = g + (x - g) * (1 + j["saturation"])
        Mh = torch.from_numpy(hue_matrix(j["hue"])).to(torch.float32)
        x = torch.einsum("oc,nchw->nohw", Mh, x)
        x = x.clamp(0, 1)
    if p["erase"] is not None:
        e = p["erase"]
        mask = torch.zeros_like(x)
        mask[:, :, e["y"]:e["y"] + e["h"], e["x"]:e["x"] + e["w"]] = 1
        x = x * (1 - mask) + e["value"] * mask
    if p.get("blur") is not None:
        # torchvision's Gaussian blur (reflected edges), kernel 2*ceil(3*sigma)+1 clipped
        # below the side, as clipcanvas's blur augmentation.
        sigma = p["blur"]
        r = max(1, min(math.ceil(3 * sigma), x.shape[-1] - 1))
        x = TF.gaussian_blur(x, [2 * r + 1, 2 * r + 1], [sigma, sigma])
    return x


def augment(batch: torch.Tensor, params: list) -> torch.Tensor:
    assert batch.shape[0] == len(params)
    return torch.cat([augment_one(batch[i:i + 1], p) for i, p in enumerate(params)], 0)


def aug_none() -> dict:
    return {"flip": False, "affine": None, "perspective": None, "jitter": None, "erase": None}


def rand_affine(rng: np.random.Generator) -> dict:
    return {"angle_deg": r4(rng.uniform(-25, 25)), "translate_x": r4(rng.uniform(-0.08, 0.08)),
            "translate_y": r4(rng.uniform(-0.08, 0.08)), "scale": r4(rng.uniform(0.9, 1.1)),
            "shear_deg": r4(rng.uniform(-10, 10))}


def rand_perspective(rng: np.random.Generator) -> list:
    return [[r4(rng.uniform(-0.15, 0.15)), r4(rng.uniform(-0.15, 0.15))] for _ in range(4)]


def rand_jitter(rng: np.random.Generator) -> dict:
    return {"brightness": r4(rng.uniform(-0.1, 0.1)), "contrast": r4(rng.uniform(-0.1, 0.1)),
            "saturation": r4(rng.uniform(-0.1, 0.1)), "hue": r4(rng.uniform(-0.02, 0.02))}


def rand_erase(rng: np.random.Generator, S: int) -> dict:
    w = int(rng.integers(4, 13))
    h = int(rng.integers(4, 13))
    return {"x": int(rng.integers(0, S - w + 1)), "y": int(rng.integers(0, S - h + 1)),
            "w": w, "h": h, "value": r4(rng.uniform(0, 1))}


# ---------------------------------------------------------------------------
# independent checks
# ---------------------------------------------------------------------------

def _reflect(i: int, n: int) -> int:
    while i < 0 or i >= n:
        i = -i if i < 0 else 2 * (n - 1) - i
    return i


def lanczos_matrix(n_in: int, n_out: int) -> np.ndarray:
    """[n_in, n_in]: reflect-padded Lanczos-2 conv along one axis (identity when not downscaling)."""
    if n_out >= n_in:
        return np.eye(n_in)
    ratio = n_out / n_in
    m = math.ceil(2 / ratio + 1)
    r = np.array([k * ratio for k in range(m)])
    x = np.concatenate([-r[1:][::-1], r])[1:-1]
    s = np.where(x != 0, np.sin(np.pi * x) / np.where(x != 0, np.pi * x, 1), 1.0)
    s2 = np.where(x != 0, np.sin(np.pi * x / 2) / np.where(x != 0, np.pi * x / 2, 1), 1.0)
    k = np.where((-2 < x) & (x < 2), s * s2, 0.0)
    k = k / k.sum()
    pad = (len(k) - 1) // 2
    M = np.zeros((n_in, n_in))
    for i in range(n_in):
        for t, kv in enumerate(k):
            M[i, _reflect(i - pad + t, n_in)] += kv
    return M


def bicubic_matrix(n_in: int, n_out: int, A: float = -0.75) -> np.ndarray:
    """[n_out, n_in]: PyTorch bicubic, align_corners=True, border-clamped taps."""
    def c1(x):
        return ((A + 2) * x - (A + 3)) * x * x + 1

    def c2(x):
        return ((A * x - 5 * A) * x + 8 * A) * x - 4 * A
    M = np.zeros((n_out, n_in))
    scale = (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
    for i in range(n_out):
        real = scale * i
        i0 = math.floor(real)
        t = real - i0
        ws = [c2(t + 1), c1(t), c1(1 - t), c2(2 - t)]
        for o, wv in zip(range(-1, 3), ws):
            M[i, min(max(i0 + o, 0), n_in - 1)] += wv
    return M


def resample_by_matrices(x: torch.Tensor, size) -> torch.Tensor:
    h, w = x.shape[-2:]
    Mh = torch.from_numpy(bicubic_matrix(h, size[0]) @ lanczos_matrix(h, size[0]))
    Mw = torch.from_numpy(bicubic_matrix(w, size[1]) @ lanczos_matrix(w, size[1]))
    return torch.einsum("oh,nchw,pw->ncop", Mh, x.double(), Mw)


def pooled_by_loops(x: torch.Tensor, out: int) -> torch.Tensor:
    n, c, h, w = x.shape
    y = torch.zeros(n, c, out, out, dtype=torch.float64)
    for i in range(out):
        h0, h1 = (i * h) // out, -((-(i + 1) * h) // out)
        for j in range(out):
            w0, w1 = (j * w) // out, -((-(j + 1) * w) // out)
            win = x[:, :, h0:h1, w0:w1].double()
            y[:, :, i, j] = (win.mean(dim=(2, 3)) + win.amax(dim=(2, 3))) / 2
    return y


def check_clamp_and_replace_grad() -> None:
    # ClampWithGrad: forward clamp; backward keeps grad where grad*(x - clamp(x)) >= 0
    x = torch.tensor([-0.5, -0.5, 0.3, 0.3, 1.5, 1.5], requires_grad=True)
    g = torch.tensor([1.0, -1.0, 1.0, -1.0, 1.0, -1.0])
    y = clamp_with_grad(x, 0, 1)
    assert torch.equal(y, x.detach().clamp(0, 1))
    y.backward(g)
    # below min: keep only grad < 0 (a descent step x -= lr*grad moves it up, into range)
    # inside: keep all; above max: keep only grad > 0
    assert torch.equal(x.grad, torch.tensor([0.0, -1.0, 1.0, -1.0, 1.0, 0.0])), x.grad
    # ReplaceGrad: value of the first, gradient passed to the second (sum_to_size)
    a = torch.tensor([1.0, 2.0], requires_grad=True)
    b = torch.tensor([5.0, 0.5], requires_grad=True)
    out = replace_grad(a * 10, torch.maximum(b, torch.tensor(1.0)))
    assert torch.equal(out, torch.tensor([10.0, 20.0]))
    out.backward(torch.tensor([3.0, 4.0]))
    assert a.grad is None or torch.equal(a.grad, torch.zeros(2))
    assert torch.equal(b.grad, torch.tensor([3.0, 0.0]))
    # Prompt: loss value = |w| * mean(dists * sign w); gradient only where dists*sign(w) > stop
    e = F.normalize(torch.randn(2, 5, generator=gen(1)), dim=1)
    i = torch.randn(3, 5, generator=gen(2), requires_grad=True)
    pr = Prompt(e, -0.5, float("-inf"))
    d = pr.dists(i)
    loss = pr(i)
    assert torch.allclose(loss, 0.5 * (-d).mean())
    i2 = i.detach().clone().requires_grad_(True)
    (0.5 * (-pr.dists(i2)).mean()).backward()
    loss.backward()
    assert torch.allclose(i.grad, i2.grad)
    # vector_quantize straight-through
    cb = torch.randn(7, 3, generator=gen(3))
    z = torch.randn(4, 3, generator=gen(4), requires_grad=True)
    q = vector_quantize(z, cb)
    idx = torch.cdist(z.detach(), cb).argmin(1)
    assert torch.equal(q, cb[idx])
    q.backward(torch.ones(4, 3))
    assert torch.equal(z.grad, torch.ones(4, 3))
    print("checks: ClampWithGrad, ReplaceGrad, Prompt, vector_quantize semantics ok")


# ---------------------------------------------------------------------------
# 1. resample
# ---------------------------------------------------------------------------

def make_resample() -> None:
    g = gen(1000)
    T = {}
    for key, shape in [("a", (1, 3, 40, 40)), ("b", (1, 3, 37, 45)), ("c", (1, 3, 24, 20))]:
        x = smooth_image(g, shape)
        y = resample(x, (32, 32))
        ref = resample_by_matrices(x, (32, 32))
        err = (y.double() - ref).abs().max().item()
        assert err < 2e-6, (key, err)
        print(f"resample {key} {list(shape)}: max |conv+interp - matrix| = {err:.2e}")
        T[f"in_{key}"], T[f"out_{key}"] = x, y
    # identity-size: resample(x, same size) == x
    for shape in [(1, 3, 32, 32), (1, 3, 20, 27)]:
        x = smooth_image(g, shape)
        err = (resample(x, shape[-2:]) - x).abs().max().item()
        assert err < 1e-6, err
    # gradient of out_a
    x = T["in_a"].clone().requires_grad_(True)
    w_a = torch.randn(1, 3, 32, 32, generator=g)
    (resample(x, (32, 32)) * w_a).sum().backward()
    T["w_a"], T["grad_a"] = w_a, x.grad.clone()
    xd = T["in_a"].double().clone().requires_grad_(True)
    (resample_by_matrices(xd, (32, 32)) * w_a.double()).sum().backward()
    err = (T["grad_a"].double() - xd.grad).abs().max().item()
    assert err < 1e-5, err
    print(f"resample grad_a: max |autograd - matrix transpose| = {err:.2e}")

    for key, shape in [("", (1, 3, 48, 40)), ("2", (1, 3, 70, 50))]:
        x = smooth_image(g, shape)
        y = pooled_cutouts(x, 32)
        err = (y.double() - pooled_by_loops(x, 32)).abs().max().item()
        assert err < 1e-6, err
        T[f"pooled_in{key}"], T[f"pooled_out{key}"] = x, y
        print(f"pooled{key} {list(shape)}: max |torch - loops| = {err:.2e}")
    x = T["pooled_in"].clone().requires_grad_(True)
    w_p = torch.randn(1, 3, 32, 32, generator=g)
    (pooled_cutouts(x, 32) * w_p).sum().backward()
    T["w_p"], T["grad_pooled"] = w_p, x.grad.clone()
    save_st(OUT / "resample.safetensors", T)


# ---------------------------------------------------------------------------
# 2. augmentations
# ---------------------------------------------------------------------------

def augment_cases() -> list:
    rng = np.random.default_rng(2000)
    S = 32
    cases = []

    def case(name, params):
        cases.append({"name": name, "params": params})

    case("flip", [dict(aug_none(), flip=f) for f in (True, False, True)])
    case("affine", [dict(aug_none(), affine=rand_affine(rng)) for _ in range(3)])
    case("perspective", [dict(aug_none(), perspective=rand_perspective(rng)) for _ in range(3)])
    case("jitter", [dict(aug_none(), jitter=rand_jitter(rng)) for _ in range(3)])
    case("erase", [dict(aug_none(), erase=rand_erase(rng, S)) for _ in range(3)])
    case("all", [{"flip": True, "affine": rand_affine(rng), "perspective": rand_perspective(rng),
                  "jitter": rand_jitter(rng), "erase": rand_erase(rng, S)} for _ in range(3)])
    # Appended last, so the cases above draw the same numbers as before.
    case("blur", [dict(aug_none(), blur=0.7), aug_none(), dict(aug_none(), blur=r4(rng.uniform(1.5, 3.5)))])
    case("blur_all", [{"flip": False, "affine": rand_affine(rng), "perspective": None,
                       "jitter": rand_jitter(rng), "erase": rand_erase(rng, S), "blur": 1.3} for _ in range(3)])
    return cases


def check_augment_geometry() -> None:
    """Independent sanity checks of the grid conventions."""
    x = smooth_image(gen(2100), (1, 3, 32, 32))
    # flip: exact at pixel centres for S = 32
    assert torch.equal(augment_one(x, dict(aug_none(), flip=True)), x.flip(-1))
    # identity affine / perspective are exact
    ident = {"angle_deg": 0.0, "translate_x": 0.0, "translate_y": 0.0, "scale": 1.0, "shear_deg": 0.0}
    assert torch.equal(augment_one(x, dict(aug_none(), affine=ident)), x)
    assert torch.equal(augment_one(x, dict(aug_none(), perspective=[[0.0, 0.0]] * 4)), x)
    # translate_x = 2/32 shifts by exactly 2 pixels to the right (border-padded)
    sh = augment_one(x, dict(aug_none(), affine=dict(ident, translate_x=2 / 32)))
    assert torch.allclose(sh[..., 2:], x[..., :-2], atol=1e-6)
    assert torch.allclose(sh[..., :2], x[..., :1].expand(-1, -1, -1, 2), atol=1e-6)
    # angle 90 deg: output at u samples R(-90) u
    rot = augment_one(x, dict(aug_none(), affine=dict(ident, angle_deg=90.0)))
    # R^{-1}(ux, uy) = (uy, -ux): out[i, j] = in[row = S-1-j, col = i]
    assert torch.allclose(rot, x.flip(-2).transpose(-1, -2), atol=1e-5)
    # perspective with equal displacements = translation: d = (1/32, 0) moves content 1 px right
    per = augment_one(x, dict(aug_none(), perspective=[[1 / 32, 0.0]] * 4))
    assert torch.allclose(per[..., 1:], x[..., :-1], atol=1e-5)
    # homography maps destination corners to source corners
    d = [[0.1, -0.05], [0.02, 0.12], [-0.1, 0.03], [0.07, -0.11]]
    Hm = perspective_h(d)
    for c, dk in zip([[-1, -1], [1, -1], [1, 1], [-1, 1]], d):
        v = Hm @ np.array([c[0] + 2 * dk[0], c[1] + 2 * dk[1], 1.0])
        assert np.allclose(v[:2] / v[2], c)
    # hue 0 / jitter zeros: identity (up to the clamp and float rounding)
    j0 = augment_one(x, dict(aug_none(), jitter={"brightness": 0.0, "contrast": 0.0, "saturation": 0.0,
                                                  "hue": 0.0}))
    assert torch.allclose(j0, x, atol=1e-6)
    # a full hue turn is identity too
    assert np.allclose(hue_matrix(1.0), np.eye(3))
    print("checks: augmentation grid conventions ok")


def make_augment() -> None:
    check_augment_geometry()
    g = gen(2000)
    x0 = smooth_image(g, (3, 3, 32, 32))
    weights = torch.randn(3, 3, 32, 32, generator=g)
    T = {"input": x0, "weights": weights}
    cases = augment_cases()
    for c in cases:
        x = x0.clone().requires_grad_(True)
        out = augment(x, c["params"])
        (out * weights).sum().backward()
        assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
        T[f"out_{c['name']}"], T[f"grad_{c['name']}"] = out, x.grad.clone()
        print(f"augment {c['name']}: out mean {out.mean():.5f}, |grad| {x.grad.norm():.4f}")
    # noise (safetensors only)
    facs = torch.rand(3, generator=g) * 0.1
    noise = torch.randn(3, 3, 32, 32, generator=g)
    T["noise_facs"], T["noise"] = facs, noise
    T["out_noise"] = x0 + facs[:, None, None, None] * noise
    save_st(OUT / "augment.safetensors", T)
    write_json(OUT / "augment.json", {
        "cases": cases,
        "notes": "augment.safetensors: input [3,3,32,32], weights [3,3,32,32]; per case out_<name> = "
                 "augment(input, params) (cutout i uses params[i]; order flip, affine, perspective, jitter, "
                 "erase, blur; each geometric step is a separate bilinear/border/align_corners=False grid_sample "
                 "of the previous step's output, grid computed in float64 and rounded to float32) and "
                 "grad_<name> = d(sum(out * weights))/d(input). Hue: the RGB->RGB matrix "
                 "inv(T) @ [[1,0,0],[0,cos,-sin],[0,sin,cos]] @ T (angle 2*pi*hue) is computed in float64 "
                 "and applied once in float32; jitter ends with a plain clamp(0,1) (zero gradient outside). "
                 "Erase rect: columns x..x+w, rows y..y+h. Blur: torchvision gaussian_blur, sigma = blur, "
                 "kernel 2*ceil(3*sigma)+1 (clipped below the side), reflected edges. noise: out_noise = input + "
                 "noise_facs[:,None,None,None] * noise.",
    })


# ---------------------------------------------------------------------------
# 3./4. step and curve
# ---------------------------------------------------------------------------

W, H = 48, 40
CUT = 32
STEP_PROMPTS = ["a painting of a fox in the style of starry night", "a watercolor of a cat",
                "cyberpunk city at night, neon lights"]
CURVE_PROMPTS = ["a fantasy landscape, trending on artstation", "an oil painting of a lighthouse"]


class Engine:
    def __init__(self):
        import open_clip
        self.tokenize = open_clip.tokenize
        self.vq, self.f = load_vqgan()
        self.clip = load_clip()
        self.codebook = self.vq.quantize.embedding.weight.detach()
        self.z_min = self.codebook.min(dim=0).values[None, :, None, None]
        self.z_max = self.codebook.max(dim=0).values[None, :, None, None]
        self.mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
        self.std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
        assert self.clip.config.vision_config.image_size == CUT

    def synth(self, z):
        z_q = vector_quantize(z.movedim(1, 3), self.codebook).movedim(3, 1)
        return clamp_with_grad(self.vq.decode(z_q).add(1).div(2), 0, 1)

    def encode_text(self, texts):
        with torch.no_grad():
            return _feat(self.clip.get_text_features(input_ids=self.tokenize(texts))).float()

    def encode_image(self, x):
        return _feat(self.clip.get_image_features(pixel_values=(x - self.mean) / self.std)).float()

    def z_from_indices(self, idx: torch.Tensor):
        h, w = idx.shape
        return self.codebook[idx.reshape(-1)].reshape(1, h, w, -1).permute(0, 3, 1, 2).contiguous()

    def vq_margin(self, z):
        """Smallest gap between the nearest and second-nearest code distance over all positions."""
        x = z.detach().movedim(1, 3).reshape(-1, z.shape[1])
        d = x.pow(2).sum(-1, keepdim=True) + self.codebook.pow(2).sum(1) - 2 * x @ self.codebook.T
        t = d.topk(2, dim=1, largest=False).values
        return float((t[:, 1] - t[:, 0]).min())


def make_step() -> None:
    eng = Engine()
    g = gen(3000)
    rng = np.random.default_rng(3000)
    hh, ww = H // eng.f, W // eng.f
    z_indices = torch.randint(0, eng.codebook.shape[0], (hh, ww), generator=g)
    z0 = eng.z_from_indices(z_indices)
    assert list(z0.shape) == [1, 8, 10, 12], z0.shape
    assert eng.vq_margin(z0) > 1e-6
    z_orig = z0.clone()
    init_weight, lr, cutn, cut_pow = 0.5, 0.1, 4, 1.0

    # crops: the notebook rule with a seeded generator; make sure sizes vary
    crops = plan_crops(g, W, H, CUT, cutn, cut_pow)
    assert all(32 <= c["size"] <= 40 for c in crops) and len({c["size"] for c in crops}) > 1, crops
    augments = [
        dict(aug_none(), flip=True),
        dict(aug_none(), affine=rand_affine(rng), jitter=rand_jitter(rng)),
        aug_none(),
        {"flip": True, "affine": rand_affine(rng), "perspective": rand_perspective(rng),
         "jitter": rand_jitter(rng), "erase": rand_erase(rng, CUT)},
    ]
    noise_facs = torch.rand(cutn, generator=g) * 0.1
    noise = torch.randn(cutn, 3, CUT, CUT, generator=g)

    # image prompt: target already at the run size, cut once with its own crops
    target = smooth_image(g, (1, 3, H, W))
    ip_crops = plan_crops(g, W, H, CUT, cutn, cut_pow)
    with torch.no_grad():
        ip_embeds = eng.encode_image(make_cutouts(target, CUT, ip_crops))
    text_embeds = eng.encode_text(STEP_PROMPTS)

    # forward once without grad to choose the third prompt's stop between the dists
    with torch.no_grad():
        iii0 = eng.encode_image(augment(make_cutouts(eng.synth(z0), CUT, crops), augments)
                                + noise_facs[:, None, None, None] * noise)
    d3 = Prompt(text_embeds[2:3]).dists(iii0).flatten().sort().values
    stop3 = round(float((d3[1] + d3[2]) / 2), 4)  # two of the four (cutout, prompt) pairs below
    weights_stops = [(1.0, float("-inf")), (-0.5, float("-inf")), (0.7, stop3)]
    prompts = [Prompt(text_embeds[i:i + 1], w, s) for i, (w, s) in enumerate(weights_stops)]
    ip_weight, ip_stop = 0.8, float("-inf")
    ip_prompt = Prompt(ip_embeds, ip_weight, ip_stop)

    # --- the step (notebook train(i) with ascend_txt) ---
    z = z0.clone().requires_grad_(True)
    opt = torch.optim.Adam([z], lr=lr)
    image = eng.synth(z)
    cut = make_cutouts(image, CUT, crops)
    cut = augment(cut, augments)
    cut = cut + noise_facs[:, None, None, None] * noise
    cutouts = cut
    iii = eng.encode_image(cutouts)
    loss_init = F.mse_loss(z, z_orig) * init_weight / 2
    loss_text = [p(iii) for p in prompts]
    loss_image = ip_prompt(iii)
    lossAll = [loss_init] + loss_text + [loss_image]
    loss_total = sum(lossAll)
    opt.zero_grad()
    loss_total.backward()
    grad_z = z.grad.detach().clone()
    opt.step()
    z_adam = z.detach().clone()  # after the Adam step, before the clamp (extra, for debugging)
    with torch.no_grad():
        z.copy_(z.maximum(eng.z_min).minimum(eng.z_max))
    z_after = z.detach().clone()

    assert torch.isfinite(grad_z).all() and grad_z.abs().max() > 0
    d_all = Prompt(text_embeds[2:3]).dists(iii.detach()).flatten()
    below = int((d_all < stop3).sum())
    gap = float((d_all - stop3).abs().min())
    assert below == 2 and gap > 1e-4, (d_all, stop3)
    loss_init_after = F.mse_loss(z_after, z_orig) * init_weight / 2
    n_clamped = int(((z_after == eng.z_min) | (z_after == eng.z_max)).sum())
    grad_nonzero = int((grad_z != 0).sum())
    print(f"step: loss_init {loss_init.item():.6g}, loss_text {[round(l.item(), 6) for l in loss_text]}, "
          f"loss_image {loss_image.item():.6f}, total {loss_total.item():.6f}")
    print(f"step: prompt 3 stop {stop3}: dists {[round(v, 5) for v in d_all.tolist()]} -> {below}/4 below; "
          f"|grad_z| {grad_z.norm():.4g} (max {grad_z.abs().max():.3g}, min nonzero "
          f"{grad_z.abs()[grad_z != 0].min():.3g}, {grad_nonzero}/{grad_z.numel()} nonzero); "
          f"{n_clamped}/{z_after.numel()} of z_after at a codebook bound; vq margin z0 {eng.vq_margin(z0):.3g}")

    save_st(OUT / "step.safetensors", dict(
        z0=z0, target=target, noise_facs=noise_facs, noise=noise, text_embeds=text_embeds,
        image_prompt_embeds=ip_embeds, image=image, cutouts=cutouts, image_embeds=iii,
        loss_init=loss_init.reshape(()), loss_text=torch.stack(loss_text),
        loss_image=loss_image.reshape(()), loss_total=loss_total.reshape(()), grad_z=grad_z,
        z_after=z_after, z_adam=z_adam, loss_init_after=loss_init_after.reshape(()),
        z_min=eng.z_min, z_max=eng.z_max,
    ))
    write_json(OUT / "step.json", {
        "size": [W, H], "cut_size": CUT, "cutn": cutn, "cut_pow": cut_pow, "lr": lr,
        "init_weight": init_weight,
        "z_indices": z_indices.tolist(),
        "prompts": [{"text": t, "weight": w, "stop": stop_json(s)}
                    for t, (w, s) in zip(STEP_PROMPTS, weights_stops)],
        "image_prompt": {"weight": ip_weight, "stop": stop_json(ip_stop), "crops": ip_crops},
        "crops": crops,
        "augments": augments,
        "stats": {"prompt2_dists": d_all.tolist(), "prompt2_below_stop": below,
                  "prompt2_min_gap_to_stop": gap, "vq_margin_z0": eng.vq_margin(z0),
                  "grad_z_nonzero": grad_nonzero, "z_after_at_bound": n_clamped},
        "notes": "models: vqgan-tiny (model.yaml + model.ckpt state_dict, f16 widened to f32) and clip-tiny "
                 "(float32). z0 = codebook[z_indices] as [1,C,h,w]; z_orig = z0. image = synth(z0) = "
                 "clamp_with_grad((decode(vector_quantize(z)) + 1) / 2, 0, 1). cutouts = make_cutouts(image, crops) "
                 "-> augment(per cutout, 'augments') -> + noise_facs[:,None,None,None] * noise (stored before "
                 "CLIP normalisation). image_embeds = clip image features of (cutouts - mean) / std (unnormalised "
                 "projections). text_embeds = clip text features of open_clip.tokenize(prompt). "
                 "image_prompt_embeds = image features of normalise(make_cutouts(target, image_prompt.crops)) "
                 "(no augmentation, no noise). loss_init = mse(z, z_orig) * init_weight / 2 (0 at this step; "
                 "loss_init_after = the same at z_after); loss_text[i] = Prompt(text_embeds[i], weight, stop)"
                 "(image_embeds); loss_image = Prompt(image_prompt_embeds, 0.8, -inf)(image_embeds); "
                 "loss_total = 0 + loss_init + loss_text[0] + loss_text[1] + loss_text[2] + loss_image (Python "
                 "sum). grad_z = d loss_total / d z; z_after = Adam(lr, betas (0.9, 0.999), eps 1e-8) step "
                 "then z.maximum(z_min).minimum(z_max) (per-channel codebook bounds, stored; z_adam = z after the Adam "
                 "step, before that clamp). "
                 "stats.prompt2_dists: the 4 dists of the third prompt (stop = the value in prompts[2].stop).",
    })


def make_curve() -> None:
    eng = Engine()
    g = gen(4000)
    hh, ww = H // eng.f, W // eng.f
    z_indices = torch.randint(0, eng.codebook.shape[0], (hh, ww), generator=g)
    z = eng.z_from_indices(z_indices).requires_grad_(True)
    lr, cutn, n_steps = 0.1, 4, 20
    weights = [1.0, 0.5]
    text_embeds = eng.encode_text(CURVE_PROMPTS)
    prompts = [Prompt(text_embeds[i:i + 1], w) for i, w in enumerate(weights)]
    opt = torch.optim.Adam([z], lr=lr)
    steps, losses, totals, margins = [], [], [], []
    for i in range(n_steps):
        crops = plan_crops(g, W, H, CUT, cutn, 1.0)
        steps.append({"crops": crops})
        margins.append(eng.vq_margin(z))
        opt.zero_grad()
        iii = eng.encode_image(make_cutouts(eng.synth(z), CUT, crops))
        ls = [p(iii) for p in prompts]
        total = sum(ls)
        total.backward()
        opt.step()
        with torch.no_grad():
            z.copy_(z.maximum(eng.z_min).minimum(eng.z_max))
        losses.append(torch.stack(ls).detach())
        totals.append(total.detach())
    losses = torch.stack(losses)
    totals = torch.stack(totals)
    print(f"curve: total {[round(v, 5) for v in totals.tolist()]}")
    print(f"curve: min vq margin over the run {min(margins):.3g}")
    save_st(OUT / "curve.safetensors", dict(losses=losses, total=totals, z_final=z.detach(),
                                            text_embeds=text_embeds))
    write_json(OUT / "curve.json", {
        "size": [W, H], "cut_size": CUT, "cutn": cutn, "lr": lr,
        "prompts": [{"text": t, "weight": w, "stop": "-inf"} for t, w in zip(CURVE_PROMPTS, weights)],
        "z_indices": z_indices.tolist(),
        "steps": steps,
        "stats": {"vq_margin_per_step": margins},
        "notes": "z = codebook[z_indices]; Adam(lr) on z; at step i: iii = clip image features of "
                 "normalise(make_cutouts(synth(z), steps[i].crops)) (no augmentation, no noise, no init loss); "
                 "losses[i, p] = Prompt(text_embeds[p], weight_p)(iii) before the update; total[i] = "
                 "losses[i,0] + losses[i,1]; then backward, Adam step, clamp z to the codebook's per-channel "
                 "min/max. z_final = z after 20 steps. vq_margin_per_step: smallest gap between nearest and "
                 "second-nearest code distance at the start of each step (small = fragile argmin).",
    })


SECTIONS = {"resample": make_resample, "augment": make_augment, "step": make_step, "curve": make_curve}


def main(argv) -> None:
    wanted = argv or list(SECTIONS)
    for s in wanted:
        if s not in SECTIONS:
            raise SystemExit(f"unknown section {s!r}; choose from {list(SECTIONS)}")
    check_clamp_and_replace_grad()
    for s in wanted:
        SECTIONS[s]()
    for p in OUT.glob("*"):
        p.chmod(0o644)


if __name__ == "__main__":
    main(sys.argv[1:])
