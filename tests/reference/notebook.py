"""The original notebook's pieces that both reference scripts use, unchanged: the
Lanczos/bicubic `resample`, `ReplaceGrad` and `ClampWithGrad`, `vector_quantize`, the
MakeCutouts crops (`plan_crops`, `make_cutouts`), and the geometry and colour helpers of
the augmentations. No side effects on import (make_engine_fixtures.py sets torch's
threads and determinism itself).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

def _feat(x):
    """get_*_features returns a tensor (transformers 4.x) or a model output (5.x)."""
    return x if isinstance(x, torch.Tensor) else x.pooler_output

def sinc(x):
    return torch.where(x != 0, torch.sin(math.pi * x) / (math.pi * x), x.new_ones([]))

def lanczos(x, a):
    cond = torch.logical_and(-a < x, x < a)
    out = torch.where(cond, sinc(x) * sinc(x / a), x.new_zeros([]))
    return out / out.sum()

def ramp(ratio, width):
    n = math.ceil(width / ratio + 1)
    out = torch.empty([n])
    cur = 0
    for i in range(out.shape[0]):
        out[i] = cur
        cur += ratio
    return torch.cat([-out[1:].flip([0]), out])[1:-1]

def resample(input, size, align_corners=True):
    n, c, h, w = input.shape
    dh, dw = size

    input = input.reshape([n * c, 1, h, w])  # notebook: .view (reshape: cutouts are non-contiguous slices)

    if dh < h:
        kernel_h = lanczos(ramp(dh / h, 2), 2).to(input.device, input.dtype)
        pad_h = (kernel_h.shape[0] - 1) // 2
        input = F.pad(input, (0, 0, pad_h, pad_h), 'reflect')
        input = F.conv2d(input, kernel_h[None, None, :, None])

    if dw < w:
        kernel_w = lanczos(ramp(dw / w, 2), 2).to(input.device, input.dtype)
        pad_w = (kernel_w.shape[0] - 1) // 2
        input = F.pad(input, (pad_w, pad_w, 0, 0), 'reflect')
        input = F.conv2d(input, kernel_w[None, None, None, :])

    input = input.view([n, c, h, w])
    return F.interpolate(input, size, mode='bicubic', align_corners=align_corners)

class ReplaceGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x_forward, x_backward):
        ctx.shape = x_backward.shape
        return x_forward

    @staticmethod
    def backward(ctx, grad_in):
        return None, grad_in.sum_to_size(ctx.shape)

replace_grad = ReplaceGrad.apply

class ClampWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input, min, max):
        ctx.min = min
        ctx.max = max
        ctx.save_for_backward(input)
        return input.clamp(min, max)

    @staticmethod
    def backward(ctx, grad_in):
        input, = ctx.saved_tensors
        return grad_in * (grad_in * (input - input.clamp(ctx.min, ctx.max)) >= 0), None, None

clamp_with_grad = ClampWithGrad.apply

def vector_quantize(x, codebook):
    d = x.pow(2).sum(dim=-1, keepdim=True) + codebook.pow(2).sum(dim=1) - 2 * x @ codebook.T
    indices = d.argmin(-1)
    x_q = F.one_hot(indices, codebook.shape[0]).to(d.dtype) @ codebook
    return replace_grad(x_q, x)

def make_cutouts(input, cut_size, crops):
    """MakeCutouts with a given plan: crops = [{"size","x","y"}]."""
    cutouts = []
    for c in crops:
        s, ox, oy = c["size"], c["x"], c["y"]
        cutout = input[:, :, oy:oy + s, ox:ox + s]
        cutouts.append(resample(cutout, (cut_size, cut_size)))
    return torch.cat(cutouts, dim=0)

def plan_crops(g: torch.Generator, W: int, H: int, cut_size: int, cutn: int, cut_pow: float):
    """The notebook's crop rule with a seeded torch generator:
    size = int(u**cut_pow * (max_size - min_size) + min_size), u = torch.rand([]);
    offset_x = torch.randint(0, W - size + 1, ()); offset_y = torch.randint(0, H - size + 1, ())."""
    max_size = min(W, H)
    min_size = min(W, H, cut_size)
    out = []
    for _ in range(cutn):
        size = int(torch.rand([], generator=g).item() ** cut_pow * (max_size - min_size) + min_size)
        ox = int(torch.randint(0, W - size + 1, (), generator=g))
        oy = int(torch.randint(0, H - size + 1, (), generator=g))
        out.append({"size": size, "x": ox, "y": oy})
    return out

def pixel_centres(S: int) -> np.ndarray:
    return (2 * np.arange(S, dtype=np.float64) + 1) / S - 1

def affine_inverse(p: dict) -> tuple[np.ndarray, np.ndarray]:
    a = math.radians(p["angle_deg"])
    sh = math.radians(p["shear_deg"])
    R = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    Sh = np.array([[1.0, math.tan(sh)], [0.0, 1.0]])
    A = p["scale"] * R @ Sh
    t = np.array([2 * p["translate_x"], 2 * p["translate_y"]])
    return np.linalg.inv(A), t

def perspective_h(d) -> np.ndarray:
    """Homography (h33 = 1) mapping the destination corners c_k + 2 d_k to the
    source corners c_k, by the 8x8 DLT system in float64."""
    src = np.array([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])
    dst = src + 2 * np.array(d, dtype=np.float64)
    M = np.zeros((8, 8))
    b = np.zeros(8)
    for k in range(4):
        x, y = dst[k]
        xp, yp = src[k]
        M[2 * k] = [x, y, 1, 0, 0, 0, -x * xp, -y * xp]
        M[2 * k + 1] = [0, 0, 0, x, y, 1, -x * yp, -y * yp]
        b[2 * k], b[2 * k + 1] = xp, yp
    h = np.linalg.solve(M, b)
    return np.append(h, 1.0).reshape(3, 3)

YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


def hue_matrix(h: float) -> np.ndarray:
    """RGB -> RGB: inv(T) @ rot(2*pi*h on (I, Q)) @ T, in float64."""
    th = 2 * math.pi * h
    rot = np.array([[1.0, 0.0, 0.0],
                    [0.0, math.cos(th), -math.sin(th)],
                    [0.0, math.sin(th), math.cos(th)]])
    return np.linalg.inv(YIQ) @ rot @ YIQ

def gray(x: torch.Tensor) -> torch.Tensor:
    return 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]
