#!/usr/bin/env python3
"""PyTorch reference for `clipcanvas bench --drafts K`: one-step sampling, timed.

What it measures
----------------
The `sample` stage of `clipcanvas bench --drafts K` (src/cli/bench.rs `drafts`,
src/engine/draft.rs `draft_timed`: `OneStep::generate` for K candidates of one
condition): the committed shapes-world one-step model (models/shapes-world/onestep,
config.json + model.safetensors, f16 weights widened to float32) loaded into
onestep.py's plain-PyTorch `OneStep`, K candidates x the full grid (16x16 = 256
positions) drawn one position at a time with each layer's keys and values cached
(buffers allocated once per draw), under `torch.no_grad()`, float32, on the CPU.
Each position's codes are drawn by `pick_batch`: sample.rs's rule (temperature 1,
top-p 0.9, no top-k by default, as `Sampling::default()`) as batched torch ops,
from K uniform numbers of a seeded torch generator.

The condition is one seeded random unit vector repeated K times (the Rust bench
embeds a prompt with the shapes-world CLIP; the cost does not depend on the
condition but for the nucleus sizes, which `pick_batch` does not use: it sorts
every row in full). Decoding with the VQGAN and ranking with CLIP are not timed
here; the Rust bench prints them separately.

`--warmup` draws (default 1) run untimed, then `--iterations` (default 3) are timed
with `time.perf_counter()`; the report is each draw's seconds and their mean. Also
timed, as the Rust bench does: one teacher-forced pass over all K whole grids.

    /work/venv/bin/python tests/reference/bench_onestep_reference.py --candidates 8 --threads 2

A draw is ~40 000 small ops (256 positions x 6 layers), each a parallel region when
torch has several threads: on a machine whose cores are also busy (even at nice 19),
libgomp's default spin-then-sleep barriers stall and a draw with 2 threads took
6-57 s instead of ~1.4 s. `OMP_WAIT_POLICY=PASSIVE` (set before Python starts) or
`--threads 1` avoids it; the report line names the policy in effect.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from onestep import load, pick_batch  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=REPO / "models" / "shapes-world" / "onestep")
    ap.add_argument("--candidates", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    ap.add_argument("--iterations", type=int, default=3, help="timed draws")
    ap.add_argument("--warmup", type=int, default=1, help="untimed draws first")
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--top-p", type=float, default=0.9)
    ap.add_argument("--attn", default="eager", choices=["eager", "sdpa"],
                    help="cached attention as explicit matmul/softmax (eager) or F.scaled_dot_product_attention")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    model = load(args.model)
    cfg = model.cfg
    g = torch.Generator().manual_seed(args.seed)
    cond = torch.randn(1, cfg["clip_dim"], generator=g)
    cond = (cond / cond.norm(dim=-1, keepdim=True)).expand(args.candidates, -1).contiguous()
    sdpa = args.attn == "sdpa"

    def choose(logits, _i):
        u = torch.rand(logits.shape[0], generator=g, dtype=torch.float64)
        return pick_batch(logits, args.temperature, args.top_p, u.to(logits.dtype))

    times, passes = [], []
    with torch.no_grad():
        for i in range(args.warmup + args.iterations):
            t0 = time.perf_counter()
            grids, _ = model.generate(cond, choose, sdpa=sdpa, keep_logits=False)
            t = time.perf_counter() - t0
            t0 = time.perf_counter()
            model(cond, grids.flatten(1))
            full = time.perf_counter() - t0
            warm = i < args.warmup
            print(f"  draw {i + 1}: {t:.3f} s{' (warm-up)' if warm else ''}", file=sys.stderr)
            if not warm:
                times.append(t)
                passes.append(full)
    mean = sum(times) / len(times)
    h, w = cfg["grid"]
    print(f"pytorch one-step sampling, {args.candidates} candidates x {h}x{w} codes, {args.threads} threads, "
          f"attn {args.attn}, OMP_WAIT_POLICY {os.environ.get('OMP_WAIT_POLICY', 'unset')}, "
          f"torch {torch.__version__}: {mean:.3f} s; mean of {len(times)} "
          f"({', '.join(f'{t:.3f}' for t in times)})")
    print(f"one pass over all {args.candidates} whole grids: {sum(passes) / len(passes):.3f} s")
    if args.json:
        args.json.write_text(json.dumps({
            "implementation": "pytorch", "torch_version": torch.__version__, "threads": args.threads,
            "candidates": args.candidates, "grid": cfg["grid"], "attn": args.attn,
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
            "sample_s": times, "sample_mean_s": mean, "full_pass_s": passes,
        }, indent=1) + "\n")


if __name__ == "__main__":
    main()
