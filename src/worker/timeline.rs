//! The timeline's latents: a CPU copy of the latent behind each kept frame, by the
//! iteration of its frame, at most [`KEPT_LATENTS`] (the oldest go first). Branching
//! continues from one of them.

use std::collections::BTreeMap;

use candle_core::Tensor;

use super::shared::KEPT_LATENTS;

#[derive(Debug, Default)]
pub(super) struct Timeline {
    /// Iterations only grow within a session, so the first entry is the oldest.
    kept: BTreeMap<usize, Tensor>,
}

impl Timeline {
    pub(super) fn keep(&mut self, iteration: usize, latent: Tensor) {
        self.kept.insert(iteration, latent);
        while self.kept.len() > KEPT_LATENTS {
            self.kept.pop_first();
        }
    }

    pub(super) fn get(&self, iteration: usize) -> Option<&Tensor> {
        self.kept.get(&iteration)
    }

    pub(super) fn clear(&mut self) {
        self.kept.clear();
    }

    /// The iterations kept, oldest first.
    #[cfg(test)]
    pub(super) fn iterations(&self) -> Vec<usize> {
        self.kept.keys().copied().collect()
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.kept.len()
    }

    #[cfg(test)]
    pub(super) fn is_empty(&self) -> bool {
        self.kept.is_empty()
    }

    /// "3 kept, 0 to 100", or "none kept": for an error about a frame not kept.
    pub(super) fn describe(&self) -> String {
        match (self.kept.first_key_value(), self.kept.last_key_value()) {
            (Some((a, _)), Some((b, _))) => format!("{} kept, {a} to {b}", self.kept.len()),
            _ => "none kept".to_owned(),
        }
    }
}
