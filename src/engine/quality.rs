//! Quality presets (pixray's `--quality`): draft, normal and better choose how many
//! CLIPs score (from those installed, in the order given: the smallest first) and how
//! many cutouts a step makes. When the memory clipcanvas estimates the run needs is more
//! than there is, the preset gives way, in this order: fewer cutouts (down to a quarter
//! of its own, at least 8), then one CLIP fewer, then a smaller canvas. What it chose,
//! and why, comes back as notes for the user.

use std::path::{Path, PathBuf};

use super::error::Result;
use super::memory::{self, Nets};
use crate::settings::{ExtraClip, Quality, RunSettings};

fn name(path: &Path) -> String {
    path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned())
}

/// `settings` with the preset applied. `installed` are the CLIPs it may add beside the
/// run's own (none: the run keeps its CLIPs, as when the user named them); they are
/// added only to a run of named models (the shapes world has its one CLIP). `limit` is
/// the memory there is, in bytes (`None`: not known, nothing is fitted).
pub fn apply(
    quality: Quality,
    mut s: RunSettings,
    installed: &[PathBuf],
    limit: Option<u64>,
) -> Result<(RunSettings, Vec<String>)> {
    let mut notes = Vec::new();
    s.cutn = quality.cutn();
    if let Some(first) = s.clip.clone() {
        if s.extra_clips.is_empty() && !installed.is_empty() {
            let others = installed.iter().filter(|p| **p != first).take(quality.clips() - 1);
            s.extra_clips = others.map(|path| ExtraClip { path: path.clone(), weight: 1.0 }).collect();
        }
    }
    let clips: Vec<String> = s.clip.iter().chain(s.extra_clips.iter().map(|c| &c.path)).map(|p| name(p)).collect();
    let scored = if clips.is_empty() { "the shapes world's CLIP".to_owned() } else { clips.join(", ") };
    notes.push(format!("quality {}: {} cutouts a step, scored by {scored}", quality.name(), s.cutn));
    let Some(limit) = limit else { return Ok((s, notes)) };
    let floor = (quality.cutn() / 4).max(8).min(s.cutn);
    loop {
        let nets = Nets::of_settings(&s)?;
        if memory::estimate(&nets, &s).bytes(false) <= limit {
            break;
        }
        let available = memory::human(limit);
        if let Some(n) = memory::largest_cutn(&nets, &s, limit, false).filter(|n| *n >= floor) {
            notes.push(format!("{n} cutouts instead of {} fit in the {available} available", s.cutn));
            s.cutn = n;
            break;
        }
        if let Some(dropped) = s.extra_clips.pop() {
            notes.push(format!(
                "{} left out: all the CLIPs do not fit in the {available} available",
                name(&dropped.path)
            ));
            continue;
        }
        s.cutn = floor;
        if let Some((w, h)) = memory::largest_size(&nets, &s, limit, false) {
            notes.push(format!(
                "{w}x{h} instead of {}x{}, with {floor} cutouts, fits in the {available} available",
                s.width, s.height
            ));
            (s.width, s.height) = (w, h);
        }
        // Nothing smaller fits: the memory check says what the run needs.
        break;
    }
    Ok((s, notes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(rel: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(rel)
    }

    fn run() -> RunSettings {
        RunSettings {
            vqgan: Some(fixture("vqgan-tiny/model.ckpt")),
            clip: Some(fixture("clip-tiny")),
            width: 64,
            height: 64,
            ..RunSettings::default()
        }
    }

    fn need(s: &RunSettings) -> u64 {
        memory::estimate(&Nets::of_settings(s).expect("nets"), s).bytes(false)
    }

    #[test]
    fn presets_choose_cutouts_and_installed_clips() {
        let installed = [fixture("clip-tiny"), fixture("clip-tiny-48")];
        let (draft, _) = apply(Quality::Draft, run(), &installed, None).expect("draft");
        assert_eq!((draft.cutn, draft.extra_clips.len()), (16, 0));
        let (better, notes) = apply(Quality::Better, run(), &installed, None).expect("better");
        assert_eq!(better.cutn, 64);
        // The run's own CLIP is not added twice; only two are installed.
        assert_eq!(better.extra_clips, [ExtraClip { path: fixture("clip-tiny-48"), weight: 1.0 }]);
        assert_eq!(notes, ["quality better: 64 cutouts a step, scored by clip-tiny, clip-tiny-48"]);
        // CLIPs the user named stay; the shapes world keeps its one.
        let (kept, _) = apply(Quality::Better, run(), &[], None).expect("kept");
        assert!(kept.extra_clips.is_empty());
        let (world, notes) = apply(Quality::Normal, RunSettings::shapes_world(), &installed, None).expect("world");
        assert!(world.extra_clips.is_empty() && world.clip.is_none());
        assert!(notes[0].ends_with("scored by the shapes world's CLIP"), "{notes:?}");
    }

    #[test]
    fn short_memory_takes_cutouts_then_clips_then_size() {
        let installed = [fixture("clip-tiny"), fixture("clip-tiny-48")];
        let (full, _) = apply(Quality::Better, run(), &installed, None).expect("better");
        // Just short of the whole preset: fewer cutouts, both CLIPs.
        let (s, notes) = apply(Quality::Better, run(), &installed, Some(need(&full) - 1)).expect("fit");
        assert!(s.cutn < 64 && s.cutn >= 16 && s.extra_clips.len() == 1, "{} {:?}", s.cutn, notes);
        assert!(need(&s) < need(&full));
        // Less than a quarter of the cutouts with both CLIPs: one CLIP, with as many
        // cutouts as then fit.
        let both_floor = RunSettings { cutn: 16, ..full.clone() };
        let (s, notes) = apply(Quality::Better, run(), &installed, Some(need(&both_floor) - 1)).expect("fit");
        assert!(s.extra_clips.is_empty() && (16..64).contains(&s.cutn), "{} {notes:?}", s.cutn);
        assert!(notes.iter().any(|n| n.starts_with("clip-tiny-48 left out")), "{notes:?}");
        let one = RunSettings { extra_clips: Vec::new(), ..full.clone() };
        // Less than the smallest cutout count at this size with one CLIP: a smaller canvas.
        let least = RunSettings { cutn: 16, ..one };
        let (s, notes) = apply(Quality::Better, run(), &installed, Some(need(&least) - 1)).expect("fit");
        assert!(s.width < 64 && s.cutn == 16, "{}x{} {notes:?}", s.width, s.height);
        assert!(need(&s) < need(&least));
    }
}
