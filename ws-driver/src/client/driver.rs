//! The client task: the engine, the current transport, the timers.

use std::collections::HashMap;
use std::io;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use futures_channel::{mpsc, oneshot};
use futures_util::future::{poll_fn, Fuse, FusedFuture, FutureExt};
use futures_util::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use futures_util::StreamExt;
use rand::rngs::StdRng;
use rand::SeedableRng;
use ws_proto::envelope::{Codec, OwnedEnvelope, Payload};
use ws_proto::frame::SeededMasks;
use ws_proto::handshake::{ClientHandshake, ClientRequest, HandshakeError};
use ws_proto::prefixed::PreambleError;
use ws_proto::{CloseCode, Config, Connection, ConnectionState, DeflateParams, Event};
use ws_session::client::{
    wire, AuthMode, ClientAction, ClientEngine, Disconnect, IncomingRequest, QueryId, State,
};

use super::{ClientError, ClientOptions, Command, DialRequest, Dialer, Shared};
use crate::handler::BoxFuture;
use crate::runtime::Runtime;
use crate::transport::BoxTransport;
use crate::upgrade::read_head;

/// Performs the client side of the upgrade on `stream`: writes `request`, reads and
/// validates the response, and returns the stream with a client [`Connection`]
/// (masks from a generator seeded by the OS) that already holds any bytes the server
/// sent after its response. A refusal is an error naming the fault and the status.
///
/// Unless `request.extensions` is set already, permessage-deflate is offered as
/// `config` says ([`Config::deflate`], on by default), and the connection runs with
/// whatever the server agreed to.
pub async fn handshake<S>(stream: S, request: ClientRequest, config: &Config) -> io::Result<(S, Connection)>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    upgrade(stream, request, config)
        .await
        .map(|(stream, conn, _)| (stream, conn))
}

/// [`handshake`], and the envelope codec the server answered with: the subprotocol it
/// named, JSON when it named none (a server that predates subprotocols).
pub(super) async fn upgrade<S>(
    mut stream: S,
    mut request: ClientRequest,
    config: &Config,
) -> io::Result<(S, Connection, Codec)>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if request.extensions.is_none() {
        request.extensions = DeflateParams::client_offer(config);
    }
    let (mut handshake, bytes) = ClientHandshake::new(config, request)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    stream.write_all(&bytes).await?;
    stream.flush().await?;
    let response = match read_head(&mut stream, |bytes| handshake.handle_bytes(bytes)).await? {
        Some(Ok(response)) => response,
        // The error travels inside the io::Error, for `refused_status`.
        Some(Err(err)) => return Err(io::Error::new(io::ErrorKind::ConnectionRefused, err)),
        None => {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the server closed the connection during the handshake",
            ))
        }
    };
    let mut conn = Connection::client(config.clone(), SeededMasks::new(rand::random()))
        .with_deflate(response.deflate().copied());
    conn.handle_bytes(response.rest());
    let codec = response
        .protocol()
        .and_then(Codec::from_protocol)
        .unwrap_or(Codec::Json);
    Ok((stream, conn, codec))
}

/// The open transport.
struct Link {
    transport: BoxTransport,
    /// What ended it, as far as we know.
    info: Disconnect,
    /// The engine abandoned it (`CloseTransport`): its messages are not reported.
    abandoned: bool,
    /// Past this, a closing transport is dropped.
    close_deadline: Option<Instant>,
    /// The transport reported its end: nothing more is read.
    received_all: bool,
    /// The envelope codec its handshake agreed on.
    codec: Codec,
}

/// What the open transport woke the task for.
enum LinkWake {
    Flushed(io::Result<()>),
    Received(Option<Event>),
}

impl Link {
    /// Writes what is queued, and reads, until either has something to report.
    fn poll_io(&mut self, cx: &mut Context<'_>) -> Poll<LinkWake> {
        if self.transport.wants_flush() {
            if let Poll::Ready(result) = self.transport.poll_flush(cx) {
                return Poll::Ready(LinkWake::Flushed(result));
            }
        }
        if !self.received_all {
            if let Poll::Ready(event) = self.transport.poll_recv(cx) {
                return Poll::Ready(LinkWake::Received(event));
            }
        }
        Poll::Pending
    }

    /// Notes what the peer sent; returns the text for the engine (a binary envelope
    /// converted to JSON, within `proto`'s limits).
    fn take_event(&mut self, event: Option<Event>, proto: &Config) -> Option<String> {
        match event? {
            Event::Text(text) if !self.abandoned => return Some(text),
            Event::Binary(bytes) if !self.abandoned && self.codec == Codec::MsgPack => {
                return wire::from_binary(&bytes, proto);
            }
            Event::Close(frame) => {
                self.info.code = Some(frame.code.unwrap_or(CloseCode::NO_STATUS));
                self.info.reason = frame.reason;
            }
            Event::Failed(err) => {
                self.info.code = Some(err.close_code());
                self.info.error = Some(err.to_string());
            }
            _ => {}
        }
        None
    }
}

/// A transport attempt.
type Opened = io::Result<BoxTransport>;
/// Callers waiting for their queries' answers.
type QueryWaiters = HashMap<QueryId, oneshot::Sender<Result<OwnedEnvelope, ClientError>>>;
/// A server request and its handler's answer (`Err((code, message))` refuses).
type Answer = (IncomingRequest, Result<String, (u16, String)>);

pub(super) async fn run<R: Runtime, D: Dialer>(
    runtime: R,
    dialer: D,
    options: ClientOptions,
    mut commands: mpsc::UnboundedReceiver<Command>,
    shared: Arc<Shared>,
) {
    let dialer = Arc::new(dialer);
    let mut engine = ClientEngine::new(runtime.now(), options.engine.clone(), StdRng::from_os_rng());
    let mut link: Option<Link> = None;
    let mut opening: Fuse<BoxFuture<Opened>> = Fuse::terminated();
    let mut queries = QueryWaiters::new();
    let mut close_waiters: Vec<oneshot::Sender<Result<(), ClientError>>> = Vec::new();
    let mut commands_open = true;
    // The answers of request handlers, which run on tasks of their own.
    let (answers_tx, mut answers) = mpsc::unbounded::<Answer>();
    let (mut timer_at, mut timer): (Option<Instant>, Fuse<BoxFuture<()>>) = (None, Fuse::terminated());
    let (mut close_at, mut close_timer): (Option<Instant>, Fuse<BoxFuture<()>>) = (None, Fuse::terminated());
    loop {
        // 1. Drain the engine.
        while let Some(action) = engine.poll_action() {
            match action {
                ClientAction::Connect => {
                    opening = dialer.dial(request_for(&options, &engine)).fuse();
                }
                ClientAction::TransmitBoth { text, msgpack } => {
                    if let Some(link) = link.as_mut().filter(|l| !l.abandoned) {
                        let _ = match link.codec {
                            ws_proto::envelope::Codec::MsgPack => {
                                link.transport.feed_binary(&Bytes::from(msgpack))
                            }
                            _ => link.transport.feed_text(&Bytes::from(text), &[]),
                        };
                    }
                }
                ClientAction::Transmit(text) => {
                    if let Some(link) = link.as_mut().filter(|l| !l.abandoned) {
                        let _ = match wire::to_wire(link.codec, text) {
                            ws_proto::Message::Binary(bytes) => link.transport.feed_binary(&bytes),
                            ws_proto::Message::Text(text) => {
                                link.transport.feed_text(&Bytes::from(text), &[])
                            }
                            _ => Ok(()),
                        };
                    }
                }
                ClientAction::CloseTransport { code, reason } => {
                    if !opening.is_terminated() {
                        opening = Fuse::terminated();
                        let info = Disconnect::failed(format!("connection attempt abandoned: {reason}"));
                        shared.note_disconnect(&info);
                        engine.handle_disconnected(runtime.now(), info);
                    } else if let Some(link) = &mut link {
                        link.abandoned = true;
                        let _ = link.transport.close(code, &reason);
                        link.close_deadline = Some(runtime.now() + options.close_timeout);
                    }
                }
                ClientAction::Event(envelope) => shared.dispatch(&envelope),
                ClientAction::StateChanged(state) => {
                    tracing::debug!(?state, "client state");
                    shared.set_state(state);
                }
                ClientAction::QueryResult { id, result } => {
                    if let Some(tx) = queries.remove(&id) {
                        let _ = tx.send(result.map_err(ClientError::Query));
                    }
                }
                ClientAction::Session(outcome) => shared.sessions.publish(&outcome),
                ClientAction::ServerError(error) => shared.errors.publish(&error),
                ClientAction::Request(request) => {
                    let handler = super::lock(&shared.request_handlers).get(&request.event).cloned();
                    match handler {
                        Some(handler) => {
                            let payload = request
                                .payload
                                .as_deref()
                                .map_or(Ok(serde_json::Value::Null), serde_json::from_str)
                                .unwrap_or(serde_json::Value::Null);
                            let answers = answers_tx.clone();
                            runtime.spawn(async move {
                                let run = std::panic::AssertUnwindSafe(handler(payload)).catch_unwind();
                                let result = match run.await {
                                    Ok(Ok(value)) => serde_json::to_string(&value)
                                        .map_err(|e| (ws_session::ErrorCode::INTERNAL.0, e.to_string())),
                                    Ok(Err(refusal)) => Err(refusal),
                                    Err(_) => {
                                        tracing::error!(event = %request.event, "a request handler panicked");
                                        Err((ws_session::ErrorCode::INTERNAL.0, "internal error".to_owned()))
                                    }
                                };
                                let _ = answers.unbounded_send((request, result));
                            });
                        }
                        None => {
                            let message = format!("no handler for request `{}` on the client", request.event);
                            let refusal = Err((ws_session::ErrorCode::UNKNOWN_EVENT.0, message.as_str()));
                            let _ = engine.answer(runtime.now(), &request, refusal);
                        }
                    }
                }
                _ => {}
            }
        }

        // 2. The transport: retire it once closed and flushed.
        if let Some(l) = &mut link {
            // Closed, every event taken (the close is among them), everything written.
            if l.received_all && l.transport.state() == ConnectionState::Closed && !l.transport.wants_flush()
            {
                let _ = poll_fn(|cx| l.transport.poll_shutdown(cx)).await;
                end_link(runtime.now(), &mut engine, &mut link, None);
                continue;
            }
            if l.transport.state() != ConnectionState::Open && l.close_deadline.is_none() {
                l.close_deadline = Some(runtime.now() + options.close_timeout);
            }
        }

        // 3. Stopped for good: answer the waiters and end.
        if matches!(engine.state(), State::Disconnected(_)) && link.is_none() && opening.is_terminated() {
            for waiter in close_waiters.drain(..) {
                let _ = waiter.send(Ok(()));
            }
            for (_, tx) in queries.drain() {
                let _ = tx.send(Err(shared.closed()));
            }
            shared.finish();
            // Commands still arriving get `Closed` from the dropped receiver.
            return;
        }

        // 4. Wait for the next input.
        // Timers are re-armed only when their deadline moves (no allocation per message).
        let deadline = engine.poll_timeout();
        if deadline != timer_at || timer.is_terminated() {
            timer_at = deadline;
            timer = match deadline {
                Some(at) => runtime.sleep_until(at).fuse(),
                None => Fuse::terminated(),
            };
        }
        let close_deadline = link.as_ref().and_then(|l| l.close_deadline);
        if close_deadline != close_at || close_timer.is_terminated() {
            close_at = close_deadline;
            close_timer = match close_deadline {
                Some(at) => runtime.sleep_until(at).fuse(),
                None => Fuse::terminated(),
            };
        }
        let mut link_io = poll_fn(|cx| match link.as_mut() {
            Some(l) => l.poll_io(cx),
            None => Poll::Pending,
        })
        .fuse();
        let mut next_command = if commands_open {
            commands.next().fuse()
        } else {
            Fuse::terminated()
        };
        futures_util::select_biased! {
            wake = link_io => {
                drop(link_io);
                let Some(l) = link.as_mut() else { continue };
                match wake {
                    LinkWake::Flushed(Ok(())) => {}
                    LinkWake::Flushed(Err(err)) => end_link(runtime.now(), &mut engine, &mut link, Some(err.to_string())),
                    LinkWake::Received(None) => l.received_all = true,
                    LinkWake::Received(event) => {
                        if let Some(text) = l.take_event(event, &options.engine.proto) {
                            engine.handle_message(runtime.now(), &text);
                        }
                    }
                }
            },
            opened = opening => match opened {
                Ok(transport) => {
                    drop(link_io);
                    link = Some(Link {
                        codec: transport.codec(),
                        transport,
                        info: Disconnect::default(),
                        abandoned: false,
                        close_deadline: None,
                        received_all: false,
                    });
                    engine.handle_connected(runtime.now());
                }
                Err(err) => {
                    tracing::debug!(%err, "connection attempt failed");
                    let info = match refused_status(&err) {
                        Some(status) => Disconnect::refused(status, err.to_string()),
                        None => Disconnect::failed(err.to_string()),
                    };
                    shared.note_disconnect(&info);
                    engine.handle_disconnected(runtime.now(), info);
                }
            },
            command = next_command => match command {
                Some(command) => handle_command(runtime.now(), &mut engine, command, &mut queries, &mut close_waiters),
                None => {
                    // Every handle is gone: close and end.
                    commands_open = false;
                    let _ = engine.close(runtime.now(), CloseCode::NORMAL, "");
                }
            },
            () = timer => {
                timer_at = None;
                engine.handle_timeout(runtime.now());
            },
            answer = answers.next() => {
                if let Some((request, result)) = answer {
                    let result = match &result {
                        Ok(json) => Ok(Payload::Trusted(json)),
                        Err((code, message)) => Err((*code, message.as_str())),
                    };
                    // Err only once closed: the answer has nowhere to go.
                    let _ = engine.answer(runtime.now(), &request, result);
                }
            },
            () = close_timer => {
                close_at = None;
                drop(link_io);
                end_link(runtime.now(), &mut engine, &mut link, Some("close timeout".to_owned()));
            },
        }
    }
}

/// The HTTP status of an attempt the server refused: an upgrade answered with
/// something else than 101 ([`handshake`]'s error), or raw TCP's preamble answered with
/// an HTTP response (a WebSocket port).
fn refused_status(err: &io::Error) -> Option<u16> {
    let inner = err.get_ref()?;
    match (
        inner.downcast_ref::<HandshakeError>(),
        inner.downcast_ref::<PreambleError>(),
    ) {
        (Some(HandshakeError::NotSwitchingProtocols { status }), _) => Some(*status),
        (_, Some(PreambleError::Http { status })) => Some(*status),
        _ => None,
    }
}

/// Drops the transport and tells the engine how it ended.
fn end_link(now: Instant, engine: &mut ClientEngine, link: &mut Option<Link>, error: Option<String>) {
    if let Some(l) = link.take() {
        let mut info = l.info;
        if info.error.is_none() {
            info.error = error;
        }
        if info.code.is_none() && info.error.is_some() {
            info.code = Some(CloseCode::ABNORMAL);
        }
        engine.handle_disconnected(now, info);
    }
}

fn handle_command(
    now: Instant,
    engine: &mut ClientEngine,
    command: Command,
    queries: &mut QueryWaiters,
    close_waiters: &mut Vec<oneshot::Sender<Result<(), ClientError>>>,
) {
    match command {
        Command::Send {
            event,
            payload,
            msgpack,
            done,
        } => {
            let payload = both(payload.as_deref(), msgpack.as_deref());
            let _ = done.send(engine.send(now, &event, payload).map_err(|e| refused(e, engine)));
        }
        Command::Query {
            event,
            payload,
            msgpack,
            timeout,
            result,
        } => {
            let payload = both(payload.as_deref(), msgpack.as_deref());
            match engine.query(now, &event, payload, timeout) {
                Ok(id) => {
                    queries.insert(id, result);
                }
                Err(err) => {
                    let _ = result.send(Err(refused(err, engine)));
                }
            }
        }
        Command::Close { code, reason, done } => match engine.close(now, code, &reason) {
            Ok(()) => close_waiters.push(done),
            Err(err) => {
                let _ = done.send(Err(refused(err, engine)));
            }
        },
    }
}

/// The payload the application gave: JSON, with its MessagePack form when made.
fn both<'a>(json: Option<&'a str>, msgpack: Option<&'a [u8]>) -> Payload<'a> {
    match (json, msgpack) {
        (Some(json), Some(msgpack)) => Payload::Both { json, msgpack },
        (Some(json), None) => Payload::Trusted(json),
        (None, _) => Payload::None,
    }
}

/// The engine's refusal as the driver's error: "closed" is spelled once,
/// [`ClientError::Closed`] with why, whichever layer noticed.
fn refused(err: ws_session::client::ClientError, engine: &ClientEngine) -> ClientError {
    match (err, engine.state()) {
        (ws_session::client::ClientError::Closed, State::Disconnected(why)) => {
            ClientError::Closed(why.clone())
        }
        (ws_session::client::ClientError::Closed, _) => {
            ClientError::Closed(Disconnect::failed("the client is closing"))
        }
        (err, _) => ClientError::Refused(err),
    }
}

/// What the next attempt asks for: origin and headers, with the credential as
/// `Authorization: Bearer` when it travels in the handshake.
fn request_for(options: &ClientOptions, engine: &ClientEngine) -> DialRequest {
    let mut request = DialRequest {
        origin: options.origin.clone(),
        headers: options.headers.clone(),
        codec: engine.config().codec,
    };
    if let (AuthMode::Handshake, Some(credential)) = (engine.config().auth_mode, &engine.config().credential)
    {
        request
            .headers
            .push(("Authorization".to_owned(), format!("Bearer {credential}")));
    }
    request
}
