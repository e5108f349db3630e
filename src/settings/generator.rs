//! What draws the image CLIP scores: the VQGAN (z+quantize, the default), a grid of flat
//! pixel cells, or Fourier coefficients. Plain data; `engine::generator` draws with it.

use serde::{Deserialize, Serialize};

/// The drawer of a run and the settings that belong to it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum GeneratorSettings {
    /// The VQGAN decoder over a latent grid, quantised to its codebook (the notebook's
    /// z+quantize).
    #[default]
    Vqgan,
    /// A grid of `cells_x × cells_y` flat rectangular cells, each cell's colour a
    /// parameter in `[0, 1]` (pixray's `pixel` drawer).
    Pixel { cells_x: usize, cells_y: usize },
    /// The image's decorrelated, frequency-scaled Fourier coefficients (Lucid's
    /// `fft_image` as pixray's `fft` drawer uses it).
    Fft(FftSettings),
}

/// The Fourier drawer's constants, pixray's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FftSettings {
    /// Frequency `f` is scaled by `1 / max(f, 4 / max(W, H))^decay`: higher is blurrier.
    pub decay: f64,
    /// Colour saturation: the first (luminance) column of the colour matrix is divided by
    /// it; higher is more colourful.
    pub colors: f64,
    /// The image's standard deviation before the colour matrix and the sigmoid.
    pub contrast: f64,
}

impl Default for FftSettings {
    fn default() -> Self {
        Self { decay: 1.5, colors: 1.5, contrast: 0.9 }
    }
}

impl GeneratorSettings {
    /// The names `--generator` takes, in the order menus list them.
    pub const NAMES: [&'static str; 3] = ["vqgan", "pixel", "fft"];

    pub fn is_vqgan(&self) -> bool {
        *self == Self::Vqgan
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::Vqgan => "vqgan",
            Self::Pixel { .. } => "pixel",
            Self::Fft(_) => "fft",
        }
    }

    /// The generator `name` names, with its default settings for a `width × height`
    /// canvas (`None` for an unknown name).
    pub fn named(name: &str, width: usize, height: usize) -> Option<Self> {
        match name.trim().to_ascii_lowercase().as_str() {
            "vqgan" => Some(Self::Vqgan),
            "pixel" => {
                let (cells_x, cells_y) = default_cells(width, height);
                Some(Self::Pixel { cells_x, cells_y })
            }
            "fft" => Some(Self::Fft(FftSettings::default())),
            _ => None,
        }
    }

    /// The learning rate a run of this generator starts from when none is given:
    /// the notebook's 0.1 for the VQGAN's latent, 0.05 for colours in `[0, 1]` (two
    /// dozen steps across the range), pixray's 0.3 for the Fourier coefficients (whose
    /// image is normalised, so only their proportions matter).
    pub fn default_lr(&self) -> f64 {
        match self {
            Self::Vqgan => 0.1,
            Self::Pixel { .. } => 0.05,
            Self::Fft(_) => 0.3,
        }
    }

    /// Whether the parameters lie on a grid over the canvas that coarse-to-fine search
    /// can move in blocks.
    pub fn has_grid(&self) -> bool {
        !matches!(self, Self::Fft(_))
    }

    pub fn validate(&self, width: usize, height: usize) -> Result<(), String> {
        match *self {
            Self::Vqgan => Ok(()),
            Self::Pixel { cells_x, cells_y } => {
                if cells_x == 0 || cells_y == 0 || cells_x > width || cells_y > height {
                    return Err(format!(
                        "pixel cells {cells_x}x{cells_y} must be at least 1x1 and at most the canvas, {width}x{height}"
                    ));
                }
                Ok(())
            }
            Self::Fft(f) => {
                if !(f.decay.is_finite() && (0.0..=4.0).contains(&f.decay)) {
                    return Err(format!("fft decay must be between 0 and 4, got {}", f.decay));
                }
                if !(f.colors.is_finite() && (0.1..=10.0).contains(&f.colors)) {
                    return Err(format!("fft colors must be between 0.1 and 10, got {}", f.colors));
                }
                if !(f.contrast.is_finite() && (0.01..=10.0).contains(&f.contrast)) {
                    return Err(format!("fft contrast must be between 0.01 and 10, got {}", f.contrast));
                }
                if width < 2 || height < 2 {
                    return Err(format!("the fft generator needs a canvas of at least 2x2, got {width}x{height}"));
                }
                Ok(())
            }
        }
    }
}

/// pixray's pixel drawer's proportions: 48 cells across the longer side (rounded to the
/// canvas's aspect on the other), never more cells than pixels.
pub fn default_cells(width: usize, height: usize) -> (usize, usize) {
    let long = width.max(height).max(1);
    let cells = 48.min(long);
    let scale = |side: usize| ((side * cells + long / 2) / long).clamp(1, side.max(1));
    (scale(width), scale(height))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_are_none() {
        for name in GeneratorSettings::NAMES {
            assert_eq!(GeneratorSettings::named(name, 256, 256).map(|g| g.name()), Some(name));
        }
        assert_eq!(GeneratorSettings::named("biggan", 256, 256), None);
    }

    #[test]
    fn default_cells_follow_the_aspect_and_never_exceed_the_canvas() {
        assert_eq!(default_cells(384, 384), (48, 48));
        assert_eq!(default_cells(512, 256), (48, 24));
        assert_eq!(default_cells(20, 10), (20, 10));
        assert_eq!(default_cells(1, 1), (1, 1));
    }

    #[test]
    fn serialises_with_its_kind_and_reads_back() {
        for g in [
            GeneratorSettings::Vqgan,
            GeneratorSettings::Pixel { cells_x: 32, cells_y: 24 },
            GeneratorSettings::Fft(FftSettings { decay: 1.0, colors: 2.0, contrast: 0.9 }),
        ] {
            let json = serde_json::to_string(&g).expect("json");
            assert!(json.contains(&format!("\"kind\":\"{}\"", g.name())), "{json}");
            assert_eq!(serde_json::from_str::<GeneratorSettings>(&json).expect("read"), g);
        }
        let err = serde_json::from_str::<GeneratorSettings>(r#"{"kind":"pixel","cells_x":4,"cells_y":4,"x":1}"#);
        assert!(err.is_err(), "unknown fields are refused");
    }

    #[test]
    fn validation_names_what_is_wrong() {
        let e = GeneratorSettings::Pixel { cells_x: 0, cells_y: 4 }.validate(64, 64).expect_err("0 cells");
        assert!(e.contains("pixel cells 0x4"), "{e}");
        let e = GeneratorSettings::Pixel { cells_x: 65, cells_y: 4 }.validate(64, 64).expect_err("too many");
        assert!(e.contains("at most the canvas"), "{e}");
        let fft = |decay, colors| GeneratorSettings::Fft(FftSettings { decay, colors, contrast: 0.9 });
        assert!(fft(f64::NAN, 1.5).validate(64, 64).is_err());
        assert!(fft(1.5, 0.0).validate(64, 64).is_err());
        assert!(fft(1.5, 1.5).validate(64, 64).is_ok());
    }
}
