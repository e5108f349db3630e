//! Undo and redo of every edit of the studio's state — prompts, weights, regions, images,
//! settings, the animation's — whether or not a run is going on: snapshots of
//! [`StudioState`], each taken once an edit settles (a text field's when it is left, a
//! slider's or a brush stroke's when the button is let go). Undoing an edit that
//! steers a live run steers it back (the usual steering sends what differs from what was
//! sent, and the worker records it in the session like any steering).

use crate::ui::state::StudioState;

/// The most edits kept to undo.
const MAX_STEPS: usize = 200;

/// The edits behind and ahead of the state.
#[derive(Default)]
pub struct History {
    past: Vec<StudioState>,
    future: Vec<StudioState>,
    /// The state as of the last settled edit.
    committed: Option<StudioState>,
}

impl History {
    /// Called every frame: an edit that has settled (`settling` is false: no text field
    /// is being typed in and no button is held) becomes one step to undo.
    pub fn observe(&mut self, state: &StudioState, settling: bool) {
        match &self.committed {
            None => self.committed = Some(state.clone()),
            Some(c) if c != state && !settling => self.commit(state),
            Some(_) => {}
        }
    }

    /// Takes `state` as it is without making a step of it (a new seed drawn by Start).
    pub fn absorb(&mut self, state: &StudioState) {
        self.committed = Some(state.clone());
    }

    fn commit(&mut self, state: &StudioState) {
        if let Some(old) = self.committed.replace(state.clone()) {
            self.past.push(old);
            if self.past.len() > MAX_STEPS {
                self.past.remove(0);
            }
        }
        self.future.clear();
    }

    pub fn can_undo(&self, state: &StudioState) -> bool {
        !self.past.is_empty() || self.committed.as_ref().is_some_and(|c| c != state)
    }

    pub fn can_redo(&self) -> bool {
        !self.future.is_empty()
    }

    /// The state before the last edit (an edit still under way counts as one), if any.
    pub fn undo(&mut self, state: &StudioState) -> Option<StudioState> {
        if self.committed.as_ref().is_some_and(|c| c != state) {
            self.commit(state);
        }
        let previous = self.past.pop()?;
        if let Some(now) = self.committed.replace(previous.clone()) {
            self.future.push(now);
        }
        Some(previous)
    }

    /// The state the last undo left, if nothing was edited since.
    pub fn redo(&mut self) -> Option<StudioState> {
        let next = self.future.pop()?;
        if let Some(now) = self.committed.replace(next.clone()) {
            self.past.push(now);
        }
        Some(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_seed(seed: u64) -> StudioState {
        let mut s = StudioState::default();
        s.settings.seed = seed;
        s
    }

    #[test]
    fn settled_edits_undo_and_redo_in_order() {
        let mut h = History::default();
        h.observe(&with_seed(1), false);
        h.observe(&with_seed(2), true); // still being edited: no step yet
        assert!(h.can_undo(&with_seed(2)));
        h.observe(&with_seed(3), false);
        h.observe(&with_seed(4), false);
        assert_eq!(h.undo(&with_seed(4)).map(|s| s.settings.seed), Some(3));
        assert_eq!(h.undo(&with_seed(3)).map(|s| s.settings.seed), Some(1));
        assert!(h.undo(&with_seed(1)).is_none());
        assert_eq!(h.redo().map(|s| s.settings.seed), Some(3));
        // A new edit drops what was ahead.
        h.observe(&with_seed(9), false);
        assert!(!h.can_redo());
        // An edit under way is undone whole.
        assert_eq!(h.undo(&with_seed(10)).map(|s| s.settings.seed), Some(9));
        // What Start changes is not a step.
        h.absorb(&with_seed(77));
        assert_eq!(h.undo(&with_seed(77)).map(|s| s.settings.seed), Some(3));
    }
}
