//! clipcanvas: a studio for VQGAN+CLIP text-to-image art.
//!
//! The layers, one way down:
//! - `ui`: the studio (egui, wgpu); imports only [`settings`], [`worker`] and itself.
//!   It is built with the default `studio` feature; without it the binary is headless.
//! - [`cli`]: the headless commands (`generate`, `score`, `models`, `bench`,
//!   `train-demo`, `train-onestep`); with no command, it opens the studio.
//! - [`worker`]: the studio's background services (the engine thread, the file work,
//!   the model downloads), reached over bounded channels.
//! - [`training`]: `train-onestep`, the one-step generator's trainer, with checkpoints.
//! - [`demo`]: the built-in shapes world (scenes, its training, its evaluation).
//! - [`engine`]: images, scoring, one-step drafts and the optimisation session.
//! - [`catalog`]: model files on disk — the catalog, discovery, downloads, verification.
//! - [`models`]: CLIP, VQGAN, the one-step generator and the tokenizer in candle, the
//!   only code that reads model weights.
//! - [`export`] (image and video formats) and [`files`] (atomic writes, hashes, bounded
//!   reads of regular files only): the file plumbing; [`settings`]: the plain data every layer shares; [`process`]:
//!   process-wide settings made at start-up.
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
#[cfg(feature = "studio")]
pub mod ui;
pub mod worker;
