//! The client task: the engine, the current transport, the timers.

use std::collections::HashMap;
use std::io;
use std::sync::Arc;
use std::time::Instant;

use futures_channel::{mpsc, oneshot};
use futures_util::future::{Fuse, FusedFuture, FutureExt};
use futures_util::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use futures_util::StreamExt;
use rand::rngs::StdRng;
use rand::SeedableRng;
use ws_proto::envelope::msgpack::{JSON_PROTOCOL, MSGPACK_PROTOCOL};
use ws_proto::envelope::{Codec, OwnedEnvelope, Payload};
use ws_proto::frame::SeededMasks;
use ws_proto::handshake::{ClientHandshake, ClientRequest, HandshakeError};
use ws_proto::{CloseCode, Config, Connection, ConnectionState, DeflateParams, Event};
use ws_session::client::{
    wire, AuthMode, ClientAction, ClientEngine, Disconnect, IncomingRequest, QueryId, State,
};

use super::{ClientError, ClientOptions, Command, Connector, Shared, Target};
use crate::handler::BoxFuture;
use crate::runtime::Runtime;
use crate::upgrade::read_head;
use crate::write::{take_pending, write_batch, WriteDone};

const READ_BUFFER: usize = 16 * 1024;

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
async fn upgrade<S>(
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
struct Link<S> {
    conn: Connection,
    /// The write half when no write is in flight, with its reusable buffer.
    idle_writer: Option<(WriteHalf<S>, Vec<u8>)>,
    /// What ended it, as far as we know.
    info: Disconnect,
    /// The engine abandoned it (`CloseTransport`): its messages are not reported.
    abandoned: bool,
    /// Past this, a closing transport is dropped.
    close_deadline: Option<Instant>,
    /// The envelope codec the upgrade agreed on.
    codec: Codec,
}

/// A transport attempt: the upgraded stream and its connection.
type Opened<S> = io::Result<(S, Connection, Codec)>;
/// Callers waiting for their queries' answers.
type QueryWaiters = HashMap<QueryId, oneshot::Sender<Result<OwnedEnvelope, ClientError>>>;
/// A server request and its handler's answer (`Err((code, message))` refuses).
type Answer = (IncomingRequest, Result<String, (u16, String)>);

pub(super) async fn run<R: Runtime, C: Connector>(
    runtime: R,
    connector: C,
    target: Target,
    options: ClientOptions,
    mut commands: mpsc::UnboundedReceiver<Command>,
    shared: Arc<Shared>,
) {
    let connector = Arc::new(connector);
    let proto = options.engine.proto.clone();
    let mut engine = ClientEngine::new(Instant::now(), options.engine.clone(), StdRng::from_os_rng());
    let mut link: Option<Link<C::Stream>> = None;
    let mut reader: Option<ReadHalf<C::Stream>> = None;
    let mut buf = vec![0; READ_BUFFER];
    let mut writing: Fuse<BoxFuture<WriteDone<C::Stream>>> = Fuse::terminated();
    let mut opening: Fuse<BoxFuture<Opened<C::Stream>>> = Fuse::terminated();
    let mut queries = QueryWaiters::new();
    let mut close_waiters: Vec<oneshot::Sender<Result<(), ClientError>>> = Vec::new();
    let mut commands_open = true;
    // The answers of request handlers, which run on tasks of their own.
    let (answers_tx, mut answers) = mpsc::unbounded::<Answer>();
    let (mut timer_at, mut timer): (Option<Instant>, Fuse<BoxFuture<()>>) = (None, Fuse::terminated());
    let (mut close_at, mut close_timer): (Option<Instant>, Fuse<BoxFuture<()>>) = (None, Fuse::terminated());
    loop {
        // 1. Drain the engine, and feed it what the transport delivered, until quiet.
        loop {
            let mut progressed = false;
            while let Some(action) = engine.poll_action() {
                progressed = true;
                match action {
                    ClientAction::Connect => {
                        let request = request_for(&target, &options, &engine);
                        let connector = connector.clone();
                        let target = target.clone();
                        let proto = proto.clone();
                        let open: BoxFuture<Opened<C::Stream>> = Box::pin(async move {
                            let stream = connector.connect(&target).await?;
                            upgrade(stream, request, &proto).await
                        });
                        opening = open.fuse();
                    }
                    ClientAction::Transmit(text) => {
                        if let Some(link) = link.as_mut().filter(|l| !l.abandoned) {
                            let _ = link.conn.send(&wire::to_wire(link.codec, text));
                        }
                    }
                    ClientAction::CloseTransport { code, reason } => {
                        if !opening.is_terminated() {
                            opening = Fuse::terminated();
                            let info = Disconnect::failed(format!("connection attempt abandoned: {reason}"));
                            shared.note_disconnect(&info);
                            engine.handle_disconnected(Instant::now(), info);
                        } else if let Some(link) = &mut link {
                            link.abandoned = true;
                            let _ = link.conn.close(code, &reason);
                            link.close_deadline = Some(Instant::now() + options.close_timeout);
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
                                        Ok(Ok(value)) => serde_json::to_string(&value).map_err(|e| {
                                            (ws_session::ErrorCode::INTERNAL.0, e.to_string())
                                        }),
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
                                let message =
                                    format!("no handler for request `{}` on the client", request.event);
                                let refusal = Err((ws_session::ErrorCode::UNKNOWN_EVENT.0, message.as_str()));
                                let _ = engine.answer(Instant::now(), &request, refusal);
                            }
                        }
                    }
                    _ => {}
                }
            }
            if let Some(l) = &mut link {
                while let Some(event) = l.conn.poll_event() {
                    match event {
                        Event::Text(text) if !l.abandoned => {
                            progressed = true;
                            engine.handle_message(Instant::now(), &text);
                        }
                        Event::Binary(bytes) if !l.abandoned && l.codec == Codec::MsgPack => {
                            progressed = true;
                            if let Some(text) = wire::from_binary(&bytes, &proto) {
                                engine.handle_message(Instant::now(), &text);
                            }
                        }
                        Event::Close(frame) => {
                            l.info.code = Some(frame.code.unwrap_or(CloseCode::NO_STATUS));
                            l.info.reason = frame.reason;
                        }
                        Event::Failed(err) => {
                            l.info.code = Some(err.close_code());
                            l.info.error = Some(err.to_string());
                        }
                        _ => {}
                    }
                }
            }
            if !progressed {
                break;
            }
        }

        // 2. The transport: start a write; retire it once closed and flushed.
        let mut retire = false;
        if let Some(l) = &mut link {
            if let Some((mut writer, mut out)) = l.idle_writer.take() {
                if l.conn.pending_transmit_len() > 0 {
                    take_pending(&mut l.conn, &mut out);
                    writing = write_batch(writer, out);
                } else if l.conn.is_closed() {
                    let _ = writer.close().await;
                    retire = true;
                } else {
                    l.idle_writer = Some((writer, out));
                }
            }
            if l.conn.state() != ConnectionState::Open && l.close_deadline.is_none() {
                l.close_deadline = Some(Instant::now() + options.close_timeout);
            }
        }
        if retire {
            end_link(&mut engine, &mut link, &mut reader, &mut writing, None);
            continue;
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
        let reading = link.as_ref().is_some_and(|l| !l.conn.is_closed());
        let mut read = match (&mut reader, reading) {
            (Some(reader), true) => reader.read(&mut buf).fuse(),
            _ => Fuse::terminated(),
        };
        let mut next_command = if commands_open {
            commands.next().fuse()
        } else {
            Fuse::terminated()
        };
        futures_util::select_biased! {
            (writer, out, result) = writing => {
                if let Some(l) = &mut link {
                    match result {
                        Ok(()) => l.idle_writer = Some((writer, out)),
                        Err(err) => {
                            let error = err.to_string();
                            drop(read);
                            end_link(&mut engine, &mut link, &mut reader, &mut writing, Some(error));
                        }
                    }
                }
            },
            opened = opening => match opened {
                Ok((stream, conn, codec)) => {
                    let (r, w) = stream.split();
                    drop(read);
                    reader = Some(r);
                    link = Some(Link {
                        conn,
                        idle_writer: Some((w, Vec::new())),
                        info: Disconnect::default(),
                        abandoned: false,
                        close_deadline: None,
                        codec,
                    });
                    engine.handle_connected(Instant::now());
                }
                Err(err) => {
                    tracing::debug!(%err, "connection attempt failed");
                    let info = match refused_status(&err) {
                        Some(status) => Disconnect::refused(status, err.to_string()),
                        None => Disconnect::failed(err.to_string()),
                    };
                    shared.note_disconnect(&info);
                    engine.handle_disconnected(Instant::now(), info);
                }
            },
            read_result = read => {
                if let Some(l) = link.as_mut() {
                    match read_result {
                        Ok(0) => l.conn.handle_eof(),
                        Ok(n) => l.conn.handle_bytes(&buf[..n]),
                        Err(err) => {
                            l.info.error = Some(err.to_string());
                            l.conn.handle_eof();
                        }
                    }
                }
            },
            command = next_command => match command {
                Some(command) => handle_command(&mut engine, command, &mut queries, &mut close_waiters),
                None => {
                    // Every handle is gone: close and end.
                    commands_open = false;
                    let _ = engine.close(Instant::now(), CloseCode::NORMAL, "");
                }
            },
            () = timer => {
                timer_at = None;
                engine.handle_timeout(Instant::now());
            },
            answer = answers.next() => {
                if let Some((request, result)) = answer {
                    let result = match &result {
                        Ok(json) => Ok(Payload::Trusted(json)),
                        Err((code, message)) => Err((*code, message.as_str())),
                    };
                    // Err only once closed: the answer has nowhere to go.
                    let _ = engine.answer(Instant::now(), &request, result);
                }
            },
            () = close_timer => {
                close_at = None;
                drop(read);
                end_link(&mut engine, &mut link, &mut reader, &mut writing, Some("close timeout".to_owned()));
            },
        }
    }
}

/// The HTTP status of an upgrade the server refused, from [`handshake`]'s error.
fn refused_status(err: &io::Error) -> Option<u16> {
    match err.get_ref()?.downcast_ref::<HandshakeError>()? {
        HandshakeError::NotSwitchingProtocols { status } => Some(*status),
        _ => None,
    }
}

/// Drops the transport and tells the engine how it ended.
fn end_link<S>(
    engine: &mut ClientEngine,
    link: &mut Option<Link<S>>,
    reader: &mut Option<ReadHalf<S>>,
    writing: &mut Fuse<BoxFuture<WriteDone<S>>>,
    error: Option<String>,
) {
    *reader = None;
    *writing = Fuse::terminated();
    if let Some(l) = link.take() {
        let mut info = l.info;
        if info.error.is_none() {
            info.error = error;
        }
        if info.code.is_none() && info.error.is_some() {
            info.code = Some(CloseCode::ABNORMAL);
        }
        engine.handle_disconnected(Instant::now(), info);
    }
}

fn handle_command(
    engine: &mut ClientEngine,
    command: Command,
    queries: &mut QueryWaiters,
    close_waiters: &mut Vec<oneshot::Sender<Result<(), ClientError>>>,
) {
    let now = Instant::now();
    match command {
        Command::Send { event, payload, done } => {
            let payload = payload.as_deref().map_or(Payload::None, Payload::Trusted);
            let _ = done.send(engine.send(now, &event, payload).map_err(|e| refused(e, engine)));
        }
        Command::Query {
            event,
            payload,
            timeout,
            result,
        } => {
            let payload = payload.as_deref().map_or(Payload::None, Payload::Trusted);
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

/// The upgrade request of the next attempt (a fresh key each time).
fn request_for(target: &Target, options: &ClientOptions, engine: &ClientEngine) -> ClientRequest {
    let mut request = ClientRequest::new(
        target.host_header(),
        target.path_and_query.clone(),
        rand::random(),
    );
    request.origin.clone_from(&options.origin);
    request.headers.clone_from(&options.headers);
    if engine.config().codec == Codec::MsgPack {
        // JSON as well: a server that does not speak MessagePack then names JSON.
        request.protocols = vec![MSGPACK_PROTOCOL.to_owned(), JSON_PROTOCOL.to_owned()];
    }
    if let (AuthMode::Handshake, Some(credential)) = (engine.config().auth_mode, &engine.config().credential)
    {
        request
            .headers
            .push(("Authorization".to_owned(), format!("Bearer {credential}")));
    }
    request
}
