//! The networks a run uses, loaded from the files its settings name: which files they
//! are (the given ones, or the built-in shapes world; a CLIP alone for the generators
//! that need no VQGAN), the loading itself (with the one-step model when the run starts
//! from a draft, refused when it was trained for other files), and their names and
//! hashes for a PNG's metadata.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};

use super::error::{EngineError, Result};
use crate::models::clip::Clip;
use crate::models::onestep::OneStep;
use crate::models::tokenizer::ClipTokenizer;
use crate::models::vqgan::Vqgan;
use crate::settings::png::{FileId, ModelFiles};
use crate::settings::{Precision, RunSettings};

/// The loaded networks a session runs on.
#[derive(Debug)]
pub struct Models {
    /// The VQGAN, unless the run draws with another generator and named none.
    pub vqgan: Option<Vqgan>,
    pub clip: Clip,
    pub tokenizer: ClipTokenizer,
    /// More CLIPs scoring beside `clip`, in the settings' order (`extra_clips`).
    pub extra_clips: Vec<(Clip, ClipTokenizer)>,
    pub device: Device,
    /// Where the models were loaded from, when they came from files.
    pub source: Option<ModelSource>,
    /// The one-step model, when the settings ask for drafts.
    pub onestep: Option<OneStep>,
}

/// The files a run's models come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSource {
    /// None: a CLIP alone, for a generator that needs no VQGAN.
    pub vqgan: Option<PathBuf>,
    pub vqgan_config: Option<PathBuf>,
    pub clip: PathBuf,
    /// More CLIPs, in the settings' order.
    pub extra_clips: Vec<PathBuf>,
    /// The built-in shapes world, used because no models were given.
    pub demo: bool,
    /// The one-step model that comes with these models (the shapes world's), if any.
    pub onestep: Option<PathBuf>,
}

/// What a cache of loaded models is keyed by (the studio's worker, `batch`): the model
/// files a run's settings name, the device and the number format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelKey {
    vqgan: Option<PathBuf>,
    vqgan_config: Option<PathBuf>,
    clip: Option<PathBuf>,
    extra_clips: Vec<PathBuf>,
    device: String,
    precision: Precision,
    /// The one-step model loaded with them (`Some(None)`: the built-in world's), if any.
    onestep: Option<Option<PathBuf>>,
}

impl ModelKey {
    /// Whether models loaded for `self` serve a run that needs `wanted`: the same files
    /// and device, and the one-step model it asks for (models loaded with one serve runs
    /// without).
    pub fn serves(&self, wanted: &Self) -> bool {
        (&self.vqgan, &self.vqgan_config, &self.clip, &self.extra_clips, &self.device, self.precision)
            == (
                &wanted.vqgan,
                &wanted.vqgan_config,
                &wanted.clip,
                &wanted.extra_clips,
                &wanted.device,
                wanted.precision,
            )
            && (wanted.onestep.is_none() || self.onestep == wanted.onestep)
    }

    pub fn of(settings: &RunSettings) -> Self {
        let mut device = settings.device.trim().to_ascii_lowercase();
        if device == "cuda" || device == "metal" {
            device.push_str(":0");
        }
        Self {
            vqgan: settings.vqgan.clone(),
            vqgan_config: settings.vqgan_config.clone(),
            clip: settings.clip.clone(),
            extra_clips: settings.extra_clips.iter().map(|c| c.path.clone()).collect(),
            device,
            precision: settings.precision,
            onestep: settings.one_step.as_ref().map(|o| o.model.clone()),
        }
    }
}

/// Which models `settings` ask for: the given files, or with none given the built-in
/// shapes world.
pub fn resolve_models(settings: &RunSettings) -> Result<ModelSource> {
    let extra_clips: Vec<PathBuf> = settings.extra_clips.iter().map(|c| c.path.clone()).collect();
    match (&settings.vqgan, &settings.clip) {
        (Some(vqgan), Some(clip)) => Ok(ModelSource {
            vqgan: Some(vqgan.clone()),
            vqgan_config: settings.vqgan_config.clone(),
            clip: clip.clone(),
            extra_clips,
            demo: false,
            onestep: None,
        }),
        (None, None) if !extra_clips.is_empty() => Err(EngineError::Input(
            "several CLIPs score only models named by path or name (--clip A,B); the built-in shapes world has \
             one"
            .into(),
        )),
        (None, None) => {
            let world = crate::catalog::bundled::shapes_world().ok_or_else(|| {
                EngineError::Input(
                    "no models given and the built-in shapes world (models/shapes-world) was not found; \
                     give --clip DIR and --vqgan FILE (see README)"
                        .into(),
                )
            })?;
            Ok(ModelSource {
                vqgan: Some(world.vqgan),
                vqgan_config: None,
                clip: world.clip,
                extra_clips,
                demo: true,
                onestep: world.onestep,
            })
        }
        // The pixel and Fourier generators draw without a VQGAN.
        (None, Some(clip)) if !settings.generator.is_vqgan() => Ok(ModelSource {
            vqgan: None,
            vqgan_config: None,
            clip: clip.clone(),
            extra_clips,
            demo: false,
            onestep: None,
        }),
        (None, Some(_)) => Err(EngineError::Input(
            "no VQGAN given (--vqgan FILE); give both models, neither for the built-in shapes world, or a CLIP \
             alone with --generator pixel or fft"
                .into(),
        )),
        (Some(_), None) => Err(EngineError::Input(
            "no CLIP given (--clip DIR); give both models, or neither for the built-in shapes world".into(),
        )),
    }
}

/// Loads the models `settings` ask for (see [`resolve_models`]).
pub fn load_models(settings: &RunSettings, device: &Device) -> Result<Models> {
    let source = resolve_models(settings)?;
    super::device::check_precision(device, settings.precision)?;
    let dtype = super::device::weights_dtype(settings.precision);
    let vqgan = match &source.vqgan {
        Some(path) => Some(crate::models::vqgan::load(path, source.vqgan_config.as_deref(), dtype, device)?),
        None => None,
    };
    let (clip, tokenizer) = crate::models::clip::load(&source.clip, dtype, device)?;
    let extra_clips = source
        .extra_clips
        .iter()
        .map(|path| Ok(crate::models::clip::load(path, dtype, device)?))
        .collect::<Result<_>>()?;
    // The one-step generator is small and samples codes: it stays in f32.
    let onestep = match onestep_dir(settings, &source)? {
        Some(dir) => {
            let model = crate::models::onestep::load(&dir, DType::F32, device)?;
            check_trained_with(&model, &dir, &source)?;
            Some(model)
        }
        None => None,
    };
    Ok(Models { vqgan, clip, tokenizer, extra_clips, device: device.clone(), source: Some(source), onestep })
}

/// The one-step model's folder when `settings` ask for drafts: the one they name, or
/// the one that comes with the models (the shapes world's).
pub fn onestep_dir(settings: &RunSettings, source: &ModelSource) -> Result<Option<PathBuf>> {
    let Some(one) = &settings.one_step else { return Ok(None) };
    match (&one.model, &source.onestep) {
        (Some(dir), _) | (None, Some(dir)) => Ok(Some(dir.clone())),
        (None, None) => Err(EngineError::Input(
            "no one-step model: give one (--onestep DIR), or train one for these models with \
             `clipcanvas train-onestep`"
                .into(),
        )),
    }
}

/// The model files of a run (names and SHA-256), for its PNGs' metadata.
pub fn model_files(source: &ModelSource, settings: &RunSettings) -> Result<ModelFiles> {
    let id = |name: &Path, weights: &Path| -> Result<FileId> {
        Ok(FileId {
            name: name.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
            sha256: crate::files::file_sha256(weights).map_err(|e| EngineError::Input(e.to_string()))?,
        })
    };
    let clip_weights = crate::models::clip::ClipFiles::locate(&source.clip)?.weights;
    let onestep = match settings.one_step.as_ref().and_then(|one| one.model.as_ref().or(source.onestep.as_ref())) {
        Some(dir) => Some(id(dir, &dir.join("model.safetensors"))?),
        None => None,
    };
    let extra_clips = source
        .extra_clips
        .iter()
        .map(|dir| id(dir, &crate::models::clip::ClipFiles::locate(dir)?.weights))
        .collect::<Result<_>>()?;
    Ok(ModelFiles {
        clip: Some(id(&source.clip, &clip_weights)?),
        extra_clips,
        demo: source.demo.then(|| crate::catalog::bundled::SHAPES_WORLD.to_owned()),
        onestep,
        vqgan: match &source.vqgan {
            Some(path) => Some(id(path, path)?),
            None => None,
        },
    })
}

/// Refuses a one-step model trained for other CLIP or VQGAN files than `source`'s
/// (their SHA-256 are in its config); a model with none recorded is taken on trust.
fn check_trained_with(model: &OneStep, dir: &Path, source: &ModelSource) -> Result<()> {
    let with = &model.config().trained_with;
    let clip_weights = crate::models::clip::ClipFiles::locate(&source.clip)?.weights;
    let vqgan = source.vqgan.clone().unwrap_or_default();
    for (want, file, what) in [(&with.clip_sha256, &clip_weights, "CLIP"), (&with.vqgan_sha256, &vqgan, "VQGAN")] {
        if want.is_empty() {
            continue;
        }
        let have = crate::files::file_sha256(file).map_err(|e| EngineError::Input(e.to_string()))?;
        if &have != want {
            return Err(EngineError::Input(format!(
                "the one-step model {} was trained for another {what} than {}; train one for it with \
                 `clipcanvas train-onestep`",
                dir.display(),
                file.display()
            )));
        }
    }
    Ok(())
}

impl Models {
    /// The VQGAN, or why there is none: the run drew without one and named none.
    pub fn vqgan(&self) -> Result<&Vqgan> {
        self.vqgan.as_ref().ok_or_else(|| {
            EngineError::Input(
                "no VQGAN is loaded (these models are a CLIP alone): the vqgan generator and one-step drafts need \
                 one (--vqgan FILE)"
                    .into(),
            )
        })
    }
}
