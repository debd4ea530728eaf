//! The seam between the drive loops (the server's connection task, the client's task)
//! and the wire: a [`Transport`] carries whole messages both ways and closes with a
//! code and a reason. WebSocket is one implementation, the length-prefixed framing of
//! raw TCP another (both [`StreamTransport`]s over a byte stream), an in-memory pair
//! ([`memory`]) a third; an application can write its own.
//!
//! The calls are `poll`-style so that one task reads, writes and waits for the hub
//! at once without splitting the transport: a peer that stops reading stalls only its
//! own write, and everything queued while a write was in flight leaves in the next
//! one (corking).

pub mod memory;
mod stream;

use std::io;
use std::task::{Context, Poll};

use bytes::Bytes;
use ws_proto::envelope::Codec;
use ws_proto::{CloseCode, ConnectionState, Event, SendError};

pub use crate::prefixed::dial_prefixed;
pub use stream::{Framing, StreamTransport};

/// A message-oriented duplex that tether's server and client run over.
///
/// Sending queues ([`feed_text`](Self::feed_text), [`close`](Self::close));
/// [`poll_flush`](Self::poll_flush) writes what is queued, in as few writes as the
/// transport can; [`poll_recv`](Self::poll_recv) yields what the peer sent. The drive
/// loops call them from one task, one after the other.
///
/// The closing handshake is WebSocket's: the side that closes first sends its close
/// and reads on until the peer's answer ([`ConnectionState::Closing`]); a transport
/// that receives a close answers it itself and is [`ConnectionState::Closed`]. A
/// transport that has no close of its own (a stream that just ends) reports its end as
/// [`Event::Close`] with 1006.
pub trait Transport: Send + 'static {
    /// Queues a text message: `body` followed by `tail`, valid UTF-8 together (the
    /// caller's guarantee). `Err` once closing.
    fn feed_text(&mut self, body: &Bytes, tail: &[u8]) -> Result<(), SendError>;

    /// Queues a binary message. `Err` once closing.
    fn feed_binary(&mut self, data: &Bytes) -> Result<(), SendError>;

    /// The envelope codec its handshake agreed on (a client's view: what the server
    /// named in the WebSocket upgrade). JSON for transports that do not negotiate one.
    fn codec(&self) -> Codec {
        Codec::Json
    }

    /// Queues a binary message made of `body` then `tail` (a binary envelope shared by
    /// a broadcast, then this connection's `s`). By default the two are joined and fed
    /// with [`feed_binary`](Self::feed_binary); a transport that can queue them apart
    /// (the WebSocket framing does) overrides it.
    fn feed_binary_parts(&mut self, body: &Bytes, tail: &[u8]) -> Result<(), SendError> {
        if tail.is_empty() {
            return self.feed_binary(body);
        }
        let mut joined = Vec::with_capacity(body.len() + tail.len());
        joined.extend_from_slice(body);
        joined.extend_from_slice(tail);
        self.feed_binary(&Bytes::from(joined))
    }

    /// Queues the close, after what was fed; nothing can be fed after it. `Err` when
    /// closing already, or for a code or reason the wire cannot carry.
    fn close(&mut self, code: CloseCode, reason: &str) -> Result<(), SendError>;

    /// Where the closing handshake stands.
    fn state(&self) -> ConnectionState;

    /// The next thing the peer sent: a message, its close ([`Event::Close`]), its
    /// fault ([`Event::Failed`]: the answering close is queued). `Ready(None)` once
    /// nothing more will come.
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Event>>;

    /// Writes everything queued; `Ready(Ok(()))` once it is all written and flushed.
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;

    /// Whether something is queued or written but not yet flushed: then
    /// [`poll_flush`](Self::poll_flush) has work to do.
    fn wants_flush(&self) -> bool;

    /// Bytes queued and not yet written (the drive loop stops reading past its limit).
    fn unwritten(&self) -> usize;

    /// The bytes of the messages fed (their bodies and tails, not the framing) that
    /// were written since the last call: what the server reports to the engine for
    /// its slow-consumer accounting.
    fn take_written(&mut self) -> usize;

    /// Flushes, then closes the underlying stream or channel.
    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
}

impl<T: Transport + ?Sized> Transport for Box<T> {
    fn feed_text(&mut self, body: &Bytes, tail: &[u8]) -> Result<(), SendError> {
        (**self).feed_text(body, tail)
    }
    fn feed_binary(&mut self, data: &Bytes) -> Result<(), SendError> {
        (**self).feed_binary(data)
    }
    fn feed_binary_parts(&mut self, body: &Bytes, tail: &[u8]) -> Result<(), SendError> {
        (**self).feed_binary_parts(body, tail)
    }
    fn codec(&self) -> Codec {
        (**self).codec()
    }
    fn close(&mut self, code: CloseCode, reason: &str) -> Result<(), SendError> {
        (**self).close(code, reason)
    }
    fn state(&self) -> ConnectionState {
        (**self).state()
    }
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        (**self).poll_recv(cx)
    }
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        (**self).poll_flush(cx)
    }
    fn wants_flush(&self) -> bool {
        (**self).wants_flush()
    }
    fn unwritten(&self) -> usize {
        (**self).unwritten()
    }
    fn take_written(&mut self) -> usize {
        (**self).take_written()
    }
    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        (**self).poll_shutdown(cx)
    }
}

/// A transport of any kind, as the client holds the current one.
pub type BoxTransport = Box<dyn Transport>;
