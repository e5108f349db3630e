//! The frozen linear layer, `y = x·Wᵀ + b`, as a candle custom op: on the CPU a strided
//! GEMM with the bias folded in, on a GPU candle's matmul; on the way back only the
//! input's gradient (`grad·W`, the same op transposed).

use candle_core::{bail, CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};

use super::storage::{dense, gpu_forwards, input_slice, with_cpu_slice, with_cpu_slices};
use crate::models::kernels::{self, MatMut, MatRef};

/// `y = x·Wᵀ + b` over the last dimension of `x`, with `W` `[out, in]` frozen.
pub fn linear(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let op = LinearOp { weight: weight.clone(), bias: bias.cloned(), transposed: false };
    dense(x)?.apply_op1(op)
}

/// `y = x·Wᵀ + b` over the rows of `x` on the CPU, for `w` the `[out_dim, in_dim]`
/// weight; with `transposed`, `y = x·W` (the input gradient's product: rows of `x` are
/// `out_dim` long, of `y` `in_dim`). Shared with the fused layers.
pub(super) fn rows(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    out_dim: usize,
    in_dim: usize,
    transposed: bool,
) -> Result<Vec<f32>> {
    let (y_dim, x_dim) = if transposed { (in_dim, out_dim) } else { (out_dim, in_dim) };
    if w.len() != out_dim * in_dim
        || x_dim == 0
        || !x.len().is_multiple_of(x_dim)
        || bias.is_some_and(|b| b.len() != y_dim)
    {
        bail!("linear: {} inputs, a weight of {} values, [{out_dim}, {in_dim}]", x.len(), w.len())
    }
    let n = x.len() / x_dim;
    let mut y = vec![0.0f32; n * y_dim];
    if let Some(b) = bias {
        for row in y.chunks_exact_mut(y_dim) {
            row.copy_from_slice(b);
        }
    }
    let mut dst = MatMut { data: &mut y, offset: 0, rows: n, cols: y_dim, rs: y_dim, cs: 1 };
    let lhs = MatRef { data: x, offset: 0, rows: n, cols: x_dim, rs: x_dim, cs: 1 };
    let rhs = if transposed {
        MatRef { data: w, offset: 0, rows: out_dim, cols: in_dim, rs: in_dim, cs: 1 }
    } else {
        MatRef { data: w, offset: 0, rows: in_dim, cols: out_dim, rs: 1, cs: in_dim }
    };
    kernels::matmul(&mut dst, lhs, rhs, bias.is_some())?;
    Ok(y)
}

struct LinearOp {
    weight: Tensor,
    bias: Option<Tensor>,
    /// `y = x·W` instead (the input gradient's product).
    transposed: bool,
}

impl LinearOp {
    #[cfg_attr(not(any(feature = "cuda", feature = "metal", test)), expect(dead_code, reason = "the GPU forward"))]
    fn forward_tensor(&self, x: &Tensor) -> Result<Tensor> {
        let y =
            if self.transposed { x.broadcast_matmul(&self.weight)? } else { x.broadcast_matmul(&self.weight.t()?)? };
        match &self.bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}

impl CustomOp1 for LinearOp {
    fn name(&self) -> &'static str {
        "frozen-linear"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = input_slice(storage, layout)?;
        let (w0, w1) = self.weight.dims2()?;
        let (out_dim, in_dim) = if self.transposed { (w1, w0) } else { (w0, w1) };
        let dims = layout.dims();
        if dims.last() != Some(&in_dim) {
            bail!("linear: input {dims:?} does not end in {in_dim}")
        }
        let w = dense(&self.weight)?;
        let y = match &self.bias {
            Some(b) => with_cpu_slices(&[w, dense(b)?], |t| rows(x, t[0], Some(t[1]), w0, w1, self.transposed))?,
            None => with_cpu_slice(&w, |w| rows(x, w, None, w0, w1, self.transposed))?,
        };
        let mut shape = dims.to_vec();
        if let Some(last) = shape.last_mut() {
            *last = out_dim;
        }
        Ok((CpuStorage::F32(y), Shape::from(shape)))
    }

    gpu_forwards!();

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        if self.transposed {
            bail!("frozen linear: no second-order gradients")
        }
        if arg.device().is_cpu() {
            let op = LinearOp { weight: self.weight.clone(), bias: None, transposed: true };
            Ok(Some(dense(grad)?.apply_op1_no_bwd(&op)?))
        } else {
            Ok(Some(grad.broadcast_matmul(&self.weight)?))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::testing::close;
    use candle_core::{Device, Var};

    #[test]
    fn frozen_linear_matches_matmul_forward_and_input_gradient() -> Result<()> {
        let dev = Device::Cpu;
        let weight = Tensor::randn(0f32, 0.3, (7, 5), &dev)?;
        let bias = Tensor::randn(0f32, 0.3, 7, &dev)?;
        let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (2, 3, 5), &dev)?)?;
        let upstream = Tensor::randn(0f32, 1.0, (2, 3, 7), &dev)?;
        for b in [None, Some(&bias)] {
            let ours = linear(x.as_tensor(), &weight, b)?;
            let mut theirs = x.as_tensor().broadcast_matmul(&weight.t()?)?;
            if let Some(b) = b {
                theirs = theirs.broadcast_add(b)?;
            }
            close(&ours, &theirs, 1e-5)?;
            let g_ours = (ours * &upstream)?.sum_all()?.backward()?;
            let g_theirs = (theirs * &upstream)?.sum_all()?.backward()?;
            let (Some(a), Some(e)) = (g_ours.get(&x), g_theirs.get(&x)) else { bail!("no gradient for x") };
            close(a, e, 1e-5)?;
            assert!(g_ours.get(&weight).is_none());
        }
        Ok(())
    }

    #[test]
    fn tensor_path_agrees_with_the_cpu_kernels() -> Result<()> {
        // The GPU forward (candle ops) checked on the CPU against the kernels.
        let dev = Device::Cpu;
        let lin = LinearOp {
            weight: Tensor::randn(0f32, 0.3, (6, 4), &dev)?,
            bias: Some(Tensor::randn(0f32, 0.3, 6, &dev)?),
            transposed: false,
        };
        let x = Tensor::randn(0f32, 1.0, (3, 4), &dev)?;
        close(&x.apply_op1_no_bwd(&lin)?, &lin.forward_tensor(&x)?, 1e-5)?;
        Ok(())
    }
}
