//! The tether client, runtime-agnostic: [`Client`] runs the Sans-IO
//! [`ClientEngine`](ws_session::client::ClientEngine) over WebSocket transports that
//! a [`Connector`] opens, with timers from a [`Runtime`].
//!
//! One task (spawned on the runtime) owns the engine and the current transport; the
//! [`Client`] handle (cheap to clone) sends it commands. When every handle is
//! dropped the task closes the connection (1000) and ends.

mod dial;
mod driver;
mod target;

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures_channel::{mpsc, oneshot};
use futures_util::StreamExt;
use serde::Serialize;
use ws_proto::CloseCode;

use crate::runtime::Runtime;

pub use dial::{DialRequest, Dialer};
pub use driver::handshake;
pub use target::{Connector, InvalidUrl, Scheme, Target};
pub use ws_proto::envelope::OwnedEnvelope;
pub use ws_session::client::{
    AuthMode, Backoff, ClientConfig, Constant, Disconnect, Exponential, IdleTimeout, IncomingRequest, Jitter,
    Linear, QueryError, ServerError, SessionDetails, SessionEnd, SessionOutcome, State,
};

/// How a [`Client`] connects.
///
/// Public fields with documented defaults, like every settings struct of tether:
/// `ClientOptions { origin: Some(origin), ..ClientOptions::with_credential("secret") }`.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// The engine's settings: credential, auth mode, backoff, timeouts, queue, acks,
    /// and the WebSocket limits (`engine.proto`). Default: [`ClientConfig::default`].
    pub engine: ClientConfig,
    /// Extra headers of the upgrade request. With [`AuthMode::Handshake`] the
    /// credential is added as `Authorization: Bearer`. Default: none.
    pub headers: Vec<(String, String)>,
    /// The `Origin` header, if any. Default: none.
    pub origin: Option<String>,
    /// After sending a close frame, how long to wait for the server's before the
    /// socket is dropped. Default: [`ClientOptions::DEFAULT_CLOSE_TIMEOUT`] (5 s).
    pub close_timeout: Duration,
    /// How many attempts the *first* connection may take before
    /// [`Client::connected`] (and the adapters' `Client::connect`) gives up with
    /// [`ClientError::Unreachable`] and stops the client. `None`: keep trying (then
    /// only `engine.max_reconnect_attempts` bounds it). Later reconnects are not
    /// counted here. Default: `None`.
    pub connect_attempts: Option<u32>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            engine: ClientConfig::default(),
            headers: Vec::new(),
            origin: None,
            close_timeout: Self::DEFAULT_CLOSE_TIMEOUT,
            connect_attempts: None,
        }
    }
}

impl ClientOptions {
    /// Default wait for the server's close frame after ours: 5 s.
    pub const DEFAULT_CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

    /// The defaults with `credential` (sent as `sys.auth` by default).
    pub fn with_credential(credential: impl Into<String>) -> Self {
        Self {
            engine: ClientConfig::with_credential(credential),
            ..Self::default()
        }
    }

    /// These options asking for the envelope codec `codec` (`engine.codec`):
    /// [`Codec::MsgPack`](ws_proto::envelope::Codec::MsgPack) offers
    /// `tether.v1.msgpack` (and `tether.v1.json` after it) in the upgrade and speaks
    /// binary frames when the server picks it; a server that does not gets JSON.
    /// The API does not change. Payloads given are serialized in both codecs, so
    /// binary data (`serde_bytes`) goes as `bin` on a MessagePack connection; payloads
    /// received are read as JSON values (`bin` shows as an array of numbers there).
    pub fn with_codec(mut self, codec: ws_proto::envelope::Codec) -> Self {
        self.engine.codec = codec;
        self
    }
}

/// What a client call can fail with.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientError {
    /// The URL could not be used.
    InvalidUrl(InvalidUrl),
    /// The engine refused the call: queue full, bad event name, closed, …
    Refused(ws_session::client::ClientError),
    /// The payload could not be serialized to JSON (or is not JSON).
    InvalidPayload(String),
    /// The query got no reply.
    Query(QueryError),
    /// The client has stopped, and why: closed by the application, the credential
    /// refused (close 4102 with the authenticator's reason), the upgrade refused (its
    /// HTTP status), out of reconnect attempts (the last failure).
    Closed(Disconnect),
    /// The first connection did not succeed within
    /// [`ClientOptions::connect_attempts`]; the client was stopped.
    Unreachable {
        /// The attempts made.
        attempts: u32,
        /// How the last one failed.
        last: Disconnect,
    },
}

impl From<ws_proto::envelope::EnvelopeError> for ClientError {
    /// A payload that does not have the expected shape (`payload_as::<T>()?`).
    fn from(err: ws_proto::envelope::EnvelopeError) -> Self {
        Self::InvalidPayload(err.to_string())
    }
}

impl From<QueryError> for ClientError {
    fn from(err: QueryError) -> Self {
        Self::Query(err)
    }
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::InvalidUrl(err) => err.fmt(f),
            ClientError::Refused(err) => err.fmt(f),
            ClientError::InvalidPayload(why) => write!(f, "invalid payload: {why}"),
            ClientError::Query(err) => err.fmt(f),
            ClientError::Closed(why) => write!(f, "client closed ({why})"),
            ClientError::Unreachable { attempts, last } => {
                write!(f, "no connection after {attempts} attempts (last: {last})")
            }
        }
    }
}

impl std::error::Error for ClientError {}

type Listener = Arc<dyn Fn(&OwnedEnvelope) + Send + Sync>;

/// What a request handler resolves to: the answer, or `(code, message)` to refuse
/// (use codes from 4200).
pub type RequestResult = Result<serde_json::Value, (u16, String)>;

/// A handler of server requests for one event ([`Client::on_request`]).
type RequestHandler =
    Arc<dyn Fn(serde_json::Value) -> crate::adapter::BoxFuture<RequestResult> + Send + Sync>;

/// Fan-out of values to subscribed streams; closed subscribers are dropped. Once
/// closed (the client stopped), a new subscription is a stream that has ended.
struct Subscribers<T>(Mutex<Option<Vec<mpsc::UnboundedSender<T>>>>);

impl<T: Clone> Subscribers<T> {
    fn new() -> Self {
        Self(Mutex::new(Some(Vec::new())))
    }

    fn subscribe(&self) -> mpsc::UnboundedReceiver<T> {
        let (tx, rx) = mpsc::unbounded();
        if let Some(subscribers) = lock(&self.0).as_mut() {
            subscribers.push(tx);
        }
        rx
    }

    fn publish(&self, value: &T) {
        if let Some(subscribers) = lock(&self.0).as_mut() {
            subscribers.retain(|tx| tx.unbounded_send(value.clone()).is_ok());
        }
    }

    fn close(&self) {
        *lock(&self.0) = None;
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What the handles and the task share.
struct Shared {
    /// The current state, and the subscribers to its changes (under one lock, so a
    /// new subscriber sees the current value first and misses no change).
    state: Mutex<(State, Vec<mpsc::UnboundedSender<State>>)>,
    messages: Subscribers<OwnedEnvelope>,
    sessions: Subscribers<SessionOutcome>,
    errors: Subscribers<ServerError>,
    listeners: Mutex<Vec<(String, Listener)>>,
    /// How the latest transport ended, for errors that say why.
    last_disconnect: Mutex<Option<Disconnect>>,
    /// [`ClientOptions::connect_attempts`].
    connect_attempts: Option<u32>,
    /// A session was up once (the first connection is over).
    up: std::sync::atomic::AtomicBool,
    request_handlers: Mutex<std::collections::HashMap<String, RequestHandler>>,
    /// MessagePack was asked for: payloads are serialized in it too.
    msgpack: bool,
}

impl Shared {
    /// Why the client is closed: how it stopped, else how its last transport ended.
    pub(crate) fn closed(&self) -> ClientError {
        if let State::Disconnected(why) = &lock(&self.state).0 {
            return ClientError::Closed(why.clone());
        }
        let last = lock(&self.last_disconnect).clone();
        ClientError::Closed(last.unwrap_or_else(|| Disconnect::failed("the client's task ended")))
    }

    /// Whether a session was ever up.
    fn was_up(&self) -> bool {
        self.up.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(crate) fn note_disconnect(&self, info: &Disconnect) {
        *lock(&self.last_disconnect) = Some(info.clone());
    }

    fn set_state(&self, state: State) {
        if matches!(state, State::Connected | State::Reconnected) {
            self.up.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        let mut guard = lock(&self.state);
        if guard.0 == state {
            return;
        }
        guard.1.retain(|tx| tx.unbounded_send(state.clone()).is_ok());
        guard.0 = state;
    }

    fn finish(&self) {
        lock(&self.state).1.clear();
        self.messages.close();
        self.sessions.close();
        self.errors.close();
    }

    fn dispatch(&self, envelope: &OwnedEnvelope) {
        let matching: Vec<Listener> = lock(&self.listeners)
            .iter()
            .filter(|(event, _)| **event == *envelope.event)
            .map(|(_, f)| f.clone())
            .collect();
        for listener in matching {
            listener(envelope);
        }
        self.messages.publish(envelope);
    }
}

enum Command {
    Send {
        event: String,
        payload: Option<String>,
        /// The payload as MessagePack too, when the client asked for MessagePack.
        msgpack: Option<Vec<u8>>,
        done: oneshot::Sender<Result<(), ClientError>>,
    },
    Query {
        event: String,
        payload: Option<String>,
        msgpack: Option<Vec<u8>>,
        timeout: Option<Duration>,
        result: oneshot::Sender<Result<OwnedEnvelope, ClientError>>,
    },
    Close {
        code: CloseCode,
        reason: String,
        done: oneshot::Sender<Result<(), ClientError>>,
    },
}

/// A tether client: one logical connection that reconnects and resumes by itself.
///
/// ```no_run
/// # async fn demo<R: ws_driver::adapter::Runtime, C: ws_driver::client::Connector>(runtime: R, connector: C) -> Result<(), ws_driver::client::ClientError> {
/// use ws_driver::client::{Client, ClientOptions};
///
/// let client = Client::start("ws://127.0.0.1:8080/ws", ClientOptions::with_credential("alice"), runtime, connector)?;
/// client.on("chat.message", |msg| println!("{:?}", msg.payload));
/// client.send("chat.join", &serde_json::json!({"room": "lobby"})).await?;
/// let reply = client.query("chat.history", &serde_json::json!({"room": "lobby"}), None).await?;
/// client.close(ws_proto::CloseCode::NORMAL, "bye").await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    commands: mpsc::UnboundedSender<Command>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Starts a client for `url` (`ws://host[:port]/path?query`, or `tcp://host:port`
    /// for the raw TCP transport): spawns its task on `runtime`, which starts
    /// connecting at once through `connector`. Fails only on a URL it cannot use (and
    /// on `tcp://` with [`AuthMode::Handshake`]: raw TCP carries no headers).
    pub fn start<R: Runtime, C: Connector>(
        url: &str,
        options: ClientOptions,
        runtime: R,
        connector: C,
    ) -> Result<Self, ClientError> {
        let target = Target::parse(url).map_err(ClientError::InvalidUrl)?;
        if target.scheme == Scheme::Tcp && options.engine.auth_mode == AuthMode::Handshake {
            return Err(ClientError::InvalidUrl(InvalidUrl(format!(
                "{url}: raw TCP has no handshake headers: use AuthMode::Message"
            ))));
        }
        let dialer = dial::UrlDialer {
            connector,
            target,
            proto: options.engine.proto.clone(),
        };
        Ok(Self::start_with(dialer, options, runtime))
    }

    /// Starts a client over the transports `dialer` opens (an in-memory pair, a
    /// transport of the application's): like [`start`](Self::start) without a URL.
    pub fn start_with<R: Runtime, D: Dialer>(dialer: D, options: ClientOptions, runtime: R) -> Self {
        let shared = Arc::new(Shared {
            state: Mutex::new((State::Connecting, Vec::new())),
            messages: Subscribers::new(),
            sessions: Subscribers::new(),
            errors: Subscribers::new(),
            listeners: Mutex::new(Vec::new()),
            last_disconnect: Mutex::new(None),
            connect_attempts: options.connect_attempts,
            up: std::sync::atomic::AtomicBool::new(false),
            request_handlers: Mutex::new(std::collections::HashMap::new()),
            msgpack: options.engine.codec == ws_proto::envelope::Codec::MsgPack,
        });
        let (commands, rx) = mpsc::unbounded();
        let task = driver::run(runtime.clone(), dialer, options, rx, shared.clone());
        runtime.spawn(task);
        Self { commands, shared }
    }

    /// The current state.
    pub fn state(&self) -> State {
        lock(&self.shared.state).0.clone()
    }

    /// The state now, then every change. Ends when the client has stopped.
    pub fn states(&self) -> mpsc::UnboundedReceiver<State> {
        let mut guard = lock(&self.shared.state);
        let (tx, rx) = mpsc::unbounded();
        let _ = tx.unbounded_send(guard.0.clone());
        if !matches!(guard.0, State::Disconnected(_)) {
            guard.1.push(tx);
        }
        rx
    }

    /// Every application message from now on (events and broadcasts, not query
    /// replies), once each and in order across resumes. The stream is unbounded: read
    /// it, or drop it when no longer interested (a dropped stream is unsubscribed).
    pub fn messages(&self) -> mpsc::UnboundedReceiver<OwnedEnvelope> {
        self.shared.messages.subscribe()
    }

    /// What became of the session at each (re)connection: created, restored (with
    /// the replay count), or not restored (a new one, and why).
    pub fn sessions(&self) -> mpsc::UnboundedReceiver<SessionOutcome> {
        self.shared.sessions.subscribe()
    }

    /// `sys.error` events that answer no query (a refused `send`, rate limiting, …).
    pub fn server_errors(&self) -> mpsc::UnboundedReceiver<ServerError> {
        self.shared.errors.subscribe()
    }

    /// Calls `listener` for every application message named `event`. Listeners run
    /// on the client's task: keep them short (hand work to a task of your own).
    pub fn on(&self, event: &str, listener: impl Fn(&OwnedEnvelope) + Send + Sync + 'static) {
        lock(&self.shared.listeners).push((event.to_owned(), Arc::new(listener)));
    }

    /// Removes every listener of `event` added with [`on`](Self::on). Returns whether
    /// there was one.
    pub fn off(&self, event: &str) -> bool {
        let mut listeners = lock(&self.shared.listeners);
        let before = listeners.len();
        listeners.retain(|(name, _)| name != event);
        listeners.len() != before
    }

    /// Answers the server's requests for `event` (`ServerHandle::request` on the
    /// server): `handler` gets the request's payload (`Value::Null` for none) and
    /// resolves to the answer, or to `Err((code, message))` to refuse (codes from
    /// 4200). It runs on a task of its own, on the client's runtime. One handler per
    /// event: a second call replaces the first. A request for an event without a
    /// handler is refused with 4150. A handler that panics refuses with 4199.
    ///
    /// The answer goes out on the session the request came on: at once, or after a
    /// resume if the connection dropped meanwhile; it is dropped if that session is
    /// not restored (the server has then failed the request already).
    pub fn on_request<F, Fut>(&self, event: &str, handler: F)
    where
        F: Fn(serde_json::Value) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = RequestResult> + Send + 'static,
    {
        let handler: RequestHandler = Arc::new(move |payload| Box::pin(handler(payload)));
        lock(&self.shared.request_handlers).insert(event.to_owned(), handler);
    }

    /// Removes the request handler of `event`; later requests for it are refused with
    /// 4150. Returns whether there was one.
    pub fn off_request(&self, event: &str) -> bool {
        lock(&self.shared.request_handlers).remove(event).is_some()
    }

    /// Waits until a session is up (`Connected` or `Reconnected`). Fails with
    /// [`ClientError::Closed`] saying why if the client stops first (the credential
    /// refused, the upgrade refused, attempts exhausted), and with
    /// [`ClientError::Unreachable`] once the first connection took more than
    /// [`ClientOptions::connect_attempts`] (the client is then stopped).
    pub async fn connected(&self) -> Result<(), ClientError> {
        let mut states = self.states();
        while let Some(state) = states.next().await {
            match state {
                State::Connected | State::Reconnected => return Ok(()),
                State::Disconnected(why) => return Err(ClientError::Closed(why)),
                // `attempt` is the one about to be made: `attempt` have been made so far
                // (the first, and `attempt - 1` reconnects). Only the first connection
                // is bounded here: a reconnect is `Reconnecting` after `Connected`.
                State::Reconnecting { attempt, .. }
                    if !self.shared.was_up()
                        && self.shared.connect_attempts.is_some_and(|max| attempt >= max) =>
                {
                    let last = lock(&self.shared.last_disconnect)
                        .clone()
                        .unwrap_or_else(|| Disconnect::failed("no connection"));
                    let _ = self.close(CloseCode::NORMAL, "unreachable").await;
                    return Err(ClientError::Unreachable {
                        attempts: attempt,
                        last,
                    });
                }
                _ => {}
            }
        }
        Err(self.shared.closed())
    }

    /// Sends `event` with `payload` serialized as JSON (`()` sends no payload), and as
    /// MessagePack too when the client asked for it ([`ClientOptions::with_codec`]):
    /// on a MessagePack connection that form goes, so binary data (`serde_bytes`) is
    /// `bin`. Online it is written at once; otherwise it waits in the offline queue and
    /// is written once when a session is up (`Refused(QueueFull)` when the queue is
    /// full).
    pub async fn send<T: Serialize + ?Sized>(&self, event: &str, payload: &T) -> Result<(), ClientError> {
        let (payload, msgpack) = self.serialize(payload)?;
        let (done, rx) = oneshot::channel();
        self.command(Command::Send {
            event: event.to_owned(),
            payload,
            msgpack,
            done,
        })?;
        rx.await.unwrap_or_else(|_| Err(self.shared.closed()))
    }

    /// Sends a request and waits for its answer: the reply envelope, or
    /// `Query(Server(..))` for a `sys.error`, `Query(Timeout)` after `timeout`
    /// (default 30 s, [`ClientConfig::query_timeout`]), `Query(NotRestored {..})` when
    /// the session it was sent on could not be resumed.
    pub async fn query<T: Serialize + ?Sized>(
        &self,
        event: &str,
        payload: &T,
        timeout: Option<Duration>,
    ) -> Result<OwnedEnvelope, ClientError> {
        let (payload, msgpack) = self.serialize(payload)?;
        let (result, rx) = oneshot::channel();
        self.command(Command::Query {
            event: event.to_owned(),
            payload,
            msgpack,
            timeout,
            result,
        })?;
        rx.await.unwrap_or_else(|_| Err(self.shared.closed()))
    }

    /// [`query`](Self::query) with the request and the reply typed: `req` is
    /// serialized, the reply's payload read as `Resp` (`InvalidPayload` when it is not
    /// one).
    pub async fn query_as<Req, Resp>(
        &self,
        event: &str,
        req: &Req,
        timeout: Option<Duration>,
    ) -> Result<Resp, ClientError>
    where
        Req: Serialize + ?Sized,
        Resp: serde::de::DeserializeOwned,
    {
        let reply = self.query(event, req, timeout).await?;
        let json = reply.payload.as_deref().map_or("null", |p| p.get());
        serde_json::from_str(json).map_err(|e| ClientError::InvalidPayload(e.to_string()))
    }

    /// Closes for good with `code` and `reason` (the closing handshake, no more
    /// reconnects) and waits until the transport is gone. On a live session it first
    /// ends the session on the server (`sys.session.end`), which forgets it at once
    /// instead of keeping it for the resume window; the final state's
    /// [`Disconnect::session_end`] is then [`SessionEnd::ByClient`].
    pub async fn close(&self, code: CloseCode, reason: &str) -> Result<(), ClientError> {
        let (done, rx) = oneshot::channel();
        if self
            .command(Command::Close {
                code,
                reason: reason.to_owned(),
                done,
            })
            .is_err()
        {
            return Ok(()); // already stopped
        }
        rx.await.unwrap_or(Ok(()))
    }

    /// `payload` as JSON (`None` for null) and, when the client asked for MessagePack,
    /// as MessagePack too.
    fn serialize<T: Serialize + ?Sized>(
        &self,
        payload: &T,
    ) -> Result<(Option<String>, Option<Vec<u8>>), ClientError> {
        let json = to_json(payload)?;
        let msgpack = match (&json, self.shared.msgpack) {
            (Some(_), true) => Some(
                rmp_serde::to_vec_named(payload).map_err(|e| ClientError::InvalidPayload(e.to_string()))?,
            ),
            _ => None,
        };
        Ok((json, msgpack))
    }

    fn command(&self, command: Command) -> Result<(), ClientError> {
        self.commands
            .unbounded_send(command)
            .map_err(|_| self.shared.closed())
    }
}

fn to_json<T: Serialize + ?Sized>(payload: &T) -> Result<Option<String>, ClientError> {
    let json = serde_json::to_string(payload).map_err(|e| ClientError::InvalidPayload(e.to_string()))?;
    Ok((json != "null").then_some(json))
}
