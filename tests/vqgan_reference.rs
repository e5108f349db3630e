//! The taming VQGAN first stages against the PyTorch reference: encode, quantize,
//! decode, from the Lightning .ckpt, from safetensors, Gumbel and Net2Net layouts.

mod common;

use std::collections::HashMap;

use candle_core::{DType, Tensor};
use clipcanvas::models::vqgan::{self, Vqgan};
use clipcanvas::models::weights::WeightFile;
use common::{assert_close, fixture, golden, values};

fn check(model: &Vqgan, dir: &str) {
    let g = golden(&format!("{dir}/expected.safetensors"));
    let x = &g["x"];
    assert_close(&format!("{dir} h"), &model.encode_prequant(x).expect("encode"), &g["h"], 1e-4);
    let idx = model.encode_indices(x).expect("indices");
    let want: Vec<i64> = g["indices"].flatten_all().expect("flat").to_vec1().expect("i64");
    let got: Vec<u32> = idx.flatten_all().expect("flat").to_vec1().expect("u32");
    assert_eq!(got.iter().map(|&v| i64::from(v)).collect::<Vec<_>>(), want, "{dir}: indices");
    assert_close(&format!("{dir} z_q"), &model.encode(x).expect("z_q"), &g["z_q"], 1e-5);
    assert_close(&format!("{dir} decoded"), &model.decode(&g["z_q"]).expect("decode"), &g["decoded"], 1e-4);
    let cb = model.codebook();
    assert_close(&format!("{dir} codebook min"), &cb.min(0).expect("min"), &g["codebook_min"], 1e-6);
    assert_close(&format!("{dir} codebook max"), &cb.max(0).expect("max"), &g["codebook_max"], 1e-6);
}

#[test]
fn lightning_ckpt_matches_taming() {
    let model = vqgan::load(&fixture("vqgan-tiny/model.ckpt"), None, DType::F32, &common::device()).expect("load ckpt");
    assert_eq!(model.config().downsample_factor(), 4);
    check(&model, "vqgan-tiny");
}

#[test]
fn safetensors_export_matches_taming() {
    // The first stage's tensors, exported from the .ckpt to safetensors as conversion
    // scripts do (no loss.*, no optimizer state), load and compute the same.
    let ckpt = WeightFile::open(&fixture("vqgan-tiny/model.ckpt")).expect("open ckpt");
    let mut tensors = HashMap::new();
    for name in ckpt.names().into_iter().filter(|n| !n.starts_with("loss.")) {
        let (shape, values) = ckpt.read_f32(&name).expect("read");
        tensors.insert(name, Tensor::from_vec(values, shape, &common::device()).expect("tensor"));
    }
    let dir = tempfile::tempdir().expect("temp");
    let path = dir.path().join("vqgan.safetensors");
    candle_core::safetensors::save(&tensors, &path).expect("save");
    let model = vqgan::load(&path, Some(&fixture("vqgan-tiny/model.yaml")), DType::F32, &common::device())
        .expect("load safetensors");
    check(&model, "vqgan-tiny");
}

#[test]
fn gumbel_first_stage_matches_taming() {
    let model =
        vqgan::load(&fixture("vqgan-tiny-gumbel/model.ckpt"), None, DType::F32, &common::device()).expect("load");
    check(&model, "vqgan-tiny-gumbel");
}

#[test]
fn net2net_checkpoint_loads_its_first_stage() {
    let model = vqgan::load(&fixture("net2net-tiny/model.ckpt"), None, DType::F32, &common::device()).expect("load");
    let g = golden("net2net-tiny/expected.safetensors");
    assert_close("net2net decoded", &model.decode(&g["z_q"]).expect("decode"), &g["decoded"], 1e-4);
}

#[test]
fn straight_through_quantisation_snaps_to_codes_and_passes_gradient() {
    let model = vqgan::load(&fixture("vqgan-tiny/model.ckpt"), None, DType::F32, &common::device()).expect("load");
    let z = candle_core::Var::from_tensor(&Tensor::randn(0f32, 1.0, (1, 8, 4, 4), &common::device()).expect("z"))
        .expect("var");
    let q = model.quantize_st(z.as_tensor()).expect("quantize");
    // Every position now holds a codebook row.
    let cb = values(model.codebook());
    let qv = values(&q.permute((0, 2, 3, 1)).expect("p").contiguous().expect("c"));
    for chunk in qv.chunks(8) {
        assert!(cb.chunks(8).any(|row| row.iter().zip(chunk).all(|(a, b)| (a - b).abs() < 1e-6)));
    }
    let grads = (q * 3.0).expect("mul").sum_all().expect("sum").backward().expect("backward");
    let g = values(grads.get(z.as_tensor()).expect("grad"));
    assert!(g.iter().all(|v| (v - 3.0).abs() < 1e-6), "identity gradient");
}

/// `--tile`'s decoder: taming's Decoder with every padded convolution switched to
/// `padding_mode="circular"` (`tests/reference/make_tile_fixtures.py`), on a 6×10 latent:
/// the image and the gradient of `sum(image · r)` with respect to the latent.
#[test]
fn the_circular_decoder_matches_taming_with_circular_padding() {
    use candle_core::Var;
    let model = vqgan::load(&fixture("vqgan-tiny/model.ckpt"), None, DType::F32, &common::device()).expect("load");
    let g = golden("tile/expected.safetensors");
    let z = Var::from_tensor(&g["z"]).expect("var");
    let out = model.decode_circular(z.as_tensor()).expect("decode");
    assert_close("circular decode", &out, &g["decoded"], 1e-4);
    let grads = (out * &g["r"]).expect("mul").sum_all().expect("sum").backward().expect("backward");
    assert_close("circular decode grad", grads.get(z.as_tensor()).expect("grad"), &g["grad_z"], 1e-4);
    // It is not the zero-padded decoder: the edges differ.
    let plain = model.decode(&g["z"]).expect("decode");
    let edge = (plain.narrow(3, 0, 1).expect("col") - g["decoded"].narrow(3, 0, 1).expect("col"))
        .expect("sub")
        .abs()
        .expect("abs")
        .max_all()
        .expect("max")
        .to_scalar::<f32>()
        .expect("scalar");
    assert!(edge > 1e-3, "the edge column moved by {edge}");
    // On a torus a shift of the latent by a token shifts the image by the factor.
    let f = model.config().downsample_factor();
    let roll = |t: &Tensor, by: usize, dim: usize| -> Tensor {
        let n = t.dim(dim).expect("dim");
        Tensor::cat(&[t.narrow(dim, n - by, by).expect("tail"), t.narrow(dim, 0, n - by).expect("head")], dim)
            .expect("cat")
    };
    let shifted = model.decode_circular(&roll(&g["z"], 1, 3)).expect("decode");
    assert_close("a shifted latent", &shifted, &roll(&g["decoded"], f, 3), 1e-4);
}
