//! A custom transport: tether's session engine over raw TCP, without WebSocket.
//!
//! The engine consumes transport-level messages, so any framing that delivers whole
//! UTF-8 texts can drive it. Here each message, both ways, is one frame:
//!
//! ```text
//! +----------------------+------------------------------------------+
//! | length: u32, BE      | envelope: `length` bytes of UTF-8 JSON   |
//! +----------------------+------------------------------------------+
//! ```
//!
//! A client cannot set handshake headers, so it authenticates with a first `sys.auth`
//! message (`{"v":"1.0","e":"sys.auth","p":{"token":"user:alice"}}`); from there on
//! the protocol is the WebSocket one: `sys.session.created`, application events,
//! heartbeats (`sys.ping`, answer `sys.pong`), resume. A frame longer than the limit
//! (or not UTF-8) closes the connection: nothing of it is read, nothing is buffered.
//!
//! The drive loop is written out here, on smol, with nothing of `ws-driver`: one task
//! owns the [`Engine`] (inputs in, actions drained, the timer armed from
//! `poll_timeout`), one task per connection reads frames, one writes them (everything
//! queued goes out in one write).
//!
//! ```text
//! cargo run -p adapter-async-std --example length_prefixed -- [ADDR]
//! ```
//! Tokens `user:<name>` authenticate as `<name>`; the event `echo` is answered with
//! `echo.reply` and the same payload.

use std::collections::HashMap;
use std::io;
use std::net::{Shutdown, SocketAddr};
use std::time::Instant;

use rand::SeedableRng;
use smol::channel::{self, Receiver, Sender};
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::net::{TcpListener, TcpStream};
use ws_proto::envelope::{OutgoingEnvelope, Payload};
use ws_proto::Message;
use ws_session::{
    Action, ConnectionId, ConnectionInfo, Engine, EngineConfig, InboundEvent, OutboundMessage, UserId,
};

/// The largest envelope a peer may send in one frame: 64 KiB.
pub(crate) const MAX_FRAME: usize = 64 * 1024;

#[allow(dead_code)] // The integration test includes this file and starts `serve` itself.
fn main() -> io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9010".to_owned());
    smol::block_on(async {
        let listener = TcpListener::bind(&addr).await?;
        eprintln!("length-prefixed tether on tcp://{}", listener.local_addr()?);
        serve(listener, EngineConfig::default(), MAX_FRAME).await
    })
}

/// What the connection tasks tell the engine task.
enum Input {
    /// A connection was accepted; the engine's id for it goes back on `id`.
    Opened {
        peer: SocketAddr,
        outbox: Sender<Vec<u8>>,
        id: Sender<ConnectionId>,
    },
    /// One whole envelope arrived.
    Message(ConnectionId, String),
    /// The connection's envelope bytes written so far (slow-consumer accounting).
    Flushed(ConnectionId, usize),
    /// The peer went away, or sent a frame we refuse.
    Closed(ConnectionId),
}

/// Accepts connections on `listener` and serves them, frames of at most `max_frame`
/// bytes, until the listener fails.
pub(crate) async fn serve(listener: TcpListener, config: EngineConfig, max_frame: usize) -> io::Result<()> {
    let engine = Engine::new(config, rand::rngs::StdRng::from_os_rng())
        .map_err(|err| io::Error::new(io::ErrorKind::InvalidInput, err.to_string()))?;
    let (inputs, received) = channel::unbounded();
    smol::spawn(drive(engine, received)).detach();
    loop {
        let (stream, peer) = listener.accept().await?;
        stream.set_nodelay(true)?;
        smol::spawn(connection(stream, peer, inputs.clone(), max_frame)).detach();
    }
}

/// One connection: registers with the engine, writes in a task of its own, reads here.
async fn connection(stream: TcpStream, peer: SocketAddr, inputs: Sender<Input>, max_frame: usize) {
    let (outbox, queued) = channel::unbounded();
    let (id_tx, id_rx) = channel::bounded(1);
    if inputs
        .send(Input::Opened {
            peer,
            outbox,
            id: id_tx,
        })
        .await
        .is_err()
    {
        return;
    }
    let Ok(id) = id_rx.recv().await else { return };
    smol::spawn(write_frames(stream.clone(), id, queued, inputs.clone())).detach();
    read_frames(stream, id, &inputs, max_frame).await;
    let _ = inputs.send(Input::Closed(id)).await;
}

/// Reads frames until the peer goes away or sends one we refuse.
async fn read_frames(mut stream: TcpStream, id: ConnectionId, inputs: &Sender<Input>, max_frame: usize) {
    let mut header = [0; 4];
    loop {
        if stream.read_exact(&mut header).await.is_err() {
            return;
        }
        let len = u32::from_be_bytes(header) as usize;
        if len > max_frame {
            eprintln!(
                "connection {}: a frame of {len} bytes, over {max_frame}: closing",
                id.0
            );
            return;
        }
        let mut body = vec![0; len];
        if stream.read_exact(&mut body).await.is_err() {
            return;
        }
        let Ok(text) = String::from_utf8(body) else {
            eprintln!("connection {}: a frame that is not UTF-8: closing", id.0);
            return;
        };
        if inputs.send(Input::Message(id, text)).await.is_err() {
            return;
        }
    }
}

/// Writes what the engine queued, everything waiting in one write, until the engine
/// drops the outbox (close) or the peer stops reading; then closes the socket.
async fn write_frames(
    mut stream: TcpStream,
    id: ConnectionId,
    queued: Receiver<Vec<u8>>,
    inputs: Sender<Input>,
) {
    let mut batch = Vec::new();
    while let Ok(frame) = queued.recv().await {
        batch.clear();
        batch.extend_from_slice(&frame);
        while let Ok(frame) = queued.try_recv() {
            batch.extend_from_slice(&frame);
        }
        if stream.write_all(&batch).await.is_err() {
            break;
        }
        // What the engine counts is envelope bytes: the batch less a header per frame.
        let frames = count_frames(&batch);
        let _ = inputs.send(Input::Flushed(id, batch.len() - 4 * frames)).await;
    }
    // Unblocks the reader too.
    let _ = stream.shutdown(Shutdown::Both);
}

/// The number of frames in a buffer of whole frames.
fn count_frames(mut buf: &[u8]) -> usize {
    let mut frames = 0;
    while let Some((header, rest)) = buf.split_first_chunk::<4>() {
        buf = rest
            .get(u32::from_be_bytes(*header) as usize..)
            .unwrap_or_default();
        frames += 1;
    }
    frames
}

/// The engine task: every input, then every action drained, then the timer re-armed.
async fn drive(mut engine: Engine, inputs: Receiver<Input>) {
    let mut outboxes: HashMap<ConnectionId, Sender<Vec<u8>>> = HashMap::new();
    loop {
        drain(&mut engine, &mut outboxes);
        let next = match engine.poll_timeout() {
            Some(deadline) => {
                let input = async { Some(inputs.recv().await) };
                let timer = async {
                    smol::Timer::at(deadline).await;
                    None
                };
                smol::future::or(input, timer).await
            }
            None => Some(inputs.recv().await),
        };
        let now = Instant::now();
        match next {
            None => engine.handle_timeout(now),
            // Every sender is gone: the listener stopped.
            Some(Err(_)) => return,
            Some(Ok(Input::Opened { peer, outbox, id })) => {
                let info = ConnectionInfo::new(Some(peer), "/", None, Vec::new());
                let connection = engine.handle_connection_opened(now, info);
                outboxes.insert(connection, outbox);
                let _ = id.try_send(connection);
            }
            Some(Ok(Input::Message(connection, text))) => {
                engine.handle_message(now, connection, Message::Text(text));
            }
            Some(Ok(Input::Flushed(connection, bytes))) => engine.handle_flushed(now, connection, bytes),
            Some(Ok(Input::Closed(connection))) => {
                outboxes.remove(&connection);
                engine.handle_connection_closed(now, connection);
            }
        }
    }
}

/// Does what the engine asks until it asks nothing more.
fn drain(engine: &mut Engine, outboxes: &mut HashMap<ConnectionId, Sender<Vec<u8>>>) {
    while let Some(action) = engine.poll_action() {
        match action {
            Action::Transmit { connection, message } => transmit(outboxes, connection, &message),
            Action::TransmitBroadcast {
                prefix,
                codec,
                recipients,
            } => {
                for &(connection, seq) in &recipients {
                    let message = OutboundMessage {
                        prefix: prefix.clone(),
                        seq: Some(seq),
                        codec,
                    };
                    transmit(outboxes, connection, &message);
                }
                engine.recycle(recipients);
            }
            Action::TransmitMany { connections, message } => {
                for connection in connections {
                    transmit(outboxes, connection, &message);
                }
            }
            Action::Close { connection, .. } => {
                // No close frame in this framing: what was queued is written, then the
                // writer, its outbox gone, closes the socket.
                outboxes.remove(&connection);
            }
            Action::Authenticate(request) => {
                let answer = request
                    .token
                    .strip_prefix("user:")
                    .map(UserId::new)
                    .ok_or_else(|| "tokens look like user:<name>".to_owned());
                if let Err(err) = engine.handle_auth_result(Instant::now(), request.id, answer) {
                    eprintln!("authentication answer refused: {err}");
                }
            }
            Action::Event(event) => handle_event(engine, &event),
            _ => {} // session lifecycle, cross-node publications: not used here
        }
    }
}

/// The application: `echo` answers with its payload; other events get an error.
fn handle_event(engine: &mut Engine, event: &InboundEvent) {
    let Some(c) = event.correlation_id() else { return };
    let now = Instant::now();
    let sent = if event.event() == "echo" {
        let payload = event
            .payload()
            .and_then(|json| Payload::from_json(json).ok())
            .unwrap_or(Payload::None);
        let reply = OutgoingEnvelope::new("echo.reply").with_payload(payload);
        engine.reply(now, event.session, c, &reply)
    } else {
        engine.reply_error(now, event.session, c, 4200, "unknown event")
    };
    if let Err(err) = sent {
        eprintln!("reply not sent: {err}");
    }
}

/// Queues one envelope for `connection` as a frame.
fn transmit(
    outboxes: &HashMap<ConnectionId, Sender<Vec<u8>>>,
    connection: ConnectionId,
    message: &OutboundMessage,
) {
    let Some(outbox) = outboxes.get(&connection) else {
        return;
    };
    let mut frame = Vec::with_capacity(4 + message.len());
    frame.extend_from_slice(&[0; 4]);
    let len = message.write_to(&mut frame);
    // Envelopes are bounded by the engine's limits, far below 4 GiB.
    frame[..4].copy_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
    let _ = outbox.try_send(frame);
}
