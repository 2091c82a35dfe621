//! The endpoint list every clone of a failover set reads: entries by tier, replaced wholesale
//! on add and remove; and the candidates a pick chooses from.

use std::{ops::Range, sync::Arc};

use crate::{endpoint::EndpointStatus, entry::Entry};

/// The endpoint list, sorted by tier; replaced wholesale on add/remove.
#[derive(Debug)]
pub(crate) struct Snapshot<S> {
    pub(crate) generation: u64,
    pub(crate) entries: Vec<Arc<Entry<S>>>,
    /// `entries[tiers[t].clone()]` is tier `t` (possibly empty).
    pub(crate) tiers: Vec<Range<usize>>,
}

impl<S> Snapshot<S> {
    pub(crate) fn new(generation: u64, mut entries: Vec<Arc<Entry<S>>>) -> Self {
        entries.sort_by_key(|e| e.info.tier);
        let num_tiers = entries.last().map_or(0, |e| e.info.tier + 1);
        let mut tiers = Vec::with_capacity(num_tiers);
        let mut start = 0;
        for t in 0..num_tiers {
            let end = start
                + entries[start..]
                    .iter()
                    .take_while(|e| e.info.tier == t)
                    .count();
            tiers.push(start..end);
            start = end;
        }
        Self {
            generation,
            entries,
            tiers,
        }
    }

    /// The first tier with a healthy endpoint.
    pub(crate) fn active_tier(&self) -> Option<usize> {
        self.tiers
            .iter()
            .position(|r| self.entries[r.clone()].iter().any(|e| e.is_healthy()))
    }
}

/// Which endpoints a pick may choose from.
#[derive(Debug, Clone)]
pub(crate) struct Candidates {
    pub(crate) range: Range<usize>,
    /// Panic mode: every endpoint that is not removed counts as usable.
    pub(crate) panic: bool,
}

impl Candidates {
    #[inline]
    pub(crate) fn admits<S>(&self, e: &Entry<S>) -> bool {
        if self.panic {
            e.status() != EndpointStatus::Removed
        } else {
            e.is_healthy()
        }
    }
}
