//! The pretrained networks: CLIP (the perceptor), the taming-transformers VQGAN (the
//! generator) and the CLIP tokenizer, written in candle and loaded from the files
//! artists have on disk — and the model manager that finds, downloads and verifies
//! those files (`catalog`, `store`, `download`). Nothing here knows about the UI.

pub mod clip;
pub mod error;
pub mod kernels;
pub mod nn;
pub mod onestep;
pub mod ops;
pub mod random;
#[cfg(test)]
pub(crate) mod testing;
pub mod tokenizer;
pub mod vqgan;
pub mod weights;

pub use error::{ModelError, Result};
