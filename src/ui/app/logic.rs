//! The studio's per-frame logic, run before drawing (and while the window is hidden):
//! the commands queued last frame, events and frames from the worker, results of
//! background work, dropped files, shortcuts, live steering, timing figures.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::studio::{StudioApp, EVENT_BUDGET, MAX_KEPT};
use super::support::{percentile, thumbnail, Background};
use crate::ui::panels::images;
use crate::ui::panels::timeline::KeptFrame;
use crate::worker::{Command, Event, FrameEvent, RunState};

/// Seconds without a keystroke after which an edited prompt is sent to a live run.
pub(super) const TYPING_PAUSE: f64 = 0.6;

impl StudioApp {
    /// One frame's logic (see the module docs).
    pub(super) fn run_logic(&mut self, ctx: &egui::Context, frame: &mut eframe::Frame) {
        self.refresh_draft_check();
        self.state.number_rows();
        for cmd in std::mem::take(&mut self.pending) {
            self.execute(cmd);
        }
        // eframe's measure of the previous frame: app code, tessellation and paint.
        if let Some(cpu) = frame.info().cpu_usage {
            self.record_frame_time(f64::from(cpu) * 1000.0);
        }
        let now = Instant::now();
        if let Some(prev) = self.last_logic.replace(now) {
            self.frame_interval_ms.push_back(now.duration_since(prev).as_secs_f64() * 1000.0);
            while self.frame_interval_ms.len() > 600 {
                self.frame_interval_ms.pop_front();
            }
        }
        self.write_stats();
        let started = Instant::now();
        while started.elapsed() < EVENT_BUDGET {
            let Some(event) = self.link.try_event() else { break };
            self.handle_event(ctx, event);
        }
        if let Some(frame) = self.link.take_frame() {
            self.accept_frame(ctx, frame);
        }
        if std::mem::take(&mut self.save_due) {
            self.save_run_output();
        }
        while let Ok(msg) = self.bg_rx.try_recv() {
            self.handle_background(ctx, msg);
        }
        self.thumbs.poll(ctx);
        if self.gallery.poll() {
            ctx.request_repaint();
        }
        let (dropped, pointer): (Vec<PathBuf>, Option<egui::Pos2>) = ctx.input(|i| {
            let paths = i
                .raw
                .dropped_files
                .iter()
                .map(|f| f.path().to_path_buf())
                .filter(|p| !p.as_os_str().is_empty())
                .collect();
            (paths, i.pointer.latest_pos())
        });
        let on_targets = matches!((pointer, self.target_rect), (Some(p), Some(r)) if r.contains(p));
        if on_targets && !dropped.is_empty() {
            self.push_log(format!("{} target image(s) added", dropped.len()));
            images::add_targets(&mut self.state, dropped);
        } else {
            for path in dropped {
                self.accept_dropped(&path);
            }
        }
        for action in self.models_window.logic() {
            let cmd = super::layout::model_command(action);
            self.execute(cmd);
        }
        self.shortcuts(ctx);
        for cmd in std::mem::take(&mut self.pending) {
            self.execute(cmd);
        }
        // An edit settles once no text field is typed in and no button is held.
        let settling = ctx.egui_wants_keyboard_input() || ctx.input(|i| i.pointer.any_down());
        self.history.observe(&self.state, settling);
        self.pump_queue();
        self.steer(ctx);
        if self.running() {
            ctx.request_repaint_after(Duration::from_millis(250));
        }
    }

    /// Live steering: sends what changed since the last send. A prompt's text is sent
    /// once typing pauses for [`TYPING_PAUSE`] or the field is left (Enter, Tab, a
    /// click elsewhere), so half-typed words are not optimised; weights go at once.
    pub(super) fn steer(&mut self, ctx: &egui::Context) {
        let now = ctx.input(|i| i.time);
        // Compared in place every frame; copied only when a text changed.
        if !self.state.prompts.iter().map(|r| r.text.as_str()).eq(self.typed.0.iter().map(String::as_str)) {
            self.typed = (self.state.prompts.iter().map(|r| r.text.clone()).collect(), now);
        }
        // An animation follows its schedules; edits apply to the next render.
        if !self.running() || self.animating {
            return;
        }
        let typing = ctx.memory(|m| m.focused().is_some());
        let quiet = now - self.typed.1;
        if typing && quiet < TYPING_PAUSE {
            ctx.request_repaint_after(Duration::from_secs_f64(TYPING_PAUSE - quiet));
            return;
        }
        let prompts = self.state.prompt_specs();
        if prompts != self.sent_prompts {
            self.plot.note_sent(self.state.used_rows());
            self.sent_prompts.clone_from(&prompts);
            self.send(Command::SetPrompts(prompts));
        }
        let targets = self.state.target_specs();
        if targets != self.sent_targets {
            self.sent_targets.clone_from(&targets);
            self.send(Command::SetImagePrompts(targets));
        }
    }

    pub(super) fn handle_event(&mut self, ctx: &egui::Context, event: Event) {
        match event {
            Event::State(s) => {
                self.run_state = s;
                if !matches!(s, RunState::Running | RunState::Paused | RunState::Loading) {
                    self.stopping = false;
                }
                if matches!(s, RunState::Finished | RunState::Stopped) {
                    // Saved once this frame's frames are in: the worker hands over the
                    // final frame just before it says the run ended.
                    self.save_due = true;
                }
                self.push_log(format!("{s:?}"));
                self.job_state(s);
            }
            Event::Step(stats) if self.animating => {
                // Each frame counts its iterations from 0; the plot runs on over frames.
                self.plot.record(self.anim_steps, &stats.losses);
                self.anim_steps += 1;
                self.stats = Some(stats);
            }
            Event::Step(stats) => {
                if let Some((from, base @ None)) = &mut self.branch {
                    *base = Some(stats.iteration);
                    self.plot.mark(stats.iteration, format!("branch from {from}"));
                }
                self.plot.record(stats.iteration, &stats.losses);
                self.stats = Some(stats);
            }
            Event::Frame(frame) => self.accept_frame(ctx, frame),
            Event::Notice(m) => self.say(m, false),
            Event::Error(m) => {
                self.last_error = Some(m.clone());
                self.say(m, true);
            }
            Event::Steered { iteration, change } => self.push_log(format!("iteration {iteration}: {change}")),
            Event::Drafts(frames) => {
                self.push_log(format!("{} draft candidates", frames.len()));
                self.drafts =
                    frames.iter().enumerate().map(|(rank, d)| (d.clone(), thumbnail(ctx, &d.frame, rank))).collect();
                self.draft_pick = 0;
            }
            Event::AnimationFrame { index, total, frame } => {
                if index == 0 || self.anim_preview {
                    self.anim_frames.clear();
                    self.anim_selected = None;
                }
                self.anim_preview = false;
                self.anim_total = total;
                let thumb = thumbnail(ctx, &frame, index);
                self.anim_frames.push((Arc::new(FrameEvent::new(index, (*frame).clone())), thumb));
            }
            Event::MotionPreview(frames) => {
                self.push_log(format!("motion preview: {} frames", frames.len()));
                self.anim_frames = frames
                    .iter()
                    .enumerate()
                    .map(|(i, f)| (Arc::new(FrameEvent::new(i, f.clone())), thumbnail(ctx, f, i)))
                    .collect();
                self.anim_preview = true;
                self.anim_total = frames.len();
                // The end of the path shows where the camera goes.
                if let Some(last) = self.anim_frames.len().checked_sub(1) {
                    self.anim_selected = Some(last);
                    self.canvas.set_frame(Arc::clone(&self.anim_frames[last].0));
                }
            }
        }
    }

    pub(super) fn accept_frame(&mut self, ctx: &egui::Context, frame: Arc<FrameEvent>) {
        if self.animating {
            // An animation's frames evolve on the canvas; its finished frames go to the
            // frame strip (their latents are not kept: no branching).
            if self.anim_selected.is_none() && self.selected.is_none() {
                self.canvas.set_frame(Arc::clone(&frame));
            }
            self.live = Some(frame);
            return;
        }
        let every = self.state.settings.save_every.max(1);
        let last = self.kept.last().map(|k| k.frame.iteration);
        // Keep the frames whose latents the worker keeps: every save_every iterations,
        // and the final frame of a run that stopped or finished.
        let keep = frame.iteration.is_multiple_of(every) || self.run_state != RunState::Running;
        if keep && last != Some(frame.iteration) {
            let thumb = thumbnail(ctx, &frame.frame, frame.iteration);
            let branch = self.branch.map(|(from, _)| from);
            self.kept.push(KeptFrame { frame: Arc::clone(&frame), thumb, branch });
            if self.kept.len() > MAX_KEPT {
                self.kept.remove(0);
                self.selected = self.selected.and_then(|s| s.checked_sub(1));
            }
        }
        if self.selected.is_none() {
            self.canvas.set_frame(Arc::clone(&frame));
        }
        self.live = Some(frame);
    }

    pub(super) fn handle_background(&mut self, ctx: &egui::Context, msg: Background) {
        match msg {
            Background::InitChosen(path) => self.set_init(path),
            Background::Dropped(path) => {
                self.push_log(format!("init image: {}", path.display()));
                self.set_init(path);
            }
            Background::InitDecoded(decoded) => {
                let (path, result) = *decoded;
                let current = self.state.settings.init_image.as_deref() == Some(path.as_path());
                match result {
                    Ok(frame) if current => {
                        self.init_thumb = Some(thumbnail(ctx, &frame, 0));
                        self.canvas.set_init(Some(Arc::new(frame)));
                    }
                    Ok(_) => {}
                    Err(e) => {
                        if current {
                            self.state.settings.init_image = None;
                            self.init_thumb = None;
                            self.canvas.set_init(None);
                        }
                        self.say(e, true);
                    }
                }
            }
            Background::TargetsChosen(paths) => images::add_targets(&mut self.state, paths),
            Background::SettingsLoaded(result) => match *result {
                Ok(s) => {
                    self.state.restore(&s);
                    self.check_models();
                    self.say("settings loaded", false);
                }
                Err(e) => self.say(e, true),
            },
            Background::Done(Err(e)) => self.say(e, true),
            Background::Done(Ok(m)) => self.say(m, false),
            Background::Saved(dir) => {
                self.push_log(format!("run saved in {}", dir.display()));
                self.thumbs.forget(&dir);
                if self.gallery.open {
                    self.gallery.refresh(self.outputs.as_deref());
                }
            }
            Background::Interrupted(run) => {
                // Only while nothing else has started.
                if self.last_run.is_none() {
                    self.interrupted = Some(*run);
                    self.drop_interrupted_offer_for_queued_jobs();
                }
            }
            Background::Restored(run) => {
                let crate::worker::files::SavedRun { folder, last, frames } = *run;
                // Only onto an empty studio: a run started meanwhile wins.
                if self.live.is_none() && self.kept.is_empty() && self.last_run.is_none() {
                    let last_iteration = frames.last().map_or(0, |f| f.iteration);
                    for frame in frames {
                        let thumb = thumbnail(ctx, &frame.frame, frame.iteration);
                        self.kept.push(KeptFrame { frame, thumb, branch: None });
                    }
                    let live = Arc::new(FrameEvent::new(last_iteration, last));
                    self.canvas.set_frame(Arc::clone(&live));
                    self.live = Some(live);
                    self.push_log(format!("the last run, from {}", folder.display()));
                    // Its recording, if it has one, is what an animation export holds.
                    self.run_folder = Some(folder.clone());
                    self.disk_run = Some(folder);
                }
            }
            Background::QueueLoaded(result) => self.queue_loaded(*result),
            Background::Opened(run) => self.opened(ctx, *run),
            Background::NoDialog => {
                let outputs = self
                    .outputs
                    .as_ref()
                    .map_or_else(String::new, |o| format!(" Every run is saved in {}.", o.display()));
                self.say(
                    format!(
                        "No file dialog could be opened on this system (it needs xdg-desktop-portal or zenity): \
                         type a path in Export > Save or open by path...{outputs}"
                    ),
                    true,
                );
            }
        }
    }

    /// Writes the timing figures to the `CLIPCANVAS_UI_STATS` file (the measurement
    /// behind README's frame-time figures). Failing to write is not worth a banner.
    pub(super) fn write_stats(&mut self) {
        let Some((path, last)) = &mut self.stats_file else { return };
        if last.elapsed().as_secs_f64() < 5.0 {
            return;
        }
        *last = Instant::now();
        let uploads: VecDeque<f64> = self.canvas.upload_latencies_ms().into();
        let q = |v: &VecDeque<f64>, p: f64| percentile(v, p).unwrap_or(f64::NAN);
        let size = self.canvas.frame().map(|f| (f.frame.width, f.frame.height));
        let text = format!(
            "{{\"ui_cpu_ms\": {{\"n\": {}, \"p50\": {:.2}, \"p95\": {:.2}, \"max\": {:.2}}}, \
             \"ui_interval_ms\": {{\"n\": {}, \"p50\": {:.2}, \"p95\": {:.2}, \"max\": {:.2}}}, \
             \"upload_latency_ms\": {{\"n\": {}, \"p50\": {:.2}, \"p95\": {:.2}, \"max\": {:.2}}}, \
             \"frames_shown\": {}, \"frame_size\": {:?}}}\n",
            self.frame_ms.len(),
            q(&self.frame_ms, 0.5),
            q(&self.frame_ms, 0.95),
            q(&self.frame_ms, 1.0),
            self.frame_interval_ms.len(),
            q(&self.frame_interval_ms, 0.5),
            q(&self.frame_interval_ms, 0.95),
            q(&self.frame_interval_ms, 1.0),
            uploads.len(),
            q(&uploads, 0.5),
            q(&uploads, 0.95),
            q(&uploads, 1.0),
            self.canvas.version(),
            size.map(|(w, h)| [w, h]),
        );
        let _ = std::fs::write(path, text);
    }
}
