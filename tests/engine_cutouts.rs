//! Cutouts and augmentations against the PyTorch reference
//! (`tests/reference/make_engine_fixtures.py`, sections `resample` and `augment`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;

use candle_core::{Tensor, Var};
use clipcanvas::engine::augment::{self, AugmentParams};
use clipcanvas::engine::cutouts::{self, Crop};
use common::{assert_close, cosine, fixture, golden};
use serde::Deserialize;

const OUT_TOL: f32 = 1e-4;
const GRAD_TOL: f32 = 1e-3;
const GRAD_COS: f64 = 0.9999;

fn resample_golden() -> HashMap<String, Tensor> {
    golden("engine/resample.safetensors")
}

/// `d sum(f(x) · w) / d x` by autograd.
fn grad_of(x: &Tensor, w: &Tensor, f: impl Fn(&Tensor) -> candle_core::Result<Tensor>) -> Tensor {
    let var = Var::from_tensor(x).unwrap();
    let y = f(var.as_tensor()).unwrap();
    let grads = y.mul(w).unwrap().sum_all().unwrap().backward().unwrap();
    grads.get(var.as_tensor()).unwrap().clone()
}

fn assert_grad(what: &str, got: &Tensor, want: &Tensor) {
    let cos = cosine(got, want);
    assert!(cos >= GRAD_COS, "{what}: gradient cosine {cos}");
    assert_close(what, got, want, GRAD_TOL);
}

#[test]
fn resample_matches_torch() {
    let t = resample_golden();
    for key in ["a", "b", "c"] {
        let x = &t[&format!("in_{key}")];
        let y = cutouts::resample(x, 32, 32).unwrap();
        assert_close(&format!("resample {key}"), &y, &t[&format!("out_{key}")], OUT_TOL);
    }
}

#[test]
fn resample_gradient_matches_torch() {
    let t = resample_golden();
    let g = grad_of(&t["in_a"], &t["w_a"], |x| cutouts::resample(x, 32, 32));
    assert_grad("resample grad_a", &g, &t["grad_a"]);
}

#[test]
fn cut_of_the_whole_image_is_the_resample() {
    let t = resample_golden();
    let crops = [Crop { size: 40, x: 0, y: 0 }, Crop { size: 40, x: 0, y: 0 }];
    let y = cutouts::cut(&t["in_a"], &crops, 32).unwrap();
    assert_eq!(y.dims(), &[2, 3, 32, 32]);
    for i in 0..2 {
        assert_close("cut", &y.narrow(0, i, 1).unwrap(), &t["out_a"], OUT_TOL);
    }
    let g = grad_of(&t["in_a"], &t["w_a"], |x| cutouts::cut(x, &crops[..1], 32));
    assert_grad("cut grad", &g, &t["grad_a"]);
}

#[test]
fn pooled_matches_torch() {
    let t = resample_golden();
    for key in ["", "2"] {
        let y = cutouts::pooled(&t[&format!("pooled_in{key}")], 3, 32).unwrap();
        assert_eq!(y.dims(), &[3, 3, 32, 32]);
        for i in 0..3 {
            assert_close(
                &format!("pooled{key} #{i}"),
                &y.narrow(0, i, 1).unwrap(),
                &t[&format!("pooled_out{key}")],
                OUT_TOL,
            );
        }
    }
    let g = grad_of(&t["pooled_in"], &t["w_p"], |x| cutouts::pooled(x, 1, 32));
    assert_grad("pooled grad", &g, &t["grad_pooled"]);
}

#[derive(Deserialize)]
struct Case {
    name: String,
    params: Vec<AugmentParams>,
}

#[derive(Deserialize)]
struct Cases {
    cases: Vec<Case>,
}

#[test]
fn augmentations_match_torch() {
    let t = golden("engine/augment.safetensors");
    let text = std::fs::read_to_string(fixture("engine/augment.json")).unwrap();
    let cases: Cases = serde_json::from_str(&text).unwrap();
    let names: Vec<&str> = cases.cases.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["flip", "affine", "perspective", "jitter", "erase", "all", "blur", "blur_all"]);
    let (x, w) = (&t["input"], &t["weights"]);
    for case in &cases.cases {
        let name = &case.name;
        let y = augment::apply(x, &case.params).unwrap();
        assert_close(&format!("augment {name}"), &y, &t[&format!("out_{name}")], OUT_TOL);
        let g = grad_of(x, w, |x| augment::apply(x, &case.params));
        assert_grad(&format!("augment {name} grad"), &g, &t[&format!("grad_{name}")]);
    }
}

#[test]
fn noise_matches_torch() {
    let t = golden("engine/augment.safetensors");
    let facs: Vec<f32> = t["noise_facs"].to_vec1().unwrap();
    let noise: Vec<f32> = t["noise"].flatten_all().unwrap().to_vec1().unwrap();
    let y = augment::add_noise(&t["input"], &facs, &noise).unwrap();
    assert_close("noise", &y, &t["out_noise"], OUT_TOL);
}
