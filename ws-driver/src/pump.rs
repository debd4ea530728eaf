//! One task per connection: its handshake (the WebSocket upgrade, or the raw TCP
//! preamble) within the handshake timeout, then the drive loop between its
//! [`Transport`] and the hub, the same for every transport.
//!
//! Everything queued for a connection while it was busy goes out in one write: the
//! outbox is drained completely before writing (corking), and the frames are written
//! together.

use std::borrow::Borrow;
use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::task::Poll;

use bytes::Bytes;
use futures_channel::oneshot;
use futures_util::future::{poll_fn, Fuse, FusedFuture, FutureExt};
use futures_util::io::{AsyncRead, AsyncWrite};
use ws_proto::envelope::{sys, Codec};
use ws_proto::handshake::{Headers, Request};
use ws_proto::prefixed::PrefixedConnection;
use ws_proto::{CloseCode, Connection, ConnectionState, DeflateParams, Event, Message};
use ws_session::{ConnectionId, ConnectionInfo};

use crate::admission::{refuse_at_capacity, Admission, ConnectionSlot};
use crate::handler::BoxFuture;
use crate::hub::{ConnInput, Hub, Outbound};
use crate::prefixed::accept_preamble;
use crate::runtime::Runtime;
use crate::transport::{StreamTransport, Transport};
use crate::upgrade::accept_upgrade;

/// How a listener's connections are served: the wire they speak and, for WebSocket,
/// where they may upgrade.
#[derive(Debug, Clone, Default)]
pub struct ConnectionOptions {
    /// The one path that upgrades (`/ws`); other paths get 404. `None` (the default)
    /// accepts any. WebSocket only.
    pub path: Option<String>,
    /// The wire. Default: [`Wire::WebSocket`].
    pub wire: Wire,
}

/// What a listener's connections speak.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Wire {
    /// WebSocket: an HTTP/1.1 upgrade, then RFC 6455 frames ([`serve_connection`]).
    #[default]
    WebSocket,
    /// Raw TCP: a `TETHER` preamble, then length-prefixed frames
    /// ([`ws_proto::prefixed`], [`serve_prefixed`]).
    Tcp,
}

/// Serves one accepted byte stream: reads the upgrade request (within the handshake
/// timeout), answers it, then runs the connection until it closes. Refusals get their
/// HTTP status (400, 403, 404, 405, 426, 431; 503 with `Retry-After` past
/// [`App::max_connections`](crate::App::max_connections)) and the stream is closed.
///
/// The future is what a connection's task holds for as long as the connection lives,
/// so it is kept small: the handshake's state is boxed (and freed once done), the
/// handshake and the connection are two futures one after the other (what the first
/// held takes no room in the second), and the request is dropped once the engine's
/// view of it is taken ([`connection_info`]).
pub fn serve_connection<'a, R, S>(
    hub: Hub,
    runtime: R,
    stream: S,
    peer: Option<SocketAddr>,
    options: &'a ConnectionOptions,
) -> impl Future<Output = ()> + Send + 'a
where
    R: Runtime,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    serve_websocket(hub, runtime, stream, peer, options)
}

/// [`serve_connection`] with the options borrowed or shared (the accept loop's
/// `Arc`): the accept loop spawns this future itself, wrapping nothing around it.
#[allow(
    clippy::manual_async_fn,
    reason = "an `async fn` holds its arguments twice, for the life of the connection"
)]
pub(crate) fn serve_websocket<'a, R, S, O>(
    hub: Hub,
    runtime: R,
    stream: S,
    peer: Option<SocketAddr>,
    options: O,
) -> impl Future<Output = ()> + Send + 'a
where
    R: Runtime,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    O: Borrow<ConnectionOptions> + Send + 'a,
{
    // Not an `async fn`, and the arguments boxed: what an `async` block captures it
    // keeps for its whole life. The handshake and the connection are two futures one
    // after the other, so that what the handshake held (the stream and the hub before
    // they move on, the options) keeps no room in the connection's task.
    let start = Box::new((hub, runtime, stream, peer, options));
    let handshake = async move {
        let (hub, runtime, mut stream, peer, options) = *start;
        let (slot, at_capacity) = match hub.handle.admissions.admit() {
            Admission::Admitted(slot) => (slot, false),
            Admission::Refused(slot) => (slot, true),
            Admission::Dropped => return None,
        };
        let options = options.borrow();
        let admit = |request: &Request| {
            if options.path.as_ref().is_some_and(|path| request.path() != path) {
                return request.reject(404, "no WebSocket endpoint at this path").ok();
            }
            if !hub.origin_allowed(request.origin()) {
                return request.reject(403, "origin not allowed").ok();
            }
            if at_capacity {
                return Some(refuse_at_capacity());
            }
            None
        };
        let upgrade = accept_upgrade(&mut stream, &hub.settings.config.envelope, &Codec::SERVED, admit);
        let handshake = Box::pin(within_handshake_timeout(&hub, &runtime, peer, upgrade));
        let (request, deflate) = handshake.await?;
        let (transport, info) = upgraded(&hub, stream, request, deflate, peer);
        Some((hub, runtime, transport, info, slot))
    };
    handshake.then(run_upgraded)
}

/// Runs the connection a handshake upgraded, or nothing when it did not. The slot is
/// held until the connection ends.
fn run_upgraded<R: Runtime, T: Transport>(
    upgraded: Option<(Hub, R, T, ConnectionInfo, ConnectionSlot)>,
) -> futures_util::future::Either<impl Future<Output = ()> + Send, std::future::Ready<()>> {
    match upgraded {
        Some((hub, runtime, transport, info, slot)) => run_transport(hub, runtime, transport, info)
            .map(move |()| drop(slot))
            .left_future(),
        None => std::future::ready(()).right_future(),
    }
}

/// Serves one accepted byte stream with the raw TCP framing
/// ([`ws_proto::prefixed`]): reads the client's preamble (within the handshake
/// timeout), answers with the server's, then runs the connection until it closes. A
/// peer that is not speaking it (an HTTP request: a WebSocket client on the wrong
/// port) gets an HTTP 400 that says what the port speaks; another version gets the
/// server's preamble; then the stream is closed.
///
/// There are no headers: the peer's address is all the engine learns, and the client
/// authenticates with `sys.auth`.
#[allow(
    clippy::manual_async_fn,
    reason = "an `async fn` holds its arguments twice, for the life of the connection"
)]
pub fn serve_prefixed<R, S>(
    hub: Hub,
    runtime: R,
    stream: S,
    peer: Option<SocketAddr>,
) -> impl Future<Output = ()> + Send
where
    R: Runtime,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // Not an `async fn`, the arguments and the handshake boxed, the handshake and the
    // connection one future after the other, as in `serve_connection`.
    let start = Box::new((hub, runtime, stream, peer));
    let handshake = async move {
        let (hub, runtime, mut stream, peer) = *start;
        let (slot, at_capacity) = match hub.handle.admissions.admit() {
            Admission::Admitted(slot) => (slot, false),
            Admission::Refused(slot) => (slot, true),
            Admission::Dropped => return None,
        };
        let preamble = Box::pin(within_handshake_timeout(
            &hub,
            &runtime,
            peer,
            accept_preamble(&mut stream, at_capacity, &hub.settings.config.envelope),
        ));
        let rest = preamble.await?;
        let info = ConnectionInfo::new(peer, "/", None, Default::default());
        let framing = PrefixedConnection::new(&hub.settings.config.envelope);
        Some((hub, runtime, prefixed(stream, framing, rest), info, slot))
    };
    handshake.then(run_upgraded)
}

/// The transport and the engine's view of an upgraded connection. A function of its
/// own so that the request (and the buffer its `rest` shares) is gone before the
/// connection runs: not held by the connection's task.
fn upgraded<S>(
    hub: &Hub,
    stream: S,
    mut request: Request,
    deflate: Option<DeflateParams>,
    peer: Option<SocketAddr>,
) -> (StreamTransport<S, Connection>, ConnectionInfo)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // The request ends here: its headers move to the connection's metadata.
    let headers = request.take_headers();
    let info = info_with(&request, headers, peer);
    let conn = Connection::server(hub.settings.config.envelope.clone()).with_deflate(deflate);
    (StreamTransport::new(stream, conn, request.rest()), info)
}

/// The transport of a raw TCP connection; `rest` (the buffer it shares) is gone before
/// the connection runs, as in [`upgraded`].
fn prefixed<S>(stream: S, framing: PrefixedConnection, rest: Bytes) -> StreamTransport<S, PrefixedConnection>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    StreamTransport::new(stream, framing, &rest)
}

/// Runs a connection's handshake against the hub's handshake timeout: its outcome, or
/// `None` when it failed, was refused or took too long.
async fn within_handshake_timeout<R, T>(
    hub: &Hub,
    runtime: &R,
    peer: Option<SocketAddr>,
    handshake: impl Future<Output = std::io::Result<Option<T>>>,
) -> Option<T>
where
    R: Runtime,
{
    let mut timeout = runtime
        .sleep_until(runtime.now() + hub.settings.handshake_timeout)
        .fuse();
    let handshake = handshake.fuse();
    futures_util::pin_mut!(handshake);
    futures_util::select_biased! {
        done = handshake => done.ok().flatten(),
        () = timeout => {
            tracing::debug!(?peer, "no handshake within the handshake timeout");
            None
        }
    }
}

/// The engine's view of an upgrade request: path, query, headers, origin, credential,
/// and the envelope codec the server picks among the subprotocols offered
/// ([`Codec::SERVED`], MessagePack first).
pub fn connection_info(request: &Request, peer: Option<SocketAddr>) -> ConnectionInfo {
    info_with(request, request.headers().clone(), peer)
}

/// [`connection_info`] with the request's `headers` handed over.
fn info_with(request: &Request, headers: Headers, peer: Option<SocketAddr>) -> ConnectionInfo {
    // The codec the 101 names (`accept_upgrade`, axum's `mount`): the same choice.
    let (codec, _) = Codec::negotiate(request.protocols(), &Codec::SERVED);
    ConnectionInfo::new(peer, request.path(), request.query().map(str::to_owned), headers).with_codec(codec)
}

/// Runs an upgraded WebSocket connection (the 101 already sent) until it closes.
/// `rest` holds bytes that arrived after the upgrade request; `deflate` is what the
/// 101 agreed to (`Request::negotiate_deflate`, answered with `Accept::with_deflate`).
/// Used by [`serve_connection`] and by adapters that let an HTTP server do the upgrade
/// (mounting on axum/hyper); the drive loop is [`run_transport`]'s.
pub fn run_websocket<R, S>(
    hub: Hub,
    runtime: R,
    stream: S,
    info: ConnectionInfo,
    rest: Bytes,
    deflate: Option<DeflateParams>,
) -> impl Future<Output = ()> + Send
where
    R: Runtime,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let conn = Connection::server(hub.settings.config.envelope.clone()).with_deflate(deflate);
    run_transport(hub, runtime, StreamTransport::new(stream, conn, &rest), info)
}

/// What woke the drive loop.
enum Wake {
    Flushed(std::io::Result<()>),
    /// The hub's messages were fed to the transport.
    Queued,
    /// The hub is gone (and everything it queued was fed to the transport).
    HubGone,
    Received(Option<Event>),
    CloseTimeout,
}

/// Runs a connection whose handshake is done until it closes: messages in from the
/// transport to the hub, the hub's messages out in batches. `info` is what the engine
/// learns of the peer.
///
/// Reading, the hub's messages and the write in progress are served together: a peer
/// that stops reading stalls only its own write. While more than
/// `max_outbound_bytes` wait for a stalled write (the hub's messages, pongs, the close
/// frame), the connection stops reading too, so that a peer which sends without
/// reading meets backpressure instead of growing our queues. When the hub closes a
/// connection whose write is stalled (the slow-consumer policy), the write gets the
/// close timeout to finish; then the transport is dropped.
#[allow(
    clippy::manual_async_fn,
    reason = "an `async fn` holds its arguments twice, for the life of the connection"
)]
pub fn run_transport<R, T>(
    mut hub: Hub,
    runtime: R,
    mut transport: T,
    info: ConnectionInfo,
) -> impl Future<Output = ()> + Send
where
    R: Runtime,
    T: Transport,
{
    // Not an `async fn`: that would hold the transport (and the rest) twice, its
    // argument and its local copy, for the life of the connection. `info` is boxed
    // before it is captured: a capture keeps its room for the block's whole life.
    let info = Box::new(info);
    async move {
        let (outbox_tx, mut outbox) = crate::outbox::outbox();
        let (reply_tx, reply_rx) = oneshot::channel();
        let opened = hub
            .send(ConnInput::Open {
                info,
                outbox: outbox_tx,
                reply: reply_tx,
            })
            .await;
        let Some(id) = (if opened {
            reply_rx.await.ok().flatten()
        } else {
            None
        }) else {
            // The hub is shutting down: say so and leave.
            let _ = transport.close(CloseCode::GOING_AWAY, "server shutting down");
            let _ = poll_fn(|cx| transport.poll_shutdown(cx)).await;
            return;
        };
        let span = tracing::debug_span!("connection", id = id.0);
        let _entered = span.enter();
        let mut tail = Vec::with_capacity(32);
        let mut close_timer: Fuse<BoxFuture<()>> = Fuse::terminated();
        let mut received_all = false;
        let mut hub_gone = false;
        // Until the hub is gone and its outbox empty: a closed outbox is always ready,
        // and polling it then would spin the loop until the close timeout.
        let mut outbox_open = true;
        // The latest `sys.ack` read and not yet handed to the hub. Acknowledgements are
        // cumulative (the latest says all), and one that wakes the hub on its own
        // makes it take each room publication the moment it comes, one write per
        // member each: in a fan-out to 5,000 members acknowledging every 16 messages,
        // half the throughput. So it goes to the hub with this connection's next input
        // (behind nothing it should precede), its next write report, or its end.
        let mut held_ack: Option<Message> = None;
        loop {
            if hub_gone && transport.state() == ConnectionState::Open {
                let _ = transport.close(CloseCode::GOING_AWAY, "server stopped");
            }
            // Closed, every event handed on (those before the close too), everything written.
            if received_all && transport.state() == ConnectionState::Closed && !transport.wants_flush() {
                let _ = poll_fn(|cx| transport.poll_shutdown(cx)).await;
                break;
            }
            if transport.state() != ConnectionState::Open && close_timer.is_terminated() {
                // Closing: the peer's answer, or a stalled write, gets the close timeout.
                close_timer = runtime
                    .sleep_until(runtime.now() + hub.settings.close_timeout)
                    .fuse();
            }
            // Once closed nothing more is read (an EOF would wake us again and again); nor
            // while the write is stalled past the outbound limit (backpressure).
            let reading = !received_all && transport.unwritten() <= hub.settings.max_unwritten_bytes;
            // What goes to the hub after this wake-up, in order: an acknowledgement held
            // before, then the message read. The wake-up is matched as a temporary, gone
            // before anything is awaited, so that the connection's future keeps no room
            // for it (nor for the event it carried) while it waits on the hub.
            let [held, read] = match poll_fn(|cx| {
                if transport.wants_flush() {
                    if let Poll::Ready(result) = transport.poll_flush(cx) {
                        return Poll::Ready(Wake::Flushed(result));
                    }
                }
                // Corking: everything the hub queued so far is fed to the transport
                // at once, to go out in one write.
                let mut batch = VecDeque::new();
                if outbox_open {
                    if let Poll::Ready(open) = outbox.poll_take(cx, &mut batch) {
                        for outbound in batch {
                            apply(&mut transport, &mut tail, outbound);
                        }
                        return Poll::Ready(if open { Wake::Queued } else { Wake::HubGone });
                    }
                }
                if reading {
                    if let Poll::Ready(event) = transport.poll_recv(cx) {
                        return Poll::Ready(Wake::Received(event));
                    }
                }
                if !close_timer.is_terminated() && close_timer.poll_unpin(cx).is_ready() {
                    return Poll::Ready(Wake::CloseTimeout);
                }
                Poll::Pending
            })
            .await
            {
                Wake::Flushed(Err(_)) | Wake::CloseTimeout => break,
                Wake::Flushed(Ok(())) => [None, None],
                Wake::Queued => [None, None],
                Wake::HubGone => {
                    hub_gone = true;
                    outbox_open = false;
                    [None, None]
                }
                Wake::Received(None) => {
                    received_all = true;
                    [None, None]
                }
                Wake::Received(Some(event)) => {
                    if let Event::Failed(err) = &event {
                        tracing::debug!(connection = id.0, %err, "peer broke the protocol");
                    }
                    match event.into_message() {
                        Some(message) if matches!(&message, Message::Text(text) if sys::is_ack_text(text)) => {
                            held_ack = Some(message);
                            [None, None]
                        }
                        // Behind the acknowledgement held before it, in order.
                        Some(message) => [held_ack.take(), Some(message)],
                        None => [None, None],
                    }
                }
            };
            if let Some(message) = held {
                hub_gone |= !hand_on(&mut hub, id, message).await;
            }
            if let Some(message) = read {
                hub_gone |= !hand_on(&mut hub, id, message).await;
            }
            let bytes = transport.take_written();
            if bytes > 0 {
                if let Some(ack) = held_ack.take() {
                    hub_gone |= !hand_on(&mut hub, id, ack).await;
                }
                let _ = hub
                    .send(ConnInput::Flushed {
                        connection: id,
                        bytes,
                    })
                    .await;
            }
        }
        if let Some(ack) = held_ack.take() {
            hand_on(&mut hub, id, ack).await;
        }
        let _ = hub.send(ConnInput::Closed { connection: id }).await;
    }
}

/// Hands a message the connection received to the hub; `false` when the hub is gone.
fn hand_on(
    hub: &mut Hub,
    connection: ConnectionId,
    message: Message,
) -> impl Future<Output = bool> + Send + '_ {
    hub.send(ConnInput::Message { connection, message })
}

/// Queues what the hub sent: an envelope (its shared prefix, then this connection's
/// own end: a reply's `c` after a shared prefix, and `,"s":N}`), or the close.
fn apply<T: Transport>(transport: &mut T, tail: &mut Vec<u8>, outbound: Outbound) {
    match outbound {
        Outbound::Message(message) => {
            tail.clear();
            message.write_end(tail);
            let _ = match message.codec {
                Codec::MsgPack => transport.feed_binary_parts(&message.prefix, tail),
                _ => transport.feed_text(&message.prefix, tail),
            };
        }
        Outbound::Close(code, reason) => {
            let _ = transport.close(code, reason);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::App;
    use crate::test_runtime::TestRuntime;
    use crate::transport::memory::pair;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;
    use ws_proto::Config;

    /// The hub gone under a live connection (it ends only by a bug, e.g. a panic): the
    /// connection says so with 1001, reads the peer's answer and ends — it neither
    /// spins on the closed outbox nor waits for the close timeout.
    #[test]
    fn a_connection_whose_hub_is_gone_closes_and_ends_on_the_peers_answer() {
        let (finished, outcome) = std::sync::mpsc::channel();
        // On a thread of its own: a connection that spins never returns from its poll.
        std::thread::spawn(move || {
            let runtime = TestRuntime::new();
            let mut hub = App::new().start(runtime.clone());
            // The test plays the hub: it opens the connection, then goes.
            let (input, mut inputs) = crate::inbox::inbox(8);
            hub.input = input;
            let (server, mut client) = pair(&Config::default());
            let ended = Arc::new(AtomicBool::new(false));
            let info = ConnectionInfo::new(None, "/", None, Default::default());
            let task = run_transport(hub, runtime.clone(), server, info);
            let flag = ended.clone();
            runtime.spawn(async move {
                task.await;
                flag.store(true, Ordering::SeqCst);
            });
            runtime.run_until_stalled();
            match inputs.try_recv() {
                Some(ConnInput::Open { outbox, reply, .. }) => {
                    let _ = reply.send(Some(ConnectionId(1)));
                    drop(outbox);
                }
                _ => panic!("the connection did not open"),
            }
            runtime.run_until_stalled();
            // The peer gets the close and answers it (the memory transport answers a
            // close as it hands on the event).
            let waker = futures_util::task::noop_waker();
            let mut cx = std::task::Context::from_waker(&waker);
            let close = match client.poll_recv(&mut cx) {
                Poll::Ready(Some(Event::Close(frame))) => (frame.code, frame.reason),
                other => panic!("expected the close, got {other:?}"),
            };
            let _ = client.poll_flush(&mut cx);
            runtime.run_until_stalled();
            let _ = finished.send((close, ended.load(Ordering::SeqCst)));
        });
        let (close, ended) = outcome
            .recv_timeout(Duration::from_secs(20))
            .expect("the connection spun: it never returned from its poll");
        assert_eq!(close, (Some(CloseCode::GOING_AWAY), "server stopped".to_owned()));
        assert!(
            ended,
            "the connection ended on the peer's answer, before any close timeout"
        );
    }
}
