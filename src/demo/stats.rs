//! What an image shows, from its pixels alone: each pixel is classed as the nearest of
//! the world's named colours; the background is the commonest class; the largest
//! connected blob of another class is the subject, with its colour and position.
//!
//! No model is involved, so these statistics can judge whether a generated image
//! matches its prompt without trusting the CLIP that steered it.

use image::RgbImage;

use super::scene::{Position, COLOURS};

/// The measured content of an image.
#[derive(Debug, Clone, PartialEq)]
pub struct Analysis {
    /// Index into [`COLOURS`] of the commonest colour class.
    pub background: usize,
    /// Share of the image in the background class.
    pub background_share: f64,
    /// The largest connected region of a non-background class, if any.
    pub blob: Option<Blob>,
}

/// One connected region of a colour class.
#[derive(Debug, Clone, PartialEq)]
pub struct Blob {
    /// Index into [`COLOURS`].
    pub colour: usize,
    /// Share of the image it covers.
    pub share: f64,
    /// Its centroid as fractions of the width and height.
    pub centre: (f64, f64),
    /// The named position nearest the centroid.
    pub position: Position,
}

/// The squared distance between two sRGB colours.
pub fn distance2(a: [u8; 3], b: [u8; 3]) -> u32 {
    (0..3).map(|k| (i32::from(a[k]) - i32::from(b[k])).unsigned_abs().pow(2)).sum()
}

/// The nearest named colour to an sRGB pixel.
pub fn classify(p: [u8; 3]) -> usize {
    let mut best = (u32::MAX, 0);
    for (i, c) in COLOURS.iter().enumerate() {
        let d = distance2(p, c.rgb);
        if d < best.0 {
            best = (d, i);
        }
    }
    best.1
}

/// The hue of an sRGB colour in degrees, or `None` for greys.
pub fn hue(p: [u8; 3]) -> Option<f64> {
    let [r, g, b] = p.map(|v| f64::from(v) / 255.0);
    let max = r.max(g).max(b);
    let min = r.min(g).min(b);
    let d = max - min;
    if d < 0.1 {
        return None;
    }
    let h = if max == r {
        ((g - b) / d).rem_euclid(6.0)
    } else if max == g {
        (b - r) / d + 2.0
    } else {
        (r - g) / d + 4.0
    };
    Some(h * 60.0)
}

/// The 4-connected region of pixels `inside` says belong with `start` (which must be
/// one of them), as pixel indices in visiting order; marks them in `seen`.
pub(crate) fn component(
    w: usize,
    h: usize,
    start: usize,
    inside: impl Fn(usize) -> bool,
    seen: &mut [bool],
) -> Vec<usize> {
    let mut region = Vec::new();
    let mut stack = vec![start];
    seen[start] = true;
    while let Some(i) = stack.pop() {
        region.push(i);
        let (x, y) = (i % w, i / w);
        let mut visit = |j: usize| {
            if inside(j) && !seen[j] {
                seen[j] = true;
                stack.push(j);
            }
        };
        if x > 0 {
            visit(i - 1);
        }
        if x + 1 < w {
            visit(i + 1);
        }
        if y > 0 {
            visit(i - w);
        }
        if y + 1 < h {
            visit(i + w);
        }
    }
    region
}

/// Measures an image.
pub fn analyse(img: &RgbImage) -> Analysis {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let classes: Vec<usize> = img.pixels().map(|p| classify(p.0)).collect();
    let mut counts = vec![0usize; COLOURS.len()];
    for &c in &classes {
        counts[c] += 1;
    }
    let total = (w * h).max(1) as f64;
    let background = (0..COLOURS.len()).max_by_key(|&c| (counts[c], usize::MAX - c)).unwrap_or(0);
    // Connected components (4-neighbour) of every non-background class.
    let mut seen = vec![false; w * h];
    let mut best: Option<(usize, usize, f64, f64)> = None; // (size, class, sx, sy)
    for start in 0..w * h {
        if classes[start] == background || seen[start] {
            continue;
        }
        let class = classes[start];
        let region = component(w, h, start, |j| classes[j] == class, &mut seen);
        let (mut sx, mut sy) = (0.0, 0.0);
        for &i in &region {
            sx += (i % w) as f64 + 0.5;
            sy += (i / w) as f64 + 0.5;
        }
        let n = region.len();
        if best.is_none_or(|b| n > b.0) {
            best = Some((n, class, sx, sy));
        }
    }
    let blob = best.map(|(n, colour, sx, sy)| {
        let centre = (sx / n as f64 / w as f64, sy / n as f64 / h as f64);
        Blob { colour, share: n as f64 / total, centre, position: Position::nearest(centre.0, centre.1) }
    });
    Analysis { background, background_share: counts[background] as f64 / total, blob }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::scene::{Scene, Size};
    use crate::engine::rng::Rng;

    #[test]
    fn rendered_scenes_are_measured_as_drawn() {
        let mut rng = Rng::new(5);
        for _ in 0..100 {
            let mut s = Scene::random(&mut rng, 0.0);
            s.size = Size::Big;
            let a = analyse(&s.render(96, &mut rng));
            assert_eq!(a.background, s.background, "{s:?}");
            let blob = a.blob.unwrap_or_else(|| panic!("no blob in {s:?}"));
            assert_eq!(blob.colour, s.colour, "{s:?}");
            assert_eq!(blob.position, s.position, "{s:?}");
        }
    }

    #[test]
    fn hues_of_primaries() {
        assert_eq!(hue([255, 0, 0]), Some(0.0));
        assert_eq!(hue([0, 255, 0]), Some(120.0));
        assert_eq!(hue([0, 0, 255]), Some(240.0));
        assert_eq!(hue([128, 128, 128]), None);
    }
}
