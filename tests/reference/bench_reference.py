#!/usr/bin/env python3
"""PyTorch reference for `clipcanvas bench`: one z+quantize iteration, timed per stage.

What it measures
----------------
The optimisation iteration that `clipcanvas bench` times (src/engine/bench.rs, one
`Session::step` = `next_plan` + `step_with` in src/engine/session.rs), run in
PyTorch on full-size architectures with random weights (nothing is downloaded):

* CLIP ViT-B/32 (transformers `CLIPModel`, the openai/clip-vit-base-patch32 config:
  vision 768 wide, 12 layers, 12 heads, MLP 3072, 224 px, patch 32; text 512 wide,
  12 layers, 8 heads, MLP 2048, 77 tokens; projection 512; quick_gelu);
* the taming VQGAN imagenet f16-16384 (taming's `Encoder`, `Decoder`,
  `VectorQuantizer2`, `quant_conv`, `post_quant_conv`, i.e. a `VQModel` without
  Lightning and its loss; ddconfig ch 128, ch_mult [1,1,2,2,4], 2 res blocks,
  attention at 16, z_channels = embed_dim = 256, n_embed 16384).

Both are float32, eval mode, every parameter `requires_grad_(False)`. Weights are
drawn with the same rule as clipcanvas's `RandomWeights` (src/models/random.rs,
PyTorch's default scales): conv/linear weights U(+-1/sqrt(fan_in)), biases 0, 1-D
weights (norms) 1, embeddings U(+-0.02*sqrt(3)), the codebook U(+-1/16384),
`logit_scale` ln(1/0.07). The values differ from clipcanvas's (another generator);
the shapes and magnitudes are the same.

Per canvas size (RunSettings::default otherwise: one text prompt with weight 1,
cutn 32, cut_pow 1, notebook cutouts, augments flip/affine/perspective/jitter/noise,
noise_fac 0.1, Adam lr 0.1, no init / tv loss), at setup (not timed): the prompt
"a watercolour painting of a lighthouse at dawn" is embedded once, and the latent z
[1, 256, size/16, size/16] starts as random codebook rows (a leaf with
requires_grad, optimised by Adam). Each iteration then runs, timed stage by stage
with `time.perf_counter()` (and `torch.cuda.synchronize()` at every boundary on
CUDA, as clipcanvas's profiling `StageClock` synchronises its device):

0. (before the stage clock, inside the iteration total, as `Session::next_plan`)
   the step's random plan: 32 crops by the notebook's rule and each cutout's
   augmentation parameters with clipcanvas's probabilities and ranges
   (src/engine/augment.rs `random_params`);
1. decode: the notebook's `vector_quantize` (nearest code, straight-through
   gradient), `post_quant_conv` + decoder, `ClampWithGrad((x + 1) / 2, 0, 1)`;
2. cutouts: the notebook's `MakeCutouts` (square crops resampled to 224 with the
   Lanczos-2 prefilter and bicubic, align_corners=True), then per-cutout flip,
   affine, perspective (bilinear, border, align_corners=False grid sampling on grids
   computed in float64) and colour jitter, each applied batched to the cutouts that
   drew it, then the notebook's noise (facs ~ U(0, 0.1) per cutout,
   batch + facs * randn_like(batch)) and CLIP's normalisation;
3. clip: `get_image_features`;
4. loss: the notebook's `Prompt` loss (spherical distance, weight 1, no stop),
   summed, read back with `.item()`;
5. backward: `loss.backward()`;
6. optimiser: `opt.step()`, `opt.zero_grad()`, and z clamped to the codebook's
   per-channel min/max under `torch.no_grad()`.

The notebook functions (resample, ReplaceGrad, ClampWithGrad, vector_quantize,
make_cutouts, plan_crops) and the augmentation geometry (pixel_centres,
affine_inverse, perspective_h, YIQ, hue_matrix, gray) come from notebook.py, shared
with make_engine_fixtures.py, whose outputs clipcanvas's engine tests reproduce.

`--warmup` iterations (default 1) run untimed, then `--iterations` (default 3) are
timed; the report gives the mean of each stage, the mean and the fastest
iteration (wall time of the whole iteration, plan included), and the peak resident
memory while that size ran (`VmHWM`, reset by writing 5 to /proc/self/clear_refs
before the size's setup, exactly as clipcanvas does), plus `peak_gpu_bytes`
(`torch.cuda.max_memory_allocated`) on CUDA.

The JSON has the schema of clipcanvas's `BenchReport` (implementation "pytorch");
fields it does not have (`torch_version`, `attn_implementation`, `tf32`, `seed`,
`peak_gpu_bytes`) are extra and ignored by serde.

    /work/venv/bin/python tests/reference/bench_reference.py --sizes 256,512 \
        --iterations 3 --warmup 1 --json bench-pytorch.json [--device cuda] [--threads N]

No GPU is needed (the default device is cpu).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
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
    vector_quantize,
)

PROMPT = "a watercolour painting of a lighthouse at dawn"
ARCH = "CLIP ViT-B/32 + VQGAN imagenet f16-16384 (random weights)"
STAGES = ["decode", "cutouts", "clip", "loss", "backward", "optimiser"]

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]

# taming's configs/imagenet_f16_16384 (vqgan_imagenet_f16_16384.yaml)
DDCONFIG = dict(double_z=False, z_channels=256, resolution=256, in_channels=3, out_ch=3, ch=128,
                ch_mult=[1, 1, 2, 2, 4], num_res_blocks=2, attn_resolutions=[16], dropout=0.0)
EMBED_DIM = 256
N_EMBED = 16384

# RunSettings::default (src/settings.rs)
LR = 0.1
CUT_POW = 1.0
NOISE_FAC = 0.1


# ---------------------------------------------------------------------------
# notebook functions (verbatim from make_engine_fixtures.py)
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


# ---------------------------------------------------------------------------
# augmentation geometry (verbatim from make_engine_fixtures.py)
# ---------------------------------------------------------------------------


# ---------------------------------------------------------------------------
# augmentations, batched over the cutouts that have each one (as augment::apply);
# per cutout the same maths as make_engine_fixtures.augment_one
# ---------------------------------------------------------------------------

def random_params(rng: np.random.Generator) -> dict:
    """clipcanvas's `augment::random_params` for the default augmentations (flip,
    affine, perspective, jitter): for each in that order, the apply/skip coin, then
    its parameters (EleutherAI/vqgan-clip's kornia pipeline)."""
    p = {"flip": False, "affine": None, "perspective": None, "jitter": None}
    p["flip"] = bool(rng.random() < 0.5)
    if rng.random() < 0.8:
        p["affine"] = {"angle_deg": rng.uniform(-30.0, 30.0), "translate_x": rng.uniform(-0.1, 0.1),
                       "translate_y": rng.uniform(-0.1, 0.1), "scale": 1.0, "shear_deg": 0.0}
    if rng.random() < 0.4:
        p["perspective"] = [[rng.uniform(-0.1, 0.1), rng.uniform(-0.1, 0.1)] for _ in range(4)]
    if rng.random() < 0.7:
        p["jitter"] = {k: rng.uniform(-0.01, 0.01) for k in ("brightness", "contrast", "saturation", "hue")}
    return p


def on_subset(x: torch.Tensor, ids: list, f) -> torch.Tensor:
    """Applies f to the cutouts ids of x and puts them back; the others pass through."""
    if not ids:
        return x
    if len(ids) == x.shape[0]:
        return f(x)
    idx = torch.tensor(ids, device=x.device)
    return x.index_copy(0, idx, f(x.index_select(0, idx)))


def warp(x: torch.Tensor, fns: list) -> torch.Tensor:
    """Cutout i's output pixel at normalised u samples x[i] at fns[i](u) (float64 maths,
    grid rounded to float32), bilinear / border / align_corners=False."""
    S_h, S_w = x.shape[-2:]
    ux = pixel_centres(S_w)[None, :].repeat(S_h, 0)
    uy = pixel_centres(S_h)[:, None].repeat(S_w, 1)
    grids = np.stack([np.stack(fn(ux, uy), -1) for fn in fns])
    grid = torch.from_numpy(grids).to(torch.float32).to(x.device)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def affine_fn(p: dict):
    Ainv, t = affine_inverse(p)

    def fn(ux, uy):
        vx, vy = ux - t[0], uy - t[1]
        return Ainv[0, 0] * vx + Ainv[0, 1] * vy, Ainv[1, 0] * vx + Ainv[1, 1] * vy
    return fn


def perspective_fn(d):
    Hm = perspective_h(d)

    def fn(ux, uy):
        X = Hm[0, 0] * ux + Hm[0, 1] * uy + Hm[0, 2]
        Y = Hm[1, 0] * ux + Hm[1, 1] * uy + Hm[1, 2]
        Wh = Hm[2, 0] * ux + Hm[2, 1] * uy + Hm[2, 2]
        return X / Wh, Y / Wh
    return fn


def jitter(x: torch.Tensor, js: list) -> torch.Tensor:
    def col(key):
        return torch.tensor([1 + j[key] for j in js], dtype=x.dtype, device=x.device).view(-1, 1, 1, 1)
    x = x * col("brightness")
    m = gray(x).mean(dim=(1, 2, 3), keepdim=True)
    x = (x - m) * col("contrast") + m
    g = gray(x)
    x = g + (x - g) * col("saturation")
    Mh = torch.from_numpy(np.stack([hue_matrix(j["hue"]) for j in js])).to(x.dtype).to(x.device)
    x = torch.einsum("moc,mchw->mohw", Mh, x)
    return x.clamp(0, 1)


def augment(batch: torch.Tensor, params: list) -> torch.Tensor:
    """Order flip, affine, perspective, jitter, each a separate pass."""
    def which(key):
        return [i for i, p in enumerate(params) if p[key]]
    x = batch
    x = on_subset(x, which("flip"), lambda s: s.flip(-1))  # == the flip grid, exactly
    ids = which("affine")
    x = on_subset(x, ids, lambda s: warp(s, [affine_fn(params[i]["affine"]) for i in ids]))
    ids_p = which("perspective")
    x = on_subset(x, ids_p, lambda s: warp(s, [perspective_fn(params[i]["perspective"]) for i in ids_p]))
    ids_j = which("jitter")
    x = on_subset(x, ids_j, lambda s: jitter(s, [params[i]["jitter"] for i in ids_j]))
    return x


# ---------------------------------------------------------------------------
# models
# ---------------------------------------------------------------------------

class VQGAN(torch.nn.Module):
    """taming's VQModel without Lightning and its loss: the same submodules and
    state-dict names (encoder, decoder, quantize, quant_conv, post_quant_conv)."""

    def __init__(self, ddconfig: dict, n_embed: int, embed_dim: int):
        super().__init__()
        from taming.modules.diffusionmodules.model import Decoder, Encoder
        from taming.modules.vqvae.quantize import VectorQuantizer2
        self.encoder = Encoder(**ddconfig)
        self.decoder = Decoder(**ddconfig)
        self.quantize = VectorQuantizer2(n_embed, embed_dim, beta=0.25)
        self.quant_conv = torch.nn.Conv2d(ddconfig["z_channels"], embed_dim, 1)
        self.post_quant_conv = torch.nn.Conv2d(embed_dim, ddconfig["z_channels"], 1)

    def decode(self, quant):  # VQModel.decode
        return self.decoder(self.post_quant_conv(quant))


def init_like_clipcanvas(model: torch.nn.Module, g: torch.Generator) -> None:
    """src/models/random.rs's rule, by parameter name (first match wins)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if name.endswith("logit_scale"):
                p.fill_(math.log(1 / 0.07))
                continue
            if "quantize.embedding" in name or "quantize.embed." in name:
                bound = 1.0 / max(p.shape[0], 1)
            elif "embedding" in name:
                bound = 0.02 * math.sqrt(3)
            elif leaf == "bias":
                p.zero_()
                continue
            elif p.dim() == 1:
                p.fill_(1.0)
                continue
            else:
                bound = 1.0 / math.sqrt(max(math.prod(p.shape[1:]), 1))
            p.uniform_(-bound, bound, generator=g)


def freeze(m: torch.nn.Module) -> torch.nn.Module:
    m = m.float().eval()
    for q in m.parameters():
        q.requires_grad_(False)
    return m


def build_models(device: torch.device, seed: int, attn: str):
    from transformers import CLIPConfig, CLIPModel
    # openai/clip-vit-base-patch32 (text eos_token_id 2: the legacy argmax pooling)
    conf = CLIPConfig(
        text_config=dict(vocab_size=49408, hidden_size=512, intermediate_size=2048, num_hidden_layers=12,
                         num_attention_heads=8, max_position_embeddings=77, hidden_act="quick_gelu",
                         layer_norm_eps=1e-5, bos_token_id=0, eos_token_id=2, pad_token_id=1,
                         projection_dim=512),
        vision_config=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                           num_attention_heads=12, image_size=224, patch_size=32, num_channels=3,
                           hidden_act="quick_gelu", layer_norm_eps=1e-5, projection_dim=512),
        projection_dim=512, logit_scale_init_value=2.6592)
    conf._attn_implementation = attn
    g = torch.Generator().manual_seed(seed)
    clip = CLIPModel(conf)
    init_like_clipcanvas(clip, g)
    with contextlib.redirect_stdout(sys.stderr):  # taming's Decoder prints the z shape
        vqgan = VQGAN(DDCONFIG, N_EMBED, EMBED_DIM)
    init_like_clipcanvas(vqgan, g)
    return freeze(clip).to(device), freeze(vqgan).to(device)


# ---------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------

# The most GPU memory in use (total - free, as the driver reports it) seen at a stage
# boundary: the same sampling as clipcanvas's profile::device_peak, for a like-for-like
# figure beside torch.cuda.max_memory_allocated.
DEVICE_PEAK = [0]


class StageClock:
    """Times consecutive stages, synchronising the device at each boundary."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.sync = torch.cuda.synchronize if self.cuda else (lambda: None)
        self.sync()
        self.last = time.perf_counter()

    def lap(self) -> float:
        self.sync()
        now = time.perf_counter()
        if self.cuda:
            free, total = torch.cuda.mem_get_info()
            DEVICE_PEAK[0] = max(DEVICE_PEAK[0], total - free)
        d, self.last = now - self.last, now
        return d


class Run:
    """One canvas size: the state Session::new sets up (not timed)."""

    def __init__(self, clip, vqgan, size: int, cutn: int, seed: int, device: torch.device,
                 half: torch.dtype | None = None):
        import open_clip
        self.clip, self.vqgan, self.size, self.cutn, self.device = clip, vqgan, size, cutn, device
        # --precision f16/bf16: the networks under autocast, the rest in float32, as
        # clipcanvas's --precision runs them.
        self.autocast = (lambda: torch.autocast(device.type, dtype=half)) if half else contextlib.nullcontext
        self.cut_size = clip.config.vision_config.image_size
        torch.manual_seed(seed)  # randn_like / uniform_ of the noise
        self.g = torch.Generator().manual_seed(seed)  # crops, initial codes
        self.rng = np.random.default_rng(seed)  # augmentation parameters
        with torch.no_grad():
            ids = open_clip.tokenize([PROMPT]).to(device)
            embed = _feat(clip.get_text_features(input_ids=ids)).float()
        self.prompt = Prompt(embed, 1.0, float("-inf")).to(device)
        self.codebook = vqgan.quantize.embedding.weight.detach()
        self.z_min = self.codebook.min(dim=0).values[None, :, None, None]
        self.z_max = self.codebook.max(dim=0).values[None, :, None, None]
        self.mean = torch.tensor(CLIP_MEAN, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(CLIP_STD, device=device).view(1, 3, 1, 1)
        t = size // 16
        idx = torch.randint(0, self.codebook.shape[0], (t * t,), generator=self.g).to(device)
        z = self.codebook[idx].reshape(1, t, t, -1).permute(0, 3, 1, 2).contiguous()
        self.z = z.requires_grad_(True)
        self.opt = torch.optim.Adam([self.z], lr=LR)

    def plan(self):
        crops = plan_crops(self.g, self.size, self.size, self.cut_size, self.cutn, CUT_POW)
        augments = [random_params(self.rng) for _ in range(self.cutn)]
        return crops, augments

    def step(self) -> tuple[dict, float]:
        crops, augments = self.plan()
        clock = StageClock(self.device)
        t = {}
        z_q = vector_quantize(self.z.movedim(1, 3), self.codebook).movedim(3, 1)
        with self.autocast():
            decoded = self.vqgan.decode(z_q)
        image = clamp_with_grad(decoded.float().add(1).div(2), 0, 1)
        t["decode"] = clock.lap()
        batch = augment(make_cutouts(image, self.cut_size, crops), augments)
        facs = batch.new_empty([self.cutn, 1, 1, 1]).uniform_(0, NOISE_FAC)
        batch = batch + facs * torch.randn_like(batch)
        batch = (batch - self.mean) / self.std
        t["cutouts"] = clock.lap()
        with self.autocast():
            embeds = _feat(self.clip.get_image_features(pixel_values=batch)).float()
        t["clip"] = clock.lap()
        loss = sum([self.prompt(embeds)])
        value = loss.item()
        t["loss"] = clock.lap()
        loss.backward()
        t["backward"] = clock.lap()
        self.opt.step()
        self.opt.zero_grad()
        with torch.no_grad():
            self.z.copy_(self.z.maximum(self.z_min).minimum(self.z_max))
        t["optimiser"] = clock.lap()
        if not math.isfinite(value):
            raise SystemExit(f"loss is not finite ({value})")
        return t, value


def reset_peak_rss() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_rss() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = "unknown model"
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
        except OSError:
            pass
    return f"{device.type} ({name}), torch {torch.__version__}"


def set_tf32(on: bool) -> None:
    torch.backends.cuda.matmul.allow_tf32 = on
    torch.backends.cudnn.allow_tf32 = on


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="256,512", help="square canvas sides, comma-separated (multiples of 16)")
    ap.add_argument("--cutn", type=int, default=32)
    ap.add_argument("--iterations", type=int, default=3, help="timed iterations per size")
    ap.add_argument("--warmup", type=int, default=1, help="untimed iterations first")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    ap.add_argument("--json", type=Path, default=None, help="write the report here")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--attn", default="sdpa", choices=["sdpa", "eager"],
                    help="CLIP attention implementation in transformers (default sdpa, transformers' default)")
    ap.add_argument("--tf32", action="store_true", help="allow TF32 matmuls/convs on CUDA (default: off, true fp32)")
    ap.add_argument("--precision", default="f32", choices=["f32", "f16", "bf16"],
                    help="run CLIP and the VQGAN under autocast in this format (default f32: no autocast)")
    args = ap.parse_args(argv)

    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    if args.iterations < 1:
        raise SystemExit("bench needs at least one timed iteration")
    if not sizes:
        raise SystemExit("bench needs at least one size")
    for s in sizes:
        if s < 16 or s % 16:
            raise SystemExit(f"size {s} is not a multiple of the VQGAN's factor 16")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    half = {"f32": None, "f16": torch.float16, "bf16": torch.bfloat16}[args.precision]
    baseline = 0
    if device.type == "cuda":
        set_tf32(args.tf32)
        torch.cuda.init()
        free, total = torch.cuda.mem_get_info()
        baseline = total - free

    def progress(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    clip, vqgan = build_models(device, args.seed, args.attn)
    progress(f"models built in {time.perf_counter() - t0:.1f} s on {describe_device(device)}, "
             f"{torch.get_num_threads()} threads, attention {clip.config._attn_implementation}")

    results = []
    for size in sizes:
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
            DEVICE_PEAK[0] = 0
        reset_peak_rss()
        run = Run(clip, vqgan, size, args.cutn, args.seed, device, half)
        sums = dict.fromkeys(STAGES, 0.0)
        total, best = 0.0, math.inf
        for i in range(args.warmup + args.iterations):
            start = time.perf_counter()
            stages, loss = run.step()
            secs = time.perf_counter() - start
            timed = i >= args.warmup
            if timed:
                for k in STAGES:
                    sums[k] += stages[k]
                total += secs
                best = min(best, secs)
            n, of = (i - args.warmup + 1, args.iterations) if timed else (i + 1, args.warmup)
            progress(f"{size}x{size} {'iteration' if timed else 'warm-up'} {n}/{of}: {secs:.2f} s "
                     f"(loss {loss:.4f}; " + ", ".join(f"{k} {stages[k]:.2f}" for k in STAGES) + ")")
        res = {
            "size": size,
            "seconds_per_iteration": total / args.iterations,
            "min_seconds": best,
            "stages": [[k, sums[k] / args.iterations] for k in STAGES],
            "peak_rss_bytes": peak_rss(),
        }
        if device.type == "cuda":
            res["peak_gpu_bytes"] = torch.cuda.max_memory_allocated(device)
            res["peak_gpu_reserved_bytes"] = torch.cuda.max_memory_reserved(device)
            # As clipcanvas's peak_device_bytes: in use at stage boundaries, less the
            # figure before the models were built.
            res["peak_device_bytes"] = max(0, DEVICE_PEAK[0] - baseline)
        results.append(res)
        del run

    report = {
        "implementation": "pytorch",
        "arch": ARCH,
        "device": describe_device(device),
        "precision": args.precision,
        "threads": torch.get_num_threads(),
        "cutn": args.cutn,
        "iterations": args.iterations,
        "warmup": args.warmup,
        "results": results,
        "torch_version": torch.__version__,
        "attn_implementation": clip.config._attn_implementation,
        "tf32": bool(args.tf32) if device.type == "cuda" else False,
        "seed": args.seed,
    }

    print(f"{report['implementation']} | {report['arch']} | {report['device']} | {report['threads']} threads | "
          f"cutn {args.cutn}, {args.iterations} iterations after {args.warmup} warm-up")
    head = f"{'size':>6} {'s/it':>7} {'min':>7} " + " ".join(f"{k:>9}" for k in STAGES) + f" {'peak RSS':>10}"
    if device.type == "cuda":
        head += f" {'peak GPU':>10}"
    print(head)
    for r in results:
        rss = r["peak_rss_bytes"]
        line = (f"{r['size']:>6} {r['seconds_per_iteration']:>7.3f} {r['min_seconds']:>7.3f} "
                + " ".join(f"{v:>9.3f}" for _, v in r["stages"])
                + f" {(f'{rss / 2**20:.0f} MiB' if rss is not None else '-'):>10}")
        if "peak_gpu_bytes" in r:
            line += f" {r['peak_gpu_bytes'] / 2**20:>6.0f} MiB"
        print(line)

    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        progress(f"wrote {args.json}")


if __name__ == "__main__":
    main()
