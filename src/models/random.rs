//! Random weights for full-size architectures, for benchmarks: a `VarBuilder` backend
//! that makes any tensor a model asks for, with PyTorch's default scales, so the layers
//! see realistic magnitudes (no overflow, no denormals) without a download.
//!
//! Each tensor is drawn from a generator seeded by its name and the backend's seed, so
//! a model built twice is the same model, whatever order its layers are built in.

use candle_core::{DType, Device, Result, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;

/// Makes every requested tensor; see the module documentation.
#[derive(Debug, Clone, Copy)]
pub struct RandomWeights {
    seed: u64,
}

impl RandomWeights {
    pub fn new(seed: u64) -> Self {
        Self { seed }
    }

    /// A `VarBuilder` over random weights.
    pub fn var_builder(self, dtype: DType, device: &Device) -> VarBuilder<'static> {
        VarBuilder::from_backend(Box::new(self), dtype, device.clone())
    }

    fn values(&self, name: &str, shape: &Shape) -> Vec<f32> {
        let dims = shape.dims();
        let n = shape.elem_count();
        let leaf = name.rsplit('.').next().unwrap_or(name);
        // PyTorch's defaults: conv and linear weights U(±1/√fan_in); norms start at
        // weight 1, bias 0; embeddings N(0, 0.02)-sized; the codebook U(±1/n).
        let bound = if name.ends_with("logit_scale") {
            return vec![(1.0f32 / 0.07).ln(); n];
        } else if name.contains("quantize.embedding") || name.contains("quantize.embed.") {
            #[expect(clippy::cast_precision_loss, reason = "codebook sizes are small")]
            let b = 1.0 / dims[0].max(1) as f32;
            b
        } else if name.contains("embedding") {
            0.02 * 3f32.sqrt()
        } else if leaf == "bias" {
            return vec![0.0; n];
        } else if dims.len() == 1 {
            return vec![1.0; n];
        } else {
            let fan_in: usize = dims[1..].iter().product();
            #[expect(clippy::cast_precision_loss, reason = "fan-ins are small")]
            let b = 1.0 / (fan_in.max(1) as f32).sqrt();
            b
        };
        let mut state = self.seed ^ fnv1a(name.as_bytes());
        (0..n)
            .map(|_| {
                #[expect(clippy::cast_precision_loss, reason = "24 random bits to a float in [0, 1)")]
                let u = (splitmix64(&mut state) >> 40) as f32 / (1u64 << 24) as f32;
                (2.0 * u - 1.0) * bound
            })
            .collect()
    }
}

impl SimpleBackend for RandomWeights {
    fn get(&self, s: Shape, name: &str, _h: candle_nn::Init, dtype: DType, dev: &Device) -> Result<Tensor> {
        Tensor::from_vec(self.values(name, &s), s, dev)?.to_dtype(dtype)
    }

    fn get_unchecked(&self, name: &str, _dtype: DType, _dev: &Device) -> Result<Tensor> {
        candle_core::bail!("random weights need a shape for '{name}'")
    }

    fn contains_tensor(&self, _name: &str) -> bool {
        true
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_name_same_values_other_name_other_values() -> Result<()> {
        let rw = RandomWeights::new(7);
        let a = rw.get(Shape::from((8, 4)), "x.weight", candle_nn::Init::Const(0.0), DType::F32, &Device::Cpu)?;
        let b = rw.get(Shape::from((8, 4)), "x.weight", candle_nn::Init::Const(0.0), DType::F32, &Device::Cpu)?;
        let c = rw.get(Shape::from((8, 4)), "y.weight", candle_nn::Init::Const(0.0), DType::F32, &Device::Cpu)?;
        let (a, b, c) = (
            a.flatten_all()?.to_vec1::<f32>()?,
            b.flatten_all()?.to_vec1::<f32>()?,
            c.flatten_all()?.to_vec1::<f32>()?,
        );
        assert_eq!(a, b);
        assert_ne!(a, c);
        // U(±1/√4): inside the bound, and spread over it.
        assert!(a.iter().all(|v| v.abs() <= 0.5));
        assert!(a.iter().any(|v| v.abs() > 0.3));
        let norm = rw.get(Shape::from(6), "ln.weight", candle_nn::Init::Const(0.0), DType::F32, &Device::Cpu)?;
        assert_eq!(norm.to_vec1::<f32>()?, vec![1.0; 6]);
        let bias = rw.get(Shape::from(6), "ln.bias", candle_nn::Init::Const(0.0), DType::F32, &Device::Cpu)?;
        assert_eq!(bias.to_vec1::<f32>()?, vec![0.0; 6]);
        Ok(())
    }

    #[test]
    fn full_size_presets_build() -> Result<()> {
        // Building is cheap (weights are made on demand); this checks that the presets
        // name a consistent architecture.
        let vb = RandomWeights::new(0).var_builder(DType::F32, &Device::Cpu);
        let mut cfg = crate::models::clip::ClipConfig::vit_b_32();
        // Fewer layers keep the test fast; the layer shapes are the preset's.
        cfg.text.num_hidden_layers = 1;
        cfg.vision.num_hidden_layers = 1;
        let clip = crate::models::clip::Clip::new(vb.clone(), &cfg)?;
        assert_eq!(clip.image_size(), 224);
        let vq = crate::models::vqgan::VqganConfig::imagenet_f16_16384();
        assert_eq!(vq.downsample_factor(), 16);
        Ok(())
    }
}
