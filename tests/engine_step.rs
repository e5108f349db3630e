//! The optimisation step against the PyTorch reference (tests/reference/make_engine_fixtures.py):
//! one full step with given crops, augmentations and noise, and a 20-step run.

mod common;

use candle_core::Tensor;
use clipcanvas::engine::augment::AugmentParams;
use clipcanvas::engine::cutouts::Crop;
use clipcanvas::engine::session::{LabelledTarget, Session, StepNoise, StepPlan};
use clipcanvas::settings::RunSettings;
use common::{assert_close, cosine, fixture, fixture_models, golden, values};
use serde::Deserialize;

#[derive(Deserialize)]
struct PromptJson {
    text: String,
    weight: f64,
    stop: serde_json::Value,
}

impl PromptJson {
    fn stop(&self) -> f64 {
        self.stop.as_f64().unwrap_or(f64::NEG_INFINITY)
    }

    fn as_arg(&self) -> String {
        if self.stop() == f64::NEG_INFINITY {
            format!("{}:{}", self.text, self.weight)
        } else {
            format!("{}:{}:{}", self.text, self.weight, self.stop())
        }
    }
}

#[derive(Deserialize)]
struct ImagePromptJson {
    weight: f64,
    stop: serde_json::Value,
    crops: Vec<Crop>,
}

#[derive(Deserialize)]
struct StepJson {
    size: [usize; 2],
    cutn: usize,
    cut_pow: f64,
    lr: f64,
    init_weight: f64,
    prompts: Vec<PromptJson>,
    image_prompt: ImagePromptJson,
    crops: Vec<Crop>,
    augments: Vec<AugmentParams>,
}

#[derive(Deserialize)]
struct CurveStep {
    crops: Vec<Crop>,
}

#[derive(Deserialize)]
struct CurveJson {
    size: [usize; 2],
    cutn: usize,
    lr: f64,
    prompts: Vec<PromptJson>,
    z_indices: Vec<Vec<u32>>,
    steps: Vec<CurveStep>,
}

fn scalar(t: &Tensor) -> f64 {
    f64::from(values(t)[0])
}

fn close(what: &str, got: f64, want: f64) {
    assert!((got - want).abs() <= 1e-4 * want.abs().max(1e-3), "{what}: got {got}, want {want}");
}

#[test]
fn one_step_matches_the_reference() {
    let j: StepJson =
        serde_json::from_str(&std::fs::read_to_string(fixture("engine/step.json")).expect("json")).expect("parse");
    let g = golden("engine/step.safetensors");
    let settings = RunSettings {
        prompts: j.prompts.iter().map(PromptJson::as_arg).collect(),
        width: j.size[0],
        height: j.size[1],
        cutn: j.cutn,
        cut_pow: j.cut_pow,
        lr: j.lr,
        init_weight: j.init_weight,
        iterations: 1,
        ..RunSettings::default()
    };
    let mut session = Session::new(fixture_models(), settings).expect("session");
    session.set_latent(&g["z0"]).expect("z0");
    session.set_init_latent(&g["z0"]).expect("z_orig");
    let no_aug = vec![AugmentParams::default(); j.image_prompt.crops.len()];
    let target = session
        .image_target(
            &g["target"],
            &StepPlan {
                crops: j.image_prompt.crops.clone(),
                augments: no_aug,
                noise: None,
                roll: None,
                sized_noise: Vec::new(),
            },
            j.image_prompt.weight,
            j.image_prompt.stop.as_f64().unwrap_or(f64::NEG_INFINITY),
        )
        .expect("image target");
    assert_close("image prompt embeds", &target.embed, &g["image_prompt_embeds"], 1e-4);
    session.set_fixed_targets(vec![LabelledTarget { label: "image".into(), target }]);

    let plan = StepPlan {
        crops: j.crops.clone(),
        augments: j.augments.clone(),
        noise: Some(StepNoise::Host { facs: values(&g["noise_facs"]), values: values(&g["noise"]) }),
        roll: None,
        sized_noise: Vec::new(),
    };
    let out = session.step_with(&plan).expect("step");
    assert_close("synthesised image", &out.image, &g["image"], 1e-4);
    let labels: Vec<&str> = out.losses.iter().map(|(l, _)| l.as_str()).collect();
    assert_eq!(labels.len(), 5, "{labels:?}");
    close("init loss", out.losses[0].1, scalar(&g["loss_init"]));
    let text = values(&g["loss_text"]);
    for (k, want) in text.iter().enumerate() {
        close(&format!("text loss {k}"), out.losses[1 + k].1, f64::from(*want));
    }
    close("image loss", out.losses[4].1, scalar(&g["loss_image"]));
    close("total loss", out.total, scalar(&g["loss_total"]));

    let grad = session.last_gradient().expect("gradient");
    let cos = cosine(grad, &g["grad_z"]);
    assert!(cos >= 0.9999, "gradient cosine {cos}");
    assert_close("grad_z", grad, &g["grad_z"], 1e-3);
    let z = session.latent();
    let diff = (z - &g["z_after"]).expect("diff").abs().expect("abs").max_all().expect("max");
    assert!(scalar(&diff) <= 1e-5, "z after the step differs by {}", scalar(&diff));
}

#[test]
fn twenty_steps_track_the_reference_loss_curve() {
    let j: CurveJson =
        serde_json::from_str(&std::fs::read_to_string(fixture("engine/curve.json")).expect("json")).expect("parse");
    let g = golden("engine/curve.safetensors");
    let settings = RunSettings {
        prompts: j.prompts.iter().map(PromptJson::as_arg).collect(),
        width: j.size[0],
        height: j.size[1],
        cutn: j.cutn,
        lr: j.lr,
        augments: Vec::new(),
        iterations: j.steps.len(),
        ..RunSettings::default()
    };
    // The curve starts from the codes at its own indices.
    let (h, w) = (j.z_indices.len(), j.z_indices[0].len());
    let idx = Tensor::from_vec(j.z_indices.concat(), (1, h, w), &common::device()).expect("indices");
    let models = fixture_models();
    let z0 = models.vqgan().expect("vqgan").embed_indices(&idx).expect("embed");
    let mut session = Session::new(models, settings).expect("session");
    session.set_latent(&z0).expect("z0");
    let want = values(&g["losses"]);
    let totals = values(&g["total"]);
    for (i, step) in j.steps.iter().enumerate() {
        let plan = StepPlan {
            crops: step.crops.clone(),
            augments: vec![AugmentParams::default(); j.cutn],
            noise: None,
            roll: None,
            sized_noise: Vec::new(),
        };
        let out = session.step_with(&plan).expect("step");
        for (k, (_, got)) in out.losses.iter().enumerate() {
            close(&format!("step {i} prompt {k}"), *got, f64::from(want[i * 2 + k]));
        }
        close(&format!("step {i} total"), out.total, f64::from(totals[i]));
    }
    let diff = (session.latent() - &g["z_final"]).expect("diff").abs().expect("abs").max_all().expect("max");
    assert!(scalar(&diff) <= 1e-5, "final latent differs by {}", scalar(&diff));
}
