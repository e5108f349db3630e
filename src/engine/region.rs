//! Region prompts in a step (settings in `settings::region`): each prompt is scored on
//! the part of the canvas its mask covers (or leaves out). Prompts that share a part are
//! grouped, so each part costs one CLIP pass at most.
//!
//! - Masked cutouts (pixray's spot prompts): the step's crops of the image with the rest
//!   of the canvas painted mid-grey, so CLIP sees only the region and no gradient reaches
//!   the pixels outside it.
//! - Centred cutouts: the step's own cutout embeddings whose crop centres fall inside the
//!   part; no extra pass.

use candle_core::{DType, Device, Tensor};

use super::cutouts::Crop;
use super::error::Result;
use super::loss::LabelledTarget;
use crate::settings::{Mask, RegionCutouts};

/// The grey the masked cutouts show outside their region.
pub const OUTSIDE_GREY: f64 = 0.5;

/// The prompts that share one scored part of the canvas.
#[derive(Debug)]
pub struct RegionGroup {
    /// `[1, 1, H, W]`, 1 where the prompts are scored, at the canvas size.
    keep: Tensor,
    /// The same, on the host, row by row.
    bits: Vec<bool>,
    width: usize,
    height: usize,
    pub targets: Vec<LabelledTarget>,
}

impl RegionGroup {
    /// The image `[1, 3, H, W]` with everything outside the part painted grey:
    /// `(image − g)·keep + g`, so the outside has no gradient.
    pub fn paint(&self, image: &Tensor) -> Result<Tensor> {
        Ok(((image - OUTSIDE_GREY)?.broadcast_mul(&self.keep)? + OUTSIDE_GREY)?)
    }

    /// The indices of `crops` whose centres fall inside the part, for cutouts made of the
    /// image rolled by `roll` (a pixel `(x, y)` of the rolled image is `(x − dx, y − dy)`
    /// of the canvas, wrapping around).
    pub fn crops_inside(&self, crops: &[Crop], roll: Option<(usize, usize)>) -> Vec<u32> {
        let (dx, dy) = roll.unwrap_or((0, 0));
        let (w, h) = (self.width.max(1), self.height.max(1));
        crops
            .iter()
            .enumerate()
            .filter(|(_, c)| {
                let x = (c.x + c.size / 2 + w - dx % w) % w;
                let y = (c.y + c.size / 2 + h - dy % h) % h;
                self.bits.get(y * self.width + x).copied().unwrap_or(false)
            })
            .filter_map(|(i, _)| u32::try_from(i).ok())
            .collect()
    }
}

/// Every region prompt of a run, grouped by the part of the canvas they score.
#[derive(Debug, Default)]
pub struct Regions {
    pub mode: RegionCutouts,
    pub groups: Vec<RegionGroup>,
}

impl Regions {
    /// Groups `(scored part, target)` pairs; each part must already be at the canvas's
    /// `width × height`.
    pub fn new(
        mode: RegionCutouts,
        parts: Vec<(Mask, LabelledTarget)>,
        width: usize,
        height: usize,
        device: &Device,
    ) -> Result<Self> {
        let mut masks: Vec<Mask> = Vec::new();
        let mut groups: Vec<RegionGroup> = Vec::new();
        for (mask, target) in parts {
            if let Some(i) = masks.iter().position(|m| *m == mask) {
                groups[i].targets.push(target);
                continue;
            }
            let bits = mask.bits();
            let values: Vec<f32> = bits.iter().map(|&b| if b { 1.0 } else { 0.0 }).collect();
            let keep = Tensor::from_vec(values, (1, 1, height, width), device)?.to_dtype(DType::F32)?;
            groups.push(RegionGroup { keep, bits, width, height, targets: vec![target] });
            masks.push(mask);
        }
        Ok(Self { mode, groups })
    }

    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::loss::PromptTarget;

    fn target(label: &str) -> LabelledTarget {
        let embed = Tensor::ones((1, 2), DType::F32, &Device::Cpu).unwrap();
        LabelledTarget { label: label.into(), target: PromptTarget { embed, weight: 1.0, stop: f64::NEG_INFINITY } }
    }

    #[test]
    fn prompts_sharing_a_part_share_a_group() {
        let left = Mask::from_fn(4, 2, |x, _| x < 2);
        let parts = vec![(left.clone(), target("a")), (left.inverted(), target("b")), (left, target("c"))];
        let regions = Regions::new(RegionCutouts::Masked, parts, 4, 2, &Device::Cpu).unwrap();
        assert_eq!(regions.groups.len(), 2);
        let labels: Vec<&str> = regions.groups[0].targets.iter().map(|t| t.label.as_str()).collect();
        assert_eq!(labels, ["a", "c"]);
    }

    #[test]
    fn painting_greys_the_outside() {
        let left = Mask::from_fn(2, 1, |x, _| x == 0);
        let regions = Regions::new(RegionCutouts::Masked, vec![(left, target("a"))], 2, 1, &Device::Cpu).unwrap();
        let image =
            Tensor::new(&[0.9f32, 0.1, 0.2, 0.3, 0.4, 0.8], &Device::Cpu).unwrap().reshape((1, 3, 1, 2)).unwrap();
        let painted = regions.groups[0].paint(&image).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let want = [0.9f32, 0.5, 0.2, 0.5, 0.4, 0.5];
        assert!(painted.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-6), "{painted:?}");
    }

    #[test]
    fn crop_centres_follow_the_roll() {
        // The right half of an 8×8 canvas.
        let right = Mask::from_fn(8, 8, |x, _| x >= 4);
        let regions = Regions::new(RegionCutouts::Centres, vec![(right, target("a"))], 8, 8, &Device::Cpu).unwrap();
        let g = &regions.groups[0];
        let crops = [Crop { size: 4, x: 0, y: 0 }, Crop { size: 4, x: 4, y: 0 }, Crop { size: 2, x: 3, y: 5 }];
        // Centres at x = 2, 6 and 4.
        assert_eq!(g.crops_inside(&crops, None), [1, 2]);
        // Rolled right by 4: the rolled image's x = 2 is the canvas's x = 6.
        assert_eq!(g.crops_inside(&crops, Some((4, 3))), [0]);
    }
}
