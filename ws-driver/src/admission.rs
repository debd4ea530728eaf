//! Counting the connections a hub holds against [`App::max_connections`]: every
//! accepted stream takes a slot from its accept until its task ends, the handshake
//! included (a stream in its handshake holds a socket and a task as much as an
//! upgraded one).
//!
//! Past the bound a connection is refused with an answer the client understands
//! (HTTP 503 with `Retry-After` on WebSocket, close code 1013 on raw TCP). The
//! refusal reads the request first, so that closing never resets a socket whose
//! request is unread (a reset can destroy the answer before the client reads it),
//! and those reads hold sockets too: they are bounded as well, by a margin above the
//! bound. Past the margin a stream is dropped without a word.
//!
//! [`App::max_connections`]: crate::App::max_connections

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use ws_proto::handshake::Rejection;

/// The `Retry-After` of a 503 at the connection bound, in seconds: long enough that a
/// crowd of reconnecting clients does not come straight back, short enough that a
/// client retries soon once connections close.
const RETRY_AFTER_SECONDS: &str = "5";

/// The reason a refused connection is given.
pub(crate) const REFUSAL_REASON: &str = "the server is at its connection limit; try again later";

/// The refusal of a request past the bound: 503 with `Retry-After`. The one answer
/// of every way in (the accept loop's upgrade, axum's `mount`, `serve_router`).
pub fn refuse_at_capacity() -> Rejection {
    Rejection::refused(503, REFUSAL_REASON)
        .and_then(|refusal| refusal.with_header("Retry-After", RETRY_AFTER_SECONDS))
        .expect("503 and a valid header")
}

/// The open connections of a hub and the bound they are held to. Shared by every
/// clone of the hub and its handle.
#[derive(Debug)]
pub(crate) struct Admissions {
    /// Streams accepted and not yet finished: connections, handshakes, refusals.
    open: AtomicUsize,
    /// Connections admitted at most (`usize::MAX`: no bound).
    max: usize,
    /// Streams held at most, refusals included; past it a stream is dropped at once.
    ceiling: usize,
    /// Connections refused or dropped at the bound, for the Prometheus counter.
    refused: AtomicU64,
}

/// What a newly accepted stream may do ([`Hub::admit_connection`](crate::Hub::admit_connection)).
#[derive(Debug)]
pub enum Admission {
    /// Serve it; the slot is held for as long as the connection lives.
    Admitted(ConnectionSlot),
    /// Read its request and refuse it (503, or 1013 on raw TCP); the slot is held
    /// while that is done.
    Refused(ConnectionSlot),
    /// Drop it at once: refusals fill the margin.
    Dropped,
}

/// One stream counted against the bound, from its accept until dropped.
#[derive(Debug)]
pub struct ConnectionSlot(Arc<Admissions>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Release);
    }
}

impl Admissions {
    /// A bound of `max` connections (`None`: none; the streams are still counted).
    pub(crate) fn new(max: Option<usize>) -> Self {
        let max = max.unwrap_or(usize::MAX);
        // Room to refuse politely: an eighth of the bound, at least 16.
        let margin = (max / 8).max(16);
        Self {
            open: AtomicUsize::new(0),
            max,
            ceiling: max.saturating_add(margin),
            refused: AtomicU64::new(0),
        }
    }

    /// Counts one newly accepted stream and says what it may do.
    pub(crate) fn admit(self: &Arc<Self>) -> Admission {
        // Counted first, then judged: concurrent accepts never both take the last slot.
        let before = self.open.fetch_add(1, Ordering::AcqRel);
        let slot = ConnectionSlot(self.clone());
        if before < self.max {
            return Admission::Admitted(slot);
        }
        self.refused.fetch_add(1, Ordering::Relaxed);
        if before < self.ceiling {
            Admission::Refused(slot)
        } else {
            Admission::Dropped
        }
    }

    /// Takes a slot for a connection whose request another server already read (axum's
    /// `mount`): `None` at the bound, to be answered with 503.
    pub(crate) fn try_admit(self: &Arc<Self>) -> Option<ConnectionSlot> {
        match self.admit() {
            Admission::Admitted(slot) => Some(slot),
            Admission::Refused(_) | Admission::Dropped => None,
        }
    }

    /// Connections refused or dropped at the bound since the hub started.
    pub(crate) fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn past_the_bound_streams_are_refused_then_past_the_margin_dropped() {
        let admissions = Arc::new(Admissions::new(Some(2)));
        let a = admissions.admit();
        let b = admissions.admit();
        assert!(matches!(a, Admission::Admitted(_)));
        assert!(matches!(b, Admission::Admitted(_)));
        // The margin of a small bound is 16 refusals.
        let refused: Vec<_> = (0..16).map(|_| admissions.admit()).collect();
        assert!(refused.iter().all(|r| matches!(r, Admission::Refused(_))));
        assert!(matches!(admissions.admit(), Admission::Dropped));
        assert_eq!(admissions.refused(), 17);
        // A dropped stream holds nothing; refusals and connections free their slots.
        drop(refused);
        assert!(matches!(admissions.admit(), Admission::Refused(_)));
        drop(a);
        let c = admissions.try_admit();
        assert!(c.is_some());
        assert!(admissions.try_admit().is_none());
        drop(b);
        assert!(admissions.try_admit().is_some());
        assert_eq!(admissions.refused(), 19);
    }

    #[test]
    fn without_a_bound_every_stream_is_admitted() {
        let admissions = Arc::new(Admissions::new(None));
        let slots: Vec<_> = (0..1000).map(|_| admissions.admit()).collect();
        assert!(slots.iter().all(|s| matches!(s, Admission::Admitted(_))));
        assert_eq!(admissions.refused(), 0);
    }
}
