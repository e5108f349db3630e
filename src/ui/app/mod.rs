//! The studio app, split by role: `studio` holds its state; [`UiCommand`] (in
//! `ui_command`) is the one command type and `commands` where every command is carried
//! out; `logic` is the per-frame work before drawing (worker events, frames, background
//! results, dropped files, shortcuts, steering); `layout` the drawing, which only queues
//! commands; `files` the exports, settings files and dropped files; `undo` the edits to
//! undo and redo; `workshop` the queue, the history gallery and the X/Y grid dialog;
//! `support` the small things they share. Here: the eframe glue.

mod commands;
mod files;
mod layout;
mod logic;
mod studio;
mod support;
mod ui_command;
mod undo;
mod workshop;

pub use studio::{Banner, StudioApp};
pub use support::percentile;
pub use ui_command::UiCommand;

use studio::{LIBRARY_KEY, STORAGE_KEY};

impl eframe::App for StudioApp {
    fn logic(&mut self, ctx: &egui::Context, frame: &mut eframe::Frame) {
        self.run_logic(ctx, frame);
    }

    fn ui(&mut self, ui: &mut egui::Ui, frame: &mut eframe::Frame) {
        self.layout(ui, frame);
        if !self.pending.is_empty() {
            // Carried out by the next frame's logic, at once.
            ui.ctx().request_repaint();
        }
    }

    fn save(&mut self, storage: &mut dyn eframe::Storage) {
        eframe::set_value(storage, STORAGE_KEY, &self.state);
        if self.library_chosen {
            eframe::set_value(storage, LIBRARY_KEY, &self.outputs);
        }
    }
}
