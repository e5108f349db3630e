//! The VQGAN's whole resnet block with frozen weights as one candle custom op on the CPU:
//! GroupNorm+SiLU, convolution, GroupNorm+SiLU, convolution and the shortcut in one
//! call forward, and back as one chain of kernels into the input's gradient.

use candle_core::{bail, CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor};

use super::storage::{dense, input_slice, is_frozen, with_cpu_slices, Saved};
use crate::models::kernels::{self, ConvShape, GroupSpec};

/// A frozen group normalisation's weights.
#[derive(Debug, Clone)]
pub struct NormWeights {
    pub weight: Tensor,
    pub bias: Tensor,
    pub groups: usize,
    pub eps: f64,
}

/// A frozen stride-1 convolution's weights (`[out, in, k, k]`) and padding.
#[derive(Debug, Clone)]
pub struct ConvWeights {
    pub weight: Tensor,
    pub bias: Tensor,
    pub padding: usize,
}

/// The VQGAN's resnet block: `shortcut(x) + conv2(silu(norm2(conv1(silu(norm1(x))))))`,
/// where `shortcut` is a 1×1 convolution when the channel count changes and the identity
/// otherwise. Only made by [`ResnetWeights::new`], so every one fits the fused op.
#[derive(Debug, Clone)]
pub struct ResnetWeights {
    norm1: NormWeights,
    conv1: ConvWeights,
    norm2: NormWeights,
    conv2: ConvWeights,
    shortcut: Option<ConvWeights>,
}

impl ResnetWeights {
    /// The block's weights, or `None` unless every weight is frozen f32 and every
    /// convolution fits the kernels.
    pub fn new(
        norm1: NormWeights,
        conv1: ConvWeights,
        norm2: NormWeights,
        conv2: ConvWeights,
        shortcut: Option<ConvWeights>,
    ) -> Option<Self> {
        let weights = Self { norm1, conv1, norm2, conv2, shortcut };
        weights.applies().then_some(weights)
    }

    /// Every weight, in the order the kernels read them: the norms' and convolutions'
    /// weights and biases, the shortcut's last.
    pub fn tensors(&self) -> Vec<&Tensor> {
        let mut ts = vec![
            &self.norm1.weight,
            &self.norm1.bias,
            &self.conv1.weight,
            &self.conv1.bias,
            &self.norm2.weight,
            &self.norm2.bias,
            &self.conv2.weight,
            &self.conv2.bias,
        ];
        if let Some(s) = &self.shortcut {
            ts.extend([&s.weight, &s.bias]);
        }
        ts
    }

    fn applies(&self) -> bool {
        let norm = |n: &NormWeights| is_frozen(&n.weight) && is_frozen(&n.bias);
        let conv = |c: &ConvWeights| {
            is_frozen(&c.weight)
                && is_frozen(&c.bias)
                && c.weight.dims4().is_ok_and(|(_, _, k, k2)| k == k2 && c.padding < k)
        };
        let shortcut = |s: &ConvWeights| conv(s) && s.padding == 0 && s.weight.dims4().is_ok_and(|d| d.2 == 1);
        [&self.norm1, &self.norm2].into_iter().all(norm)
            && [&self.conv1, &self.conv2].into_iter().all(conv)
            && self.shortcut.as_ref().is_none_or(shortcut)
    }
}

/// [`ResnetWeights`]' block on a CPU tensor as one op: one pass forward, and on the way
/// back one chain of kernels into a single gradient, where candle's graph would hold
/// every intermediate and, for each of its eight edges, allocate a zero gradient and add
/// into it. Keeps the input (as candle does) and the first convolution's output.
pub fn resnet_block(x: &Tensor, weights: &ResnetWeights) -> Result<Tensor> {
    block(x, weights, false)
}

/// [`resnet_block`] with its convolutions padded circularly (the VQGAN's seamless
/// decoding: `Conv2d::forward_circular`'s padding, in the kernels).
pub fn resnet_block_circular(x: &Tensor, weights: &ResnetWeights) -> Result<Tensor> {
    block(x, weights, true)
}

fn block(x: &Tensor, weights: &ResnetWeights, circular: bool) -> Result<Tensor> {
    if !x.device().is_cpu() || x.dtype() != DType::F32 {
        bail!("fused resnet block: needs a CPU f32 input")
    }
    x.dims4()?;
    if circular {
        for c in [&weights.conv1, &weights.conv2] {
            let k = c.weight.dim(3)?;
            if k != 2 * c.padding + 1 {
                bail!("fused resnet block: circular padding {} does not keep the size with a {k}x{k} kernel", c.padding)
            }
        }
    }
    dense(x)?.apply_op1(ResnetOp { weights: weights.clone(), circular, saved: Saved::default() })
}

struct ResnetOp {
    weights: ResnetWeights,
    /// The convolutions pad circularly.
    circular: bool,
    /// The first convolution's output, from the forward pass, for the backward pass.
    saved: Saved,
}

/// The shape of a convolution with `c`'s kernel over `[batch, cin, h, w]`.
fn conv_shape(c: &ConvWeights, batch: usize, h: usize, w: usize, circular: bool) -> Result<ConvShape> {
    let (cout, cin, k, _) = c.weight.dims4()?;
    Ok(ConvShape { batch, cin, cout, h, w, k, padding: c.padding, circular })
}

/// The shape of the input gradient's convolution (the flipped, transposed kernel).
fn conv_shape_back(c: &ConvWeights, batch: usize, h: usize, w: usize, circular: bool) -> Result<ConvShape> {
    let (cout, cin, k, _) = c.weight.dims4()?;
    Ok(ConvShape { batch, cin: cout, cout: cin, h, w, k, padding: k - 1 - c.padding, circular })
}

impl ResnetOp {
    /// The weights, dense, in the order the kernels' slices are read.
    fn tensors(&self) -> Result<Vec<Tensor>> {
        self.weights.tensors().into_iter().map(dense).collect()
    }

    /// The first convolution's output `h1` and the block's output.
    fn forward(&self, x: &[f32], dims: (usize, usize, usize, usize)) -> Result<(Vec<f32>, Vec<f32>)> {
        let (b, c, h, w) = dims;
        let wt = &self.weights;
        with_cpu_slices(&self.tensors()?, |p| {
            let spec1 = GroupSpec::new(&[b, c, h, w], wt.norm1.groups, wt.norm1.eps, true)?;
            let a1 = kernels::group_norm(x, p[0], p[1], spec1)?;
            let s1 = conv_shape(&wt.conv1, b, h, w, self.circular)?;
            let h1 = kernels::conv2d_same(&a1, p[2], Some(p[3]), s1, false)?;
            drop(a1);
            let spec2 = GroupSpec::new(&[b, s1.cout, h, w], wt.norm2.groups, wt.norm2.eps, true)?;
            let a2 = kernels::group_norm(&h1, p[4], p[5], spec2)?;
            let mut out =
                kernels::conv2d_same(&a2, p[6], Some(p[7]), conv_shape(&wt.conv2, b, h, w, self.circular)?, false)?;
            drop(a2);
            match &wt.shortcut {
                Some(s) => {
                    let short =
                        kernels::conv2d_same(x, p[8], Some(p[9]), conv_shape(s, b, h, w, self.circular)?, false)?;
                    out.iter_mut().zip(&short).for_each(|(o, &v)| *o += v);
                }
                None => out.iter_mut().zip(x).for_each(|(o, &v)| *o += v),
            }
            Ok((h1, out))
        })
    }

    /// The input's gradient from the output's.
    fn backward(&self, x: &[f32], h1: &[f32], dy: &[f32], dims: (usize, usize, usize, usize)) -> Result<Vec<f32>> {
        let (b, c, h, w) = dims;
        let wt = &self.weights;
        with_cpu_slices(&self.tensors()?, |p| {
            let mid = wt.conv1.weight.dim(0)?;
            let da2 = kernels::conv2d_same(dy, p[6], None, conv_shape_back(&wt.conv2, b, h, w, self.circular)?, true)?;
            let spec2 = GroupSpec::new(&[b, mid, h, w], wt.norm2.groups, wt.norm2.eps, true)?;
            let (dh1, _) = kernels::group_norm_backward(h1, &da2, p[4], p[5], spec2, false)?;
            drop(da2);
            let da1 =
                kernels::conv2d_same(&dh1, p[2], None, conv_shape_back(&wt.conv1, b, h, w, self.circular)?, true)?;
            drop(dh1);
            let spec1 = GroupSpec::new(&[b, c, h, w], wt.norm1.groups, wt.norm1.eps, true)?;
            let (mut dx, _) = kernels::group_norm_backward(x, &da1, p[0], p[1], spec1, false)?;
            match &wt.shortcut {
                Some(s) => {
                    let short =
                        kernels::conv2d_same(dy, p[8], None, conv_shape_back(s, b, h, w, self.circular)?, true)?;
                    dx.iter_mut().zip(&short).for_each(|(d, &v)| *d += v);
                }
                None => dx.iter_mut().zip(dy).for_each(|(d, &v)| *d += v),
            }
            Ok(dx)
        })
    }
}

impl CustomOp1 for ResnetOp {
    fn name(&self) -> &'static str {
        "frozen-resnet-block"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = input_slice(storage, layout)?;
        let dims = layout.shape().dims4()?;
        let (h1, out) = self.forward(x, dims)?;
        self.saved.put(h1);
        let cout = self.weights.conv2.weight.dim(0)?;
        Ok((CpuStorage::F32(out), Shape::from((dims.0, cout, dims.2, dims.3))))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let dims = arg.dims4()?;
        let dx = with_cpu_slices(&[dense(arg)?, dense(grad)?], |t| {
            let h1 = self.saved.take_or(|| Ok(self.forward(t[0], dims)?.0))?;
            self.backward(t[0], &h1, t[1], dims)
        })?;
        Ok(Some(Tensor::from_vec(dx, arg.shape(), arg.device())?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::ops::conv::conv2d;
    use crate::models::ops::group_norm::group_norm;
    use crate::models::testing::close;
    use candle_core::{Device, Var};

    #[test]
    fn circular_fused_block_matches_candle_on_circularly_padded_input() -> Result<()> {
        // The reference pads with tensor ops (`composed::pad_circular`) and convolves with
        // candle's own conv2d, as a GPU or a trained model would: (4, 6) through the
        // implicit product, (16, 16) at 32×34 through Winograd.
        let dev = Device::Cpu;
        for (cin, cout, h, w) in [(4, 6, 5, 6), (16, 16, 32, 34)] {
            let r = |dims: &[usize], s: f32| Tensor::randn(0f32, s, dims, &dev);
            let norm = |c: usize| -> Result<NormWeights> {
                Ok(NormWeights { weight: (r(&[c], 0.2)? + 1.0)?, bias: r(&[c], 0.2)?, groups: 2, eps: 1e-6 })
            };
            let conv = |co: usize, ci: usize, k: usize| -> Result<ConvWeights> {
                Ok(ConvWeights { weight: r(&[co, ci, k, k], 0.3)?, bias: r(&[co], 0.3)?, padding: k / 2 })
            };
            let shortcut = if cin == cout { None } else { Some(conv(cout, cin, 1)?) };
            let Some(weights) =
                ResnetWeights::new(norm(cin)?, conv(cout, cin, 3)?, norm(cout)?, conv(cout, cout, 3)?, shortcut)
            else {
                bail!("frozen f32 weights are refused")
            };
            let x = Var::from_tensor(&r(&[2, cin, h, w], 1.0)?)?;
            let upstream = r(&[2, cout, h, w], 1.0)?;
            let wrap_conv = |x: &Tensor, c: &ConvWeights| -> Result<Tensor> {
                let y = crate::models::ops::composed::pad_circular(x, c.padding)?.conv2d(&c.weight, 0, 1, 1, 1)?;
                y.broadcast_add(&c.bias.reshape((1, c.bias.dim(0)?, 1, 1))?)
            };
            let layers = |x: &Tensor| -> Result<Tensor> {
                let wt = &weights;
                let h = group_norm(x, &wt.norm1.weight, &wt.norm1.bias, 2, 1e-6, true)?;
                let h = wrap_conv(&h, &wt.conv1)?;
                let h = group_norm(&h, &wt.norm2.weight, &wt.norm2.bias, 2, 1e-6, true)?;
                let h = wrap_conv(&h, &wt.conv2)?;
                match &wt.shortcut {
                    Some(s) => wrap_conv(x, s)? + h,
                    None => x + h,
                }
            };
            let fused = resnet_block_circular(x.as_tensor(), &weights)?;
            let reference = layers(x.as_tensor())?;
            close(&fused, &reference, 1e-4)?;
            let g_fused = (fused * &upstream)?.sum_all()?.backward()?;
            let g_ref = (reference * &upstream)?.sum_all()?.backward()?;
            let (Some(a), Some(e)) = (g_fused.get(&x), g_ref.get(&x)) else { bail!("no gradient for x") };
            close(a, e, 1e-4)?;
        }
        Ok(())
    }

    #[test]
    fn fused_resnet_block_matches_its_layers_forward_and_input_gradient() -> Result<()> {
        let dev = Device::Cpu;
        let norm = |c: usize, groups: usize| -> Result<NormWeights> {
            Ok(NormWeights {
                weight: (Tensor::randn(0f32, 0.2, c, &dev)? + 1.0)?,
                bias: Tensor::randn(0f32, 0.2, c, &dev)?,
                groups,
                eps: 1e-6,
            })
        };
        let conv = |cout: usize, cin: usize, k: usize| -> Result<ConvWeights> {
            Ok(ConvWeights {
                weight: Tensor::randn(0f32, 0.3, (cout, cin, k, k), &dev)?,
                bias: Tensor::randn(0f32, 0.3, cout, &dev)?,
                padding: k / 2,
            })
        };
        for (cin, cout) in [(4, 4), (4, 6)] {
            let shortcut = if cin == cout { None } else { Some(conv(cout, cin, 1)?) };
            let Some(weights) =
                ResnetWeights::new(norm(cin, 2)?, conv(cout, cin, 3)?, norm(cout, 2)?, conv(cout, cout, 3)?, shortcut)
            else {
                bail!("frozen f32 weights are refused")
            };
            let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (2, cin, 5, 6), &dev)?)?;
            let upstream = Tensor::randn(0f32, 1.0, (2, cout, 5, 6), &dev)?;
            let layers = |x: &Tensor| -> Result<Tensor> {
                let w = &weights;
                let h = group_norm(x, &w.norm1.weight, &w.norm1.bias, 2, 1e-6, true)?;
                let h = conv2d(&h, &w.conv1.weight, Some(&w.conv1.bias), 1)?;
                let h = group_norm(&h, &w.norm2.weight, &w.norm2.bias, 2, 1e-6, true)?;
                let h = conv2d(&h, &w.conv2.weight, Some(&w.conv2.bias), 1)?;
                match &w.shortcut {
                    Some(s) => conv2d(x, &s.weight, Some(&s.bias), 0)? + h,
                    None => x + h,
                }
            };
            let fused = resnet_block(x.as_tensor(), &weights)?;
            let composed = layers(x.as_tensor())?;
            close(&fused, &composed, 0.0)?;
            let g_fused = (fused * &upstream)?.sum_all()?.backward()?;
            let g_composed = (composed * &upstream)?.sum_all()?.backward()?;
            let (Some(a), Some(e)) = (g_fused.get(&x), g_composed.get(&x)) else { bail!("no gradient for x") };
            close(a, e, 0.0)?;
            assert!(g_fused.get(&weights.conv1.weight).is_none());
        }
        Ok(())
    }
}
