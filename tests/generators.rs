//! The pixel and Fourier generators against PyTorch (`tests/reference/
//! make_generator_fixtures.py`): each case's image and the gradient of a random weighting
//! of it, on square, oblong and odd canvases.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use candle_core::{Tensor, Var};
use clipcanvas::engine::generator::fft::FftGenerator;
use clipcanvas::engine::generator::pixel::PixelGenerator;
use clipcanvas::engine::generator::Generator;
use clipcanvas::settings::FftSettings;
use common::{assert_close, device, fixture, golden};
use serde_json::Value;

fn cases() -> Vec<Value> {
    let text = std::fs::read_to_string(fixture("generators/cases.json")).expect("cases.json");
    let v: Value = serde_json::from_str(&text).expect("json");
    v["cases"].as_array().expect("cases").clone()
}

fn num(case: &Value, key: &str) -> usize {
    usize::try_from(case[key].as_u64().unwrap_or_else(|| panic!("{key}"))).expect("usize")
}

/// The image and the gradient of `sum(image · weight)` with respect to the parameters.
fn render_and_grad(g: &dyn Generator, params: &Tensor, weight: &Tensor) -> (Tensor, Tensor) {
    let var = Var::from_tensor(params).expect("var");
    let image = g.render(var.as_tensor()).expect("render");
    let loss = (&image * weight).expect("mul").sum_all().expect("sum");
    let grads = loss.backward().expect("backward");
    let grad = grads.get(var.as_tensor()).expect("gradient").clone();
    (image, grad)
}

fn check(name: &str, g: &dyn Generator, image_tol: f32, grad_tol: f32) {
    let gold = golden("generators/expected.safetensors");
    let get = |k: &str| gold.get(&format!("{name}.{k}")).unwrap_or_else(|| panic!("{name}.{k}")).clone();
    let (image, grad) = render_and_grad(g, &get("params"), &get("weight"));
    assert_close(&format!("{name}: image"), &image, &get("image"), image_tol);
    assert_close(&format!("{name}: gradient"), &grad, &get("grad"), grad_tol);
}

#[test]
fn pixel_cells_render_and_backpropagate_as_pytorchs_nearest_interpolation() {
    let mut seen = 0;
    for case in cases().iter().filter(|c| c["generator"] == "pixel") {
        let name = case["name"].as_str().expect("name");
        let g = PixelGenerator::new(
            num(case, "width"),
            num(case, "height"),
            num(case, "cells_x"),
            num(case, "cells_y"),
            &device(),
        )
        .expect("generator");
        // A gather and its scatter: exact but for the order of the sums.
        check(name, &g, 0.0, 1e-6);
        seen += 1;
    }
    assert_eq!(seen, 3, "the three pixel cases");
}

#[test]
fn fourier_images_render_and_backpropagate_as_pytorchs_irfftn_with_lucids_colours() {
    let mut seen = 0;
    for case in cases().iter().filter(|c| c["generator"] == "fft") {
        let name = case["name"].as_str().expect("name");
        let settings = FftSettings {
            decay: case["decay"].as_f64().expect("decay"),
            colors: case["colors"].as_f64().expect("colors"),
            contrast: case["contrast"].as_f64().expect("contrast"),
        };
        let g = FftGenerator::new(num(case, "width"), num(case, "height"), settings, &device()).expect("generator");
        // Products with cosine matrices against pocketfft, in f32.
        check(name, &g, 1e-6, 1e-5);
        seen += 1;
    }
    assert_eq!(seen, 3, "the three fft cases");
}
