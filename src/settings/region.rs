//! Region prompts (pixray's "spot" prompts): a text prompt scored only on the part of the
//! canvas its mask covers, or only on the rest (`outside`). Plain data: the mask is a
//! bitmap kept as run lengths, so that it travels inside settings files, PNG metadata and
//! sessions without a file of its own. `engine::region` scores it.

use serde::{Deserialize, Serialize};

use super::prompt::parse_prompt;

/// The largest side a mask may have (a canvas's own limit).
pub const MAX_MASK_SIDE: usize = 8192;

/// A one-bit mask of `width × height` pixels, row by row, as run lengths that start
/// with a run of unmasked pixels (which may be 0 long) and then alternate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mask {
    width: usize,
    height: usize,
    runs: Vec<usize>,
}

impl Mask {
    /// A mask whose pixel `(x, y)` is `inside(x, y)`.
    pub fn from_fn(width: usize, height: usize, inside: impl Fn(usize, usize) -> bool) -> Self {
        let mut runs = Vec::new();
        let (mut current, mut run) = (false, 0usize);
        for y in 0..height {
            for x in 0..width {
                if inside(x, y) == current {
                    run += 1;
                } else {
                    runs.push(run);
                    current = !current;
                    run = 1;
                }
            }
        }
        runs.push(run);
        Self { width, height, runs }
    }

    /// An empty mask (nothing covered).
    pub fn empty(width: usize, height: usize) -> Self {
        Self::from_fn(width, height, |_, _| false)
    }

    pub fn width(&self) -> usize {
        self.width
    }

    pub fn height(&self) -> usize {
        self.height
    }

    /// The pixels, row by row, `true` where covered.
    pub fn bits(&self) -> Vec<bool> {
        let mut out = Vec::with_capacity(self.width * self.height);
        for (i, &run) in self.runs.iter().enumerate() {
            out.extend(std::iter::repeat_n(i % 2 == 1, run));
        }
        out.resize(self.width * self.height, false);
        out
    }

    /// The number of covered pixels.
    pub fn covered(&self) -> usize {
        self.runs.iter().skip(1).step_by(2).sum()
    }

    /// The share of the canvas covered, from 0 to 1.
    #[expect(clippy::cast_precision_loss, reason = "pixel counts are far below 2^52")]
    pub fn coverage(&self) -> f64 {
        let all = self.width * self.height;
        if all == 0 {
            0.0
        } else {
            self.covered() as f64 / all as f64
        }
    }

    /// The mask at another size, by nearest neighbour (each new pixel takes the pixel
    /// under its centre).
    pub fn resized(&self, width: usize, height: usize) -> Self {
        if (width, height) == (self.width, self.height) {
            return self.clone();
        }
        let bits = self.bits();
        let (sw, sh) = (self.width.max(1), self.height.max(1));
        Self::from_fn(width, height, |x, y| {
            let sx = ((2 * x + 1) * sw / (2 * width.max(1))).min(sw - 1);
            let sy = ((2 * y + 1) * sh / (2 * height.max(1))).min(sh - 1);
            bits.get(sy * self.width + sx).copied().unwrap_or(false)
        })
    }

    /// The same mask with every pixel flipped.
    pub fn inverted(&self) -> Self {
        let bits = self.bits();
        Self::from_fn(self.width, self.height, |x, y| !bits[y * self.width + x])
    }

    /// Checks what deserialisation cannot: the size and that the runs fill it exactly.
    pub fn validate(&self) -> Result<(), String> {
        if self.width == 0 || self.height == 0 || self.width > MAX_MASK_SIDE || self.height > MAX_MASK_SIDE {
            return Err(format!(
                "a region mask of {}x{} is out of range (1 to {MAX_MASK_SIDE} per side)",
                self.width, self.height
            ));
        }
        let total = self.runs.iter().try_fold(0usize, |acc, &r| acc.checked_add(r));
        if total != Some(self.width * self.height) {
            return Err(format!("a region mask's runs do not fill its {}x{} pixels", self.width, self.height));
        }
        Ok(())
    }
}

/// A prompt with a mask.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Region {
    /// `text[:weight[:stop]]`, as a text prompt.
    pub prompt: String,
    /// Scored on what the mask leaves out instead of what it covers (pixray's
    /// `--spot_off`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub outside: bool,
    pub mask: Mask,
}

impl Region {
    /// The pixels the prompt is scored on: the mask, or its complement when `outside`.
    pub fn scored(&self) -> Mask {
        if self.outside {
            self.mask.inverted()
        } else {
            self.mask.clone()
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        let spec = parse_prompt(&self.prompt)?;
        self.mask.validate()?;
        let part = if self.outside { "leaves nothing outside it" } else { "covers nothing" };
        let scored =
            if self.outside { self.mask.width * self.mask.height - self.mask.covered() } else { self.mask.covered() };
        if scored == 0 {
            return Err(format!("the mask of region prompt {:?} {part}", super::prompt::excerpt(&spec.text)));
        }
        Ok(())
    }
}

/// How a region prompt sees the canvas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RegionCutouts {
    /// The step's cutouts of the image with everything outside the region painted grey
    /// (pixray's spot cutouts): one more CLIP pass per mask, and no gradient outside.
    #[default]
    Masked,
    /// Only the step's cutouts whose centres fall inside the region: no extra CLIP pass,
    /// but the crops see past the region's edge.
    Centres,
}

impl RegionCutouts {
    pub const ALL: [Self; 2] = [Self::Masked, Self::Centres];

    pub fn name(self) -> &'static str {
        match self {
            Self::Masked => "masked",
            Self::Centres => "centres",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name().eq_ignore_ascii_case(s.trim()))
    }

    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_lengths_round_trip() {
        let m = Mask::from_fn(5, 3, |x, y| x >= 2 && y == 1);
        assert_eq!(m.runs, vec![7, 3, 5]);
        assert_eq!(m.covered(), 3);
        let bits = m.bits();
        assert!(bits[7] && bits[9] && !bits[6] && !bits[10]);
        let starts_on = Mask::from_fn(2, 2, |x, _| x == 0);
        assert_eq!(starts_on.runs, vec![0, 1, 1, 1, 1]);
        assert_eq!(Mask::empty(4, 4).runs, vec![16]);
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(json, r#"{"width":5,"height":3,"runs":[7,3,5]}"#);
        assert_eq!(serde_json::from_str::<Mask>(&json).unwrap(), m);
    }

    #[test]
    fn resizing_and_inverting() {
        let m = Mask::from_fn(4, 4, |x, _| x < 2);
        let big = m.resized(8, 2);
        assert_eq!(big.bits(), [[true; 4], [false; 4], [true; 4], [false; 4]].concat());
        assert_eq!(big.resized(4, 4).bits(), m.bits());
        assert_eq!(m.inverted().covered(), 8);
        assert!((m.coverage() - 0.5).abs() < 1e-12);
    }

    #[test]
    fn bad_masks_and_regions_are_refused() {
        let short: Mask = serde_json::from_str(r#"{"width":4,"height":4,"runs":[3,2]}"#).unwrap();
        assert!(short.validate().unwrap_err().contains("do not fill"));
        let huge: Mask = serde_json::from_str(r#"{"width":9000,"height":1,"runs":[9000]}"#).unwrap();
        assert!(huge.validate().unwrap_err().contains("out of range"));
        let over: Mask =
            serde_json::from_str(&format!(r#"{{"width":2,"height":2,"runs":[{},{}]}}"#, usize::MAX, 5)).unwrap();
        assert!(over.validate().is_err());
        let region = Region { prompt: "a cat".into(), outside: false, mask: Mask::empty(4, 4) };
        assert!(region.validate().unwrap_err().contains("covers nothing"));
        let full = Region { prompt: "a cat".into(), outside: true, mask: Mask::from_fn(4, 4, |_, _| true) };
        assert!(full.validate().unwrap_err().contains("leaves nothing outside"));
        let bad_prompt = Region { prompt: "a cat:1.5x".into(), outside: false, mask: Mask::from_fn(2, 2, |_, _| true) };
        assert!(bad_prompt.validate().is_err());
        assert_eq!(full.scored().covered(), 0);
    }
}
