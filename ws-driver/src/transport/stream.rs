//! A [`Transport`] over a byte stream, with a Sans-IO framing deciding the bytes:
//! ws-proto's WebSocket [`Connection`] or its length-prefixed [`PrefixedConnection`].

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use futures_util::io::{AsyncRead, AsyncWrite};
use ws_proto::envelope::Codec;
use ws_proto::prefixed::PrefixedConnection;
use ws_proto::{CloseCode, Connection, ConnectionState, Event, SendError};

use super::Transport;
use crate::buffers::{poll_read_shared, release_write_buffer, with_write_buffer};

/// A Sans-IO message framing over bytes: the calls [`StreamTransport`] makes. ws-proto's
/// two framings implement it; so can an application's own.
pub trait Framing: Send + 'static {
    /// Feeds bytes read from the stream.
    fn handle_bytes(&mut self, data: &[u8]);
    /// Tells it the stream ended.
    fn handle_eof(&mut self);
    /// The next event decoded.
    fn poll_event(&mut self) -> Option<Event>;
    /// Queues a text message (`body` then `tail`, valid UTF-8 together).
    fn send_text_parts(&mut self, body: &Bytes, tail: &[u8]) -> Result<(), SendError>;
    /// Queues a binary message.
    fn send_binary(&mut self, data: &Bytes) -> Result<(), SendError>;
    /// Queues a binary message made of `body` then `tail`; by default joined and sent
    /// with [`send_binary`](Self::send_binary).
    fn send_binary_parts(&mut self, body: &Bytes, tail: &[u8]) -> Result<(), SendError> {
        if tail.is_empty() {
            return self.send_binary(body);
        }
        let mut joined = Vec::with_capacity(body.len() + tail.len());
        joined.extend_from_slice(body);
        joined.extend_from_slice(tail);
        self.send_binary(&Bytes::from(joined))
    }
    /// Queues the close.
    fn close(&mut self, code: CloseCode, reason: &str) -> Result<(), SendError>;
    /// Where the closing handshake stands.
    fn state(&self) -> ConnectionState;
    /// Bytes queued for the stream.
    fn pending_transmit_len(&self) -> usize;
    /// Takes queued bytes.
    fn poll_transmit(&mut self) -> Option<Bytes>;
}

impl Framing for Connection {
    fn handle_bytes(&mut self, data: &[u8]) {
        Connection::handle_bytes(self, data);
    }
    fn handle_eof(&mut self) {
        Connection::handle_eof(self);
    }
    fn poll_event(&mut self) -> Option<Event> {
        Connection::poll_event(self)
    }
    fn send_text_parts(&mut self, body: &Bytes, tail: &[u8]) -> Result<(), SendError> {
        Connection::send_text_parts(self, body, tail)
    }
    fn send_binary(&mut self, data: &Bytes) -> Result<(), SendError> {
        Connection::send_binary_shared(self, data)
    }
    fn send_binary_parts(&mut self, body: &Bytes, tail: &[u8]) -> Result<(), SendError> {
        Connection::send_binary_parts(self, body, tail)
    }
    fn close(&mut self, code: CloseCode, reason: &str) -> Result<(), SendError> {
        Connection::close(self, code, reason)
    }
    fn state(&self) -> ConnectionState {
        Connection::state(self)
    }
    fn pending_transmit_len(&self) -> usize {
        Connection::pending_transmit_len(self)
    }
    fn poll_transmit(&mut self) -> Option<Bytes> {
        Connection::poll_transmit(self)
    }
}

impl Framing for PrefixedConnection {
    fn handle_bytes(&mut self, data: &[u8]) {
        PrefixedConnection::handle_bytes(self, data);
    }
    fn handle_eof(&mut self) {
        PrefixedConnection::handle_eof(self);
    }
    fn poll_event(&mut self) -> Option<Event> {
        PrefixedConnection::poll_event(self)
    }
    fn send_text_parts(&mut self, body: &Bytes, tail: &[u8]) -> Result<(), SendError> {
        PrefixedConnection::send_text_parts(self, body, tail)
    }
    fn send_binary(&mut self, data: &Bytes) -> Result<(), SendError> {
        PrefixedConnection::send_binary(self, data)
    }
    fn close(&mut self, code: CloseCode, reason: &str) -> Result<(), SendError> {
        PrefixedConnection::close(self, code, reason)
    }
    fn state(&self) -> ConnectionState {
        PrefixedConnection::state(self)
    }
    fn pending_transmit_len(&self) -> usize {
        PrefixedConnection::pending_transmit_len(self)
    }
    fn poll_transmit(&mut self) -> Option<Bytes> {
        PrefixedConnection::poll_transmit(self)
    }
}

/// A byte stream and the framing that turns its bytes into messages.
///
/// Writes are corked: everything the framing queued is moved into one buffer and
/// written with as few `write` calls as the stream takes; what is fed meanwhile goes
/// into the next buffer.
///
/// It holds no buffer while idle: each read borrows its thread's read buffer (16 KiB)
/// and the framing copies what it needs; each batch is corked in its thread's write
/// buffer, and only what a write leaves unfinished (a peer that reads slowly) is copied
/// into a buffer of the connection's, given back once written if it grew past 16 KiB.
pub struct StreamTransport<S, F> {
    stream: S,
    framing: F,
    /// The batch a write left unfinished, and how much of it is written since.
    out: Vec<u8>,
    out_written: usize,
    /// A write finished and the stream's flush is still owed.
    flush_owed: bool,
    /// Message bytes fed and not yet in a batch; in the batch being written; written.
    fed: usize,
    in_batch: usize,
    written: usize,
    /// The framing reported its end: nothing more is read.
    ended: bool,
    /// The envelope codec the handshake agreed on ([`with_codec`](Self::with_codec)).
    codec: Codec,
}

impl<S, F> StreamTransport<S, F>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: Framing,
{
    /// `framing` over `stream`, after the handshake; `rest` holds bytes that arrived
    /// with the handshake's last read.
    pub fn new(stream: S, mut framing: F, rest: &[u8]) -> Self {
        if !rest.is_empty() {
            framing.handle_bytes(rest);
        }
        Self {
            stream,
            framing,
            out: Vec::new(),
            out_written: 0,
            flush_owed: false,
            fed: 0,
            in_batch: 0,
            written: 0,
            ended: false,
            codec: Codec::Json,
        }
    }

    /// The same transport, reporting `codec` as the envelope codec its handshake
    /// agreed on ([`Transport::codec`]).
    pub fn with_codec(mut self, codec: Codec) -> Self {
        self.codec = codec;
        self
    }

    /// The framing, for what the transport does not expose.
    pub fn framing(&mut self) -> &mut F {
        &mut self.framing
    }
}

impl<S, F> Transport for StreamTransport<S, F>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: Framing,
{
    fn feed_text(&mut self, body: &Bytes, tail: &[u8]) -> Result<(), SendError> {
        self.framing.send_text_parts(body, tail)?;
        self.fed += body.len() + tail.len();
        Ok(())
    }

    fn feed_binary(&mut self, data: &Bytes) -> Result<(), SendError> {
        self.framing.send_binary(data)?;
        self.fed += data.len();
        Ok(())
    }

    fn feed_binary_parts(&mut self, body: &Bytes, tail: &[u8]) -> Result<(), SendError> {
        self.framing.send_binary_parts(body, tail)?;
        self.fed += body.len() + tail.len();
        Ok(())
    }

    fn codec(&self) -> Codec {
        self.codec
    }

    fn close(&mut self, code: CloseCode, reason: &str) -> Result<(), SendError> {
        self.framing.close(code, reason)
    }

    fn state(&self) -> ConnectionState {
        self.framing.state()
    }

    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        loop {
            if let Some(event) = self.framing.poll_event() {
                return Poll::Ready(Some(event));
            }
            if self.ended || self.framing.state() == ConnectionState::Closed {
                self.ended = true;
                return Poll::Ready(None);
            }
            let (stream, framing) = (&mut self.stream, &mut self.framing);
            ready!(poll_read_shared(stream, cx, |read| match read {
                Ok(Some(bytes)) => framing.handle_bytes(bytes),
                Ok(None) | Err(_) => framing.handle_eof(),
            }));
        }
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            while self.out_written < self.out.len() {
                let n = ready!(Pin::new(&mut self.stream).poll_write(cx, &self.out[self.out_written..]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                self.out_written += n;
            }
            if !self.out.is_empty() {
                self.out.clear();
                release_write_buffer(&mut self.out);
                self.out_written = 0;
                self.written += std::mem::take(&mut self.in_batch);
                self.flush_owed = true;
            }
            if self.framing.pending_transmit_len() == 0 {
                break;
            }
            // Corking: everything queued so far, one buffer (the thread's), one write if
            // the stream takes it all; what it does not take is kept in `out`.
            self.in_batch = std::mem::take(&mut self.fed);
            let (stream, framing, out) = (&mut self.stream, &mut self.framing, &mut self.out);
            let all_written = with_write_buffer(|batch| {
                batch.reserve(framing.pending_transmit_len());
                while let Some(chunk) = framing.poll_transmit() {
                    batch.extend_from_slice(&chunk);
                }
                let mut at = 0;
                while at < batch.len() {
                    match Pin::new(&mut *stream).poll_write(cx, &batch[at..]) {
                        Poll::Ready(Ok(0)) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
                        Poll::Ready(Ok(n)) => at += n,
                        Poll::Ready(Err(err)) => return Err(err),
                        Poll::Pending => break,
                    }
                }
                out.extend_from_slice(&batch[at..]);
                Ok(at == batch.len())
            });
            if !all_written? {
                // `poll_write` is pending: it wakes us when the stream takes more.
                return Poll::Pending;
            }
            self.written += std::mem::take(&mut self.in_batch);
            self.flush_owed = true;
        }
        if self.flush_owed {
            ready!(Pin::new(&mut self.stream).poll_flush(cx))?;
            self.flush_owed = false;
        }
        Poll::Ready(Ok(()))
    }

    fn wants_flush(&self) -> bool {
        self.flush_owed || self.out_written < self.out.len() || self.framing.pending_transmit_len() > 0
    }

    fn unwritten(&self) -> usize {
        self.out.len() - self.out_written + self.framing.pending_transmit_len()
    }

    fn take_written(&mut self) -> usize {
        std::mem::take(&mut self.written)
    }

    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_flush(cx))?;
        Pin::new(&mut self.stream).poll_close(cx)
    }
}
