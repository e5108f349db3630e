//! Images in and out of tensors: decoding files, CLIP's preprocessing, RGB8 ↔ `[1, 3, H, W]`.

use std::path::Path;

use candle_core::{Device, Tensor};
use image::imageops::FilterType;
use image::RgbImage;

use super::error::{EngineError, Result};

/// Decodes an image file to RGB8, naming the file in any error.
pub fn load_rgb(path: &Path) -> Result<RgbImage> {
    let bytes = std::fs::read(path).map_err(|e| EngineError::Image { path: path.to_path_buf(), msg: e.to_string() })?;
    let img = image::load_from_memory(&bytes)
        .map_err(|e| EngineError::Image { path: path.to_path_buf(), msg: e.to_string() })?;
    Ok(img.to_rgb8())
}

/// CLIP's own preprocessing: bicubic resize of the shorter side to `size`, centre
/// crop to `size × size`. An image already `size × size` is returned unchanged.
pub fn clip_resize_crop(img: &RgbImage, size: u32) -> RgbImage {
    let (w, h) = img.dimensions();
    if w == size && h == size {
        return img.clone();
    }
    let short = w.min(h).max(1);
    let scale = f64::from(size) / f64::from(short);
    #[expect(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "image sides fit u32")]
    let (nw, nh) = if w <= h {
        (size, ((f64::from(h) * scale).round() as u32).max(size))
    } else {
        (((f64::from(w) * scale).round() as u32).max(size), size)
    };
    let resized = image::imageops::resize(img, nw, nh, FilterType::CatmullRom);
    let left = (nw - size) / 2;
    let top = (nh - size) / 2;
    image::imageops::crop_imm(&resized, left, top, size, size).to_image()
}

/// RGB8 to a `[1, 3, H, W]` f32 tensor in `[0, 1]`.
pub fn rgb_to_tensor(img: &RgbImage, device: &Device) -> Result<Tensor> {
    let (w, h) = img.dimensions();
    let (w, h) = (w as usize, h as usize);
    let mut planar = vec![0f32; 3 * w * h];
    for (i, p) in img.pixels().enumerate() {
        for c in 0..3 {
            planar[c * w * h + i] = f32::from(p[c]) / 255.0;
        }
    }
    Ok(Tensor::from_vec(planar, (1, 3, h, w), device)?)
}

/// A `[1, 3, H, W]` tensor in `[0, 1]` to RGB8 (values clamped, rounded).
pub fn tensor_to_rgb(t: &Tensor) -> Result<RgbImage> {
    let (_, c, h, w) = t.dims4()?;
    if c != 3 {
        return Err(EngineError::Input(format!("expected 3 channels, got {c}")));
    }
    let data: Vec<f32> = t.to_dtype(candle_core::DType::F32)?.flatten_all()?.to_vec1()?;
    let mut img = RgbImage::new(u32::try_from(w).unwrap_or(u32::MAX), u32::try_from(h).unwrap_or(u32::MAX));
    for (i, p) in img.pixels_mut().enumerate() {
        for ch in 0..3 {
            let v = data[ch * w * h + i];
            let v = if v.is_nan() { 0.0 } else { v.clamp(0.0, 1.0) };
            #[expect(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "clamped to [0, 255]")]
            {
                p[ch] = (v * 255.0).round() as u8;
            }
        }
    }
    Ok(img)
}

/// Resizes to exactly `width × height` with a Lanczos filter (the init image).
pub fn resize_exact_lanczos(img: &RgbImage, width: u32, height: u32) -> RgbImage {
    if img.dimensions() == (width, height) {
        return img.clone();
    }
    image::imageops::resize(img, width, height, FilterType::Lanczos3)
}

/// The reference's `resize_image` for target images: keep the aspect ratio, with an
/// area of at most `width × height`, Lanczos filter.
pub fn resize_keep_aspect(img: &RgbImage, width: u32, height: u32) -> RgbImage {
    let (w, h) = img.dimensions();
    let ratio = f64::from(w) / f64::from(h.max(1));
    let area = (f64::from(w) * f64::from(h)).min(f64::from(width) * f64::from(height));
    #[expect(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "positive sizes")]
    let (nw, nh) = (((area * ratio).sqrt().round() as u32).max(1), ((area / ratio).sqrt().round() as u32).max(1));
    resize_exact_lanczos(img, nw, nh)
}
