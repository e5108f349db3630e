//! The losses of the z+quantize method: the prompt loss (spherical distance with
//! weight sign and stop), the init-image regulariser, total variation, and the
//! notebook's `ClampWithGrad`.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};

use crate::models::ops::composed::{l2_normalize, spherical_dist};

/// The notebook's `ClampWithGrad`: the value is clamped to `[min, max]`; the gradient
/// passes where it would move the input back toward the range (or the input is inside it):
/// `grad · (grad · (x − clamp(x)) ≥ 0)`.
pub fn clamp_with_grad(x: &Tensor, min: f64, max: f64) -> Result<Tensor> {
    let x = x.copy()?; // exact-size, contiguous storage for the identity forward
    let gated = x.apply_op1(ClampGate { min, max })?;
    (x.clamp(min, max)? - &x)?.detach() + gated
}

/// Identity forward with ClampWithGrad's backward.
struct ClampGate {
    min: f64,
    max: f64,
}

impl CustomOp1 for ClampGate {
    fn name(&self) -> &'static str {
        "clamp-with-grad"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        Ok((storage.try_clone(layout)?, layout.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        storage: &candle_core::CudaStorage,
        layout: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        Ok((storage.try_clone(layout)?, layout.shape().clone()))
    }

    #[cfg(feature = "metal")]
    fn metal_fwd(
        &self,
        storage: &candle_core::MetalStorage,
        layout: &Layout,
    ) -> Result<(candle_core::MetalStorage, Shape)> {
        Ok((storage.try_clone(layout)?, layout.shape().clone()))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let outside = (arg - arg.clamp(self.min, self.max)?)?;
        let keep = (grad * outside)?.ge(0.0)?.to_dtype(grad.dtype())?;
        Ok(Some((grad * keep)?))
    }
}

/// A prompt's target: embeddings `[M, D]`, a weight (negative pushes away) and a stop.
#[derive(Debug, Clone)]
pub struct PromptTarget {
    pub embed: Tensor,
    pub weight: f64,
    pub stop: f64,
}

/// One loss term's target, with the label its loss is reported under.
#[derive(Debug, Clone)]
pub struct LabelledTarget {
    pub label: String,
    pub target: PromptTarget,
}

impl PromptTarget {
    /// The reference `Prompt.forward`: for image embeddings `[N, D]`,
    /// `|w| · mean(sign(w) · 2·arcsin(‖a−b‖/2)²)`, where pairs whose signed distance is
    /// below `stop` keep their value but get no gradient.
    pub fn loss(&self, image_embeds: &Tensor) -> Result<Tensor> {
        let a = l2_normalize(image_embeds)?.unsqueeze(1)?; // [N, 1, D]
        let b = l2_normalize(&self.embed)?.unsqueeze(0)?; // [1, M, D]
        let dists = spherical_dist(&a, &b)?; // [N, M]
        let sign = if self.weight < 0.0 {
            -1.0
        } else if self.weight > 0.0 {
            1.0
        } else {
            0.0
        };
        let dists = (dists * sign)?;
        let gated = if self.stop == f64::NEG_INFINITY {
            dists
        } else {
            // replace_grad(dists, maximum(dists, stop)): value of dists, gradient of the max.
            let floor = dists.maximum(self.stop)?;
            (&floor + (&dists - &floor)?.detach())?
        };
        gated.mean_all()? * self.weight.abs()
    }
}

/// The init-image regulariser at iteration `i`: constant `w · MSE(z, z_orig) / 2`, or
/// nerdyrodent's decaying `w / (2i + 1) · MSE(z, 0) / 2`.
pub fn init_loss(z: &Tensor, z_orig: &Tensor, weight: f64, decay: bool, iteration: usize) -> Result<Tensor> {
    if decay {
        #[expect(clippy::cast_precision_loss, reason = "iteration counts are small")]
        let factor = 1.0 / (2.0 * iteration as f64 + 1.0);
        z.sqr()?.mean_all()? * (factor * weight / 2.0)
    } else {
        (z - z_orig)?.sqr()?.mean_all()? * (weight / 2.0)
    }
}

/// Total variation of an image `[B, C, H, W]`: mean squared difference of neighbours.
pub fn tv_loss(img: &Tensor) -> Result<Tensor> {
    let (_, _, h, w) = img.dims4()?;
    let dx = (img.narrow(3, 1, w - 1)? - img.narrow(3, 0, w - 1)?)?.sqr()?.mean_all()?;
    let dy = (img.narrow(2, 1, h - 1)? - img.narrow(2, 0, h - 1)?)?.sqr()?.mean_all()?;
    dx + dy
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn clamp_with_grad_passes_only_inward_gradients() {
        let x = Var::new(&[-0.5f32, 0.5, 1.5, 1.5, -0.5], &Device::Cpu).unwrap();
        let y = clamp_with_grad(x.as_tensor(), 0.0, 1.0).unwrap();
        assert_eq!(y.to_vec1::<f32>().unwrap(), vec![0.0, 0.5, 1.0, 1.0, 0.0]);
        // Upstream gradient d(sum(y * g)) = g.
        let g = Tensor::new(&[1.0f32, 1.0, 1.0, -1.0, -1.0], &Device::Cpu).unwrap();
        let grads = (y * &g).unwrap().sum_all().unwrap().backward().unwrap();
        let got = grads.get(x.as_tensor()).unwrap().to_vec1::<f32>().unwrap();
        // x=-0.5, g=1: g·(x−c)=−0.5 <0 → blocked. x=0.5 inside → passes. x=1.5, g=1: +0.5 ≥ 0 → passes;
        // x=1.5, g=−1 → blocked; x=−0.5, g=−1: +0.5 → passes.
        assert_eq!(got, vec![0.0, 1.0, 1.0, 0.0, -1.0]);
    }

    #[test]
    fn prompt_loss_sign_and_stop() {
        let dev = Device::Cpu;
        let img = Var::new(&[[1.0f32, 0.0], [0.0, 1.0]], &dev).unwrap();
        let target = Tensor::new(&[[1.0f32, 0.2]], &dev).unwrap();
        let pos = PromptTarget { embed: target.clone(), weight: 2.0, stop: f64::NEG_INFINITY };
        let neg = PromptTarget { embed: target.clone(), weight: -2.0, stop: f64::NEG_INFINITY };
        let lp = pos.loss(img.as_tensor()).unwrap().to_scalar::<f32>().unwrap();
        let ln = neg.loss(img.as_tensor()).unwrap().to_scalar::<f32>().unwrap();
        assert!(lp > 0.0 && (lp + ln).abs() < 1e-6);
        // A stop above every distance: same value, no gradient.
        let stopped = PromptTarget { embed: target, weight: 2.0, stop: 10.0 };
        let l = stopped.loss(img.as_tensor()).unwrap();
        assert!((l.to_scalar::<f32>().unwrap() - lp).abs() < 1e-6);
        let grads = l.backward().unwrap();
        let g = grads.get(img.as_tensor()).map(|g| g.abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap());
        assert!(g.unwrap_or(0.0) == 0.0);
    }

    #[test]
    fn init_loss_modes() {
        let dev = Device::Cpu;
        let z = Tensor::new(&[1.0f32, 3.0], &dev).unwrap();
        let z0 = Tensor::new(&[0.0f32, 1.0], &dev).unwrap();
        let c = init_loss(&z, &z0, 0.5, false, 7).unwrap().to_scalar::<f32>().unwrap();
        assert!((c - 0.5 * 2.5 / 2.0).abs() < 1e-6);
        let d = init_loss(&z, &z0, 0.5, true, 2).unwrap().to_scalar::<f32>().unwrap();
        assert!((d - 5.0 * 0.5 / 5.0 / 2.0).abs() < 1e-6);
    }
}
