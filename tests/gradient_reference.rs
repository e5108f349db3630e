//! The gradient of the spherical-distance loss with respect to z, through the VQGAN
//! decoder and CLIP, against PyTorch autograd.

mod common;

use candle_core::{DType, Var};
use clipcanvas::models::clip::{self, Clip};
use clipcanvas::models::ops::composed::{l2_normalize, spherical_dist};
use clipcanvas::models::vqgan;
use common::{assert_close, cosine, fixture, golden};

#[test]
fn loss_and_gradient_through_decoder_and_clip_match_autograd() {
    let dev = common::device();
    let model = vqgan::load(&fixture("vqgan-tiny/model.ckpt"), None, DType::F32, &dev).expect("vqgan");
    let (clip, _) = clip::load(&fixture("clip-tiny"), DType::F32, &dev).expect("clip");
    let g = golden("grad/expected.safetensors");
    let texts = golden("clip-tiny/expected.safetensors");
    let ids = texts["input_ids"].to_dtype(DType::U32).expect("ids").narrow(0, 0, 2).expect("two");
    let t = l2_normalize(&clip.encode_text(&ids).expect("text")).expect("norm");

    let z = Var::from_tensor(&g["z"]).expect("var");
    let zq = model.quantize_st(z.as_tensor()).expect("quantize");
    let out = model.decode(&zq).expect("decode");
    let img = Clip::normalize(&((out + 1.0).expect("add") / 2.0).expect("div")).expect("normalize");
    assert_close("pixels", &img, &g["pixels"], 1e-4);
    let e = l2_normalize(&clip.encode_image(&img).expect("image")).expect("norm");
    assert_close("image embed", &e, &g["image_embed"], 1e-4);
    let loss = spherical_dist(&e, &t).expect("dist").mean_all().expect("mean");
    assert_close("loss", &loss, &g["loss"], 1e-4);

    let grads = loss.backward().expect("backward");
    let gz = grads.get(z.as_tensor()).expect("grad z");
    let cos = cosine(gz, &g["grad_z"]);
    assert!(cos >= 0.9999, "gradient cosine similarity {cos}");
    assert_close("grad_z", gz, &g["grad_z"], 1e-3);
}

#[test]
fn clip_pixel_gradient_matches_autograd() {
    let dev = common::device();
    let (clip, _) = clip::load(&fixture("clip-tiny"), DType::F32, &dev).expect("clip");
    let g = golden("grad/expected.safetensors");
    let texts = golden("clip-tiny/expected.safetensors");
    let ids = texts["input_ids"].to_dtype(DType::U32).expect("ids").narrow(0, 0, 2).expect("two");
    let t = l2_normalize(&clip.encode_text(&ids).expect("text")).expect("norm");
    let px = Var::from_tensor(&g["pixels"]).expect("var");
    let e = l2_normalize(&clip.encode_image(px.as_tensor()).expect("image")).expect("norm");
    let loss = spherical_dist(&e, &t).expect("dist").mean_all().expect("mean");
    let grads = loss.backward().expect("backward");
    let gp = grads.get(px.as_tensor()).expect("grad pixels");
    let cos = cosine(gp, &g["grad_pixels"]);
    assert!(cos >= 0.9999, "pixel gradient cosine similarity {cos}");
}
