//! Recording a run: every k-th iteration's image written as a PNG into a folder, by a
//! writer thread fed through a bounded channel (the engine waits when the disk is
//! slower than the run: no frame is dropped), so an animation can hold every iteration
//! and not only the kept frames the canvas shows.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crossbeam_channel::Sender;

use super::protocol::Frame;

/// What to record: every `every` iterations into `dir` (`frame_NNNNNN.png`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recording {
    pub dir: PathBuf,
    pub every: usize,
}

/// The writer of one recording.
pub(super) struct Recorder {
    pub(super) spec: Recording,
    tx: Sender<(usize, Frame)>,
    /// The first write that failed; recording stops there.
    failed: Arc<Mutex<Option<String>>>,
}

impl Recorder {
    /// Starts the writer thread; an error if the folder cannot be made.
    pub(super) fn start(spec: Recording) -> Result<Self, String> {
        let mut sequence = crate::export::FrameSequence::create(&spec.dir).map_err(|e| e.to_string())?;
        let (tx, rx) = crossbeam_channel::bounded::<(usize, Frame)>(4);
        let failed = Arc::new(Mutex::new(None));
        let latch = Arc::clone(&failed);
        std::thread::Builder::new()
            .name("clipcanvas-recorder".into())
            .spawn(move || {
                for (iteration, frame) in rx {
                    if let Err(e) = sequence.push(iteration, &frame.to_rgb(), None) {
                        if let Ok(mut f) = latch.lock() {
                            *f = Some(e.to_string());
                        }
                        return;
                    }
                }
            })
            .map_err(|e| format!("cannot start the recorder: {e}"))?;
        Ok(Self { spec, tx, failed })
    }

    /// Whether iteration `it` is recorded.
    pub(super) fn wants(&self, it: usize) -> bool {
        it.is_multiple_of(self.spec.every.max(1))
    }

    /// Hands a frame to the writer (waiting while it is busy); the error of a write that
    /// failed, once.
    pub(super) fn record(&self, iteration: usize, frame: &Frame) -> Result<(), String> {
        if let Some(e) = self.failed.lock().ok().and_then(|mut f| f.take()) {
            return Err(format!("recording stopped: {e}"));
        }
        self.tx.send((iteration, frame.clone())).map_err(|_| "recording stopped: its writer ended".to_owned())
    }
}
