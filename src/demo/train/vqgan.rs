//! The shapes VQGAN's training: L2 + L1 reconstruction, the codebook and commitment
//! losses, and restarts of unused codes, on crops of the world's scenes.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder};

use super::super::data::{scene_batch, SCENE_SIDE};
use super::super::error::{DemoError, Result};
use super::super::scene::Scene;
use crate::engine::rng::Rng;
use crate::models::vqgan::{nearest_indices, Vqgan, VqganConfig};

use super::common::{
    collect, cosine_lr, fan_in, init_vars, variable, vqgan_yaml, InitKind, TrainObserver, TrainOptions,
};

fn vqgan_init(name: &str, shape: &[usize]) -> InitKind {
    if shape.len() == 1 && name.ends_with(".bias") {
        InitKind::Zeros
    } else if name.contains("norm") && name.ends_with(".weight") {
        InitKind::Ones
    } else if name.ends_with("embedding.weight") {
        InitKind::Normal(0.1)
    } else if name.ends_with("conv2.weight") || name.ends_with("proj_out.weight") {
        InitKind::Normal(0.3 / fan_in(shape).sqrt())
    } else {
        InitKind::Normal(1.0 / fan_in(shape).sqrt())
    }
}

/// The encoder's output vectors of a batch, `[B·h·w][C]`, for seeding codes.
fn encoder_vectors(h: &Tensor) -> Result<Vec<Vec<f32>>> {
    let (b, c, hh, ww) = h.dims4()?;
    Ok(h.detach().permute((0, 2, 3, 1))?.reshape((b * hh * ww, c))?.to_vec2::<f32>()?)
}

/// A code drawn at a random encoder output, with a little noise.
fn code_near(vectors: &[Vec<f32>], rng: &mut Rng) -> Vec<f32> {
    let v = &vectors[rng.below(vectors.len())];
    v.iter().map(|x| x + rng.normal() as f32 * 0.01).collect()
}

/// Random crops of rendered scenes, as `[B, 3, crop, crop]` in `[-1, 1]`.
fn vqgan_batch(b: usize, crop: usize, rng: &mut Rng, device: &Device) -> Result<Tensor> {
    let scenes: Vec<Scene> = (0..b).map(|_| Scene::random(rng, 0.15)).collect();
    let full = scene_batch(&scenes, SCENE_SIDE, rng, false, device)?;
    let mut crops = Vec::with_capacity(b);
    for i in 0..b {
        let x = rng.below(SCENE_SIDE - crop + 1);
        let y = rng.below(SCENE_SIDE - crop + 1);
        crops.push(full.get(i)?.narrow(1, y, crop)?.narrow(2, x, crop)?);
    }
    Ok(((Tensor::stack(&crops, 0)? * 2.0)? - 1.0)?)
}

/// Trains the shapes VQGAN; returns its weights by name.
pub fn train_vqgan(
    opts: &TrainOptions,
    observer: &mut dyn TrainObserver,
    log: &mut Vec<f64>,
) -> Result<HashMap<String, Tensor>> {
    let device = Device::Cpu;
    let config = VqganConfig::from_yaml(&vqgan_yaml()).map_err(DemoError::Train)?;
    let mut rng = Rng::new(opts.seed ^ 0x76A9);
    let varmap = init_vars(|vb| Vqgan::new(vb, &config).map(|_| ()), vqgan_init, &mut rng, &device)?;
    let model = Vqgan::new(VarBuilder::from_varmap(&varmap, DType::F32, &device), &config)?;
    let codebook_var = variable(&varmap, "quantize.embedding.weight")?;
    let mut opt =
        AdamW::new(varmap.all_vars(), ParamsAdamW { lr: 1e-3, beta1: 0.5, beta2: 0.9, eps: 1e-8, weight_decay: 0.0 })?;
    let n_embed = config.n_embed;
    let mut usage = vec![0usize; n_embed];
    let restart_every = 50;
    let restarts_until = opts.vqgan_steps * 4 / 5;
    // The first steps train a plain autoencoder (no quantisation), so the encoder's
    // outputs carry information before the codebook is drawn from them; a codebook
    // learnt from a blank encoder collapses to a few codes and the decoder to the mean.
    let warmup = opts.vqgan_steps / 8;
    observer.stage("vqgan", opts.vqgan_steps);
    for step in 0..opts.vqgan_steps {
        if observer.cancelled() {
            return Err(DemoError::Cancelled);
        }
        opt.set_learning_rate(cosine_lr(step, opts.vqgan_steps, 1e-3, opts.vqgan_steps / 20 + 1));
        let x = vqgan_batch(opts.vqgan_batch, opts.vqgan_crop, &mut rng, &device)?;
        let h = model.encode_prequant(&x)?;
        if step < warmup {
            let diff = (model.decode(&h)? - &x)?;
            let mse = diff.sqr()?.mean_all()?;
            let loss = (&mse + (diff.abs()?.mean_all()? * 0.5)?)?;
            opt.backward_step(&loss)?;
            let l = f64::from(loss.to_scalar::<f32>()?);
            if !l.is_finite() {
                return Err(DemoError::Train(format!("VQGAN loss became {l} at step {step}")));
            }
            log.push(l);
            let psnr = -10.0 * (f64::from(mse.to_scalar::<f32>()?) / 4.0).log10();
            observer.step(step, l, &format!("PSNR {psnr:.1} dB (autoencoder warm-up)"));
            if step + 1 == warmup {
                // Every code starts at an encoder output of this batch.
                let vectors = encoder_vectors(&h)?;
                let book: Vec<f32> = (0..n_embed).flat_map(|_| code_near(&vectors, &mut rng)).collect();
                codebook_var.set(&Tensor::from_vec(book, (n_embed, config.embed_dim), &device)?)?;
            }
            continue;
        }
        let idx = nearest_indices(&h, model.codebook())?;
        let zq = model.embed_indices(&idx)?;
        let codebook_loss = (&zq - h.detach())?.sqr()?.mean_all()?;
        let commit = (zq.detach() - &h)?.sqr()?.mean_all()?;
        let z = (&h + (&zq - &h)?.detach())?;
        let xr = model.decode(&z)?;
        let diff = (&xr - &x)?;
        let mse = diff.sqr()?.mean_all()?;
        let l1 = diff.abs()?.mean_all()?;
        let loss = (((&mse + (l1 * 0.5)?)? + codebook_loss)? + (commit * 0.25)?)?;
        opt.backward_step(&loss)?;
        let l = f64::from(loss.to_scalar::<f32>()?);
        if !l.is_finite() {
            return Err(DemoError::Train(format!("VQGAN loss became {l} at step {step}")));
        }
        log.push(l);
        let flat = idx.flatten_all()?.to_vec1::<u32>()?;
        for &i in &flat {
            usage[i as usize] += 1;
        }
        // Codes nobody used since the last restart start again at encoder outputs.
        let mut restarted = 0;
        if (step + 1 - warmup).is_multiple_of(restart_every) && step < restarts_until {
            let vectors = encoder_vectors(&h)?;
            let mut book = codebook_var.as_tensor().to_vec2::<f32>()?;
            for (code, used) in usage.iter().enumerate() {
                if *used == 0 {
                    book[code] = code_near(&vectors, &mut rng);
                    restarted += 1;
                }
            }
            if restarted > 0 {
                let flat: Vec<f32> = book.into_iter().flatten().collect();
                codebook_var.set(&Tensor::from_vec(flat, (n_embed, config.embed_dim), &device)?)?;
            }
            usage.iter_mut().for_each(|u| *u = 0);
        }
        let psnr = -10.0 * (f64::from(mse.to_scalar::<f32>()?) / 4.0).log10();
        let detail = if restarted > 0 {
            format!("PSNR {psnr:.1} dB, {restarted} codes restarted")
        } else {
            format!("PSNR {psnr:.1} dB")
        };
        observer.step(step, l, &detail);
    }
    collect(&varmap)
}
