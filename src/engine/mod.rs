//! The engine: everything between a user's request and the models — image I/O and
//! preprocessing, scoring, one-step drafts and the optimisation session. It knows nothing of the
//! UI and reports through return values and observers.

pub mod animation;
pub mod augment;
pub mod bench;
pub mod coarse;
pub mod cutouts;
pub mod device;
pub mod draft;
pub mod error;
pub mod generator;
pub mod image;
pub mod loaded;
pub mod looks;
pub mod loss;
pub mod memory;
pub mod observer;
pub mod optim;
pub mod profile;
pub mod quality;
pub mod region;
pub mod rng;
pub mod score;
pub mod session;
mod session_file;
pub mod transfer;

pub use error::{EngineError, Result};
