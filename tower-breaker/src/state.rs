//! The breaker's states and their packed atomic representation.

use std::fmt;

/// The state of a circuit breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum State {
    /// Calls flow and are recorded; the trip rules are evaluated.
    Closed,
    /// Calls are rejected until the open duration elapses.
    Open,
    /// A bounded number of probe calls is admitted; their outcome closes or re-opens the breaker.
    HalfOpen,
    /// Manually opened ([`Breaker::force_open`](crate::Breaker::force_open)): every call is
    /// rejected until [`Breaker::reset`](crate::Breaker::reset).
    ForcedOpen,
    /// Manually closed ([`Breaker::force_closed`](crate::Breaker::force_closed)): every call is
    /// admitted and nothing is recorded.
    ForcedClosed,
    /// Metrics only ([`Breaker::disable`](crate::Breaker::disable)): every call is admitted and
    /// recorded in the window and metrics, but the breaker never trips.
    Disabled,
}

impl State {
    pub(crate) const fn code(self) -> u64 {
        match self {
            State::Closed => 0,
            State::HalfOpen => 1,
            State::Open => 2,
            State::ForcedOpen => 3,
            State::ForcedClosed => 4,
            State::Disabled => 5,
        }
    }

    pub(crate) const fn from_code(code: u64) -> State {
        match code {
            0 => State::Closed,
            1 => State::HalfOpen,
            2 => State::Open,
            3 => State::ForcedOpen,
            4 => State::ForcedClosed,
            _ => State::Disabled,
        }
    }

    /// A short stable label (`closed`, `open`, `half_open`, `forced_open`, `forced_closed`,
    /// `disabled`) for logs and metrics.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
            State::ForcedOpen => "forced_open",
            State::ForcedClosed => "forced_closed",
            State::Disabled => "disabled",
        }
    }

    /// The value of the `breaker_state` gauge: 0 closed (also forced closed and disabled),
    /// 1 half-open, 2 open (also forced open).
    #[must_use]
    pub const fn gauge_value(self) -> f64 {
        match self {
            State::Closed | State::ForcedClosed | State::Disabled => 0.0,
            State::HalfOpen => 1.0,
            State::Open | State::ForcedOpen => 2.0,
        }
    }

    /// Whether calls may be rejected in this state (open or half-open) — what the keyed
    /// breakers' open-fraction guard counts.
    #[must_use]
    pub const fn is_ejecting(self) -> bool {
        matches!(self, State::Open | State::HalfOpen)
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// The state word: `generation << 3 | state code`. The generation grows by one on every
/// transition, so an outcome of a call admitted before a transition is recognised and dropped.
pub(crate) const fn pack(generation: u64, state: State) -> u64 {
    (generation << 3) | state.code()
}

pub(crate) const fn unpack(word: u64) -> (u64, State) {
    (word >> 3, State::from_code(word & 0b111))
}

/// The half-open word: `generation (22 bits) | failures (14) | successes (14) | in flight (14)`.
///
/// Permits are at most 10 000, so each count fits in 14 bits; the generation is the state
/// word's, truncated (a probe admitted four million transitions ago is not a concern).
pub(crate) mod half_open {
    const COUNT_BITS: u32 = 14;
    const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;
    const GENERATION_MASK: u64 = (1 << 22) - 1;

    /// One success, as an increment of the word.
    pub(crate) const SUCCESS: u64 = 1 << COUNT_BITS;
    /// One failure, as an increment of the word.
    pub(crate) const FAILURE: u64 = 1 << (2 * COUNT_BITS);

    pub(crate) const fn pack(
        generation: u64,
        failures: u64,
        successes: u64,
        in_flight: u64,
    ) -> u64 {
        ((generation & GENERATION_MASK) << (3 * COUNT_BITS))
            | ((failures & COUNT_MASK) << (2 * COUNT_BITS))
            | ((successes & COUNT_MASK) << COUNT_BITS)
            | (in_flight & COUNT_MASK)
    }

    pub(crate) const fn generation_matches(word: u64, generation: u64) -> bool {
        (word >> (3 * COUNT_BITS)) == (generation & GENERATION_MASK)
    }

    pub(crate) const fn failures(word: u64) -> u64 {
        (word >> (2 * COUNT_BITS)) & COUNT_MASK
    }

    pub(crate) const fn successes(word: u64) -> u64 {
        (word >> COUNT_BITS) & COUNT_MASK
    }

    pub(crate) const fn in_flight(word: u64) -> u64 {
        word & COUNT_MASK
    }

    /// Probes admitted in this half-open period so far: in flight or judged.
    pub(crate) const fn admitted(word: u64) -> u64 {
        in_flight(word) + successes(word) + failures(word)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_word_round_trips() {
        for state in [
            State::Closed,
            State::Open,
            State::HalfOpen,
            State::ForcedOpen,
            State::ForcedClosed,
            State::Disabled,
        ] {
            assert_eq!(unpack(pack(12345, state)), (12345, state));
        }
        let w = half_open::pack(7, 4, 2, 3);
        assert!(half_open::generation_matches(w, 7));
        assert!(!half_open::generation_matches(w, 8));
        assert_eq!(
            (
                half_open::failures(w),
                half_open::successes(w),
                half_open::in_flight(w)
            ),
            (4, 2, 3)
        );
        assert_eq!(half_open::admitted(w), 9);
        let w = half_open::pack(7, 10_000, 10_000, 10_000);
        assert_eq!(half_open::admitted(w), 30_000);
        assert!(half_open::generation_matches(w + half_open::SUCCESS - 1, 7));
    }
}
