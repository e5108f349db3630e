//! A one-step model's `config.json`: the sizes that come from the CLIP and VQGAN it
//! was trained for (embedding width, codebook size, token grid), the transformer's own
//! sizes, and which model files and image side it was trained with.

use serde::{Deserialize, Serialize};

/// The `format` field every one-step `config.json` carries.
pub const FORMAT: &str = "clipcanvas-onestep";

/// The model files a one-step model was trained with, so a mismatch can be named.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct TrainedWith {
    /// SHA-256 of the CLIP's weight file.
    pub clip_sha256: String,
    /// SHA-256 of the VQGAN's weight file.
    pub vqgan_sha256: String,
    /// Side of the square images it makes, in pixels.
    pub image_side: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OneStepConfig {
    pub format: String,
    /// Width of the CLIP embedding it is conditioned on (the CLIP's projection size).
    pub clip_dim: usize,
    /// The VQGAN's codebook size.
    pub n_codes: usize,
    /// Token rows and columns of the grids it draws.
    pub grid: [usize; 2],
    pub width: usize,
    pub layers: usize,
    pub heads: usize,
    /// Inner width of each block's MLP.
    pub mlp: usize,
    #[serde(default)]
    pub trained_with: TrainedWith,
}

impl Default for OneStepConfig {
    fn default() -> Self {
        Self {
            format: FORMAT.to_owned(),
            clip_dim: 512,
            n_codes: 16384,
            grid: [16, 16],
            width: 256,
            layers: 8,
            heads: 8,
            mlp: 1024,
            trained_with: TrainedWith::default(),
        }
    }
}

impl OneStepConfig {
    /// Positions in the grid.
    pub fn cells(&self) -> usize {
        self.grid[0] * self.grid[1]
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.format != FORMAT {
            return Err(format!("not a one-step model config (format '{}', expected '{FORMAT}')", self.format));
        }
        let sizes =
            [self.clip_dim, self.n_codes, self.grid[0], self.grid[1], self.width, self.layers, self.heads, self.mlp];
        if sizes.contains(&0) {
            return Err("every size must be at least 1".into());
        }
        if !self.width.is_multiple_of(self.heads) {
            return Err(format!("width {} does not split into {} heads", self.width, self.heads));
        }
        if self.n_codes > u32::MAX as usize || self.cells() > 1 << 20 || self.width > 1 << 16 || self.layers > 1024 {
            return Err("sizes out of range".into());
        }
        Ok(())
    }

    pub fn from_json(text: &str) -> Result<Self, String> {
        let c: Self = serde_json::from_str(text).map_err(|e| format!("invalid one-step config ({e})"))?;
        c.validate()?;
        Ok(c)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_bad_sizes() {
        let c = OneStepConfig::default();
        assert_eq!(OneStepConfig::from_json(&c.to_json()), Ok(c.clone()));
        let bad = OneStepConfig { heads: 3, ..c.clone() };
        assert!(OneStepConfig::from_json(&bad.to_json()).unwrap_err().contains("heads"));
        let bad = OneStepConfig { format: "x".into(), ..c };
        assert!(OneStepConfig::from_json(&bad.to_json()).unwrap_err().contains("format"));
        assert!(OneStepConfig::from_json("{").unwrap_err().contains("invalid one-step config"));
    }
}
