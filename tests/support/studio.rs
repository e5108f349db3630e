//! The studio's test harness, shared by the kittests: a fake engine link that records
//! commands and feeds events and frames, dropped files, and the studio built on them.
#![allow(dead_code, reason = "each test file uses some of these")]

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use clipcanvas::engine::observer::Frame;
use clipcanvas::ui::link::EngineLink;
use clipcanvas::ui::StudioApp;
use clipcanvas::worker::{Command, Event, FrameEvent};
use egui_kittest::Harness;

/// A file dropped on the window, as the platform layer would hand it over.
#[derive(Debug)]
pub struct Dropped(pub std::path::PathBuf);

impl egui::DroppedFile for Dropped {
    fn path(&self) -> &std::path::Path {
        &self.0
    }

    fn bytes(&self) -> Result<Vec<u8>, String> {
        std::fs::read(&self.0).map_err(|e| e.to_string())
    }
}

pub fn drop_file(h: &mut Harness<'static, StudioApp>, path: std::path::PathBuf) {
    h.input_mut().dropped_files.push(Arc::new(Dropped(path)));
}

#[derive(Clone, Default)]
pub struct FakeLink {
    pub sent: Arc<Mutex<Vec<Command>>>,
    pub events: Arc<Mutex<VecDeque<Event>>>,
    pub frame: Arc<Mutex<Option<Arc<FrameEvent>>>>,
}

impl FakeLink {
    pub fn push(&self, e: Event) {
        self.events.lock().expect("lock").push_back(e);
    }

    pub fn sent(&self) -> Vec<Command> {
        self.sent.lock().expect("lock").clone()
    }
}

impl EngineLink for FakeLink {
    fn send(&self, cmd: Command) -> bool {
        self.sent.lock().expect("lock").push(cmd);
        true
    }

    fn try_event(&self) -> Option<Event> {
        self.events.lock().expect("lock").pop_front()
    }

    fn take_frame(&self) -> Option<Arc<FrameEvent>> {
        self.frame.lock().expect("lock").take()
    }
}

/// The studio on a fake link, saving no runs.
pub fn harness(link: &FakeLink) -> Harness<'static, StudioApp> {
    harness_with_outputs(link, None)
}

/// The studio on a fake link, saving runs in (and restoring the newest from) `outputs`.
pub fn harness_with_outputs(link: &FakeLink, outputs: Option<PathBuf>) -> Harness<'static, StudioApp> {
    let link = link.clone();
    let mut h = Harness::builder()
        .with_size(egui::vec2(1280.0, 820.0))
        .build_eframe(move |cc| StudioApp::with_outputs(cc, Box::new(link), outputs));
    h.run_steps(3);
    h
}

/// Steps the studio until `done` holds (work in background threads), for up to 10 s.
pub fn until(h: &mut Harness<'static, StudioApp>, done: impl Fn(&StudioApp) -> bool) {
    for _ in 0..500 {
        if done(h.state()) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        h.run_steps(1);
    }
    panic!("timed out");
}

/// A frame of `w`x`h` for iteration `iteration`, a fixed pattern.
pub fn frame(iteration: usize, w: u32, h: u32) -> Arc<FrameEvent> {
    let rgba = (0..w * h).flat_map(|i| [(i % 251) as u8, 100, 200, 255]).collect();
    Arc::new(FrameEvent::new(iteration, Frame { width: w, height: h, rgba }))
}
