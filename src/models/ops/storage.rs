//! The CPU-storage plumbing of the custom ops in `models::ops`: which tensors are frozen,
//! dense copies, the contiguous f32 slices of CPU tensors and of an op's input, what a
//! fused op keeps for its backward pass, and the GPU forward passes that run an op's
//! tensor-op form on the device (`gpu_forwards!`).

use candle_core::{bail, CpuStorage, DType, Layout, Result, Storage, Tensor};

/// Whether `w` can go through a frozen op: a plain (untrained) f32 tensor.
pub(super) fn is_frozen(w: &Tensor) -> bool {
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
pub(super) fn with_cpu_slices<R>(ts: &[Tensor], f: impl FnOnce(&[&[f32]]) -> Result<R>) -> Result<R> {
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
pub(super) struct Saved<T = Vec<f32>>(std::sync::Mutex<Option<T>>);

impl<T> Default for Saved<T> {
    fn default() -> Self {
        Self(std::sync::Mutex::new(None))
    }
}

impl<T> Saved<T> {
    pub(super) fn put(&self, values: T) {
        *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(values);
    }

    /// The kept values; or, on a second backward pass through the same graph (which
    /// finds them taken), `recompute`'s.
    pub(super) fn take_or(&self, recompute: impl FnOnce() -> Result<T>) -> Result<T> {
        match self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take() {
            Some(values) => Ok(values),
            None => recompute(),
        }
    }
}

/// A GPU forward pass through candle's tensor ops: wraps the storage as a tensor, runs
/// `f`, and hands back the result's storage.
#[cfg(any(feature = "cuda", feature = "metal"))]
pub(super) fn via_tensors(
    storage: Storage,
    layout: &Layout,
    f: impl FnOnce(&Tensor) -> Result<Tensor>,
) -> Result<(Storage, candle_core::Shape)> {
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

/// The `cuda_fwd` and `metal_fwd` of a `CustomOp1` whose `forward_tensor` is its forward
/// pass as tensor ops: `via_tensors` on the device.
macro_rules! gpu_forwards {
    () => {
        #[cfg(feature = "cuda")]
        fn cuda_fwd(
            &self,
            storage: &candle_core::CudaStorage,
            layout: &candle_core::Layout,
        ) -> candle_core::Result<(candle_core::CudaStorage, candle_core::Shape)> {
            use candle_core::backend::BackendStorage;
            match $crate::models::ops::storage::via_tensors(
                candle_core::Storage::Cuda(storage.try_clone(layout)?),
                layout,
                |x| self.forward_tensor(x),
            )? {
                (candle_core::Storage::Cuda(s), shape) => Ok((s, shape)),
                _ => candle_core::bail!("frozen op: the result left the device"),
            }
        }

        #[cfg(feature = "metal")]
        fn metal_fwd(
            &self,
            storage: &candle_core::MetalStorage,
            layout: &candle_core::Layout,
        ) -> candle_core::Result<(candle_core::MetalStorage, candle_core::Shape)> {
            use candle_core::backend::BackendStorage;
            match $crate::models::ops::storage::via_tensors(
                candle_core::Storage::Metal(storage.try_clone(layout)?),
                layout,
                |x| self.forward_tensor(x),
            )? {
                (candle_core::Storage::Metal(s), shape) => Ok((s, shape)),
                _ => candle_core::bail!("frozen op: the result left the device"),
            }
        }
    };
}

pub(super) use gpu_forwards;
