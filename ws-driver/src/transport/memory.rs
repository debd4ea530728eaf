//! An in-memory transport: two ends joined by channels, no socket. For an
//! application's own tests: serve one end as a connection of the hub
//! ([`crate::adapter::run_transport`]), run a
//! [`Client`](crate::client::Client) on the other; [`MemoryDialer`] does both.
//!
//! Each end holds at most [`CHANNEL_MESSAGES`] messages the other has not taken, so
//! a peer that stops reading meets backpressure here as it would on a socket; and
//! each refuses a message over [`Config::max_message_size`] with 1009, as the socket
//! transports do.

use std::collections::VecDeque;
use std::io;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use futures_channel::mpsc;
use futures_util::{Sink, Stream};
use ws_proto::handshake::Headers;
use ws_proto::{CloseCode, CloseFrame, Config, ConnectionState, Event, ProtocolError, SendError};

use ws_session::ConnectionInfo;

use super::{BoxTransport, Transport};
use crate::client::{DialRequest, Dialer};
use crate::handler::BoxFuture;
use crate::hub::Hub;
use crate::pump::run_transport;
use crate::runtime::Runtime;

/// Messages in flight from one end to the other before the sender waits.
pub const CHANNEL_MESSAGES: usize = 64;

/// What travels between the ends.
#[derive(Debug)]
enum Frame {
    Text(String),
    Binary(Bytes),
    Close(CloseFrame),
}

/// One end of an in-memory pair.
pub struct MemoryTransport {
    tx: mpsc::Sender<Frame>,
    rx: mpsc::Receiver<Frame>,
    /// Fed, not yet handed to the channel, with the message bytes of each.
    queue: VecDeque<(Frame, usize)>,
    queued_bytes: usize,
    written: usize,
    state: ConnectionState,
    close_sent: bool,
    /// The peer's close arrived: our answer is queued with the event.
    ended: bool,
    /// The largest message taken from the peer.
    max_message_size: usize,
}

/// Two joined ends: what one feeds, the other receives; each takes messages of at
/// most `config.max_message_size` bytes.
pub fn pair(config: &Config) -> (MemoryTransport, MemoryTransport) {
    let (a_tx, b_rx) = mpsc::channel(CHANNEL_MESSAGES);
    let (b_tx, a_rx) = mpsc::channel(CHANNEL_MESSAGES);
    let max = config.max_message_size;
    (
        MemoryTransport::new(a_tx, a_rx, max),
        MemoryTransport::new(b_tx, b_rx, max),
    )
}

impl MemoryTransport {
    fn new(tx: mpsc::Sender<Frame>, rx: mpsc::Receiver<Frame>, max_message_size: usize) -> Self {
        Self {
            max_message_size,
            tx,
            rx,
            queue: VecDeque::new(),
            queued_bytes: 0,
            written: 0,
            state: ConnectionState::Open,
            close_sent: false,
            ended: false,
        }
    }

    fn push(&mut self, frame: Frame, len: usize) -> Result<(), SendError> {
        if self.close_sent || self.state == ConnectionState::Closed {
            return Err(SendError::Closed);
        }
        self.queued_bytes += len;
        self.queue.push_back((frame, len));
        Ok(())
    }
}

impl Transport for MemoryTransport {
    fn feed_text(&mut self, body: &Bytes, tail: &[u8]) -> Result<(), SendError> {
        let mut text = Vec::with_capacity(body.len() + tail.len());
        text.extend_from_slice(body);
        text.extend_from_slice(tail);
        let len = text.len();
        // The caller guarantees UTF-8; a lossy copy keeps a broken caller from panicking.
        let text = String::from_utf8(text)
            .unwrap_or_else(|err| String::from_utf8_lossy(err.as_bytes()).into_owned());
        self.push(Frame::Text(text), len)
    }

    fn feed_binary(&mut self, data: &Bytes) -> Result<(), SendError> {
        self.push(Frame::Binary(data.clone()), data.len())
    }

    fn close(&mut self, code: CloseCode, reason: &str) -> Result<(), SendError> {
        if !code.is_sendable() {
            return Err(SendError::InvalidCloseCode { code: code.0 });
        }
        self.push(Frame::Close(CloseFrame::new(code, reason)), 0)?;
        self.close_sent = true;
        self.state = ConnectionState::Closing;
        Ok(())
    }

    fn state(&self) -> ConnectionState {
        self.state
    }

    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        if self.ended {
            return Poll::Ready(None);
        }
        let frame = ready!(std::pin::Pin::new(&mut self.rx).poll_next(cx));
        let len = match &frame {
            Some(Frame::Text(text)) => text.len(),
            Some(Frame::Binary(data)) => data.len(),
            _ => 0,
        };
        if len > self.max_message_size {
            let err = ProtocolError::MessageTooLarge {
                len: len as u64,
                max: self.max_message_size,
            };
            if !self.close_sent {
                self.queue.push_back((Frame::Close(err.close_frame()), 0));
                self.close_sent = true;
            }
            self.ended = true;
            self.state = ConnectionState::Closed;
            return Poll::Ready(Some(Event::Failed(err)));
        }
        Poll::Ready(Some(match frame {
            Some(Frame::Text(text)) => Event::Text(text),
            Some(Frame::Binary(data)) => Event::Binary(data),
            Some(Frame::Close(frame)) => {
                if !self.close_sent {
                    let answer = CloseFrame {
                        code: frame.code,
                        reason: String::new(),
                    };
                    self.queue.push_back((Frame::Close(answer), 0));
                    self.close_sent = true;
                }
                self.ended = true;
                self.state = ConnectionState::Closed;
                Event::Close(frame)
            }
            // The other end was dropped without a close.
            None => {
                self.ended = true;
                self.state = ConnectionState::Closed;
                Event::Close(CloseFrame::new(CloseCode::ABNORMAL, String::new()))
            }
        }))
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.queue.is_empty() {
            if ready!(self.tx.poll_ready(cx)).is_err() {
                // The other end is gone: nothing of this will be read.
                self.queue.clear();
                self.queued_bytes = 0;
                return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
            }
            let Some((frame, len)) = self.queue.pop_front() else {
                break;
            };
            self.queued_bytes -= len;
            self.written += len;
            if std::pin::Pin::new(&mut self.tx).start_send(frame).is_err() {
                return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
            }
        }
        Poll::Ready(Ok(()))
    }

    fn wants_flush(&self) -> bool {
        !self.queue.is_empty()
    }

    fn unwritten(&self) -> usize {
        self.queued_bytes
    }

    fn take_written(&mut self) -> usize {
        std::mem::take(&mut self.written)
    }

    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_flush(cx))?;
        self.tx.close_channel();
        Poll::Ready(Ok(()))
    }
}

/// A [`Dialer`] that serves every attempt on a hub in memory: the server's end runs
/// as a connection of `hub` (a task on `runtime`, the same drive loop as a socket's),
/// the client gets the other. Headers of the [`DialRequest`] reach the engine as a
/// WebSocket upgrade's would (`Authorization: Bearer` included).
///
/// For an application's tests: its `App` and a real [`Client`](crate::client::Client),
/// no socket, no port.
#[derive(Clone)]
pub struct MemoryDialer<R> {
    hub: Hub,
    runtime: R,
}

impl<R: Runtime> MemoryDialer<R> {
    /// Serves attempts on `hub`, connection tasks on `runtime`.
    pub fn new(hub: &Hub, runtime: R) -> Self {
        Self {
            hub: hub.clone(),
            runtime,
        }
    }
}

impl<R: Runtime> Dialer for MemoryDialer<R> {
    fn dial(&self, request: DialRequest) -> BoxFuture<io::Result<BoxTransport>> {
        let (client, server) = pair(self.hub.proto_config());
        let mut headers: Headers = request
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        if let Some(origin) = &request.origin {
            headers.push("Origin", origin);
        }
        let info = ConnectionInfo::new(None, "/", None, headers);
        self.runtime.spawn(run_transport(
            self.hub.clone(),
            self.runtime.clone(),
            server,
            info,
        ));
        Box::pin(std::future::ready(Ok(Box::new(client) as BoxTransport)))
    }
}
