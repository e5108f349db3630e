//! The studio as a workshop, driven as a user would through egui_kittest on a fake engine
//! link: the queue (jobs one after another, reorder, duplicate, cancel, saved and offered
//! again after a restart, a job cut short going on from its autosave), the history
//! gallery (search, open, continue, branch from a kept frame, vary, delete) and the X/Y
//! grid dialog whose cells fill the queue and end in a contact sheet.

#[path = "support/studio.rs"]
mod studio_support;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clipcanvas::settings::png::{ModelFiles, PngMeta};
use clipcanvas::settings::queue::{JobStatus, Queue};
use clipcanvas::settings::RunSettings;
use clipcanvas::ui::StudioApp;
use clipcanvas::worker::{library, Command, Event, FrameEvent, RunState};
use egui_kittest::kittest::{NodeT, Queryable};
use egui_kittest::Harness;
use studio_support::{frame, harness_with_outputs, until, FakeLink};

fn starts(link: &FakeLink) -> Vec<RunSettings> {
    link.sent()
        .into_iter()
        .filter_map(|c| match c {
            Command::Start(s) => Some(*s),
            _ => None,
        })
        .collect()
}

/// The worker's side of a run that goes to its end: loading, running, its final frame.
fn finish_run(h: &mut Harness<'static, StudioApp>, link: &FakeLink, iteration: usize) {
    link.push(Event::State(RunState::Loading));
    link.push(Event::State(RunState::Running));
    h.run_steps(2);
    *link.frame.lock().expect("lock") = Some(frame(iteration, 16, 16));
    link.push(Event::State(RunState::Finished));
    h.run_steps(2);
}

/// Types into the text field named `label` (not the label beside it).
fn type_into(h: &mut Harness<'static, StudioApp>, label: &str, text: &str) {
    let field = |n: &egui_kittest::Node<'_>| n.accesskit_node().role() == egui::accesskit::Role::TextInput;
    h.query_all_by_label(label).find(|n| field(n)).expect("a text field").focus();
    h.run_steps(1);
    h.query_all_by_label(label).find(|n| field(n)).expect("a text field").type_text(text);
    h.run_steps(3);
}

/// The studio saving into `outputs`, its Queue section open and the queue paused.
fn paused_queue(link: &FakeLink, outputs: &Path) -> Harness<'static, StudioApp> {
    let mut h = harness_with_outputs(link, Some(outputs.to_path_buf()));
    open_queue(&mut h);
    h.get_by_label("Paused").click();
    h.run_steps(2);
    h
}

fn open_queue(h: &mut Harness<'static, StudioApp>) {
    let label = match h.state().queue.pending() {
        0 => "Queue".to_owned(),
        n => format!("Queue ({n})"),
    };
    h.get_by_label(&label).click();
    h.run_steps(2);
}

#[test]
fn queued_jobs_run_one_after_another_and_the_queue_is_saved_as_it_changes() {
    let outputs = tempfile::tempdir().expect("temp");
    let link = FakeLink::default();
    let mut h = harness_with_outputs(&link, Some(outputs.path().to_path_buf()));
    // Nothing runs: the first job starts at once.
    h.get_by_label("Add to queue").click();
    h.run_steps(3);
    assert_eq!(starts(&link).len(), 1);
    let first = starts(&link)[0].clone();
    assert_eq!(h.state().queue.jobs[0].status, JobStatus::Running);
    // A second job waits for the first, with another prompt.
    h.state_mut().state.prompts[0].text = "a yellow square on a green background".into();
    h.run_steps(1);
    link.push(Event::State(RunState::Loading));
    link.push(Event::State(RunState::Running));
    h.run_steps(2);
    h.get_by_label("Add to queue").click();
    h.run_steps(3);
    assert_eq!(starts(&link).len(), 1, "the second job waits");
    let saved = |o: &Path| library::read_queue(o).expect("queue.json");
    until(&mut h, |_| saved(outputs.path()).jobs.len() == 2);
    // The first ends: it is saved with its session, and the second starts.
    *link.frame.lock().expect("lock") = Some(frame(60, 16, 16));
    link.push(Event::State(RunState::Finished));
    h.run_steps(3);
    let sent = link.sent();
    let folder = h.state().queue.jobs[0].folder.clone().expect("the job's run folder");
    let session = folder.join("run.session");
    assert!(sent.iter().any(|c| matches!(c, Command::SaveSession(p) if *p == session)), "{sent:?}");
    let starts = starts(&link);
    assert_eq!(starts.len(), 2);
    assert_eq!(starts[0], first);
    assert_eq!(starts[1].prompts, ["a yellow square on a green background:1"]);
    assert_eq!(h.state().queue.jobs[0].status, JobStatus::Done);
    assert_eq!(h.state().queue.jobs[1].status, JobStatus::Running);
    until(&mut h, |_| folder.join("final.png").is_file());
    until(&mut h, |_| saved(outputs.path()).jobs[0].status == JobStatus::Done);
    // Its editor follows the running job, which can be steered.
    assert_eq!(h.state().state.prompts[0].text, "a yellow square on a green background");
    // The panel shows them.
    open_queue(&mut h);
    h.get_by_label_contains("1. [done] a big red circle on a blue background - seed");
    h.get_by_label_contains("2. [starting] a yellow square on a green background - seed");
}

#[test]
fn the_queue_panel_reorders_duplicates_and_cancels_jobs() {
    let outputs = tempfile::tempdir().expect("temp");
    let link = FakeLink::default();
    let mut h = paused_queue(&link, outputs.path());
    for seed in [1, 2, 3] {
        h.state_mut().state.new_seed = false;
        h.state_mut().state.settings.seed = seed;
        h.run_steps(1);
        h.get_all_by_label("Add to queue").next().expect("the button").click();
        h.run_steps(2);
    }
    let seeds =
        |h: &Harness<'static, StudioApp>| h.state().queue.jobs.iter().map(|j| j.settings.seed).collect::<Vec<_>>();
    assert_eq!(seeds(&h), [1, 2, 3]);
    assert!(starts(&link).is_empty(), "paused");
    h.get_by_label("Move up job 3").click();
    h.run_steps(2);
    assert_eq!(seeds(&h), [1, 3, 2]);
    h.get_by_label("Duplicate job 1").click();
    h.run_steps(2);
    assert_eq!(seeds(&h), [1, 1, 3, 2]);
    h.get_by_label("Cancel job 4").click();
    h.run_steps(2);
    assert_eq!(seeds(&h), [1, 1, 3]);
    h.get_by_label("Move down job 1").click();
    h.run_steps(2);
    assert_eq!(seeds(&h), [1, 1, 3]);
    // Unpaused, the first starts; cancelling a running job stops it.
    h.get_by_label("Paused").click();
    h.run_steps(3);
    assert_eq!(starts(&link).iter().map(|s| s.seed).collect::<Vec<_>>(), [1]);
    link.push(Event::State(RunState::Loading));
    link.push(Event::State(RunState::Running));
    h.run_steps(2);
    h.get_by_label("Stop job 1").click();
    h.run_steps(2);
    assert!(matches!(link.sent().last(), Some(Command::Stop)));
}

/// A library folder with a queue saved by an earlier studio: two jobs waiting and one
/// that was running, cut short with an autosave in its run folder.
fn outputs_with_a_saved_queue() -> (tempfile::TempDir, PathBuf) {
    let outputs = tempfile::tempdir().expect("temp");
    let mut q = Queue::default();
    let cut = outputs.path().join("2026-12-07_09-00-00_a-red-barn");
    std::fs::create_dir_all(&cut).expect("dir");
    std::fs::write(cut.join("autosave.session"), b"a session").expect("autosave");
    for (seed, running) in [(7, true), (8, false), (9, false)] {
        let id = q.push(RunSettings { seed, prompts: vec!["a red barn:1".into()], ..RunSettings::shapes_world() });
        if running {
            let job = q.get_mut(id).expect("job");
            job.status = JobStatus::Running;
            job.folder = Some(cut.clone());
        }
    }
    library::write_queue(outputs.path(), &q.to_json().expect("json")).expect("write");
    (outputs, cut)
}

#[test]
fn jobs_left_from_last_time_are_offered_and_the_one_cut_short_goes_on_from_its_autosave() {
    let (outputs, cut) = outputs_with_a_saved_queue();
    let link = FakeLink::default();
    let mut h = harness_with_outputs(&link, Some(outputs.path().to_path_buf()));
    until(&mut h, |app| app.queue_offer);
    h.run_steps(2);
    h.get_by_label_contains("The queue has 3 job(s) left from last time");
    assert!(link.sent().is_empty(), "nothing starts before the artist says");
    h.get_by_label("Continue the queue").click();
    h.run_steps(3);
    let sent = link.sent();
    let autosave = cut.join("autosave.session");
    assert!(sent.iter().any(|c| matches!(c, Command::ResumeSession(p) if *p == autosave)), "{sent:?}");
    assert!(starts(&link).is_empty());
    assert_eq!(h.state().state.settings.seed, 7);
    // It ends; the next job starts fresh.
    finish_run(&mut h, &link, 40);
    assert_eq!(starts(&link).iter().map(|s| s.seed).collect::<Vec<_>>(), [8]);
}

#[test]
fn jobs_left_from_last_time_can_be_cleared() {
    let (outputs, _) = outputs_with_a_saved_queue();
    let link = FakeLink::default();
    let mut h = harness_with_outputs(&link, Some(outputs.path().to_path_buf()));
    until(&mut h, |app| app.queue_offer);
    h.run_steps(2);
    h.get_by_label("Clear them").click();
    h.run_steps(3);
    assert!(h.state().queue.jobs.is_empty());
    until(&mut h, |_| library::read_queue(outputs.path()).expect("queue").jobs.is_empty());
    assert!(link.sent().is_empty());
}

/// Saves a run in `library` as the studio does: its final image with settings, kept
/// frames at 0 and 50, and (with `session`) its session file.
fn saved_run(library: &Path, name: &str, prompt: &str, session: bool) -> PathBuf {
    let dir = library.join(name);
    let settings =
        RunSettings { prompts: vec![format!("{prompt}:1")], iterations: 60, seed: 5, ..RunSettings::shapes_world() };
    let meta = PngMeta::new(&settings, 60, ModelFiles { demo: Some("shapes-world".into()), ..ModelFiles::default() });
    let kept: Vec<Arc<FrameEvent>> = [0, 50].iter().map(|&i| frame(i, 16, 16)).collect();
    clipcanvas::worker::files::save_run(&dir, &frame(60, 16, 16).frame, &meta, &kept).expect("save");
    if session {
        std::fs::write(dir.join("run.session"), b"a session").expect("session");
    }
    dir
}

fn open_history(h: &mut Harness<'static, StudioApp>) {
    h.get_by_label("History").click();
    h.run_steps(2);
    until(h, |app| !app.gallery.loading);
    h.run_steps(2);
}

#[test]
fn the_history_lists_searches_opens_and_continues_saved_runs() {
    let outputs = tempfile::tempdir().expect("temp");
    let barn = saved_run(outputs.path(), "2026-12-06_10-00-00_a-red-barn", "a red barn", true);
    let star = saved_run(outputs.path(), "2026-12-07_10-00-00_a-white-star", "a white star", false);
    let link = FakeLink::default();
    let mut h = harness_with_outputs(&link, Some(outputs.path().to_path_buf()));
    open_history(&mut h);
    h.get_by_label("2 of 2 runs");
    assert_eq!(h.state().gallery.items[0].folder, star, "newest first");
    type_into(&mut h, "Search", "BARN");
    assert_eq!(h.state().gallery.search, "BARN");
    h.get_by_label("1 of 2 runs");
    h.get_by_label("run 2026-12-06_10-00-00_a-red-barn").click();
    h.run_steps(3);
    h.get_by_label_contains("iteration 60 of 60 - shapes-world - vqgan - seed 5 - lr ");
    // Open: the settings in the editor, the image on the canvas, the kept frames.
    h.get_by_label("Open").click();
    h.run_steps(2);
    until(&mut h, |app| app.canvas.frame().is_some_and(|f| f.iteration == 60));
    assert_eq!(h.state().state.prompts[0].text, "a red barn");
    h.get_by_label("2 kept frames");
    // Continue: resumed from its session in its own folder, for as many iterations again
    // (it had finished).
    open_history(&mut h);
    h.get_by_label("run 2026-12-06_10-00-00_a-red-barn").click();
    h.run_steps(3);
    h.get_by_label("Continue").click();
    h.run_steps(2);
    until(&mut h, |_| link.sent().iter().any(|c| matches!(c, Command::ResumeSession(_))));
    let sent = link.sent();
    let session = barn.join("run.session");
    let at = sent.iter().position(|c| matches!(c, Command::ResumeSession(p) if *p == session)).expect("resumed");
    assert!(matches!(sent.get(at + 1), Some(Command::Refine(60))), "{sent:?}");
    let autosave = barn.join("autosave.session");
    assert!(sent.iter().any(|c| matches!(c, Command::Autosave(Some((p, 25))) if *p == autosave)), "{sent:?}");
    // A run saved without its session can be opened, not continued.
    h.state_mut().gallery.search.clear();
    open_history(&mut h);
    h.get_by_label("run 2026-12-07_10-00-00_a-white-star").click();
    h.run_steps(3);
    assert_eq!(h.state().gallery.selected.as_ref(), Some(&star));
    assert!(h.get_by_label("Continue").accesskit_node().is_disabled());
}

#[test]
fn a_kept_frame_of_a_saved_run_branches_into_a_new_run_from_its_image() {
    let outputs = tempfile::tempdir().expect("temp");
    let barn = saved_run(outputs.path(), "2026-12-06_10-00-00_a-red-barn", "a red barn", true);
    let link = FakeLink::default();
    let mut h = harness_with_outputs(&link, Some(outputs.path().to_path_buf()));
    open_history(&mut h);
    h.get_by_label("run 2026-12-06_10-00-00_a-red-barn").click();
    h.run_steps(3);
    h.get_by_label("Branch...").click();
    h.run_steps(2);
    until(&mut h, |app| app.banner.as_ref().is_some_and(|b| b.text.starts_with("pick a kept frame on the timeline")));
    h.run_steps(2);
    assert!(!h.state().gallery.open, "the gallery steps aside");
    h.get_by_label("kept frame 50").click();
    h.run_steps(2);
    h.get_by_label("Continue from iteration 50").click();
    h.run_steps(3);
    let starts = starts(&link);
    assert_eq!(starts.len(), 1, "{:?}", link.sent());
    assert_eq!(starts[0].init_image, Some(barn.join("frames").join("frame_000050.png")));
    assert_eq!(starts[0].prompts, ["a red barn:1"]);
}

#[test]
fn vary_queues_four_variations_and_delete_removes_the_run() {
    let outputs = tempfile::tempdir().expect("temp");
    let barn = saved_run(outputs.path(), "2026-12-06_10-00-00_a-red-barn", "a red barn", true);
    let link = FakeLink::default();
    let mut h = harness_with_outputs(&link, Some(outputs.path().to_path_buf()));
    h.state_mut().queue.paused = true;
    open_history(&mut h);
    h.get_by_label("run 2026-12-06_10-00-00_a-red-barn").click();
    h.run_steps(3);
    assert_eq!(h.state().gallery.selected.as_ref(), Some(&barn));
    h.get_by_label("Vary").click();
    h.run_steps(2);
    let jobs = &h.state().queue.jobs;
    assert_eq!(jobs.len(), 4);
    let seeds: std::collections::HashSet<u64> =
        jobs.iter().map(|j| j.settings.variation.as_ref().expect("a variation").seed).collect();
    assert_eq!(seeds.len(), 4, "each its own variation seed");
    assert!(jobs
        .iter()
        .all(|j| j.settings.seed == 5 && j.settings.variation.as_ref().is_some_and(|v| v.strength == 0.1)));
    h.get_by_label("Delete...").click();
    h.run_steps(2);
    h.get_by_label("Delete it").click();
    h.run_steps(2);
    assert!(!barn.exists());
    h.get_by_label("0 of 0 runs");
}

#[test]
fn an_xy_grid_fills_the_queue_and_its_sheet_is_drawn_when_the_last_cell_ends() {
    let outputs = tempfile::tempdir().expect("temp");
    let link = FakeLink::default();
    let mut h = paused_queue(&link, outputs.path());
    h.get_by_label("X/Y grid...").click();
    h.run_steps(4);
    // A value that does not fit the key is refused in the dialog.
    type_into(&mut h, "x values", ", fast");
    h.get_by_label("Queue the cells").click();
    h.run_steps(3);
    h.get_by_label_contains("[grid] cell 4, 1: ");
    assert!(h.state().queue.jobs.is_empty());
    h.state_mut().grid_dialog.x_values = "11, 12".into();
    h.run_steps(2);
    h.get_by_label("Queue the cells").click();
    h.run_steps(3);
    let jobs = &h.state().queue.jobs;
    assert_eq!(
        jobs.iter().map(|j| (j.settings.seed, j.cell.map(|c| c.1))).collect::<Vec<_>>(),
        [(11, Some(0)), (12, Some(1))]
    );
    h.get_by_label("Paused").click();
    h.run_steps(3);
    finish_run(&mut h, &link, 30);
    finish_run(&mut h, &link, 30);
    assert_eq!(starts(&link).iter().map(|s| s.seed).collect::<Vec<_>>(), [11, 12]);
    let folder = h.state().queue.grids[0].folder.clone();
    until(&mut h, |_| folder.join("grid.png").is_file());
    assert!(folder.join("grid-x0.png").is_file() && folder.join("grid-x1.png").is_file());
    let sheet = image::open(folder.join("grid.png")).expect("sheet").to_rgb8();
    assert!(sheet.width() > 2 * 16 && sheet.height() > 16, "{:?}", sheet.dimensions());
}

#[test]
fn generate_forever_draws_a_new_seed_per_job_and_stops_when_one_fails() {
    let outputs = tempfile::tempdir().expect("temp");
    let link = FakeLink::default();
    let mut h = paused_queue(&link, outputs.path());
    h.get_by_label("Generate forever").click();
    h.run_steps(2);
    h.get_by_label("Paused").click();
    h.run_steps(3);
    // The queue was empty: the editor's settings, then the same with new seeds.
    finish_run(&mut h, &link, 30);
    finish_run(&mut h, &link, 30);
    let seeds: Vec<u64> = starts(&link).iter().map(|s| s.seed).collect();
    assert_eq!(seeds.len(), 3, "{seeds:?}");
    assert!(seeds[0] != seeds[1] && seeds[1] != seeds[2], "{seeds:?}");
    assert!(starts(&link).iter().all(|s| s.prompts == ["a big red circle on a blue background:1"]));
    // The third fails (as a refused run does: an error, then idle): forever stops.
    link.push(Event::State(RunState::Loading));
    link.push(Event::Error("the run needs 9.9 GiB; 2.0 GiB are free".into()));
    link.push(Event::State(RunState::Idle));
    h.run_steps(3);
    assert_eq!(starts(&link).len(), 3);
    let last = h.state().queue.jobs.last().expect("a job").status.clone();
    assert_eq!(last, JobStatus::Failed { reason: "the run needs 9.9 GiB; 2.0 GiB are free".into() });
    assert!(!h.state().queue.forever);
    h.get_by_label_contains("Generate forever stopped: the last job failed");
}
