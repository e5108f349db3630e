//! Layers whose weights are being trained (`clipcanvas train-demo`), on the CPU: the
//! kernels of `models::kernels` as candle custom ops that give the weights' gradients
//! as well as the input's. Against candle's own ops they save the im2col matrix of
//! every convolution (and its copy kept for the backward pass) and the half-dozen
//! tensors a composed group normalisation allocates each way.

use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};

use super::conv::conv2d_input_grad;
use super::storage::{dense, input_slice, with_cpu_slice};
use crate::models::kernels::{self, ConvShape, GroupSpec, MatMut, MatRef};

/// `y = x·Wᵀ + b` over the last dimension of `x`, with gradients for all three. The
/// bias gradient is a product with a row of ones: candle's broadcast-add backward sums
/// over the leading dimensions with a strided reduction, the slowest step of a CLIP
/// training step before this op.
pub fn linear(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let (out_dim, in_dim) = weight.dims2()?;
    let dims = x.dims().to_vec();
    if dims.last() != Some(&in_dim) || bias.is_some_and(|b| b.dims() != [out_dim]) {
        bail!("linear: input {dims:?} does not fit weight [{out_dim}, {in_dim}] and its bias")
    }
    let rows = x.elem_count() / in_dim.max(1);
    let x2 = dense(&x.reshape((rows, in_dim))?)?;
    let y = match bias {
        Some(b) => x2.apply_op3(&dense(weight)?, &dense(b)?, LinearTrain)?,
        None => x2.apply_op2(&dense(weight)?, LinearTrain)?,
    };
    let mut shape = dims;
    if let Some(last) = shape.last_mut() {
        *last = out_dim;
    }
    y.reshape(shape)
}

/// `[rows, in] · [out, in]ᵀ (+ [out])`.
struct LinearTrain;

impl LinearTrain {
    fn forward(x: &[f32], lx: &Layout, w: &[f32], lw: &Layout, bias: Option<&[f32]>) -> Result<(CpuStorage, Shape)> {
        let (rows, in_dim) = lx.shape().dims2()?;
        let (out_dim, w_in) = lw.shape().dims2()?;
        if w_in != in_dim || bias.is_some_and(|b| b.len() != out_dim) {
            bail!("linear: input {:?} does not fit weight {:?}", lx.dims(), lw.dims())
        }
        let mut y = vec![0.0f32; rows * out_dim];
        if let Some(b) = bias {
            for row in y.chunks_exact_mut(out_dim.max(1)) {
                row.copy_from_slice(b);
            }
        }
        let mut dst = MatMut { data: &mut y, offset: 0, rows, cols: out_dim, rs: out_dim, cs: 1 };
        let lhs = MatRef { data: x, offset: 0, rows, cols: in_dim, rs: in_dim, cs: 1 };
        let rhs = MatRef { data: w, offset: 0, rows: in_dim, cols: out_dim, rs: 1, cs: in_dim };
        kernels::matmul(&mut dst, lhs, rhs, bias.is_some())?;
        Ok((CpuStorage::F32(y), Shape::from((rows, out_dim))))
    }

    /// `(dx, dW)` for `y = x·Wᵀ`, from a dense `grad`.
    fn grads(x: &Tensor, weight: &Tensor, grad: &Tensor) -> Result<(Tensor, Tensor)> {
        Ok((grad.matmul(&weight.detach())?, grad.t()?.matmul(&x.detach())?))
    }
}

impl CustomOp2 for LinearTrain {
    fn name(&self) -> &'static str {
        "trained-linear"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        Self::forward(input_slice(s1, l1)?, l1, input_slice(s2, l2)?, l2, None)
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dw) = Self::grads(x, weight, &dense(grad)?)?;
        Ok((Some(dx), Some(dw)))
    }
}

impl CustomOp3 for LinearTrain {
    fn name(&self) -> &'static str {
        "trained-linear-bias"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        Self::forward(input_slice(s1, l1)?, l1, input_slice(s2, l2)?, l2, Some(input_slice(s3, l3)?))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        _bias: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad = dense(grad)?;
        let (dx, dw) = Self::grads(x, weight, &grad)?;
        let ones = Tensor::ones((1, grad.dim(0)?), grad.dtype(), grad.device())?;
        let db = ones.matmul(&grad)?.squeeze(0)?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

/// A stride-1 convolution with square `k×k` kernels and zero padding below `k`, with
/// gradients for `x` and `weight` (`[out, in, k, k]`). Add the bias outside.
pub fn conv2d(x: &Tensor, weight: &Tensor, padding: usize) -> Result<Tensor> {
    let (_, _, k, k2) = weight.dims4()?;
    if k != k2 || padding >= k {
        bail!("conv2d: kernel {:?} with padding {padding} is not a same-or-valid square convolution", weight.dims())
    }
    dense(x)?.apply_op2(&dense(weight)?, ConvTrain { k, padding })
}

fn conv_shape(x: &Layout, cout: usize, k: usize, padding: usize) -> Result<ConvShape> {
    let (batch, cin, h, w) = x.shape().dims4()?;
    Ok(ConvShape { batch, cin, cout, h, w, k, padding, circular: false })
}

struct ConvTrain {
    k: usize,
    padding: usize,
}

impl CustomOp2 for ConvTrain {
    fn name(&self) -> &'static str {
        "trained-conv2d"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (x, wt) = (input_slice(s1, l1)?, input_slice(s2, l2)?);
        let (cout, wcin, _, _) = l2.shape().dims4()?;
        let s = conv_shape(l1, cout, self.k, self.padding)?;
        if wcin != s.cin {
            bail!("conv2d: input {:?} does not fit kernel {:?}", l1.dims(), l2.dims())
        }
        let Some((ho, wo)) = s.out_hw() else { bail!("conv2d: {}x{} input is smaller than the kernel", s.h, s.w) };
        let y = kernels::conv2d_same(x, wt, None, s, false)?;
        Ok((CpuStorage::F32(y), Shape::from((s.batch, cout, ho, wo))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = dense(grad)?;
        let dx = conv2d_input_grad(&grad, weight, self.padding)?;
        let dw = x.apply_op2_no_bwd(&grad, &ConvWeightGrad { k: self.k, padding: self.padding })?;
        Ok((Some(dx), Some(dw)))
    }
}

/// `(x, dy) → dW` of [`ConvTrain`].
struct ConvWeightGrad {
    k: usize,
    padding: usize,
}

impl CustomOp2 for ConvWeightGrad {
    fn name(&self) -> &'static str {
        "trained-conv2d-weight-grad"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (x, dy) = (input_slice(s1, l1)?, input_slice(s2, l2)?);
        let (_, cout, _, _) = l2.shape().dims4()?;
        let s = conv_shape(l1, cout, self.k, self.padding)?;
        let dw = kernels::conv2d_weight_grad(x, dy, s)?;
        Ok((CpuStorage::F32(dw), Shape::from((cout, s.cin, self.k, self.k))))
    }
}

/// `torch.nn.GroupNorm(groups, C, eps)` over `[B, C, H, W]`, then SiLU when `silu`,
/// with gradients for `x`, `weight` and `bias`.
pub fn group_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, groups: usize, eps: f64, silu: bool) -> Result<Tensor> {
    GroupSpec::new(x.dims(), groups, eps, silu)?;
    dense(x)?.apply_op3(&dense(weight)?, &dense(bias)?, GroupNormTrain { groups, eps, silu })
}

#[derive(Clone, Copy)]
struct GroupNormTrain {
    groups: usize,
    eps: f64,
    silu: bool,
}

impl CustomOp3 for GroupNormTrain {
    fn name(&self) -> &'static str {
        "trained-group-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let spec = GroupSpec::new(l1.dims(), self.groups, self.eps, self.silu)?;
        let y = kernels::group_norm(input_slice(s1, l1)?, input_slice(s2, l2)?, input_slice(s3, l3)?, spec)?;
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        bias: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let c = weight.dims1()?;
        let back = GroupNormTrainBackward { op: *self, weight: weight.detach(), bias: bias.detach() };
        // One flat result: dx, then dγ, then dβ.
        let all = x.apply_op2_no_bwd(&dense(grad)?, &back)?;
        let n = x.elem_count();
        let dx = all.narrow(0, 0, n)?.reshape(x.shape())?;
        let dgamma = all.narrow(0, n, c)?;
        let dbeta = all.narrow(0, n + c, c)?;
        Ok((Some(dx), Some(dgamma), Some(dbeta)))
    }
}

/// `(x, dy) → [dx | dγ | dβ]` of [`GroupNormTrain`], flattened.
struct GroupNormTrainBackward {
    op: GroupNormTrain,
    weight: Tensor,
    bias: Tensor,
}

impl CustomOp2 for GroupNormTrainBackward {
    fn name(&self) -> &'static str {
        "trained-group-norm-backward"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let GroupNormTrain { groups, eps, silu } = self.op;
        let spec = GroupSpec::new(l1.dims(), groups, eps, silu)?;
        let (x, dy) = (input_slice(s1, l1)?, input_slice(s2, l2)?);
        let (mut dx, params) = with_cpu_slice(&dense(&self.weight)?, |gamma| {
            with_cpu_slice(&dense(&self.bias)?, |beta| kernels::group_norm_backward(x, dy, gamma, beta, spec, true))
        })?;
        let Some((dgamma, dbeta)) = params else { bail!("group norm backward: no weight gradients") };
        dx.extend_from_slice(&dgamma);
        dx.extend_from_slice(&dbeta);
        let len = dx.len();
        Ok((CpuStorage::F32(dx), Shape::from(len)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::testing::close;
    use candle_core::{Device, Var};

    fn grads_of(out: Tensor, upstream: &Tensor, vars: &[&Var]) -> Result<Vec<Tensor>> {
        let g = (out * upstream)?.sum_all()?.backward()?;
        vars.iter().map(|v| g.get(v).cloned().ok_or_else(|| candle_core::Error::Msg("no gradient".into()))).collect()
    }

    #[test]
    fn trained_conv_matches_candle_forward_and_both_gradients() -> Result<()> {
        let dev = Device::Cpu;
        for &(b, cin, cout, h, w, k, p) in
            &[(1, 4, 6, 9, 7, 3, 1), (2, 5, 3, 6, 6, 1, 0), (3, 3, 2, 5, 8, 3, 0), (2, 2, 3, 4, 5, 3, 2)]
        {
            let weight = Var::from_tensor(&Tensor::randn(0f32, 0.3, (cout, cin, k, k), &dev)?)?;
            let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (b, cin, h, w), &dev)?)?;
            let upstream = Tensor::randn(0f32, 1.0, (b, cout, h + 2 * p + 1 - k, w + 2 * p + 1 - k), &dev)?;
            let ours = conv2d(x.as_tensor(), weight.as_tensor(), p)?;
            let theirs = x.as_tensor().conv2d(weight.as_tensor(), p, 1, 1, 1)?;
            close(&ours, &theirs, 1e-5)?;
            let g_ours = grads_of(ours, &upstream, &[&x, &weight])?;
            let g_theirs = grads_of(theirs, &upstream, &[&x, &weight])?;
            for (a, e) in g_ours.iter().zip(&g_theirs) {
                close(a, e, 1e-4)?;
            }
        }
        Ok(())
    }

    #[test]
    fn trained_linear_matches_matmul_for_all_gradients() -> Result<()> {
        let dev = Device::Cpu;
        let weight = Var::from_tensor(&Tensor::randn(0f32, 0.3, (7, 5), &dev)?)?;
        let bias = Var::from_tensor(&Tensor::randn(0f32, 0.3, 7, &dev)?)?;
        let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (2, 3, 5), &dev)?)?;
        let upstream = Tensor::randn(0f32, 1.0, (2, 3, 7), &dev)?;
        for with_bias in [false, true] {
            let b = with_bias.then(|| bias.as_tensor());
            let ours = linear(x.as_tensor(), weight.as_tensor(), b)?;
            let mut theirs = x.as_tensor().broadcast_matmul(&weight.as_tensor().t()?)?;
            if let Some(b) = b {
                theirs = theirs.broadcast_add(b)?;
            }
            close(&ours, &theirs, 1e-5)?;
            let vars: Vec<&Var> = if with_bias { vec![&x, &weight, &bias] } else { vec![&x, &weight] };
            let g_ours = grads_of(ours, &upstream, &vars)?;
            let g_theirs = grads_of(theirs, &upstream, &vars)?;
            for (a, e) in g_ours.iter().zip(&g_theirs) {
                close(a, e, 1e-5)?;
            }
        }
        assert!(linear(x.as_tensor(), &Tensor::zeros((7, 4), candle_core::DType::F32, &dev)?, None).is_err());
        Ok(())
    }

    #[test]
    fn trained_group_norm_matches_composed_ops_for_all_three_gradients() -> Result<()> {
        let dev = Device::Cpu;
        let (b, c, h, w) = (3, 6, 5, 4);
        let weight = Var::from_tensor(&Tensor::randn(1f32, 0.3, c, &dev)?)?;
        let bias = Var::from_tensor(&Tensor::randn(0f32, 0.3, c, &dev)?)?;
        let x = Var::from_tensor(&(Tensor::randn(0f32, 2.0, (b, c, h, w), &dev)? + 0.5)?)?;
        let upstream = Tensor::randn(0f32, 1.0, (b, c, h, w), &dev)?;
        for (groups, silu) in [(3, false), (3, true), (1, true), (6, false)] {
            let ours = group_norm(x.as_tensor(), weight.as_tensor(), bias.as_tensor(), groups, 1e-6, silu)?;
            // The reference: the same maths from differentiable candle ops.
            let g = x.as_tensor().reshape((b, groups, (c / groups) * h * w))?;
            let mean = g.mean_keepdim(candle_core::D::Minus1)?;
            let centred = g.broadcast_sub(&mean)?;
            let var = centred.sqr()?.mean_keepdim(candle_core::D::Minus1)?;
            let xhat = centred.broadcast_div(&(var + 1e-6)?.sqrt()?)?.reshape((b, c, h, w))?;
            let mut theirs = xhat
                .broadcast_mul(&weight.as_tensor().reshape((1, c, 1, 1))?)?
                .broadcast_add(&bias.as_tensor().reshape((1, c, 1, 1))?)?;
            if silu {
                theirs = theirs.silu()?;
            }
            close(&ours, &theirs, 1e-5)?;
            let g_ours = grads_of(ours, &upstream, &[&x, &weight, &bias])?;
            let g_theirs = grads_of(theirs, &upstream, &[&x, &weight, &bias])?;
            for (a, e) in g_ours.iter().zip(&g_theirs) {
                close(a, e, 1e-4)?;
            }
        }
        Ok(())
    }

    #[test]
    fn bad_shapes_are_errors() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::zeros((1, 4, 5, 5), candle_core::DType::F32, &dev)?;
        assert!(conv2d(&x, &Tensor::zeros((2, 3, 3, 3), candle_core::DType::F32, &dev)?, 1).is_err());
        assert!(conv2d(&x, &Tensor::zeros((2, 4, 3, 3), candle_core::DType::F32, &dev)?, 3).is_err());
        let c = Tensor::zeros(4, candle_core::DType::F32, &dev)?;
        assert!(group_norm(&x, &c, &c, 3, 1e-6, false).is_err());
        Ok(())
    }
}
