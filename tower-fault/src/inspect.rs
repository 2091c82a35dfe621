//! Error inspection: walks an error's `source()` chain and reports what kind of fault it is.
//!
//! Recognition is by downcasting to the concrete error types of the clients the suite wraps —
//! never by matching message strings.

use std::{error::Error, io, time::Duration};

use crate::{Delivery, RejectReason, Rejected, RetryAfterHint};

/// What kind of transport-level fault an error is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The connection could not be established (refused, DNS, TLS handshake, connect timeout):
    /// the request was not sent.
    Connect,
    /// The HTTP/2 server refused the stream (`REFUSED_STREAM`): the request was not processed.
    RefusedStream,
    /// A local layer rejected the request without sending it ([`Rejected`]).
    Rejected,
    /// No answer in time (tower's or tokio's `Elapsed`, hyper/reqwest timeouts, io `TimedOut`).
    Timeout,
    /// The connection was reset, aborted or closed after the request was (possibly) written.
    Reset,
    /// The response ended before it was complete (unexpected EOF, incomplete message).
    Incomplete,
    /// The peer spoke invalid HTTP.
    Protocol,
    /// The request or response body failed (decode errors, a failing request body stream).
    Body,
    /// The request was invalid before it left (a builder error, a user error in hyper).
    Request,
    /// Nothing recognisable in the chain.
    Other,
}

impl ErrorKind {
    /// Every kind, in declaration order.
    pub const ALL: [ErrorKind; 10] = [
        ErrorKind::Connect,
        ErrorKind::RefusedStream,
        ErrorKind::Rejected,
        ErrorKind::Timeout,
        ErrorKind::Reset,
        ErrorKind::Incomplete,
        ErrorKind::Protocol,
        ErrorKind::Body,
        ErrorKind::Request,
        ErrorKind::Other,
    ];

    /// A short stable label, e.g. for metrics.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Connect => "connect",
            ErrorKind::RefusedStream => "refused_stream",
            ErrorKind::Rejected => "rejected",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Reset => "reset",
            ErrorKind::Incomplete => "incomplete",
            ErrorKind::Protocol => "protocol",
            ErrorKind::Body => "body",
            ErrorKind::Request => "request",
            ErrorKind::Other => "other",
        }
    }

    /// Whether a fault of this kind proves the request was not processed.
    #[must_use]
    pub const fn delivery(self) -> Delivery {
        match self {
            ErrorKind::Connect | ErrorKind::RefusedStream => Delivery::NotProcessed,
            ErrorKind::Rejected => Delivery::LocallyRejected,
            _ => Delivery::MaybeProcessed,
        }
    }

    pub(crate) const fn index(self) -> usize {
        self as usize
    }

    /// When several links of a chain say different things, the most specific wins: a connect
    /// error wrapping an io `TimedOut` is a connect error (nothing was sent).
    const fn precedence(self) -> u8 {
        match self {
            ErrorKind::Rejected => 100,
            ErrorKind::RefusedStream => 90,
            ErrorKind::Connect => 80,
            // A failing request body surfaces as a hyper "user" error wrapping the body's own
            // error: the body is the cause, so it outranks the generic request error.
            ErrorKind::Body => 75,
            ErrorKind::Request => 70,
            ErrorKind::Timeout => 50,
            ErrorKind::Reset => 40,
            ErrorKind::Incomplete => 30,
            ErrorKind::Protocol => 20,
            ErrorKind::Other => 0,
        }
    }
}

/// What [`inspect`] found in an error chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorInfo {
    /// The most specific fault kind found.
    pub kind: ErrorKind,
    /// A retry-after hint carried by a [`Rejected`] in the chain.
    pub retry_after: Option<Duration>,
    /// The reason of a [`Rejected`] in the chain.
    pub rejected: Option<RejectReason>,
}

/// Walks `err` and its `source()` chain and reports the most specific fault kind found.
///
/// `std::io::Error` hides its inner error from `source()`, so the walk also descends through
/// `io::Error::get_ref`.
///
/// ```
/// use std::io;
/// use tower_fault::{ErrorKind, inspect};
///
/// let err = io::Error::new(io::ErrorKind::ConnectionRefused, "refused");
/// assert_eq!(inspect(&err).kind, ErrorKind::Connect);
/// ```
#[must_use]
pub fn inspect(err: &(dyn Error + 'static)) -> ErrorInfo {
    let mut info = ErrorInfo {
        kind: ErrorKind::Other,
        retry_after: None,
        rejected: None,
    };
    for link in crate::chain(err) {
        if let Some(rejected) = link.downcast_ref::<Rejected>() {
            info.retry_after = info.retry_after.or(rejected.retry_after());
            info.rejected = info.rejected.or(Some(rejected.reason()));
        }
        if let Some(kind) = kind_of(link)
            && kind.precedence() > info.kind.precedence()
        {
            info.kind = kind;
        }
    }
    info
}

/// What one link of the chain says by itself.
fn kind_of(link: &(dyn Error + 'static)) -> Option<ErrorKind> {
    if link.is::<Rejected>() {
        return Some(ErrorKind::Rejected);
    }
    #[cfg(feature = "h2")]
    if let Some(e) = link.downcast_ref::<h2::Error>() {
        return h2_kind(e);
    }
    #[cfg(feature = "hyper-util")]
    if let Some(e) = link.downcast_ref::<hyper_util::client::legacy::Error>() {
        return hyper_util_kind(e);
    }
    #[cfg(feature = "hyper")]
    if let Some(e) = link.downcast_ref::<hyper::Error>() {
        return hyper_kind(e);
    }
    if let Some(e) = link.downcast_ref::<io::Error>() {
        return io_kind(e.kind());
    }
    if link.is::<tower::timeout::error::Elapsed>() || link.is::<tokio::time::error::Elapsed>() {
        return Some(ErrorKind::Timeout);
    }
    #[cfg(feature = "reqwest")]
    if let Some(e) = link.downcast_ref::<::reqwest::Error>() {
        return reqwest_kind(e);
    }
    None
}

#[cfg(feature = "h2")]
fn h2_kind(e: &h2::Error) -> Option<ErrorKind> {
    // REFUSED_STREAM proves the request was not processed when the peer reset the stream with
    // it (or an error was made of the bare reason). `reason()` is also the code of a GOAWAY,
    // which h2 hands to every stream still open, including ones the server may have
    // processed; and a reset this side sent says nothing about the server: both are resets,
    // whatever their code.
    let refused = e.reason() == Some(h2::Reason::REFUSED_STREAM)
        && !e.is_go_away()
        && (e.is_remote() || !e.is_reset());
    if refused {
        return Some(ErrorKind::RefusedStream);
    }
    // `h2::Error` has no `source()`: its io error is read here or not at all.
    if let Some(io) = e.get_io() {
        return io_kind(io.kind());
    }
    Some(ErrorKind::Reset)
}

#[cfg(feature = "hyper-util")]
fn hyper_util_kind(e: &hyper_util::client::legacy::Error) -> Option<ErrorKind> {
    if e.is_connect() {
        return Some(ErrorKind::Connect);
    }
    // The legacy client refuses some requests before sending anything (a relative URI, an
    // HTTP version or method the connection cannot carry), with an error that has no source
    // and no accessor: only its text (`client error (UserAbsoluteUriRequired)`) names the kind.
    // A caller's bug: permanent, and nothing an upstream should be blamed for.
    if e.source().is_none() && e.to_string().starts_with("client error (User") {
        return Some(ErrorKind::Request);
    }
    None
}

#[cfg(feature = "hyper")]
fn hyper_kind(e: &hyper::Error) -> Option<ErrorKind> {
    if e.is_timeout() {
        Some(ErrorKind::Timeout)
    } else if e.is_incomplete_message() {
        Some(ErrorKind::Incomplete)
    } else if e.is_canceled() || e.is_closed() || e.is_body_write_aborted() {
        Some(ErrorKind::Reset)
    } else if e.is_parse() || e.is_parse_status() {
        Some(ErrorKind::Protocol)
    } else if e.is_user() {
        Some(ErrorKind::Request)
    } else {
        None
    }
}

fn io_kind(kind: io::ErrorKind) -> Option<ErrorKind> {
    match kind {
        io::ErrorKind::ConnectionRefused | io::ErrorKind::AddrNotAvailable => {
            Some(ErrorKind::Connect)
        }
        io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe
        | io::ErrorKind::NotConnected => Some(ErrorKind::Reset),
        io::ErrorKind::TimedOut => Some(ErrorKind::Timeout),
        io::ErrorKind::UnexpectedEof => Some(ErrorKind::Incomplete),
        _ => None,
    }
}

#[cfg(feature = "reqwest")]
fn reqwest_kind(e: &::reqwest::Error) -> Option<ErrorKind> {
    if e.is_connect() {
        Some(ErrorKind::Connect)
    } else if e.is_timeout() {
        Some(ErrorKind::Timeout)
    } else if e.is_builder() || e.is_redirect() {
        Some(ErrorKind::Request)
    } else if e.is_body() || e.is_decode() {
        Some(ErrorKind::Body)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Wrapper(Box<dyn Error + Send + Sync>);
    impl std::fmt::Display for Wrapper {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.pad("wrapper")
        }
    }
    impl Error for Wrapper {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&*self.0)
        }
    }

    #[test]
    fn io_kinds() {
        let cases = [
            (io::ErrorKind::ConnectionRefused, ErrorKind::Connect),
            (io::ErrorKind::ConnectionReset, ErrorKind::Reset),
            (io::ErrorKind::ConnectionAborted, ErrorKind::Reset),
            (io::ErrorKind::TimedOut, ErrorKind::Timeout),
            (io::ErrorKind::UnexpectedEof, ErrorKind::Incomplete),
            (io::ErrorKind::InvalidData, ErrorKind::Other),
        ];
        for (io_kind, expected) in cases {
            let err = io::Error::new(io_kind, "x");
            assert_eq!(inspect(&err).kind, expected, "{io_kind:?}");
        }
    }

    #[test]
    fn walks_through_io_error_inner_and_wrappers() {
        let rejected = Rejected::new(RejectReason::BreakerOpen, Some(Duration::from_secs(7)));
        let io = io::Error::other(Wrapper(Box::new(rejected)));
        let outer = Wrapper(Box::new(io));
        let info = inspect(&outer);
        assert_eq!(info.kind, ErrorKind::Rejected);
        assert_eq!(info.retry_after, Some(Duration::from_secs(7)));
        assert_eq!(info.rejected, Some(RejectReason::BreakerOpen));
    }

    #[test]
    fn connect_beats_timeout_in_one_chain() {
        let timeout = io::Error::new(io::ErrorKind::TimedOut, "connect timeout");
        let refused = io::Error::new(io::ErrorKind::ConnectionRefused, Wrapper(Box::new(timeout)));
        assert_eq!(inspect(&refused).kind, ErrorKind::Connect);
    }

    #[test]
    fn elapsed_is_timeout() {
        let e = tower::timeout::error::Elapsed::new();
        assert_eq!(inspect(&e).kind, ErrorKind::Timeout);
    }

    #[cfg(feature = "h2")]
    #[test]
    fn h2_refused_stream() {
        let e = h2::Error::from(h2::Reason::REFUSED_STREAM);
        assert_eq!(inspect(&e).kind, ErrorKind::RefusedStream);
        assert_eq!(ErrorKind::RefusedStream.delivery(), Delivery::NotProcessed);
        let other = h2::Error::from(h2::Reason::INTERNAL_ERROR);
        assert_eq!(inspect(&other).kind, ErrorKind::Reset);
    }
}
