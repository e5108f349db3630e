//! The layers shared by the CLIP, VQGAN and one-step models: Linear, LayerNorm,
//! GroupNorm and Conv2d (with `conv2d_layer`, a convolution's forward pass for weights
//! held outside a layer). Each runs as [`ops::path`] picks for its input and weights:
//! frozen weights (plain tensors: generation) through the custom ops of `models::ops`
//! that make no weight gradients; weights being trained (`Var`s: train-demo) through
//! those of `ops::training` on the CPU; anything else through compositions of candle
//! ops with backward passes (`ops::composed`, and the norms' own here).

use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::VarBuilder;

use super::ops::{self, composed, conv, group_norm, linear, resnet, training, upsample, Path};

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

    /// The weight (`[out, in]`) and the bias (`[out]`), if any.
    pub fn parts(&self) -> (&Tensor, Option<&Tensor>) {
        (&self.weight, self.bias.as_ref())
    }

    /// Whether the layer's weights are frozen f32 (generation, not training).
    pub fn is_frozen(&self) -> bool {
        match &self.bias {
            Some(b) => ops::frozen(&[&self.weight, b]),
            None => ops::frozen(&[&self.weight]),
        }
    }

    /// The form the layer runs as on `x` (and, as the model's frozen or trained state,
    /// the ops that follow it).
    pub fn path(&self, x: &Tensor) -> Path {
        match &self.bias {
            Some(b) => ops::path(x, &[&self.weight, b]),
            None => ops::path(x, &[&self.weight]),
        }
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self.path(x) {
            Path::Frozen => linear::linear(x, &self.weight, self.bias.as_ref()),
            Path::Trained => training::linear(x, &self.weight, self.bias.as_ref()),
            Path::Composed => {
                let y = x.broadcast_matmul(&self.weight.t()?)?;
                match &self.bias {
                    Some(b) => y.broadcast_add(b),
                    None => Ok(y),
                }
            }
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

    /// The scale, the shift and epsilon.
    pub fn parts(&self) -> (&Tensor, &Tensor, f64) {
        (&self.weight, &self.bias, self.eps)
    }
}

impl Module for LayerNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        // A layer norm is a group norm of one group over `[rows, C, 1, 1]`: the same
        // one-pass kernels, frozen or trained.
        let c = x.dim(D::Minus1)?;
        if x.dtype() == DType::F32 && c > 0 {
            let rows = x.elem_count() / c;
            match ops::path(x, &[&self.weight, &self.bias]) {
                Path::Frozen => {
                    return group_norm::group_norm(
                        &x.reshape((rows, c, 1, 1))?,
                        &self.weight,
                        &self.bias,
                        1,
                        self.eps,
                        false,
                    )?
                    .reshape(x.shape());
                }
                Path::Trained => {
                    return training::group_norm(
                        &x.reshape((rows, c, 1, 1))?,
                        &self.weight,
                        &self.bias,
                        1,
                        self.eps,
                        false,
                    )?
                    .reshape(x.shape());
                }
                Path::Composed => {}
            }
        }
        // In half precision the statistics are taken in f32, as PyTorch's autocast does:
        // squares of the residual stream overflow f16.
        let (dtype, x) = (x.dtype(), ops::composed::widened(x)?);
        let mean = x.mean_keepdim(D::Minus1)?;
        let centred = x.broadcast_sub(&mean)?;
        let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = centred.broadcast_div(&(var + self.eps)?.sqrt()?)?.to_dtype(dtype)?;
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
    /// The weights, for the fused resnet block of `ops::resnet`.
    pub fn weights(&self) -> resnet::NormWeights {
        resnet::NormWeights { weight: self.weight.clone(), bias: self.bias.clone(), groups: self.groups, eps: self.eps }
    }

    /// `silu(norm(x))`, in one pass when the weights are frozen or trained.
    pub fn forward_silu(&self, x: &Tensor) -> Result<Tensor> {
        match self.path(x) {
            Path::Frozen => group_norm::group_norm(x, &self.weight, &self.bias, self.groups, self.eps, true),
            Path::Trained => training::group_norm(x, &self.weight, &self.bias, self.groups, self.eps, true),
            Path::Composed => self.forward(x)?.silu(),
        }
    }

    /// The form the norm runs as on `x`: the custom ops take `[B, C, H, W]` only.
    fn path(&self, x: &Tensor) -> Path {
        if x.rank() == 4 {
            ops::path(x, &[&self.weight, &self.bias])
        } else {
            Path::Composed
        }
    }
}

impl Module for GroupNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self.path(x) {
            Path::Frozen => {
                return group_norm::group_norm(x, &self.weight, &self.bias, self.groups, self.eps, false);
            }
            Path::Trained => {
                return training::group_norm(x, &self.weight, &self.bias, self.groups, self.eps, false);
            }
            Path::Composed => {}
        }
        let (b, c, h, w) = x.dims4()?;
        // Statistics in f32 for half-precision inputs, as under autocast.
        let (dtype, x) = (x.dtype(), ops::composed::widened(x)?);
        let grouped = x.reshape((b, self.groups, (c / self.groups) * h * w))?;
        let mean = grouped.mean_keepdim(D::Minus1)?;
        let centred = grouped.broadcast_sub(&mean)?;
        let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = centred.broadcast_div(&(var + self.eps)?.sqrt()?)?.reshape((b, c, h, w))?.to_dtype(dtype)?;
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

impl Conv2d {
    /// The weights of a stride-1 convolution with a bias, for the fused resnet block of
    /// `ops::resnet`.
    pub fn weights(&self) -> Option<resnet::ConvWeights> {
        let bias = self.bias.clone()?;
        (self.stride == 1).then(|| resnet::ConvWeights { weight: self.weight.clone(), bias, padding: self.padding })
    }

    /// Nearest-neighbour 2× upsampling, then this convolution (taming's `Upsample` with
    /// `with_conv`). Frozen weights upsample through `ops::upsample`.
    pub fn forward_upsampled(&self, x: &Tensor) -> Result<Tensor> {
        self.forward(&self.upsampled(x)?)
    }

    /// `x` upsampled 2× by its nearest neighbours, through `ops::upsample` for frozen
    /// weights.
    fn upsampled(&self, x: &Tensor) -> Result<Tensor> {
        if ops::path(x, &[&self.weight]) == Path::Frozen {
            upsample::upsample_nearest2x(x)
        } else {
            let (_, _, h, w) = x.dims4()?;
            x.upsample_nearest2d(2 * h, 2 * w)
        }
    }
}

impl Conv2d {
    /// This convolution with its padding taken from the opposite edges of `x` (PyTorch's
    /// `padding_mode="circular"`): the output of an input seen on a torus, so that a tile
    /// of it continues across its own edges.
    pub fn forward_circular(&self, x: &Tensor) -> Result<Tensor> {
        let k = self.weight.dim(3)?;
        let frozen = match &self.bias {
            Some(b) => ops::path(x, &[&self.weight, b]),
            None => ops::path(x, &[&self.weight]),
        } == Path::Frozen;
        if frozen && self.stride == 1 && k == 2 * self.padding + 1 {
            // The kernels pad circularly themselves (and Winograd serves the 3×3s).
            return conv::conv2d_circular(x, &self.weight, self.bias.as_ref(), self.padding);
        }
        conv2d_layer(&composed::pad_circular(x, self.padding)?, &self.weight, self.bias.as_ref(), self.stride, 0)
    }

    /// [`Self::forward_upsampled`] with circular padding.
    pub fn forward_upsampled_circular(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_circular(&self.upsampled(x)?)
    }
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        conv2d_layer(x, &self.weight, self.bias.as_ref(), self.stride, self.padding)
    }
}

/// How a convolution with frozen weights runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FrozenConv {
    /// Stride 1: the frozen convolution op.
    Direct,
    /// Non-overlapping patches (a ViT's patch embedding): a frozen linear layer over
    /// the flattened patches.
    Patches,
    /// Another stride (the VQGAN encoder's downsampling): the stride-1 convolution on
    /// the fast kernels, then every stride-th row and column — four times the products
    /// at stride 2, still far cheaper than gathering patches, but `k²` times the work
    /// (and a `k²` times larger output) where the stride is the kernel's size.
    Strided,
    /// None of these: the composed convolution.
    Composed,
}

/// Which [`FrozenConv`] a `k×k` kernel at `stride` and `padding` over `h×w` takes.
/// Patches come before the strided case: for ViT-B/32's patch embedding that would be
/// 1024 times the work and a `768×193×193` output per cutout kept for the backward
/// pass (0.5 GB each; 19 GB with 32 cutouts at 128²).
fn frozen_conv(k: usize, stride: usize, padding: usize, h: usize, w: usize) -> FrozenConv {
    if stride == 1 && padding < k {
        FrozenConv::Direct
    } else if stride == k && padding == 0 && h.is_multiple_of(k) && w.is_multiple_of(k) {
        FrozenConv::Patches
    } else if stride > 1 && padding < k && h + 2 * padding >= k && w + 2 * padding >= k {
        FrozenConv::Strided
    } else {
        FrozenConv::Composed
    }
}

/// A convolution layer's forward pass: frozen weights go through `ops::conv` (no weight
/// gradients, CPU kernels); trained ones through `ops::training` on the CPU (stride 1)
/// or else through the composed [`composed::conv2d`].
pub fn conv2d_layer(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    stride: usize,
    padding: usize,
) -> Result<Tensor> {
    let path = match bias {
        Some(b) => ops::path(x, &[weight, b]),
        None => ops::path(x, &[weight]),
    };
    if path == Path::Frozen {
        let (_, _, k, _) = weight.dims4()?;
        let (b, cin, h, w) = x.dims4()?;
        match frozen_conv(k, stride, padding, h, w) {
            FrozenConv::Direct => return conv::conv2d(x, weight, bias, padding),
            FrozenConv::Patches => {
                let (ho, wo) = (h / k, w / k);
                let patches = x.reshape((b, cin, ho, k, wo, k))?.permute((0, 2, 4, 1, 3, 5))?.reshape((
                    b,
                    ho * wo,
                    cin * k * k,
                ))?;
                let cout = weight.dim(0)?;
                let y = linear::linear(&patches, &weight.reshape((cout, cin * k * k))?, bias)?;
                return y.transpose(1, 2)?.reshape((b, cout, ho, wo));
            }
            FrozenConv::Strided => {
                let full = conv::conv2d(x, weight, bias, padding)?;
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
            FrozenConv::Composed => {}
        }
    }
    let (_, _, k, _) = weight.dims4()?;
    let y = if stride == 1 && padding < k && path == Path::Trained {
        training::conv2d(x, weight, padding)?
    } else {
        composed::conv2d(x, weight, stride, padding)?
    };
    match bias {
        Some(b) => y.broadcast_add(&b.reshape((1, b.dim(0)?, 1, 1))?),
        None => Ok(y),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::testing::{check_gradient, randn, weighted_sum};

    #[test]
    fn a_vit_patch_embedding_runs_as_patches_and_a_downsampling_as_strided() {
        // ViT-B/32 and the shapes world's CLIP: never the stride-1 convolution first.
        assert_eq!(frozen_conv(32, 32, 0, 224, 224), FrozenConv::Patches);
        assert_eq!(frozen_conv(8, 8, 0, 64, 64), FrozenConv::Patches);
        // The VQGAN encoder's downsampling (3×3, stride 2, padded beforehand).
        assert_eq!(frozen_conv(3, 2, 0, 65, 65), FrozenConv::Strided);
        assert_eq!(frozen_conv(3, 1, 1, 64, 64), FrozenConv::Direct);
        assert_eq!(frozen_conv(8, 8, 0, 60, 60), FrozenConv::Strided);
        assert_eq!(frozen_conv(3, 2, 0, 2, 2), FrozenConv::Composed);
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
}
