//! Differentiable building blocks shared by the CLIP and VQGAN models.
//!
//! Every layer here is written from candle primitives that have a backward pass, so
//! gradients flow from a CLIP loss back to the VQGAN latent. Some fused candle-nn ops
//! (`layer_norm`, `softmax_last_dim`) have no backward; they are deliberately not used.
//! Frozen weights (plain tensors: generation) go through the custom ops of
//! `models::frozen`; weights being trained (`Var`s: train-demo) through those of
//! `models::trained` on the CPU, and through the compositions here elsewhere.

use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::VarBuilder;

use super::{frozen, trained};

/// A fully connected layer, `y = x·Wᵀ + b`.
#[derive(Debug, Clone)]
pub struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    /// Loads `weight` (`[out, in]`) and `bias` (`[out]`).
    pub fn new(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Self> {
        let weight = vb.get((out_dim, in_dim), "weight")?;
        let bias = vb.get(out_dim, "bias")?;
        Ok(Self { weight, bias: Some(bias) })
    }

    /// Loads `weight` only, for the bias-free projections.
    pub fn new_no_bias(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Self> {
        let weight = vb.get((out_dim, in_dim), "weight")?;
        Ok(Self { weight, bias: None })
    }
}

impl Linear {
    /// The layers side by side as one, whose output is theirs concatenated along the
    /// last dimension: one product instead of several. Either all have a bias or none.
    pub fn stacked(layers: &[&Linear]) -> Result<Self> {
        let weights: Vec<&Tensor> = layers.iter().map(|l| &l.weight).collect();
        let weight = Tensor::cat(&weights, 0)?;
        let bias = match layers.iter().map(|l| l.bias.as_ref()).collect::<Option<Vec<_>>>() {
            Some(biases) => Some(Tensor::cat(&biases, 0)?),
            None if layers.iter().all(|l| l.bias.is_none()) => None,
            None => candle_core::bail!("stacked linear layers: some have a bias and some do not"),
        };
        Ok(Self { weight, bias })
    }

    /// Whether the layer's weights are frozen f32 (generation, not training).
    pub fn is_frozen(&self) -> bool {
        frozen::is_frozen(&self.weight) && self.bias.as_ref().is_none_or(frozen::is_frozen)
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if self.is_frozen() && x.dtype() == DType::F32 {
            return frozen::linear(x, &self.weight, self.bias.as_ref());
        }
        if trained::applies(x, &self.weight) {
            return trained::linear(x, &self.weight, self.bias.as_ref());
        }
        let y = x.broadcast_matmul(&self.weight.t()?)?;
        match &self.bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}

/// Layer normalisation over the last dimension, with a backward pass.
#[derive(Debug, Clone)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    pub fn new(dim: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        Ok(Self { weight: vb.get(dim, "weight")?, bias: vb.get(dim, "bias")?, eps })
    }
}

impl Module for LayerNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        // A layer norm is a group norm of one group over `[rows, C, 1, 1]`: the same
        // one-pass kernels, frozen or trained.
        let c = x.dim(D::Minus1)?;
        if x.dtype() == DType::F32 && c > 0 {
            let rows = x.elem_count() / c;
            if frozen::is_frozen(&self.weight) && frozen::is_frozen(&self.bias) {
                return frozen::group_norm(&x.reshape((rows, c, 1, 1))?, &self.weight, &self.bias, 1, self.eps, false)?
                    .reshape(x.shape());
            }
            if trained::applies(x, &self.weight) {
                return trained::group_norm(
                    &x.reshape((rows, c, 1, 1))?,
                    &self.weight,
                    &self.bias,
                    1,
                    self.eps,
                    false,
                )?
                .reshape(x.shape());
            }
        }
        let mean = x.mean_keepdim(D::Minus1)?;
        let centred = x.broadcast_sub(&mean)?;
        let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = centred.broadcast_div(&(var + self.eps)?.sqrt()?)?;
        normed.broadcast_mul(&self.weight)?.broadcast_add(&self.bias)
    }
}

/// Group normalisation over `[B, C, H, W]`, as `torch.nn.GroupNorm(affine=True)`.
#[derive(Debug, Clone)]
pub struct GroupNorm {
    weight: Tensor,
    bias: Tensor,
    groups: usize,
    eps: f64,
}

impl GroupNorm {
    pub fn new(groups: usize, channels: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        if groups == 0 || !channels.is_multiple_of(groups) {
            candle_core::bail!("group norm: {channels} channels do not split into {groups} groups")
        }
        Ok(Self { weight: vb.get(channels, "weight")?, bias: vb.get(channels, "bias")?, groups, eps })
    }
}

impl GroupNorm {
    /// The weights, for the fused ops of `models::frozen`.
    pub fn weights(&self) -> frozen::NormWeights {
        frozen::NormWeights { weight: self.weight.clone(), bias: self.bias.clone(), groups: self.groups, eps: self.eps }
    }

    /// `silu(norm(x))`, in one pass when the weights are frozen.
    pub fn forward_silu(&self, x: &Tensor) -> Result<Tensor> {
        if self.frozen(x) {
            return frozen::group_norm(x, &self.weight, &self.bias, self.groups, self.eps, true);
        }
        if x.rank() == 4 && trained::applies(x, &self.weight) {
            return trained::group_norm(x, &self.weight, &self.bias, self.groups, self.eps, true);
        }
        self.forward(x)?.silu()
    }

    fn frozen(&self, x: &Tensor) -> bool {
        frozen::is_frozen(&self.weight) && frozen::is_frozen(&self.bias) && x.dtype() == DType::F32 && x.rank() == 4
    }
}

impl Module for GroupNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if self.frozen(x) {
            return frozen::group_norm(x, &self.weight, &self.bias, self.groups, self.eps, false);
        }
        if x.rank() == 4 && trained::applies(x, &self.weight) {
            return trained::group_norm(x, &self.weight, &self.bias, self.groups, self.eps, false);
        }
        let (b, c, h, w) = x.dims4()?;
        let grouped = x.reshape((b, self.groups, (c / self.groups) * h * w))?;
        let mean = grouped.mean_keepdim(D::Minus1)?;
        let centred = grouped.broadcast_sub(&mean)?;
        let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = centred.broadcast_div(&(var + self.eps)?.sqrt()?)?.reshape((b, c, h, w))?;
        normed.broadcast_mul(&self.weight.reshape((1, c, 1, 1))?)?.broadcast_add(&self.bias.reshape((1, c, 1, 1))?)
    }
}

/// A 2-D convolution with square kernels, as `torch.nn.Conv2d`.
#[derive(Debug, Clone)]
pub struct Conv2d {
    weight: Tensor,
    bias: Option<Tensor>,
    stride: usize,
    padding: usize,
}

impl Conv2d {
    /// Loads `weight` (`[out, in, k, k]`) and, if `bias`, `bias` (`[out]`).
    pub fn new(
        in_ch: usize,
        out_ch: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
        bias: bool,
        vb: VarBuilder,
    ) -> Result<Self> {
        let weight = vb.get((out_ch, in_ch, kernel, kernel), "weight")?;
        let bias = if bias { Some(vb.get(out_ch, "bias")?) } else { None };
        Ok(Self { weight, bias, stride, padding })
    }
}

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

impl Conv2d {
    /// The weights of a stride-1 convolution with a bias, for the fused ops of
    /// `models::frozen`.
    pub fn weights(&self) -> Option<frozen::ConvWeights> {
        let bias = self.bias.clone()?;
        (self.stride == 1).then(|| frozen::ConvWeights { weight: self.weight.clone(), bias, padding: self.padding })
    }

    /// Nearest-neighbour 2× upsampling, then this convolution (taming's `Upsample` with
    /// `with_conv`). Frozen weights upsample through `models::frozen`.
    pub fn forward_upsampled(&self, x: &Tensor) -> Result<Tensor> {
        let up = if frozen::is_frozen(&self.weight) && x.dtype() == DType::F32 {
            frozen::upsample_nearest2x(x)?
        } else {
            let (_, _, h, w) = x.dims4()?;
            x.upsample_nearest2d(2 * h, 2 * w)?
        };
        self.forward(&up)
    }
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        conv2d_layer(x, &self.weight, self.bias.as_ref(), self.stride, self.padding)
    }
}

/// A convolution layer's forward pass: frozen weights go through `models::frozen` (no
/// weight gradients, CPU kernels); trained ones through [`conv2d`].
pub fn conv2d_layer(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    stride: usize,
    padding: usize,
) -> Result<Tensor> {
    if frozen::is_frozen(weight) && bias.is_none_or(frozen::is_frozen) && x.dtype() == DType::F32 {
        let (_, _, k, _) = weight.dims4()?;
        let (b, cin, h, w) = x.dims4()?;
        if stride == 1 && padding < k {
            return frozen::conv2d(x, weight, bias, padding);
        }
        if stride > 1 && padding < k && h + 2 * padding >= k && w + 2 * padding >= k {
            // A strided convolution (the VQGAN encoder's downsampling) as the stride-1
            // one on the fast kernels, then every stride-th row and column: four times
            // the products at stride 2, still far cheaper than gathering patches.
            let full = frozen::conv2d(x, weight, bias, padding)?;
            let (_, cout, fh, fw) = full.dims4()?;
            let (ho, wo) = ((fh - 1) / stride + 1, (fw - 1) / stride + 1);
            let full = full.pad_with_zeros(2, 0, ho * stride - fh)?.pad_with_zeros(3, 0, wo * stride - fw)?;
            return full
                .reshape((b, cout, ho, stride, wo, stride))?
                .narrow(3, 0, 1)?
                .narrow(5, 0, 1)?
                .contiguous()?
                .reshape((b, cout, ho, wo));
        }
        if stride == k && padding == 0 && h % k == 0 && w % k == 0 {
            // Non-overlapping patches (a ViT's patch embedding): a frozen linear layer
            // over the flattened patches.
            let (ho, wo) = (h / k, w / k);
            let patches =
                x.reshape((b, cin, ho, k, wo, k))?.permute((0, 2, 4, 1, 3, 5))?.reshape((b, ho * wo, cin * k * k))?;
            let cout = weight.dim(0)?;
            let y = frozen::linear(&patches, &weight.reshape((cout, cin * k * k))?, bias)?;
            return y.transpose(1, 2)?.reshape((b, cout, ho, wo));
        }
    }
    let (_, _, k, _) = weight.dims4()?;
    let y = if stride == 1 && padding < k && trained::applies(x, weight) {
        trained::conv2d(x, weight, padding)?
    } else {
        conv2d(x, weight, stride, padding)?
    };
    match bias {
        Some(b) => y.broadcast_add(&b.reshape((1, b.dim(0)?, 1, 1))?),
        None => Ok(y),
    }
}

/// Softmax over the last dimension, built from ops that have a backward pass.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&max)?.exp()?;
    e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
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

/// `arcsin`, differentiable: the value comes from the host (the tensors it is used on
/// are small: one distance per cutout and prompt), and one Newton step from that
/// detached value restores the exact derivative `1/√(1−x²)` in the graph.
pub fn asin(x: &Tensor) -> Result<Tensor> {
    let dtype = x.dtype();
    let host: Vec<f64> = x.detach().to_dtype(DType::F64)?.flatten_all()?.to_vec1()?;
    let y0: Vec<f64> = host.iter().map(|v| v.clamp(-1.0, 1.0).asin()).collect();
    let y0 = Tensor::from_vec(y0, x.shape(), x.device())?.to_dtype(dtype)?;
    // y = y0 + (x − sin y0) / cos y0: equal to y0 in value, d y / d x = 1 / cos y0.
    let correction = (x - y0.sin()?)?.div(&y0.cos()?)?;
    y0 + correction
}

/// The spherical distance loss of the z+quantize notebook:
/// `2·arcsin(‖a−b‖/2)²` for unit vectors `a`, `b` along the last dimension.
pub fn spherical_dist(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let d = a.broadcast_sub(b)?.sqr()?.sum(D::Minus1)?.sqrt()?;
    asin(&(d / 2.0)?)?.sqr()? * 2.0
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// Checks autograd's gradient of the scalar `f(x)` against central finite
    /// differences, in f64, at every element of `x`.
    pub(crate) fn check_gradient(name: &str, x: &Tensor, f: impl Fn(&Tensor) -> Result<Tensor>) {
        let var = Var::from_tensor(&x.to_dtype(DType::F64).unwrap()).unwrap();
        let grads = f(var.as_tensor()).unwrap().backward().unwrap();
        let analytic: Vec<f64> = grads.get(var.as_tensor()).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        let base: Vec<f64> = var.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
        let h = 1e-6;
        for i in 0..base.len() {
            let eval = |delta: f64| -> f64 {
                let mut v = base.clone();
                v[i] += delta;
                let t = Tensor::from_vec(v, x.shape(), x.device()).unwrap();
                f(&t).unwrap().to_scalar::<f64>().unwrap()
            };
            let numeric = (eval(h) - eval(-h)) / (2.0 * h);
            let tol = 1e-5 * (1.0 + numeric.abs());
            assert!(
                (numeric - analytic[i]).abs() <= tol,
                "{name}: d/dx[{i}] autograd {} vs numeric {numeric}",
                analytic[i]
            );
        }
    }

    fn randn(shape: &[usize], seed: u64) -> Tensor {
        // A small deterministic generator keeps these tests independent of candle's RNG.
        let mut s = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        let n: usize = shape.iter().product();
        let v: Vec<f64> = (0..n)
            .map(|_| {
                s = s.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                #[expect(clippy::cast_precision_loss, reason = "test data")]
                let u = (s >> 11) as f64 / (1u64 << 53) as f64;
                u * 2.0 - 1.0
            })
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    fn weighted_sum(y: &Tensor, seed: u64) -> Result<Tensor> {
        let w = randn(y.dims(), seed);
        y.mul(&w)?.sum_all()
    }

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
    fn layer_norm_gradient() {
        let ln = LayerNorm { weight: randn(&[6], 1), bias: randn(&[6], 2), eps: 1e-5 };
        check_gradient("layer_norm", &randn(&[2, 3, 6], 3), |x| weighted_sum(&ln.forward(x)?, 4));
    }

    #[test]
    fn group_norm_gradient() {
        let gn = GroupNorm { weight: randn(&[4], 1), bias: randn(&[4], 2), groups: 2, eps: 1e-6 };
        check_gradient("group_norm", &randn(&[1, 4, 3, 3], 5), |x| weighted_sum(&gn.forward(x)?, 6));
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
    fn linear_and_conv_gradient() {
        let lin = Linear { weight: randn(&[3, 4], 1), bias: Some(randn(&[3], 2)) };
        check_gradient("linear", &randn(&[2, 4], 3), |x| weighted_sum(&lin.forward(x)?, 4));
        let conv = Conv2d { weight: randn(&[2, 3, 3, 3], 5), bias: Some(randn(&[2], 6)), stride: 2, padding: 1 };
        check_gradient("conv2d", &randn(&[1, 3, 5, 5], 7), |x| weighted_sum(&conv.forward(x)?, 8));
    }

    #[test]
    fn resampling_gradient() {
        check_gradient("upsample_nearest", &randn(&[1, 2, 3, 3], 1), |x| weighted_sum(&x.upsample_nearest2d(6, 6)?, 2));
        check_gradient("pad", &randn(&[1, 2, 3, 3], 3), |x| {
            weighted_sum(&x.pad_with_zeros(3, 0, 1)?.pad_with_zeros(2, 0, 1)?, 4)
        });
    }

    #[test]
    fn asin_and_spherical_distance_gradient() {
        let x = (randn(&[8], 1) * 0.9).unwrap();
        check_gradient("asin", &x, |x| weighted_sum(&asin(x)?, 2));
        let b = l2_normalize(&randn(&[3, 5], 3)).unwrap();
        check_gradient("spherical_dist", &randn(&[3, 5], 4), |a| spherical_dist(&l2_normalize(a)?, &b)?.mean_all());
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
