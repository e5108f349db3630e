//! Where an iteration's time goes: the stages of a step, timed with the device
//! synchronised at each boundary when profiling (GPU work is otherwise asynchronous
//! and would be billed to whichever stage next waits for it).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use candle_core::Device;

use super::error::Result;

/// Seconds spent in each stage of one step.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StageTimes {
    /// Straight-through quantisation, the VQGAN decoder, the clamp.
    pub decode: f64,
    /// Cutouts, augmentations, CLIP's normalisation.
    pub cutouts: f64,
    /// CLIP's image encoder.
    pub clip: f64,
    /// The loss terms and reading them back.
    pub loss: f64,
    /// Gradients back to the latent.
    pub backward: f64,
    /// The optimiser's update and the clamp to the codebook's range.
    pub optimiser: f64,
}

impl StageTimes {
    pub const NAMES: [&'static str; 6] = ["decode", "cutouts", "clip", "loss", "backward", "optimiser"];

    /// The stages in `NAMES` order.
    pub fn values(&self) -> [f64; 6] {
        [self.decode, self.cutouts, self.clip, self.loss, self.backward, self.optimiser]
    }

    pub fn total(&self) -> f64 {
        self.values().iter().sum()
    }

    /// Element-wise sum, for averaging over steps.
    pub fn add(&mut self, other: &Self) {
        self.decode += other.decode;
        self.cutouts += other.cutouts;
        self.clip += other.clip;
        self.loss += other.loss;
        self.backward += other.backward;
        self.optimiser += other.optimiser;
    }

    /// Every stage multiplied by `factor` (`1/n` averages a sum of `n` steps).
    pub fn scaled(&self, factor: f64) -> Self {
        Self {
            decode: self.decode * factor,
            cutouts: self.cutouts * factor,
            clip: self.clip * factor,
            loss: self.loss * factor,
            backward: self.backward * factor,
            optimiser: self.optimiser * factor,
        }
    }
}

/// Times consecutive stages of a step.
pub(crate) struct StageClock<'a> {
    /// Synchronise this device at each boundary (profiling), or not (normal runs).
    sync: Option<&'a Device>,
    last: Instant,
    pub times: StageTimes,
}

impl<'a> StageClock<'a> {
    pub fn start(sync: Option<&'a Device>) -> Result<Self> {
        if let Some(d) = sync {
            d.synchronize()?;
        }
        Ok(Self { sync, last: Instant::now(), times: StageTimes::default() })
    }

    /// Ends the current stage; returns its duration. When profiling on a GPU, also
    /// notes the device memory in use at the boundary (see [`device_peak`]).
    pub fn lap(&mut self) -> Result<f64> {
        if let Some(d) = self.sync {
            d.synchronize()?;
            if let Some(bytes) = super::device::memory_in_use(d) {
                DEVICE_PEAK.fetch_max(bytes, Ordering::Relaxed);
            }
        }
        let now = Instant::now();
        let d: Duration = now - self.last;
        self.last = now;
        Ok(d.as_secs_f64())
    }
}

/// The most GPU memory in use seen at a profiled stage boundary since the last
/// [`reset_device_peak`].
static DEVICE_PEAK: AtomicU64 = AtomicU64::new(0);

/// Starts a new measurement of [`device_peak`].
pub fn reset_device_peak() {
    DEVICE_PEAK.store(0, Ordering::Relaxed);
}

/// The most GPU memory in use (the device's total less its free memory, as the driver
/// reports it) seen at the stage boundaries of profiled steps; `None` when none was seen
/// (the CPU). The stage boundaries are where a step's live memory is largest (after the
/// forward passes, before backward frees them), but the driver's figure also counts
/// what other processes and the CUDA context hold: the benchmark subtracts the figure
/// taken before its models were built.
pub fn device_peak() -> Option<u64> {
    let v = DEVICE_PEAK.load(Ordering::Relaxed);
    (v > 0).then_some(v)
}
