//! Selection: which tier a request may go to (strict priority or spill), and the allocation-free
//! p2c / round-robin pick inside it.

use std::{ops::Range, sync::atomic::Ordering};

use tower_fault::{EndpointId, SeededRng};

use crate::{
    config::{AllDown, Balance, TierPolicy},
    entry::Entry,
    shared::Shared,
    snapshot::{Candidates, Snapshot},
};

/// Tiers up to this size with some endpoint not admitted are picked from a list on the stack.
pub(crate) const INLINE_PICK: usize = 64;

impl<S, C> Shared<S, C> {
    /// The endpoints a request may go to now, or `None` when none is usable.
    pub(crate) fn candidates(&self, snap: &Snapshot<S>, rng: &mut SeededRng) -> Option<Candidates> {
        let range = match self.tier_policy {
            TierPolicy::Strict => snap
                .tiers
                .iter()
                .find(|r| snap.entries[(*r).clone()].iter().any(|e| e.is_healthy()))
                .cloned(),
            TierPolicy::Spill { overprovisioning } => spill_tier(snap, overprovisioning, rng),
        };
        if let Some(range) = range {
            return Some(Candidates {
                range,
                panic: false,
            });
        }
        if self.all_down == AllDown::Panic && !snap.entries.is_empty() {
            return Some(Candidates {
                range: 0..snap.entries.len(),
                panic: true,
            });
        }
        None
    }

    /// The first and (if any) second choice among `cands` (indices into the snapshot).
    ///
    /// One counting pass over the candidate range, and no more in the steady state, where every
    /// endpoint of the range is admitted (the `n`th admitted one is then the `n`th). Otherwise
    /// ranges of up to [`INLINE_PICK`] endpoints are listed into a stack buffer (no allocation)
    /// and larger ones walked again to the chosen ones.
    pub(crate) fn pick(
        &self,
        snap: &Snapshot<S>,
        cands: &Candidates,
        rng: &mut SeededRng,
    ) -> Option<(usize, Option<usize>)> {
        let slice = &snap.entries[cands.range.clone()];
        let base = cands.range.start;
        let mut k = slice.iter().filter(|e| cands.admits(e)).count();
        if k == 0 {
            return None;
        }
        // Made only when some endpoint is not admitted: the buffer is 256 bytes to zero.
        let admitted = if k == slice.len() {
            Admitted::All
        } else if slice.len() <= INLINE_PICK {
            let mut listed = [0u32; INLINE_PICK];
            // Counted again as listed: a status may have changed since the count.
            k = 0;
            for (i, e) in slice.iter().enumerate() {
                if cands.admits(e) {
                    listed[k] = i as u32;
                    k += 1;
                }
            }
            if k == 0 {
                return None;
            }
            Admitted::Listed(listed)
        } else {
            Admitted::Walk
        };
        // The `n`th admitted endpoint (`n < k`). A large range is walked a second time, and a
        // status may have changed since it was counted: then the last admitted one before the
        // walk ran out stands in (or none), never an endpoint that was not admitted.
        let nth = |n: usize| -> Option<usize> {
            match &admitted {
                Admitted::All => Some(base + n),
                Admitted::Listed(listed) => Some(base + listed[n] as usize),
                Admitted::Walk => {
                    let mut last = None;
                    for (seen, (i, _)) in slice
                        .iter()
                        .enumerate()
                        .filter(|(_, e)| cands.admits(e))
                        .enumerate()
                    {
                        last = Some(base + i);
                        if seen == n {
                            break;
                        }
                    }
                    last
                }
            }
        };
        match self.balance {
            Balance::P2c => {
                if k == 1 {
                    return nth(0).map(|a| (a, None));
                }
                let a = rng.below(k as u64) as usize;
                let mut b = rng.below(k as u64 - 1) as usize;
                if b >= a {
                    b += 1;
                }
                let (a, b) = (nth(a)?, nth(b));
                match b.filter(|&b| b != a) {
                    Some(b) if snap.entries[b].load() < snap.entries[a].load() => {
                        Some((b, Some(a)))
                    }
                    b => Some((a, b)),
                }
            }
            Balance::RoundRobin => {
                let n = self.rr.fetch_add(1, Ordering::Relaxed) % k;
                let first = nth(n)?;
                let second = if k > 1 { nth((n + 1) % k) } else { None };
                Some((first, second.filter(|&s| s != first)))
            }
        }
    }

    /// A healthy endpoint this request has not tried yet, preferring the active tier, then the
    /// tiers after it, then those before it.
    pub(crate) fn untried(
        &self,
        snap: &Snapshot<S>,
        cands: Option<&Candidates>,
        tried: &dyn Fn(EndpointId) -> bool,
    ) -> Option<usize> {
        let admits = |e: &Entry<S>| cands.map_or_else(|| e.is_healthy(), |c| c.admits(e));
        let start = cands.map_or(0, |c| c.range.start);
        let n = snap.entries.len();
        (0..n)
            .map(|i| (start + i) % n)
            .find(|&i| admits(&snap.entries[i]) && !tried(snap.entries[i].info.id))
    }
}

/// The tier a request goes to under Envoy-style spill: drawn at random by each tier's share of
/// traffic; `None` when no tier has a healthy endpoint.
fn spill_tier<S>(
    snap: &Snapshot<S>,
    overprovisioning: f64,
    rng: &mut SeededRng,
) -> Option<Range<usize>> {
    let healthy = |r: &Range<usize>| {
        snap.entries[r.clone()]
            .iter()
            .filter(|e| e.is_healthy())
            .count()
    };
    let mut total = 0.0;
    let mut left = 1.0;
    for r in &snap.tiers {
        let share = tier_share(healthy(r), r.len(), overprovisioning, left);
        total += share;
        left -= share;
    }
    if total <= 0.0 {
        return None;
    }
    let mut draw = rng.next_f64() * total;
    let mut left = 1.0;
    let mut last = None;
    for r in &snap.tiers {
        let share = tier_share(healthy(r), r.len(), overprovisioning, left);
        left -= share;
        if share > 0.0 {
            last = Some(r.clone());
            if draw < share {
                return last;
            }
            draw -= share;
        }
    }
    last
}

/// How [`Shared::pick`] finds the `n`th admitted endpoint of a range.
///
/// A value on the stack of one pick: the list's size is the point (boxing it would allocate).
#[expect(clippy::large_enum_variant)]
enum Admitted {
    /// Every endpoint of the range: the `n`th is the `n`th.
    All,
    /// The indices of the admitted ones, in the first `k` places.
    Listed([u32; INLINE_PICK]),
    /// A range larger than the buffer: walked to the `n`th.
    Walk,
}

/// The share of traffic a tier takes under spill (before normalisation).
pub(crate) fn tier_share(healthy: usize, total: usize, overprovisioning: f64, left: f64) -> f64 {
    if total == 0 || left <= 0.0 {
        return 0.0;
    }
    (healthy as f64 / total as f64 * overprovisioning)
        .min(1.0)
        .min(left)
}
