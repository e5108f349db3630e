//! The ops under the models' layers, and the one rule ([`path`]) that picks the form an
//! op runs as:
//!
//! - **frozen** (generation): the weights are plain f32 tensors, so only the input's
//!   gradient is ever needed. One candle custom op per layer ([`linear`], [`conv`],
//!   [`group_norm`], [`quick_gelu`], [`upsample`]; the VQGAN's whole [`resnet`] block and
//!   CLIP's [`attention`] and whole [`encoder_layer`], the cutouts' [`windows`] on
//!   the CPU) computes the output and, on the way back, the
//!   input's gradient — never the weights' (candle's own matmul and conv backward always
//!   make both; for a generation step that is a third of the work thrown away). On the
//!   CPU the forward passes run the kernels of `models::kernels`; on a GPU candle's own
//!   tensor ops, still without weight gradients. The backward passes are tensor ops or
//!   the same custom ops, so they run on any device.
//! - **trained** (`clipcanvas train-demo`, `train-onestep`): the same kernels with the
//!   weights' gradients as well ([`training`]), on the CPU.
//! - **composed**: anything else (weights being trained on a GPU, other dtypes) runs the
//!   reference forms of [`composed`], built from candle ops that have a backward pass.
//!
//! `storage` is the CPU-storage plumbing the custom ops share.

pub mod attention;
pub mod composed;
pub mod conv;
pub mod encoder_layer;
pub mod group_norm;
pub mod linear;
pub mod quick_gelu;
pub mod resnet;
mod storage;
pub mod training;
pub mod upsample;
pub mod windows;

use candle_core::{DType, Tensor};

use storage::is_frozen;

/// The form an op runs as, from [`path`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// The custom ops without weight gradients: an f32 input and every weight frozen
    /// ([`frozen`]), on any device.
    Frozen,
    /// The custom ops of [`training`]: the input and every weight f32 on the CPU.
    Trained,
    /// The compositions of candle ops ([`composed`]).
    Composed,
}

/// Whether every weight can go through a frozen op: plain f32 tensors, neither variables
/// nor the results of tracked ops. [`path`]'s rule for the weights alone, for choices
/// made when a model is built, before it sees an input.
pub fn frozen(weights: &[&Tensor]) -> bool {
    weights.iter().all(|w| is_frozen(w))
}

/// Which form an op on `x` with `weights` runs as: [`Path::Frozen`] when `x` is f32 and
/// every weight frozen; otherwise [`Path::Trained`] when `x` and every weight are f32 on
/// the CPU; otherwise [`Path::Composed`].
pub fn path(x: &Tensor, weights: &[&Tensor]) -> Path {
    let f32 = x.dtype() == DType::F32;
    if f32 && frozen(weights) {
        Path::Frozen
    } else if f32 && x.device().is_cpu() && weights.iter().all(|w| w.device().is_cpu() && w.dtype() == DType::F32) {
        Path::Trained
    } else {
        Path::Composed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn path_follows_the_weights_and_the_dtype() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::zeros((2, 3), DType::F32, &dev)?;
        let plain = Tensor::ones(3, DType::F32, &dev)?;
        let var = Var::ones(3, DType::F32, &dev)?;
        let tracked = (var.as_tensor() * 2.0)?;
        assert_eq!(path(&x, &[&plain, &plain]), Path::Frozen);
        assert_eq!(path(&x, &[&plain, var.as_tensor()]), Path::Trained);
        assert_eq!(path(&x, &[&tracked]), Path::Trained);
        assert_eq!(path(&x.to_dtype(DType::F64)?, &[&plain]), Path::Composed);
        assert_eq!(path(&x, &[&plain.to_dtype(DType::F64)?]), Path::Composed);
        assert!(frozen(&[&plain]) && !frozen(&[&plain, var.as_tensor()]));
        Ok(())
    }
}
