//! The reference forms of the ops, composed from candle primitives that have a backward
//! pass, so gradients flow from a CLIP loss back to the VQGAN latent: softmax, the
//! activations, an im2col convolution, and the maths of the losses (`l2_normalize`,
//! `spherical_dist`). Some fused candle-nn ops (`layer_norm`, `softmax_last_dim`) have no
//! backward; they are deliberately not used. The layers of `models::nn` run these forms
//! when neither the frozen nor the trained custom ops apply ([`super::Path::Composed`]),
//! and the custom ops are tested against them.

use candle_core::{DType, Result, Tensor, D};

/// A 2-D convolution (`[B, Cin, H, W]` by `[Cout, Cin, k, k]`) as one matrix product
/// over gathered patches (im2col), built from ops with cheap backward passes: the
/// shifted views are `narrow`s, the gather a `cat`, the product a batched `matmul`.
/// candle's own conv2d backward goes through a direct `conv_transpose2d` that is an
/// order of magnitude slower on the CPU.
pub fn conv2d(x: &Tensor, w: &Tensor, stride: usize, padding: usize) -> Result<Tensor> {
    let (b, cin, _, _) = x.dims4()?;
    let (cout, wcin, k, k2) = w.dims4()?;
    if wcin != cin || k != k2 || stride == 0 {
        candle_core::bail!("conv2d: input {:?} does not fit kernel {:?} (stride {stride})", x.dims(), w.dims());
    }
    let x = if padding > 0 {
        x.pad_with_zeros(2, padding, padding)?.pad_with_zeros(3, padding, padding)?
    } else {
        x.clone()
    };
    let (_, _, hp, wp) = x.dims4()?;
    if hp < k || wp < k {
        candle_core::bail!("conv2d: input {hp}x{wp} is smaller than the {k}x{k} kernel");
    }
    let (ho, wo) = ((hp - k) / stride + 1, (wp - k) / stride + 1);
    let cols = if k == 1 && stride == 1 {
        x.reshape((b, cin, ho * wo))?
    } else if k == stride && hp == ho * k && wp == wo * k {
        // Non-overlapping patches (a ViT's patch embedding): a reshape and a permute.
        x.reshape((b, cin, ho, k, wo, k))?.permute((0, 1, 3, 5, 2, 4))?.reshape((b, cin * k * k, ho * wo))?
    } else {
        let mut views = Vec::with_capacity(k * k);
        for ky in 0..k {
            for kx in 0..k {
                let mut v = x.narrow(2, ky, (ho - 1) * stride + 1)?.narrow(3, kx, (wo - 1) * stride + 1)?;
                if stride > 1 {
                    // Every stride-th row and column: pad to a multiple, fold, take index 0.
                    v = v.pad_with_zeros(2, 0, stride - 1)?.pad_with_zeros(3, 0, stride - 1)?;
                    v = v.reshape((b, cin, ho, stride, wo, stride))?.narrow(3, 0, 1)?.narrow(5, 0, 1)?;
                    v = v.reshape((b, cin, ho, wo))?;
                }
                views.push(v);
            }
        }
        // Order (ky, kx, cin) — the weight is permuted to match.
        Tensor::cat(&views, 1)?.reshape((b, k * k * cin, ho * wo))?
    };
    let wmat = if k == 1 {
        w.reshape((cout, cin))?
    } else if k == stride && hp == ho * k && wp == wo * k {
        w.reshape((cout, cin * k * k))?
    } else {
        w.permute((0, 2, 3, 1))?.reshape((cout, k * k * cin))?
    };
    wmat.broadcast_matmul(&cols.contiguous()?)?.reshape((b, cout, ho, wo))
}

/// Softmax over the last dimension, built from ops that have a backward pass; in f32
/// for a half-precision input (as PyTorch's autocast runs it), returned in the input's
/// format.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    let (dtype, x) = (x.dtype(), widened(x)?);
    let max = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&max)?.exp()?;
    e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?.to_dtype(dtype)
}

/// `x` in f32 when it is in a half-precision format (f16, bf16), else `x` itself: where
/// autocast computes in f32 (norms' statistics, softmax).
pub fn widened(x: &Tensor) -> Result<Tensor> {
    match x.dtype() {
        DType::F16 | DType::BF16 => x.to_dtype(DType::F32),
        _ => Ok(x.clone()),
    }
}

/// The format the values a network hands back are in: f32 for a network whose weights
/// are in half precision (the latent, cutouts and losses stay f32, as under autocast),
/// else its own.
pub fn io_dtype(weights: DType) -> DType {
    match weights {
        DType::F16 | DType::BF16 => DType::F32,
        other => other,
    }
}

/// `x · sigmoid(1.702 x)`, OpenAI CLIP's activation.
pub fn quick_gelu(x: &Tensor) -> Result<Tensor> {
    let s = ((x * -1.702)?.exp()? + 1.0)?;
    x.div(&s)
}

/// The activations a CLIP `config.json` can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    QuickGelu,
    Gelu,
}

impl Activation {
    pub fn forward(self, x: &Tensor) -> Result<Tensor> {
        match self {
            Self::QuickGelu => quick_gelu(x),
            Self::Gelu => x.gelu_erf(),
        }
    }
}

/// Normalises along the last dimension to unit L2 length.
pub fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    let norm = x.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?;
    x.broadcast_div(&norm)
}

/// `arcsin`, differentiable, computed where `x` lives (no trip to the host: on a GPU the
/// loss stays on the device). A first value comes from Abramowitz & Stegun 4.4.46,
/// `asin|x| = π/2 − √(1−|x|)·Σ aₖ|x|ᵏ` (error ≤ 2·10⁻⁸), detached; one Newton step
/// from it, `y = y0 + (x − sin y0) / cos y0`, refines the value to the format's precision
/// and puts the exact derivative `1/cos y0 = 1/√(1−x²)` in the graph.
pub fn asin(x: &Tensor) -> Result<Tensor> {
    const A: [f64; 8] = [
        1.570_796_305_0,
        -0.214_598_801_6,
        0.088_978_987_4,
        -0.050_174_304_6,
        0.030_891_881_0,
        -0.017_088_125_6,
        0.006_670_090_1,
        -0.001_262_491_1,
    ];
    let xd = x.detach().clamp(-1.0, 1.0)?;
    let a = xd.abs()?;
    let mut poly = (a.ones_like()? * A[7])?;
    for &c in A[..7].iter().rev() {
        poly = ((poly * &a)? + c)?;
    }
    let magnitude = ((a.affine(-1.0, 1.0)?.sqrt()? * poly)?.affine(-1.0, std::f64::consts::FRAC_PI_2))?;
    let y0 = (magnitude * xd.sign()?)?;
    // y = y0 + (x − sin y0) / cos y0: y0 refined in value, d y / d x = 1 / cos y0.
    let correction = (x - y0.sin()?)?.div(&y0.cos()?)?;
    y0 + correction
}

/// The spherical distance loss of the z+quantize notebook:
/// `2·arcsin(‖a−b‖/2)²` for unit vectors `a`, `b` along the last dimension.
pub fn spherical_dist(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let d = a.broadcast_sub(b)?.sqr()?.sum(D::Minus1)?.sqrt()?;
    asin(&(d / 2.0)?)?.sqr()? * 2.0
}

/// `x` (`[B, C, H, W]`) padded by `p` on every side with the rows and columns of the
/// opposite side, as `torch.nn.functional.pad(x, (p, p, p, p), mode="circular")`.
pub fn pad_circular(x: &Tensor, p: usize) -> Result<Tensor> {
    if p == 0 {
        return Ok(x.clone());
    }
    let (_, _, h, w) = x.dims4()?;
    if p > h || p > w {
        candle_core::bail!("circular padding of {p} is more than the {h}x{w} input");
    }
    let x = Tensor::cat(&[&x.narrow(3, w - p, p)?, x, &x.narrow(3, 0, p)?], 3)?;
    Tensor::cat(&[&x.narrow(2, h - p, p)?, &x, &x.narrow(2, 0, p)?], 2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::testing::{check_gradient, randn, weighted_sum};
    use candle_core::Device;

    #[test]
    fn conv2d_matches_candles_convolution_and_its_gradient_is_exact() {
        // (k, stride, padding, input side): 3x3 same, 1x1, taming's stride-2 downsample
        // (after its own asymmetric pad), a ViT patch embedding, an odd size.
        for (i, (k, stride, pad, side)) in
            [(3, 1, 1, 6), (1, 1, 0, 5), (3, 2, 0, 7), (4, 4, 0, 8), (3, 2, 1, 5)].into_iter().enumerate()
        {
            let seed = i as u64 * 10;
            let x = randn(&[2, 3, side, side], seed);
            let w = randn(&[4, 3, k, k], seed + 1);
            let ours = conv2d(&x, &w, stride, pad).unwrap();
            let theirs = x.conv2d(&w, pad, stride, 1, 1).unwrap();
            assert_eq!(ours.dims(), theirs.dims(), "k{k} s{stride} p{pad}");
            let diff = (ours - theirs).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f64>().unwrap();
            assert!(diff < 1e-12, "k{k} s{stride} p{pad}: {diff}");
            check_gradient("conv2d input", &x, |x| weighted_sum(&conv2d(x, &w, stride, pad)?, seed + 2));
            check_gradient("conv2d weight", &w, |w| weighted_sum(&conv2d(&x, w, stride, pad)?, seed + 3));
        }
    }

    #[test]
    fn softmax_gradient() {
        check_gradient("softmax", &randn(&[2, 5], 7), |x| weighted_sum(&softmax_last_dim(&(x * 3.0)?)?, 8));
    }

    #[test]
    fn activations_gradient() {
        check_gradient("quick_gelu", &randn(&[10], 9), |x| weighted_sum(&quick_gelu(&(x * 3.0)?)?, 10));
        check_gradient("gelu", &randn(&[10], 11), |x| weighted_sum(&Activation::Gelu.forward(&(x * 3.0)?)?, 12));
        check_gradient("silu", &randn(&[10], 13), |x| weighted_sum(&(x * 3.0)?.silu()?, 14));
    }

    #[test]
    fn asin_and_spherical_distance_gradient() {
        let x = (randn(&[8], 1) * 0.9).unwrap();
        check_gradient("asin", &x, |x| weighted_sum(&asin(x)?, 2));
        let b = l2_normalize(&randn(&[3, 5], 3)).unwrap();
        check_gradient("spherical_dist", &randn(&[3, 5], 4), |a| spherical_dist(&l2_normalize(a)?, &b)?.mean_all());
    }

    #[test]
    fn asin_in_f32_is_within_two_ulps_of_the_exact_value_over_the_whole_range() {
        let xs: Vec<f32> = (0..=2000).map(|i| i as f32 / 1000.0 - 1.0).collect();
        let got: Vec<f32> = asin(&Tensor::new(xs.as_slice(), &Device::Cpu).unwrap()).unwrap().to_vec1().unwrap();
        for (x, g) in xs.iter().zip(got) {
            let want = f64::from(*x).asin();
            // Two ulps of the result (the edges ±1 included, where the step is flat).
            assert!((f64::from(g) - want).abs() <= 2.5e-7 * want.abs().max(1e-3), "asin({x}) = {g}, not {want}");
        }
    }

    #[test]
    fn asin_value_is_exact() {
        let x = Tensor::new(&[-0.99f64, -0.5, 0.0, 0.3, 0.999], &Device::Cpu).unwrap();
        let got: Vec<f64> = asin(&x).unwrap().to_vec1().unwrap();
        for (g, v) in got.iter().zip([-0.99f64, -0.5, 0.0, 0.3, 0.999]) {
            assert!((g - v.asin()).abs() < 1e-12);
        }
    }
}
