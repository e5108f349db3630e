//! Which of the world's shapes an image's subject is, from its pixels alone (no CLIP):
//! the largest connected region of the subject's colour class is compared with each
//! shape's silhouette, drawn with the region's area and centroid, and the shape whose
//! silhouette overlaps it best (intersection over union) is the answer.

use image::RgbImage;

use super::scene::Shape;
use super::stats::{classify, component};

/// A shape's unit silhouette (radius 1): its area and centroid, measured on a grid.
fn unit_stats(shape: Shape) -> (f64, f64, f64) {
    let n = 400;
    let (mut count, mut sx, mut sy) = (0usize, 0.0, 0.0);
    for j in 0..n {
        for i in 0..n {
            let x = (i as f64 + 0.5) / n as f64 * 2.0 - 1.0;
            let y = (j as f64 + 0.5) / n as f64 * 2.0 - 1.0;
            if shape.contains(x, y) {
                count += 1;
                sx += x;
                sy += y;
            }
        }
    }
    let cell = 4.0 / (n * n) as f64;
    let c = count.max(1) as f64;
    (count as f64 * cell, sx / c, sy / c)
}

/// [`unit_stats`] of a shape, measured once.
fn unit(shape: Shape) -> (f64, f64, f64) {
    static STATS: std::sync::OnceLock<Vec<(f64, f64, f64)>> = std::sync::OnceLock::new();
    let all = STATS.get_or_init(|| Shape::ALL.iter().map(|&s| unit_stats(s)).collect());
    Shape::ALL.iter().position(|&s| s == shape).map_or((1.0, 0.0, 0.0), |i| all[i])
}

/// The largest 4-connected region of pixels whose colour class is `colour`, as a mask.
pub fn largest_region(img: &RgbImage, colour: usize) -> Vec<bool> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let of: Vec<bool> = img.pixels().map(|p| classify(p.0) == colour).collect();
    let mut seen = vec![false; w * h];
    let mut best: Vec<usize> = Vec::new();
    for start in 0..w * h {
        if of[start] && !seen[start] {
            let region = component(w, h, start, |j| of[j], &mut seen);
            if region.len() > best.len() {
                best = region;
            }
        }
    }
    let mut mask = vec![false; w * h];
    for i in best {
        mask[i] = true;
    }
    mask
}

/// The shape whose silhouette best matches `mask` (`w`×`h`), and its IoU; `None` for an
/// empty mask.
pub fn classify_mask(mask: &[bool], w: usize, h: usize) -> Option<(Shape, f64)> {
    let area = mask.iter().filter(|&&m| m).count();
    if area == 0 || mask.len() != w * h {
        return None;
    }
    let (mut sx, mut sy) = (0.0, 0.0);
    for (i, _) in mask.iter().enumerate().filter(|(_, m)| **m) {
        sx += (i % w) as f64 + 0.5;
        sy += (i / w) as f64 + 0.5;
    }
    let (cx, cy) = (sx / area as f64, sy / area as f64);
    let mut best: Option<(Shape, f64)> = None;
    for shape in Shape::ALL {
        let (unit_area, ux, uy) = unit(shape);
        let r = (area as f64 / unit_area).sqrt();
        // The shape's centre, so that its centroid falls on the region's.
        let (ox, oy) = (cx - ux * r, cy - uy * r);
        let (mut inter, mut union) = (0usize, 0usize);
        for y in 0..h {
            for x in 0..w {
                let inside = shape.contains((x as f64 + 0.5 - ox) / r, (y as f64 + 0.5 - oy) / r);
                let m = mask[y * w + x];
                inter += usize::from(inside && m);
                union += usize::from(inside || m);
            }
        }
        let iou = inter as f64 / union.max(1) as f64;
        if best.is_none_or(|b| iou > b.1) {
            best = Some((shape, iou));
        }
    }
    best
}

/// The shape of the largest region of colour class `colour` in `img`.
pub fn shape_of(img: &RgbImage, colour: usize) -> Option<(Shape, f64)> {
    let mask = largest_region(img, colour);
    classify_mask(&mask, img.width() as usize, img.height() as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::scene::Scene;
    use crate::engine::rng::Rng;

    #[test]
    fn rendered_shapes_are_recognised() {
        let mut rng = Rng::new(9);
        let (mut right, mut total) = (0, 0);
        for _ in 0..120 {
            let s = Scene::random(&mut rng, 0.0);
            let img = s.render(128, &mut rng);
            let (shape, _) = shape_of(&img, s.colour).unwrap();
            total += 1;
            right += usize::from(shape == s.shape);
        }
        // Small shapes are 28 px across at 128²: a few stars read as circles.
        assert!(right * 100 >= total * 95, "{right}/{total}");
    }

    #[test]
    fn an_empty_mask_has_no_shape() {
        assert_eq!(classify_mask(&[false; 16], 4, 4), None);
    }
}
