//! Images in and out of tensors: decoding files, CLIP's preprocessing, RGB8 ↔ `[1, 3, H, W]`.

use std::path::Path;

use candle_core::{Device, Tensor};
use image::imageops::FilterType;
use image::RgbImage;

use super::error::{EngineError, Result};
use crate::settings::Mask;

/// The longest side of an image clipcanvas reads (init images, targets, image prompts).
pub const MAX_IMAGE_SIDE: u32 = 16_384;
/// What decoding one image may allocate: a 16384² RGBA8 image.
const MAX_DECODE_BYTES: u64 = 1 << 30;

/// Decodes an image file to RGB8, naming the file in any error. Only a regular file of at
/// most [`MAX_IMAGE_BYTES`](crate::files::MAX_IMAGE_BYTES) is read; an image larger than
/// [`MAX_IMAGE_SIDE`] a side (a dimension bomb) is refused before its pixels are
/// decoded, and a JPEG cut short (which decodes leniently, its missing rows grey) is
/// refused as truncated.
pub fn load_rgb(path: &Path) -> Result<RgbImage> {
    let bytes = crate::files::read_bounded(path, crate::files::MAX_IMAGE_BYTES, "image")?;
    decode_rgb(&bytes).map_err(|msg| EngineError::Image { path: path.to_path_buf(), msg })
}

/// [`load_rgb`] for bytes in memory; the error says what is wrong, without the path.
pub fn decode_rgb(bytes: &[u8]) -> std::result::Result<RgbImage, String> {
    Ok(decode(bytes)?.to_rgb8())
}

/// Reads a region mask from an image: a pixel is covered where it is light (luma of
/// 128 or more) and opaque (a transparent pixel counts as dark).
pub fn load_mask(path: &Path) -> Result<Mask> {
    let bytes = crate::files::read_bounded(path, crate::files::MAX_IMAGE_BYTES, "mask")?;
    let image = decode(&bytes).map_err(|msg| EngineError::Image { path: path.to_path_buf(), msg })?.to_luma_alpha8();
    let (w, h) = (image.width() as usize, image.height() as usize);
    Ok(Mask::from_fn(w, h, |x, y| {
        #[expect(clippy::cast_possible_truncation, reason = "x and y come from the image's own u32 sides")]
        let [luma, alpha] = image.get_pixel(x as u32, y as u32).0;
        u32::from(luma) * u32::from(alpha) >= 128 * 255
    }))
}

/// Decodes an image of any supported format, within clipcanvas's size limits.
fn decode(bytes: &[u8]) -> std::result::Result<image::DynamicImage, String> {
    let reader = || image::ImageReader::new(std::io::Cursor::new(bytes)).with_guessed_format();
    let format = reader().map_err(|e| e.to_string())?.format();
    if format == Some(image::ImageFormat::Jpeg) && !jpeg_is_complete(bytes) {
        return Err("truncated JPEG: the file ends before its end-of-image marker".to_owned());
    }
    let (w, h) = reader().map_err(|e| e.to_string())?.into_dimensions().map_err(|e| e.to_string())?;
    if w > MAX_IMAGE_SIDE || h > MAX_IMAGE_SIDE {
        return Err(format!("it is {w}×{h}; clipcanvas reads images of at most {MAX_IMAGE_SIDE} pixels a side"));
    }
    let mut reader = reader().map_err(|e| e.to_string())?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_SIDE);
    limits.max_image_height = Some(MAX_IMAGE_SIDE);
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    reader.limits(limits);
    reader.decode().map_err(|e| e.to_string())
}

/// Whether a JPEG's segments run on to its end-of-image marker. Segments are skipped by
/// their lengths (so an EXIF thumbnail's own marker is not taken for the file's), the
/// entropy-coded data after each start-of-scan up to the next marker that is neither a
/// restart nor a stuffed byte; what follows the end marker (a motion photo's video, a
/// camera's trailer) does not matter.
fn jpeg_is_complete(b: &[u8]) -> bool {
    if !b.starts_with(&[0xFF, 0xD8]) {
        return false;
    }
    let mut i = 2;
    loop {
        // The next marker: 0xFF, any fill bytes, then its code.
        let Some(k) = b.get(i..).and_then(|rest| rest.iter().position(|&x| x == 0xFF)) else { return false };
        i += k;
        while b.get(i) == Some(&0xFF) {
            i += 1;
        }
        let Some(&marker) = b.get(i) else { return false };
        i += 1;
        match marker {
            0xD9 => return true,
            // Standalone markers (TEM, RST) and a stray stuffed byte carry no length.
            0x00 | 0x01 | 0xD0..=0xD7 => continue,
            _ => {}
        }
        let Some(&[hi, lo]) = b.get(i..i + 2) else { return false };
        let len = usize::from(u16::from_be_bytes([hi, lo]));
        if len < 2 {
            return false;
        }
        i += len;
        if marker == 0xDA {
            // Entropy-coded data: 0xFF 0x00 is a stuffed byte, 0xFF 0xD0..D7 a restart.
            loop {
                let Some(k) = b.get(i..).and_then(|rest| rest.iter().position(|&x| x == 0xFF)) else { return false };
                i += k;
                match b.get(i + 1) {
                    Some(0x00 | 0xD0..=0xD7) => i += 2,
                    Some(0xFF) => i += 1,
                    Some(_) => break,
                    None => return false,
                }
            }
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A `w`×`h` JPEG of a gradient.
    fn jpeg(w: u32, h: u32) -> Vec<u8> {
        let img = RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 5 % 256) as u8, (y * 6 % 256) as u8, 90]));
        let mut out = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 85).encode_image(&img).expect("encode");
        out
    }

    #[test]
    fn a_jpeg_cut_short_is_truncated_wherever_it_is_cut() {
        for whole in [jpeg(48, 40), jpeg(7, 300)] {
            assert!(jpeg_is_complete(&whole));
            assert!(decode_rgb(&whole).is_ok());
            // Bytes after the end marker (a motion photo's video, a trailer) do not matter.
            let mut trailer = whole.clone();
            trailer.extend(b"\xff\xd8ftypmp42 trailing data");
            assert!(jpeg_is_complete(&trailer));
            for cut in [2, 20, whole.len() / 2, whole.len() - 2, whole.len() - 1] {
                assert!(!jpeg_is_complete(&whole[..cut]), "cut at {cut}");
                let err = decode_rgb(&whole[..cut]).expect_err("truncated");
                assert!(err.contains("truncated JPEG") || cut < 3, "cut at {cut}: {err}");
            }
        }
    }

    #[test]
    fn an_embedded_thumbnail_does_not_end_the_file() {
        // An APP1 segment holding a whole JPEG (as EXIF thumbnails are) before the image:
        // its end marker is inside a segment, skipped by length.
        let thumb = jpeg(16, 12);
        let main = jpeg(64, 48);
        let len = u16::try_from(thumb.len() + 2).expect("fits");
        let mut with_thumb = main[..2].to_vec();
        with_thumb.extend([0xFF, 0xE1]);
        with_thumb.extend(len.to_be_bytes());
        with_thumb.extend(&thumb);
        with_thumb.extend(&main[2..]);
        assert!(jpeg_is_complete(&with_thumb));
        assert!(!jpeg_is_complete(&with_thumb[..with_thumb.len() - 100]));
    }

    #[test]
    fn huge_images_are_refused_from_their_header() {
        // A GIF header that says 65535 × 65535.
        let mut gif = b"GIF89a\xff\xff\xff\xff\x00\x00\x00".to_vec();
        gif.extend(b",\x00\x00\x00\x00\xff\xff\xff\xff\x00\x02\x02\x44\x01\x00;");
        let err = decode_rgb(&gif).expect_err("huge");
        assert!(err.contains("65535×65535") && err.contains("at most 16384 pixels a side"), "{err}");
    }
}
