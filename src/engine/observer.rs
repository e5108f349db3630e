//! How the engine reports: an observer the caller supplies (the CLI's progress bar, the
//! studio's worker) receives per-step statistics and, every so often, a decoded frame.
//! Cancellation is the caller's: a flag checked between steps.

/// What one step did.
#[derive(Debug, Clone, PartialEq)]
pub struct StepStats {
    /// The iteration just done, from 0.
    pub iteration: usize,
    /// The run's planned number of iterations.
    pub iterations: usize,
    pub total_loss: f64,
    /// Each loss term by label (`init`, a prompt's text, `image: path`, `noise: seed`, `tv`).
    pub losses: Vec<(String, f64)>,
    /// Iterations per second, averaged over the recent steps.
    pub its_per_sec: f64,
    pub lr: f64,
}

/// Iterations per second over the last [`StepRate::WINDOW`] steps: the one measure the
/// command line's progress and the studio's worker both report.
#[derive(Debug, Clone, Default)]
pub struct StepRate {
    recent: std::collections::VecDeque<f64>,
}

impl StepRate {
    pub const WINDOW: usize = 10;

    /// Records a step of `seconds` and returns the rate.
    pub fn record(&mut self, seconds: f64) -> f64 {
        self.recent.push_back(seconds);
        while self.recent.len() > Self::WINDOW {
            self.recent.pop_front();
        }
        #[expect(clippy::cast_precision_loss, reason = "a window of ten")]
        let mean = self.recent.iter().sum::<f64>() / self.recent.len() as f64;
        if mean > 0.0 {
            1.0 / mean
        } else {
            0.0
        }
    }

    pub fn clear(&mut self) {
        self.recent.clear();
    }
}

/// A decoded image as RGBA8, row-major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub width: u32,
    pub height: u32,
    pub rgba: Vec<u8>,
}

impl Frame {
    pub fn from_rgb(img: &image::RgbImage) -> Self {
        let (width, height) = img.dimensions();
        let mut rgba = Vec::with_capacity(width as usize * height as usize * 4);
        for p in img.pixels() {
            rgba.extend_from_slice(&[p[0], p[1], p[2], 255]);
        }
        Self { width, height, rgba }
    }

    pub fn to_rgb(&self) -> image::RgbImage {
        let mut img = image::RgbImage::new(self.width, self.height);
        for (dst, src) in img.pixels_mut().zip(self.rgba.chunks_exact(4)) {
            *dst = image::Rgb([src[0], src[1], src[2]]);
        }
        img
    }
}

/// Receives a run's progress. Every method has a default, so an observer implements
/// only what it needs.
pub trait Observer {
    /// Called after every step.
    fn on_step(&mut self, _stats: &StepStats) {}
    /// How often to decode a frame for [`Observer::on_frame`]: every N iterations, 0 = never.
    fn frame_every(&self) -> usize {
        0
    }
    /// A frame of the image at the start of `iteration` (before its update).
    fn on_frame(&mut self, _iteration: usize, _frame: &Frame) {}
    /// A one-line notice for the user (a size rounded down, a prompt truncated).
    fn notice(&mut self, _message: &str) {}
}

/// An observer that ignores everything.
#[derive(Debug, Default)]
pub struct Silent;

impl Observer for Silent {}
