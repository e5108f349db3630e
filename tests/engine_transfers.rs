//! What an iteration copies between the host and the compute device
//! (`engine::transfer`): the budget a GPU run is held to. The counts are the same on the
//! CPU, where the copies are plain memory copies, so this runs everywhere.

mod common;

use clipcanvas::engine::cutouts::Crop;
use clipcanvas::engine::session::{Session, StepPlan};
use clipcanvas::engine::transfer::{counts, Transfers};
use clipcanvas::settings::RunSettings;
use common::fixture_models;

fn settings() -> RunSettings {
    RunSettings {
        prompts: vec!["a red circle".into(), "a blue square:0.5".into()],
        width: 32,
        height: 32,
        cutn: 4,
        iterations: 10,
        seed: 3,
        init_weight: 0.1,
        ..RunSettings::default()
    }
}

fn step(session: &mut Session, plan: &StepPlan) -> Transfers {
    let before = counts();
    session.step_with(plan).expect("step");
    counts().since(before)
}

/// With the cutouts' resampling matrices cached (same crop sizes as the step before) and
/// no augmentation, an iteration uploads nothing and downloads its loss values once: the
/// total and each term (two prompts and the init weight), 4 bytes each.
#[test]
fn a_plain_iteration_uploads_nothing_and_reads_its_losses_back_once() {
    let mut session = Session::new(fixture_models(), settings()).expect("session");
    let crops: Vec<Crop> = [(20, 0, 0), (32, 0, 0), (24, 8, 4), (16, 16, 16)]
        .into_iter()
        .map(|(size, x, y)| Crop { size, x, y })
        .collect();
    let plan = StepPlan { crops, augments: vec![Default::default(); 4], noise: None };
    step(&mut session, &plan); // fills the matrix cache for these sizes
    let t = step(&mut session, &plan);
    assert_eq!(t, Transfers { uploads: 0, upload_bytes: 0, downloads: 1, download_bytes: 4 * 4 }, "{t:?}");
}

/// The random augmentations and the cutout noise are still drawn on the host: each
/// iteration uploads them (this pins today's budget; docs/gpu.md lists them). The noise
/// alone is `cutn × 3 × S × S` floats.
#[test]
fn the_augmentations_and_noise_are_the_uploads_left() {
    let mut session = Session::new(fixture_models(), settings()).expect("session");
    for _ in 0..3 {
        session.step().expect("warm-up");
    }
    let plan = session.next_plan();
    let noise_bytes = plan.noise.as_ref().map_or(0, |(f, n)| 4 * (f.len() + n.len()) as u64);
    assert_eq!(noise_bytes, 4 * (4 + 4 * 3 * 32 * 32), "the fixture CLIP takes 32x32 cutouts");
    let t = step(&mut session, &plan);
    assert_eq!(t.downloads, 1, "{t:?}");
    assert!(t.upload_bytes >= noise_bytes, "{t:?}");
    eprintln!("per iteration with the default augmentations: {t:?}");
}
