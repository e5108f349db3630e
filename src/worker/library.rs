//! The studio's library: every run it saved, one folder a run in the outputs folder
//! (`final.png` with its settings and model hashes, `frames/`, `run.session`), read back
//! for the history gallery; thumbnails made once and cached beside each run; the saved
//! queue; a grid's contact sheet drawn from its cells' runs. File work only, done off the
//! UI thread by the studio; one-line errors.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::settings::png::PngMeta;
use crate::settings::queue::{Queue, QueuedGrid};
use crate::settings::RunSettings;

/// The session a finished or stopped run keeps in its folder, for Continue.
pub const SESSION: &str = "run.session";
/// The cached thumbnail in a run's folder.
pub const THUMB: &str = "thumb.png";
/// The saved queue, in the library folder.
pub const QUEUE: &str = "queue.json";
/// The side of a thumbnail, in pixels.
pub const THUMB_SIDE: u32 = 96;

/// One run of the library, as the gallery lists it.
#[derive(Debug, Clone)]
pub struct LibraryItem {
    pub folder: PathBuf,
    pub settings: RunSettings,
    /// The iteration its final image shows.
    pub iteration: usize,
    /// The models that made it, as one label (`shapes-world`, `vqgan.ckpt + clip-vit`).
    pub models: String,
    /// When it was last saved.
    pub saved: SystemTime,
    /// Its session is there: it can be continued.
    pub can_continue: bool,
}

impl LibraryItem {
    /// Its prompts as one line.
    pub fn prompt_line(&self) -> String {
        let mut parts: Vec<&str> = self.settings.prompts.iter().map(String::as_str).collect();
        parts.extend(self.settings.regions.iter().map(|r| r.prompt.as_str()));
        if parts.is_empty() {
            return "(image prompts only)".to_owned();
        }
        parts.join(" | ")
    }

    /// Its folder's name: the time it started and its first words.
    pub fn name(&self) -> String {
        self.folder.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned())
    }
}

/// The models of a run as one label.
fn models_label(meta: &PngMeta) -> String {
    let m = &meta.models;
    if let Some(demo) = &m.demo {
        return demo.clone();
    }
    let generator = m.vqgan.as_ref().map_or_else(|| meta.settings.generator.name().to_owned(), |v| v.name.clone());
    match &m.clip {
        Some(c) => format!("{generator} + {}", c.name),
        None => generator,
    }
}

/// The settings a clipcanvas PNG holds (its image paths resolved from its folder), and
/// the metadata around them where it has it (a PNG may hold bare settings); an error
/// for an unreadable file or one without clipcanvas settings.
pub fn read_png(png: &Path) -> Result<(RunSettings, Option<PngMeta>), String> {
    let text = crate::export::read_png_metadata(png)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("{} holds no clipcanvas settings", png.display()))?;
    let mut settings =
        crate::settings::png::settings_from_text(&text).map_err(|e| format!("{}: {e}", png.display()))?;
    crate::export::resolve_from_file(&mut settings, png);
    Ok((settings, PngMeta::from_json(&text).ok()))
}

/// Reads one run's folder; `None` when it holds no readable clipcanvas `final.png`.
pub fn read_item(folder: &Path) -> Option<LibraryItem> {
    let png = folder.join("final.png");
    let (settings, meta) = read_png(&png).ok()?;
    let meta = meta?;
    let saved = std::fs::metadata(&png).and_then(|m| m.modified()).unwrap_or(SystemTime::UNIX_EPOCH);
    Some(LibraryItem {
        folder: folder.to_path_buf(),
        iteration: meta.iteration,
        models: models_label(&meta),
        saved,
        can_continue: folder.join(SESSION).is_file(),
        settings,
    })
}

/// Every run in the library folder, newest first (by folder name, which starts with the
/// run's time). Folders that are not runs are skipped.
pub fn scan(library: &Path) -> Vec<LibraryItem> {
    let Ok(entries) = std::fs::read_dir(library) else { return Vec::new() };
    let mut folders: Vec<PathBuf> = entries.filter_map(Result::ok).map(|e| e.path()).filter(|p| p.is_dir()).collect();
    folders.sort_by(|a, b| b.file_name().cmp(&a.file_name()));
    folders.iter().filter_map(|f| read_item(f)).collect()
}

/// A run's thumbnail: the cached one, else made from its final image (and cached; a
/// cache that cannot be written is only slower next time).
pub fn thumbnail(folder: &Path) -> Result<image::RgbaImage, String> {
    let cached = folder.join(THUMB);
    if let Ok(rgb) = crate::engine::image::load_rgb(&cached) {
        return Ok(image::DynamicImage::ImageRgb8(rgb).to_rgba8());
    }
    let rgb = crate::engine::image::load_rgb(&folder.join("final.png")).map_err(|e| e.to_string())?;
    let small = image::imageops::thumbnail(&rgb, THUMB_SIDE.min(rgb.width()), THUMB_SIDE.min(rgb.height()));
    let _ = crate::export::write_png(&cached, &small, None);
    Ok(image::DynamicImage::ImageRgb8(small).to_rgba8())
}

/// Deletes a run's folder, after checking that it is one (it holds a clipcanvas
/// `final.png`): a wrong path never removes anything else.
pub fn delete(folder: &Path) -> Result<(), String> {
    if read_item(folder).is_none() {
        return Err(format!("{} is not a clipcanvas run; nothing was deleted", folder.display()));
    }
    std::fs::remove_dir_all(folder).map_err(|e| format!("{} could not be deleted: {e}", folder.display()))
}

/// The queue saved in the library folder; an empty queue when there is none, an error
/// when the file cannot be read.
pub fn read_queue(library: &Path) -> Result<Queue, String> {
    let path = library.join(QUEUE);
    match std::fs::read_to_string(&path) {
        Ok(text) => Queue::from_json(&text).map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Queue::default()),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// Writes the queue into the library folder (atomically; the folder is made if needed).
pub fn write_queue(library: &Path, json: &str) -> Result<(), String> {
    std::fs::create_dir_all(library).map_err(|e| format!("{}: {e}", library.display()))?;
    crate::files::write_atomic(&library.join(QUEUE), |w| std::io::Write::write_all(w, json.as_bytes()))
        .map_err(|e| e.to_string())
}

/// Draws a grid's contact sheet from its cells' runs (`cells[row][col]`, `None` or an
/// unreadable run left blank) into `grid.png` in its folder, and copies each cell's final
/// image there as `grid-xI-yJ.png` (with its settings); returns the sheet's path.
pub fn draw_grid(grid: &QueuedGrid, cells: &[Vec<Option<PathBuf>>]) -> Result<PathBuf, String> {
    std::fs::create_dir_all(&grid.folder).map_err(|e| format!("{}: {e}", grid.folder.display()))?;
    let mut images = Vec::new();
    for (row, line) in cells.iter().enumerate() {
        let mut out = Vec::new();
        for (col, cell) in line.iter().enumerate() {
            let png = cell.as_ref().map(|f| f.join("final.png"));
            let img = png.as_ref().and_then(|p| crate::engine::image::load_rgb(p).ok());
            if let (Some(p), Some(_)) = (&png, &img) {
                let name = format!("{}.png", crate::settings::batch::cell_name(col, grid.y.is_some().then_some(row)));
                std::fs::copy(p, grid.folder.join(name)).map_err(|e| format!("{}: {e}", grid.folder.display()))?;
            }
            out.push(img);
        }
        images.push(out);
    }
    let y = grid.y.as_ref().map(|(k, l)| (k.as_str(), l.as_slice()));
    let sheet = crate::export::sheet::contact_sheet(&images, &grid.x_key, &grid.x_labels, y);
    let path = grid.folder.join("grid.png");
    crate::export::write_png(&path, &sheet, None).map_err(|e| e.to_string())?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::png::ModelFiles;
    use crate::worker::Frame;

    fn run(library: &Path, name: &str, prompt: &str, value: u8) -> PathBuf {
        let dir = library.join(name);
        let settings = RunSettings { prompts: vec![format!("{prompt}:1")], ..RunSettings::shapes_world() };
        let meta =
            PngMeta::new(&settings, 40, ModelFiles { demo: Some("shapes-world".into()), ..ModelFiles::default() });
        let frame = Frame { width: 8, height: 8, rgba: [value, 0, 0, 255].repeat(64) };
        crate::worker::files::save_run(&dir, &frame, &meta, &[]).unwrap();
        dir
    }

    #[test]
    fn the_library_lists_runs_newest_first_with_their_thumbnails() {
        let lib = tempfile::tempdir().unwrap();
        run(lib.path(), "2026-01-01_00-00-00_old", "an old barn", 10);
        let new = run(lib.path(), "2026-12-07_10-00-00_new", "a new barn", 200);
        std::fs::create_dir(lib.path().join("not-a-run")).unwrap();
        std::fs::write(lib.path().join(QUEUE), "{}").unwrap();
        let items = scan(lib.path());
        assert_eq!(
            items.iter().map(LibraryItem::name).collect::<Vec<_>>(),
            ["2026-12-07_10-00-00_new", "2026-01-01_00-00-00_old"]
        );
        assert_eq!(items[0].prompt_line(), "a new barn:1");
        assert_eq!((items[0].iteration, items[0].models.as_str(), items[0].can_continue), (40, "shapes-world", false));
        let thumb = thumbnail(&new).unwrap();
        assert_eq!(thumb.dimensions(), (8, 8));
        assert_eq!(thumb.get_pixel(0, 0).0, [200, 0, 0, 255]);
        assert!(new.join(THUMB).is_file(), "cached");
        assert_eq!(thumbnail(&new).unwrap(), thumb, "the cache gives the same");
        delete(&new).unwrap();
        assert!(!new.exists());
        let msg = delete(&lib.path().join("not-a-run")).unwrap_err();
        assert!(msg.ends_with("is not a clipcanvas run; nothing was deleted"), "{msg}");
        assert!(lib.path().join("not-a-run").is_dir());
    }

    #[test]
    fn the_queue_is_kept_in_the_library_and_a_bad_file_is_one_line() {
        let lib = tempfile::tempdir().unwrap();
        assert_eq!(read_queue(lib.path()).unwrap(), Queue::default());
        let mut q = Queue::default();
        q.push(RunSettings::shapes_world());
        write_queue(lib.path(), &q.to_json().unwrap()).unwrap();
        assert_eq!(read_queue(lib.path()).unwrap(), q);
        std::fs::write(lib.path().join(QUEUE), "{ half").unwrap();
        let msg = read_queue(lib.path()).unwrap_err();
        assert!(msg.contains("queue.json: the saved queue cannot be read"), "{msg}");
    }

    #[test]
    fn a_grid_sheet_is_drawn_from_its_cells_runs() {
        let lib = tempfile::tempdir().unwrap();
        let a = run(lib.path(), "a", "a barn", 50);
        let b = run(lib.path(), "b", "a barn", 150);
        let grid = QueuedGrid {
            id: 1,
            x_key: "seed".into(),
            x_labels: vec!["1".into(), "2".into(), "3".into()],
            y: None,
            folder: lib.path().join("grid"),
            drawn: false,
        };
        let sheet = draw_grid(&grid, &[vec![Some(a), Some(b), None]]).unwrap();
        let img = crate::engine::image::load_rgb(&sheet).unwrap();
        assert!(img.width() > 3 * 8 && img.height() > 8);
        assert!(lib.path().join("grid/grid-x0.png").is_file() && lib.path().join("grid/grid-x1.png").is_file());
        assert!(!lib.path().join("grid/grid-x2.png").exists());
        assert!(
            crate::export::png_settings(&lib.path().join("grid/grid-x1.png")).unwrap().is_some(),
            "cells keep settings"
        );
    }
}
