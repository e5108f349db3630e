//! Frozen group normalisation, optionally followed by SiLU, as a candle custom op: one
//! pass forward and one back (the input's gradient only) on the CPU, candle's tensor ops
//! on a GPU.

use candle_core::{bail, CpuStorage, CustomOp1, Layout, Result, Shape, Tensor, D};

use super::storage::{dense, gpu_forwards, input_slice, with_cpu_slice};
use crate::models::kernels::{self, GroupSpec};

/// `torch.nn.GroupNorm(groups, C, eps)` with frozen `weight`/`bias` over `[B, C, H, W]`,
/// followed by `SiLU` when `silu` — the VQGAN's `nonlinearity(norm(h))` in one pass, and
/// one pass back.
pub fn group_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, groups: usize, eps: f64, silu: bool) -> Result<Tensor> {
    let c = x.dim(1)?;
    if groups == 0 || c % groups != 0 || weight.dims1()? != c || bias.dims1()? != c {
        bail!("group norm: {c} channels, {groups} groups, weight {:?}", weight.dims())
    }
    let op = GroupNormOp { weight: weight.clone(), bias: bias.clone(), groups, eps, silu };
    dense(x)?.apply_op1(op)
}

#[derive(Clone)]
struct GroupNormOp {
    weight: Tensor,
    bias: Tensor,
    groups: usize,
    eps: f64,
    silu: bool,
}

impl GroupNormOp {
    fn spec(&self, dims: &[usize]) -> Result<GroupSpec> {
        GroupSpec::new(dims, self.groups, self.eps, self.silu)
    }

    #[cfg_attr(not(any(feature = "cuda", feature = "metal", test)), expect(dead_code, reason = "the GPU forward"))]
    fn forward_tensor(&self, x: &Tensor) -> Result<Tensor> {
        let (xhat, _) = self.normalised(x)?;
        let (_, c, _, _) = x.dims4()?;
        let n = xhat
            .broadcast_mul(&self.weight.reshape((1, c, 1, 1))?)?
            .broadcast_add(&self.bias.reshape((1, c, 1, 1))?)?;
        if self.silu {
            n.silu()
        } else {
            Ok(n)
        }
    }

    /// x̂ and 1/σ per group (`[B, G, 1]`), as tensors.
    fn normalised(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let (b, c, h, w) = x.dims4()?;
        let g = x.reshape((b, self.groups, (c / self.groups) * h * w))?;
        let mean = g.mean_keepdim(D::Minus1)?;
        let centred = g.broadcast_sub(&mean)?;
        let rstd = (centred.sqr()?.mean_keepdim(D::Minus1)? + self.eps)?.sqrt()?.recip()?;
        Ok((centred.broadcast_mul(&rstd)?.reshape((b, c, h, w))?, rstd))
    }

    /// The input gradient with tensor ops (any device).
    fn backward_tensor(&self, x: &Tensor, dy: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let (xhat, rstd) = self.normalised(x)?;
        let gamma = self.weight.reshape((1, c, 1, 1))?;
        let dn = if self.silu {
            let n = xhat.broadcast_mul(&gamma)?.broadcast_add(&self.bias.reshape((1, c, 1, 1))?)?;
            let s = candle_nn::ops::sigmoid(&n)?;
            let ds = ((n * (1.0 - &s)?)? + 1.0)?.mul(&s)?;
            (dy * ds)?
        } else {
            dy.clone()
        };
        let shape = (b, self.groups, (c / self.groups) * h * w);
        let dxhat = dn.broadcast_mul(&gamma)?.reshape(shape)?;
        let xhat = xhat.reshape(shape)?;
        let s1 = dxhat.mean_keepdim(D::Minus1)?;
        let s2 = (&dxhat * &xhat)?.mean_keepdim(D::Minus1)?;
        let dx = dxhat.broadcast_sub(&s1)?.sub(&xhat.broadcast_mul(&s2)?)?.broadcast_mul(&rstd)?;
        dx.reshape((b, c, h, w))
    }
}

impl CustomOp1 for GroupNormOp {
    fn name(&self) -> &'static str {
        "frozen-group-norm"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = input_slice(storage, layout)?;
        let spec = self.spec(layout.dims())?;
        let y = with_cpu_slice(&dense(&self.weight)?, |gamma| {
            with_cpu_slice(&dense(&self.bias)?, |beta| kernels::group_norm(x, gamma, beta, spec))
        })?;
        Ok((CpuStorage::F32(y), layout.shape().clone()))
    }

    gpu_forwards!();

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        if arg.device().is_cpu() {
            Ok(Some(dense(arg)?.apply_op2_no_bwd(&dense(grad)?, &GroupNormBackward(self.clone()))?))
        } else {
            Ok(Some(self.backward_tensor(arg, grad)?))
        }
    }
}

/// The CPU kernel of [`GroupNormOp`]'s input gradient: `(x, dy) → dx`.
struct GroupNormBackward(GroupNormOp);

impl candle_core::CustomOp2 for GroupNormBackward {
    fn name(&self) -> &'static str {
        "frozen-group-norm-backward"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let op = &self.0;
        let (x, dy) = (input_slice(s1, l1)?, input_slice(s2, l2)?);
        let spec = op.spec(l1.dims())?;
        let (dx, _) = with_cpu_slice(&dense(&op.weight)?, |gamma| {
            with_cpu_slice(&dense(&op.bias)?, |beta| kernels::group_norm_backward(x, dy, gamma, beta, spec, false))
        })?;
        Ok((CpuStorage::F32(dx), l1.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::testing::close;
    use candle_core::{Device, Var};

    #[test]
    fn frozen_group_norm_matches_composed_ops() -> Result<()> {
        let dev = Device::Cpu;
        let (b, c, h, w, groups) = (2, 6, 5, 4, 3);
        let weight = Tensor::randn(1f32, 0.3, c, &dev)?;
        let bias = Tensor::randn(0f32, 0.3, c, &dev)?;
        let x = Var::from_tensor(&(Tensor::randn(0f32, 2.0, (b, c, h, w), &dev)? + 0.5)?)?;
        let upstream = Tensor::randn(0f32, 1.0, (b, c, h, w), &dev)?;
        for silu in [false, true] {
            let op = GroupNormOp { weight: weight.clone(), bias: bias.clone(), groups, eps: 1e-6, silu };
            let ours = group_norm(x.as_tensor(), &weight, &bias, groups, 1e-6, silu)?;
            // The reference: the same maths from differentiable candle ops.
            let theirs = op.forward_tensor(x.as_tensor())?;
            close(&ours, &theirs, 1e-5)?;
            let g_ours = (ours * &upstream)?.sum_all()?.backward()?;
            let g_theirs = (theirs * &upstream)?.sum_all()?.backward()?;
            let (Some(a), Some(e)) = (g_ours.get(&x), g_theirs.get(&x)) else { bail!("no gradient for x") };
            close(a, e, 1e-4)?;
            // The tensor-op backward (the GPU's) agrees too.
            close(&op.backward_tensor(x.as_tensor(), &upstream)?, e, 1e-4)?;
        }
        Ok(())
    }
}
