//! The one-step generator's training data, made once and kept with the checkpoint:
//! each image's VQGAN code grid (the target), the unit CLIP image embeddings of a few
//! augmented views of it (the condition), and — in the shapes world, where captions
//! come free — the unit CLIP text embeddings of a few of its captions.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use image::RgbImage;
use serde::{Deserialize, Serialize};

use super::{Progress, Result, TrainError};
use crate::demo::scene::Scene;
use crate::engine::image::{clip_resize_crop, load_rgb, rgb_to_tensor};
use crate::engine::rng::Rng;
use crate::models::clip::Clip;
use crate::models::ops::composed::l2_normalize;
use crate::models::tokenizer::ClipTokenizer;
use crate::models::vqgan::Vqgan;

/// Where the images come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// Every image file in a folder (not its subfolders), in name order.
    Folder(PathBuf),
    /// This many scenes of the built-in shapes world, with captions.
    ShapesWorld { scenes: usize },
}

/// How the data is made; a dataset is reused only when all of it matches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataSpec {
    pub source: Source,
    pub seed: u64,
    /// Side of the square images the VQGAN encodes.
    pub side: usize,
    /// Augmented views per image whose CLIP embeddings are conditions.
    pub views: usize,
    /// Captions per image (shapes world only).
    pub captions: usize,
    /// Mirror views left-right (not in the shapes world, whose places have sides).
    pub flip: bool,
    pub clip_sha256: String,
    pub vqgan_sha256: String,
}

/// The made data, on the host.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub n: usize,
    /// Codes per image.
    pub cells: usize,
    pub views: usize,
    pub captions: usize,
    /// CLIP embedding width.
    pub dim: usize,
    /// `[n, cells]`
    pub tokens: Vec<u32>,
    /// `[n, views, dim]`, unit rows.
    pub view_emb: Vec<f32>,
    /// `[n, captions, dim]`, unit rows.
    pub caption_emb: Vec<f32>,
}

impl Dataset {
    pub fn tokens_of(&self, i: usize) -> &[u32] {
        &self.tokens[i * self.cells..(i + 1) * self.cells]
    }

    pub fn view(&self, i: usize, v: usize) -> &[f32] {
        let at = (i * self.views + v) * self.dim;
        &self.view_emb[at..at + self.dim]
    }

    pub fn caption(&self, i: usize, c: usize) -> &[f32] {
        let at = (i * self.captions + c) * self.dim;
        &self.caption_emb[at..at + self.dim]
    }

    /// As tensors, for [`super::save_with_state`].
    pub fn tensors(&self) -> Result<std::collections::BTreeMap<String, Tensor>> {
        let dev = Device::Cpu;
        let mut t = std::collections::BTreeMap::new();
        t.insert("tokens".to_owned(), Tensor::from_slice(&self.tokens, (self.n, self.cells), &dev)?);
        t.insert("views".to_owned(), Tensor::from_slice(&self.view_emb, (self.n, self.views, self.dim), &dev)?);
        if self.captions > 0 {
            t.insert(
                "captions".to_owned(),
                Tensor::from_slice(&self.caption_emb, (self.n, self.captions, self.dim), &dev)?,
            );
        }
        Ok(t)
    }

    /// From the tensors [`Self::tensors`] made.
    pub fn from_tensors(t: &std::collections::HashMap<String, Tensor>) -> Result<Self> {
        let get = |k: &str| t.get(k).ok_or_else(|| TrainError::Input(format!("the dataset file has no '{k}'")));
        let tokens = get("tokens")?;
        let views = get("views")?;
        let (n, cells) = tokens.dims2()?;
        let (_, v, dim) = views.dims3()?;
        let (captions, caption_emb) = match t.get("captions") {
            Some(c) => (c.dim(1)?, c.flatten_all()?.to_vec1()?),
            None => (0, Vec::new()),
        };
        Ok(Self {
            n,
            cells,
            views: v,
            captions,
            dim,
            tokens: tokens.flatten_all()?.to_vec1()?,
            view_emb: views.flatten_all()?.to_vec1()?,
            caption_emb,
        })
    }
}

/// The image files of a folder, in name order.
pub fn image_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|e| TrainError::io(dir, e))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(std::result::Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.is_file()
                && p.extension().and_then(|e| e.to_str()).is_some_and(|e| {
                    ["png", "jpg", "jpeg", "webp", "bmp", "gif", "tif", "tiff"]
                        .contains(&e.to_ascii_lowercase().as_str())
                })
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(TrainError::Input(format!(
            "{}: no images (png, jpg, webp, bmp, gif or tiff) in this folder",
            dir.display()
        )));
    }
    Ok(files)
}

/// The square centre of `img`, resized to `side`.
fn square(img: &RgbImage, side: u32) -> RgbImage {
    clip_resize_crop(img, side)
}

/// A random square crop of 70–100 % of the short side, maybe mirrored, resized to `side`.
fn random_view(img: &RgbImage, side: u32, flip: bool, rng: &mut Rng) -> RgbImage {
    let (w, h) = img.dimensions();
    let short = f64::from(w.min(h));
    #[expect(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "within the image")]
    let s = ((short * rng.range(0.7, 1.0)).round() as u32).clamp(1, w.min(h));
    #[expect(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "within the image")]
    let (x, y) = ((rng.uniform() * f64::from(w - s)).round() as u32, (rng.uniform() * f64::from(h - s)).round() as u32);
    let mut crop = image::imageops::crop_imm(img, x, y, s, s).to_image();
    if flip && rng.chance(0.5) {
        crop = image::imageops::flip_horizontal(&crop);
    }
    clip_resize_crop(&crop, side)
}

fn stack(images: &[RgbImage], device: &Device) -> Result<Tensor> {
    let t: Vec<Tensor> = images.iter().map(|i| rgb_to_tensor(i, device)).collect::<std::result::Result<_, _>>()?;
    Ok(Tensor::cat(&t, 0)?)
}

/// The models the data is made with.
pub struct Encoders<'a> {
    pub clip: &'a Clip,
    pub tokenizer: &'a ClipTokenizer,
    pub vqgan: &'a Vqgan,
    pub device: &'a Device,
}

impl Encoders<'_> {
    fn codes(&self, images: &[RgbImage]) -> Result<Vec<u32>> {
        let x = ((stack(images, self.device)? * 2.0)? - 1.0)?;
        Ok(self.vqgan.encode_indices(&x)?.flatten_all()?.to_vec1()?)
    }

    fn image_embeddings(&self, views: &[RgbImage]) -> Result<Vec<f32>> {
        let x = Clip::normalize(&stack(views, self.device)?)?;
        Ok(l2_normalize(&self.clip.encode_image(&x)?)?.flatten_all()?.to_vec1()?)
    }

    fn text_embeddings(&self, texts: &[String]) -> Result<Vec<f32>> {
        let ctx = self.tokenizer.context_length();
        let mut ids = Vec::with_capacity(texts.len() * ctx);
        for t in texts {
            ids.extend(self.tokenizer.encode(t).map_err(crate::engine::EngineError::from)?.0);
        }
        let ids = Tensor::from_vec(ids, (texts.len(), ctx), self.device)?;
        Ok(l2_normalize(&self.clip.encode_text(&ids)?)?.flatten_all()?.to_vec1()?)
    }
}

/// Images per batch through the encoders.
const CHUNK: usize = 16;

/// Makes the dataset `spec` describes; `files` are the folder's images (empty for the
/// shapes world).
pub fn build(spec: &DataSpec, files: &[PathBuf], enc: &Encoders, progress: &mut dyn Progress) -> Result<Dataset> {
    let side = u32::try_from(spec.side).map_err(|_| TrainError::Input("image side out of range".into()))?;
    let clip_side = u32::try_from(enc.clip.image_size()).unwrap_or(224);
    let n = match &spec.source {
        Source::Folder(_) => files.len(),
        Source::ShapesWorld { scenes } => *scenes,
    };
    if n == 0 {
        return Err(TrainError::Input("no training images".into()));
    }
    let mut rng = Rng::new(spec.seed ^ 0x0DA7_A5E7);
    let mut data = Dataset {
        n,
        cells: 0,
        views: spec.views,
        captions: 0,
        dim: enc.clip.config().projection_dim,
        tokens: Vec::new(),
        view_emb: Vec::new(),
        caption_emb: Vec::new(),
    };
    progress.stage("dataset", n.div_ceil(CHUNK), 0);
    for (chunk_no, start) in (0..n).step_by(CHUNK).enumerate() {
        if progress.cancelled() {
            return Err(TrainError::Cancelled);
        }
        let end = (start + CHUNK).min(n);
        let mut images = Vec::with_capacity(end - start);
        let mut captions = Vec::new();
        for i in start..end {
            match &spec.source {
                Source::Folder(_) => {
                    let path = files.get(i).ok_or_else(|| TrainError::Input("fewer images than expected".into()))?;
                    images.push(load_rgb(path)?);
                }
                Source::ShapesWorld { .. } => {
                    let scene = Scene::random(&mut rng, 0.15);
                    images.push(scene.render(spec.side, &mut rng));
                    for _ in 0..spec.captions {
                        captions.push(scene.caption(&mut rng));
                    }
                }
            }
        }
        let squares: Vec<RgbImage> = images.iter().map(|i| square(i, side)).collect();
        let codes = enc.codes(&squares)?;
        data.cells = codes.len() / squares.len();
        data.tokens.extend(codes);
        let mut views = Vec::with_capacity(images.len() * spec.views);
        for img in &images {
            for v in 0..spec.views {
                views.push(if v == 0 {
                    clip_resize_crop(img, clip_side)
                } else {
                    random_view(img, clip_side, spec.flip, &mut rng)
                });
            }
        }
        data.view_emb.extend(enc.image_embeddings(&views)?);
        if !captions.is_empty() {
            data.captions = spec.captions;
            data.caption_emb.extend(enc.text_embeddings(&captions)?);
        }
        progress.step(chunk_no, 0.0, &format!("{end}/{n} images"));
    }
    Ok(data)
}
