//! The motion-only preview: the camera path applied to a first image with no
//! optimisation, so an artist sees in seconds where the schedules take the view. Without
//! an image to start from, a test card (a checkerboard with a marked centre and corners)
//! shows zoom, turn and pan plainly.

use image::{Rgb, RgbImage};

use super::warp::warp_rgb;
use crate::settings::animation::{Border, FramePlan};

/// A `width`×`height` test card: a grey checkerboard of about 8 squares across, a red
/// cross through the centre, and a blue, green, yellow and magenta square in the corners
/// (top left, top right, bottom left, bottom right), so turns and flips are plain.
pub fn test_card(width: u32, height: u32) -> RgbImage {
    let cell = (width.max(height) / 8).max(1);
    let (cx, cy) = (width / 2, height / 2);
    let corner = (width.min(height) / 6).max(1);
    let arm = (width.min(height) / 64).max(1);
    RgbImage::from_fn(width, height, |x, y| {
        let (right, bottom) = (x + corner >= width, y + corner >= height);
        if (x < corner || right) && (y < corner || bottom) {
            return match (right, bottom) {
                (false, false) => Rgb([40, 80, 230]),
                (true, false) => Rgb([40, 200, 60]),
                (false, true) => Rgb([235, 210, 40]),
                (true, true) => Rgb([220, 50, 200]),
            };
        }
        if x.abs_diff(cx) <= arm || y.abs_diff(cy) <= arm {
            return Rgb([220, 40, 40]);
        }
        if ((x / cell) + (y / cell)).is_multiple_of(2) {
            Rgb([200, 200, 200])
        } else {
            Rgb([70, 70, 70])
        }
    })
}

/// The frames of the camera path from `first`: frame 0 is `first`, each later frame the
/// previous one warped by its frame's motion, rounded to RGB8 between frames as a render
/// keeps them (so the preview shows the resampling a render's starts go through).
pub fn motion_frames(first: &RgbImage, plans: &[FramePlan], border: Border) -> Vec<RgbImage> {
    let mut out: Vec<RgbImage> = Vec::with_capacity(plans.len());
    for plan in plans {
        let frame = match out.last() {
            Some(previous) if plan.frame > 0 => warp_rgb(previous, &plan.motion, border),
            _ => first.clone(),
        };
        out.push(frame);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::animation::{AnimationSettings, Motion};
    use crate::settings::schedule::Schedule;

    #[test]
    fn the_card_marks_its_corners_and_centre() {
        let card = test_card(64, 48);
        assert_eq!(card.get_pixel(0, 0), &Rgb([40, 80, 230]));
        assert_eq!(card.get_pixel(63, 0), &Rgb([40, 200, 60]));
        assert_eq!(card.get_pixel(0, 47), &Rgb([235, 210, 40]));
        assert_eq!(card.get_pixel(63, 47), &Rgb([220, 50, 200]));
        assert_eq!(card.get_pixel(32, 24), &Rgb([220, 40, 40]));
    }

    #[test]
    fn a_preview_chains_the_warps() {
        let a = AnimationSettings {
            frames: 3,
            translation_x: Schedule::parse("0:(0), 1:(4)").unwrap(),
            ..AnimationSettings::default()
        };
        let plans = a.plan(&[], 0).unwrap();
        let card = test_card(64, 48);
        let frames = motion_frames(&card, &plans, Border::Wrap);
        assert_eq!(frames[0], card);
        // Two whole-pixel moves of 4: frame 2 is the card moved right by 8, wrapped.
        let moved = Motion { translation_x: 8.0, ..Motion::NONE };
        assert_eq!(frames[2], warp_rgb(&card, &moved, Border::Wrap));
        assert_eq!(frames[2].get_pixel(8, 0), card.get_pixel(0, 0));
    }
}
