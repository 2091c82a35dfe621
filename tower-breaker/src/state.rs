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

/// The half-open word: `generation (32 bits) | successes (16) | in flight (16)`.
pub(crate) mod half_open {
    pub(crate) const fn pack(generation: u64, successes: u64, in_flight: u64) -> u64 {
        ((generation & 0xFFFF_FFFF) << 32) | ((successes & 0xFFFF) << 16) | (in_flight & 0xFFFF)
    }

    pub(crate) const fn generation_matches(word: u64, generation: u64) -> bool {
        (word >> 32) == (generation & 0xFFFF_FFFF)
    }

    pub(crate) const fn successes(word: u64) -> u64 {
        (word >> 16) & 0xFFFF
    }

    pub(crate) const fn in_flight(word: u64) -> u64 {
        word & 0xFFFF
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
        let w = half_open::pack(7, 2, 3);
        assert!(half_open::generation_matches(w, 7));
        assert!(!half_open::generation_matches(w, 8));
        assert_eq!((half_open::successes(w), half_open::in_flight(w)), (2, 3));
    }
}
