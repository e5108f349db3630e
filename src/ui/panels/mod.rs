//! The studio's side panels, each a function over the part of the state it edits.

pub mod animation;
pub mod gallery;
pub mod grid;
pub mod images;
pub mod mask;
pub mod models;
pub mod plot;
pub mod prompts;
pub mod queue;
pub mod settings;
pub mod timeline;
