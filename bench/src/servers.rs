//! tether as the subject: a plain WebSocket echo over [`ws_driver::WebSocket`] and a
//! session App (echo, a room, publications to it), each on tokio (single-threaded
//! runtime: the server has one core), smol and async-std.

use std::io;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::mpsc;

use adapter_tokio::{App, Context, EngineConfig};
use serde_json::value::RawValue;
use ws_driver::WebSocket;
use ws_proto::{Config, Event};

/// Where the server's tasks run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    /// tokio, single-threaded runtime.
    Tokio,
    /// tokio's multi-thread runtime with its default workers (one per core the process
    /// may run on): not a subject of the run, for measuring the runtime choice by hand.
    TokioMultiThread,
    /// smol's global executor (one worker thread by default).
    Smol,
    /// async-std's global executor.
    AsyncStd,
}

/// What the server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Plain WebSocket echo on every path.
    Raw,
    /// The session App on `/ws`.
    Session,
    /// The session App on raw TCP (the length-prefixed framing).
    SessionTcp,
    /// The session App with presence on ([`presence_app`]), on `/ws`.
    SessionPresence,
}

impl FromStr for Runtime {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "tokio" => Ok(Self::Tokio),
            "tokio-multi-thread" => Ok(Self::TokioMultiThread),
            "smol" => Ok(Self::Smol),
            "async-std" => Ok(Self::AsyncStd),
            other => Err(format!(
                "unknown runtime {other:?}: tokio, tokio-multi-thread, smol or async-std"
            )),
        }
    }
}

impl FromStr for Kind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "raw" => Ok(Self::Raw),
            "session" => Ok(Self::Session),
            "session-tcp" => Ok(Self::SessionTcp),
            "session-presence" => Ok(Self::SessionPresence),
            other => Err(format!(
                "unknown kind {other:?}: raw, session, session-tcp or session-presence"
            )),
        }
    }
}

/// The session App of the benchmarks: any bearer token is the user id; `echo` answers
/// its string payload; `join` puts the session in the room named by the payload;
/// `pub` sends its payload to room `bench` as `msg`. The rate limit is lifted (a load
/// generator sends far more than the default 50 messages/s per session).
pub fn app() -> App {
    App::new()
        .config(EngineConfig {
            rate_limit_per_second: 100_000_000,
            rate_limit_burst: 100_000_000,
            ..EngineConfig::default()
        })
        .authenticate(|token: String, _info| async move { Ok::<_, String>(token) })
        .on("echo", |ctx: Context| async move {
            let text: String = ctx.payload()?;
            ctx.reply("echo", &text)
        })
        .on("join", |ctx: Context| async move {
            let room: String = ctx.payload()?;
            ctx.join(&room).await?;
            ctx.reply("joined", &room)
        })
        .on("pub", |ctx: Context| async move {
            let payload: Box<RawValue> = ctx.payload()?;
            ctx.to_room("bench", "msg", &payload)
        })
}

/// The session App with presence on (`Presence::default()`, announcements as
/// `sys.presence`) for the join storm: `join` is answered with the room's members
/// (`joined {room, members: [user, …]}`, as the chat example does), and heartbeats are
/// an hour apart (the generator's clients do not answer them).
pub fn presence_app() -> App {
    App::new()
        .config(EngineConfig {
            rate_limit_per_second: 100_000_000,
            rate_limit_burst: 100_000_000,
            heartbeat_interval: std::time::Duration::from_secs(3600),
            idle_timeout: std::time::Duration::from_secs(3600),
            ..EngineConfig::default()
        })
        .presence(adapter_tokio::Presence::default())
        .authenticate(|token: String, _info| async move { Ok::<_, String>(token) })
        .on("join", |ctx: Context| async move {
            let room: String = ctx.payload()?;
            ctx.join(&room).await?;
            // The hub's shared list (one per room and change, not a copy per join),
            // and its reply serialized once per list for every join that got it.
            let members = ctx
                .server()
                .room_presence_shared(&room)
                .await
                .map_err(adapter_tokio::HandlerError::internal)?;
            let reply = members.encoded(|list| Joined {
                room: &room,
                members: UserNames(list),
            })?;
            ctx.reply_encoded("joined", &reply);
            Ok(())
        })
}

/// The presence app's join reply: `{"room": …, "members": [user, …]}`.
#[derive(serde::Serialize)]
struct Joined<'a> {
    room: &'a str,
    members: UserNames<'a>,
}

/// A member list serialized as its users' names, without collecting them first.
struct UserNames<'a>(&'a [ws_driver::Member]);

impl serde::Serialize for UserNames<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(|m| m.user.as_str()))
    }
}

/// Starts a server of `kind` on `runtime` at `addr` (port 0: any) in a thread of its
/// own and returns the address it listens on. It runs until the process ends.
pub fn start(runtime: Runtime, kind: Kind, addr: SocketAddr) -> io::Result<SocketAddr> {
    let (bound, listening) = mpsc::channel::<io::Result<SocketAddr>>();
    std::thread::Builder::new()
        .name(format!("bench-server-{runtime:?}-{kind:?}"))
        .spawn(move || {
            let failed = bound.clone();
            let result = match runtime {
                Runtime::Tokio => tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .and_then(|rt| rt.block_on(serve_tokio(kind, addr, bound))),
                Runtime::TokioMultiThread => tokio::runtime::Builder::new_multi_thread()
                    .enable_all()
                    .build()
                    .and_then(|rt| rt.block_on(serve_tokio(kind, addr, bound))),
                Runtime::Smol => {
                    smol::block_on(serve_async_net(adapter_async_std::SmolRuntime, kind, addr, bound))
                }
                Runtime::AsyncStd => async_std::task::block_on(serve_async_net(
                    adapter_async_std::AsyncStdRuntime,
                    kind,
                    addr,
                    bound,
                )),
            };
            if let Err(err) = result {
                let _ = failed.send(Err(err));
            }
        })?;
    listening
        .recv()
        .map_err(|_| io::Error::other("the server thread ended before listening"))?
}

async fn serve_tokio(
    kind: Kind,
    addr: SocketAddr,
    bound: mpsc::Sender<io::Result<SocketAddr>>,
) -> io::Result<()> {
    use tokio_util::compat::TokioAsyncReadCompatExt;
    match kind {
        Kind::Raw => {
            let listener = tokio::net::TcpListener::bind(addr).await?;
            let _ = bound.send(listener.local_addr());
            loop {
                let (stream, _) = listener.accept().await?;
                stream.set_nodelay(true)?;
                tokio::spawn(echo(stream.compat()));
            }
        }
        Kind::Session => {
            let server = adapter_tokio::Server::bind(addr, "/ws", app()).await?;
            let _ = bound.send(server.local_addr());
            server.run().await
        }
        Kind::SessionPresence => {
            let server = adapter_tokio::Server::bind(addr, "/ws", presence_app()).await?;
            let _ = bound.send(server.local_addr());
            server.run().await
        }
        Kind::SessionTcp => {
            let server = adapter_tokio::Server::bind_tcp(addr, app()).await?;
            let _ = bound.send(server.local_addr());
            server.run().await
        }
    }
}

async fn serve_async_net<R: ws_driver::adapter::Runtime + Default>(
    runtime: R,
    kind: Kind,
    addr: SocketAddr,
    bound: mpsc::Sender<io::Result<SocketAddr>>,
) -> io::Result<()> {
    match kind {
        Kind::Raw => {
            let listener = async_net::TcpListener::bind(addr).await?;
            let _ = bound.send(listener.local_addr());
            loop {
                let (stream, _) = listener.accept().await?;
                stream.set_nodelay(true)?;
                runtime.spawn(echo(adapter_async_std::AsyncNetStream::new(stream)));
            }
        }
        Kind::Session => {
            let server = adapter_async_std::Server::<R>::bind(addr, "/ws", app()).await?;
            let _ = bound.send(server.local_addr());
            server.run().await
        }
        Kind::SessionPresence => {
            let server = adapter_async_std::Server::<R>::bind(addr, "/ws", presence_app()).await?;
            let _ = bound.send(server.local_addr());
            server.run().await
        }
        Kind::SessionTcp => {
            let server = adapter_async_std::Server::<R>::bind_tcp(addr, app()).await?;
            let _ = bound.send(server.local_addr());
            server.run().await
        }
    }
}

/// One plain echo connection: every text or binary message is sent back.
async fn echo<S>(stream: S)
where
    S: futures_util::io::AsyncRead + futures_util::io::AsyncWrite + Unpin,
{
    let Ok(Some((mut ws, _))) = WebSocket::accept(stream, Config::default()).await else {
        return;
    };
    while let Ok(Some(event)) = ws.recv().await {
        let sent = match event {
            Event::Text(text) => ws.feed_text(&text),
            Event::Binary(data) => ws.feed_binary(&data),
            _ => Ok(()),
        };
        if sent.is_err() {
            break;
        }
    }
}
