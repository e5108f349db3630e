//! The animation's warp and colour coherence against the references
//! (`tests/reference/make_animation_fixtures.py`): PyTorch's bicubic grid_sample and
//! OpenCV's warpAffine for the warp, scikit-image for LAB (issue 25).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use clipcanvas::engine::animation::color::{lab_stats, lab_to_rgb, match_colors, rgb_to_lab};
use clipcanvas::engine::animation::warp::{matrix, warp, Planar};
use clipcanvas::settings::animation::{Border, Motion};
use common::{fixture, golden, values};
use serde::Deserialize;

#[derive(Deserialize)]
struct Case {
    zoom: f64,
    angle: f64,
    translation_x: f64,
    translation_y: f64,
    border: String,
    matrix: Vec<f64>,
}

#[derive(Deserialize)]
struct Cases {
    cases: Vec<Case>,
}

fn planar(t: &candle_core::Tensor) -> Planar {
    let (_, h, w) = t.dims3().unwrap();
    Planar { width: w, height: h, data: values(t) }
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn the_warp_matches_torch_and_opencv() {
    let g = golden("animation/warp.safetensors");
    let cases: Cases = serde_json::from_slice(&std::fs::read(fixture("animation/warp.json")).unwrap()).unwrap();
    let img = planar(&g["image"]);
    assert_eq!(cases.cases.len(), 9);
    for (k, c) in cases.cases.iter().enumerate() {
        let motion =
            Motion { zoom: c.zoom, angle: c.angle, translation_x: c.translation_x, translation_y: c.translation_y };
        let m = matrix(&motion, img.width, img.height);
        for (got, want) in m.iter().zip(&c.matrix) {
            assert!((got - want).abs() < 1e-9, "case {k}: matrix {m:?} vs cv2's {:?}", c.matrix);
        }
        let border = Border::parse(&c.border).unwrap();
        let out = warp(&img, &motion, border);
        let torch = max_diff(&out.data, &values(&g[&format!("torch_{k}")]));
        let opencv = max_diff(&out.data, &values(&g[&format!("opencv_{k}")]));
        assert!(torch < 2e-6, "case {k} ({}): max |diff| from torch {torch:e}", c.border);
        assert!(opencv < 1e-4, "case {k} ({}): max |diff| from OpenCV {opencv:e}", c.border);
    }
}

#[test]
fn lab_matches_scikit_image() {
    let g = golden("animation/color.safetensors");
    let rows = |name: &str| -> Vec<[f64; 3]> {
        let v: Vec<f64> = g[name].flatten_all().unwrap().to_vec1().unwrap();
        v.chunks_exact(3).map(|c| [c[0], c[1], c[2]]).collect()
    };
    for (rgb, lab) in rows("rgb").iter().zip(rows("lab")) {
        let got = rgb_to_lab(*rgb);
        for c in 0..3 {
            assert!((got[c] - lab[c]).abs() < 1e-9, "rgb2lab {rgb:?}: {got:?} vs {lab:?}");
        }
    }
    for (lab, rgb) in rows("lab_in").iter().zip(rows("rgb_out")) {
        let got = lab_to_rgb(*lab);
        for c in 0..3 {
            assert!((got[c] - rgb[c]).abs() < 1e-9, "lab2rgb {lab:?}: {got:?} vs {rgb:?}");
        }
    }
}

#[test]
fn colour_coherence_matches_the_reference_transfer() {
    let g = golden("animation/color.safetensors");
    let out = match_colors(&planar(&g["image"]), &lab_stats(&planar(&g["target"])));
    let diff = max_diff(&out.data, &values(&g["matched"]));
    assert!(diff < 1e-5, "max |diff| {diff:e}");
}
