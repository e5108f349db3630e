//! A whole frozen CLIP encoder layer (pre-norm attention and QuickGELU MLP, each with its
//! residual) as one candle custom op on the CPU: the same kernels, in the same order, as
//! the ten ops it replaces, so the same values; but one node of candle's graph instead of
//! about fifteen. On the way back candle gives every node's input a zero tensor and adds
//! the gradient into it, a memset and an addition over tens of megabytes per node that a
//! generation step spends a tenth of its time on; here only the layer's input gets one.
//! The forward pass keeps what the backward needs (the projections, the attention
//! probabilities, the first residual sum and the MLP's pre-activation) and the backward
//! pass gives the input's gradient only (the weights are frozen).

use candle_core::{bail, CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor};

use super::attention::Heads;
use super::storage::{dense, input_slice, with_cpu_slices, Saved};
use super::{linear, quick_gelu};
use crate::models::kernels::{self, GroupSpec};

/// The frozen weights of one layer, dense f32 tensors on the CPU: the two layer norms'
/// scale and shift, the packed query-key-value projection `[3D, D]` and its bias, the
/// output projection, and the MLP's two layers.
#[derive(Debug, Clone)]
pub struct LayerWeights {
    pub norm1: (Tensor, Tensor),
    pub qkv: (Tensor, Tensor),
    pub out: (Tensor, Tensor),
    pub norm2: (Tensor, Tensor),
    pub fc1: (Tensor, Tensor),
    pub fc2: (Tensor, Tensor),
    pub eps: f64,
    pub heads: usize,
}

impl LayerWeights {
    /// Checks that every weight is a frozen f32 CPU tensor of the shape a layer of width
    /// `D` (from the first norm) and `inner` (from `fc1`) needs, and makes them dense.
    pub fn checked(self) -> Result<Self> {
        let all = self.tensors();
        let refs: Vec<&Tensor> = all.iter().collect();
        if !all.iter().all(|t| t.device().is_cpu() && t.dtype() == DType::F32) || !super::frozen(&refs) {
            bail!("fused encoder layer: needs frozen f32 weights on the CPU")
        }
        let d = self.norm1.0.dim(0)?;
        let inner = self.fc1.1.dim(0)?;
        let shapes: [(&Tensor, &[usize]); 12] = [
            (&self.norm1.0, &[d]),
            (&self.norm1.1, &[d]),
            (&self.qkv.0, &[3 * d, d]),
            (&self.qkv.1, &[3 * d]),
            (&self.out.0, &[d, d]),
            (&self.out.1, &[d]),
            (&self.norm2.0, &[d]),
            (&self.norm2.1, &[d]),
            (&self.fc1.0, &[inner, d]),
            (&self.fc1.1, &[inner]),
            (&self.fc2.0, &[d, inner]),
            (&self.fc2.1, &[d]),
        ];
        if let Some((t, want)) = shapes.iter().find(|(t, want)| t.dims() != *want) {
            bail!("fused encoder layer: a weight is {:?}, expected {want:?}", t.dims())
        }
        if self.heads == 0 || d % self.heads != 0 {
            bail!("fused encoder layer: {d} columns do not split into {} heads", self.heads)
        }
        let pair = |(a, b): &(Tensor, Tensor)| -> Result<(Tensor, Tensor)> { Ok((dense(a)?, dense(b)?)) };
        Ok(Self {
            norm1: pair(&self.norm1)?,
            qkv: pair(&self.qkv)?,
            out: pair(&self.out)?,
            norm2: pair(&self.norm2)?,
            fc1: pair(&self.fc1)?,
            fc2: pair(&self.fc2)?,
            ..self
        })
    }

    /// The twelve weights, pair by pair in the layer's order.
    fn tensors(&self) -> Vec<Tensor> {
        [&self.norm1, &self.qkv, &self.out, &self.norm2, &self.fc1, &self.fc2]
            .into_iter()
            .flat_map(|(a, b)| [a.clone(), b.clone()])
            .collect()
    }
}

/// One pre-norm encoder layer over `x` `[B, T, D]` with QuickGELU, as
/// `x + attn(ln1(x))`, then `+ fc2(quick_gelu(fc1(ln2(·))))`; with `causal`, position `i`
/// attends to positions `≤ i` only. `weights` from [`LayerWeights::checked`].
pub fn encoder_layer(x: &Tensor, weights: &LayerWeights, causal: bool) -> Result<Tensor> {
    if !x.device().is_cpu() || x.dtype() != DType::F32 {
        bail!("fused encoder layer: needs a CPU f32 input")
    }
    let (_, _, d) = x.dims3()?;
    if d != weights.norm1.0.dim(0)? {
        bail!("fused encoder layer: input width {d}, layer width {}", weights.norm1.0.dim(0)?)
    }
    #[expect(clippy::cast_precision_loss, reason = "head dims are small")]
    #[expect(clippy::cast_possible_truncation, reason = "the scale of an f32 model")]
    let scale = ((d / weights.heads) as f64).powf(-0.5) as f32;
    let heads = Heads { heads: weights.heads, scale, causal };
    dense(x)?.apply_op1(LayerOp { weights: weights.clone(), heads, saved: Saved::default() })
}

struct LayerOp {
    weights: LayerWeights,
    heads: Heads,
    saved: Saved<Kept>,
}

/// What the forward pass keeps: the packed projections `[B·T, 3D]`, the attention
/// probabilities, the first residual sum `[B·T, D]` and the MLP's pre-activation
/// `[B·T, inner]`.
struct Kept {
    qkv: Vec<f32>,
    probs: Vec<f32>,
    mid: Vec<f32>,
    pre: Vec<f32>,
}

/// The weights' slices, in [`LayerWeights::tensors`]' order.
struct Slices<'a> {
    w: &'a [&'a [f32]],
}

impl Slices<'_> {
    fn norm1(&self) -> (&[f32], &[f32]) {
        (self.w[0], self.w[1])
    }
    fn qkv(&self) -> (&[f32], &[f32]) {
        (self.w[2], self.w[3])
    }
    fn out(&self) -> (&[f32], &[f32]) {
        (self.w[4], self.w[5])
    }
    fn norm2(&self) -> (&[f32], &[f32]) {
        (self.w[6], self.w[7])
    }
    fn fc1(&self) -> (&[f32], &[f32]) {
        (self.w[8], self.w[9])
    }
    fn fc2(&self) -> (&[f32], &[f32]) {
        (self.w[10], self.w[11])
    }
}

/// `a += b`, element by element.
fn add_into(a: &mut [f32], b: &[f32]) {
    a.iter_mut().zip(b).for_each(|(a, b)| *a += b);
}

impl LayerOp {
    fn norm_spec(&self, rows: usize, d: usize) -> Result<GroupSpec> {
        GroupSpec::new(&[rows, d, 1, 1], 1, self.weights.eps, false)
    }

    /// The output and what the backward pass needs, for `x` of `dims` `(B, T, D)`.
    fn forward(&self, x: &[f32], w: &Slices<'_>, (b, t, d): (usize, usize, usize)) -> Result<(Vec<f32>, Kept)> {
        let rows = b * t;
        let inner = w.fc1().1.len();
        let spec = self.norm_spec(rows, d)?;
        let normed = kernels::group_norm(x, w.norm1().0, w.norm1().1, spec)?;
        let qkv = linear::rows(&normed, w.qkv().0, Some(w.qkv().1), 3 * d, d, false)?;
        drop(normed);
        let (probs, attended) = self.heads.forward(&qkv, (b, t, 3 * d))?;
        let mut mid = linear::rows(&attended, w.out().0, Some(w.out().1), d, d, false)?;
        drop(attended);
        // candle's `x + h` (an addition of two floats is the same either way round).
        add_into(&mut mid, x);
        let normed = kernels::group_norm(&mid, w.norm2().0, w.norm2().1, spec)?;
        let pre = linear::rows(&normed, w.fc1().0, Some(w.fc1().1), inner, d, false)?;
        drop(normed);
        let act = quick_gelu::forward(&pre);
        let mut y = linear::rows(&act, w.fc2().0, Some(w.fc2().1), d, inner, false)?;
        add_into(&mut y, &mid);
        Ok((y, Kept { qkv, probs, mid, pre }))
    }

    /// The gradient of `x` from the output's, `dy`.
    fn backward(
        &self,
        x: &[f32],
        dy: &[f32],
        kept: &Kept,
        w: &Slices<'_>,
        (b, t, d): (usize, usize, usize),
    ) -> Result<Vec<f32>> {
        let rows = b * t;
        let inner = w.fc1().1.len();
        if dy.len() != x.len() {
            bail!("fused encoder layer backward: {} gradients for {} inputs", dy.len(), x.len())
        }
        let spec = self.norm_spec(rows, d)?;
        // The MLP: fc2, QuickGELU, fc1, the second norm; then its residual.
        let d_act = linear::rows(dy, w.fc2().0, None, d, inner, true)?;
        let d_pre = quick_gelu::backward(&d_act, &kept.pre)?;
        drop(d_act);
        let d_normed = linear::rows(&d_pre, w.fc1().0, None, inner, d, true)?;
        drop(d_pre);
        let (mut d_mid, _) = kernels::group_norm_backward(&kept.mid, &d_normed, w.norm2().0, w.norm2().1, spec, false)?;
        add_into(&mut d_mid, dy);
        // The attention: the output projection, the heads, the packed projection, the
        // first norm; then its residual.
        let d_attended = linear::rows(&d_mid, w.out().0, None, d, d, true)?;
        let d_qkv = self.heads.backward(&kept.qkv, &kept.probs, &d_attended, (b, t, 3 * d))?;
        drop(d_attended);
        let d_normed = linear::rows(&d_qkv, w.qkv().0, None, 3 * d, d, true)?;
        drop(d_qkv);
        let (mut dx, _) = kernels::group_norm_backward(x, &d_normed, w.norm1().0, w.norm1().1, spec, false)?;
        add_into(&mut dx, &d_mid);
        Ok(dx)
    }
}

impl CustomOp1 for LayerOp {
    fn name(&self) -> &'static str {
        "fused-encoder-layer"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = input_slice(storage, layout)?;
        let dims = layout.shape().dims3()?;
        let (y, kept) = with_cpu_slices(&self.weights.tensors(), |w| self.forward(x, &Slices { w }, dims))?;
        self.saved.put(kept);
        Ok((CpuStorage::F32(y), layout.shape().clone()))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let dims = arg.dims3()?;
        let mut tensors = vec![dense(arg)?, dense(grad)?];
        tensors.extend(self.weights.tensors());
        let dx = with_cpu_slices(&tensors, |t| {
            let (x, dy, w) = (t[0], t[1], Slices { w: &t[2..] });
            let kept = self.saved.take_or(|| Ok(self.forward(x, &w, dims)?.1))?;
            self.backward(x, dy, &kept, &w, dims)
        })?;
        Ok(Some(Tensor::from_vec(dx, arg.shape(), arg.device())?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::ops::{attention, group_norm, linear::linear, quick_gelu::quick_gelu};
    use candle_core::{Device, Var};

    /// The layer as the ten ops `clip::EncoderLayer` runs when not fused.
    fn by_ops(x: &Tensor, w: &LayerWeights, causal: bool) -> Result<Tensor> {
        let (b, t, d) = x.dims3()?;
        let norm = |x: &Tensor, (g, s): &(Tensor, Tensor)| -> Result<Tensor> {
            group_norm::group_norm(&x.reshape((b * t, d, 1, 1))?, g, s, 1, w.eps, false)?.reshape((b, t, d))
        };
        #[expect(clippy::cast_precision_loss, reason = "small test sizes")]
        #[expect(clippy::cast_possible_truncation, reason = "the op takes an f32 scale")]
        let scale = ((d / w.heads) as f64).powf(-0.5) as f32;
        let qkv = linear(&norm(x, &w.norm1)?, &w.qkv.0, Some(&w.qkv.1))?;
        let h = linear(&attention::attention(&qkv, w.heads, scale, causal)?, &w.out.0, Some(&w.out.1))?;
        let x = (x + h)?;
        let h = quick_gelu(&linear(&norm(&x, &w.norm2)?, &w.fc1.0, Some(&w.fc1.1))?)?;
        x + linear(&h, &w.fc2.0, Some(&w.fc2.1))?
    }

    fn weights(d: usize, inner: usize, heads: usize, dev: &Device) -> Result<LayerWeights> {
        let r = |dims: &[usize], s: f64| Tensor::randn(0f32, s as f32, dims, dev);
        let affine = || -> Result<(Tensor, Tensor)> { Ok(((r(&[d], 0.2)? + 1.0)?, r(&[d], 0.2)?)) };
        LayerWeights {
            norm1: affine()?,
            qkv: (r(&[3 * d, d], 0.2)?, r(&[3 * d], 0.1)?),
            out: (r(&[d, d], 0.2)?, r(&[d], 0.1)?),
            norm2: affine()?,
            fc1: (r(&[inner, d], 0.2)?, r(&[inner], 0.1)?),
            fc2: (r(&[d, inner], 0.1)?, r(&[d], 0.1)?),
            eps: 1e-5,
            heads,
        }
        .checked()
    }

    #[test]
    fn fused_layer_gives_the_ops_values_and_input_gradient_to_the_bit() -> Result<()> {
        let dev = Device::Cpu;
        // Odd sizes (7 tokens, 3 heads of 5 columns), and CLIP ViT-B/32's token count.
        for (b, t, d, inner, heads) in [(2, 7, 15, 40, 3), (3, 50, 64, 256, 4)] {
            let w = weights(d, inner, heads, &dev)?;
            let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (b, t, d), &dev)?)?;
            let upstream = Tensor::randn(0f32, 1.0, (b, t, d), &dev)?;
            for causal in [false, true] {
                let ours = encoder_layer(x.as_tensor(), &w, causal)?;
                let theirs = by_ops(x.as_tensor(), &w, causal)?;
                assert_eq!(ours.flatten_all()?.to_vec1::<f32>()?, theirs.flatten_all()?.to_vec1::<f32>()?);
                let g_ours = (ours * &upstream)?.sum_all()?.backward()?;
                let g_theirs = (theirs * &upstream)?.sum_all()?.backward()?;
                let (Some(a), Some(e)) = (g_ours.get(&x), g_theirs.get(&x)) else { bail!("no gradient for x") };
                assert_eq!(a.flatten_all()?.to_vec1::<f32>()?, e.flatten_all()?.to_vec1::<f32>()?);
            }
        }
        Ok(())
    }

    #[test]
    fn a_second_backward_pass_recomputes_what_the_first_took() -> Result<()> {
        let dev = Device::Cpu;
        let w = weights(16, 32, 2, &dev)?;
        let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (2, 5, 16), &dev)?)?;
        let loss = encoder_layer(x.as_tensor(), &w, false)?.sqr()?.sum_all()?;
        let first = loss.backward()?;
        let second = loss.backward()?;
        let (Some(a), Some(e)) = (first.get(&x), second.get(&x)) else { bail!("no gradient for x") };
        assert_eq!(a.flatten_all()?.to_vec1::<f32>()?, e.flatten_all()?.to_vec1::<f32>()?);
        Ok(())
    }

    #[test]
    fn misshapen_weights_and_inputs_are_errors() -> Result<()> {
        let dev = Device::Cpu;
        let mut w = weights(16, 32, 2, &dev)?;
        assert!(encoder_layer(&Tensor::zeros((1, 4, 8), DType::F32, &dev)?, &w, false).is_err());
        assert!(encoder_layer(&Tensor::zeros((4, 16), DType::F32, &dev)?, &w, false).is_err());
        w.heads = 3;
        assert!(w.clone().checked().is_err());
        w.heads = 2;
        w.fc2.0 = Tensor::zeros((16, 31), DType::F32, &dev)?;
        assert!(w.checked().is_err());
        Ok(())
    }
}
