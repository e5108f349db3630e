//! The augmentations' tests: each against the notebook's formulas and torchvision's goldens,
//! gradients by finite differences, rates and ranges of the random draws.

use super::*;
use crate::models::testing::check_gradient;

fn rand_tensor(shape: &[usize], seed: u64, lo: f64, hi: f64) -> Tensor {
    let mut rng = Rng::new(seed);
    let n: usize = shape.iter().product();
    let v: Vec<f64> = (0..n).map(|_| rng.range(lo, hi)).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

fn weighted_sum(y: &Tensor, seed: u64) -> Result<Tensor> {
    rand_tensor(y.dims(), seed, -1.0, 1.0).mul(y)?.sum_all()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f64>().unwrap()
}

fn host(t: &Tensor) -> Vec<f64> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

const IDENTITY_AFFINE: Affine =
    Affine { angle_deg: 0.0, translate_x: 0.0, translate_y: 0.0, scale: 1.0, shear_deg: 0.0 };

fn only(f: impl FnOnce(&mut AugmentParams)) -> AugmentParams {
    let mut p = AugmentParams::default();
    f(&mut p);
    p
}

#[test]
fn names_parse_and_json_form() {
    for a in Augment::ALL {
        assert_eq!(Augment::parse(a.name()), Some(a));
        assert_eq!(serde_json::to_string(&a).unwrap(), format!("\"{}\"", a.name()));
    }
    assert_eq!(Augment::parse("Jitter"), Some(Augment::Jitter));
    assert_eq!(Augment::parse("Blur"), Some(Augment::Blur));
    assert_eq!(Augment::parse("sharpen"), None);
    let p = AugmentParams {
        flip: true,
        affine: Some(IDENTITY_AFFINE),
        perspective: Some([[0.0, 0.5], [0.0; 2], [0.0; 2], [0.0; 2]]),
        jitter: None,
        erase: Some(Erase { x: 1, y: 2, w: 3, h: 4, value: 0.5 }),
        blur: None,
    };
    let v: serde_json::Value = serde_json::to_value(&p).unwrap();
    let mut want = serde_json::json!({
        "flip": true,
        "affine": {"angle_deg": 0.0, "translate_x": 0.0, "translate_y": 0.0, "scale": 1.0, "shear_deg": 0.0},
        "perspective": [[0.0, 0.5], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]],
        "jitter": null,
        "erase": {"x": 1, "y": 2, "w": 3, "h": 4, "value": 0.5},
        "blur": null
    });
    assert_eq!(v, want);
    assert_eq!(serde_json::from_value::<AugmentParams>(want.clone()).unwrap(), p);
    // Parameters written before blur existed still read.
    want.as_object_mut().unwrap().remove("blur");
    assert_eq!(serde_json::from_value::<AugmentParams>(want).unwrap(), p);
}

#[test]
fn identity_params_leave_cutouts_unchanged() {
    let x = rand_tensor(&[3, 3, 6, 6], 1, 0.0, 1.0);
    let y = apply(&x, &vec![AugmentParams::default(); 3]).unwrap();
    assert_eq!(max_diff(&x, &y), 0.0);
    let aff = apply(&x, &vec![only(|p| p.affine = Some(IDENTITY_AFFINE)); 3]).unwrap();
    assert!(max_diff(&x, &aff) < 1e-6);
    let per = apply(&x, &vec![only(|p| p.perspective = Some([[0.0; 2]; 4])); 3]).unwrap();
    assert!(max_diff(&x, &per) < 1e-6);
    let jit = only(|p| p.jitter = Some(Jitter { brightness: 0.0, contrast: 0.0, saturation: 0.0, hue: 0.0 }));
    assert!(max_diff(&x, &apply(&x, &vec![jit; 3]).unwrap()) < 1e-12);
    // Mixed: only the second cutout is touched.
    let ps = [AugmentParams::default(), only(|p| p.flip = true), AugmentParams::default()];
    let y = apply(&x, &ps).unwrap();
    for k in [0, 2] {
        assert_eq!(max_diff(&x.narrow(0, k, 1).unwrap(), &y.narrow(0, k, 1).unwrap()), 0.0);
    }
}

#[test]
fn flip_reverses_columns_and_twice_is_identity() {
    let x = rand_tensor(&[2, 3, 4, 5], 2, 0.0, 1.0);
    let ps = vec![only(|p| p.flip = true); 2];
    let y = apply(&x, &ps).unwrap();
    let a = host(&x.narrow(3, 0, 1).unwrap());
    let b = host(&y.narrow(3, 4, 1).unwrap());
    assert_eq!(a, b);
    assert_eq!(max_diff(&apply(&y, &ps).unwrap(), &x), 0.0);
}

#[test]
fn affine_translation_by_a_pixel_shifts() {
    // Translating by exactly one pixel (2/S in normalised units = 1/S of the side)
    // moves every column right by one, with the border column repeated.
    let s = 8;
    let x = rand_tensor(&[1, 3, s, s], 3, 0.0, 1.0);
    let a = Affine { translate_x: 1.0 / 8.0, ..IDENTITY_AFFINE };
    let y = apply(&x, &[only(|p| p.affine = Some(a))]).unwrap();
    assert!(max_diff(&y.narrow(3, 1, s - 1).unwrap(), &x.narrow(3, 0, s - 1).unwrap()) < 1e-12);
    assert!(max_diff(&y.narrow(3, 0, 1).unwrap(), &x.narrow(3, 0, 1).unwrap()) < 1e-12);
    // A 90° rotation of a square image is an exact pixel permutation.
    let r = Affine { angle_deg: 90.0, ..IDENTITY_AFFINE };
    let y = apply(&x, &[only(|p| p.affine = Some(r))]).unwrap();
    let mut xs = host(&x);
    let mut ys = host(&y);
    xs.sort_by(f64::total_cmp);
    ys.sort_by(f64::total_cmp);
    for (a, b) in xs.iter().zip(&ys) {
        assert!((a - b).abs() < 1e-9);
    }
}

#[test]
fn homography_maps_the_corners() {
    let d = [[0.05, -0.02], [-0.08, 0.03], [0.01, 0.09], [-0.04, -0.06]];
    let map = map_of(perspective_h(&d).unwrap());
    let corners = [[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]];
    for (c, dk) in corners.iter().zip(&d) {
        let (x, y) = map(c[0] + 2.0 * dk[0], c[1] + 2.0 * dk[1]);
        assert!((x - c[0]).abs() < 1e-12 && (y - c[1]).abs() < 1e-12);
    }
    // All corners pulled to the centre: no homography.
    assert!(perspective_h(&[[0.5, 0.5], [-0.5, 0.5], [-0.5, -0.5], [0.5, -0.5]]).is_err());
    // The corners swapped through the centre is a valid one (a half turn).
    let half_turn = map_of(perspective_h(&[[1.0, 1.0], [-1.0, 1.0], [-1.0, -1.0], [1.0, -1.0]]).unwrap());
    let (x, y) = half_turn(0.3, -0.2);
    assert!((x + 0.3).abs() < 1e-12 && (y - 0.2).abs() < 1e-12);
    let singular = Affine { scale: 0.0, ..IDENTITY_AFFINE };
    let x = rand_tensor(&[1, 3, 4, 4], 4, 0.0, 1.0);
    assert!(apply(&x, &[only(|p| p.affine = Some(singular))]).is_err());
}

#[test]
fn hue_matrix_is_a_rotation_in_yiq() {
    let m = hue_matrix(0.0);
    for (i, row) in m.iter().enumerate() {
        for (j, v) in row.iter().enumerate() {
            assert!((v - f64::from(u8::from(i == j))).abs() < 1e-12);
        }
    }
    // Gray stays gray under any hue rotation.
    let m = hue_matrix(0.3);
    for row in &m {
        assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-3);
    }
}

#[test]
fn jitter_matches_a_host_reference() {
    let x = rand_tensor(&[1, 3, 3, 4], 5, 0.2, 0.8);
    let j = Jitter { brightness: 0.1, contrast: -0.2, saturation: 0.3, hue: 0.05 };
    let y = host(&apply(&x, &[only(|p| p.jitter = Some(j))]).unwrap());
    let mut v = host(&x);
    let hw = 12;
    for e in &mut v {
        *e *= 1.0 + j.brightness;
    }
    let grayf = |v: &[f64], p: usize| YIQ[0][0] * v[p] + YIQ[0][1] * v[hw + p] + YIQ[0][2] * v[2 * hw + p];
    let mean = (0..hw).map(|p| grayf(&v, p)).sum::<f64>() / 12.0;
    for e in &mut v {
        *e = (*e - mean) * (1.0 + j.contrast) + mean;
    }
    for p in 0..hw {
        let g = grayf(&v, p);
        for c in 0..3 {
            v[c * hw + p] = g + (v[c * hw + p] - g) * (1.0 + j.saturation);
        }
    }
    let m = hue_matrix(j.hue);
    for p in 0..hw {
        let rgb = [v[p], v[hw + p], v[2 * hw + p]];
        for c in 0..3 {
            let want = (0..3).map(|k| m[c][k] * rgb[k]).sum::<f64>().clamp(0.0, 1.0);
            assert!((y[c * hw + p] - want).abs() < 1e-12);
        }
    }
}

#[test]
fn erase_fills_the_rectangle() {
    let x = rand_tensor(&[1, 3, 5, 6], 6, 0.0, 1.0);
    let e = Erase { x: 4, y: 1, w: 5, h: 2, value: 0.25 };
    let y = host(&apply(&x, &[only(|p| p.erase = Some(e))]).unwrap());
    let xv = host(&x);
    for c in 0..3 {
        for r in 0..5 {
            for col in 0..6 {
                let i = c * 30 + r * 6 + col;
                let inside = (1..3).contains(&r) && col >= 4;
                assert_eq!(y[i], if inside { 0.25 } else { xv[i] });
            }
        }
    }
}

#[test]
fn blur_is_a_normalised_reflected_gaussian() {
    // Each row of the 1-D matrix sums to one, and a constant image stays constant.
    for (n, sigma) in [(5, 0.5), (8, 1.3), (32, 3.0), (3, 4.0)] {
        let m = blur_matrix(n, sigma);
        for i in 0..n {
            let s: f64 = m[i * n..(i + 1) * n].iter().sum();
            assert!((s - 1.0).abs() < 1e-12, "row {i} of {n}x{n} sigma {sigma}: {s}");
        }
    }
    let flat = Tensor::full(0.3f64, (1, 3, 6, 6), &Device::Cpu).unwrap();
    let y = host(&apply(&flat, &[only(|p| p.blur = Some(1.1))]).unwrap());
    assert!(y.iter().all(|v| (v - 0.3).abs() < 1e-12));
    // Against a direct convolution with reflected edges: one bright pixel at (0, 2).
    let (n, sigma) = (7usize, 0.8);
    let mut data = vec![0.0f64; 3 * n * n];
    data[2] = 1.0;
    let x = Tensor::from_vec(data, (1, 3, n, n), &Device::Cpu).unwrap();
    let y = host(&apply(&x, &[only(|p| p.blur = Some(sigma))]).unwrap());
    let r = 3i64; // ⌈3 · 0.8⌉
    let g = |d: i64| (-0.5 * (d as f64 / sigma).powi(2)).exp();
    let total: f64 = (-r..=r).map(g).sum();
    let reflect = |i: i64| {
        if i < 0 {
            -i
        } else if i >= n as i64 {
            2 * (n as i64 - 1) - i
        } else {
            i
        }
    };
    let weight =
        |out: i64, src: i64| -> f64 { (-r..=r).filter(|&k| reflect(out + k) == src).map(|k| g(k) / total).sum() };
    for yy in 0..n as i64 {
        for xx in 0..n as i64 {
            let want = weight(yy, 0) * weight(xx, 2);
            let got = y[(yy * n as i64 + xx) as usize];
            assert!((got - want).abs() < 1e-12, "({yy}, {xx}): {got} vs {want}");
        }
    }
    // Sigma scales with the cutout; a zero or NaN sigma is refused.
    assert!(apply(&x, &[only(|p| p.blur = Some(0.0))]).is_err());
    assert!(apply(&x, &[only(|p| p.blur = Some(f64::NAN))]).is_err());
}

#[test]
fn gradients() {
    let x = rand_tensor(&[2, 3, 5, 5], 7, 0.2, 0.8);
    let a = Affine { angle_deg: 17.0, translate_x: 0.07, translate_y: -0.05, scale: 1.1, shear_deg: 6.0 };
    let d = [[0.05, -0.02], [-0.08, 0.03], [0.01, 0.09], [-0.04, -0.06]];
    let j = Jitter { brightness: 0.05, contrast: 0.1, saturation: -0.1, hue: 0.02 };
    let e = Erase { x: 1, y: 2, w: 2, h: 3, value: 0.4 };
    let cases: Vec<(&str, Vec<AugmentParams>)> = vec![
        ("flip", vec![only(|p| p.flip = true), AugmentParams::default()]),
        ("affine", vec![only(|p| p.affine = Some(a)), AugmentParams::default()]),
        ("perspective", vec![AugmentParams::default(), only(|p| p.perspective = Some(d))]),
        ("jitter", vec![only(|p| p.jitter = Some(j)), only(|p| p.jitter = Some(Jitter { hue: -0.03, ..j }))]),
        ("erase", vec![only(|p| p.erase = Some(e)), AugmentParams::default()]),
        ("blur", vec![AugmentParams::default(), only(|p| p.blur = Some(1.4))]),
        (
            "all",
            vec![
                AugmentParams {
                    flip: true,
                    affine: Some(a),
                    perspective: Some(d),
                    jitter: Some(j),
                    erase: Some(e),
                    blur: Some(0.9),
                },
                only(|p| p.affine = Some(Affine { angle_deg: -25.0, ..a })),
            ],
        ),
    ];
    for (k, (name, ps)) in cases.iter().enumerate() {
        check_gradient(name, &x, |x| weighted_sum(&apply(x, ps)?, 100 + k as u64));
    }
    let facs = [0.3f32, 0.1];
    let noise: Vec<f32> = Rng::new(8).normals_f32(150);
    check_gradient("noise", &x, |x| weighted_sum(&add_noise(x, &facs, &noise)?, 9));
}

#[test]
fn jitter_clamp_gradient_is_torchs() {
    let x = Tensor::new(&[[[[-0.5f64]], [[0.5]], [[1.5]]]], &Device::Cpu).unwrap();
    let var = candle_core::Var::from_tensor(&x).unwrap();
    let y = clamp_unit(var.as_tensor()).unwrap();
    assert_eq!(host(&y), vec![0.0, 0.5, 1.0]);
    let g = y.sum_all().unwrap().backward().unwrap();
    assert_eq!(host(g.get(var.as_tensor()).unwrap()), vec![0.0, 1.0, 0.0]);
    let edge = Tensor::new(&[0.0f64, 1.0], &Device::Cpu).unwrap();
    let var = candle_core::Var::from_tensor(&edge).unwrap();
    let g = clamp_unit(var.as_tensor()).unwrap().sum_all().unwrap().backward().unwrap();
    assert_eq!(host(g.get(var.as_tensor()).unwrap()), vec![1.0, 1.0]);
}

#[test]
fn noise_adds_scaled_normals() {
    let x = rand_tensor(&[2, 3, 2, 2], 10, 0.0, 1.0);
    let (facs, noise) = random_noise(2, 2, 0.5, &mut Rng::new(3));
    assert_eq!((facs.len(), noise.len()), (2, 24));
    assert!(facs.iter().all(|f| (0.0..0.5).contains(f)));
    let y = host(&add_noise(&x, &facs, &noise).unwrap());
    let xv = host(&x);
    for i in 0..24 {
        let want = xv[i] + f64::from(facs[i / 12]) * f64::from(noise[i]);
        assert!((y[i] - want).abs() < 1e-12);
    }
    assert!(add_noise(&x, &facs[..1], &noise).is_err());
    assert!(add_noise(&x, &facs, &noise[..5]).is_err());
    assert_eq!(random_noise(2, 2, 0.5, &mut Rng::new(3)), (facs, noise));
}

#[test]
fn random_params_ranges_rates_and_determinism() {
    let s = 32;
    let mut rng = Rng::new(21);
    let n = 4000;
    let ps: Vec<AugmentParams> = (0..n).map(|_| random_params(&Augment::ALL, s, &mut rng)).collect();
    let rate = |f: &dyn Fn(&AugmentParams) -> bool| {
        f64::from(u32::try_from(ps.iter().filter(|p| f(p)).count()).unwrap()) / f64::from(n)
    };
    for (name, r, p) in [
        ("flip", rate(&|p| p.flip), 0.5),
        ("affine", rate(&|p| p.affine.is_some()), 0.8),
        ("perspective", rate(&|p| p.perspective.is_some()), 0.4),
        ("jitter", rate(&|p| p.jitter.is_some()), 0.7),
        ("erase", rate(&|p| p.erase.is_some()), 0.7),
        ("blur", rate(&|p| p.blur.is_some()), 0.5),
    ] {
        assert!((r - p).abs() < 0.04, "{name}: rate {r} vs {p}");
    }
    for p in &ps {
        if let Some(a) = p.affine {
            assert!(a.angle_deg.abs() <= 30.0 && a.translate_x.abs() <= 0.1 && a.translate_y.abs() <= 0.1);
            assert!(a.scale == 1.0 && a.shear_deg == 0.0);
        }
        if let Some(d) = p.perspective {
            assert!(d.iter().flatten().all(|v| v.abs() <= 0.1));
        }
        if let Some(j) = p.jitter {
            assert!([j.brightness, j.contrast, j.saturation, j.hue].iter().all(|v| v.abs() <= 0.01));
        }
        if let Some(b) = p.blur {
            // 0.5 to 2.5 pixels of a 64-pixel cutout, scaled to this one's side.
            assert!((0.25..1.25).contains(&b), "blur sigma {b}");
        }
        if let Some(e) = p.erase {
            assert!(e.w >= 1 && e.h >= 1 && e.x + e.w <= s && e.y + e.h <= s);
            assert!((0.0..1.0).contains(&e.value));
        }
    }
    // Only the enabled ones are drawn.
    let q = random_params(&[Augment::Flip, Augment::Noise], s, &mut rng);
    assert!(q.affine.is_none() && q.perspective.is_none() && q.jitter.is_none() && q.erase.is_none());
    assert!(q.blur.is_none());
    assert!(random_params(&[], s, &mut rng).is_identity());
    let a: Vec<_> = (0..20).map(|_| random_params(&Augment::ALL, s, &mut Rng::new(5))).collect();
    let mut r1 = Rng::new(5);
    let mut r2 = Rng::new(5);
    let b: Vec<_> = (0..20).map(|_| random_params(&Augment::ALL, s, &mut r1)).collect();
    let c: Vec<_> = (0..20).map(|_| random_params(&Augment::ALL, s, &mut r2)).collect();
    assert_eq!(b, c);
    assert!(a.iter().all(|p| *p == a[0]));
}

/// A homography as a function of normalised output coordinates.
fn map_of(h: Homography) -> impl Fn(f64, f64) -> (f64, f64) {
    move |u: f64, v: f64| {
        let z = h[6] * u + h[7] * v + h[8];
        ((h[0] * u + h[1] * v + h[2]) / z, (h[3] * u + h[4] * v + h[5]) / z)
    }
}

/// The taps `grid_sample(bilinear, border, align_corners=False)` reads, computed pixel
/// by pixel on the host in f64: the reference for the tensor form in `taps`.
fn host_taps(h: usize, w: usize, hm: Homography) -> (Vec<u32>, Vec<f64>) {
    let map = map_of(hm);
    let hw = h * w;
    let (mut idx, mut wts) = (vec![0u32; 4 * hw], vec![0f64; 4 * hw]);
    let unnormalise = |g: f64, size: usize| -> f64 {
        let p = ((g + 1.0) * size as f64 - 1.0) / 2.0;
        if p.is_nan() {
            0.0
        } else {
            p.clamp(0.0, (size - 1) as f64)
        }
    };
    for i in 0..h {
        let v = (2.0 * i as f64 + 1.0) / h as f64 - 1.0;
        for j in 0..w {
            let u = (2.0 * j as f64 + 1.0) / w as f64 - 1.0;
            let (gx, gy) = map(u, v);
            let (ix, iy) = (unnormalise(gx, w), unnormalise(gy, h));
            let (fx, fy) = (ix.floor(), iy.floor());
            let (x0, y0) = (fx as usize, fy as usize);
            let (x1, y1) = ((x0 + 1).min(w - 1), (y0 + 1).min(h - 1));
            let (tx, ty) = (ix - fx, iy - fy);
            let p = i * w + j;
            let flat = |y: usize, x: usize| (y * w + x) as u32;
            for (k, (id, wt)) in [
                (flat(y0, x0), (1.0 - ty) * (1.0 - tx)),
                (flat(y0, x1), (1.0 - ty) * tx),
                (flat(y1, x0), ty * (1.0 - tx)),
                (flat(y1, x1), ty * tx),
            ]
            .into_iter()
            .enumerate()
            {
                idx[k * hw + p] = id;
                wts[k * hw + p] = wt;
            }
        }
    }
    (idx, wts)
}

#[test]
fn warp_taps_computed_as_tensors_are_the_per_pixel_ones() {
    let affine = Affine { scale: 1.13, angle_deg: 17.0, shear_deg: -6.0, translate_x: 0.08, translate_y: -0.11 };
    let hs = [
        affine_h(&affine).unwrap(),
        perspective_h(&[[0.05, -0.02], [-0.08, 0.03], [0.01, 0.09], [-0.04, -0.06]]).unwrap(),
        // Far outside the image: every tap clamps to the border.
        affine_h(&Affine { translate_x: 3.0, ..IDENTITY_AFFINE }).unwrap(),
    ];
    let (h, w) = (7, 9);
    let (idx, wts) = taps(&hs, h, w, &Device::Cpu).unwrap();
    let idx: Vec<Vec<u32>> = idx.to_vec2().unwrap();
    let wts: Vec<Vec<f64>> = wts.to_vec2().unwrap();
    for (k, hm) in hs.iter().enumerate() {
        let (want_idx, want_wts) = host_taps(h, w, *hm);
        assert_eq!(idx[k], want_idx, "map {k}: indices");
        for (a, b) in wts[k].iter().zip(&want_wts) {
            assert!((a - b).abs() <= 1e-15, "map {k}: weight {a} vs {b}");
        }
    }
}
