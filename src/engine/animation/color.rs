//! Colour coherence, a deflicker: each frame's start is moved to the first frame's colour
//! statistics in CIELAB (the mean and spread of L, a and b; Reinhard et al.'s transfer),
//! so an animation does not drift toward one hue or wash out over hundreds of frames.
//! The conversion is scikit-image's `rgb2lab`/`lab2rgb` (sRGB, D65, 2° observer).

use super::warp::Planar;

/// sRGB primaries to XYZ (D65), as scikit-image has them.
const RGB_TO_XYZ: [[f64; 3]; 3] =
    [[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169], [0.019334, 0.119193, 0.950227]];
/// The D65 white point (2° observer).
const WHITE: [f64; 3] = [0.95047, 1.0, 1.08883];

/// The mean and standard deviation of each LAB channel.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LabStats {
    pub mean: [f64; 3],
    pub std: [f64; 3],
}

fn srgb_to_linear(c: f64) -> f64 {
    if c > 0.04045 {
        ((c + 0.055) / 1.055).powf(2.4)
    } else {
        c / 12.92
    }
}

fn linear_to_srgb(c: f64) -> f64 {
    if c > 0.003_130_8 {
        1.055 * c.powf(1.0 / 2.4) - 0.055
    } else {
        12.92 * c
    }
}

/// One pixel, RGB in `[0, 1]`, to LAB.
pub fn rgb_to_lab(rgb: [f64; 3]) -> [f64; 3] {
    let lin = rgb.map(srgb_to_linear);
    let xyz: [f64; 3] = std::array::from_fn(|i| (0..3).map(|j| RGB_TO_XYZ[i][j] * lin[j]).sum::<f64>() / WHITE[i]);
    let f = |t: f64| if t > 0.008856 { t.cbrt() } else { 7.787 * t + 16.0 / 116.0 };
    let [fx, fy, fz] = xyz.map(f);
    [116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)]
}

/// One pixel, LAB to RGB in `[0, 1]` (clipped, as scikit-image clips).
pub fn lab_to_rgb(lab: [f64; 3]) -> [f64; 3] {
    let fy = (lab[0] + 16.0) / 116.0;
    let fx = lab[1] / 500.0 + fy;
    // scikit-image clips a negative z to 0.
    let fz = (fy - lab[2] / 200.0).max(0.0);
    let inv = |t: f64| if t > 0.206_896_6 { t * t * t } else { (t - 16.0 / 116.0) / 7.787 };
    let xyz = [inv(fx) * WHITE[0], inv(fy) * WHITE[1], inv(fz) * WHITE[2]];
    let m = xyz_to_rgb_matrix();
    let lin: [f64; 3] = std::array::from_fn(|i| (0..3).map(|j| m[i][j] * xyz[j]).sum());
    lin.map(|c| linear_to_srgb(c).clamp(0.0, 1.0))
}

/// The inverse of [`RGB_TO_XYZ`] (scikit-image inverts it numerically too).
fn xyz_to_rgb_matrix() -> [[f64; 3]; 3] {
    let m = RGB_TO_XYZ;
    let det = m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1]) - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
        + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0]);
    let c = |r0: usize, c0: usize, r1: usize, c1: usize| m[r0][c0] * m[r1][c1] - m[r0][c1] * m[r1][c0];
    [
        [c(1, 1, 2, 2) / det, -c(0, 1, 2, 2) / det, c(0, 1, 1, 2) / det],
        [-c(1, 0, 2, 2) / det, c(0, 0, 2, 2) / det, -c(0, 0, 1, 2) / det],
        [c(1, 0, 2, 1) / det, -c(0, 0, 2, 1) / det, c(0, 0, 1, 1) / det],
    ]
}

fn pixel(img: &Planar, i: usize) -> [f64; 3] {
    let plane = img.width * img.height;
    std::array::from_fn(|c| f64::from(img.data[c * plane + i]).clamp(0.0, 1.0))
}

/// An image's LAB statistics (population standard deviation).
pub fn lab_stats(img: &Planar) -> LabStats {
    let n = img.width * img.height;
    let labs: Vec<[f64; 3]> = (0..n).map(|i| rgb_to_lab(pixel(img, i))).collect();
    #[expect(clippy::cast_precision_loss, reason = "pixel counts are far below 2^52")]
    let count = n.max(1) as f64;
    let mean: [f64; 3] = std::array::from_fn(|c| labs.iter().map(|l| l[c]).sum::<f64>() / count);
    let std: [f64; 3] =
        std::array::from_fn(|c| (labs.iter().map(|l| (l[c] - mean[c]).powi(2)).sum::<f64>() / count).sqrt());
    LabStats { mean, std }
}

/// `img` with its LAB statistics moved to `target`'s: each channel shifted and scaled,
/// `(x − μ)·σ_target/σ + μ_target` (a flat channel is only shifted).
pub fn match_colors(img: &Planar, target: &LabStats) -> Planar {
    let own = lab_stats(img);
    let n = img.width * img.height;
    let mut out = img.clone();
    for i in 0..n {
        let lab = rgb_to_lab(pixel(img, i));
        let moved: [f64; 3] = std::array::from_fn(|c| {
            let scale = if own.std[c] > 1e-6 { target.std[c] / own.std[c] } else { 1.0 };
            (lab[c] - own.mean[c]) * scale + target.mean[c]
        });
        let rgb = lab_to_rgb(moved);
        for (c, v) in rgb.iter().enumerate() {
            #[expect(clippy::cast_possible_truncation, reason = "an f32 image")]
            {
                out.data[c * n + i] = *v as f32;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lab_round_trips_and_knows_white_and_black() {
        let white = rgb_to_lab([1.0, 1.0, 1.0]);
        assert!((white[0] - 100.0).abs() < 1e-3 && white[1].abs() < 1e-2 && white[2].abs() < 1e-2, "{white:?}");
        assert_eq!(rgb_to_lab([0.0; 3]), [0.0, 0.0, 0.0]);
        for rgb in [[0.2, 0.5, 0.9], [1.0, 0.0, 0.0], [0.01, 0.02, 0.0]] {
            let back = lab_to_rgb(rgb_to_lab(rgb));
            for c in 0..3 {
                assert!((back[c] - rgb[c]).abs() < 1e-6, "{rgb:?} → {back:?}");
            }
        }
    }

    #[test]
    fn matching_an_image_to_its_own_statistics_keeps_it() {
        let data: Vec<f32> = (0..48).map(|i| (i as f32 * 0.37).sin().abs()).collect();
        let img = Planar { width: 4, height: 4, data };
        let out = match_colors(&img, &lab_stats(&img));
        for (a, b) in out.data.iter().zip(&img.data) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
        // And to another's, it takes on that one's statistics (up to what the sRGB gamut
        // clips).
        let warm = Planar { width: 2, height: 1, data: vec![0.7, 0.6, 0.45, 0.4, 0.3, 0.2] };
        let target = lab_stats(&warm);
        let (before, after) = (lab_stats(&img), lab_stats(&match_colors(&img, &target)));
        let dist = |s: &LabStats| (0..3).map(|c| (s.mean[c] - target.mean[c]).powi(2)).sum::<f64>().sqrt();
        assert!(dist(&after) < 0.1 * dist(&before), "{before:?} → {after:?} vs {target:?}");
    }
}
