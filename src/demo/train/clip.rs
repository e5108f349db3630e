//! The shapes CLIP's training: contrastive loss with hard-negative captions, the
//! training-only probe heads and per-patch foreground loss, and optionally hardening
//! against `generate` itself (see `demo::harden`).

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var, D};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder, VarMap};

use super::super::data::{scene_batch_covered, CLIP_SIDE};
use super::super::error::{DemoError, Result};
use super::super::harden::{self, Pool};
use super::super::scene::{CaptionStyle, Position, Scene, Shape, Size, COLOURS};
use crate::engine::rng::Rng;
use crate::models::clip::{Clip, ClipConfig};
use crate::models::ops::composed::l2_normalize;
use crate::models::tokenizer::ClipTokenizer;
use crate::models::weights::{ShapeRecorder, WeightFile};
use crate::settings::RunSettings;

use super::common::{
    clip_config_json, collect, cosine_lr, fan_in, init_vars, variable, InitKind, TrainObserver, TrainOptions,
};

fn clip_init(name: &str, shape: &[usize], layers: usize) -> InitKind {
    let is_norm = name.contains("norm") || name.contains("layrnorm");
    if name == "logit_scale" {
        InitKind::Const((1.0f64 / 0.07).ln())
    } else if shape.len() == 1 && name.ends_with(".bias") {
        InitKind::Zeros
    } else if is_norm && name.ends_with(".weight") {
        InitKind::Ones
    } else if name.ends_with("class_embedding") {
        InitKind::Normal(1.0 / (shape[0] as f64).sqrt())
    } else if name.ends_with("position_embedding.weight") && name.starts_with("vision") {
        // OpenAI's scale, width^-1/2: places must be as loud as the patches to be seen.
        InitKind::Normal(1.0 / (shape[1] as f64).sqrt())
    } else if name.ends_with("position_embedding.weight") {
        InitKind::Normal(0.01)
    } else if name.ends_with("token_embedding.weight") {
        InitKind::Normal(0.02)
    } else if name.ends_with("out_proj.weight") || name.ends_with("fc2.weight") {
        InitKind::Normal(1.0 / fan_in(shape).sqrt() / (2.0 * layers as f64).sqrt())
    } else {
        InitKind::Normal(1.0 / fan_in(shape).sqrt())
    }
}

/// A scene differing from `s` in one attribute the caption names: the hard negatives.
fn perturb(s: &Scene, style: &CaptionStyle, which: usize, rng: &mut Rng) -> Scene {
    let mut t = *s;
    let other_colour = |rng: &mut Rng, not: [usize; 2]| loop {
        let c = rng.below(COLOURS.len());
        if !not.contains(&c) {
            return c;
        }
    };
    match which {
        0 => t.colour = other_colour(rng, [s.colour, s.background]),
        1 => loop {
            let sh = Shape::ALL[rng.below(Shape::ALL.len())];
            if sh != s.shape {
                t.shape = sh;
                break;
            }
        },
        2 if style.background && (rng.chance(0.5) || !(style.position && s.count == 1)) => {
            // The colours swapped: which colour is the shape's, which the background's.
            t.colour = s.background;
            t.background = s.colour;
        }
        2 if style.position && s.count == 1 => loop {
            let p = Position::ALL[rng.below(Position::ALL.len())];
            if p != s.position {
                t.position = p;
                break;
            }
        },
        _ if style.background => t.background = other_colour(rng, [s.colour, s.background]),
        _ if style.size => {
            t.size = if s.size == Size::Big { Size::Small } else { Size::Big };
        }
        _ => t.colour = other_colour(rng, [s.colour, s.background]),
    }
    t
}

fn tokenize(tok: &ClipTokenizer, captions: &[String], device: &Device) -> Result<Tensor> {
    let mut ids = Vec::with_capacity(captions.len() * tok.context_length());
    for c in captions {
        ids.extend(tok.encode(c)?.0);
    }
    Ok(Tensor::from_vec(ids, (captions.len(), tok.context_length()), device)?)
}

/// Negatives per image in the contrastive loss, beyond the rest of the batch.
const HARD_NEGATIVES: usize = 3;

/// The attributes the training-only probe heads read from the embeddings, and how many
/// values each has: colour, background, shape, position, size, count.
const PROBES: [usize; 6] = [COLOURS.len(), COLOURS.len(), Shape::ALL.len(), Position::ALL.len(), Size::ALL.len(), 2];

/// Weight of the per-patch foreground loss.
const DENSE_WEIGHT: f64 = 1.0;

/// Each probe's weight: the spatial attributes (shape, position, count) are the hard
/// ones a ViT learns late.
const PROBE_EMPHASIS: [f64; 6] = [1.0, 1.0, 3.0, 3.0, 1.0, 1.0];

/// Weight of the probe loss against the contrastive loss.
const PROBE_WEIGHT: f64 = 1.0;

/// Fixed temperature of the probe heads: they read unit embeddings.
const PROBE_SCALE: f64 = 10.0;

/// One scene's attribute values in [`PROBES`]' order, and which of them a caption names
/// (an image shows all of them, except a pair's position).
fn probe_targets(s: &Scene, style: Option<&CaptionStyle>) -> ([u32; 6], [f32; 6]) {
    let position = Position::ALL.iter().position(|&p| p == s.position).unwrap_or(0);
    let shape = Shape::ALL.iter().position(|&x| x == s.shape).unwrap_or(0);
    let size = usize::from(s.size == Size::Big);
    let values = [s.colour, s.background, shape, position, size, s.count - 1].map(|v| v as u32);
    let single = s.count == 1;
    let named = match style {
        None => [true, true, true, single, true, true],
        Some(st) => [true, st.background, true, single && st.position, st.size, true],
    };
    (values, named.map(|n| if n { 1.0 } else { 0.0 }))
}

/// The probe heads' loss: for each attribute, a linear read-out of the unit embeddings
/// `emb` `[N, P]` through `heads` `[P, ΣPROBES]`, scored by cross-entropy on the rows
/// that show that attribute. The heads are shared by the two towers, so both must put an
/// attribute along the same directions; they steer training and are not saved.
fn probe_loss(emb: &Tensor, heads: &Tensor, targets: &[([u32; 6], [f32; 6])]) -> Result<(Tensor, [f64; 6])> {
    let device = emb.device();
    let logits = (emb.matmul(heads)? * PROBE_SCALE)?;
    let mut total: Option<Tensor> = None;
    let mut accuracy = [f64::NAN; 6];
    let mut start = 0;
    for (a, &k) in PROBES.iter().enumerate() {
        let values: Vec<u32> = targets.iter().map(|t| t.0[a]).collect();
        let mask: Vec<f32> = targets.iter().map(|t| t.1[a]).collect();
        let shown: f32 = mask.iter().sum();
        let group = logits.narrow(1, start, k)?;
        start += k;
        if shown == 0.0 {
            continue;
        }
        let best = group.argmax(D::Minus1)?.to_vec1::<u32>()?;
        let hits: f32 = best.iter().zip(&values).zip(&mask).map(|((b, v), m)| if b == v { *m } else { 0.0 }).sum();
        accuracy[a] = f64::from(hits / shown);
        let logp = candle_nn::ops::log_softmax(&group, D::Minus1)?;
        let idx = Tensor::from_vec(values, (targets.len(), 1), device)?;
        let picked = logp.gather(&idx, 1)?.squeeze(1)?;
        let mask = Tensor::from_vec(mask, targets.len(), device)?;
        let term = ((picked * mask)?.sum_all()? * (-PROBE_EMPHASIS[a] / f64::from(shown)))?;
        total = Some(match total {
            Some(t) => (t + term)?,
            None => term,
        });
    }
    let loss = match total {
        Some(t) => (t / PROBES.len() as f64)?,
        None => Tensor::zeros((), DType::F32, device)?,
    };
    Ok((loss, accuracy))
}

/// A `[fan_in, outputs]` read-out that only training uses, drawn like a linear layer's
/// weight (standard deviation fan_in^-1/2).
fn read_out(rng: &mut Rng, fan_in: usize, outputs: usize, device: &Device) -> Result<Var> {
    let w: Vec<f32> = rng.normals_f32(fan_in * outputs).into_iter().map(|x| x / (fan_in as f32).sqrt()).collect();
    Ok(Var::from_tensor(&Tensor::from_vec(w, (fan_in, outputs), device)?)?)
}

/// Weight of the hardening loss against the rest of the CLIP's.
const HARDEN_WEIGHT: f64 = 0.5;

/// The hardening loss's temperature and the cosine margin by which a `generate` run's
/// image must fall below its real scene to stop costing (see [`harden::chase_loss`]).
const HARDEN_SCALE: f64 = 20.0;

const HARDEN_MARGIN: f64 = 0.1;

/// The weights of the CLIP folder `dir`, to start training from: every tensor the
/// shapes CLIP has, in its shape (checked before any training starts).
pub(super) fn read_clip_weights(dir: &Path) -> Result<HashMap<String, Tensor>> {
    let path = dir.join("model.safetensors");
    let from = |msg: String| DemoError::Train(format!("--clip-from {}: {msg}", path.display()));
    let file = WeightFile::open_safetensors(&path).map_err(|e| from(e.to_string()))?;
    let config = ClipConfig::from_json(&clip_config_json().to_string()).map_err(DemoError::Train)?;
    let recorder = ShapeRecorder::default();
    Clip::new(recorder.var_builder(&Device::Cpu), &config)?;
    let mut weights = HashMap::new();
    for (name, shape) in recorder.requested() {
        match file.shape(&name) {
            Some(s) if s == shape => {
                let t = file.tensor(&name, &shape, DType::F32, &Device::Cpu).map_err(|e| from(e.to_string()))?;
                weights.insert(name, t);
            }
            Some(s) => return Err(from(format!("'{name}' is {s:?}, the shapes CLIP's is {shape:?}"))),
            None => return Err(from(format!("no tensor '{name}' (not a shapes-world CLIP)"))),
        }
    }
    Ok(weights)
}

/// Sets every variable to the tensor of its name in `weights`.
fn start_from(varmap: &VarMap, weights: &HashMap<String, Tensor>) -> Result<()> {
    let data = varmap.data().lock().map_err(|_| DemoError::Train("variable map poisoned".into()))?;
    for (name, var) in data.iter() {
        let w = weights.get(name).ok_or_else(|| DemoError::Train(format!("--clip-from: no tensor '{name}'")))?;
        var.set(&w.to_dtype(DType::F32)?).map_err(|e| DemoError::Train(format!("--clip-from: '{name}': {e}")))?;
    }
    Ok(())
}

/// Trains the shapes CLIP, from `start`'s weights when given (else at random); returns
/// its weights by name. `vqgan` (its safetensors file) is needed when
/// `opts.harden_steps` is not 0.
pub fn train_clip(
    opts: &TrainOptions,
    tokenizer: &ClipTokenizer,
    start: Option<&HashMap<String, Tensor>>,
    vqgan: Option<&Path>,
    observer: &mut dyn TrainObserver,
    log: &mut Vec<f64>,
) -> Result<HashMap<String, Tensor>> {
    let device = Device::Cpu;
    let config = ClipConfig::from_json(&clip_config_json().to_string()).map_err(DemoError::Train)?;
    let mut rng = Rng::new(opts.seed ^ 0xC11B);
    let layers = config.vision.num_hidden_layers.max(config.text.num_hidden_layers);
    let varmap = init_vars(|vb| Clip::new(vb, &config).map(|_| ()), |n, s| clip_init(n, s, layers), &mut rng, &device)?;
    if let Some(weights) = start {
        start_from(&varmap, weights)?;
    }
    let clip = Clip::new(VarBuilder::from_varmap(&varmap, DType::F32, &device), &config)?;
    let heads = read_out(&mut rng, config.projection_dim, PROBES.iter().sum(), &device)?;
    let coverage_head = read_out(&mut rng, config.vision.hidden_size, 1, &device)?;
    let patch = config.vision.patch_size;
    let mut vars = varmap.all_vars();
    vars.push(heads.clone());
    vars.push(coverage_head.clone());
    let mut opt =
        AdamW::new(vars, ParamsAdamW { lr: opts.clip_lr, beta1: 0.9, beta2: 0.98, eps: 1e-6, weight_decay: 0.02 })?;
    let harden_from = opts.clip_steps.saturating_sub(opts.harden_steps);
    let mut pool: Option<Pool> = None;
    let mut harden_rng = Rng::new(opts.seed ^ 0x4A2D);
    observer.stage("clip", opts.clip_steps);
    let b = opts.clip_batch;
    for step in 0..opts.clip_steps {
        if observer.cancelled() {
            return Err(DemoError::Cancelled);
        }
        opt.set_learning_rate(cosine_lr(step, opts.clip_steps, opts.clip_lr, opts.clip_steps / 20 + 1));
        if step == harden_from && opts.harden_steps > 0 && opts.harden_pool > 0 {
            let file = vqgan.ok_or_else(|| DemoError::Train("hardening the CLIP needs the VQGAN".into()))?;
            let v = crate::models::vqgan::load(file, None, DType::F32, &device)?;
            let models = (clip.clone(), tokenizer.clone(), v);
            let seed = harden_rng.next_u64();
            pool = Some(Pool::new(models, RunSettings::shapes_world(), opts.harden_pool, seed)?);
        }
        let hardening = match pool.as_mut() {
            Some(pool) => {
                let chase = pool.step()?;
                let reals = harden::real_through_vqgan(pool.vqgan()?, &chase.scenes, &mut harden_rng)?;
                let (fv, rv) = harden::paired_views(&chase.images, &reals, opts.harden_views, &mut harden_rng)?;
                let ids = tokenize(tokenizer, &chase.captions, &device)?;
                let text = l2_normalize(&clip.encode_text(&ids)?)?;
                let (fake, real) = (harden::embed(&clip, &fv)?, harden::embed(&clip, &rv)?);
                Some(harden::chase_loss(&fake, &real, &text, HARDEN_SCALE, HARDEN_MARGIN)?)
            }
            None => None,
        };
        let scenes: Vec<Scene> = (0..b).map(|_| Scene::random(&mut rng, 0.15)).collect();
        let styles: Vec<CaptionStyle> = (0..b).map(|_| CaptionStyle::random(&mut rng)).collect();
        let mut captions: Vec<String> = scenes.iter().zip(&styles).map(|(s, st)| s.caption_styled(st)).collect();
        for (s, st) in scenes.iter().zip(&styles) {
            for k in 0..HARD_NEGATIVES {
                captions.push(perturb(s, st, k, &mut rng).caption_styled(st));
            }
        }
        let (images, coverage) = scene_batch_covered(&scenes, CLIP_SIDE, Some(patch), &mut rng, true, &device)?;
        let ids = tokenize(tokenizer, &captions, &device)?;
        let (img, hidden) = clip.encode_image_and_patches(&Clip::normalize(&images)?)?;
        let img = l2_normalize(&img)?;
        let cells = coverage.len() / b;
        let patches = hidden.narrow(1, 1, cells)?; // [B, N, D]
        let share = patches.broadcast_matmul(coverage_head.as_tensor())?.squeeze(2)?.clamp(-20.0, 20.0)?;
        let target = Tensor::from_vec(coverage, (b, cells), &device)?;
        // Binary cross-entropy with soft targets, from logits: softplus(x) - t·x.
        let dense = ((share.exp()? + 1.0)?.log()? - (&target * &share)?)?.mean_all()?;
        let txt = l2_normalize(&clip.encode_text(&ids)?)?;
        let scale = variable(&varmap, "logit_scale")?.as_tensor().exp()?.clamp(1.0, 100.0)?;
        let logits = img.matmul(&txt.t()?)?.broadcast_mul(&scale)?; // [B, B·(1+K)]
        let targets = Tensor::arange(0u32, b as u32, &device)?;
        let i2t = candle_nn::loss::cross_entropy(&logits, &targets)?;
        let t2i = candle_nn::loss::cross_entropy(&logits.narrow(1, 0, b)?.t()?.contiguous()?, &targets)?;
        let contrastive = ((i2t + t2i)? * 0.5)?;
        let image_targets: Vec<_> = scenes.iter().map(|s| probe_targets(s, None)).collect();
        let text_targets: Vec<_> = scenes.iter().zip(&styles).map(|(s, st)| probe_targets(s, Some(st))).collect();
        let (image_probes, seen) = probe_loss(&img, heads.as_tensor(), &image_targets)?;
        let (text_probes, read) = probe_loss(&txt.narrow(0, 0, b)?, heads.as_tensor(), &text_targets)?;
        let probes = ((image_probes + text_probes)? * (0.5 * PROBE_WEIGHT))?;
        let mut loss = ((&contrastive + &probes)? + (&dense * DENSE_WEIGHT)?)?;
        if let Some((h, _)) = &hardening {
            loss = (loss + (h * HARDEN_WEIGHT)?)?;
        }
        opt.backward_step(&loss)?;
        let l = f64::from(loss.to_scalar::<f32>()?);
        if !l.is_finite() {
            return Err(DemoError::Train(format!("CLIP loss became {l} at step {step}")));
        }
        log.push(l);
        let acc = batch_accuracy(&logits, b)?;
        let (c, p, d) = (contrastive.to_scalar::<f32>()?, probes.to_scalar::<f32>()?, dense.to_scalar::<f32>()?);
        let pct = |a: [f64; 6]| a.map(|x| format!("{:.0}", x * 100.0)).join("/");
        let mut detail = format!(
            "contrastive {c:.3}, patches {d:.3}, probes {p:.3} (image {}%, text {}%), batch top-1 {:.0}%",
            pct(seen),
            pct(read),
            acc * 100.0
        );
        if let Some((h, gap)) = &hardening {
            detail.push_str(&format!(
                ", chase {:.3} (runs' images {gap:+.3} from the real scenes)",
                h.to_scalar::<f32>()?
            ));
        }
        observer.step(step, l, &detail);
    }
    collect(&varmap)
}

fn batch_accuracy(logits: &Tensor, b: usize) -> Result<f64> {
    let best = logits.argmax(D::Minus1)?.to_vec1::<u32>()?;
    let hits = best.iter().enumerate().filter(|(i, &j)| *i == j as usize).count();
    Ok(hits as f64 / b as f64)
}

#[cfg(test)]
mod tests {
    use super::super::super::data::scene_batch;
    use super::*;

    fn scene(count: usize) -> Scene {
        Scene { shape: Shape::Star, colour: 2, background: 5, position: Position::Left, size: Size::Big, count }
    }

    #[test]
    fn probes_read_what_the_picture_shows_and_the_caption_names() {
        let (values, shown) = probe_targets(&scene(1), None);
        assert_eq!(values, [2, 5, 3, 1, 1, 0]);
        assert_eq!(shown, [1.0; 6]);
        // A pair has no single place.
        let (values, shown) = probe_targets(&scene(2), None);
        assert_eq!(values[5], 1);
        assert_eq!(shown, [1.0, 1.0, 1.0, 0.0, 1.0, 1.0]);
        // A caption that leaves out size and background teaches neither.
        let style = CaptionStyle { size: false, background: false, position: true, picture: false, form: 0, seed: 1 };
        let (_, shown) = probe_targets(&scene(1), Some(&style));
        assert_eq!(shown, [1.0, 0.0, 1.0, 1.0, 0.0, 1.0]);
    }

    /// Unit embeddings along one axis each, and heads that read axis `i` as value
    /// `i` of every attribute: each row's logits favour its own index.
    fn aligned(rows: usize, width: usize) -> (Tensor, Tensor) {
        let mut emb = vec![0f32; rows * width];
        for r in 0..rows {
            emb[r * width + r] = 1.0;
        }
        let total: usize = PROBES.iter().sum();
        let mut heads = vec![0f32; width * total];
        let mut start = 0;
        for &k in &PROBES {
            for v in 0..k.min(width) {
                heads[v * total + start + v] = 2.0;
            }
            start += k;
        }
        (
            Tensor::from_vec(emb, (rows, width), &Device::Cpu).unwrap(),
            Tensor::from_vec(heads, (width, total), &Device::Cpu).unwrap(),
        )
    }

    #[test]
    fn probe_loss_scores_right_answers_low_and_ignores_what_is_not_shown() {
        let (emb, heads) = aligned(2, 8);
        let right = vec![([0u32; 6], [1.0f32; 6]), ([1u32; 6], [1.0f32; 6])];
        let (low, accuracy) = probe_loss(&emb, &heads, &right).unwrap();
        assert_eq!(accuracy, [1.0; 6]);
        let wrong = vec![([1u32; 6], [1.0f32; 6]), ([0u32; 6], [1.0f32; 6])];
        let (high, accuracy) = probe_loss(&emb, &heads, &wrong).unwrap();
        assert_eq!(accuracy, [0.0; 6]);
        let (low, high) = (low.to_scalar::<f32>().unwrap(), high.to_scalar::<f32>().unwrap());
        assert!(low < 0.01 && high > 1.0, "right {low}, wrong {high}");
        // A wrong value on a row that does not show the attribute costs nothing.
        let hidden = vec![([0u32; 6], [1.0f32; 6]), ([1, 1, 1, 0, 1, 1], [1.0, 1.0, 1.0, 0.0, 1.0, 1.0])];
        let (masked, accuracy) = probe_loss(&emb, &heads, &hidden).unwrap();
        assert_eq!(accuracy, [1.0; 6]);
        assert!((masked.to_scalar::<f32>().unwrap() - low).abs() < 1e-6);
    }

    #[test]
    fn patch_coverage_follows_the_shape_and_leaves_the_pixels_as_they_were() {
        let s = Scene {
            shape: Shape::Square,
            colour: 0,
            background: 5,
            position: Position::Centre,
            size: Size::Big,
            count: 1,
        };
        let (pixels, coverage) = scene_batch_covered(&[s], 64, Some(8), &mut Rng::new(3), false, &Device::Cpu).unwrap();
        assert_eq!(coverage.len(), 64);
        // The corners are background, the middle is the square.
        assert_eq!(coverage[0], 0.0);
        assert_eq!(coverage[63], 0.0);
        assert!(coverage[3 * 8 + 3] > 0.99 && coverage[4 * 8 + 4] > 0.99, "{coverage:?}");
        // Share of the canvas, against the square's area: (2·0.82·0.21·scale)², scale in [0.9, 1.1].
        let share = coverage.iter().sum::<f32>() / 64.0;
        assert!((0.09..0.15).contains(&share), "{share}");
        let plain = scene_batch(&[s], 64, &mut Rng::new(3), false, &Device::Cpu).unwrap();
        let diff = (plain - pixels).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(diff == 0.0);
    }
}
