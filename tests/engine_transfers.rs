//! What an iteration copies between the host and the compute device
//! (`engine::transfer`): the budget a GPU run is held to. The counts are the same on the
//! CPU, where the copies are plain memory copies, so this runs everywhere.

mod common;

use clipcanvas::engine::cutouts::Crop;
use clipcanvas::engine::session::{Session, StepNoise, StepPlan};
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
    let plan =
        StepPlan { crops, augments: vec![Default::default(); 4], noise: None, roll: None, sized_noise: Vec::new() };
    step(&mut session, &plan); // fills the matrix cache for these sizes
    let t = step(&mut session, &plan);
    assert_eq!(t, Transfers { uploads: 0, upload_bytes: 0, downloads: 1, download_bytes: 4 * 4 }, "{t:?}");
}

/// The pixel and Fourier generators make their index lists and transform matrices once,
/// at setup: their plain iterations copy no more than the VQGAN's.
#[test]
fn the_pixel_and_fourier_generators_upload_nothing_per_iteration_either() {
    use clipcanvas::settings::GeneratorSettings;
    for name in ["pixel", "fft"] {
        let generator = GeneratorSettings::named(name, 32, 32).expect("generator");
        let settings = RunSettings { generator, lr: generator.default_lr(), ..settings() };
        let mut session = Session::new(fixture_models(), settings).expect("session");
        let crops: Vec<Crop> = [(20, 0, 0), (32, 0, 0), (24, 8, 4), (16, 16, 16)]
            .into_iter()
            .map(|(size, x, y)| Crop { size, x, y })
            .collect();
        let plan =
            StepPlan { crops, augments: vec![Default::default(); 4], noise: None, roll: None, sized_noise: Vec::new() };
        step(&mut session, &plan);
        let t = step(&mut session, &plan);
        assert_eq!(t, Transfers { uploads: 0, upload_bytes: 0, downloads: 1, download_bytes: 4 * 4 }, "{name}: {t:?}");
    }
}

/// With the default augmentations, what goes up is the noise (drawn on the host on the
/// CPU only: a GPU draws it with its own generator) and the augmentations' parameters:
/// the warps' homographies, the jitter's hue matrices and the lists of the cutouts each
/// augmentation picks, under a kilobyte here (the warps' sampling taps are computed on
/// the device).
#[test]
fn beyond_the_cpus_noise_an_augmented_iteration_uploads_only_its_parameters() {
    let mut session = Session::new(fixture_models(), settings()).expect("session");
    for _ in 0..3 {
        session.step().expect("warm-up");
    }
    let plan = session.next_plan();
    let noise_bytes = match &plan.noise {
        Some(StepNoise::Host { facs, values }) => 4 * (facs.len() + values.len()) as u64,
        other => panic!("the CPU draws its noise on the host: {other:?}"),
    };
    assert_eq!(noise_bytes, 4 * (4 + 4 * 3 * 32 * 32), "the fixture CLIP takes 32x32 cutouts");
    let t = step(&mut session, &plan);
    assert_eq!(t.downloads, 1, "{t:?}");
    assert!(t.upload_bytes >= noise_bytes && t.upload_bytes - noise_bytes < 1024, "{t:?}");
}
