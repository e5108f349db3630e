//! Nearest-neighbour 2× upsampling (the VQGAN decoder's) as a candle custom op: threaded
//! kernels both ways on the CPU, candle's tensor ops on a GPU.

use candle_core::{bail, CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};

use super::storage::{dense, gpu_forwards, input_slice};
use crate::models::kernels;

/// `F.interpolate(x, scale_factor=2, mode="nearest")` over `[B, C, H, W]` — the VQGAN
/// decoder's upsampling. On the CPU both ways are threaded kernels; candle's own backward
/// runs one single-channel convolution per channel and concatenates them.
pub fn upsample_nearest2x(x: &Tensor) -> Result<Tensor> {
    x.dims4()?;
    dense(x)?.apply_op1(Upsample2 { backward: false })
}

/// With `backward`, the gradient instead: each value of the half-size result sums a 2×2
/// block.
struct Upsample2 {
    backward: bool,
}

impl Upsample2 {
    /// Either way with tensor ops (any device).
    fn forward_tensor(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        if self.backward {
            x.reshape((b, c, h / 2, 2, w / 2, 2))?.sum(5)?.sum(3)
        } else {
            x.upsample_nearest2d(2 * h, 2 * w)
        }
    }
}

impl CustomOp1 for Upsample2 {
    fn name(&self) -> &'static str {
        if self.backward {
            "upsample-nearest-2x-backward"
        } else {
            "upsample-nearest-2x"
        }
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = input_slice(storage, layout)?;
        let (b, c, h, w) = layout.shape().dims4()?;
        if self.backward {
            if h % 2 != 0 || w % 2 != 0 {
                bail!("upsample gradient: {h}x{w} is not an upsampled size")
            }
            let g = kernels::sum_pool2(x, h / 2, w / 2)?;
            Ok((CpuStorage::F32(g), Shape::from((b, c, h / 2, w / 2))))
        } else {
            let y = kernels::upsample2(x, h, w)?;
            Ok((CpuStorage::F32(y), Shape::from((b, c, 2 * h, 2 * w))))
        }
    }

    gpu_forwards!();

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        if self.backward {
            bail!("upsample: no second-order gradients")
        }
        let op = Upsample2 { backward: true };
        if grad.device().is_cpu() {
            Ok(Some(dense(grad)?.apply_op1_no_bwd(&op)?))
        } else {
            Ok(Some(op.forward_tensor(grad)?))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::testing::close;
    use candle_core::{Device, Var};

    #[test]
    fn upsampling_matches_candle_forward_and_gradient() -> Result<()> {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (2, 3, 5, 4), &dev)?)?;
        let upstream = Tensor::randn(0f32, 1.0, (2, 3, 10, 8), &dev)?;
        let ours = upsample_nearest2x(x.as_tensor())?;
        let theirs = x.as_tensor().upsample_nearest2d(10, 8)?;
        close(&ours, &theirs, 0.0)?;
        let g_ours = (ours * &upstream)?.sum_all()?.backward()?;
        let g_theirs = (theirs * &upstream)?.sum_all()?.backward()?;
        let (Some(a), Some(e)) = (g_ours.get(&x), g_theirs.get(&x)) else { bail!("no gradient for x") };
        close(a, e, 1e-6)?;
        // The tensor-op path (what a GPU runs) gives the same gradient.
        close(&Upsample2 { backward: true }.forward_tensor(&upstream)?, e, 1e-6)?;
        Ok(())
    }
}
