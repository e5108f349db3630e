//! The generators: what turns a run's parameters into the image CLIP scores. The
//! session optimises one generator's parameters with the prompts' losses and knows
//! nothing else of it: its canvas, its start (random, or drawn from an image), its
//! differentiable render and the clamp after each step.
//!
//! - [`vqgan::VqganGenerator`]: the notebook's z+quantize, a latent grid decoded by the
//!   VQGAN (the default; matched against PyTorch by the parity suites).
//! - [`pixel::PixelGenerator`]: flat rectangular cells, each cell's colour a parameter.
//! - [`fft::FftGenerator`]: Lucid's decorrelated, frequency-scaled Fourier image.

use std::sync::Arc;

use candle_core::{DType, Device, Tensor};

use super::error::Result;
use super::image::{load_rgb, resize_exact_lanczos};
use super::loaded::Models;
use super::rng::Rng;
use crate::settings::{GeneratorSettings, InitNoise, RunSettings};

pub mod fft;
pub mod pixel;
pub mod vqgan;

/// A drawer of images from parameters. Its parameters are one f32 tensor on the
/// models' device (the session keeps it, its optimiser state and its init copy).
pub trait Generator: std::fmt::Debug + Send + Sync {
    /// The canvas it draws, `(width, height)`.
    fn size(&self) -> (usize, usize);

    /// Parameters that draw `rgb` (an init image, an animation's warped frame), which
    /// is the canvas's size.
    fn encode(&self, rgb: &image::RgbImage) -> Result<Tensor>;

    /// Random parameters, as the settings' init noise says, drawn from `rng`.
    fn random(&self, settings: &RunSettings, rng: &mut Rng) -> Result<Tensor>;

    /// The image, `[1, 3, H, W]` in `[0, 1]`, differentiable in `params`.
    fn render(&self, params: &Tensor) -> Result<Tensor>;

    /// The parameters after an optimiser step, brought back into their range.
    fn clamp(&self, params: &Tensor) -> Result<Tensor>;
}

/// The canvas a run of `settings` draws: the VQGAN's is rounded down to its factor (the
/// notice says so); the others draw the size asked for.
pub fn canvas(models: &Models, settings: &RunSettings) -> Result<((usize, usize), Option<String>)> {
    match settings.generator {
        GeneratorSettings::Vqgan => vqgan::canvas(models, settings.width, settings.height),
        GeneratorSettings::Pixel { .. } | GeneratorSettings::Fft(_) => Ok(((settings.width, settings.height), None)),
    }
}

/// The generator `settings` ask for, on `models`' device, with the notices of its setup.
pub fn build(models: &Arc<Models>, settings: &RunSettings) -> Result<(Box<dyn Generator>, Vec<String>)> {
    let ((width, height), notice) = canvas(models, settings)?;
    let generator: Box<dyn Generator> = match settings.generator {
        GeneratorSettings::Vqgan => {
            Box::new(vqgan::VqganGenerator::new(Arc::clone(models), width, height, settings.looks.tile)?)
        }
        GeneratorSettings::Pixel { cells_x, cells_y } => {
            Box::new(pixel::PixelGenerator::new(width, height, cells_x, cells_y, &models.device)?)
        }
        GeneratorSettings::Fft(f) => Box::new(fft::FftGenerator::new(width, height, f, &models.device)?),
    };
    Ok((generator, notice.into_iter().collect()))
}

/// The parameters a run starts from: the init image's, or random ones.
pub fn initial(generator: &dyn Generator, settings: &RunSettings, rng: &mut Rng) -> Result<Tensor> {
    match &settings.init_image {
        Some(path) => encode_resized(generator, &load_rgb(path)?),
        None => generator.random(settings, rng),
    }
}

/// A variation of the start `main` toward `other` (the start drawn for another seed) at
/// `strength` from 0 to 1. The VQGAN's latent takes `other`'s vector at each position
/// whose draw from `rng` falls below `strength` (one draw a position, the same at every
/// strength, so a stronger variation changes what a weaker one did and more); the
/// other generators' parameters are blended, `(1 − s)·main + s·other`. Strength 0 is
/// `main` itself.
pub fn vary(kind: &GeneratorSettings, main: &Tensor, other: &Tensor, strength: f64, rng: &mut Rng) -> Result<Tensor> {
    if strength <= 0.0 {
        return Ok(main.clone());
    }
    match kind {
        GeneratorSettings::Vqgan => {
            let (_, _, h, w) = main.dims4()?;
            let picks: Vec<u8> = (0..h * w).map(|_| u8::from(rng.range(0.0, 1.0) < strength)).collect();
            let mask = Tensor::from_vec(picks, (1, 1, h, w), main.device())?.broadcast_as(main.shape())?;
            Ok(mask.where_cond(other, main)?)
        }
        GeneratorSettings::Pixel { .. } | GeneratorSettings::Fft(_) => {
            Ok(((main * (1.0 - strength))? + (other * strength)?)?)
        }
    }
}

/// [`Generator::encode`] of an image of any size, resized to the canvas (Lanczos).
pub fn encode_resized(generator: &dyn Generator, rgb: &image::RgbImage) -> Result<Tensor> {
    let (w, h) = generator.size();
    let (w, h) = (u32::try_from(w).unwrap_or(u32::MAX), u32::try_from(h).unwrap_or(u32::MAX));
    if rgb.dimensions() == (w, h) {
        generator.encode(rgb)
    } else {
        generator.encode(&resize_exact_lanczos(rgb, w, h))
    }
}

/// The random image the `pixels` and `gradient` init noises start from, drawn from
/// `rng` (`None` for `codes`, which only the VQGAN draws in its own way).
pub fn noise_image(noise: InitNoise, width: usize, height: usize, rng: &mut Rng) -> Option<image::RgbImage> {
    let (w, h) = (u32::try_from(width).unwrap_or(u32::MAX), u32::try_from(height).unwrap_or(u32::MAX));
    match noise {
        InitNoise::Codes => None,
        InitNoise::Pixels => {
            let mut img = image::RgbImage::new(w, h);
            for p in img.pixels_mut() {
                #[expect(clippy::cast_possible_truncation, reason = "below 256")]
                let mut byte = || rng.below(255) as u8;
                *p = image::Rgb([byte(), byte(), byte()]);
            }
            Some(img)
        }
        InitNoise::Gradient => Some(gradient_image(w, h, rng)),
    }
}

/// nerdyrodent's random gradient image: two random colours blended along a random axis,
/// per channel.
fn gradient_image(width: u32, height: u32, rng: &mut Rng) -> image::RgbImage {
    let mut img = image::RgbImage::new(width, height);
    let horizontal: [bool; 3] = [rng.chance(0.5), rng.chance(0.5), rng.chance(0.5)];
    let ends: [(f64, f64); 3] = [
        (rng.range(0.0, 255.0), rng.range(0.0, 255.0)),
        (rng.range(0.0, 255.0), rng.range(0.0, 255.0)),
        (rng.range(0.0, 255.0), rng.range(0.0, 255.0)),
    ];
    for (x, y, p) in img.enumerate_pixels_mut() {
        for c in 0..3 {
            let t = if horizontal[c] {
                f64::from(x) / f64::from(width.max(2) - 1)
            } else {
                f64::from(y) / f64::from(height.max(2) - 1)
            };
            let (a, b) = ends[c];
            #[expect(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "within [0, 255]")]
            {
                p[c] = (a + (b - a) * t).round().clamp(0.0, 255.0) as u8;
            }
        }
    }
    img
}

/// A constant host matrix as an f32 tensor on `device` (set-up only, never per step).
fn constant(values: Vec<f32>, shape: (usize, usize), device: &Device) -> Result<Tensor> {
    Ok(super::transfer::upload(values, shape, DType::F32, device)?)
}
