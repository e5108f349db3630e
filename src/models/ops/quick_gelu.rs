//! OpenAI CLIP's QuickGELU as one candle custom op, forward and backward each one
//! threaded, vectorised pass on the CPU, with the values of its composition to within
//! the rounding of `exp` (`kernels::vmath::exp` is within 2 ulp of libm's).

use candle_core::{bail, CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};

use super::composed;
use super::storage::{dense, gpu_forwards, input_slice, with_cpu_slice};
use crate::models::kernels::vmath;

/// OpenAI CLIP's `x · sigmoid(1.702 x)`, computed as `composed::quick_gelu` computes it
/// (`x / (1 + exp(−1.702 x))`), as one op: one threaded pass
/// forward and one back, where the composition is four tensor ops and a backward of ten.
pub fn quick_gelu(x: &Tensor) -> Result<Tensor> {
    dense(x)?.apply_op1(QuickGelu { backward: None })
}

/// With `backward`, the gradient instead: the op's input is the upstream gradient and
/// `backward` the forward pass's input.
struct QuickGelu {
    backward: Option<Tensor>,
}

/// `(e, s)` of `x / s` with `s = 1 + e`, `e = exp(−1.702 x)`, rounded as candle's affine
/// and add round them.
#[inline(always)]
fn quick_gelu_parts(v: f32) -> (f32, f32) {
    let e = vmath::exp(v * -1.702f32 + 0.0);
    (e, e * 1.0 + 1.0)
}

/// Values handed to a thread at a time.
const CHUNK: usize = 16_384;

/// QuickGELU of each value on the CPU (shared with the fused layers).
pub(super) fn forward(x: &[f32]) -> Vec<f32> {
    use rayon::prelude::*;
    let mut y = vec![0.0f32; x.len()];
    y.par_chunks_mut(CHUNK).zip(x.par_chunks(CHUNK)).for_each(|(ys, xs)| {
        vmath::wide(
            #[inline(always)]
            || {
                for (o, &v) in ys.iter_mut().zip(xs) {
                    *o = v / quick_gelu_parts(v).1;
                }
            },
        );
    });
    y
}

/// The gradient of the input `x` from the output's, `g`, on the CPU.
pub(super) fn backward(g: &[f32], x: &[f32]) -> Result<Vec<f32>> {
    use rayon::prelude::*;
    if x.len() != g.len() {
        bail!("quick-gelu backward: {} gradients for {} inputs", g.len(), x.len())
    }
    let mut y = vec![0.0f32; x.len()];
    y.par_chunks_mut(CHUNK).zip(g.par_chunks(CHUNK).zip(x.par_chunks(CHUNK))).for_each(|(ys, (gs, xs))| {
        vmath::wide(
            #[inline(always)]
            || {
                for ((o, &g), &v) in ys.iter_mut().zip(gs).zip(xs) {
                    let (e, s) = quick_gelu_parts(v);
                    *o = g * (1.0 / s + 1.702 * v * e / (s * s));
                }
            },
        );
    });
    Ok(y)
}

impl QuickGelu {
    /// Either way with tensor ops (any device).
    fn forward_tensor(&self, t: &Tensor) -> Result<Tensor> {
        match &self.backward {
            None => composed::quick_gelu(t),
            Some(x) => {
                let e = (x * -1.702)?.exp()?;
                let s = (&e + 1.0)?;
                // d/dx x/s = 1/s + 1.702·x·e/s²
                let d = (s.recip()? + ((x * 1.702)? * e)?.div(&s.sqr()?)?)?;
                t.mul(&d)
            }
        }
    }
}

impl CustomOp1 for QuickGelu {
    fn name(&self) -> &'static str {
        if self.backward.is_some() {
            "quick-gelu-backward"
        } else {
            "quick-gelu"
        }
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let t = input_slice(storage, layout)?;
        let y = match &self.backward {
            None => forward(t),
            Some(x) => with_cpu_slice(&dense(x)?, |x| backward(t, x))?,
        };
        Ok((CpuStorage::F32(y), layout.shape().clone()))
    }

    gpu_forwards!();

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        if self.backward.is_some() {
            bail!("quick-gelu: no second-order gradients")
        }
        let op = QuickGelu { backward: Some(arg.detach()) };
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
    fn quick_gelu_matches_its_composition_forward_and_gradient() -> Result<()> {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&Tensor::randn(0f32, 3.0, (3, 40_000), &dev)?)?;
        let upstream = Tensor::randn(0f32, 1.0, (3, 40_000), &dev)?;
        let ours = quick_gelu(x.as_tensor())?;
        let theirs = composed::quick_gelu(x.as_tensor())?;
        // Within the rounding of exp (vmath's against candle's libm): a few ulp.
        close(&ours, &theirs, 1e-6)?;
        let g_ours = (ours * &upstream)?.sum_all()?.backward()?;
        let g_theirs = (theirs * &upstream)?.sum_all()?.backward()?;
        let (Some(a), Some(e)) = (g_ours.get(&x), g_theirs.get(&x)) else { bail!("no gradient for x") };
        close(a, e, 1e-5)?;
        // The tensor-op path (what a GPU runs) gives the same gradient.
        let op = QuickGelu { backward: Some(x.as_tensor().detach()) };
        close(&op.forward_tensor(&upstream)?, e, 1e-5)?;
        Ok(())
    }
}
