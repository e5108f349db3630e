//! The worker on the tiny fixture models: states, steps, frames, steering, branching,
//! drafts, drop policy and shutdown.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use candle_core::{DType, Device, Tensor};
use crossbeam_channel::{bounded, Receiver};

use super::outbox::Outbox;
use super::run::Engine;
use super::*;
use crate::engine::observer::StepStats;
use crate::engine::session::Session;
use crate::settings::RunSettings;

const WAIT: Duration = Duration::from_secs(120);

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(rel)
}

fn tiny(iterations: usize) -> RunSettings {
    RunSettings {
        prompts: vec!["a lighthouse at dusk".into()],
        width: 32,
        height: 32,
        cutn: 2,
        augments: Vec::new(),
        iterations,
        save_every: 2,
        vqgan: Some(fixture("vqgan-tiny/model.ckpt")),
        clip: Some(fixture("clip-tiny")),
        ..RunSettings::default()
    }
}

#[test]
fn model_files_name_and_hash_the_models_a_run_uses() {
    let files = model_files(&tiny(1)).expect("fixture models");
    let clip = files.clip.expect("clip");
    let vqgan = files.vqgan.expect("vqgan");
    assert_eq!((clip.name.as_str(), vqgan.name.as_str()), ("clip-tiny", "model.ckpt"));
    assert!(clip.sha256.len() == 64 && vqgan.sha256.len() == 64);
    assert_eq!(vqgan.sha256, crate::files::file_sha256(&fixture("vqgan-tiny/model.ckpt")).expect("hash"));
    assert!(files.demo.is_none() && files.onestep.is_none());
    let missing = RunSettings { vqgan: Some(PathBuf::from("/nowhere/x.ckpt")), ..tiny(1) };
    assert!(model_files(&missing).expect_err("no such file").contains("/nowhere/x.ckpt"));
}

#[test]
fn a_draft_reports_its_candidates_and_can_be_picked_and_refined() {
    let dir = tempfile::tempdir().expect("temp");
    let model = dir.path().join("onestep");
    let config = crate::models::onestep::OneStepConfig {
        clip_dim: 16,
        n_codes: 64,
        grid: [8, 8],
        width: 16,
        layers: 1,
        heads: 2,
        mlp: 32,
        ..Default::default()
    };
    crate::training::onestep::write_untrained(&model, &config, 1).expect("model");
    let (worker, _) = spawn();
    // A plain run first: its models are cached without the one-step model, which the
    // draft then needs loaded.
    start(&worker, tiny(1));
    until(&worker, is_state(RunState::Finished));
    let mut settings = tiny(0);
    settings.one_step =
        Some(crate::settings::OneStepSettings { model: Some(model), candidates: 3, ..Default::default() });
    start(&worker, settings);
    let events = until(&worker, is_state(RunState::Finished));
    let drafts = events.iter().find_map(|e| match e {
        Event::Drafts(d) => Some(Arc::clone(d)),
        _ => None,
    });
    let drafts = drafts.expect("the candidates are reported");
    assert_eq!(drafts.len(), 3);
    assert!(drafts.windows(2).all(|w| w[0].score >= w[1].score), "ranked best first");
    let frame = worker.take_frame().expect("the draft on the canvas");
    assert_eq!((frame.iteration, &frame.frame), (0, &drafts[0].frame));
    assert!(worker.send(Command::PickDraft(2)));
    until(&worker, |e| matches!(e, Event::Steered { change, .. } if change.contains("draft 2")));
    let frame = worker.take_frame().expect("the picked draft");
    assert_eq!(frame.frame, drafts[2].frame);
    assert!(worker.send(Command::Refine(2)));
    let events = until(&worker, is_state(RunState::Finished));
    assert_eq!(steps(&events).len(), 2, "two iterations of refinement");
    assert!(worker.send(Command::PickDraft(0)));
    until(&worker, |e| matches!(e, Event::Notice(m) if m.contains("moved on")));
}

fn spawn() -> (Worker, Arc<AtomicUsize>) {
    let wakes = Arc::new(AtomicUsize::new(0));
    let w = Arc::clone(&wakes);
    let worker = Worker::spawn(Arc::new(move || {
        w.fetch_add(1, Ordering::Relaxed);
    }))
    .expect("spawn");
    (worker, wakes)
}

fn start(worker: &Worker, settings: RunSettings) {
    assert!(worker.send(Command::Start(Box::new(settings))));
}

/// Collects events until one matches `pred` (included); panics after [`WAIT`].
fn until(worker: &Worker, pred: impl Fn(&Event) -> bool) -> Vec<Event> {
    let deadline = Instant::now() + WAIT;
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        match worker.try_event() {
            Some(ev) => {
                let done = pred(&ev);
                seen.push(ev);
                if done {
                    return seen;
                }
            }
            None => std::thread::sleep(Duration::from_millis(2)),
        }
    }
    panic!("timed out; events so far: {seen:?}");
}

fn is_state(s: RunState) -> impl Fn(&Event) -> bool {
    move |e| matches!(e, Event::State(x) if *x == s)
}

fn steps(events: &[Event]) -> Vec<&StepStats> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Step(s) => Some(s),
            _ => None,
        })
        .collect()
}

fn states(events: &[Event]) -> Vec<RunState> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::State(s) => Some(*s),
            _ => None,
        })
        .collect()
}

fn labels(s: &StepStats) -> Vec<&str> {
    s.losses.iter().map(|(l, _)| l.as_str()).collect()
}

fn values(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32).and_then(|t| t.flatten_all()).and_then(|t| t.to_vec1()).expect("values")
}

#[test]
fn a_run_reports_states_steps_and_frames_to_the_end() {
    let (worker, wakes) = spawn();
    start(&worker, tiny(4));
    let events = until(&worker, is_state(RunState::Finished));
    assert_eq!(states(&events), [RunState::Loading, RunState::Running, RunState::Finished], "{events:?}");
    let steps = steps(&events);
    assert_eq!(steps.iter().map(|s| s.iteration).collect::<Vec<_>>(), [0, 1, 2, 3]);
    for s in &steps {
        assert_eq!(s.iterations, 4);
        assert!(s.total_loss.is_finite() && s.its_per_sec > 0.0, "{s:?}");
        assert_eq!(labels(s), ["a lighthouse at dusk"]);
    }
    assert!(!events.iter().any(|e| matches!(e, Event::Error(_) | Event::Frame(_))), "{events:?}");
    let frame = worker.take_frame().expect("a frame");
    assert_eq!(frame.iteration, 4, "the final frame is the result after the last update");
    assert_eq!((frame.frame.width, frame.frame.height, frame.frame.rgba.len()), (32, 32, 32 * 32 * 4));
    assert!(wakes.load(Ordering::Relaxed) > 0, "the UI was woken");
    assert!(worker.try_event().is_none());
    assert!(worker.is_alive());
}

#[test]
fn the_newest_frame_wins_for_a_consumer_that_never_takes_frames() {
    let (worker, _) = spawn();
    start(&worker, tiny(5));
    until(&worker, is_state(RunState::Finished));
    let frame = worker.take_frame().expect("a frame");
    assert_eq!(frame.iteration, 5);
    assert_eq!(Arc::strong_count(&frame), 1, "the worker holds no other copy");
    assert!(worker.take_frame().is_none(), "one frame was held, and it is taken");
    // Frames 0..4 during the run and the final one: all but the last were overwritten.
    assert_eq!(worker.dropped(), Dropped { frames: 5, steps: 0, events: 0 });
}

#[test]
fn live_steering_pause_resume_and_stop() {
    let (worker, _) = spawn();
    start(&worker, tiny(10_000));
    until(&worker, |e| matches!(e, Event::Step(_)));
    assert!(worker.send(Command::SetPrompts(vec!["a red barn:2".into()])));
    let events = until(&worker, |e| matches!(e, Event::Steered { .. }));
    let Some(Event::Steered { iteration: at, change }) = events.last().cloned() else { unreachable!() };
    assert_eq!(change, "prompts: a red barn:2");
    for s in steps(&events) {
        assert!(s.iteration < at && labels(s) == ["a lighthouse at dusk"], "{s:?}");
    }
    let events = until(&worker, |e| matches!(e, Event::Step(s) if s.iteration >= at));
    let Some(Event::Step(s)) = events.last() else { unreachable!() };
    assert_eq!(s.iteration, at, "the change took effect at the next iteration");
    assert_eq!(labels(s), ["a red barn"]);

    // A bad prompt is an error; the run goes on with the old ones.
    assert!(worker.send(Command::SetPrompts(vec!["a blue barn:".into()])));
    assert!(worker.send(Command::SetLr(0.05)));
    let events = until(&worker, |e| matches!(e, Event::Steered { .. }));
    assert!(events.iter().any(|e| matches!(e, Event::Error(m) if m.contains("empty weight"))), "{events:?}");
    let events = until(&worker, |e| matches!(e, Event::Step(_)));
    let Some(Event::Step(s)) = events.last() else { unreachable!() };
    assert_eq!((labels(s), s.lr), (vec!["a red barn"], 0.05));

    assert!(worker.send(Command::Pause));
    until(&worker, is_state(RunState::Paused));
    worker.take_frame();
    std::thread::sleep(Duration::from_millis(400));
    let mut late = Vec::new();
    while let Some(e) = worker.try_event() {
        late.push(e);
    }
    assert!(steps(&late).is_empty(), "no steps while paused: {late:?}");
    assert!(worker.take_frame().is_none(), "no frames while paused");

    assert!(worker.send(Command::Resume));
    until(&worker, is_state(RunState::Running));
    until(&worker, |e| matches!(e, Event::Step(_)));

    assert!(worker.send(Command::Stop));
    until(&worker, is_state(RunState::Stopped));
    std::thread::sleep(Duration::from_millis(100));
    let mut late = Vec::new();
    while let Some(e) = worker.try_event() {
        late.push(e);
    }
    assert!(steps(&late).is_empty(), "no steps after Stop: {late:?}");
    assert!(worker.take_frame().is_some(), "the last frame stays");
    let log = worker.steering();
    assert_eq!(log.len(), 2, "{log:?}");
    assert_eq!(log[0], Steer { iteration: at, change: "prompts: a red barn:2".into() });
    assert_eq!(log[1].change, "lr: 0.05");
}

#[test]
fn a_bad_model_path_is_an_error_and_the_worker_still_starts_later() {
    let (worker, _) = spawn();
    let mut bad = tiny(2);
    bad.vqgan = Some(fixture("vqgan-tiny/missing.ckpt"));
    start(&worker, bad);
    let events = until(&worker, is_state(RunState::Idle));
    assert_eq!(states(&events), [RunState::Loading, RunState::Idle]);
    let errors: Vec<_> = events.iter().filter(|e| matches!(e, Event::Error(_))).collect();
    assert_eq!(errors.len(), 1, "{events:?}");
    if let Event::Error(m) = errors[0] {
        assert!(m.contains("missing.ckpt") && !m.contains('\n'), "{m}");
    }
    // Nothing to steer or save without a session: a notice or an error, no panic.
    assert!(worker.send(Command::SetLr(0.2)));
    assert!(worker.send(Command::SaveSession(PathBuf::from("/nonexistent/x.session"))));
    until(&worker, |e| matches!(e, Event::Error(m) if m.contains("no session")));

    start(&worker, tiny(2));
    let events = until(&worker, is_state(RunState::Finished));
    assert_eq!(steps(&events).len(), 2);
}

/// Hardening issue, item 1: a Start too big for the memory available is an error
/// event (the studio's banner) before anything is loaded, not an abort; the worker
/// runs the next Start, and once the models are loaded refuses a too-big Start again.
/// (8192² on the fixture VQGAN needs hundreds of terabytes: refused on any machine
/// whose available memory Linux reports.)
#[cfg(target_os = "linux")]
#[test]
fn a_start_too_big_for_memory_is_an_error_event_not_an_abort() {
    let (worker, _) = spawn();
    let huge = RunSettings { width: 8192, height: 8192, ..tiny(1) };
    let refused = |events: &[Event]| {
        assert_eq!(states(events), [RunState::Loading, RunState::Idle]);
        let errors: Vec<&String> = events
            .iter()
            .filter_map(|e| match e {
                Event::Error(m) => Some(m),
                _ => None,
            })
            .collect();
        assert_eq!(errors.len(), 1, "{events:?}");
        let m = errors[0];
        assert!(m.starts_with("not enough memory: a 8192x8192 run with 2 cutouts needs about "), "{m}");
        assert!(m.contains(" is available (") && m.contains(" fits with 2 cutouts") && !m.contains('\n'), "{m}");
        assert!(!events.iter().any(|e| matches!(e, Event::Notice(n) if n.contains("models loaded"))), "{events:?}");
    };
    start(&worker, huge.clone());
    refused(&until(&worker, is_state(RunState::Idle)));

    start(&worker, tiny(1));
    let events = until(&worker, is_state(RunState::Finished));
    assert!(events.iter().any(|e| matches!(e, Event::Notice(n) if n.contains("models loaded"))), "{events:?}");
    start(&worker, huge);
    refused(&until(&worker, is_state(RunState::Idle)));
    start(&worker, tiny(2));
    assert_eq!(steps(&until(&worker, is_state(RunState::Finished))).len(), 2);
}

#[test]
fn image_prompts_branching_and_saving() {
    let (worker, _) = spawn();
    start(&worker, tiny(3));
    until(&worker, is_state(RunState::Finished));

    // Branch from a kept frame (0, 2 and the final 3 are kept): runs 3 more iterations.
    assert!(worker.send(Command::BranchFrom { iteration: 1 }));
    until(&worker, |e| matches!(e, Event::Error(m) if m.contains("no kept frame at iteration 1")));
    let image = fixture("score/exact.png");
    assert!(worker.send(Command::SetImagePrompts(vec![format!("{}:0.5", image.display())])));
    assert!(worker.send(Command::BranchFrom { iteration: 0 }));
    let events = until(&worker, is_state(RunState::Finished));
    let steered: Vec<_> = events.iter().filter(|e| matches!(e, Event::Steered { .. })).collect();
    assert_eq!(steered.len(), 2, "{events:?}");
    let steps = steps(&events);
    assert_eq!(steps.iter().map(|s| s.iteration).collect::<Vec<_>>(), [3, 4, 5]);
    assert_eq!(steps[0].iterations, 6);
    assert_eq!(labels(steps[0]), ["a lighthouse at dusk".to_owned(), format!("image: {}", image.display())]);
    assert!(events.iter().any(|e| matches!(e, Event::Notice(m) if m.starts_with("steered 2 times"))));
    assert_eq!(worker.take_frame().map(|f| f.iteration), Some(6));

    let dir = tempfile::tempdir().expect("temp");
    let path = dir.path().join("run.session");
    assert!(worker.send(Command::SaveSession(path.clone())));
    until(&worker, |e| matches!(e, Event::Notice(m) if m.starts_with("session saved")));
    let saved = Session::read_settings(&path).expect("a session file");
    assert_eq!(saved.iterations, 6);
    assert_eq!(saved.image_prompts, [format!("{}:0.5", image.display())]);
}

/// The engine without its thread, to look inside.
fn engine() -> (Engine, Receiver<Event>) {
    let (tx, rx) = bounded(EVENT_CAPACITY);
    (Engine::new(Outbox::new(tx, Arc::new(Shared::default()), Arc::new(|| {}))), rx)
}

#[test]
fn branching_restores_the_kept_latent_and_models_are_cached() {
    let (mut engine, rx) = engine();
    engine.handle(Command::Start(Box::new(tiny(5))));
    assert_eq!(engine.state, RunState::Running);
    while engine.state == RunState::Running {
        engine.step_once();
    }
    assert_eq!(engine.state, RunState::Finished);
    assert_eq!(engine.kept.iterations(), [0, 2, 4, 5]);
    let kept = values(engine.kept.get(2).expect("kept"));
    let session = engine.session.as_ref().expect("session");
    assert_ne!(values(session.latent()), kept, "the latent moved on after iteration 2");
    let first = values(engine.kept.get(0).expect("kept"));

    engine.handle(Command::BranchFrom { iteration: 2 });
    let session = engine.session.as_ref().expect("session");
    assert_eq!(values(session.latent()), kept);
    assert_eq!((session.iteration(), session.settings().iterations), (5, 8));
    assert_eq!(engine.state, RunState::Running);
    engine.step_once();
    assert_eq!(values(engine.kept.get(2).expect("kept")), kept, "kept latents do not change as the session steps");
    assert_eq!(values(engine.kept.get(0).expect("kept")), first);

    // The same models again: no reload (no "models loaded" notice).
    let models = Arc::clone(engine.session.as_ref().expect("session").models());
    while rx.try_recv().is_ok() {}
    engine.handle(Command::Start(Box::new(tiny(2))));
    let events: Vec<Event> = rx.try_iter().collect();
    assert!(!events.iter().any(|e| matches!(e, Event::Notice(m) if m.contains("models loaded"))), "{events:?}");
    assert!(Arc::ptr_eq(&models, engine.session.as_ref().expect("session").models()));
    assert!(engine.kept.is_empty(), "a new run starts a new timeline");

    engine.handle(Command::Reset);
    assert!(engine.session.is_none() && engine.state == RunState::Idle);
}

#[test]
fn kept_latents_are_bounded() {
    let (mut engine, _rx) = engine();
    for i in 0..KEPT_LATENTS + 10 {
        engine.keep_latent(i, Tensor::zeros(1, DType::F32, &Device::Cpu).expect("tensor"));
    }
    assert_eq!(engine.kept.len(), KEPT_LATENTS);
    assert_eq!(engine.kept.iterations().first().copied(), Some(10));
}

#[test]
fn a_full_event_channel_drops_steps_but_holds_other_events_in_order() {
    let (tx, rx) = bounded(2);
    let shared = Arc::new(Shared::default());
    let mut out = Outbox::new(tx, Arc::clone(&shared), Arc::new(|| {}));
    let stats = |iteration| StepStats {
        iteration,
        iterations: 9,
        total_loss: 1.0,
        losses: Vec::new(),
        its_per_sec: 1.0,
        lr: 0.1,
    };
    out.step(stats(0));
    out.send(Event::State(RunState::Running));
    out.step(stats(1)); // full: dropped
    out.send(Event::Error("boom".into())); // full: held back
    out.send(Event::State(RunState::Stopped));
    out.step(stats(2)); // behind held-back events: dropped
    assert!(out.has_backlog());
    assert_eq!(shared.dropped_steps.load(Ordering::Relaxed), 2);
    assert!(matches!(rx.try_recv(), Ok(Event::Step(s)) if s.iteration == 0));
    assert!(matches!(rx.try_recv(), Ok(Event::State(RunState::Running))));
    out.flush();
    assert!(!out.has_backlog());
    assert!(matches!(rx.try_recv(), Ok(Event::Error(m)) if m == "boom"));
    assert!(matches!(rx.try_recv(), Ok(Event::State(RunState::Stopped))));

    // A UI that never reads: the overflow stays bounded, notices go before states and errors.
    out.send(Event::Notice("fills the channel".into()));
    out.send(Event::Notice("fills the channel".into()));
    out.send(Event::Error("a".into()));
    out.send(Event::State(RunState::Paused));
    for i in 0..OVERFLOW_CAPACITY + 5 {
        out.send(Event::Notice(format!("n{i}")));
    }
    assert_eq!(out.overflow.len(), OVERFLOW_CAPACITY);
    assert!(out.overflow.iter().any(|e| matches!(e, Event::Error(m) if m == "a")));
    assert!(out.overflow.iter().any(|e| matches!(e, Event::State(RunState::Paused))));
    assert_eq!(shared.dropped_events.load(Ordering::Relaxed), 7);
}

#[test]
fn drop_joins_the_thread_promptly_even_mid_run() {
    let (worker, _) = spawn();
    drop(worker);

    let (worker, _) = spawn();
    start(&worker, tiny(100_000));
    until(&worker, |e| matches!(e, Event::Step(_)));
    let started = Instant::now();
    drop(worker);
    assert!(started.elapsed() < Duration::from_secs(20), "joined in {:?}", started.elapsed());

    // An explicit Shutdown ends the thread; later sends report it gone.
    let (worker, _) = spawn();
    assert!(worker.send(Command::Shutdown));
    let deadline = Instant::now() + WAIT;
    while worker.is_alive() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(!worker.is_alive());
    assert!(!worker.send(Command::Pause));
}

#[test]
fn a_recorded_run_writes_every_kth_iteration_and_its_last_image() {
    let dir = tempfile::tempdir().expect("temp");
    let rec = dir.path().join("recording");
    let (worker, _) = spawn();
    assert!(worker.send(Command::Record(Some(Recording { dir: rec.clone(), every: 2 }))));
    start(&worker, tiny(5));
    until(&worker, is_state(RunState::Finished));
    // The writer finishes the queued frames on its own thread: each is written to a hidden
    // temporary file and renamed into place, so only finished frames are counted.
    let deadline = Instant::now() + WAIT;
    let names = || {
        let mut n: Vec<String> = std::fs::read_dir(&rec)
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| !n.starts_with('.'))
                    .collect()
            })
            .unwrap_or_default();
        n.sort();
        n
    };
    while names().len() < 4 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    // Iterations 0, 2 and 4 as they were stepped, and the image after the last step (5).
    assert_eq!(names(), ["frame_000000.png", "frame_000002.png", "frame_000004.png", "frame_000005.png"]);
    // The next run, without recording, writes nothing more.
    assert!(worker.send(Command::Record(None)));
    start(&worker, tiny(2));
    until(&worker, is_state(RunState::Finished));
    assert_eq!(names().len(), 4);
}

/// The finished frames among `events`, in order.
fn animation_frames(events: &[Event]) -> Vec<(usize, Frame)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::AnimationFrame { index, frame, .. } => Some((*index, (**frame).clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn an_animation_renders_frame_by_frame_as_the_engine_does_through_stop_and_resume() {
    use crate::engine::animation::{Animation, AnimationObserver};
    use crate::settings::animation::AnimationSettings;
    use crate::settings::schedule::Schedule;

    struct Keep(Vec<image::RgbImage>);
    impl AnimationObserver for Keep {
        fn frame_done(&mut self, _f: usize, image: &image::RgbImage, _a: &Animation) -> Result<(), String> {
            self.0.push(image.clone());
            Ok(())
        }
    }
    let mut settings = tiny(2);
    settings.animation = Some(AnimationSettings {
        frames: 4,
        iterations_per_frame: Schedule::constant(3.0),
        zoom: Schedule::constant(1.1),
        angle: Schedule::parse("0:(0), 3:(9)").expect("schedule"),
        latent_smoothing: 0.2,
        ..AnimationSettings::default()
    });
    // What the engine makes on its own (the CLI's path).
    let models = Arc::new(crate::engine::loaded::load_models(&settings, &Device::Cpu).expect("models"));
    let mut reference = Keep(Vec::new());
    Animation::new(models, settings.clone())
        .and_then(|mut a| a.run(&mut reference, &std::sync::atomic::AtomicBool::new(false)))
        .expect("engine animation");

    let (worker, _) = spawn();
    start(&worker, settings.clone());
    let mut events = until(&worker, |e| matches!(e, Event::AnimationFrame { index: 1, .. }));
    // Live steering does not apply to an animation; stop mid-render, then resume.
    assert!(worker.send(Command::SetLr(0.5)));
    assert!(worker.send(Command::Stop));
    events.extend(until(&worker, is_state(RunState::Stopped)));
    assert!(events.iter().any(|e| matches!(e, Event::Notice(n) if n.contains("follows its schedules"))));
    assert!(worker.send(Command::Resume));
    events.extend(until(&worker, is_state(RunState::Finished)));
    let frames = animation_frames(&events);
    assert_eq!(frames.iter().map(|(i, _)| *i).collect::<Vec<_>>(), vec![0, 1, 2, 3]);
    for ((i, frame), want) in frames.iter().zip(&reference.0) {
        assert_eq!(*frame, Frame::from_rgb(want), "frame {i} differs from the engine's");
    }
    assert!(events.iter().any(|e| matches!(e, Event::AnimationFrame { total: 4, .. })));

    // The motion preview: with no session left, a test card moved along the path.
    assert!(worker.send(Command::PreviewMotion(Box::new(settings))));
    let events = until(&worker, |e| matches!(e, Event::MotionPreview(_)));
    let Some(Event::MotionPreview(preview)) = events.last() else { panic!("no preview") };
    assert_eq!(preview.len(), 4);
    assert_eq!(preview[0], Frame::from_rgb(&crate::engine::animation::preview::test_card(32, 32)));
    assert_ne!(preview[1], preview[0]);
}

#[test]
fn a_run_autosaves_and_its_autosave_resumes() {
    let dir = tempfile::tempdir().expect("temp");
    let path = dir.path().join("autosave.session");
    let (worker, _) = spawn();
    assert!(worker.send(Command::Autosave(Some((path.clone(), 5)))));
    start(&worker, tiny(12));
    until(&worker, is_state(RunState::Finished));
    // Saved at iterations 5 and 10; 12 is the end, which the studio saves itself.
    let (_, at) = Session::read_saved(&path).expect("the autosave");
    assert_eq!(at, 10);
    // As after a crash: resumed, it goes on from iteration 10 to the end.
    assert!(worker.send(Command::Autosave(None)));
    assert!(worker.send(Command::ResumeSession(path.clone())));
    let events = until(&worker, is_state(RunState::Finished));
    assert_eq!(steps(&events).iter().map(|s| s.iteration).collect::<Vec<_>>(), [10, 11], "{events:?}");
    assert!(events.iter().any(|e| matches!(e, Event::Notice(m) if m.starts_with("resumed"))), "{events:?}");
    // A file that is not a session is one error, and the worker goes on.
    std::fs::write(&path, b"junk").expect("write");
    assert!(worker.send(Command::ResumeSession(path)));
    let events = until(&worker, is_state(RunState::Idle));
    assert!(events.iter().any(|e| matches!(e, Event::Error(_))), "{events:?}");
    assert!(worker.is_alive());
}

#[test]
fn a_run_that_adds_a_clip_loads_it_rather_than_the_cached_models() {
    let (worker, _) = spawn();
    start(&worker, tiny(2));
    until(&worker, is_state(RunState::Finished));
    // The studio's "Also score": the same models and one CLIP more.
    let extra = crate::settings::ExtraClip { path: fixture("clip-tiny-48"), weight: 0.5 };
    start(&worker, RunSettings { extra_clips: vec![extra], ..tiny(2) });
    let events = until(&worker, is_state(RunState::Finished));
    assert!(!events.iter().any(|e| matches!(e, Event::Error(_))), "{events:?}");
    assert_eq!(states(&events), [RunState::Loading, RunState::Running, RunState::Finished], "{events:?}");
}

/// The history's Continue: a run stopped part way and saved with its session (as the
/// studio saves every run) goes on from that session to the very image of a run that was
/// never stopped.
#[test]
fn a_stopped_run_saved_with_its_session_continues_bit_exact() {
    let dir = tempfile::tempdir().expect("temp");
    let (worker, _) = spawn();
    start(&worker, tiny(8));
    until(&worker, is_state(RunState::Finished));
    let whole = worker.take_frame().expect("the final frame");
    start(&worker, tiny(8));
    until(&worker, |e| matches!(e, Event::Step(s) if s.iteration >= 3));
    assert!(worker.send(Command::Stop));
    until(&worker, is_state(RunState::Stopped));
    let session = dir.path().join("run.session");
    assert!(worker.send(Command::SaveSession(session.clone())));
    assert!(worker.send(Command::Reset));
    until(&worker, is_state(RunState::Idle));
    let (_, at) = Session::read_saved(&session).expect("the session");
    assert!((4..8).contains(&at), "stopped at {at}");
    assert!(worker.send(Command::ResumeSession(session)));
    until(&worker, is_state(RunState::Finished));
    let continued = worker.take_frame().expect("the final frame");
    assert_eq!((continued.iteration, &continued.frame), (whole.iteration, &whole.frame));
}
