//! The application: handlers, middleware, authentication, pub/sub, hooks, limits.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ws_session::{ConnectionId, EngineConfig, SessionEvent};

use crate::auth::{Authenticator, RefuseAll};
use crate::error::HandlerError;
use crate::handler::{BoxFuture, Handler, Middleware};
use crate::hub::{Hub, ServerHandle};
use crate::pubsub::PubSub;
use crate::runtime::Runtime;
use crate::state::TypeMap;
use crate::store::SessionStore;

/// A lifecycle hook, boxed. It takes its arguments by value so that the future it
/// returns owns them and can run on another task than the hub that saw the event.
pub(crate) type Hook<E> = Arc<dyn Fn(E, ServerHandle) -> BoxFuture<()> + Send + Sync>;

/// A connection's lifecycle, below sessions: one session may see many connections.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectionEvent {
    /// A WebSocket upgrade succeeded.
    Connected {
        /// The connection.
        connection: ConnectionId,
        /// The peer's address, when the transport has one.
        peer: Option<SocketAddr>,
    },
    /// The connection ended (closing handshake, failure or end of stream).
    Disconnected {
        /// The connection.
        connection: ConnectionId,
    },
}

/// The lifecycle hooks of an [`App`] ([`App::on_session`], [`App::on_connection`]).
///
/// Hooks never run on the hub, the one task that owns every session: a hook that
/// waits (a database write, a broadcast to many rooms, a sleep) would otherwise hold
/// up every client's messages and heartbeats. Instead:
///
/// - a session's hooks run on that session's worker, the task that runs its
///   handlers one after the other, so a session's hooks and handlers keep the order
///   the engine saw them in, and different sessions' hooks run side by side;
/// - a connection's hooks run on a task of that connection's own, so `Connected`
///   always comes before `Disconnected` and connections do not wait for each other.
///
/// What a slow hook still holds up is its own session (or connection): the messages
/// of a session queue behind its `Created`/`Resumed` hook, as they would behind a
/// slow handler. A hook that panics is logged and the later hooks and handlers run.
#[derive(Clone, Default)]
pub(crate) struct Hooks {
    pub(crate) session: Vec<Hook<SessionEvent>>,
    pub(crate) connection: Vec<Hook<ConnectionEvent>>,
}

/// A tether application, built once and then started on a runtime by an adapter.
///
/// ```
/// use ws_driver::{App, Context, HandlerError};
///
/// let app = App::new()
///     .authenticate(|token: String, _info| async move {
///         if token.is_empty() { Err("empty token".to_owned()) } else { Ok(token) }
///     })
///     .on("echo", |ctx: Context| async move {
///         let text: String = ctx.payload()?;
///         ctx.reply("echo", &text)
///     });
/// ```
pub struct App {
    pub(crate) handlers: HashMap<String, Arc<dyn Handler>>,
    pub(crate) middleware: Vec<Arc<dyn Middleware>>,
    pub(crate) authenticator: Arc<dyn Authenticator>,
    pub(crate) pubsub: Option<Arc<dyn PubSub>>,
    pub(crate) hooks: Hooks,
    pub(crate) config: EngineConfig,
    pub(crate) handshake_timeout: Duration,
    pub(crate) close_timeout: Duration,
    pub(crate) state: TypeMap,
    pub(crate) presence: Option<crate::Presence>,
    pub(crate) store: Option<Arc<dyn SessionStore>>,
    pub(crate) store_timeout: Duration,
    pub(crate) membership: Option<Arc<dyn crate::Membership>>,
    pub(crate) handover_grace: Duration,
    pub(crate) max_connections: Option<usize>,
}

impl Default for App {
    fn default() -> Self {
        Self::new()
    }
}

impl App {
    /// Default time a client may take to send its whole upgrade request: 10 s.
    pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
    /// Default time the closing handshake (or a stalled write of a connection being
    /// closed) may take before the socket is dropped: 10 s.
    pub const DEFAULT_CLOSE_TIMEOUT: Duration = Duration::from_secs(10);
    /// Default bound on each wait of a handover (handlers finishing, clients closing): 2 s.
    pub const DEFAULT_HANDOVER_GRACE: Duration = Duration::from_secs(2);
    /// Default bound on every call to the session store: 5 s.
    pub const DEFAULT_STORE_TIMEOUT: Duration = Duration::from_secs(5);

    /// An application with no handlers, an authenticator that refuses everyone, and
    /// the default limits.
    pub fn new() -> Self {
        Self {
            handlers: HashMap::new(),
            middleware: Vec::new(),
            authenticator: Arc::new(RefuseAll),
            pubsub: None,
            hooks: Hooks::default(),
            config: EngineConfig::default(),
            handshake_timeout: Self::DEFAULT_HANDSHAKE_TIMEOUT,
            close_timeout: Self::DEFAULT_CLOSE_TIMEOUT,
            state: TypeMap::default(),
            presence: None,
            store: None,
            store_timeout: Self::DEFAULT_STORE_TIMEOUT,
            membership: None,
            handover_grace: Self::DEFAULT_HANDOVER_GRACE,
            max_connections: None,
        }
    }

    /// Announces presence in rooms as it changes: volatile room broadcasts of
    /// `presence.event` (`sys.presence` by default) with a [`PresenceDiff`](crate::PresenceDiff),
    /// `{room, joined: [user, …], left, away, online}`, coalesced per room every
    /// [`Presence::flush_interval`](crate::Presence::flush_interval): a user joins or
    /// leaves a room, all their sessions are suspended (`away`) or one comes back
    /// (`online`); per user across tabs by default. The list of
    /// members with who is online: [`ServerHandle::room_presence`]. Off by default.
    pub fn presence(mut self, presence: crate::Presence) -> Self {
        self.presence = Some(presence);
        self
    }

    /// Makes `state` reachable from every handler, middleware and hook, and from the
    /// [`ServerHandle`], without clones: [`Context::state::<S>()`](crate::Context::state)
    /// and [`ServerHandle::state::<S>()`]. One value per type; call it again with
    /// another type for more. Put what handlers mutate behind its own lock.
    ///
    /// ```
    /// use std::sync::atomic::{AtomicU64, Ordering};
    /// use ws_driver::{App, Context};
    ///
    /// struct Counter(AtomicU64);
    ///
    /// let app = App::new()
    ///     .with_state(Counter(AtomicU64::new(0)))
    ///     .on("hit", |ctx: Context| async move {
    ///         let n = ctx.state::<Counter>().0.fetch_add(1, Ordering::Relaxed) + 1;
    ///         ctx.reply("hits", &n)
    ///     });
    /// # let _ = app;
    /// ```
    pub fn with_state<S: Send + Sync + 'static>(mut self, state: S) -> Self {
        self.state.insert(state);
        self
    }

    /// Handles application event `event` with `handler`. Events without a handler are
    /// answered with `sys.error` 4150 (`ErrorCode::UNKNOWN_EVENT`).
    pub fn on(mut self, event: impl Into<String>, handler: impl Handler) -> Self {
        self.handlers.insert(event.into(), Arc::new(handler));
        self
    }

    /// Like [`App::on`], for handlers that need an authenticated user: an anonymous
    /// session (see `EngineConfig::allow_anonymous`) is answered with `sys.error` 4101
    /// and the handler does not run.
    pub fn on_authenticated(self, event: impl Into<String>, handler: impl Handler) -> Self {
        let handler: Arc<dyn Handler> = Arc::new(handler);
        self.on(event, move |ctx: crate::Context| {
            let handler = handler.clone();
            async move {
                if ctx.is_anonymous() {
                    return Err(HandlerError::with_code(
                        ws_session::ErrorCode::NOT_AUTHENTICATED,
                        "this event needs an authenticated user",
                    ));
                }
                handler.call(ctx).await
            }
        })
    }

    /// Adds `middleware` to the chain that runs before every handler, after those
    /// added before it.
    pub fn middleware(mut self, middleware: impl Middleware) -> Self {
        self.middleware.push(Arc::new(middleware));
        self
    }

    /// Uses `authenticator` for every credential (handshake, `sys.auth`, resume).
    pub fn authenticator(mut self, authenticator: impl Authenticator) -> Self {
        self.authenticator = Arc::new(authenticator);
        self
    }

    /// Uses a closure as the authenticator: `Ok(user_id)`, `Ok(Identity)` (a user id
    /// with typed claims kept with the session), or `Err(reason)`.
    pub fn authenticate<F, Fut, I>(self, f: F) -> Self
    where
        F: Fn(String, Arc<ws_session::ConnectionInfo>) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<I, String>> + Send + 'static,
        I: Into<crate::Identity> + 'static,
    {
        self.authenticator(crate::auth::FnAuthenticator::new(f))
    }

    /// Fans room and global broadcasts out to other nodes through `pubsub`. A backend
    /// that keeps room history ([`PubSub::room_history`]) also orders each room's
    /// publications for every node and lets a session that moves get what its rooms
    /// published meanwhile (see [`EngineConfig::room_history`]).
    pub fn pubsub(mut self, pubsub: impl PubSub) -> Self {
        self.config.room_history = pubsub.room_history();
        self.pubsub = Some(Arc::new(pubsub));
        self.config.publish_broadcasts = true;
        self
    }

    /// Keeps sessions in `store` so that any node sharing it can resume them
    /// ([`EngineConfig::shared_sessions`] is turned on): every change a resume needs is
    /// written to it, in order, off the hub; a resume of a session this node does not
    /// hold loads it from there (claiming it; the former owner lets it go and closes its
    /// connection with 4116). See docs/PROTOCOL.md, "Sessions across nodes".
    pub fn session_store(mut self, store: impl SessionStore) -> Self {
        self.store = Some(Arc::new(store));
        self.config.shared_sessions = true;
        self
    }

    /// Shares room membership with the other nodes through `membership`: each node
    /// reports its sessions' rooms there, [`ServerHandle::room_presence`] lists the
    /// members of every node, and presence ([`App::presence`]) is decided for the
    /// cluster (a user with sessions on two nodes joins and leaves a room once) and
    /// announced on every node. Without it both are this node's. Calls are bounded by
    /// [`App::store_timeout`]. See [`Membership`](crate::Membership).
    pub fn membership(mut self, membership: impl crate::Membership) -> Self {
        self.membership = Some(Arc::new(membership));
        self
    }

    /// Bounds every session store call (a journal write, a load) and every membership
    /// call: a load that takes longer is a refused resume ("unknown"), a write that
    /// does is logged. Default:
    /// [`App::DEFAULT_STORE_TIMEOUT`] (5 s).
    pub fn store_timeout(mut self, timeout: Duration) -> Self {
        self.store_timeout = timeout;
        self
    }

    /// Runs `hook` on every session lifecycle change (created, suspended, resumed,
    /// expired, closed), on that session's worker task: after the handlers of the
    /// session's earlier messages and before those of its later ones. The hub does not
    /// wait for it, so it may take its time (hooks never run on the hub: a session's run
    /// on its worker, in order with its handlers); several hooks run in the
    /// order they were added.
    ///
    /// ```
    /// use ws_driver::{App, ServerHandle, SessionEvent};
    ///
    /// let app = App::new().on_session(|event: SessionEvent, server: ServerHandle| async move {
    ///     if let SessionEvent::Closed { user, .. } = event {
    ///         let _ = server.broadcast("user.left", &user.as_str());
    ///     }
    /// });
    /// ```
    pub fn on_session<F, Fut>(mut self, hook: F) -> Self
    where
        F: Fn(SessionEvent, ServerHandle) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.hooks
            .session
            .push(Arc::new(move |event, server| Box::pin(hook(event, server))));
        self
    }

    /// Runs `hook` when a connection opens or ends, on a task of that connection's own
    /// (`Connected` before `Disconnected`). The hub does not wait for it: connection hooks
    /// run on a task of the connection's own.
    pub fn on_connection<F, Fut>(mut self, hook: F) -> Self
    where
        F: Fn(ConnectionEvent, ServerHandle) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.hooks
            .connection
            .push(Arc::new(move |event, server| Box::pin(hook(event, server))));
        self
    }

    /// Replaces the engine's limits and timers (heartbeat, resume window, buffers,
    /// rate limits, frame and message sizes in `config.envelope`). Default:
    /// [`EngineConfig::default`].
    pub fn config(mut self, config: EngineConfig) -> Self {
        let (publish, shared, history) = (
            self.config.publish_broadcasts,
            self.config.shared_sessions,
            self.config.room_history,
        );
        self.config = config;
        self.config.publish_broadcasts |= publish;
        self.config.shared_sessions |= shared;
        self.config.room_history |= history;
        self
    }

    /// Sets how long a client may take to complete the upgrade request. Default:
    /// [`App::DEFAULT_HANDSHAKE_TIMEOUT`] (10 s).
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Bounds the connections open at once, counted from their accept (the handshake
    /// included) until their socket is dropped (with adapter-tokio's `serve_router`,
    /// its plain HTTP connections too). One more is refused: WebSocket with
    /// HTTP 503 and `Retry-After: 5`, raw TCP with close code 1013 (try again later),
    /// each after its request is read (so that the answer is not lost to a reset);
    /// those refusals hold sockets for at most the handshake timeout, and past an
    /// eighth more (at least 16) streams are dropped without an answer. Refusals are
    /// counted in `tether_connections_refused_total`.
    ///
    /// With the other limits it bounds the server's memory: each connection may hold
    /// a message being received (`max_message_size`) and its unwritten bytes
    /// (`max_outbound_bytes`). Default: no bound but the process's file descriptor
    /// limit (accepts that fail for want of descriptors are retried after a pause);
    /// the right figure depends on the machine's memory, which the library cannot
    /// know.
    pub fn max_connections(mut self, max: usize) -> Self {
        self.max_connections = Some(max);
        self
    }

    /// Bounds each wait of a handover (a graceful stop with a session store, see
    /// docs/PROTOCOL.md): for the handlers of the messages this node took to finish,
    /// then for clients told `sys.handover` to close (those that have not are closed
    /// with 4116). Default: [`App::DEFAULT_HANDOVER_GRACE`] (2 s).
    pub fn handover_grace(mut self, grace: Duration) -> Self {
        self.handover_grace = grace;
        self
    }

    /// Sets how long a connection being closed may take to finish: the peer's close
    /// frame, or the write a stalled peer is not reading (the slow-consumer close).
    /// Then the socket is dropped. Default: [`App::DEFAULT_CLOSE_TIMEOUT`] (10 s).
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        self.close_timeout = timeout;
        self
    }

    /// Starts the hub on `runtime`: from now on connections can be served.
    ///
    /// # Panics
    ///
    /// If the configuration is invalid ([`EngineConfig::validate`]); use
    /// [`App::try_start`] to get the error instead. (Servers' `bind` does.)
    pub fn start<R: Runtime>(self, runtime: R) -> Hub {
        match self.try_start(runtime) {
            Ok(hub) => hub,
            Err(err) => panic!("invalid EngineConfig: {err}"),
        }
    }

    /// Starts the hub on `runtime`, or says why the configuration is invalid.
    pub fn try_start<R: Runtime>(self, runtime: R) -> Result<Hub, ws_session::ConfigError> {
        self.config.validate()?;
        Ok(Hub::start(self, runtime))
    }
}
