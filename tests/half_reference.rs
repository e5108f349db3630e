//! Half precision (`--precision f16|bf16`) against PyTorch's autocast
//! (tests/reference/make_half_fixtures.py): the fixture VQGAN and CLIP with their weights
//! in f16 (and bf16 where the device has it) give, in f32, what autocast gives, within
//! the error autocast itself makes against f32; and an optimisation runs with its latent
//! in f32.

mod common;

use candle_core::{DType, Tensor};
use clipcanvas::engine::device::check_precision;
use clipcanvas::engine::session::Session;
use clipcanvas::models::{clip, vqgan};
use clipcanvas::settings::{Precision, RunSettings};
use common::{device, fixture, fixture_models_in, golden};

/// max |got − want| over want's largest magnitude.
fn rel_err(got: &Tensor, want: &Tensor) -> f32 {
    let g = common::values(got);
    let w = common::values(want);
    let scale = w.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
    g.iter().zip(&w).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max) / scale
}

/// How far autocast lands from f32 for `key` in format `name`, as the script measured.
fn autocast_err(report: &serde_json::Value, name: &str, key: &str) -> f32 {
    report["report"][name][key]["autocast_vs_f32"].as_f64().expect("autocast error") as f32
}

/// The outputs of the fixture models loaded in `dtype`: all come back in f32.
fn outputs(dtype: DType) -> Vec<(&'static str, Tensor)> {
    let dev = device();
    let gv = golden("vqgan-tiny/expected.safetensors");
    let gc = golden("clip-tiny/expected.safetensors");
    let vq = vqgan::load(&fixture("vqgan-tiny/model.ckpt"), None, dtype, &dev).expect("vqgan");
    let (cl, _) = clip::load(&fixture("clip-tiny"), dtype, &dev).expect("clip");
    let ids = gc["input_ids"].to_dtype(DType::U32).expect("ids");
    let out = vec![
        ("decoded", vq.decode(&gv["z_q"]).expect("decode")),
        ("h", vq.encode_prequant(&gv["x"]).expect("encode")),
        ("image_embeds", cl.encode_image(&gc["pixel_values"]).expect("image")),
        ("text_embeds", cl.encode_text(&ids).expect("text")),
    ];
    for (key, t) in &out {
        assert_eq!(t.dtype(), DType::F32, "{key}: a half-precision network hands back f32");
    }
    out
}

/// Each output within twice autocast's own error of f32, and of autocast's output.
fn check(name: &str, dtype: DType) {
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("half/autocast.json")).expect("json")).expect("parse");
    let auto = golden("half/autocast.safetensors");
    let f32_goldens = [golden("vqgan-tiny/expected.safetensors"), golden("clip-tiny/expected.safetensors")];
    for (key, got) in outputs(dtype) {
        let want = f32_goldens.iter().find_map(|g| g.get(key)).expect("f32 golden");
        let budget = 2.0 * autocast_err(&report, name, key);
        let vs_f32 = rel_err(&got, want);
        let vs_autocast = rel_err(&got, &auto[&format!("{key}_{name}")]);
        eprintln!("{name} {key}: vs f32 {vs_f32:.2e}, vs autocast {vs_autocast:.2e}, budget {budget:.2e}");
        assert!(vs_f32 <= budget, "{name} {key}: {vs_f32:e} from f32, autocast is {:e}", budget / 2.0);
        assert!(vs_autocast <= 2.0 * budget, "{name} {key}: {vs_autocast:e} from autocast");
        assert!(vs_f32 > 0.0, "{name} {key}: identical to f32, so the weights did not run in {name}");
    }
}

#[test]
fn f16_networks_match_autocast_within_its_own_error() {
    check("f16", DType::F16);
}

#[test]
fn bf16_matches_autocast_where_the_device_runs_it_and_is_refused_on_the_cpu() {
    let dev = device();
    if dev.is_cpu() {
        let err = check_precision(&dev, Precision::Bf16).expect_err("the CPU has no bf16 matmul");
        assert!(err.to_string().contains("needs a GPU"), "{err}");
        check_precision(&dev, Precision::F16).expect("f16 runs on the CPU");
    } else {
        check("bf16", DType::BF16);
    }
}

#[test]
fn an_f16_run_keeps_its_latent_in_f32_and_follows_the_f32_run() {
    let settings = RunSettings {
        prompts: vec!["a red circle".into(), "noise:-0.5".into()],
        width: 32,
        height: 32,
        cutn: 4,
        iterations: 6,
        seed: 5,
        ..RunSettings::default()
    };
    let mut losses = Vec::new();
    for dtype in [DType::F32, DType::F16] {
        let mut session = Session::new(fixture_models_in(dtype), settings.clone()).expect("session");
        let mut curve = Vec::new();
        for _ in 0..settings.iterations {
            curve.push(session.step().expect("step").total);
        }
        assert_eq!(session.latent().dtype(), DType::F32, "{dtype:?}: the latent stays f32");
        losses.push(curve);
    }
    let end = max_rel_gap(&losses[0], &losses[1]);
    assert!(end < 0.02, "f16's loss curve strays {end} from f32's: {losses:?}");
}

/// The largest relative difference between two loss curves.
fn max_rel_gap(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs() / x.abs().max(1e-9)).fold(0.0, f64::max)
}
