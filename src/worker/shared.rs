//! What the worker's handle and its thread share: the frame slot, the steering record
//! and the drop counters behind a lock, and the limits of the channels and the timeline.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use super::protocol::{FrameEvent, Steer};

/// How many commands may wait for the worker.
pub const COMMAND_CAPACITY: usize = 64;
/// How many events may wait for the UI on the event channel.
pub const EVENT_CAPACITY: usize = 256;
/// How many non-droppable events the worker holds back while the event channel is full.
pub const OVERFLOW_CAPACITY: usize = 1024;
/// How many kept latents (timeline entries) the worker holds.
pub const KEPT_LATENTS: usize = 500;
/// A live frame every this many iterations.
pub const FRAME_EVERY: usize = 1;
/// How often an idle worker retries sending held-back events.
pub const OVERFLOW_RETRY: Duration = Duration::from_millis(50);

/// State shared between the handle and the thread.
#[derive(Default)]
pub(crate) struct Shared {
    pub(crate) frame: Mutex<Option<Arc<FrameEvent>>>,
    pub(crate) steering: Mutex<Vec<Steer>>,
    pub(crate) dropped_frames: AtomicU64,
    pub(crate) dropped_steps: AtomicU64,
    pub(crate) dropped_events: AtomicU64,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
