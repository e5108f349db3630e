//! What `generate` checks before any work beyond each flag's own syntax: that no two
//! outputs name one file (however the names are spelled), and that a resumed run's
//! flags agree with its session. Bad input, so each failure is exit 2 with one line.

use std::path::{Path, PathBuf};

use super::error::CliError;
use crate::settings::RunSettings;

fn input(msg: impl std::fmt::Display) -> CliError {
    CliError::Input(anyhow::anyhow!("{msg}"))
}

/// A path as the filesystem will resolve it, for telling whether two name one file: its
/// longest existing ancestor canonicalised (symbolic links, `..`, the current folder),
/// the parts not created yet appended.
fn resolved(path: &Path) -> PathBuf {
    let mut rest = Vec::new();
    let mut p = path;
    loop {
        let probe = if p.as_os_str().is_empty() { Path::new(".") } else { p };
        if let Ok(real) = probe.canonicalize() {
            return rest.iter().rev().fold(real, |acc, name| acc.join(name));
        }
        match (p.parent(), p.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_owned());
                p = parent;
            }
            _ => return path.to_path_buf(),
        }
    }
}

/// Refuses outputs (each a flag and its path) that name one file (the later write would
/// replace the earlier), an output that would replace the session being resumed
/// (except --session, which is meant to), and an output that is the frames folder or
/// one of its frames.
pub fn check_distinct(outputs: &[(&str, &Path)], resume: Option<&Path>, frames: Option<&Path>) -> Result<(), CliError> {
    let files: Vec<(&str, &Path, PathBuf)> = outputs.iter().map(|&(flag, p)| (flag, p, resolved(p))).collect();
    for (i, (flag, path, real)) in files.iter().enumerate() {
        if let Some((other, _, _)) = files[..i].iter().find(|(_, _, r)| r == real) {
            return Err(input(format!(
                "{other} and {flag} name the same file ({}): give each output its own name",
                path.display()
            )));
        }
        if let Some(resume) = resume.filter(|r| *flag != "--session" && resolved(r) == *real) {
            return Err(input(format!(
                "{flag} names the session being resumed ({}): writing it would replace the session; \
                 give {flag} another name",
                resume.display()
            )));
        }
        if let Some(frames) = frames {
            let frames_dir = resolved(frames);
            let is_frame = real.parent() == Some(frames_dir.as_path())
                && real.file_name().is_some_and(|n| n.to_string_lossy().starts_with("frame_"));
            if *real == frames_dir || is_frame {
                return Err(input(format!(
                    "{flag} {} is the --frames folder or one of its frames: give it another name",
                    path.display()
                )));
            }
        }
    }
    Ok(())
}

/// What a resumed run takes from its flags rather than from its session: how long it
/// runs, where the models are, the device, and how often a frame is kept. Every other
/// flag must agree with the session (see [`check_resume`]).
fn resume_takes_from_flags(saved: &RunSettings, given: &RunSettings) -> RunSettings {
    // The other CLIPs' places, not their number or weights.
    let extra_clips = if saved.extra_clips.len() == given.extra_clips.len() {
        saved
            .extra_clips
            .iter()
            .zip(&given.extra_clips)
            .map(|(s, g)| crate::settings::ExtraClip { path: s.path.clone(), weight: g.weight })
            .collect()
    } else {
        given.extra_clips.clone()
    };
    RunSettings {
        extra_clips,
        iterations: saved.iterations,
        vqgan: saved.vqgan.clone(),
        vqgan_config: saved.vqgan_config.clone(),
        clip: saved.clip.clone(),
        device: saved.device.clone(),
        save_every: saved.save_every,
        ..given.clone()
    }
}

/// Checks the flags of a resumed run against its session, and returns the iteration the
/// run goes to. A resumed run continues exactly: a flag that would change it (a size,
/// prompts, a learning rate) is refused, not ignored — a run would otherwise go ahead
/// making something other than what was asked, which the artist would find out at its
/// end. The same value as the session's is fine (a command line run again with --resume
/// added). `-i` is the total: below the iteration the session reached it is refused;
/// equal, the session's image is written again. `iterations` is the -i flag.
pub fn check_resume(
    iterations: Option<usize>,
    saved: &RunSettings,
    reached: usize,
    merged: &RunSettings,
) -> Result<usize, CliError> {
    let given = resume_takes_from_flags(saved, merged);
    let conflict = |flag: &str, what: &str, value: String| {
        input(format!(
            "{flag} does not apply to a resumed run, which continues with its session's {what} ({value}); \
             leave {flag} out, or start a new run"
        ))
    };
    macro_rules! same {
        ($flag:literal, $what:literal, $field:ident) => {
            if given.$field != saved.$field {
                return Err(conflict($flag, $what, format!("{:?}", saved.$field)));
            }
        };
    }
    if (given.width, given.height) != (saved.width, saved.height) {
        return Err(conflict("--size", "size", format!("{}x{}", saved.width, saved.height)));
    }
    if (&given.prompts, &given.story) != (&saved.prompts, &saved.story) {
        let stages: Vec<String> = saved.prompt_stages().iter().map(|s| s.join(" | ")).collect();
        return Err(conflict("--prompt", "prompts", format!("{:?}", stages.join(" ^ "))));
    }
    same!("--image-prompt", "image prompts", image_prompts);
    same!("--noise-prompt", "noise prompts", noise_prompts);
    same!("--init-image", "init image", init_image);
    same!("--init-noise", "init noise", init_noise);
    same!("--init-weight", "init weight", init_weight);
    same!("--init-weight-mode", "init weight mode", init_weight_mode);
    same!("--tv-weight", "smoothness weight", tv_weight);
    same!("--coarse", "coarse schedule", coarse);
    same!("--lr", "learning rate", lr);
    same!("--lr-step", "learning-rate schedule", lr_step);
    same!("--optimizer", "optimiser", optimizer);
    same!("--cutn", "cutouts", cutn);
    same!("--cut-pow", "cut power", cut_pow);
    same!("--cut-method", "cut method", cut_method);
    same!("--augment", "augmentations", augments);
    same!("--noise-fac", "noise factor", noise_fac);
    same!("--seed", "seed", seed);
    same!("--story-every", "story stage length", story_every);
    same!("--one-step", "one-step settings", one_step);
    // A field added to RunSettings and not to the list above is still caught here.
    if given != *saved {
        return Err(input(
            "a flag does not apply to a resumed run, which continues with its session's settings; \
                          leave it out, or start a new run",
        ));
    }
    match iterations {
        Some(i) if i < reached => Err(input(format!(
            "the session is at iteration {reached} already and -i is the total, not more: give -i {reached} or more \
             ({reached} writes its image again)"
        ))),
        Some(i) => Ok(i),
        None => Ok(merged.iterations.max(reached)),
    }
}
