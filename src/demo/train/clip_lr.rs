//! The CLIP's peak learning rate, the default of `--clip-lr`.

/// The CLIP's peak learning rate.
pub const CLIP_LR: f64 = 1e-3;
