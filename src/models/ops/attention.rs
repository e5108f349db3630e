//! Multi-head scaled dot-product attention over packed projections as one candle custom
//! op on the CPU (CLIP's attention with frozen weights, the one-step transformer's
//! always): heads read in place, the probabilities kept for one backward pass.

use candle_core::{bail, CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor};

use super::storage::{dense, input_slice, with_cpu_slices, Saved};
use crate::models::kernels::{self, vmath, MatMut, MatRef};

/// Multi-head scaled dot-product attention over packed projections, as one op on the
/// CPU: `qkv` is `[B, T, 3D]` (queries, keys and values side by side, as one product of
/// the three projections makes them), the result `[B, T, D]`, each head's
/// `softmax(scale·Q·Kᵀ)·V` in its own `D/heads` columns; with `causal`, position `i`
/// attends to positions `≤ i` only. The heads are read in place through strides — no
/// transposes, no copies — and the probabilities are kept for the backward pass, which
/// gives the gradient of `qkv` in one pass. The composition of tensor ops it replaces
/// copies each head's queries, keys and values, makes five tensors for the softmax, and
/// on the way back adds a zero gradient into each of them.
pub fn attention(qkv: &Tensor, heads: usize, scale: f32, causal: bool) -> Result<Tensor> {
    if !qkv.device().is_cpu() || qkv.dtype() != DType::F32 {
        bail!("fused attention: needs a CPU f32 input")
    }
    let (_, _, d3) = qkv.dims3()?;
    if heads == 0 || d3 % (3 * heads) != 0 {
        bail!("fused attention: {d3} packed columns do not split into 3 × {heads} heads")
    }
    dense(qkv)?.apply_op1(AttentionOp { heads: Heads { heads, scale, causal }, saved: Saved::default() })
}

/// The attention math over packed projections on the CPU, shared with the fused layers.
#[derive(Debug, Clone, Copy)]
pub(super) struct Heads {
    pub heads: usize,
    pub scale: f32,
    pub causal: bool,
}

struct AttentionOp {
    heads: Heads,
    /// The attention probabilities `[B, heads, T, T]` from the forward pass.
    saved: Saved,
}

/// `softmax(scale·row)` of each row of the `t×t` scores in place, over the first `i + 1`
/// columns of row `i` when `causal` (the rest become 0).
fn softmax_rows(scores: &mut [f32], t: usize, scale: f32, causal: bool) {
    for (i, row) in scores.chunks_exact_mut(t).enumerate() {
        let (live, masked) = row.split_at_mut(if causal { i + 1 } else { t });
        let max = live.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v * scale));
        vmath::wide(
            #[inline(always)]
            || live.iter_mut().for_each(|v| *v = vmath::exp(*v * scale - max)),
        );
        let sum: f32 = live.iter().sum();
        vmath::wide(
            #[inline(always)]
            || live.iter_mut().for_each(|v| *v /= sum),
        );
        masked.fill(0.0);
    }
}

impl Heads {
    /// The probabilities and the output, for `qkv` of `dims` `(B, T, 3D)`.
    pub(super) fn forward(&self, qkv: &[f32], (b, t, d3): (usize, usize, usize)) -> Result<(Vec<f32>, Vec<f32>)> {
        use rayon::prelude::*;
        let (d, hd) = (d3 / 3, d3 / 3 / self.heads);
        let mut probs = vec![0.0f32; b * self.heads * t * t];
        let mut out = vec![0.0f32; b * t * d];
        // Element (i, j) of a head's view of `qkv`: row i's token, column j of the part.
        let view = |base: usize, part: usize, h: usize| MatRef {
            data: qkv,
            offset: base + part * d + h * hd,
            rows: t,
            cols: hd,
            rs: d3,
            cs: 1,
        };
        probs
            .par_chunks_mut((self.heads * t * t).max(1))
            .zip(out.par_chunks_mut((t * d).max(1)))
            .enumerate()
            .try_for_each(|(bi, (p, o))| {
                let base = bi * t * d3;
                for (h, ph) in p.chunks_exact_mut(t * t).enumerate() {
                    let mut scores = MatMut { data: ph, offset: 0, rows: t, cols: t, rs: t, cs: 1 };
                    kernels::matmul(&mut scores, view(base, 0, h), view(base, 1, h).t(), false)?;
                    softmax_rows(ph, t, self.scale, self.causal);
                    let p = MatRef { data: ph, offset: 0, rows: t, cols: t, rs: t, cs: 1 };
                    let mut dst = MatMut { data: o, offset: h * hd, rows: t, cols: hd, rs: d, cs: 1 };
                    kernels::matmul(&mut dst, p, view(base, 2, h), false)?;
                }
                Ok::<_, candle_core::Error>(())
            })?;
        Ok((probs, out))
    }

    /// The gradient of `qkv` from the output's, `dout` `[B, T, D]`.
    pub(super) fn backward(
        &self,
        qkv: &[f32],
        probs: &[f32],
        dout: &[f32],
        (b, t, d3): (usize, usize, usize),
    ) -> Result<Vec<f32>> {
        use rayon::prelude::*;
        let (d, hd) = (d3 / 3, d3 / 3 / self.heads);
        if probs.len() != b * self.heads * t * t || dout.len() != b * t * d {
            bail!("fused attention backward: the saved probabilities or the gradient do not fit [{b}, {t}, {d3}]")
        }
        let mut dqkv = vec![0.0f32; b * t * d3];
        let view = |data, base: usize, rs: usize, col: usize| MatRef {
            data,
            offset: base + col,
            rows: t,
            cols: hd,
            rs,
            cs: 1,
        };
        dqkv.par_chunks_mut((t * d3).max(1)).enumerate().try_for_each(|(bi, g)| {
            let base = bi * t * d3;
            let mut ds = vec![0.0f32; t * t];
            for h in 0..self.heads {
                let pv = &probs[(bi * self.heads + h) * t * t..][..t * t];
                let p = MatRef { data: pv, offset: 0, rows: t, cols: t, rs: t, cs: 1 };
                let dy = view(dout, bi * t * d, d, h * hd);
                let (q, k, v) =
                    (view(qkv, base, d3, h * hd), view(qkv, base, d3, d + h * hd), view(qkv, base, d3, 2 * d + h * hd));
                // dV = Pᵀ·dY, dP = dY·Vᵀ.
                let mut dv = MatMut { data: g, offset: 2 * d + h * hd, rows: t, cols: hd, rs: d3, cs: 1 };
                kernels::matmul(&mut dv, p.t(), dy, false)?;
                let mut dp = MatMut { data: &mut ds, offset: 0, rows: t, cols: t, rs: t, cs: 1 };
                kernels::matmul(&mut dp, dy, v.t(), false)?;
                // dS = scale·P⊙(dP − Σⱼ P⊙dP), row by row.
                for (prow, drow) in pv.chunks_exact(t).zip(ds.chunks_exact_mut(t)) {
                    let dot: f32 = prow.iter().zip(drow.iter()).map(|(a, b)| a * b).sum();
                    drow.iter_mut().zip(prow).for_each(|(x, &pp)| *x = self.scale * pp * (*x - dot));
                }
                let s = MatRef { data: &ds, offset: 0, rows: t, cols: t, rs: t, cs: 1 };
                // dQ = dS·K, dK = dSᵀ·Q.
                let mut dq = MatMut { data: g, offset: h * hd, rows: t, cols: hd, rs: d3, cs: 1 };
                kernels::matmul(&mut dq, s, k, false)?;
                let mut dk = MatMut { data: g, offset: d + h * hd, rows: t, cols: hd, rs: d3, cs: 1 };
                kernels::matmul(&mut dk, s.t(), q, false)?;
            }
            Ok::<_, candle_core::Error>(())
        })?;
        Ok(dqkv)
    }
}

impl CustomOp1 for AttentionOp {
    fn name(&self) -> &'static str {
        "fused-attention"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let qkv = input_slice(storage, layout)?;
        let dims = layout.shape().dims3()?;
        let (probs, out) = self.heads.forward(qkv, dims)?;
        self.saved.put(probs);
        Ok((CpuStorage::F32(out), Shape::from((dims.0, dims.1, dims.2 / 3))))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let dims = arg.dims3()?;
        let dqkv = with_cpu_slices(&[dense(arg)?, dense(grad)?], |t| {
            let probs = self.saved.take_or(|| Ok(self.heads.forward(t[0], dims)?.0))?;
            self.heads.backward(t[0], &probs, t[1], dims)
        })?;
        Ok(Some(Tensor::from_vec(dqkv, arg.shape(), arg.device())?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::ops::composed;
    use crate::models::testing::close;
    use candle_core::{Device, Var};

    /// Attention as tensor ops, the way transformers' CLIP writes it.
    fn attention_by_tensor_ops(qkv: &Tensor, heads: usize, scale: f64, causal: bool) -> Result<Tensor> {
        let (b, t, d3) = qkv.dims3()?;
        let d = d3 / 3;
        let split = |i: usize| -> Result<Tensor> {
            qkv.narrow(2, i * d, d)?.reshape((b, t, heads, d / heads))?.transpose(1, 2)?.contiguous()
        };
        let (q, k, v) = ((split(0)? * scale)?, split(1)?, split(2)?);
        let mut scores = q.matmul(&k.t()?.contiguous()?)?;
        if causal {
            let mask: Vec<f32> =
                (0..t).flat_map(|i| (0..t).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 })).collect();
            scores = scores.broadcast_add(&Tensor::from_vec(mask, (t, t), qkv.device())?)?;
        }
        let p = composed::softmax_last_dim(&scores)?;
        p.matmul(&v)?.transpose(1, 2)?.contiguous()?.reshape((b, t, d))
    }

    #[test]
    fn fused_attention_matches_tensor_ops_forward_and_gradient() -> Result<()> {
        let dev = Device::Cpu;
        // Odd sizes: 7 tokens, 3 heads of 5 columns; and CLIP's own, 50 tokens of 12×64.
        for (b, t, heads, hd) in [(2, 7, 3, 5), (3, 50, 12, 64)] {
            let d3 = 3 * heads * hd;
            let qkv = Var::from_tensor(&Tensor::randn(0f32, 1.0, (b, t, d3), &dev)?)?;
            let upstream = Tensor::randn(0f32, 1.0, (b, t, heads * hd), &dev)?;
            #[expect(clippy::cast_precision_loss, reason = "small test sizes")]
            let scale = (hd as f64).powf(-0.5);
            for causal in [false, true] {
                #[expect(clippy::cast_possible_truncation, reason = "the op takes an f32 scale")]
                let ours = attention(qkv.as_tensor(), heads, scale as f32, causal)?;
                let theirs = attention_by_tensor_ops(qkv.as_tensor(), heads, scale, causal)?;
                close(&ours, &theirs, 1e-5)?;
                let g_ours = (ours * &upstream)?.sum_all()?.backward()?;
                let g_theirs = (theirs * &upstream)?.sum_all()?.backward()?;
                let (Some(a), Some(e)) = (g_ours.get(&qkv), g_theirs.get(&qkv)) else { bail!("no gradient for qkv") };
                close(a, e, 1e-5)?;
            }
        }
        Ok(())
    }

    #[test]
    fn fused_attention_refuses_what_does_not_split_into_heads() -> Result<()> {
        let qkv = Tensor::zeros((1, 4, 30), DType::F32, &Device::Cpu)?;
        assert!(attention(&qkv, 4, 1.0, false).is_err());
        assert!(attention(&qkv, 0, 1.0, false).is_err());
        assert!(attention(&qkv.reshape((4, 30))?, 2, 1.0, false).is_err());
        Ok(())
    }
}
