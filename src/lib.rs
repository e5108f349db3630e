//! clipcanvas: a studio for VQGAN+CLIP text-to-image art.
//!
//! The layers, one way down:
//! - [`cli`]: the headless commands (`generate`, `score`, `models`).
//! - [`worker`] and [`manager`]: the studio's background services (the engine thread;
//!   model downloads), reached over bounded channels.
//! - [`engine`]: images, scoring, one-step drafts and the optimisation session; no UI
//!   types.
//! - [`training`]: `train-onestep`, the one-step generator's trainer, with checkpoints.
//! - [`models`]: CLIP, VQGAN, the one-step generator and the tokenizer in candle, the only code that reads
//!   model weights; and the model manager's catalog, discovery, downloads and
//!   verification.
//!
//! Lower layers never import higher ones, and nothing below the UI imports egui,
//! eframe or wgpu.

pub mod catalog;
pub mod cli;
pub mod demo;
pub mod engine;
pub mod export;
pub mod files;
pub mod models;
pub mod process;
pub mod settings;
pub mod training;
pub mod ui;
pub mod worker;
