//! The history gallery: every saved run of the library as a thumbnail, newest first,
//! with search by prompt text and filters by model and date; the selected run's details
//! and what can be done with it (open, continue, branch, vary, copy, reveal, delete).
//!
//! The library is read and thumbnails are made on background threads ([`Thumbs`]); the
//! grid draws only the rows in view, so a library of thousands of runs costs a frame no
//! more than one screenful.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crossbeam_channel::{Receiver, Sender};

use crate::worker::library::{self, LibraryItem};

/// Thumbnails of runs, by folder, made on a background thread as they are asked for
/// (newest request first, so that what is in view comes before what was scrolled past).
#[derive(Default)]
pub struct Thumbs {
    textures: HashMap<PathBuf, egui::TextureHandle>,
    asked: HashSet<PathBuf>,
    tx: Option<Sender<PathBuf>>,
    rx: Option<Receiver<(PathBuf, Result<image::RgbaImage, String>)>>,
}

/// Thumbnails asked for and waiting to be made, at most.
const REQUESTS: usize = 4096;
/// Textures made from finished thumbnails in one frame, at most.
const UPLOADS_PER_FRAME: usize = 24;

impl Thumbs {
    /// The thumbnail of the run in `folder`, or `None` while it is being made (it is asked
    /// for then).
    pub fn get(&mut self, folder: &Path) -> Option<&egui::TextureHandle> {
        if !self.textures.contains_key(folder) && self.asked.insert(folder.to_path_buf()) {
            self.ask(folder.to_path_buf());
        }
        self.textures.get(folder)
    }

    fn ask(&mut self, folder: PathBuf) {
        if self.tx.is_none() {
            let (tx, requests) = crossbeam_channel::bounded::<PathBuf>(REQUESTS);
            let (done, rx) = crossbeam_channel::bounded(256);
            let started = std::thread::Builder::new().name("clipcanvas-thumbs".into()).spawn(move || {
                // Newest request first: drain what waits, then work from the back.
                let mut stack: Vec<PathBuf> = Vec::new();
                loop {
                    if stack.is_empty() {
                        match requests.recv() {
                            Ok(p) => stack.push(p),
                            Err(_) => return,
                        }
                    }
                    stack.extend(requests.try_iter());
                    let Some(folder) = stack.pop() else { continue };
                    let thumb = library::thumbnail(&folder);
                    if done.send((folder, thumb)).is_err() {
                        return;
                    }
                }
            });
            if started.is_err() {
                return;
            }
            self.tx = Some(tx);
            self.rx = Some(rx);
        }
        // A request that finds the line full is asked again by a later frame.
        if self.tx.as_ref().is_none_or(|tx| tx.try_send(folder.clone()).is_err()) {
            self.asked.remove(&folder);
        }
    }

    /// Takes finished thumbnails as textures; returns whether any came.
    pub fn poll(&mut self, ctx: &egui::Context) -> bool {
        let Some(rx) = &self.rx else { return false };
        let mut any = false;
        for (folder, thumb) in rx.try_iter().take(UPLOADS_PER_FRAME) {
            any = true;
            // A run whose image cannot be read keeps a grey square.
            let rgba = thumb.unwrap_or_else(|_| image::RgbaImage::from_pixel(8, 8, image::Rgba([60, 60, 60, 255])));
            let img = egui::ColorImage::from_rgba_unmultiplied(
                [rgba.width() as usize, rgba.height() as usize],
                rgba.as_raw(),
            );
            let name = format!("run-thumb-{}", folder.display());
            self.textures.insert(folder, ctx.load_texture(name, img, egui::TextureOptions::LINEAR));
        }
        if any {
            ctx.request_repaint();
        }
        any
    }

    /// Forgets a run's thumbnail (it was deleted, or saved again).
    pub fn forget(&mut self, folder: &Path) {
        self.textures.remove(folder);
        self.asked.remove(folder);
    }

    /// Thumbnails asked for and not yet made.
    pub fn waiting(&self) -> usize {
        self.asked.len().saturating_sub(self.textures.len())
    }
}

/// The date filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Since {
    #[default]
    Any,
    Day,
    Week,
    Month,
}

impl Since {
    const ALL: [Self; 4] = [Self::Any, Self::Day, Self::Week, Self::Month];

    fn label(self) -> &'static str {
        match self {
            Self::Any => "any time",
            Self::Day => "past day",
            Self::Week => "past week",
            Self::Month => "past month",
        }
    }

    fn window(self) -> Option<Duration> {
        let day = 86_400;
        match self {
            Self::Any => None,
            Self::Day => Some(Duration::from_secs(day)),
            Self::Week => Some(Duration::from_secs(7 * day)),
            Self::Month => Some(Duration::from_secs(30 * day)),
        }
    }
}

/// What the user asked of the gallery, for the selected run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GalleryAction {
    /// Restore its settings and show its image and kept frames.
    Open(PathBuf),
    /// Resume it from its session, in its folder.
    Continue(PathBuf),
    /// Open it to branch from one of its kept frames.
    Branch(PathBuf),
    /// Queue four variations of it.
    Vary(PathBuf),
    CopyPrompt(String),
    Reveal(PathBuf),
    Delete(PathBuf),
    /// Read the library again.
    Refresh,
    /// Use another library folder.
    SetFolder(PathBuf),
}

/// The gallery window's state.
#[derive(Default)]
pub struct Gallery {
    pub open: bool,
    pub items: Vec<LibraryItem>,
    /// The library is being read.
    pub loading: bool,
    pub search: String,
    /// Only runs made with these models (their label); `None`: all.
    pub model: Option<String>,
    pub since: Since,
    pub selected: Option<PathBuf>,
    /// Delete asked for the selected run: the confirmation shows.
    confirm_delete: bool,
    /// The library folder field's text, while it is edited.
    folder_text: Option<String>,
    scan_rx: Option<Receiver<Vec<LibraryItem>>>,
}

/// A thumbnail cell's size.
const CELL: egui::Vec2 = egui::vec2(104.0, 122.0);

impl Gallery {
    /// Reads the library folder again, in the background.
    pub fn refresh(&mut self, library: Option<&Path>) {
        let Some(dir) = library.map(Path::to_path_buf) else { return };
        let (tx, rx) = crossbeam_channel::bounded(1);
        let started = std::thread::Builder::new().name("clipcanvas-library".into()).spawn(move || {
            let _ = tx.send(library::scan(&dir));
        });
        if started.is_ok() {
            self.loading = true;
            self.scan_rx = Some(rx);
        }
    }

    /// Takes a finished read of the library.
    pub fn poll(&mut self) -> bool {
        let Some(items) = self.scan_rx.as_ref().and_then(|rx| rx.try_recv().ok()) else { return false };
        self.items = items;
        self.loading = false;
        self.scan_rx = None;
        if self.selected.as_ref().is_some_and(|s| !self.items.iter().any(|i| &i.folder == s)) {
            self.selected = None;
        }
        true
    }

    /// The runs the search and filters let through, in order.
    pub fn shown(&self) -> Vec<&LibraryItem> {
        let needle = self.search.trim().to_lowercase();
        let now = SystemTime::now();
        self.items
            .iter()
            .filter(|i| needle.is_empty() || i.prompt_line().to_lowercase().contains(&needle))
            .filter(|i| self.model.as_ref().is_none_or(|m| &i.models == m))
            .filter(|i| self.since.window().is_none_or(|w| now.duration_since(i.saved).map_or(true, |age| age <= w)))
            .collect()
    }

    /// Draws the window; `library` is the folder it lists.
    pub fn show(&mut self, ctx: &egui::Context, library: Option<&Path>, thumbs: &mut Thumbs) -> Option<GalleryAction> {
        let mut open = self.open;
        let mut action = None;
        let max = ctx.content_rect().size() - egui::vec2(40.0, 60.0);
        egui::Window::new("History").open(&mut open).default_size([760.0, 620.0]).max_size(max).show(ctx, |ui| {
            action = self.contents(ui, library, thumbs);
        });
        self.open = open && self.open;
        action
    }

    fn contents(&mut self, ui: &mut egui::Ui, library: Option<&Path>, thumbs: &mut Thumbs) -> Option<GalleryAction> {
        let mut action = None;
        self.folder_row(ui, library, &mut action);
        ui.horizontal(|ui| {
            let search = ui.label("Search");
            ui.add(egui::TextEdit::singleline(&mut self.search).hint_text("words of a prompt").desired_width(200.0))
                .labelled_by(search.id);
            let mut models: Vec<&str> = self.items.iter().map(|i| i.models.as_str()).collect();
            models.sort_unstable();
            models.dedup();
            ui.label("Models");
            egui::ComboBox::from_id_salt("gallery-models")
                .selected_text(self.model.as_deref().unwrap_or("all"))
                .show_ui(ui, |ui| {
                    ui.selectable_value(&mut self.model, None, "all");
                    for m in models {
                        ui.selectable_value(&mut self.model, Some(m.to_owned()), m);
                    }
                });
            ui.label("Saved");
            egui::ComboBox::from_id_salt("gallery-since").selected_text(self.since.label()).show_ui(ui, |ui| {
                for s in Since::ALL {
                    ui.selectable_value(&mut self.since, s, s.label());
                }
            });
            if ui.button("Refresh").clicked() {
                action = Some(GalleryAction::Refresh);
            }
        });
        let shown = self.shown();
        let count = if self.loading {
            "reading the library...".to_owned()
        } else {
            format!("{} of {} runs", shown.len(), self.items.len())
        };
        ui.label(count);
        ui.separator();
        let details_height =
            if self.selected.as_ref().is_some_and(|s| shown.iter().any(|i| &i.folder == s)) { 120.0 } else { 0.0 };
        let height = (ui.available_height() - details_height).max(CELL.y);
        // A cell takes its width and the spacing after it; the scroll bar takes some.
        let pitch = CELL.x + ui.spacing().item_spacing.x;
        let columns = (((ui.available_width() - 16.0) / pitch).floor() as usize).max(1);
        let rows = shown.len().div_ceil(columns);
        let mut clicked = None;
        egui::ScrollArea::vertical().id_salt("gallery").max_height(height).auto_shrink([false, false]).show_rows(
            ui,
            CELL.y,
            rows,
            |ui, range| {
                for row in range {
                    ui.horizontal(|ui| {
                        for item in shown.iter().skip(row * columns).take(columns) {
                            if self.cell(ui, item, thumbs) {
                                clicked = Some(item.folder.clone());
                            }
                        }
                    });
                }
            },
        );
        // The selected run's details, while the search and filters show it (a click shows
        // its run's from the next frame).
        let selected = self.selected.as_ref().and_then(|s| shown.iter().find(|i| &i.folder == s)).map(|i| (*i).clone());
        if let Some(f) = clicked {
            self.confirm_delete = false;
            self.selected = Some(f);
            ui.ctx().request_repaint();
        }
        if let Some(item) = selected {
            ui.separator();
            if let Some(a) = self.details(ui, &item) {
                action = Some(a);
            }
        }
        action
    }

    fn folder_row(&mut self, ui: &mut egui::Ui, library: Option<&Path>, action: &mut Option<GalleryAction>) {
        ui.horizontal(|ui| {
            ui.label("Library folder:");
            match &mut self.folder_text {
                Some(text) => {
                    let field = ui.add(egui::TextEdit::singleline(text).desired_width(360.0));
                    let enter = field.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter));
                    if (ui.button("Use").clicked() || enter) && !text.trim().is_empty() {
                        *action = Some(GalleryAction::SetFolder(PathBuf::from(text.trim())));
                        self.folder_text = None;
                    } else if ui.button("Cancel").clicked() {
                        self.folder_text = None;
                    }
                }
                None => {
                    let shown = library.map_or_else(|| "none on this system".to_owned(), |l| l.display().to_string());
                    ui.label(egui::RichText::new(shown).monospace().small());
                    if ui.small_button("Change...").on_hover_text("Keep the runs in another folder").clicked() {
                        self.folder_text = Some(library.map(|l| l.display().to_string()).unwrap_or_default());
                    }
                }
            }
        });
    }

    /// One thumbnail with its first words; returns whether it was clicked.
    fn cell(&self, ui: &mut egui::Ui, item: &LibraryItem, thumbs: &mut Thumbs) -> bool {
        let selected = self.selected.as_ref() == Some(&item.folder);
        let side = egui::vec2(96.0, 96.0);
        let mut clicked = false;
        ui.allocate_ui(CELL, |ui| {
            ui.vertical(|ui| {
                // The same widget whether or not its thumbnail has come, so that a click
                // made as it comes is not lost.
                let button = match thumbs.get(&item.folder) {
                    Some(t) => egui::Button::image(egui::Image::new(t).fit_to_exact_size(side)),
                    None => egui::Button::new("..."),
                };
                let response = ui.add(button.min_size(side).selected(selected));
                let name = format!("run {}", item.name());
                response.widget_info(|| egui::WidgetInfo::labeled(egui::Role::Button, true, &name));
                let s = &item.settings;
                let hover =
                    format!("{}\nseed {}, lr {}, {} iterations", item.prompt_line(), s.seed, s.lr, item.iteration);
                clicked = response.on_hover_text(hover).clicked();
                let words: String = item.prompt_line().chars().take(16).collect();
                ui.add(egui::Label::new(egui::RichText::new(words).small()).truncate());
            });
        });
        clicked
    }

    fn details(&mut self, ui: &mut egui::Ui, item: &LibraryItem) -> Option<GalleryAction> {
        let mut action = None;
        let s = &item.settings;
        ui.add(egui::Label::new(egui::RichText::new(item.prompt_line()).strong()).wrap());
        ui.label(format!(
            "{} - iteration {} of {} - {} - {} - seed {} - lr {} - {} cutouts - {}x{}",
            item.name(),
            item.iteration,
            s.iterations,
            item.models,
            s.generator.name(),
            s.seed,
            s.lr,
            s.cutn,
            s.width,
            s.height
        ));
        let folder = item.folder.clone();
        ui.horizontal_wrapped(|ui| {
            if ui
                .button("Open")
                .on_hover_text("Its settings in the editor, its image and kept frames on screen")
                .clicked()
            {
                action = Some(GalleryAction::Open(folder.clone()));
            }
            let can = item.can_continue && item.iteration < s.iterations;
            let cont = ui
                .add_enabled(item.can_continue, egui::Button::new("Continue"))
                .on_hover_text(if can {
                    "Resume it from its session, as generate --resume does"
                } else {
                    "Resume it from its session for more iterations"
                })
                .on_disabled_hover_text("Saved without its session (an animation, or an older studio)");
            if cont.clicked() {
                action = Some(GalleryAction::Continue(folder.clone()));
            }
            if ui.button("Branch...").on_hover_text("Open it, then pick a kept frame to start a new run from").clicked()
            {
                action = Some(GalleryAction::Branch(folder.clone()));
            }
            if ui.button("Vary").on_hover_text("Queue four variations of it (new variation seeds)").clicked() {
                action = Some(GalleryAction::Vary(folder.clone()));
            }
            if ui.button("Copy prompt").clicked() {
                action = Some(GalleryAction::CopyPrompt(item.prompt_line()));
            }
            if ui.button("Reveal files").clicked() {
                action = Some(GalleryAction::Reveal(folder.clone()));
            }
            if self.confirm_delete {
                ui.label("Delete this run's folder?");
                if ui.button("Delete it").clicked() {
                    action = Some(GalleryAction::Delete(folder.clone()));
                    self.confirm_delete = false;
                }
                if ui.button("Keep it").clicked() {
                    self.confirm_delete = false;
                }
            } else if ui.button("Delete...").clicked() {
                self.confirm_delete = true;
            }
        });
        action
    }
}
