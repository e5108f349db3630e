//! The studio as a workshop: the queue (jobs run one after another; saved on every
//! change, offered again after a restart), the history gallery's actions (open,
//! continue, branch, vary, delete), the X/Y grid dialog that fills the queue and the
//! contact sheet drawn when a grid's last job ends.
//!
//! A queued job runs like Start: its settings go into the editor (so that it can be
//! steered; the edit before is one Undo away) and it saves into its own run folder. The
//! queue starts the next job whenever nothing runs and it is not paused.

use std::path::{Path, PathBuf};

use super::studio::StudioApp;
use super::support::{spawn_named, Background};
use crate::settings::queue::{JobStatus, QueuedGrid};
use crate::settings::RunSettings;
use crate::ui::panels::gallery::GalleryAction;
use crate::ui::panels::grid::GridRequest;
use crate::ui::panels::queue::QueueAction;
use crate::worker::files::AUTOSAVE;
use crate::worker::library::{self, SESSION};
use crate::worker::{Command, RunState};

/// How a run opened from its folder goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Then {
    /// Only shown: settings in the editor, image and kept frames on screen.
    Show,
    /// Resumed from its session once shown.
    Continue,
    /// Shown, with a word on how to branch from one of its kept frames.
    Branch,
}

/// A run read back from its folder (or a clipcanvas PNG on its own).
#[derive(Debug)]
pub(super) struct OpenedRun {
    /// The run's folder, when the image is a run's `final.png`.
    pub folder: Option<PathBuf>,
    pub png: PathBuf,
    pub settings: RunSettings,
    pub last: crate::worker::Frame,
    /// The iteration the image shows.
    pub iteration: usize,
    pub frames: Vec<std::sync::Arc<crate::worker::FrameEvent>>,
    pub then: Then,
}

impl StudioApp {
    /// Reads the saved queue in the background (at start-up).
    pub(super) fn load_queue(&self) {
        let Some(dir) = self.outputs.clone() else { return };
        let tx = self.bg_tx.clone();
        spawn_named("clipcanvas-queue-read", move || {
            let _ = tx.send(Background::QueueLoaded(Box::new(library::read_queue(&dir))));
        });
    }

    /// The saved queue has come: jobs left from last time are offered, the queue paused
    /// until the artist says.
    pub(super) fn queue_loaded(&mut self, result: Result<crate::settings::queue::Queue, String>) {
        let mut saved = match result {
            Ok(q) => q,
            Err(e) => return self.say(format!("{e} (it is left as it is; new jobs replace it)"), true),
        };
        // A job running when the studio went away goes on from its autosave.
        for job in &mut saved.jobs {
            if job.status == JobStatus::Running {
                job.status = JobStatus::Waiting;
            }
        }
        // Jobs added since start-up come after the saved ones, numbered on from theirs.
        for job in std::mem::take(&mut self.queue.jobs) {
            let id = saved.push(job.settings);
            if let Some(j) = saved.get_mut(id) {
                j.status = job.status;
                j.folder = job.folder;
            }
        }
        saved.paused = saved.pending() > 0;
        self.queue_offer = saved.pending() > 0;
        self.queue = saved;
        self.drop_interrupted_offer_for_queued_jobs();
    }

    /// A run cut short that is a queued job is continued with the queue, not offered
    /// apart.
    pub(super) fn drop_interrupted_offer_for_queued_jobs(&mut self) {
        if let Some(run) = &self.interrupted {
            if self.queue.jobs.iter().any(|j| j.folder.as_ref() == Some(&run.folder)) {
                self.interrupted = None;
            }
        }
    }

    /// Saves the queue (on its own thread, newest state last; a failure is a banner).
    pub(super) fn queue_changed(&mut self) {
        let Some(dir) = self.outputs.clone() else { return };
        let json = match self.queue.to_json() {
            Ok(j) => j,
            Err(e) => return self.say(e, true),
        };
        if self.queue_saver.is_none() {
            // Newest wins: the state waits in a slot, and a signal of one wakes the writer.
            let slot: std::sync::Arc<std::sync::Mutex<Option<String>>> = std::sync::Arc::default();
            let (tx, rx) = crossbeam_channel::bounded::<()>(1);
            let done = self.bg_tx.clone();
            let newest = std::sync::Arc::clone(&slot);
            spawn_named("clipcanvas-queue-save", move || {
                while rx.recv().is_ok() {
                    let json = newest.lock().ok().and_then(|mut s| s.take());
                    let Some(json) = json else { continue };
                    if let Err(e) = library::write_queue(&dir, &json) {
                        let _ = done.send(Background::Done(Err(format!("the queue could not be saved: {e}"))));
                    }
                }
            });
            self.queue_saver = Some((slot, tx));
        }
        if let Some((slot, tx)) = &self.queue_saver {
            if let Ok(mut s) = slot.lock() {
                *s = Some(json);
            }
            // Full: a signal is waiting already, and the writer will take this state.
            let _ = tx.try_send(());
        }
    }

    pub(super) fn queue_action(&mut self, action: QueueAction) {
        match action {
            QueueAction::Add => match self.state.run_settings() {
                Ok(settings) => {
                    self.queue.push(settings);
                    self.push_log(format!("added to the queue ({} waiting or running)", self.queue.pending()));
                }
                Err(e) => return self.say(e, true),
            },
            QueueAction::Grid => self.grid_dialog.open = true,
            QueueAction::SetPaused(p) => {
                self.queue.paused = p;
                self.queue_offer = false;
            }
            QueueAction::SetForever(f) => self.queue.forever = f,
            QueueAction::Up(id) => self.queue.shift(id, -1),
            QueueAction::Down(id) => self.queue.shift(id, 1),
            QueueAction::Duplicate(id) => {
                self.queue.duplicate(id);
            }
            QueueAction::Cancel(id) => {
                if self.queue.get(id).is_some_and(|j| j.status == JobStatus::Running) {
                    // Stopped like any run: it is kept in the history, and the queue goes on.
                    self.execute(super::UiCommand::ToggleRun);
                    return;
                }
                self.queue.remove(id);
            }
            QueueAction::Open(id) => {
                if let Some(folder) = self.queue.get(id).and_then(|j| j.folder.clone()) {
                    self.open_run(folder.join("final.png"), Then::Show);
                }
                return;
            }
            QueueAction::ClearEnded => self.queue.clear_ended(),
        }
        // A grid whose last waiting cell was cancelled is drawn from the cells it has.
        self.draw_grids();
        self.queue_changed();
    }

    /// The X/Y grid dialog's request: its cells go into the queue, or the reason it is
    /// refused shows in the dialog.
    pub(super) fn add_grid(&mut self, request: GridRequest) {
        let base = match self.state.run_settings() {
            Ok(s) => s,
            Err(e) => {
                self.grid_dialog.error = Some(e);
                return;
            }
        };
        let y = request.y.as_ref().map(|(k, v)| (k.as_str(), v.as_str()));
        let plan = match crate::settings::batch::typed_grid(&base, (&request.x.0, &request.x.1), y) {
            Ok(p) => p,
            Err(e) => {
                self.grid_dialog.error = Some(e);
                return;
            }
        };
        let Some((x, y)) = plan.grid else { return };
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let prompt = base.prompts.first().map_or("", String::as_str);
        let name = crate::worker::files::run_folder_name(now, &format!("grid {} {prompt}", x.key));
        let Some(folder) = self.outputs.as_ref().map(|o| o.join(name)) else {
            self.grid_dialog.error = Some("this system has no library folder for the grid's sheet".into());
            return;
        };
        let n = plan.jobs.len();
        let cells = plan.jobs.into_iter().filter_map(|j| j.cell.map(|(c, r)| (j.settings, c, r))).collect();
        let grid = QueuedGrid {
            id: 0,
            x_key: x.key,
            x_labels: x.labels,
            y: y.map(|a| (a.key, a.labels)),
            folder,
            drawn: false,
        };
        self.queue.push_grid(grid, cells);
        self.grid_dialog.error = None;
        self.grid_dialog.open = false;
        self.say(format!("{n} grid cells added to the queue; the contact sheet comes when the last one ends"), false);
        self.queue_changed();
    }

    /// Each frame: starts the next job when nothing runs, the queue is not paused and no
    /// run cut short waits for an answer (with Generate forever, a new one when the queue
    /// is dry). How a job ended is noted by [`Self::job_state`].
    pub(super) fn pump_queue(&mut self) {
        if self.running() || self.queue.running().is_some() || self.queue.paused || self.interrupted.is_some() {
            return;
        }
        if self.queue.next_waiting().is_none() && self.queue.forever {
            if let Some(JobStatus::Failed { reason }) = self.queue.jobs.last().map(|j| &j.status) {
                // A job that fails would fail again, forever: stop and say why.
                let reason = reason.clone();
                self.queue.forever = false;
                self.queue_changed();
                return self.say(format!("Generate forever stopped: the last job failed ({reason})"), true);
            }
            // Generate forever: the last job again with a new seed (or the editor's
            // settings when the queue never had one).
            let last = self.queue.jobs.last().map(|j| j.settings.clone());
            let Some(mut settings) = last.or_else(|| self.state.run_settings().ok()) else { return };
            settings.seed = crate::ui::panels::settings::fresh_seed();
            self.queue.push(settings);
        }
        let Some(id) = self.queue.next_waiting() else { return };
        self.start_job(id);
    }

    fn start_job(&mut self, id: u64) {
        let Some(job) = self.queue.get(id).cloned() else { return };
        self.job_live = false;
        self.last_error = None;
        let keep_new_seed = self.state.new_seed;
        if let Some(folder) = job.folder.clone().filter(|f| f.join(AUTOSAVE).is_file()) {
            // Cut short last time: on from its autosave.
            self.kept.clear();
            self.resume_session(folder.clone(), folder.join(AUTOSAVE), &job.settings);
        } else {
            self.state.restore(&job.settings);
            self.begin(Ok(job.settings.clone()));
        }
        self.state.new_seed = keep_new_seed;
        if let Some(j) = self.queue.get_mut(id) {
            j.status = JobStatus::Running;
            j.folder.clone_from(&self.run_folder);
        }
        self.queue_changed();
    }

    /// The worker's state, for the queue's running job.
    pub(super) fn job_state(&mut self, state: RunState) {
        let Some(id) = self.queue.running().map(|j| j.id) else { return };
        let status = match state {
            RunState::Loading | RunState::Running => {
                self.job_live = true;
                return;
            }
            RunState::Paused => return,
            _ if !self.job_live => return,
            RunState::Finished => JobStatus::Done,
            RunState::Stopped => JobStatus::Stopped,
            RunState::Idle => JobStatus::Failed {
                reason: self.last_error.clone().unwrap_or_else(|| "it ended before its first iteration".into()),
            },
        };
        self.job_live = false;
        if let Some(j) = self.queue.get_mut(id) {
            j.status = status;
        }
        self.draw_grids();
        self.queue_changed();
    }

    /// Draws the sheets of grids whose last job has ended, in the background.
    pub(super) fn draw_grids(&mut self) {
        for (grid, cells) in self.queue.grids_to_draw() {
            if let Some(g) = self.queue.grids.iter_mut().find(|g| g.id == grid.id) {
                g.drawn = true;
            }
            let tx = self.bg_tx.clone();
            spawn_named("clipcanvas-grid", move || {
                // The last cell's run is being saved on another thread: wait for it.
                for _ in 0..100 {
                    let saved = cells.iter().flatten().flatten().all(|f| f.join("final.png").is_file());
                    if saved {
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                let result = library::draw_grid(&grid, &cells).map(|p| format!("grid sheet: {}", p.display()));
                let _ = tx.send(Background::Done(result));
            });
        }
    }

    pub(super) fn gallery_action(&mut self, action: GalleryAction) {
        match action {
            GalleryAction::Open(folder) => self.open_run(folder.join("final.png"), Then::Show),
            GalleryAction::Branch(folder) => self.open_run(folder.join("final.png"), Then::Branch),
            GalleryAction::Continue(folder) => {
                if self.running() {
                    return self.say("stop the run first", true);
                }
                self.open_run(folder.join("final.png"), Then::Continue);
            }
            GalleryAction::Vary(folder) => self.vary(&folder),
            GalleryAction::CopyPrompt(text) => {
                self.clipboard = Some(text);
                self.say("prompt copied", false);
            }
            GalleryAction::Reveal(folder) => {
                if !super::files::open_in_file_manager(&folder) {
                    self.clipboard = Some(folder.display().to_string());
                    self.say(
                        format!("no file manager could be opened; the run is in {} (copied)", folder.display()),
                        true,
                    );
                }
            }
            GalleryAction::Delete(folder) => match library::delete(&folder) {
                Ok(()) => {
                    self.thumbs.forget(&folder);
                    self.gallery.items.retain(|i| i.folder != folder);
                    self.gallery.selected = None;
                    if self.run_folder.as_ref() == Some(&folder) {
                        self.run_folder = None;
                        self.disk_run = None;
                    }
                    self.say(format!("deleted {}", folder.display()), false);
                }
                Err(e) => self.say(e, true),
            },
            GalleryAction::Refresh => self.gallery.refresh(self.outputs.as_deref()),
            GalleryAction::SetFolder(folder) => {
                if let Err(e) = std::fs::create_dir_all(&folder) {
                    return self.say(format!("{} cannot be the library folder: {e}", folder.display()), true);
                }
                self.outputs = Some(folder);
                self.library_chosen = true;
                // The queue is saved in the new folder from now on.
                self.queue_saver = None;
                self.queue_changed();
                self.gallery.refresh(self.outputs.as_deref());
            }
        }
    }

    /// Vary: four jobs of a run's settings, each with a new variation seed.
    fn vary(&mut self, folder: &Path) {
        let Some(item) = self.gallery.items.iter().find(|i| i.folder == folder) else { return };
        let s = &item.settings;
        if s.init_image.is_some() || s.one_step.is_some() {
            return self.say("a run from an init image or a draft has no random start to vary", true);
        }
        let strength = s.variation.as_ref().map_or(0.1, |v| v.strength);
        let base = crate::ui::panels::settings::fresh_seed();
        let jobs: Vec<RunSettings> = (0..4u64)
            .map(|k| {
                let mut v = s.clone();
                v.variation = Some(crate::settings::Variation { seed: base + k, strength });
                v
            })
            .collect();
        for j in jobs {
            self.queue.push(j);
        }
        self.say(format!("four variations of {} queued (strength {strength})", item.name()), false);
        self.queue_changed();
    }

    /// Reads a run back (its settings, final image and kept frames) in the background;
    /// `png` is a run's `final.png` or any clipcanvas PNG.
    pub(super) fn open_run(&mut self, png: PathBuf, then: Then) {
        let tx = self.bg_tx.clone();
        spawn_named("clipcanvas-open", move || {
            let _ = tx.send(match read_run(&png, then) {
                Ok(run) => Background::Opened(Box::new(run)),
                Err(e) => Background::Done(Err(e)),
            });
        });
    }

    /// A run read back: its settings go into the editor and its image and frames on
    /// screen; with [`Then::Continue`] it is resumed from its session.
    pub(super) fn opened(&mut self, ctx: &egui::Context, run: OpenedRun) {
        if self.running() {
            return self.say("stop the run first", true);
        }
        // The run is what the artist looks at now: the gallery steps aside.
        self.gallery.open = false;
        self.state.restore(&run.settings);
        self.check_models();
        self.kept.clear();
        self.drafts.clear();
        self.plot.clear();
        self.selected = None;
        self.animating = false;
        for frame in &run.frames {
            let thumb = super::support::thumbnail(ctx, &frame.frame, frame.iteration);
            self.kept.push(crate::ui::panels::timeline::KeptFrame { frame: frame.clone(), thumb, branch: None });
        }
        let live = std::sync::Arc::new(crate::worker::FrameEvent::new(run.iteration, run.last));
        self.canvas.set_frame(live.clone());
        self.live = Some(live);
        self.run_folder.clone_from(&run.folder);
        self.disk_run = Some(run.folder.clone().unwrap_or_else(|| crate::files::parent_dir(&run.png).to_path_buf()));
        self.last_run = Some(run.settings.clone());
        match (run.then, run.folder) {
            (Then::Continue, Some(folder)) => {
                let finished = run.iteration >= run.settings.iterations;
                self.resume_session(folder.clone(), folder.join(SESSION), &run.settings);
                if finished {
                    // A finished run goes on for as many iterations again.
                    self.send(Command::Refine(run.settings.iterations.max(1)));
                }
            }
            (Then::Branch, _) if !self.kept.is_empty() => self.say(
                "pick a kept frame on the timeline, then \"Continue from iteration N\" starts a new run from it",
                false,
            ),
            _ => self.say(format!("opened {}", run.png.display()), false),
        }
    }

    /// Resumes a saved session in its run folder (an autosave, or a run's own session):
    /// its settings come back and the run goes on in that folder.
    pub(super) fn resume_session(&mut self, folder: PathBuf, session: PathBuf, settings: &RunSettings) {
        self.state.restore(settings);
        self.history.absorb(&self.state);
        self.clear_for_run(settings);
        self.animating = false;
        self.run_folder = Some(folder.clone());
        self.tell_autosave(Some(folder.join(AUTOSAVE)));
        self.send(Command::ResumeSession(session));
    }

    /// "Continue from here" on a kept frame of a run read from disk (the engine holds no
    /// latent for it): a new run with that frame as its init image and the run's
    /// settings.
    pub(super) fn branch_from_disk(&mut self, dir: &Path, iteration: usize) {
        let frame = dir.join("frames").join(format!("frame_{iteration:06}.png"));
        let image = if frame.is_file() { frame } else { dir.join("final.png") };
        let Some(mut settings) = self.last_run.clone() else { return };
        settings.init_image = Some(image.clone());
        settings.variation = None;
        settings.one_step = None;
        if settings.init_weight == 0.0 {
            self.say(format!("branching from {} (init weight 0: the frame is only the start)", image.display()), false);
        }
        self.state.restore(&settings);
        self.history.absorb(&self.state);
        self.begin(Ok(settings));
        self.set_init(image);
    }
}

/// Reads a run's PNG, and its kept frames when it is a run folder's `final.png`.
pub(super) fn read_run(png: &Path, then: Then) -> Result<OpenedRun, String> {
    let (settings, meta) = library::read_png(png)?;
    // The iteration it shows, where its metadata says (a PNG of older studios may not).
    let iteration = meta.map_or(0, |m| m.iteration);
    let last = crate::worker::files::decode_image(png)?;
    let dir = crate::files::parent_dir(png);
    let is_run = png.file_name().is_some_and(|n| n == "final.png");
    let folder = is_run.then(|| dir.to_path_buf());
    let frames = if is_run { crate::worker::files::recorded_frames(&dir.join("frames")) } else { Vec::new() };
    if then == Then::Continue && !dir.join(SESSION).is_file() {
        return Err(format!("{} was saved without its session: it can be opened, not continued", dir.display()));
    }
    Ok(OpenedRun { folder, png: png.to_path_buf(), settings, last, iteration, frames, then })
}
