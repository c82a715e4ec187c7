//! The history of a multistep method: its last few (σ̃ⱼ, stateⱼ) entries, newest first, in
//! buffers that are reused, so that steps allocate nothing once the history is full.

use std::collections::VecDeque;

use crate::state::State;

/// Up to `cap` entries, newest first (`iter` gives the newest first, `iter().rev()` the oldest).
pub(crate) struct History<S> {
    items: VecDeque<(f64, S)>,
    cap: usize,
}

impl<S: State> History<S> {
    pub(crate) fn new(cap: usize) -> Self {
        History {
            items: VecDeque::with_capacity(cap + 1),
            cap: cap.max(1),
        }
    }

    /// Pushes (σ̃, Σⱼ cⱼ·yⱼ) as the newest entry, written into the buffer of the entry it
    /// displaces once the history is full (the values of `y₀.lincomb(c₀, y₁, c₁)`, or of
    /// `y₀.scale(c₀)` for one term).
    pub(crate) fn push(&mut self, sigma: f64, terms: &[(f64, &S)]) {
        let mut buf = if self.items.len() >= self.cap {
            self.items.pop_back().map(|(_, b)| b)
        } else {
            None
        };
        let v = match buf.as_mut() {
            Some(b) => {
                b.assign_combination(terms);
                buf
            }
            None => terms.first().map(|(_, y0)| {
                let mut b = y0.zeros_like();
                b.assign_combination(terms);
                b
            }),
        };
        if let Some(v) = v {
            self.items.push_front((sigma, v));
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
