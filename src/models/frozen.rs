//! Layers whose weights are frozen, as candle custom ops that compute only what an
//! iteration needs: the output, and on the way back the gradient of the input — never
//! of the weights. (candle's own matmul and conv backward always make both; for a
//! generation step that is a third of the work thrown away.)
//!
//! On the CPU the forward passes run the kernels of `models::kernels` (implicit-GEMM
//! convolution, strided GEMM with the bias folded in). On a GPU they run candle's own
//! tensor ops on the device, still without weight gradients. The backward passes are
//! tensor ops or the same custom ops (a convolution's input gradient is a convolution
//! with the flipped, transposed kernel), so they run on any device.
//!
//! Layers fall back to plain candle ops when their weights are being trained (`Var`s,
//! as in `clipcanvas train-demo`) or are not `f32`.

use candle_core::{bail, CpuStorage, CustomOp1, DType, Layout, Result, Shape, Storage, Tensor, D};

use super::kernels::{self, ConvShape, GroupSpec, MatMut, MatRef};

/// Whether `w` can go through a frozen op: a plain (untrained) f32 tensor.
pub fn is_frozen(w: &Tensor) -> bool {
    !w.is_variable() && !w.track_op() && w.dtype() == DType::F32
}

/// `x` as a contiguous tensor starting at offset 0 of its storage.
pub(super) fn dense(x: &Tensor) -> Result<Tensor> {
    let x = x.contiguous()?;
    if x.layout().start_offset() == 0 {
        Ok(x)
    } else {
        x.copy()
    }
}

/// Runs `f` on the contiguous f32 slice of a CPU tensor.
pub(super) fn with_cpu_slice<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> Result<R>) -> Result<R> {
    with_cpu_slices(std::slice::from_ref(t), |s| f(s[0]))
}

/// Runs `f` on the contiguous f32 slices of several CPU tensors.
fn with_cpu_slices<R>(ts: &[Tensor], f: impl FnOnce(&[&[f32]]) -> Result<R>) -> Result<R> {
    let guards: Vec<_> = ts.iter().map(Tensor::storage_and_layout).collect();
    let mut slices = Vec::with_capacity(guards.len());
    for (storage, layout) in &guards {
        let Storage::Cpu(cpu) = &**storage else { bail!("frozen op: expected a CPU tensor") };
        let Some((start, end)) = layout.contiguous_offsets() else { bail!("frozen op: expected a contiguous tensor") };
        slices.push(&cpu.as_slice::<f32>()?[start..end]);
    }
    f(&slices)
}

pub(super) fn input_slice<'a>(storage: &'a CpuStorage, layout: &Layout) -> Result<&'a [f32]> {
    let Some((start, end)) = layout.contiguous_offsets() else { bail!("frozen op: input is not contiguous") };
    Ok(&storage.as_slice::<f32>()?[start..end])
}

/// What a fused op's forward pass keeps for its backward pass.
#[derive(Default)]
struct Saved(std::sync::Mutex<Option<Vec<f32>>>);

impl Saved {
    fn put(&self, values: Vec<f32>) {
        *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(values);
    }

    /// The kept values; or, on a second backward pass through the same graph (which
    /// finds them taken), `recompute`'s.
    fn take_or(&self, recompute: impl FnOnce() -> Result<Vec<f32>>) -> Result<Vec<f32>> {
        match self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take() {
            Some(values) => Ok(values),
            None => recompute(),
        }
    }
}

/// A GPU forward pass through candle's tensor ops: wraps the storage as a tensor, runs
/// `f`, and hands back the result's storage.
#[cfg(any(feature = "cuda", feature = "metal"))]
fn via_tensors(
    storage: Storage,
    layout: &Layout,
    f: impl FnOnce(&Tensor) -> Result<Tensor>,
) -> Result<(Storage, Shape)> {
    use candle_core::backend::BackendStorage;
    if !layout.is_contiguous() || layout.start_offset() != 0 {
        bail!("frozen op: input is not dense")
    }
    let x = Tensor::from_storage(storage, layout.shape().clone(), candle_core::op::BackpropOp::none(), false);
    let y = dense(&f(&x)?)?;
    let (st, l) = y.storage_and_layout();
    let out = match &*st {
        #[cfg(feature = "cuda")]
        Storage::Cuda(s) => Storage::Cuda(s.try_clone(l)?),
        #[cfg(feature = "metal")]
        Storage::Metal(s) => Storage::Metal(s.try_clone(l)?),
        _ => bail!("frozen op: the result left the device"),
    };
    Ok((out, l.shape().clone()))
}

macro_rules! gpu_forwards {
    () => {
        #[cfg(feature = "cuda")]
        fn cuda_fwd(
            &self,
            storage: &candle_core::CudaStorage,
            layout: &Layout,
        ) -> Result<(candle_core::CudaStorage, Shape)> {
            use candle_core::backend::BackendStorage;
            match via_tensors(Storage::Cuda(storage.try_clone(layout)?), layout, |x| self.forward_tensor(x))? {
                (Storage::Cuda(s), shape) => Ok((s, shape)),
                _ => bail!("frozen op: the result left the device"),
            }
        }

        #[cfg(feature = "metal")]
        fn metal_fwd(
            &self,
            storage: &candle_core::MetalStorage,
            layout: &Layout,
        ) -> Result<(candle_core::MetalStorage, Shape)> {
            use candle_core::backend::BackendStorage;
            match via_tensors(Storage::Metal(storage.try_clone(layout)?), layout, |x| self.forward_tensor(x))? {
                (Storage::Metal(s), shape) => Ok((s, shape)),
                _ => bail!("frozen op: the result left the device"),
            }
        }
    };
}

// ---------------------------------------------------------------------------------------
// Linear
// ---------------------------------------------------------------------------------------

/// `y = x·Wᵀ + b` over the last dimension of `x`, with `W` `[out, in]` frozen.
pub fn linear(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let op = LinearOp { weight: weight.clone(), bias: bias.cloned(), transposed: false };
    dense(x)?.apply_op1(op)
}

struct LinearOp {
    weight: Tensor,
    bias: Option<Tensor>,
    /// `y = x·W` instead (the input gradient's product).
    transposed: bool,
}

impl LinearOp {
    #[cfg_attr(not(any(feature = "cuda", feature = "metal", test)), expect(dead_code, reason = "the GPU forward"))]
    fn forward_tensor(&self, x: &Tensor) -> Result<Tensor> {
        let y =
            if self.transposed { x.broadcast_matmul(&self.weight)? } else { x.broadcast_matmul(&self.weight.t()?)? };
        match &self.bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}

impl CustomOp1 for LinearOp {
    fn name(&self) -> &'static str {
        "frozen-linear"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = input_slice(storage, layout)?;
        let (w0, w1) = self.weight.dims2()?;
        let (out_dim, in_dim) = if self.transposed { (w1, w0) } else { (w0, w1) };
        let dims = layout.dims();
        if dims.last() != Some(&in_dim) {
            bail!("linear: input {dims:?} does not end in {in_dim}")
        }
        let rows = x.len() / in_dim.max(1);
        let mut y = vec![0.0f32; rows * out_dim];
        if let Some(b) = &self.bias {
            with_cpu_slice(b, |b| {
                for row in y.chunks_exact_mut(out_dim) {
                    row.copy_from_slice(b);
                }
                Ok(())
            })?;
        }
        let w = dense(&self.weight)?;
        with_cpu_slice(&w, |w| {
            let mut dst = MatMut { data: &mut y, offset: 0, rows, cols: out_dim, rs: out_dim, cs: 1 };
            let lhs = MatRef { data: x, offset: 0, rows, cols: in_dim, rs: in_dim, cs: 1 };
            let rhs = if self.transposed {
                MatRef { data: w, offset: 0, rows: in_dim, cols: out_dim, rs: out_dim, cs: 1 }
            } else {
                MatRef { data: w, offset: 0, rows: in_dim, cols: out_dim, rs: 1, cs: in_dim }
            };
            kernels::matmul(&mut dst, lhs, rhs, self.bias.is_some())
        })?;
        let mut shape = dims.to_vec();
        if let Some(last) = shape.last_mut() {
            *last = out_dim;
        }
        Ok((CpuStorage::F32(y), Shape::from(shape)))
    }

    gpu_forwards!();

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        if self.transposed {
            bail!("frozen linear: no second-order gradients")
        }
        if arg.device().is_cpu() {
            let op = LinearOp { weight: self.weight.clone(), bias: None, transposed: true };
            Ok(Some(dense(grad)?.apply_op1_no_bwd(&op)?))
        } else {
            Ok(Some(grad.broadcast_matmul(&self.weight)?))
        }
    }
}

// ---------------------------------------------------------------------------------------
// Convolution
// ---------------------------------------------------------------------------------------

/// A stride-1 convolution with `k×k` kernels and zero padding, `W` `[out, in, k, k]`
/// frozen.
pub fn conv2d(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>, padding: usize) -> Result<Tensor> {
    let (_, _, k, k2) = weight.dims4()?;
    if k != k2 {
        bail!("conv2d: only square kernels, got {:?}", weight.dims())
    }
    let op = ConvOp { weight: weight.clone(), bias: bias.cloned(), k, padding, transposed: false };
    dense(x)?.apply_op1(op)
}

struct ConvOp {
    weight: Tensor,
    bias: Option<Tensor>,
    k: usize,
    padding: usize,
    /// Convolve with the flipped, transposed kernel (the input gradient's convolution).
    transposed: bool,
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
        let y = x.conv2d(&w, self.padding, 1, 1, 1)?;
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
        let s = ConvShape { batch, cin, cout, h, w, k: self.k, padding: self.padding };
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
        Ok(Some(conv2d_input_grad(grad, &self.weight, self.padding)?))
    }
}

/// The input gradient of a stride-1 convolution with `weight` and `padding` (at most
/// k − 1): `grad` convolved with the flipped, transposed kernel. Never differentiated.
pub(super) fn conv2d_input_grad(grad: &Tensor, weight: &Tensor, padding: usize) -> Result<Tensor> {
    let (_, _, k, _) = weight.dims4()?;
    if padding + 1 > k {
        bail!("conv2d: no input gradient for padding {padding} with a {k}x{k} kernel")
    }
    let op = ConvOp { weight: weight.detach(), bias: None, k, padding: k - 1 - padding, transposed: true };
    dense(grad)?.apply_op1_no_bwd(&op)
}

// ---------------------------------------------------------------------------------------
// Group normalisation (optionally followed by SiLU)
// ---------------------------------------------------------------------------------------

/// `torch.nn.GroupNorm(groups, C, eps)` with frozen `weight`/`bias` over `[B, C, H, W]`,
/// followed by `SiLU` when `silu` — the VQGAN's `nonlinearity(norm(h))` in one pass, and
/// one pass back.
pub fn group_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, groups: usize, eps: f64, silu: bool) -> Result<Tensor> {
    let c = x.dim(1)?;
    if groups == 0 || c % groups != 0 || weight.dims1()? != c || bias.dims1()? != c {
        bail!("group norm: {c} channels, {groups} groups, weight {:?}", weight.dims())
    }
    let op = GroupNormOp { weight: weight.clone(), bias: bias.clone(), groups, eps, silu };
    dense(x)?.apply_op1(op)
}

#[derive(Clone)]
struct GroupNormOp {
    weight: Tensor,
    bias: Tensor,
    groups: usize,
    eps: f64,
    silu: bool,
}

impl GroupNormOp {
    fn spec(&self, dims: &[usize]) -> Result<GroupSpec> {
        GroupSpec::new(dims, self.groups, self.eps, self.silu)
    }

    #[cfg_attr(not(any(feature = "cuda", feature = "metal", test)), expect(dead_code, reason = "the GPU forward"))]
    fn forward_tensor(&self, x: &Tensor) -> Result<Tensor> {
        let (xhat, _) = self.normalised(x)?;
        let (_, c, _, _) = x.dims4()?;
        let n = xhat
            .broadcast_mul(&self.weight.reshape((1, c, 1, 1))?)?
            .broadcast_add(&self.bias.reshape((1, c, 1, 1))?)?;
        if self.silu {
            n.silu()
        } else {
            Ok(n)
        }
    }

    /// x̂ and 1/σ per group (`[B, G, 1]`), as tensors.
    fn normalised(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let (b, c, h, w) = x.dims4()?;
        let g = x.reshape((b, self.groups, (c / self.groups) * h * w))?;
        let mean = g.mean_keepdim(D::Minus1)?;
        let centred = g.broadcast_sub(&mean)?;
        let rstd = (centred.sqr()?.mean_keepdim(D::Minus1)? + self.eps)?.sqrt()?.recip()?;
        Ok((centred.broadcast_mul(&rstd)?.reshape((b, c, h, w))?, rstd))
    }

    /// The input gradient with tensor ops (any device).
    fn backward_tensor(&self, x: &Tensor, dy: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let (xhat, rstd) = self.normalised(x)?;
        let gamma = self.weight.reshape((1, c, 1, 1))?;
        let dn = if self.silu {
            let n = xhat.broadcast_mul(&gamma)?.broadcast_add(&self.bias.reshape((1, c, 1, 1))?)?;
            let s = candle_nn::ops::sigmoid(&n)?;
            let ds = ((n * (1.0 - &s)?)? + 1.0)?.mul(&s)?;
            (dy * ds)?
        } else {
            dy.clone()
        };
        let shape = (b, self.groups, (c / self.groups) * h * w);
        let dxhat = dn.broadcast_mul(&gamma)?.reshape(shape)?;
        let xhat = xhat.reshape(shape)?;
        let s1 = dxhat.mean_keepdim(D::Minus1)?;
        let s2 = (&dxhat * &xhat)?.mean_keepdim(D::Minus1)?;
        let dx = dxhat.broadcast_sub(&s1)?.sub(&xhat.broadcast_mul(&s2)?)?.broadcast_mul(&rstd)?;
        dx.reshape((b, c, h, w))
    }
}

impl CustomOp1 for GroupNormOp {
    fn name(&self) -> &'static str {
        "frozen-group-norm"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = input_slice(storage, layout)?;
        let spec = self.spec(layout.dims())?;
        let y = with_cpu_slice(&dense(&self.weight)?, |gamma| {
            with_cpu_slice(&dense(&self.bias)?, |beta| kernels::group_norm(x, gamma, beta, spec))
        })?;
        Ok((CpuStorage::F32(y), layout.shape().clone()))
    }

    gpu_forwards!();

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        if arg.device().is_cpu() {
            Ok(Some(dense(arg)?.apply_op2_no_bwd(&dense(grad)?, &GroupNormBackward(self.clone()))?))
        } else {
            Ok(Some(self.backward_tensor(arg, grad)?))
        }
    }
}

/// The CPU kernel of [`GroupNormOp`]'s input gradient: `(x, dy) → dx`.
struct GroupNormBackward(GroupNormOp);

impl candle_core::CustomOp2 for GroupNormBackward {
    fn name(&self) -> &'static str {
        "frozen-group-norm-backward"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let op = &self.0;
        let (x, dy) = (input_slice(s1, l1)?, input_slice(s2, l2)?);
        let spec = op.spec(l1.dims())?;
        let (dx, _) = with_cpu_slice(&dense(&op.weight)?, |gamma| {
            with_cpu_slice(&dense(&op.bias)?, |beta| kernels::group_norm_backward(x, dy, gamma, beta, spec, false))
        })?;
        Ok((CpuStorage::F32(dx), l1.shape().clone()))
    }
}

// ---------------------------------------------------------------------------------------
// QuickGELU
// ---------------------------------------------------------------------------------------

/// OpenAI CLIP's `x · sigmoid(1.702 x)`, computed as `nn::quick_gelu` computes it
/// (`x / (1 + exp(−1.702 x))`, the same values to the bit), as one op: one threaded pass
/// forward and one back, where the composition is four tensor ops and a backward of ten.
pub fn quick_gelu(x: &Tensor) -> Result<Tensor> {
    dense(x)?.apply_op1(QuickGelu { backward: None })
}

/// With `backward`, the gradient instead: the op's input is the upstream gradient and
/// `backward` the forward pass's input.
struct QuickGelu {
    backward: Option<Tensor>,
}

/// `(e, s)` of `x / s` with `s = 1 + e`, `e = exp(−1.702 x)`, rounded as candle's affine,
/// exp and add round them.
fn quick_gelu_parts(v: f32) -> (f32, f32) {
    let e = (v * -1.702f32 + 0.0).exp();
    (e, e * 1.0 + 1.0)
}

impl QuickGelu {
    /// Either way with tensor ops (any device).
    fn forward_tensor(&self, t: &Tensor) -> Result<Tensor> {
        match &self.backward {
            None => super::nn::quick_gelu(t),
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
        use rayon::prelude::*;
        const CHUNK: usize = 16_384;
        let t = input_slice(storage, layout)?;
        let mut y = vec![0.0f32; t.len()];
        match &self.backward {
            None => y.par_chunks_mut(CHUNK).zip(t.par_chunks(CHUNK)).for_each(|(ys, xs)| {
                for (o, &v) in ys.iter_mut().zip(xs) {
                    *o = v / quick_gelu_parts(v).1;
                }
            }),
            Some(x) => with_cpu_slice(&dense(x)?, |x| {
                if x.len() != t.len() {
                    bail!("quick-gelu backward: {} gradients for {} inputs", t.len(), x.len())
                }
                y.par_chunks_mut(CHUNK).zip(t.par_chunks(CHUNK).zip(x.par_chunks(CHUNK))).for_each(|(ys, (gs, xs))| {
                    for ((o, &g), &v) in ys.iter_mut().zip(gs).zip(xs) {
                        let (e, s) = quick_gelu_parts(v);
                        *o = g * (1.0 / s + 1.702 * v * e / (s * s));
                    }
                });
                Ok(())
            })?,
        }
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

// ---------------------------------------------------------------------------------------
// A whole resnet block
// ---------------------------------------------------------------------------------------

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
    if !x.device().is_cpu() || x.dtype() != DType::F32 {
        bail!("fused resnet block: needs a CPU f32 input")
    }
    x.dims4()?;
    dense(x)?.apply_op1(ResnetOp { weights: weights.clone(), saved: Saved::default() })
}

struct ResnetOp {
    weights: ResnetWeights,
    /// The first convolution's output, from the forward pass, for the backward pass.
    saved: Saved,
}

/// The shape of a convolution with `c`'s kernel over `[batch, cin, h, w]`.
fn conv_shape(c: &ConvWeights, batch: usize, h: usize, w: usize) -> Result<ConvShape> {
    let (cout, cin, k, _) = c.weight.dims4()?;
    Ok(ConvShape { batch, cin, cout, h, w, k, padding: c.padding })
}

/// The shape of the input gradient's convolution (the flipped, transposed kernel).
fn conv_shape_back(c: &ConvWeights, batch: usize, h: usize, w: usize) -> Result<ConvShape> {
    let (cout, cin, k, _) = c.weight.dims4()?;
    Ok(ConvShape { batch, cin: cout, cout: cin, h, w, k, padding: k - 1 - c.padding })
}

impl ResnetOp {
    /// The weights, dense, in the order the kernels' slices are read.
    fn tensors(&self) -> Result<Vec<Tensor>> {
        let w = &self.weights;
        let mut ts = vec![
            &w.norm1.weight,
            &w.norm1.bias,
            &w.conv1.weight,
            &w.conv1.bias,
            &w.norm2.weight,
            &w.norm2.bias,
            &w.conv2.weight,
            &w.conv2.bias,
        ];
        if let Some(s) = &w.shortcut {
            ts.extend([&s.weight, &s.bias]);
        }
        ts.into_iter().map(dense).collect()
    }

    /// The first convolution's output `h1` and the block's output.
    fn forward(&self, x: &[f32], dims: (usize, usize, usize, usize)) -> Result<(Vec<f32>, Vec<f32>)> {
        let (b, c, h, w) = dims;
        let wt = &self.weights;
        with_cpu_slices(&self.tensors()?, |p| {
            let spec1 = GroupSpec::new(&[b, c, h, w], wt.norm1.groups, wt.norm1.eps, true)?;
            let a1 = kernels::group_norm(x, p[0], p[1], spec1)?;
            let s1 = conv_shape(&wt.conv1, b, h, w)?;
            let h1 = kernels::conv2d_same(&a1, p[2], Some(p[3]), s1, false)?;
            drop(a1);
            let spec2 = GroupSpec::new(&[b, s1.cout, h, w], wt.norm2.groups, wt.norm2.eps, true)?;
            let a2 = kernels::group_norm(&h1, p[4], p[5], spec2)?;
            let mut out = kernels::conv2d_same(&a2, p[6], Some(p[7]), conv_shape(&wt.conv2, b, h, w)?, false)?;
            drop(a2);
            match &wt.shortcut {
                Some(s) => {
                    let short = kernels::conv2d_same(x, p[8], Some(p[9]), conv_shape(s, b, h, w)?, false)?;
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
            let da2 = kernels::conv2d_same(dy, p[6], None, conv_shape_back(&wt.conv2, b, h, w)?, true)?;
            let spec2 = GroupSpec::new(&[b, mid, h, w], wt.norm2.groups, wt.norm2.eps, true)?;
            let (dh1, _) = kernels::group_norm_backward(h1, &da2, p[4], p[5], spec2, false)?;
            drop(da2);
            let da1 = kernels::conv2d_same(&dh1, p[2], None, conv_shape_back(&wt.conv1, b, h, w)?, true)?;
            drop(dh1);
            let spec1 = GroupSpec::new(&[b, c, h, w], wt.norm1.groups, wt.norm1.eps, true)?;
            let (mut dx, _) = kernels::group_norm_backward(x, &da1, p[0], p[1], spec1, false)?;
            match &wt.shortcut {
                Some(s) => {
                    let short = kernels::conv2d_same(dy, p[8], None, conv_shape_back(s, b, h, w)?, true)?;
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

// ---------------------------------------------------------------------------------------
// Nearest-neighbour 2× upsampling
// ---------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------
// Multi-head attention
// ---------------------------------------------------------------------------------------

/// Multi-head scaled dot-product attention over packed projections, as one op on the
/// CPU: `qkv` is `[B, T, 3D]` (queries, keys and values side by side, as one product of
/// the three projections makes them), the result `[B, T, D]`, each head's
/// `softmax(scale·Q·Kᵀ)·V` in its own `D/heads` columns; with `causal`, position `i`
/// attends to positions `≤ i` only. The heads are read in place through strides — no
/// transposes, no copies — and the probabilities are kept for the backward pass, which
/// gives the gradient of `qkv` in one pass. The composition of tensor ops it replaces
/// copies each head's queries, keys and values, makes five tensors for the softmax, and
/// on the way back adds a zero gradient into each of them.
pub fn attention(qkv: &Tensor, heads: usize, scale: f32, causal: bool) -> Result<Tensor> {
    if !qkv.device().is_cpu() || qkv.dtype() != DType::F32 {
        bail!("fused attention: needs a CPU f32 input")
    }
    let (_, _, d3) = qkv.dims3()?;
    if heads == 0 || d3 % (3 * heads) != 0 {
        bail!("fused attention: {d3} packed columns do not split into 3 × {heads} heads")
    }
    dense(qkv)?.apply_op1(AttentionOp { heads, scale, causal, saved: Saved::default() })
}

struct AttentionOp {
    heads: usize,
    scale: f32,
    causal: bool,
    /// The attention probabilities `[B, heads, T, T]` from the forward pass.
    saved: Saved,
}

/// `softmax(scale·row)` of each row of the `t×t` scores in place, over the first `i + 1`
/// columns of row `i` when `causal` (the rest become 0).
fn softmax_rows(scores: &mut [f32], t: usize, scale: f32, causal: bool) {
    for (i, row) in scores.chunks_exact_mut(t).enumerate() {
        let (live, masked) = row.split_at_mut(if causal { i + 1 } else { t });
        let max = live.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v * scale));
        let mut sum = 0.0;
        for v in live.iter_mut() {
            *v = (*v * scale - max).exp();
            sum += *v;
        }
        live.iter_mut().for_each(|v| *v /= sum);
        masked.fill(0.0);
    }
}

impl AttentionOp {
    /// The probabilities and the output, for `qkv` of `dims` `(B, T, 3D)`.
    fn forward(&self, qkv: &[f32], (b, t, d3): (usize, usize, usize)) -> Result<(Vec<f32>, Vec<f32>)> {
        use rayon::prelude::*;
        let (d, hd) = (d3 / 3, d3 / 3 / self.heads);
        let mut probs = vec![0.0f32; b * self.heads * t * t];
        let mut out = vec![0.0f32; b * t * d];
        // Element (i, j) of a head's view of `qkv`: row i's token, column j of the part.
        let view = |base: usize, part: usize, h: usize| MatRef {
            data: qkv,
            offset: base + part * d + h * hd,
            rows: t,
            cols: hd,
            rs: d3,
            cs: 1,
        };
        probs
            .par_chunks_mut((self.heads * t * t).max(1))
            .zip(out.par_chunks_mut((t * d).max(1)))
            .enumerate()
            .try_for_each(|(bi, (p, o))| {
                let base = bi * t * d3;
                for (h, ph) in p.chunks_exact_mut(t * t).enumerate() {
                    let mut scores = MatMut { data: ph, offset: 0, rows: t, cols: t, rs: t, cs: 1 };
                    kernels::matmul(&mut scores, view(base, 0, h), view(base, 1, h).t(), false)?;
                    softmax_rows(ph, t, self.scale, self.causal);
                    let p = MatRef { data: ph, offset: 0, rows: t, cols: t, rs: t, cs: 1 };
                    let mut dst = MatMut { data: o, offset: h * hd, rows: t, cols: hd, rs: d, cs: 1 };
                    kernels::matmul(&mut dst, p, view(base, 2, h), false)?;
                }
                Ok::<_, candle_core::Error>(())
            })?;
        Ok((probs, out))
    }

    /// The gradient of `qkv` from the output's, `dout` `[B, T, D]`.
    fn backward(
        &self,
        qkv: &[f32],
        probs: &[f32],
        dout: &[f32],
        (b, t, d3): (usize, usize, usize),
    ) -> Result<Vec<f32>> {
        use rayon::prelude::*;
        let (d, hd) = (d3 / 3, d3 / 3 / self.heads);
        if probs.len() != b * self.heads * t * t || dout.len() != b * t * d {
            bail!("fused attention backward: the saved probabilities or the gradient do not fit [{b}, {t}, {d3}]")
        }
        let mut dqkv = vec![0.0f32; b * t * d3];
        let view = |data, base: usize, rs: usize, col: usize| MatRef {
            data,
            offset: base + col,
            rows: t,
            cols: hd,
            rs,
            cs: 1,
        };
        dqkv.par_chunks_mut((t * d3).max(1)).enumerate().try_for_each(|(bi, g)| {
            let base = bi * t * d3;
            let mut ds = vec![0.0f32; t * t];
            for h in 0..self.heads {
                let pv = &probs[(bi * self.heads + h) * t * t..][..t * t];
                let p = MatRef { data: pv, offset: 0, rows: t, cols: t, rs: t, cs: 1 };
                let dy = view(dout, bi * t * d, d, h * hd);
                let (q, k, v) =
                    (view(qkv, base, d3, h * hd), view(qkv, base, d3, d + h * hd), view(qkv, base, d3, 2 * d + h * hd));
                // dV = Pᵀ·dY, dP = dY·Vᵀ.
                let mut dv = MatMut { data: g, offset: 2 * d + h * hd, rows: t, cols: hd, rs: d3, cs: 1 };
                kernels::matmul(&mut dv, p.t(), dy, false)?;
                let mut dp = MatMut { data: &mut ds, offset: 0, rows: t, cols: t, rs: t, cs: 1 };
                kernels::matmul(&mut dp, dy, v.t(), false)?;
                // dS = scale·P⊙(dP − Σⱼ P⊙dP), row by row.
                for (prow, drow) in pv.chunks_exact(t).zip(ds.chunks_exact_mut(t)) {
                    let dot: f32 = prow.iter().zip(drow.iter()).map(|(a, b)| a * b).sum();
                    drow.iter_mut().zip(prow).for_each(|(x, &pp)| *x = self.scale * pp * (*x - dot));
                }
                let s = MatRef { data: &ds, offset: 0, rows: t, cols: t, rs: t, cs: 1 };
                // dQ = dS·K, dK = dSᵀ·Q.
                let mut dq = MatMut { data: g, offset: h * hd, rows: t, cols: hd, rs: d3, cs: 1 };
                kernels::matmul(&mut dq, s, k, false)?;
                let mut dk = MatMut { data: g, offset: d + h * hd, rows: t, cols: hd, rs: d3, cs: 1 };
                kernels::matmul(&mut dk, s.t(), q, false)?;
            }
            Ok::<_, candle_core::Error>(())
        })?;
        Ok(dqkv)
    }
}

impl CustomOp1 for AttentionOp {
    fn name(&self) -> &'static str {
        "fused-attention"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let qkv = input_slice(storage, layout)?;
        let dims = layout.shape().dims3()?;
        let (probs, out) = self.forward(qkv, dims)?;
        self.saved.put(probs);
        Ok((CpuStorage::F32(out), Shape::from((dims.0, dims.1, dims.2 / 3))))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let dims = arg.dims3()?;
        let dqkv = with_cpu_slices(&[dense(arg)?, dense(grad)?], |t| {
            let probs = self.saved.take_or(|| Ok(self.forward(t[0], dims)?.0))?;
            self.backward(t[0], &probs, t[1], dims)
        })?;
        Ok(Some(Tensor::from_vec(dqkv, arg.shape(), arg.device())?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::testing::close;
    use candle_core::{Device, Var};

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

    #[test]
    fn quick_gelu_matches_its_composition_forward_and_gradient() -> Result<()> {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&Tensor::randn(0f32, 3.0, (3, 40_000), &dev)?)?;
        let upstream = Tensor::randn(0f32, 1.0, (3, 40_000), &dev)?;
        let ours = quick_gelu(x.as_tensor())?;
        let theirs = super::super::nn::quick_gelu(x.as_tensor())?;
        close(&ours, &theirs, 0.0)?;
        let g_ours = (ours * &upstream)?.sum_all()?.backward()?;
        let g_theirs = (theirs * &upstream)?.sum_all()?.backward()?;
        let (Some(a), Some(e)) = (g_ours.get(&x), g_theirs.get(&x)) else { bail!("no gradient for x") };
        close(a, e, 1e-5)?;
        // The tensor-op path (what a GPU runs) gives the same gradient.
        let op = QuickGelu { backward: Some(x.as_tensor().detach()) };
        close(&op.forward_tensor(&upstream)?, e, 1e-5)?;
        Ok(())
    }

    /// Attention as tensor ops, the way transformers' CLIP writes it.
    fn attention_by_tensor_ops(qkv: &Tensor, heads: usize, scale: f64, causal: bool) -> Result<Tensor> {
        let (b, t, d3) = qkv.dims3()?;
        let d = d3 / 3;
        let split = |i: usize| -> Result<Tensor> {
            qkv.narrow(2, i * d, d)?.reshape((b, t, heads, d / heads))?.transpose(1, 2)?.contiguous()
        };
        let (q, k, v) = ((split(0)? * scale)?, split(1)?, split(2)?);
        let mut scores = q.matmul(&k.t()?.contiguous()?)?;
        if causal {
            let mask: Vec<f32> =
                (0..t).flat_map(|i| (0..t).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 })).collect();
            scores = scores.broadcast_add(&Tensor::from_vec(mask, (t, t), qkv.device())?)?;
        }
        let p = super::super::nn::softmax_last_dim(&scores)?;
        p.matmul(&v)?.transpose(1, 2)?.contiguous()?.reshape((b, t, d))
    }

    #[test]
    fn fused_attention_matches_tensor_ops_forward_and_gradient() -> Result<()> {
        let dev = Device::Cpu;
        // Odd sizes: 7 tokens, 3 heads of 5 columns; and CLIP's own, 50 tokens of 12×64.
        for (b, t, heads, hd) in [(2, 7, 3, 5), (3, 50, 12, 64)] {
            let d3 = 3 * heads * hd;
            let qkv = Var::from_tensor(&Tensor::randn(0f32, 1.0, (b, t, d3), &dev)?)?;
            let upstream = Tensor::randn(0f32, 1.0, (b, t, heads * hd), &dev)?;
            #[expect(clippy::cast_precision_loss, reason = "small test sizes")]
            let scale = (hd as f64).powf(-0.5);
            for causal in [false, true] {
                #[expect(clippy::cast_possible_truncation, reason = "the op takes an f32 scale")]
                let ours = attention(qkv.as_tensor(), heads, scale as f32, causal)?;
                let theirs = attention_by_tensor_ops(qkv.as_tensor(), heads, scale, causal)?;
                close(&ours, &theirs, 1e-5)?;
                let g_ours = (ours * &upstream)?.sum_all()?.backward()?;
                let g_theirs = (theirs * &upstream)?.sum_all()?.backward()?;
                let (Some(a), Some(e)) = (g_ours.get(&qkv), g_theirs.get(&qkv)) else { bail!("no gradient for qkv") };
                close(a, e, 1e-5)?;
            }
        }
        Ok(())
    }

    #[test]
    fn fused_attention_refuses_what_does_not_split_into_heads() -> Result<()> {
        let qkv = Tensor::zeros((1, 4, 30), DType::F32, &Device::Cpu)?;
        assert!(attention(&qkv, 4, 1.0, false).is_err());
        assert!(attention(&qkv, 0, 1.0, false).is_err());
        assert!(attention(&qkv.reshape((4, 30))?, 2, 1.0, false).is_err());
        Ok(())
    }

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

    #[test]
    fn frozen_linear_matches_matmul_forward_and_input_gradient() -> Result<()> {
        let dev = Device::Cpu;
        let weight = Tensor::randn(0f32, 0.3, (7, 5), &dev)?;
        let bias = Tensor::randn(0f32, 0.3, 7, &dev)?;
        let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (2, 3, 5), &dev)?)?;
        let upstream = Tensor::randn(0f32, 1.0, (2, 3, 7), &dev)?;
        for b in [None, Some(&bias)] {
            let ours = linear(x.as_tensor(), &weight, b)?;
            let mut theirs = x.as_tensor().broadcast_matmul(&weight.t()?)?;
            if let Some(b) = b {
                theirs = theirs.broadcast_add(b)?;
            }
            close(&ours, &theirs, 1e-5)?;
            let g_ours = (ours * &upstream)?.sum_all()?.backward()?;
            let g_theirs = (theirs * &upstream)?.sum_all()?.backward()?;
            let (Some(a), Some(e)) = (g_ours.get(&x), g_theirs.get(&x)) else { bail!("no gradient for x") };
            close(a, e, 1e-5)?;
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
        let op = ConvOp { weight: weight.clone(), bias: None, k: 3, padding: 1, transposed: true };
        close(&x.apply_op1_no_bwd(&op)?, &op.forward_tensor(&x)?, 1e-5)?;
        let lin = LinearOp {
            weight: Tensor::randn(0f32, 0.3, (6, 4), &dev)?,
            bias: Some(Tensor::randn(0f32, 0.3, 6, &dev)?),
            transposed: false,
        };
        let x = Tensor::randn(0f32, 1.0, (3, 4), &dev)?;
        close(&x.apply_op1_no_bwd(&lin)?, &lin.forward_tensor(&x)?, 1e-5)?;
        Ok(())
    }
    #[test]
    fn frozen_group_norm_matches_composed_ops() -> Result<()> {
        let dev = Device::Cpu;
        let (b, c, h, w, groups) = (2, 6, 5, 4, 3);
        let weight = Tensor::randn(1f32, 0.3, c, &dev)?;
        let bias = Tensor::randn(0f32, 0.3, c, &dev)?;
        let x = Var::from_tensor(&(Tensor::randn(0f32, 2.0, (b, c, h, w), &dev)? + 0.5)?)?;
        let upstream = Tensor::randn(0f32, 1.0, (b, c, h, w), &dev)?;
        for silu in [false, true] {
            let op = GroupNormOp { weight: weight.clone(), bias: bias.clone(), groups, eps: 1e-6, silu };
            let ours = group_norm(x.as_tensor(), &weight, &bias, groups, 1e-6, silu)?;
            // The reference: the same maths from differentiable candle ops.
            let theirs = op.forward_tensor(x.as_tensor())?;
            close(&ours, &theirs, 1e-5)?;
            let g_ours = (ours * &upstream)?.sum_all()?.backward()?;
            let g_theirs = (theirs * &upstream)?.sum_all()?.backward()?;
            let (Some(a), Some(e)) = (g_ours.get(&x), g_theirs.get(&x)) else { bail!("no gradient for x") };
            close(a, e, 1e-4)?;
            // The tensor-op backward (the GPU's) agrees too.
            close(&op.backward_tensor(x.as_tensor(), &upstream)?, e, 1e-4)?;
        }
        Ok(())
    }
}
