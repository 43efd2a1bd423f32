//! Connection-level failures of an upstream attempt, and whether the request may go again
//! to another endpoint (pure; used by the event loop's exchange, `proxy/exchange`).
//!
//! A failure here is one of the connection, not of the application: refused, unreachable,
//! connect timeout, or a connection reset or closed before any byte of the response
//! arrived. Such failures are not response retries: they need no `isRetryable` route and
//! draw nothing from the retry budget. The request moves to another endpoint when sending
//! it again cannot repeat an effect the upstream already had:
//!
//! - nothing of it was written: always (the upstream cannot have seen it);
//! - something was written and no response byte came back: only requests RFC 9110
//!   (section 9.2.2) lets a client repeat on its own, that is idempotent methods whose body
//!   (if any) went out whole, and requests none of whose body bytes went out. A request
//!   whose body was partly streamed is never sent again, nor one whose copy for replay was
//!   dropped (`Pipe::tap`).
//!
//! Once any byte of a response has arrived, nothing is repeated.
//!
//! A stream the peer refused on a shared HTTP/2 connection (its `REFUSED_STREAM`, or a
//! GOAWAY whose last stream id is below the stream's) was, by RFC 9113 section 8.7, not
//! processed at all: it goes again whatever its method, as long as its bytes are kept.

use std::io;

/// How a connection to an endpoint failed; the `reason` label of
/// `spoke_connect_retries_total` and the client's `l5d-proxy-error` when the request
/// cannot go anywhere else.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnFailure {
    /// The endpoint refused the connection (`ECONNREFUSED`).
    Refused,
    /// No route to the endpoint (`EHOSTUNREACH`, `ENETUNREACH`).
    Unreachable,
    /// The connect did not finish within the connect timeout.
    ConnectTimeout,
    /// Any other error while connecting.
    ConnectError,
    /// The connection was reset (or the write side broken) before a response.
    Reset,
    /// The upstream closed the connection before any byte of a response.
    Closed,
    /// The mTLS handshake failed: the endpoint did not prove the identity
    /// expected of it (or its chain does not verify), or refused ours.
    Tls,
    /// The peer refused the HTTP/2 stream carrying the request, unprocessed.
    StreamRefused,
}

/// The inner error of an `io::Error` that reports a stream the peer refused
/// without processing it (see the module header); `ConnFailure::of_io` reads
/// it as `StreamRefused`.
#[derive(Debug)]
pub struct NotProcessed(pub String);

impl std::fmt::Display for NotProcessed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "stream refused, not processed: {}", self.0)
    }
}

impl std::error::Error for NotProcessed {}

impl NotProcessed {
    /// The `io::Error` carrying it.
    pub fn io_error(why: impl std::fmt::Display) -> io::Error {
        io::Error::new(
            io::ErrorKind::ConnectionAborted,
            NotProcessed(why.to_string()),
        )
    }
}

impl ConnFailure {
    /// The failure of a connect (immediate, or reported on the socket afterwards).
    pub fn of_connect(e: &io::Error) -> ConnFailure {
        if crate::tls::is_tls_error(e) {
            return ConnFailure::Tls;
        }
        match e.kind() {
            io::ErrorKind::ConnectionRefused => ConnFailure::Refused,
            io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable => {
                ConnFailure::Unreachable
            }
            io::ErrorKind::TimedOut => ConnFailure::ConnectTimeout,
            io::ErrorKind::ConnectionReset => ConnFailure::Reset,
            _ => ConnFailure::ConnectError,
        }
    }

    /// The failure of a read or write on an established connection.
    pub fn of_io(e: &io::Error) -> ConnFailure {
        if e.get_ref().is_some_and(|i| i.is::<NotProcessed>()) {
            return ConnFailure::StreamRefused;
        }
        match e.kind() {
            io::ErrorKind::UnexpectedEof | io::ErrorKind::WriteZero => ConnFailure::Closed,
            _ => ConnFailure::Reset,
        }
    }

    /// The failure happened before the connection was established.
    pub fn while_connecting(self) -> bool {
        matches!(
            self,
            ConnFailure::Refused
                | ConnFailure::Unreachable
                | ConnFailure::ConnectTimeout
                | ConnFailure::ConnectError
                | ConnFailure::Tls
        )
    }

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            ConnFailure::Refused => "refused",
            ConnFailure::Unreachable => "unreachable",
            ConnFailure::ConnectTimeout => "connect_timeout",
            ConnFailure::ConnectError => "connect_error",
            ConnFailure::Reset => "reset",
            ConnFailure::Closed => "closed",
            ConnFailure::Tls => "tls",
            ConnFailure::StreamRefused => "refused_stream",
        }
    }

    /// The response when the request can go nowhere else: status, text, and the
    /// `error` label of `response_total` (DESIGN.md's error table).
    pub fn response(self) -> (u16, &'static str, &'static str) {
        match self {
            ConnFailure::Refused => (502, "connection refused", "connect"),
            ConnFailure::Unreachable => (502, "endpoint unreachable", "connect"),
            ConnFailure::ConnectError => (502, "connect failed", "connect"),
            ConnFailure::ConnectTimeout => (504, "connect timeout", "timeout"),
            ConnFailure::Reset => (502, "connection reset before response", "unavailable"),
            ConnFailure::Closed => (502, "connection closed before response", "unavailable"),
            ConnFailure::Tls => (502, "TLS handshake with the endpoint failed", "connect"),
            ConnFailure::StreamRefused => (502, "stream refused by the endpoint", "unavailable"),
        }
    }
}

/// How far a request got on the connection that failed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// Some byte of the request (head or body) was written to the connection.
    pub wrote_any: bool,
    /// Some byte of the request's body was written.
    pub body_sent: bool,
    /// The whole request, body included, was written.
    pub complete: bool,
    /// Everything written is still kept, so it can be written again.
    pub replayable: bool,
    /// Some byte of a final response arrived.
    pub response_started: bool,
}

/// Whether a request that got this far on a failed connection may be sent again on
/// another one (see the module header for the rule).
pub fn may_resend(idempotent: bool, f: ConnFailure, p: Progress) -> bool {
    if p.response_started || !p.replayable {
        return false;
    }
    if f == ConnFailure::StreamRefused || !p.wrote_any || !p.body_sent {
        return true;
    }
    idempotent && p.complete
}

/// Whether the method is idempotent (RFC 9110 section 9.2.2): GET, HEAD, OPTIONS, TRACE,
/// PUT and DELETE.
pub fn idempotent(method: &str) -> bool {
    matches!(
        method,
        "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const R: ConnFailure = ConnFailure::Reset;

    fn p(wrote_any: bool, body_sent: bool, complete: bool) -> Progress {
        Progress {
            wrote_any,
            body_sent,
            complete,
            replayable: true,
            response_started: false,
        }
    }

    #[test]
    fn nothing_written_always_goes_again() {
        assert!(may_resend(false, R, p(false, false, false)));
        assert!(may_resend(true, R, p(false, false, false)));
    }

    #[test]
    fn written_requests_go_again_only_when_rfc_9110_allows() {
        // Head out, body not started: any method (no body byte reached the upstream).
        assert!(may_resend(false, R, p(true, false, false)));
        // A bodiless POST, written whole.
        assert!(may_resend(false, R, p(true, false, true)));
        // A POST whose body went out, whole or in part: never.
        assert!(!may_resend(false, R, p(true, true, true)));
        assert!(!may_resend(false, R, p(true, true, false)));
        // A PUT whose body went out whole: idempotent, so yes; in part: no.
        assert!(may_resend(true, R, p(true, true, true)));
        assert!(!may_resend(true, R, p(true, true, false)));
    }

    #[test]
    fn a_started_response_or_a_lost_copy_stops_everything() {
        let started = Progress {
            response_started: true,
            ..p(false, false, false)
        };
        assert!(!may_resend(true, R, started));
        let lost = Progress {
            replayable: false,
            ..p(true, false, false)
        };
        assert!(!may_resend(true, R, lost));
    }

    #[test]
    fn a_refused_stream_goes_again_whatever_its_method() {
        let f = ConnFailure::StreamRefused;
        // A POST whose body went out, whole or in part, that the peer did not process.
        assert!(may_resend(false, f, p(true, true, true)));
        assert!(may_resend(false, f, p(true, true, false)));
        // But not when its bytes are no longer kept, nor once a response began.
        let lost = Progress {
            replayable: false,
            ..p(true, true, false)
        };
        assert!(!may_resend(false, f, lost));
        let started = Progress {
            response_started: true,
            ..p(true, true, true)
        };
        assert!(!may_resend(false, f, started));
    }

    #[test]
    fn methods() {
        for m in ["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"] {
            assert!(idempotent(m), "{m}");
        }
        for m in ["POST", "PATCH", "CONNECT", "get", "PURGE"] {
            assert!(!idempotent(m), "{m}");
        }
    }

    #[test]
    fn errors_map_to_failures() {
        use io::ErrorKind as K;
        let c = |k: K| ConnFailure::of_connect(&io::Error::from(k));
        assert_eq!(c(K::ConnectionRefused), ConnFailure::Refused);
        assert_eq!(c(K::HostUnreachable), ConnFailure::Unreachable);
        assert_eq!(c(K::NetworkUnreachable), ConnFailure::Unreachable);
        assert_eq!(c(K::TimedOut), ConnFailure::ConnectTimeout);
        assert_eq!(c(K::AddrNotAvailable), ConnFailure::ConnectError);
        let i = |k: K| ConnFailure::of_io(&io::Error::from(k));
        assert_eq!(i(K::ConnectionReset), ConnFailure::Reset);
        assert_eq!(i(K::BrokenPipe), ConnFailure::Reset);
        assert_eq!(i(K::UnexpectedEof), ConnFailure::Closed);
        assert_eq!(
            ConnFailure::of_io(&NotProcessed::io_error("GOAWAY")),
            ConnFailure::StreamRefused
        );
        assert_eq!(i(K::ConnectionAborted), ConnFailure::Reset);
        assert!(ConnFailure::Refused.while_connecting());
        assert!(!ConnFailure::Reset.while_connecting());
        assert_eq!(ConnFailure::ConnectTimeout.response().0, 504);
        assert_eq!(ConnFailure::Closed.response().2, "unavailable");
    }
}
