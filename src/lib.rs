//! clipcanvas: a studio for VQGAN+CLIP text-to-image art.
//!
//! The layers, one way down:
//! - [`cli`]: the headless commands (`score`, later `generate`, `models`, `bench`).
//! - [`engine`]: images, scoring and the optimisation session; no UI types.
//! - [`models`]: CLIP, VQGAN and the tokenizer in candle; the only code that opens
//!   model files.
//!
//! Lower layers never import higher ones, and nothing below the UI imports egui,
//! eframe or wgpu.

pub mod cli;
pub mod engine;
pub mod export;
pub mod models;
pub mod settings;
pub mod shapes;
pub mod ui;
pub mod worker;
