//! Walking an error's `source()` chain: every link, the first link of a type, and a `Display`
//! of the whole chain.
//!
//! Layers wrap errors (failover's [`EndpointError`](crate::EndpointError), a breaker's or a
//! retry layer's own errors), so what a caller looks for is often a few links down.

use std::{error::Error, fmt, io};

/// The longest chain walked; deeper links are ignored (a defence against cyclic `source()`s).
const MAX_DEPTH: usize = 32;

/// `err` and the errors under it, outermost first.
///
/// `std::io::Error` hides a custom inner error from `source()`; the walk descends through
/// `io::Error::get_ref` too. At most 32 links are visited.
///
/// ```
/// use tower_fault::{EndpointError, EndpointId, chain};
///
/// let io = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
/// let err = EndpointError::new(EndpointId(0), "primary".into(), io.into());
/// assert_eq!(chain(&err).count(), 2);
/// ```
pub fn chain<'a>(
    err: &'a (dyn Error + 'static),
) -> impl Iterator<Item = &'a (dyn Error + 'static)> {
    let mut next = Some(err);
    std::iter::from_fn(move || {
        let link = next?;
        next = match link
            .downcast_ref::<io::Error>()
            .and_then(io::Error::get_ref)
        {
            Some(inner) => Some(inner as &(dyn Error + 'static)),
            None => link.source(),
        };
        Some(link)
    })
    .take(MAX_DEPTH)
}

/// The first error of type `T` in `err`'s chain (`err` itself included).
///
/// ```
/// use tower_fault::{EndpointError, EndpointId, find};
///
/// let io = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
/// let err = EndpointError::new(EndpointId(0), "primary".into(), io.into());
/// let io = find::<std::io::Error>(&err).unwrap();
/// assert_eq!(io.kind(), std::io::ErrorKind::ConnectionReset);
/// ```
#[must_use]
pub fn find<'a, T: Error + 'static>(err: &'a (dyn Error + 'static)) -> Option<&'a T> {
    chain(err).find_map(|link| link.downcast_ref::<T>())
}

/// Displays an error followed by its causes: `outer: inner: root`.
///
/// An error that keeps its cause in `source()` (as it should) prints only its own message with
/// `{}`; this prints what a log line or a 502 body needs.
///
/// ```
/// use tower_fault::{DisplayChain, EndpointError, EndpointId};
///
/// let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
/// let err = EndpointError::new(EndpointId(0), "primary".into(), io.into());
/// assert_eq!(DisplayChain(&err).to_string(), "endpoint `primary` failed: connection refused");
/// ```
#[derive(Clone, Copy)]
pub struct DisplayChain<'a>(pub &'a (dyn Error + 'static));

impl fmt::Display for DisplayChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `source()` only: an `io::Error` already displays the error it wraps, so descending
        // into it as `chain` does would print that message twice.
        write!(f, "{}", self.0)?;
        let mut next = self.0.source();
        for _ in 1..MAX_DEPTH {
            let Some(link) = next else { break };
            write!(f, ": {link}")?;
            next = link.source();
        }
        Ok(())
    }
}

impl fmt::Debug for DisplayChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Cyclic;
    impl fmt::Display for Cyclic {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("cyclic")
        }
    }
    impl Error for Cyclic {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&Cyclic)
        }
    }

    #[test]
    fn a_cyclic_chain_ends() {
        assert_eq!(chain(&Cyclic).count(), MAX_DEPTH);
        assert!(find::<io::Error>(&Cyclic).is_none());
    }

    #[test]
    fn display_chain_prints_each_cause_once() {
        let io = io::Error::new(io::ErrorKind::ConnectionRefused, "refused");
        let err = crate::EndpointError::new(crate::EndpointId(0), "a".into(), io.into());
        assert_eq!(
            DisplayChain(&err).to_string(),
            "endpoint `a` failed: refused"
        );
        assert_eq!(
            DisplayChain(&Cyclic).to_string().matches("cyclic").count(),
            MAX_DEPTH
        );
    }

    #[test]
    fn io_errors_are_descended() {
        let inner = crate::Rejected::new(crate::RejectReason::BreakerOpen, None);
        let err = io::Error::other(inner);
        assert!(find::<crate::Rejected>(&err).is_some());
        assert_eq!(chain(&err).count(), 2);
    }
}
