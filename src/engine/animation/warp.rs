//! The camera move between frames: an affine warp of the previous frame (zoom about the
//! centre, rotation, translation), resampled bicubically.
//!
//! The matrix is Deforum's 2D one: `R · T`, with `R = cv2.getRotationMatrix2D(centre,
//! angle, zoom)` and `T` the translation, applied as `cv2.warpAffine` applies a forward
//! matrix (each output pixel samples the input at the inverse-mapped point). Pixel `i`
//! sits at coordinate `i`, and the centre is the image's true centre, `((W−1)/2,
//! (H−1)/2)` (Deforum's `(W//2, H//2)` is half a pixel off on even sizes, so its zooms
//! drift by half a pixel per frame).
//!
//! Resampling is bicubic with `a = −0.75` (OpenCV's `INTER_CUBIC` and PyTorch's
//! `bicubic`), each of the 4×4 taps placed by the border rule on its own: `replicate`
//! repeats the edge pixel, `wrap` tiles the image. Bilinear resampling (Deforum's
//! default) averages neighbours at every frame, and over a long zoom the averaging
//! compounds into blur; the cubic's negative lobes keep edges (docs/animation.md
//! measures both over 60 frames).

use image::RgbImage;

use crate::settings::animation::{Border, Motion};

/// An image as three planes of `f32` in `[0, 1]` (values may overshoot after bicubic
/// resampling until converted back).
#[derive(Debug, Clone, PartialEq)]
pub struct Planar {
    pub width: usize,
    pub height: usize,
    /// `[3][height][width]`.
    pub data: Vec<f32>,
}

impl Planar {
    pub fn from_rgb(img: &RgbImage) -> Self {
        let (w, h) = (img.width() as usize, img.height() as usize);
        let mut data = vec![0.0; 3 * w * h];
        for (x, y, p) in img.enumerate_pixels() {
            for c in 0..3 {
                data[(c * h + y as usize) * w + x as usize] = f32::from(p[c]) / 255.0;
            }
        }
        Self { width: w, height: h, data }
    }

    /// Back to RGB8, rounded and clamped.
    pub fn to_rgb(&self) -> RgbImage {
        let (w, h) = (self.width, self.height);
        #[expect(clippy::cast_possible_truncation, reason = "image sides fit u32")]
        let mut img = RgbImage::new(w as u32, h as u32);
        for (x, y, p) in img.enumerate_pixels_mut() {
            for c in 0..3 {
                let v = self.data[(c * h + y as usize) * w + x as usize];
                #[expect(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "clamped to [0, 255]")]
                {
                    p[c] = (v * 255.0).round().clamp(0.0, 255.0) as u8;
                }
            }
        }
        img
    }
}

/// The forward 2×3 matrix of a motion on a `width`×`height` image, as `cv2.warpAffine`
/// takes it: `[a, b, c, d, e, f]` maps `(x, y)` to `(a·x + b·y + c, d·x + e·y + f)`.
pub fn matrix(motion: &Motion, width: usize, height: usize) -> [f64; 6] {
    #[expect(clippy::cast_precision_loss, reason = "image sides are far below 2^52")]
    let (cx, cy) = ((width as f64 - 1.0) / 2.0, (height as f64 - 1.0) / 2.0);
    let (sin, cos) = motion.angle.to_radians().sin_cos();
    let (alpha, beta) = (motion.zoom * cos, motion.zoom * sin);
    // getRotationMatrix2D(centre, angle, zoom)
    let r = [alpha, beta, (1.0 - alpha) * cx - beta * cy, -beta, alpha, beta * cx + (1.0 - alpha) * cy];
    // · [[1, 0, tx], [0, 1, ty], [0, 0, 1]]
    let (tx, ty) = (motion.translation_x, motion.translation_y);
    [r[0], r[1], r[0] * tx + r[1] * ty + r[2], r[3], r[4], r[3] * tx + r[4] * ty + r[5]]
}

/// The inverse of an affine 2×3 matrix (output pixel to input point). `None` when it
/// does not invert (a zoom of 0).
fn invert(m: &[f64; 6]) -> Option<[f64; 6]> {
    let det = m[0] * m[4] - m[1] * m[3];
    if det.abs() < 1e-12 || !det.is_finite() {
        return None;
    }
    let (a, b, d, e) = (m[4] / det, -m[1] / det, -m[3] / det, m[0] / det);
    Some([a, b, -(a * m[2] + b * m[5]), d, e, -(d * m[2] + e * m[5])])
}

/// The cubic convolution kernel with `a = −0.75`, its four weights for a point `t` in
/// `[0, 1)` past the second tap.
fn cubic_weights(t: f64) -> [f64; 4] {
    const A: f64 = -0.75;
    let near = |x: f64| ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
    let far = |x: f64| ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A;
    [far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)]
}

/// Where tap `i` reads from along a side of `n` pixels.
fn tap(i: i64, n: usize, border: Border) -> usize {
    #[expect(clippy::cast_possible_wrap, reason = "image sides are far below 2^63")]
    let n = n as i64;
    #[expect(clippy::cast_sign_loss, reason = "clamped or wrapped into [0, n)")]
    match border {
        Border::Replicate => i.clamp(0, n - 1) as usize,
        Border::Wrap => i.rem_euclid(n) as usize,
    }
}

/// Warps `img` by `motion`. The identity returns the image as it is.
pub fn warp(img: &Planar, motion: &Motion, border: Border) -> Planar {
    if motion.is_identity() {
        return img.clone();
    }
    let (w, h) = (img.width, img.height);
    let Some(inv) = invert(&matrix(motion, w, h)) else {
        return img.clone();
    };
    let mut out = vec![0.0f32; img.data.len()];
    let plane = w * h;
    for y in 0..h {
        for x in 0..w {
            #[expect(clippy::cast_precision_loss, reason = "image sides are far below 2^52")]
            let (xf, yf) = (x as f64, y as f64);
            let sx = inv[0] * xf + inv[1] * yf + inv[2];
            let sy = inv[3] * xf + inv[4] * yf + inv[5];
            if !(sx.is_finite() && sy.is_finite()) {
                continue;
            }
            // Far outside, every tap is the edge (replicate) or wraps (wrap): bound the
            // index so the arithmetic stays in range.
            let (x0, y0) = (sx.floor().clamp(-1e9, 1e9), sy.floor().clamp(-1e9, 1e9));
            let (wx, wy) = (cubic_weights(sx - x0), cubic_weights(sy - y0));
            #[expect(clippy::cast_possible_truncation, reason = "bounded to ±1e9 just above")]
            let (x0, y0) = (x0 as i64, y0 as i64);
            let xs: [usize; 4] = std::array::from_fn(|k| tap(x0 - 1 + k as i64, w, border));
            let ys: [usize; 4] = std::array::from_fn(|k| tap(y0 - 1 + k as i64, h, border));
            for c in 0..3 {
                let src = &img.data[c * plane..(c + 1) * plane];
                let mut acc = 0.0f64;
                for (j, &yy) in ys.iter().enumerate() {
                    let row = &src[yy * w..(yy + 1) * w];
                    let mut r = 0.0f64;
                    for (i, &xx) in xs.iter().enumerate() {
                        r += wx[i] * f64::from(row[xx]);
                    }
                    acc += wy[j] * r;
                }
                #[expect(clippy::cast_possible_truncation, reason = "an f32 image")]
                {
                    out[c * plane + y * w + x] = acc as f32;
                }
            }
        }
    }
    Planar { width: w, height: h, data: out }
}

/// [`warp`] on an RGB8 image.
pub fn warp_rgb(img: &RgbImage, motion: &Motion, border: Border) -> RgbImage {
    if motion.is_identity() {
        return img.clone();
    }
    warp(&Planar::from_rgb(img), motion, border).to_rgb()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(w: usize, h: usize) -> Planar {
        #[expect(clippy::cast_precision_loss, reason = "tiny")]
        let data = (0..3 * w * h).map(|i| ((i * 37) % 101) as f32 / 100.0).collect();
        Planar { width: w, height: h, data }
    }

    #[test]
    fn the_kernel_interpolates_and_sums_to_one() {
        assert_eq!(cubic_weights(0.0), [0.0, 1.0, 0.0, 0.0]);
        for t in [0.1, 0.25, 0.5, 0.9] {
            let s: f64 = cubic_weights(t).iter().sum();
            assert!((s - 1.0).abs() < 1e-12, "{t}: {s}");
        }
    }

    #[test]
    fn whole_pixel_shifts_move_pixels_exactly() {
        let img = ramp(7, 5);
        let m = Motion { translation_x: 2.0, translation_y: -1.0, ..Motion::NONE };
        for border in [Border::Replicate, Border::Wrap] {
            let out = warp(&img, &m, border);
            for c in 0..3 {
                for y in 0..5usize {
                    for x in 0..7usize {
                        let (sx, sy) = (x as i64 - 2, y as i64 + 1);
                        let (sx, sy) = (tap(sx, 7, border), tap(sy, 5, border));
                        let got = out.data[(c * 5 + y) * 7 + x];
                        let want = img.data[(c * 5 + sy) * 7 + sx];
                        assert!((got - want).abs() < 1e-6, "{border:?} {x},{y}: {got} vs {want}");
                    }
                }
            }
        }
    }

    #[test]
    fn a_quarter_turn_about_the_centre_turns_the_grid() {
        let img = ramp(5, 5);
        let out = warp(&img, &Motion { angle: 90.0, ..Motion::NONE }, Border::Replicate);
        // Counter-clockwise on screen: the output's (x, y) shows the input's (4 − y, x).
        for y in 0..5 {
            for x in 0..5 {
                let got = out.data[y * 5 + x];
                let want = img.data[x * 5 + (4 - y)];
                assert!((got - want).abs() < 1e-5, "{x},{y}: {got} vs {want}");
            }
        }
    }

    #[test]
    fn the_matrix_inverts() {
        let m = matrix(&Motion { zoom: 1.3, angle: 17.0, translation_x: 3.0, translation_y: -2.0 }, 64, 48);
        let inv = invert(&m).unwrap();
        let (x, y) = (10.0, 20.0);
        let (u, v) = (m[0] * x + m[1] * y + m[2], m[3] * x + m[4] * y + m[5]);
        let (bx, by) = (inv[0] * u + inv[1] * v + inv[2], inv[3] * u + inv[4] * v + inv[5]);
        assert!((bx - x).abs() < 1e-9 && (by - y).abs() < 1e-9);
        // The centre stays put under zoom and rotation alone.
        let m = matrix(&Motion { zoom: 2.0, angle: 30.0, ..Motion::NONE }, 65, 33);
        let (cx, cy) = (32.0, 16.0);
        assert!((m[0] * cx + m[1] * cy + m[2] - cx).abs() < 1e-9 && (m[3] * cx + m[4] * cy + m[5] - cy).abs() < 1e-9);
    }

    #[test]
    fn rgb_round_trips_and_identity_is_free() {
        let mut img = RgbImage::new(3, 2);
        img.put_pixel(1, 1, image::Rgb([255, 7, 128]));
        assert_eq!(Planar::from_rgb(&img).to_rgb(), img);
        assert_eq!(warp_rgb(&img, &Motion::NONE, Border::Wrap), img);
    }
}
