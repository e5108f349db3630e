//! The shapes world: a small world clipcanvas understands without downloads.
//!
//! - [`scene`]: procedural scenes (shapes, colours, positions, sizes, counts) and their
//!   captions;
//! - [`data`]: scenes as training tensors, and the sizes the world is made at;
//! - [`train`]: `train-demo`, which trains a tiny CLIP and an f8 VQGAN on them with
//!   candle and writes them in the real file formats;
//! - [`harden`]: the last part of the CLIP's training, against `generate` itself;
//! - [`eval`]: zero-shot accuracy of the CLIP, reconstruction PSNR of the VQGAN;
//! - [`meaning`]: the meaning test, prompts judged from pixels;
//! - [`silhouette`]: which shape an image's subject is, from its pixels;
//! - [`stats`]: what an image shows, measured from its pixels alone (no CLIP), to check
//!   that generated images match their prompts.
//!
//! The trained files live in the repository's `models/shapes-world/` and are the
//! default models when none are given.

pub mod data;
pub mod error;
pub mod eval;
mod harden;
pub mod meaning;
pub mod scene;
pub mod silhouette;
pub mod stats;
pub mod train;

pub use error::{DemoError, Result};
