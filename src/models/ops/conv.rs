//! The frozen stride-1 convolution as a candle custom op: on the CPU the implicit-GEMM
//! kernel of `models::kernels`, on a GPU candle's conv2d; on the way back only the
//! input's gradient, itself a convolution with the flipped, transposed kernel
//! (`conv2d_input_grad`, which the trained convolution shares).

use candle_core::{bail, CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};

use super::storage::{dense, gpu_forwards, input_slice, with_cpu_slice};
use crate::models::kernels::{self, ConvShape};

/// A stride-1 convolution with `k×k` kernels and zero padding, `W` `[out, in, k, k]`
/// frozen.
pub fn conv2d(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>, padding: usize) -> Result<Tensor> {
    conv2d_padded(x, weight, bias, padding, false)
}

/// [`conv2d`] with circular padding (each side padded with the opposite side's rows and
/// columns, as PyTorch's `padding_mode="circular"`): the VQGAN's seamless decoding. The
/// kernel must keep the size (`k = 2·padding + 1`).
pub fn conv2d_circular(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>, padding: usize) -> Result<Tensor> {
    conv2d_padded(x, weight, bias, padding, true)
}

fn conv2d_padded(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>, padding: usize, circular: bool) -> Result<Tensor> {
    let (_, _, k, k2) = weight.dims4()?;
    if k != k2 {
        bail!("conv2d: only square kernels, got {:?}", weight.dims())
    }
    if circular && k != 2 * padding + 1 {
        bail!("conv2d: circular padding {padding} does not keep the size with a {k}x{k} kernel")
    }
    let op = ConvOp { weight: weight.clone(), bias: bias.cloned(), k, padding, transposed: false, circular };
    dense(x)?.apply_op1(op)
}

struct ConvOp {
    weight: Tensor,
    bias: Option<Tensor>,
    k: usize,
    padding: usize,
    /// Convolve with the flipped, transposed kernel (the input gradient's convolution).
    transposed: bool,
    /// Circular padding instead of zeros.
    circular: bool,
}

impl ConvOp {
    #[cfg_attr(not(any(feature = "cuda", feature = "metal", test)), expect(dead_code, reason = "the GPU forward"))]
    fn forward_tensor(&self, x: &Tensor) -> Result<Tensor> {
        let w = if self.transposed {
            let rev: Vec<u32> = (0..u32::try_from(self.k).unwrap_or(u32::MAX)).rev().collect();
            let rev = Tensor::new(rev.as_slice(), self.weight.device())?;
            self.weight.index_select(&rev, 2)?.index_select(&rev, 3)?.transpose(0, 1)?.contiguous()?
        } else {
            self.weight.clone()
        };
        let y = if self.circular {
            super::composed::pad_circular(x, self.padding)?.conv2d(&w, 0, 1, 1, 1)?
        } else {
            x.conv2d(&w, self.padding, 1, 1, 1)?
        };
        match &self.bias {
            Some(b) => y.broadcast_add(&b.reshape((1, b.dim(0)?, 1, 1))?),
            None => Ok(y),
        }
    }
}

impl CustomOp1 for ConvOp {
    fn name(&self) -> &'static str {
        "frozen-conv2d"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = input_slice(storage, layout)?;
        let (batch, cin, h, w) = layout.shape().dims4()?;
        let (w0, w1, _, _) = self.weight.dims4()?;
        let (cout, wcin) = if self.transposed { (w1, w0) } else { (w0, w1) };
        if wcin != cin {
            bail!("conv2d: input {:?} does not fit kernel {:?}", layout.dims(), self.weight.dims())
        }
        let s = ConvShape { batch, cin, cout, h, w, k: self.k, padding: self.padding, circular: self.circular };
        let Some((ho, wo)) = s.out_hw() else { bail!("conv2d: {h}x{w} input is smaller than the kernel") };
        let weight = dense(&self.weight)?;
        let out = with_cpu_slice(&weight, |wt| match &self.bias {
            Some(b) => with_cpu_slice(b, |b| kernels::conv2d_same(x, wt, Some(b), s, self.transposed)),
            None => kernels::conv2d_same(x, wt, None, s, self.transposed),
        })?;
        Ok((CpuStorage::F32(out), Shape::from((batch, cout, ho, wo))))
    }

    gpu_forwards!();

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        if self.transposed || self.padding + 1 > self.k {
            // Never built with a gradient: the transposed op only runs inside a backward,
            // and generation's convolutions pad by at most k − 1.
            bail!("frozen conv2d: no backward for this configuration")
        }
        input_grad(grad, &self.weight, self.padding, self.circular).map(Some)
    }
}

/// The input gradient of a stride-1 convolution with `weight` and `padding` (at most
/// k − 1): `grad` convolved with the flipped, transposed kernel. Never differentiated.
pub(super) fn conv2d_input_grad(grad: &Tensor, weight: &Tensor, padding: usize) -> Result<Tensor> {
    input_grad(grad, weight, padding, false)
}

/// [`conv2d_input_grad`], padded circularly when the forward convolution was (its
/// operator is circulant, so the adjoint pads circularly too).
fn input_grad(grad: &Tensor, weight: &Tensor, padding: usize, circular: bool) -> Result<Tensor> {
    let (_, _, k, _) = weight.dims4()?;
    if padding + 1 > k {
        bail!("conv2d: no input gradient for padding {padding} with a {k}x{k} kernel")
    }
    let op = ConvOp { weight: weight.detach(), bias: None, k, padding: k - 1 - padding, transposed: true, circular };
    dense(grad)?.apply_op1_no_bwd(&op)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::testing::close;
    use candle_core::{Device, Var};

    #[test]
    fn circular_conv_matches_padding_then_convolving_forward_and_input_gradient() -> Result<()> {
        let dev = Device::Cpu;
        // The implicit product (1×1, 3×3 and 5×5 on small images) and Winograd (3×3 over
        // 32×33 with 16 channels).
        for &(b, cin, cout, h, w, k) in
            &[(1, 4, 6, 9, 7, 3), (2, 5, 3, 6, 6, 1), (1, 3, 2, 6, 8, 5), (1, 16, 16, 32, 33, 3)]
        {
            let p = k / 2;
            let weight = Tensor::randn(0f32, 0.3, (cout, cin, k, k), &dev)?;
            let bias = Tensor::randn(0f32, 0.3, cout, &dev)?;
            let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (b, cin, h, w), &dev)?)?;
            let upstream = Tensor::randn(0f32, 1.0, (b, cout, h, w), &dev)?;
            let ours = conv2d_circular(x.as_tensor(), &weight, Some(&bias), p)?;
            let theirs = super::super::composed::pad_circular(x.as_tensor(), p)?
                .conv2d(&weight, 0, 1, 1, 1)?
                .broadcast_add(&bias.reshape((1, cout, 1, 1))?)?;
            close(&ours, &theirs, 1e-4)?;
            let g_ours = (ours * &upstream)?.sum_all()?.backward()?;
            let g_theirs = (theirs * &upstream)?.sum_all()?.backward()?;
            let (Some(a), Some(e)) = (g_ours.get(&x), g_theirs.get(&x)) else { bail!("no gradient for x") };
            close(a, e, 1e-4)?;
        }
        // A kernel that would change the size cannot wrap.
        let x = Tensor::zeros((1, 1, 4, 4), candle_core::DType::F32, &dev)?;
        assert!(conv2d_circular(&x, &Tensor::zeros((1, 1, 3, 3), candle_core::DType::F32, &dev)?, None, 0).is_err());
        Ok(())
    }

    #[test]
    fn frozen_conv_matches_candle_forward_and_input_gradient() -> Result<()> {
        let dev = Device::Cpu;
        for &(b, cin, cout, h, w, k, p) in &[(1, 4, 6, 9, 7, 3, 1), (2, 5, 3, 6, 6, 1, 0), (1, 3, 2, 5, 8, 3, 0)] {
            let weight = Tensor::randn(0f32, 0.3, (cout, cin, k, k), &dev)?;
            let bias = Tensor::randn(0f32, 0.3, cout, &dev)?;
            let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (b, cin, h, w), &dev)?)?;
            let upstream = Tensor::randn(0f32, 1.0, (b, cout, h + 2 * p + 1 - k, w + 2 * p + 1 - k), &dev)?;

            let ours = conv2d(x.as_tensor(), &weight, Some(&bias), p)?;
            let theirs = x.as_tensor().conv2d(&weight, p, 1, 1, 1)?.broadcast_add(&bias.reshape((1, cout, 1, 1))?)?;
            close(&ours, &theirs, 1e-5)?;

            let g_ours = (ours * &upstream)?.sum_all()?.backward()?;
            let g_theirs = (theirs * &upstream)?.sum_all()?.backward()?;
            let (Some(a), Some(e)) = (g_ours.get(&x), g_theirs.get(&x)) else { bail!("no gradient for x") };
            close(a, e, 1e-5)?;
            // The frozen weight gets no gradient at all.
            assert!(g_ours.get(&weight).is_none());
        }
        Ok(())
    }

    #[test]
    fn tensor_path_agrees_with_the_cpu_kernels() -> Result<()> {
        // The GPU forward (candle ops) checked on the CPU against the kernels.
        let dev = Device::Cpu;
        let weight = Tensor::randn(0f32, 0.3, (4, 3, 3, 3), &dev)?;
        let x = Tensor::randn(0f32, 1.0, (2, 4, 5, 6), &dev)?;
        let op = ConvOp { weight: weight.clone(), bias: None, k: 3, padding: 1, transposed: true, circular: false };
        close(&x.apply_op1_no_bwd(&op)?, &op.forward_tensor(&x)?, 1e-5)?;
        Ok(())
    }
}
