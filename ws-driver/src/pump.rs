//! One task per connection: the upgrade handshake, then the WebSocket state machine
//! between the socket and the hub.
//!
//! Everything queued for a connection while it was busy goes out in one write: the
//! outbox is drained completely before writing (corking), and the frames are written
//! together.

use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use futures_channel::{mpsc, oneshot};
use futures_util::future::{Fuse, FusedFuture, FutureExt};
use futures_util::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use futures_util::StreamExt;
use ws_proto::envelope::msgpack::write_msgpack_seq_suffix;
use ws_proto::envelope::{write_seq_suffix, Codec};
use ws_proto::handshake::Request;
use ws_proto::{CloseCode, Connection, ConnectionState, DeflateParams};
use ws_session::{ConnectionId, ConnectionInfo};

use crate::handler::BoxFuture;
use crate::hub::{ConnInput, Hub, Outbound};
use crate::runtime::Runtime;
use crate::upgrade::accept_upgrade;
use crate::write::{take_pending, write_batch, WriteDone};

/// Bytes read from the socket at a time.
const READ_BUFFER: usize = 16 * 1024;

/// Where a connection may upgrade.
#[derive(Debug, Clone, Default)]
pub struct ConnectionOptions {
    /// The one path that upgrades (`/ws`); other paths get 404. `None` (the default)
    /// accepts any.
    pub path: Option<String>,
}

/// Serves one accepted byte stream: reads the upgrade request (within the handshake
/// timeout), answers it, then runs the connection until it closes. Refusals get their
/// HTTP status (400, 404, 405, 426, 431) and the stream is closed.
pub async fn serve_connection<R, S>(
    hub: Hub,
    runtime: R,
    mut stream: S,
    peer: Option<SocketAddr>,
    options: &ConnectionOptions,
) where
    R: Runtime,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let deadline = Instant::now() + hub.settings.handshake_timeout;
    let mut timeout = runtime.sleep_until(deadline).fuse();
    let admit = |request: &Request| {
        if options.path.as_ref().is_some_and(|path| request.path() != path) {
            return request.reject(404, "no WebSocket endpoint at this path").ok();
        }
        if !hub.origin_allowed(request.origin()) {
            return request.reject(403, "origin not allowed").ok();
        }
        None
    };
    let (request, deflate) = {
        let upgrade =
            accept_upgrade(&mut stream, &hub.settings.config.envelope, &Codec::SERVED, admit).fuse();
        futures_util::pin_mut!(upgrade);
        futures_util::select_biased! {
            upgraded = upgrade => match upgraded {
                Ok(Some(upgraded)) => upgraded,
                Ok(None) | Err(_) => return,
            },
            () = timeout => {
                tracing::debug!(?peer, "no upgrade request within the handshake timeout");
                return;
            }
        }
    };
    let info = connection_info(&request, peer);
    run_websocket(hub, runtime, stream, info, request.rest().clone(), deflate).await;
}

/// The engine's view of an upgrade request: path, query, headers, origin, credential,
/// and the envelope codec the server picks among the subprotocols offered
/// ([`Codec::SERVED`], MessagePack first).
pub fn connection_info(request: &Request, peer: Option<SocketAddr>) -> ConnectionInfo {
    let headers = request
        .headers()
        .iter()
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect();
    // The codec the 101 names (`accept_upgrade`, axum's `mount`): the same choice.
    let (codec, _) = Codec::negotiate(request.protocols(), &Codec::SERVED);
    ConnectionInfo::new(peer, request.path(), request.query().map(str::to_owned), headers).with_codec(codec)
}

/// Runs an upgraded connection (the 101 already sent) until it closes: frames in from
/// the socket to the hub, the hub's messages out in batches. `rest` holds bytes that
/// arrived after the upgrade request; `deflate` is what the 101 agreed to
/// (`Request::negotiate_deflate`, answered with `Accept::with_deflate`). Used by [`serve_connection`] and by adapters
/// that let an HTTP server do the upgrade (mounting on axum/hyper).
///
/// Reading, the hub's messages and the write in progress are served together: a peer
/// that stops reading stalls only its own write. While more than
/// `max_outbound_bytes` wait for a stalled write (the hub's messages, pongs, the close
/// frame), the connection stops reading too, so that a peer which sends without
/// reading meets TCP backpressure instead of growing our queues. When the hub closes
/// a connection whose write is stalled (the slow-consumer policy), the write gets the
/// close timeout to finish; then the socket is dropped.
pub async fn run_websocket<R, S>(
    mut hub: Hub,
    runtime: R,
    stream: S,
    info: ConnectionInfo,
    rest: Bytes,
    deflate: Option<DeflateParams>,
) where
    R: Runtime,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (outbox_tx, mut outbox) = mpsc::unbounded();
    let (reply_tx, reply_rx) = oneshot::channel();
    let opened = hub
        .send(ConnInput::Open {
            info,
            outbox: outbox_tx,
            reply: reply_tx,
        })
        .await;
    let mut conn = Connection::server(hub.settings.config.envelope.clone()).with_deflate(deflate);
    let (mut reader, writer) = stream.split();
    let Some(id) = (if opened {
        reply_rx.await.ok().flatten()
    } else {
        None
    }) else {
        // The hub is shutting down: say so and leave.
        let _ = conn.close(CloseCode::GOING_AWAY, "server shutting down");
        let (mut writer, mut scratch) = (writer, Vec::new());
        take_pending(&mut conn, &mut scratch);
        let _ = writer.write_all(&scratch).await;
        let _ = writer.close().await;
        return;
    };
    let span = tracing::debug_span!("connection", id = id.0);
    let _entered = span.enter();
    let mut pump = Pump {
        hub,
        id,
        conn,
        tail: Vec::with_capacity(32),
        unflushed: 0,
    };
    pump.conn.handle_bytes(&rest);
    let mut buf = vec![0; READ_BUFFER];
    let mut close_timer: Fuse<BoxFuture<()>> = Fuse::terminated();
    // The writer and its buffer travel into each write and come back with its result.
    let mut idle_writer = Some((writer, Vec::new()));
    let mut writing: Fuse<BoxFuture<WriteDone<S>>> = Fuse::terminated();
    let mut in_flight = 0;
    let mut writing_len = 0;
    let mut hub_gone = false;
    loop {
        if !pump.deliver_events().await {
            hub_gone = true;
        }
        if hub_gone && pump.conn.state() == ConnectionState::Open {
            let _ = pump.conn.close(CloseCode::GOING_AWAY, "server stopped");
        }
        if let Some((mut writer, mut out)) = idle_writer.take() {
            if pump.conn.pending_transmit_len() > 0 {
                take_pending(&mut pump.conn, &mut out);
                in_flight = std::mem::take(&mut pump.unflushed);
                writing_len = out.len();
                writing = write_batch(writer, out);
            } else if pump.conn.is_closed() {
                let _ = writer.close().await;
                break;
            } else {
                idle_writer = Some((writer, out));
            }
        }
        if pump.conn.state() != ConnectionState::Open && close_timer.is_terminated() {
            // Closing: the peer's answer, or a stalled write, gets the close timeout.
            close_timer = runtime
                .sleep_until(Instant::now() + pump.hub.settings.close_timeout)
                .fuse();
        }
        // Once closed nothing more is read (an EOF would wake us again and again); nor
        // while the write is stalled past the outbound limit (backpressure).
        let unwritten = if writing.is_terminated() { 0 } else { writing_len };
        let backlogged = unwritten + pump.conn.pending_transmit_len() > pump.hub.settings.max_unwritten_bytes;
        let mut read = if pump.conn.is_closed() || backlogged {
            Fuse::terminated()
        } else {
            reader.read(&mut buf).fuse()
        };
        futures_util::select_biased! {
            (writer, out, result) = writing => {
                if result.is_err() {
                    break;
                }
                idle_writer = Some((writer, out));
                if in_flight > 0 {
                    let bytes = std::mem::take(&mut in_flight);
                    let _ = pump.hub.send(ConnInput::Flushed { connection: pump.id, bytes }).await;
                }
            },
            outbound = outbox.next() => match outbound {
                Some(outbound) => {
                    pump.apply(outbound);
                    // Corking: take everything queued so far; it goes out in one write.
                    while let Ok(outbound) = outbox.try_recv() {
                        pump.apply(outbound);
                    }
                }
                None => hub_gone = true,
            },
            read = read => match read {
                Ok(0) | Err(_) => pump.conn.handle_eof(),
                Ok(n) => pump.conn.handle_bytes(&buf[..n]),
            },
            () = close_timer => break,
        }
    }
    let _ = pump.hub.send(ConnInput::Closed { connection: pump.id }).await;
}

struct Pump {
    hub: Hub,
    id: ConnectionId,
    conn: Connection,
    /// The per-recipient end of an envelope (`,"s":N}`).
    tail: Vec<u8>,
    /// Bytes of the hub's messages queued in `conn` but not yet handed to a write;
    /// reported to the engine once written, for its slow-consumer accounting.
    unflushed: usize,
}

impl Pump {
    /// Hands every event to the hub. Returns `false` once the hub is gone.
    async fn deliver_events(&mut self) -> bool {
        let mut alive = true;
        while let Some(event) = self.conn.poll_event() {
            if let ws_proto::Event::Failed(err) = &event {
                tracing::debug!(connection = self.id.0, %err, "peer broke the protocol");
            }
            if let Some(message) = event.into_message() {
                alive &= self
                    .hub
                    .send(ConnInput::Message {
                        connection: self.id,
                        message,
                    })
                    .await;
            }
        }
        alive
    }

    fn apply(&mut self, outbound: Outbound) {
        match outbound {
            Outbound::Message(message) => {
                self.tail.clear();
                let sent = match message.codec {
                    Codec::MsgPack => {
                        write_msgpack_seq_suffix(&mut self.tail, message.seq);
                        self.conn.send_binary_parts(&message.prefix, &self.tail)
                    }
                    _ => {
                        write_seq_suffix(&mut self.tail, message.seq);
                        self.conn.send_text_parts(&message.prefix, &self.tail)
                    }
                };
                if sent.is_ok() {
                    self.unflushed += message.len();
                }
            }
            Outbound::Close(code, reason) => {
                let _ = self.conn.close(code, reason);
            }
        }
    }
}
