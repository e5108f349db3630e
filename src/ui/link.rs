//! The studio's line to the engine: the worker in the app, a fake in tests.

use std::sync::Arc;

use crate::worker::{Command, Event, FrameEvent, Worker};

/// What the studio needs of the engine side.
pub trait EngineLink {
    /// Sends a command; false if it could not be delivered.
    fn send(&self, cmd: Command) -> bool;
    /// The next event, without blocking.
    fn try_event(&self) -> Option<Event>;
    /// The newest frame since the last call.
    fn take_frame(&self) -> Option<Arc<FrameEvent>>;
}

impl EngineLink for Worker {
    fn send(&self, cmd: Command) -> bool {
        Worker::send(self, cmd)
    }

    fn try_event(&self) -> Option<Event> {
        Worker::try_event(self)
    }

    fn take_frame(&self) -> Option<Arc<FrameEvent>> {
        Worker::take_frame(self)
    }
}
