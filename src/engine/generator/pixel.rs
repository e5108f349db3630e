//! pixray's `pixel` drawer: a grid of `cells_x × cells_y` flat rectangular cells. The
//! parameters are the cells' colours, `[1, 3, cells_y, cells_x]` in `[0, 1]`; the image is
//! their nearest upsampling to the canvas (PyTorch's `interpolate(mode="nearest")`, whose
//! source index is `floor(i · cells / side)` in f32), so a cell's gradient is the sum of
//! its pixels'. After each step the colours are clamped to `[0, 1]`.

use candle_core::{DType, Device, Tensor};

use super::{noise_image, Generator};
use crate::engine::error::Result;
use crate::engine::rng::Rng;
use crate::engine::transfer;
use crate::settings::RunSettings;

#[derive(Debug)]
pub struct PixelGenerator {
    width: usize,
    height: usize,
    cells_x: usize,
    cells_y: usize,
    /// The cell row of each pixel row, and the cell column of each pixel column.
    rows: Tensor,
    cols: Tensor,
    device: Device,
}

/// PyTorch's nearest source index for `out` of `out_size` from `in_size` (f32 scale,
/// `floorf`, as `nearest_idx` in ATen's UpSample.h).
pub fn nearest_source(out: usize, in_size: usize, out_size: usize) -> usize {
    if in_size == out_size {
        return out;
    }
    if out_size == 2 * in_size {
        return out >> 1;
    }
    #[expect(clippy::cast_precision_loss, reason = "canvas sides are far below 2^24")]
    let scale = in_size as f32 / out_size as f32;
    #[expect(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss, reason = "as ATen")]
    let idx = (out as f32 * scale).floor() as usize;
    idx.min(in_size - 1)
}

fn source_indices(in_size: usize, out_size: usize) -> Vec<u32> {
    (0..out_size).map(|o| u32::try_from(nearest_source(o, in_size, out_size)).unwrap_or(u32::MAX)).collect()
}

impl PixelGenerator {
    pub fn new(width: usize, height: usize, cells_x: usize, cells_y: usize, device: &Device) -> Result<Self> {
        let rows = transfer::upload(source_indices(cells_y, height), height, DType::U32, device)?;
        let cols = transfer::upload(source_indices(cells_x, width), width, DType::U32, device)?;
        Ok(Self { width, height, cells_x, cells_y, rows, cols, device: device.clone() })
    }

    pub fn cells(&self) -> (usize, usize) {
        (self.cells_x, self.cells_y)
    }
}

impl Generator for PixelGenerator {
    fn size(&self) -> (usize, usize) {
        (self.width, self.height)
    }

    /// Each cell's colour is the mean of the pixels it draws: the cells whose render is
    /// nearest to `rgb` in squared error.
    fn encode(&self, rgb: &image::RgbImage) -> Result<Tensor> {
        let (cx, cy) = (self.cells_x, self.cells_y);
        let mut sums = vec![0f64; 3 * cx * cy];
        let mut counts = vec![0u32; cx * cy];
        let rows: Vec<usize> = (0..self.height).map(|y| nearest_source(y, cy, self.height)).collect();
        let cols: Vec<usize> = (0..self.width).map(|x| nearest_source(x, cx, self.width)).collect();
        for (x, y, p) in rgb.enumerate_pixels() {
            let (Some(&r), Some(&c)) = (rows.get(y as usize), cols.get(x as usize)) else { continue };
            let cell = r * cx + c;
            counts[cell] += 1;
            for ch in 0..3 {
                sums[ch * cx * cy + cell] += f64::from(p[ch]) / 255.0;
            }
        }
        #[expect(clippy::cast_possible_truncation, reason = "colours in [0, 1]")]
        let colours: Vec<f32> =
            sums.iter().enumerate().map(|(i, s)| (s / f64::from(counts[i % (cx * cy)].max(1))) as f32).collect();
        Ok(transfer::upload(colours, (1, 3, cy, cx), DType::F32, &self.device)?)
    }

    /// Uniform random colours per cell (`codes` and `pixels`), or a random gradient
    /// image's cells (`gradient`).
    fn random(&self, settings: &RunSettings, rng: &mut Rng) -> Result<Tensor> {
        if settings.init_noise == crate::settings::InitNoise::Gradient {
            if let Some(img) = noise_image(settings.init_noise, self.width, self.height, rng) {
                return self.encode(&img);
            }
        }
        #[expect(clippy::cast_possible_truncation, reason = "in [0, 1)")]
        let colours: Vec<f32> = (0..3 * self.cells_x * self.cells_y).map(|_| rng.uniform() as f32).collect();
        Ok(transfer::upload(colours, (1, 3, self.cells_y, self.cells_x), DType::F32, &self.device)?)
    }

    fn render(&self, colours: &Tensor) -> Result<Tensor> {
        Ok(colours.index_select(&self.rows, 2)?.index_select(&self.cols, 3)?)
    }

    fn clamp(&self, colours: &Tensor) -> Result<Tensor> {
        Ok(colours.clamp(0f32, 1f32)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_source_is_atens_index() {
        // Values of torch.nn.functional.interpolate(mode="nearest") index maps.
        assert_eq!(source_indices(3, 7), vec![0, 0, 0, 1, 1, 2, 2]);
        assert_eq!(source_indices(4, 8), vec![0, 0, 1, 1, 2, 2, 3, 3]);
        assert_eq!(source_indices(5, 5), vec![0, 1, 2, 3, 4]);
        assert_eq!(source_indices(48, 384).iter().filter(|&&i| i == 47).count(), 8);
    }

    #[test]
    fn encoding_a_render_gives_the_cells_back() {
        let g = PixelGenerator::new(23, 17, 5, 4, &Device::Cpu).expect("gen");
        let mut rng = Rng::new(3);
        let cells = g.random(&RunSettings::default(), &mut rng).expect("random");
        let img = crate::engine::image::tensor_to_rgb(&g.render(&cells).expect("render")).expect("rgb");
        let back = g.encode(&img).expect("encode");
        let d = (back - &cells).expect("d").abs().expect("a").max_all().expect("m").to_scalar::<f32>().expect("s");
        assert!(d <= 0.5 / 255.0 + 1e-6, "within rounding to 8 bits, got {d}");
    }
}
