//! The look losses' weights (`engine::looks`): plain data, all off by default.

use serde::{Deserialize, Serialize};

/// Weights of the look losses; 0 is off.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Looks {
    /// pixray's colourfulness loss on the cutouts (negative: toward grey).
    pub saturation: f64,
    /// Mirror symmetry left–right: MSE between the image and its mirror image.
    pub symmetry: f64,
    /// Mirror symmetry top–bottom.
    pub symmetry_vertical: f64,
}

impl Looks {
    pub fn is_off(&self) -> bool {
        *self == Self::default()
    }

    pub fn validate(&self) -> Result<(), String> {
        for (name, v) in [
            ("saturation", self.saturation),
            ("symmetry", self.symmetry),
            ("symmetry_vertical", self.symmetry_vertical),
        ] {
            if !(v.is_finite() && v.abs() <= 1000.0) {
                return Err(format!("the {name} weight must be a number between -1000 and 1000, got {v}"));
            }
        }
        Ok(())
    }
}
