//! The pretrained networks: CLIP (the perceptor), the taming-transformers VQGAN (the
//! generator) and the CLIP tokenizer, written in candle and loaded from the files
//! artists have on disk. Nothing here knows about the UI.

pub mod bundled;
pub mod clip;
pub mod error;
pub mod nn;
pub mod tokenizer;
pub mod vqgan;
pub mod weights;

pub use error::{ModelError, Result};
