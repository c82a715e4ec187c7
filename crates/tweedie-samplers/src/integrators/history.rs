//! The history of a multistep method: its last few (σ̃ⱼ, stateⱼ) entries, newest first. An entry
//! is either the model's output itself (moved in, never copied) or formed by the step's own
//! update pass in the buffer of the entry it displaces, so that steps allocate nothing and
//! make no pass of their own once the history is full.

use std::collections::VecDeque;

/// Up to `cap` entries, newest first (`iter` gives the newest first, `iter().rev()` the oldest).
pub(crate) struct History<S> {
    items: VecDeque<(f64, S)>,
    cap: usize,
}

impl<S> History<S> {
    /// A history of at most `cap` entries (0: it keeps nothing).
    pub(crate) fn new(cap: usize) -> Self {
        History {
            items: VecDeque::with_capacity(cap + 1),
            cap,
        }
    }

    /// Pushes (σ̃, v) as the newest entry; once the history is full the oldest leaves.
    pub(crate) fn push(&mut self, sigma: f64, v: S) {
        if self.cap == 0 {
            return;
        }
        if self.items.len() >= self.cap {
            self.items.pop_back();
        }
        self.items.push_front((sigma, v));
    }

    /// Makes room for the next entry: once the history is full its oldest entry leaves and its
    /// buffer is returned, for the next entry to be written into; `None` while it fills.
    pub(crate) fn make_room(&mut self) -> Option<S> {
        if self.cap > 0 && self.items.len() >= self.cap {
            self.items.pop_back().map(|(_, b)| b)
        } else {
            None
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }

    /// Entries, newest first.
    pub(crate) fn iter(
        &self,
    ) -> impl DoubleEndedIterator<Item = &(f64, S)> + ExactSizeIterator + Clone {
        self.items.iter()
    }

    /// Entry k (0: the newest).
    pub(crate) fn get(&self, k: usize) -> Option<&(f64, S)> {
        self.items.get(k)
    }
}
