//! The worker's side of the event channel and the frame slot, and its drop policy: step
//! statistics are dropped when the UI is behind, other events wait in a bounded queue in
//! order, and frames go to a newest-wins slot (see the module docs of `worker`).

use std::collections::VecDeque;
use std::fmt::Display;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crossbeam_channel::{Sender, TrySendError};

use super::protocol::{Event, FrameEvent};
use super::shared::{lock, Shared, OVERFLOW_CAPACITY};
use crate::engine::observer::StepStats;

/// Makes any message one line.
pub(super) fn one_line(msg: impl Display) -> String {
    msg.to_string().lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join("; ")
}

/// The worker's side of the event channel and the frame slot.
pub(super) struct Outbox {
    tx: Sender<Event>,
    pub(super) overflow: VecDeque<Event>,
    pub(super) shared: Arc<Shared>,
    waker: Arc<dyn Fn() + Send + Sync>,
}

impl Outbox {
    pub(super) fn new(tx: Sender<Event>, shared: Arc<Shared>, waker: Arc<dyn Fn() + Send + Sync>) -> Self {
        Self { tx, overflow: VecDeque::new(), shared, waker }
    }

    pub(super) fn wake(&self) {
        (self.waker)();
    }

    /// Sends held-back events while there is room.
    pub(super) fn flush(&mut self) {
        let mut sent = false;
        while let Some(ev) = self.overflow.pop_front() {
            match self.tx.try_send(ev) {
                Ok(()) => sent = true,
                Err(TrySendError::Full(ev)) => {
                    self.overflow.push_front(ev);
                    break;
                }
                Err(TrySendError::Disconnected(_)) => {
                    self.overflow.clear();
                    break;
                }
            }
        }
        if sent {
            self.wake();
        }
    }

    pub(super) fn has_backlog(&self) -> bool {
        !self.overflow.is_empty()
    }

    /// Sends an event that must not be dropped (anything but step statistics).
    pub(super) fn send(&mut self, ev: Event) {
        self.flush();
        let ev = if self.overflow.is_empty() {
            match self.tx.try_send(ev) {
                Ok(()) => {
                    self.wake();
                    return;
                }
                Err(TrySendError::Full(ev)) => ev,
                Err(TrySendError::Disconnected(_)) => return,
            }
        } else {
            ev
        };
        if self.overflow.len() >= OVERFLOW_CAPACITY {
            let victim = self
                .overflow
                .iter()
                .position(|e| matches!(e, Event::Notice(_) | Event::Steered { .. }))
                .or_else(|| self.overflow.iter().position(|e| matches!(e, Event::State(_))))
                .unwrap_or(0);
            self.overflow.remove(victim);
            self.shared.dropped_events.fetch_add(1, Ordering::Relaxed);
        }
        self.overflow.push_back(ev);
    }

    /// Sends step statistics, or drops them when the UI is behind.
    pub(super) fn step(&mut self, stats: StepStats) {
        self.flush();
        if self.has_backlog() {
            self.shared.dropped_steps.fetch_add(1, Ordering::Relaxed);
            return;
        }
        match self.tx.try_send(Event::Step(stats)) {
            Ok(()) => self.wake(),
            Err(TrySendError::Full(_)) => {
                self.shared.dropped_steps.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    /// Puts a frame in the newest-wins slot.
    pub(super) fn frame(&self, frame: FrameEvent) {
        if lock(&self.shared.frame).replace(Arc::new(frame)).is_some() {
            self.shared.dropped_frames.fetch_add(1, Ordering::Relaxed);
        }
        self.wake();
    }

    pub(super) fn clear_frame(&self) {
        lock(&self.shared.frame).take();
    }
}
