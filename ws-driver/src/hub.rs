//! The hub: the one task that owns the session engine.
//!
//! Connection tasks feed it what their sockets deliver; handlers feed it commands;
//! it feeds the engine, drains the engine's actions and routes them: frames to the
//! connection tasks' outboxes, authentications and handlers to tasks of their own,
//! publications to the pub/sub backend's task. The engine is a single state machine
//! for all sessions and rooms, so nothing here needs a lock.
//!
//! Every client's messages and heartbeats go through this one task, so it never runs
//! code the application supplied (handlers, middleware, the authenticator, hooks,
//! [`PubSub::publish`](crate::PubSub::publish)): each is handed to another task, and
//! the hub only pushes onto a channel. The user code that still runs here is `Drop` of
//! the handlers a session registered with `Context::listen`, when the session ends.

use std::collections::HashMap;
use std::future::{Future, Ready};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_channel::{mpsc, oneshot};
use futures_util::future::{Either, Fuse, FutureExt};
use futures_util::StreamExt;
use rand::rngs::StdRng;
use rand::SeedableRng;
use ws_proto::envelope::{sys, Codec, OutgoingEnvelope, Payload};
use ws_proto::{CloseCode, Message};
use ws_session::{
    Action, ApiError, AuthId, ConnectionId, ConnectionInfo, Engine, ErrorCode, IdBuild, InboundEvent,
    JournalEntry, Metrics, OutboundMessage, Publication, PublishTarget, RequestId, RoomOffset, SessionEvent,
    SessionId, SessionRecord, UserId,
};

use crate::admission::{Admissions, ConnectionSlot};
use crate::app::{App, ConnectionEvent, Hook};
use crate::auth::Authenticator;
use crate::context::Context;
use crate::error::HandlerError;
use crate::handler::{BoxFuture, Handler, Middleware, Next};
use crate::inbox::{inbox, unbounded, InboxReceiver, InboxSender, TrySendError};
use crate::membership::{MemberChange, MemberTable, MemberUpdate, Membership, MembershipError};
use crate::outbox::{outbox, OutboxSender};
use crate::payloads::{envelope, Demand, Payloads};
use crate::presence::{self, MemberList, Pending, Presence, Tracker};
use crate::pubsub::PubSub;
use crate::reach::{Audience, SessionView};
use crate::request::RequestError;
use crate::runtime::Runtime;
use crate::state::{Identity, SessionState, TypeMap};
use crate::store::{JournalBatch, SessionStore};

/// What the hub sends a connection task.
#[derive(Debug)]
pub(crate) enum Outbound {
    /// One envelope, one text frame.
    Message(OutboundMessage),
    /// Close the connection with this code and reason.
    Close(CloseCode, &'static str),
}

/// Inputs from connection tasks (bounded: a flooding client waits on its socket).
pub(crate) enum ConnInput {
    Open {
        /// Boxed: the largest variant by far, and every message's slot in the queue
        /// (and every connection's pending send) would be its size.
        info: Box<ConnectionInfo>,
        outbox: OutboxSender<Outbound>,
        reply: oneshot::Sender<Option<ConnectionId>>,
    },
    Message {
        connection: ConnectionId,
        message: Message,
    },
    Flushed {
        connection: ConnectionId,
        bytes: usize,
    },
    Closed {
        connection: ConnectionId,
    },
}

/// Commands from handlers and the application (unbounded: they come from our code).
pub(crate) enum Command {
    /// A message encoded by its sender (a reply on a JSON connection).
    SendEncoded {
        session: SessionId,
        prefix: ws_session::EncodedPrefix,
    },
    Send {
        session: SessionId,
        event: String,
        payload: Option<Payloads>,
        correlation_id: Option<String>,
    },
    Error {
        session: SessionId,
        correlation_id: Option<String>,
        error: HandlerError,
    },
    Broadcast {
        event: String,
        payload: Option<Payloads>,
    },
    BroadcastRoom {
        room: String,
        event: String,
        payload: Option<Payloads>,
        except: Option<SessionId>,
    },
    Emit {
        audience: Audience,
        except: Option<SessionId>,
        volatile: bool,
        event: String,
        payload: Option<Payloads>,
    },
    EmitTo {
        sessions: std::collections::HashSet<SessionId>,
        volatile: bool,
        event: String,
        payload: Option<Payloads>,
    },
    Sessions {
        audience: Audience,
        reply: oneshot::Sender<Vec<SessionView>>,
    },
    RoomPresence {
        room: String,
        reply: PresenceReply,
    },
    /// What the membership backend says this node's reports changed: to announce.
    MemberChanges(Vec<MemberChange>),
    /// Time to report every member again (to the membership task).
    ReportMembers,
    Join {
        session: SessionId,
        room: String,
        reply: oneshot::Sender<Result<bool, ApiError>>,
    },
    Leave {
        session: SessionId,
        room: String,
        reply: oneshot::Sender<Result<bool, ApiError>>,
    },
    EndSession {
        session: SessionId,
        reason: String,
    },
    Request {
        session: SessionId,
        /// The whole `sys.request` payload (`ServerRequest`), in the forms it was made in.
        payload: Payloads,
        timeout: Duration,
        answer: oneshot::Sender<Result<Option<String>, RequestError>>,
    },
    Listen {
        session: SessionId,
        event: String,
        handler: Arc<dyn Handler>,
    },
    Auth {
        id: AuthId,
        connection: ConnectionId,
        result: Result<Identity, String>,
    },
    /// Boxed, as `Loaded`'s record: the two largest variants by far, and every
    /// command's slot in the queue (one per handler reply) would be their size.
    Remote(Box<Publication>),
    /// The backend's room cursor (room history): members without a position start there.
    RoomCursor(Arc<str>, RoomOffset),
    /// A session load will read the history of `rooms` (room history): keep their
    /// publications that arrive from now until the load is answered.
    CatchUp(Vec<Arc<str>>),
    /// The store's answer to a `LoadSession` (`None`: none, failed or timed out), and
    /// with room history what the record's rooms published after its positions
    /// (`None`: it could not be read in full), read after `catch_up` began.
    Loaded {
        connection: ConnectionId,
        session: SessionId,
        record: Option<Box<SessionRecord>>,
        history: Option<Vec<Publication>>,
        catch_up: Vec<Arc<str>>,
    },
    /// Another node took the session: let it go.
    Release(SessionId),
    /// The handlers of the messages taken before a handover began are done (or their
    /// grace passed): write the journal, then tell the clients.
    HandlersDone,
    /// The journal is written: tell the clients `sys.handover`.
    HandOver,
    /// The clients' grace passed: close the connections still open with 4116.
    CloseForHandover,
    Metrics(oneshot::Sender<Metrics>),
    Shutdown(oneshot::Sender<()>),
}

/// How the connection tasks behave; shared by every clone of the [`Hub`].
pub(crate) struct Settings {
    /// The engine's limits (a copy): the wire limits and the `Origin` allow-list apply
    /// at the upgrade too.
    pub(crate) config: ws_session::EngineConfig,
    pub(crate) handshake_timeout: Duration,
    pub(crate) close_timeout: Duration,
    /// A connection stops reading while more than this many bytes wait for its
    /// stalled write ([`EngineConfig::max_outbound_bytes`](ws_session::EngineConfig::max_outbound_bytes)).
    pub(crate) max_unwritten_bytes: usize,
}

/// Sends commands to a running hub: the application's way in from outside handlers
/// (a timer, an HTTP route, another service). Cheap to clone.
#[derive(Clone)]
pub struct ServerHandle {
    commands: InboxSender<Command>,
    state: Arc<TypeMap>,
    /// Whether payloads are wanted in MessagePack too.
    demand: Arc<Demand>,
    /// Measured by the session workers around each handler.
    pub(crate) handler_latency: crate::prometheus::HandlerLatency,
    /// The connections held against `App::max_connections`.
    pub(crate) admissions: Arc<Admissions>,
}

/// A running hub: give a clone to every connection task
/// ([`serve_connection`](crate::adapter::serve_connection)); [`Hub::handle`] controls it.
#[derive(Clone)]
pub struct Hub {
    pub(crate) input: InboxSender<ConnInput>,
    pub(crate) handle: ServerHandle,
    pub(crate) settings: Arc<Settings>,
}

/// Inputs the hub's inbox holds (and one per connection) before connection tasks
/// wait for room.
const CONN_INPUT_BUFFER: usize = 1024;
/// Inputs handled before the engine's actions are drained: batching lets frames for
/// one connection pile up and go out in one write.
const BATCH: usize = 256;

impl Hub {
    pub(crate) fn start<R: Runtime>(app: App, runtime: R) -> Self {
        let (input_tx, input_rx) = inbox(CONN_INPUT_BUFFER);
        let (command_tx, command_rx) = unbounded();
        let mut rng = StdRng::from_os_rng();
        let node = rand::RngCore::next_u64(&mut rng);
        let demand = Arc::new(Demand::new(app.pubsub.clone().map(|pubsub| (pubsub, node))));
        let handle = ServerHandle {
            commands: command_tx.clone(),
            state: Arc::new(app.state),
            demand: demand.clone(),
            handler_latency: crate::prometheus::HandlerLatency::default(),
            admissions: Arc::new(Admissions::new(app.max_connections)),
        };
        let settings = Arc::new(Settings {
            config: app.config.clone(),
            handshake_timeout: app.handshake_timeout,
            close_timeout: app.close_timeout,
            max_unwritten_bytes: app.config.max_outbound_bytes,
        });
        let engine = Engine::new(app.config, rng).expect("invalid EngineConfig");
        let mut publisher = None;
        let history = app
            .pubsub
            .clone()
            .filter(|_| engine.config().room_history && engine.config().shared_sessions);
        if let Some(pubsub) = app.pubsub {
            let mut remote = pubsub.subscribe(node);
            let commands = command_tx.clone();
            runtime.spawn(async move {
                while let Some(publication) = remote.next().await {
                    if commands.try_send(Command::Remote(Box::new(publication))).is_err() {
                        break;
                    }
                }
            });
            // `publish` is the backend's code: it runs on this task, one publication
            // after the other in the order the engine made them, so a slow backend
            // delays only the fan-out to other nodes, never the hub.
            let (tx, mut rx) = mpsc::unbounded::<ToBroker>();
            let (rt, commands) = (runtime.clone(), command_tx.clone());
            runtime.spawn(async move {
                while let Some(item) = rx.next().await {
                    let call = std::panic::AssertUnwindSafe(|| match item {
                        ToBroker::Publish(publication) => pubsub.publish(node, publication),
                        ToBroker::Occupied(room) => pubsub.room_occupied(node, &room),
                        ToBroker::Cursor(room) => {
                            // Asked in order after `room_occupied`; answered off this task.
                            let cursor = pubsub.room_cursor(node, &room);
                            let commands = commands.clone();
                            rt.spawn(async move {
                                if let Some(offset) = cursor.await {
                                    let _ = commands.try_send(Command::RoomCursor(room, offset));
                                }
                            });
                        }
                        ToBroker::Vacated(room) => pubsub.room_vacated(node, &room),
                        ToBroker::MsgPack(present) => pubsub.msgpack_connections(node, present),
                    });
                    if std::panic::catch_unwind(call).is_err() {
                        tracing::error!("the PubSub backend panicked; one call is lost");
                    }
                }
            });
            publisher = Some(tx);
        }
        let store = app.store.map(|store| {
            let timeout = app.store_timeout;
            // Sessions other nodes took from this one: let each go.
            let mut taken = store.subscribe(node);
            let commands = command_tx.clone();
            runtime.spawn(async move {
                while let Some(session) = taken.next().await {
                    if commands.try_send(Command::Release(session)).is_err() {
                        break;
                    }
                }
            });
            // The writer: one batch after the other, in the order the engine made the
            // entries, each bounded by the timeout; what piled up meanwhile goes in one.
            // A barrier is answered once everything queued before it was written (or
            // failed).
            let (tx, mut rx) = mpsc::unbounded::<ToWriter>();
            let writer = store.clone();
            let commands = command_tx.clone();
            let rt = runtime.clone();
            runtime.spawn(async move {
                while let Some(first) = rx.next().await {
                    let mut batch = Vec::new();
                    let mut barriers = Vec::new();
                    let mut take = |item| match item {
                        ToWriter::Batch(more) => batch.extend(more),
                        ToWriter::Barrier(done) => barriers.push(done),
                    };
                    take(first);
                    while let Ok(more) = rx.try_recv() {
                        take(more);
                    }
                    if batch.is_empty() {
                        for done in barriers {
                            let _ = done.send(());
                        }
                        continue;
                    }
                    let entries: usize = batch.iter().map(|(_, e)| e.len()).sum();
                    let outcome = with_timeout(&rt, timeout, writer.append(node, batch)).await;
                    for done in barriers {
                        let _ = done.send(());
                    }
                    match outcome {
                        Some(Ok(fenced)) => {
                            for session in fenced {
                                tracing::info!(%session, "journal write fenced off: the session moved");
                                let _ = commands.try_send(Command::Release(session));
                            }
                        }
                        Some(Err(err)) => tracing::error!(%err, entries, "journal write failed"),
                        // A store may still be writing it (the Redis store holds and
                        // retries); the hub stops waiting so that later batches go on.
                        None => {
                            tracing::error!(entries, "journal write timed out (the store may still write it)")
                        }
                    }
                }
            });
            StoreLink {
                store,
                node,
                timeout,
                writer: tx,
                pending: Vec::new(),
                index: HashMap::default(),
            }
        });
        let members = (app.presence.is_some() || app.membership.is_some()).then(|| {
            let cluster = app.membership.map(|backend| ClusterMembers {
                reports: spawn_membership_reporter(
                    &runtime,
                    backend.clone(),
                    node,
                    app.store_timeout,
                    &command_tx,
                ),
                backend,
                timeout: app.store_timeout,
            });
            Members::new(app.presence, cluster)
        });
        let task = HubTask {
            runtime: runtime.clone(),
            engine,
            inputs: input_rx,
            commands: command_rx,
            handle: handle.clone(),
            conns: HashMap::default(),
            handlers: app.handlers,
            latency: HashMap::new(),
            listeners: HashMap::default(),
            sessions: HashMap::default(),
            members,
            claims: HashMap::default(),
            workers: HashMap::default(),
            middleware: app.middleware.into(),
            authenticator: app.authenticator,
            publisher,
            msgpack_suspended: std::collections::HashSet::default(),
            history: history.map(|pubsub| HistoryLink {
                pubsub,
                rooms: HashMap::new(),
            }),
            session_hooks: app.hooks.session.into(),
            connection_hooks: app.hooks.connection.into(),
            shutdown: None,
            requests: HashMap::default(),
            store,
            handover_grace: app.handover_grace,
        };
        runtime.spawn(task.run());
        Self {
            input: input_tx,
            handle,
            settings,
        }
    }

    /// The wire limits connections of this hub run with (handshake, frames, envelope).
    pub fn proto_config(&self) -> &ws_proto::Config {
        &self.settings.config.envelope
    }

    /// How long a connection may take to send its upgrade request
    /// ([`App::handshake_timeout`](crate::App::handshake_timeout)): adapters that read
    /// heads themselves apply it.
    pub fn handshake_timeout(&self) -> Duration {
        self.settings.handshake_timeout
    }

    /// Whether an upgrade with this `Origin` may proceed: always when no allow-list is
    /// configured ([`EngineConfig::allowed_origins`](ws_session::EngineConfig::allowed_origins)),
    /// else only for a listed origin (ASCII case-insensitive). Refused upgrades get 403.
    pub fn origin_allowed(&self, origin: Option<&str>) -> bool {
        self.settings.config.allows_origin(origin)
    }

    /// Counts one more connection against [`App::max_connections`] for an adapter
    /// whose HTTP server read the upgrade request itself (axum's `mount`): hold the
    /// slot for as long as the connection lives. `None` at the bound: answer 503 with
    /// `Retry-After` instead of upgrading. The accept loops of
    /// [`serve_connection`](crate::adapter::serve_connection) and
    /// [`serve_prefixed`](crate::adapter::serve_prefixed) count their own.
    pub fn try_admit_connection(&self) -> Option<ConnectionSlot> {
        self.handle.admissions.try_admit()
    }

    /// Counts one more accepted stream against [`App::max_connections`] for an accept
    /// loop of your own that reads requests itself: serve it
    /// ([`Admission::Admitted`](crate::adapter::Admission::Admitted)), read its request
    /// and answer [`refuse_at_capacity`](crate::adapter::refuse_at_capacity)
    /// (`Refused`), or close it at once (`Dropped`). Hold the slot until the stream is
    /// closed.
    pub fn admit_connection(&self) -> crate::adapter::Admission {
        self.handle.admissions.admit()
    }

    /// The handle that sends the application's commands to this hub.
    pub fn handle(&self) -> &ServerHandle {
        &self.handle
    }

    /// Sends `input` to the hub; false when the hub is gone. At once when the hub's
    /// queue has room, the usual case; otherwise the wait for room is boxed. Every
    /// connection task keeps room in its future for each send it awaits, for its whole
    /// life, so the rare wait takes its room from the heap when it happens instead.
    pub(crate) fn send(
        &mut self,
        input: ConnInput,
    ) -> Either<Ready<bool>, Pin<Box<dyn Future<Output = bool> + Send + '_>>> {
        match self.input.try_send(input) {
            Ok(()) => Either::Left(std::future::ready(true)),
            Err(TrySendError::Full(input)) => Either::Right(Box::pin(self.input.send(input))),
            Err(TrySendError::Gone) => Either::Left(std::future::ready(false)),
        }
    }
}

impl ServerHandle {
    /// The application state of type `S` ([`App::with_state`](crate::App::with_state)).
    ///
    /// # Panics
    ///
    /// If no state of type `S` was given to the app: a bug in the application, found
    /// the first time the code runs.
    pub fn state<S: Send + Sync + 'static>(&self) -> &S {
        self.try_state().unwrap_or_else(|| {
            panic!(
                "no state of type {} (App::with_state)",
                std::any::type_name::<S>()
            )
        })
    }

    /// The application state of type `S`, or `None` when the app has none.
    pub fn try_state<S: Send + Sync + 'static>(&self) -> Option<&S> {
        self.state.get()
    }

    pub(crate) fn command(&self, command: Command) {
        // Fails only once the hub has stopped; then there is nobody to tell.
        let _ = self.commands.try_send(command);
    }

    /// `payload` serialized for the hub: as JSON, and as MessagePack too when a
    /// MessagePack connection may receive it (here, or on another node).
    pub(crate) fn payloads(&self, payload: &impl serde::Serialize) -> Result<Payloads, HandlerError> {
        Payloads::of(payload, self.demand.msgpack())
    }

    /// Sends `event` with `payload` to `session`, in its stream (replayed after a
    /// reconnect).
    ///
    /// Every send of the handle serializes `payload` once as JSON and, while a
    /// MessagePack connection is open on this node or (per the [`PubSub`](crate::PubSub)
    /// backend) on another, once as MessagePack too: binary data (`serde_bytes`) then
    /// reaches MessagePack clients as `bin` and JSON clients as an array of numbers.
    pub fn send(
        &self,
        session: SessionId,
        event: &str,
        payload: &impl serde::Serialize,
    ) -> Result<(), HandlerError> {
        self.command(Command::Send {
            session,
            event: event.to_owned(),
            payload: Some(self.payloads(payload)?),
            correlation_id: None,
        });
        Ok(())
    }

    /// Sends `event` with `payload` to every session (serialized as for
    /// [`send`](Self::send)).
    pub fn broadcast(&self, event: &str, payload: &impl serde::Serialize) -> Result<(), HandlerError> {
        self.command(Command::Broadcast {
            event: event.to_owned(),
            payload: Some(self.payloads(payload)?),
        });
        Ok(())
    }

    /// Sends `event` with `payload` to every member of `room` but `except` (serialized
    /// as for [`send`](Self::send)).
    pub fn broadcast_room(
        &self,
        room: &str,
        event: &str,
        payload: &impl serde::Serialize,
        except: Option<SessionId>,
    ) -> Result<(), HandlerError> {
        self.command(Command::BroadcastRoom {
            room: room.to_owned(),
            event: event.to_owned(),
            payload: Some(self.payloads(payload)?),
            except,
        });
        Ok(())
    }

    /// Ends `session` on purpose, now: its client is told (`sys.session.ended` with
    /// `reason`, then close 4115) and neither resumes nor reconnects; a suspended
    /// session just ends (a later resume is refused as `ended`). It leaves its rooms,
    /// nothing is kept for a resume, its waiting requests fail with
    /// [`RequestError::SessionEnded`], and the session hooks get
    /// `SessionEvent::Closed` with `CloseReason::ByServer`. Unknown sessions are ignored.
    pub fn end_session(&self, session: SessionId, reason: &str) {
        self.command(Command::EndSession {
            session,
            reason: reason.to_owned(),
        });
    }

    /// The former name of [`end_session`](Self::end_session), with an empty reason.
    /// It used to close with 1000, after which clients came back with a new session;
    /// it now ends the session for the client too.
    #[deprecated(note = "use end_session, which says why and tells the client not to come back")]
    pub fn close_session(&self, session: SessionId) {
        self.end_session(session, "");
    }

    /// Asks the client of `session` something and waits for its answer: sends
    /// `sys.request` with `event` and `payload`, which the client's request handler
    /// for `event` answers (`Client::on_request`, `TetherClient.onRequest`).
    ///
    /// The request is a message of the session stream: made while the session is
    /// suspended, or cut off by a drop, it is delivered on resume and answered then,
    /// within `timeout` (counted from this call). Resolves to the answer's payload
    /// (`Value::Null` for none), or [`RequestError`]: `Timeout`, `UnknownSession`,
    /// `SessionEnded` (ended before answering, or already ended), `Refused` (the
    /// client's error, 4150 when it has no handler), `TooManyPending`, `Stopped`.
    pub async fn request(
        &self,
        session: SessionId,
        event: &str,
        payload: &impl serde::Serialize,
        timeout: Duration,
    ) -> Result<serde_json::Value, RequestError> {
        self.request_as(session, event, payload, timeout).await
    }

    /// [`request`](Self::request), with the answer read as `T`
    /// (`InvalidPayload` when it is not one).
    pub async fn request_as<T: serde::de::DeserializeOwned>(
        &self,
        session: SessionId,
        event: &str,
        payload: &impl serde::Serialize,
        timeout: Duration,
    ) -> Result<T, RequestError> {
        let invalid = |e: HandlerError| RequestError::InvalidPayload(e.to_string());
        // A payload that is JSON `null` is left out, as no payload.
        let present = serde_json::to_string(payload)
            .map_err(|e| RequestError::InvalidPayload(e.to_string()))?
            != "null";
        let request = ws_session::protocol::ServerRequest {
            event: event.into(),
            payload: present.then_some(payload),
        };
        let payload = Payloads::of(&request, self.demand.msgpack()).map_err(invalid)?;
        let (answer, rx) = oneshot::channel();
        self.command(Command::Request {
            session,
            payload,
            timeout,
            answer,
        });
        let raw = rx.await.map_err(|_| RequestError::Stopped)??;
        serde_json::from_str(raw.as_deref().unwrap_or("null"))
            .map_err(|e| RequestError::InvalidPayload(e.to_string()))
    }

    /// A snapshot of the engine's counters, or `None` if the hub has stopped.
    pub async fn metrics(&self) -> Option<Metrics> {
        let (tx, rx) = oneshot::channel();
        self.command(Command::Metrics(tx));
        rx.await.ok()
    }

    /// The server's metrics in the Prometheus text format (OpenMetrics 1.0: serve it
    /// with [`prometheus::CONTENT_TYPE`](crate::prometheus::CONTENT_TYPE)): the
    /// engine's counters and gauges at this moment and the handler latency histogram.
    /// `None` once the hub has stopped. The series are listed in `docs/GUIDE.md`.
    pub async fn prometheus_text(&self) -> Option<String> {
        let registry = self.prometheus_registry().await?;
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("writing to a String");
        Some(text)
    }

    /// The series of [`prometheus_text`](Self::prometheus_text) as a registry, to
    /// encode beside your own: `encode_registry(&mut out, &yours)`,
    /// `encode_registry(&mut out, &tethers)`, then `encode_eof(&mut out)`. Take a
    /// fresh one per scrape: the values are a snapshot.
    pub async fn prometheus_registry(&self) -> Option<prometheus_client::registry::Registry> {
        let metrics = self.metrics().await?;
        Some(crate::prometheus::registry(
            &metrics,
            &self.handler_latency,
            self.admissions.refused(),
        ))
    }

    /// Closes every connection with 1001 (going away), refuses new ones, and resolves
    /// once every connection task has finished. Bound the wait with your own deadline.
    pub async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        self.command(Command::Shutdown(tx));
        let _ = rx.await;
    }
}

/// What the hub asks of the cross-node backend, on its task, in order.
enum ToBroker {
    Publish(Publication),
    Occupied(Arc<str>),
    /// Where the room's history stood when this node began to receive it.
    Cursor(Arc<str>),
    Vacated(Arc<str>),
    /// This node now has MessagePack connections, or none any more.
    MsgPack(bool),
}

/// Where the hub answers a room's member list.
pub(crate) type PresenceReply = oneshot::Sender<Result<MemberList, MembershipError>>;

/// What the hub keeps for presence and room membership.
struct Members {
    tracker: Tracker,
    /// How presence is announced, when it is.
    announce: Option<Presence>,
    /// The changes gathered for the next announcements.
    pending: Pending,
    /// When they are announced (set by the first change after the last announcement).
    due: Option<Instant>,
    /// The counts, when they are this node's alone (no membership backend).
    local: MemberTable,
    /// The backend, when membership is shared with other nodes.
    cluster: Option<ClusterMembers>,
    /// The member lists asked for during this pass of the hub, answered at its end
    /// ([`HubTask::answer_room_presence`]): one list per room for all who asked.
    asks: Vec<(String, PresenceReply)>,
    /// This node's member lists (no backend), per room, kept until the room's
    /// membership changes: a join storm where every join asks for the list builds
    /// it once per pass, not once per join. Empty lists are not kept (any room name
    /// can be asked for; an empty one costs nothing to build).
    lists: HashMap<Arc<str>, MemberList>,
}

impl Members {
    /// Presence and membership as the app configured them (`announce`, `cluster`).
    fn new(announce: Option<Presence>, cluster: Option<ClusterMembers>) -> Self {
        Self {
            tracker: Tracker::default(),
            announce,
            pending: Pending::default(),
            due: None,
            local: MemberTable::new(Duration::MAX),
            cluster,
            asks: Vec::new(),
            lists: HashMap::new(),
        }
    }
}

/// The hub's side of a shared [`Membership`].
struct ClusterMembers {
    backend: Arc<dyn Membership>,
    /// The queue of the task that reports to the backend.
    reports: mpsc::UnboundedSender<Vec<MemberUpdate>>,
    timeout: Duration,
}

/// Starts the task that reports node `node`'s member updates to `backend`, one call
/// at a time in the order they came (what piled up meanwhile goes in one), and asks the
/// hub every [`Membership::refresh_interval`] for all of its members (which keeps them
/// alive and sweeps other nodes' expired ones). What a call changed goes back to the
/// hub to announce. A failed call is logged; the next full report puts it right.
fn spawn_membership_reporter<R: Runtime>(
    runtime: &R,
    backend: Arc<dyn Membership>,
    node: u64,
    timeout: Duration,
    commands: &InboxSender<Command>,
) -> mpsc::UnboundedSender<Vec<MemberUpdate>> {
    let (tx, mut rx) = mpsc::unbounded::<Vec<MemberUpdate>>();
    let (rt, commands) = (runtime.clone(), commands.clone());
    runtime.spawn(async move {
        let interval = backend.refresh_interval().max(Duration::from_millis(10));
        // The first full report comes at once: a restarted node sweeps at start.
        let _ = commands.try_send(Command::ReportMembers);
        let mut next = rt.now() + interval;
        loop {
            let sleep = rt.sleep_until(next);
            let mut updates = match futures_util::future::select(rx.next(), sleep).await {
                futures_util::future::Either::Left((Some(updates), _)) => updates,
                futures_util::future::Either::Left((None, _)) => break,
                futures_util::future::Either::Right(_) => {
                    next = rt.now() + interval;
                    if commands.try_send(Command::ReportMembers).is_err() {
                        break;
                    }
                    continue;
                }
            };
            while let Ok(more) = rx.try_recv() {
                updates.extend(more);
            }
            let n = updates.len();
            let now_ms = crate::membership::unix_ms();
            match with_timeout(&rt, timeout, backend.update(node, now_ms, updates)).await {
                Some(Ok(changes)) if !changes.is_empty() => {
                    let _ = commands.try_send(Command::MemberChanges(changes));
                }
                Some(Ok(_)) => {}
                Some(Err(err)) => tracing::warn!(%err, updates = n, "membership report failed"),
                None => tracing::warn!(updates = n, "membership report timed out"),
            }
        }
    });
    tx
}

/// What the hub hands the journal writer.
enum ToWriter {
    Batch(JournalBatch),
    Barrier(oneshot::Sender<()>),
}

/// The hub's side of the shared session store.
struct StoreLink {
    store: Arc<dyn SessionStore>,
    node: u64,
    timeout: Duration,
    /// The writer task's queue.
    writer: mpsc::UnboundedSender<ToWriter>,
    /// Entries of the current drain, per session in order, and where each session's are.
    pending: JournalBatch,
    index: HashMap<SessionId, usize, IdBuild>,
}

impl StoreLink {
    fn push(&mut self, session: SessionId, entry: JournalEntry) {
        let at = *self.index.entry(session).or_insert_with(|| {
            self.pending.push((session, Vec::new()));
            self.pending.len() - 1
        });
        self.pending[at].1.push(entry);
    }

    /// Hands the drain's entries to the writer, as one batch.
    fn flush(&mut self) {
        if !self.pending.is_empty() {
            self.index.clear();
            let _ = self
                .writer
                .unbounded_send(ToWriter::Batch(std::mem::take(&mut self.pending)));
        }
    }

    /// Hands the drain's entries to the writer; the receiver answers once they (and
    /// everything before) were written, failed or timed out.
    fn barrier(&mut self) -> oneshot::Receiver<()> {
        self.flush();
        let (tx, rx) = oneshot::channel();
        let _ = self.writer.unbounded_send(ToWriter::Barrier(tx));
        rx
    }
}

/// `future`, or `None` once `timeout` has passed.
async fn with_timeout<R: Runtime, T>(runtime: &R, timeout: Duration, future: BoxFuture<T>) -> Option<T> {
    let sleep = runtime.sleep_until(runtime.now() + timeout);
    match futures_util::future::select(future, sleep).await {
        futures_util::future::Either::Left((value, _)) => Some(value),
        futures_util::future::Either::Right(_) => None,
    }
}

/// A connection the hub routes frames to.
struct ConnEntry {
    outbox: OutboxSender<Outbound>,
    /// The connection's hook worker, when there are connection hooks: `Disconnected`
    /// is queued behind `Connected`, then the sender is dropped and the worker exits.
    hooks: Option<OutboxSender<Job>>,
    /// Whether it speaks MessagePack (counted in the [`Demand`]).
    msgpack: bool,
    /// The session it carries, once created or resumed on it.
    session: Option<SessionId>,
}

/// Handlers of one session run one after the other, in arrival order, on a worker
/// task of the session's own; sessions run in parallel. Its lifecycle hooks run there
/// too, in the same order as its handlers.
type Job = BoxFuture<()>;

/// Starts a worker on `runtime`: a task that runs the jobs sent to it one after the
/// other, and ends once every sender is dropped and the queue is empty.
fn spawn_worker(runtime: &impl Runtime) -> OutboxSender<Job> {
    let (tx, mut rx) = outbox::<Job>();
    runtime.spawn(async move {
        loop {
            let mut jobs = std::collections::VecDeque::new();
            if !futures_util::future::poll_fn(|cx| rx.poll_take(cx, &mut jobs)).await {
                return;
            }
            for job in jobs {
                job.await;
            }
        }
    });
    tx
}

/// A job that runs every hook of `hooks` on `event`, in the order they were added.
///
/// Each hook is called inside the job, not before it: the call is application code
/// too (it may work before its first `.await`), and it must not run on the hub. A hook
/// that panics is logged; the hooks after it, and the worker's later jobs, still run.
fn hook_job<E>(hooks: Arc<[Hook<E>]>, event: E, handle: ServerHandle, kind: &'static str) -> Job
where
    E: Clone + Send + Sync + std::fmt::Debug + 'static,
{
    Box::pin(async move {
        for hook in hooks.iter() {
            let run = async { hook(event.clone(), handle.clone()).await };
            if std::panic::AssertUnwindSafe(run).catch_unwind().await.is_err() {
                tracing::error!(?event, "a {kind} hook panicked");
            }
        }
    })
}

/// The session a lifecycle event is about (every kind the driver knows has one).
fn session_of(event: &SessionEvent) -> Option<SessionId> {
    match event {
        SessionEvent::Created { session, .. }
        | SessionEvent::Suspended { session }
        | SessionEvent::Resumed { session, .. }
        | SessionEvent::Expired { session, .. }
        | SessionEvent::Closed { session, .. }
        | SessionEvent::Moved { session } => Some(*session),
        _ => None,
    }
}

/// The backend's room history, for sessions that move here.
struct HistoryLink {
    pubsub: Arc<dyn PubSub>,
    /// Rooms whose history loads are reading: how many, and the publications
    /// received since the first began.
    rooms: HashMap<Arc<str>, (usize, Vec<Publication>)>,
}

struct HubTask<R: Runtime> {
    runtime: R,
    engine: Engine,
    inputs: InboxReceiver<ConnInput>,
    commands: InboxReceiver<Command>,
    handle: ServerHandle,
    conns: HashMap<ConnectionId, ConnEntry, IdBuild>,
    handlers: HashMap<String, Arc<dyn Handler>>,
    /// The latency histogram of each event name seen, so that dispatching does not
    /// allocate a label per message.
    latency: HashMap<String, prometheus_client::metrics::histogram::Histogram>,
    listeners: HashMap<SessionId, HashMap<String, Arc<dyn Handler>>, IdBuild>,
    workers: HashMap<SessionId, OutboxSender<Job>, IdBuild>,
    /// What the driver keeps per session (claims, data), for its handlers' contexts.
    sessions: HashMap<SessionId, Arc<SessionState>, IdBuild>,
    /// Presence and room membership, when the app turned on either.
    members: Option<Members>,
    /// The claims of a connection's latest authentication, until the session it
    /// creates or resumes takes them (and until the connection ends).
    claims: HashMap<ConnectionId, Option<Arc<dyn std::any::Any + Send + Sync>>, IdBuild>,
    middleware: Arc<[Arc<dyn Middleware>]>,
    authenticator: Arc<dyn Authenticator>,
    /// The queue of the task that calls [`PubSub::publish`](crate::PubSub::publish),
    /// when there is a backend.
    publisher: Option<mpsc::UnboundedSender<ToBroker>>,
    /// The backend's room history, when it keeps one and sessions are shared.
    history: Option<HistoryLink>,
    /// Suspended sessions whose last connection spoke MessagePack: counted in the
    /// [`Demand`] like a connection, so that what they are sent while away keeps its
    /// binary form for the replay.
    msgpack_suspended: std::collections::HashSet<SessionId, IdBuild>,
    session_hooks: Arc<[Hook<SessionEvent>]>,
    connection_hooks: Arc<[Hook<ConnectionEvent>]>,
    shutdown: Option<Vec<oneshot::Sender<()>>>,
    /// Server→client requests waiting for the engine's `Response`.
    requests: HashMap<RequestId, oneshot::Sender<Result<Option<String>, RequestError>>, IdBuild>,
    /// The shared session store, when the app has one.
    store: Option<StoreLink>,
    handover_grace: Duration,
}

#[allow(
    clippy::large_enum_variant,
    reason = "one short-lived value on the hub's stack; boxing would allocate per wake"
)]
enum Wake {
    Conn(Option<ConnInput>),
    Command(Option<Command>),
    Timer,
}

impl<R: Runtime> HubTask<R> {
    async fn run(mut self) {
        // The timer is kept across iterations while the engine's deadline is unchanged:
        // a new sleep per message would cost an allocation each.
        let mut armed: Option<Instant> = None;
        let mut timer: Fuse<BoxFuture<()>> = Fuse::terminated();
        loop {
            let deadline = match (self.engine.poll_timeout(), self.presence_due()) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            if deadline != armed {
                armed = deadline;
                timer = match deadline {
                    Some(at) => self.runtime.sleep_until(at).fuse(),
                    None => Fuse::terminated(),
                };
            }
            let wake = futures_util::select_biased! {
                command = self.commands.next() => Wake::Command(command),
                input = self.inputs.next() => Wake::Conn(input),
                () = timer => Wake::Timer,
            };
            let now = self.runtime.now();
            match wake {
                Wake::Conn(Some(input)) => self.on_conn_input(now, input),
                Wake::Command(Some(command)) => self.on_command(now, command),
                Wake::Timer => {
                    armed = None;
                    self.engine.handle_timeout(now);
                }
                // Every connection task and handle is gone: nothing can reach us.
                Wake::Conn(None) | Wake::Command(None) => {
                    if self.conns.is_empty() {
                        return;
                    }
                }
            }
            for _ in 0..BATCH {
                if let Some(command) = self.commands.try_recv() {
                    self.on_command(now, command);
                } else if let Some(input) = self.inputs.try_recv() {
                    self.on_conn_input(now, input);
                } else {
                    break;
                }
            }
            self.answer_room_presence();
            if self.presence_due().is_some_and(|due| due <= now) {
                self.flush_presence(now);
            }
            self.drain(now);
            if self.shutdown.is_some() && self.conns.is_empty() {
                let done: Vec<_> = self.shutdown.take().into_iter().flatten().collect();
                match &mut self.store {
                    // Done once the last entries (the sessions suspended) are written.
                    Some(store) => {
                        let written = store.barrier();
                        self.runtime.spawn(async move {
                            let _ = written.await;
                            for done in done {
                                let _ = done.send(());
                            }
                        });
                    }
                    None => {
                        for done in done {
                            let _ = done.send(());
                        }
                    }
                }
                return;
            }
        }
    }

    fn on_conn_input(&mut self, now: Instant, input: ConnInput) {
        match input {
            ConnInput::Open { info, outbox, reply } => {
                if self.shutdown.is_some() {
                    let _ = reply.send(None);
                    return;
                }
                let peer = info.peer_addr;
                let msgpack = info.codec == Codec::MsgPack;
                if msgpack && self.handle.demand.opened() {
                    self.to_broker(ToBroker::MsgPack(true));
                }
                let connection = self.engine.handle_connection_opened(now, *info);
                let _ = reply.send(Some(connection));
                let hooks = (!self.connection_hooks.is_empty()).then(|| {
                    let worker = spawn_worker(&self.runtime);
                    let event = ConnectionEvent::Connected { connection, peer };
                    let job = hook_job(
                        self.connection_hooks.clone(),
                        event,
                        self.handle.clone(),
                        "connection",
                    );
                    let _ = worker.send(job);
                    worker
                });
                self.conns.insert(
                    connection,
                    ConnEntry {
                        outbox,
                        hooks,
                        msgpack,
                        session: None,
                    },
                );
            }
            ConnInput::Message { connection, message } => {
                self.engine.handle_message(now, connection, message);
            }
            ConnInput::Flushed { connection, bytes } => {
                self.engine.handle_flushed(now, connection, bytes);
            }
            ConnInput::Closed { connection } => {
                let entry = self.conns.remove(&connection);
                if entry.as_ref().is_some_and(|e| e.msgpack) {
                    // Its session, suspended now, will replay what it is sent meanwhile
                    // to a MessagePack client: it stands in for the connection in the
                    // demand until it is attached again or ends.
                    let session = entry.as_ref().and_then(|e| e.session).filter(|session| {
                        // Still here, and not carried by another connection by now.
                        self.engine
                            .session_info(*session)
                            .is_some_and(|info| !matches!(info.connection, Some(c) if c != connection))
                    });
                    if let Some(session) = session {
                        if self.msgpack_suspended.insert(session) {
                            self.handle.demand.opened();
                        }
                    }
                    if self.handle.demand.closed() {
                        self.to_broker(ToBroker::MsgPack(false));
                    }
                }
                self.claims.remove(&connection);
                self.engine.handle_connection_closed(now, connection);
                // Queued behind `Connected`; dropping the sender lets the worker exit
                // once both have run.
                if let Some(worker) = entry.and_then(|entry| entry.hooks) {
                    let event = ConnectionEvent::Disconnected { connection };
                    let job = hook_job(
                        self.connection_hooks.clone(),
                        event,
                        self.handle.clone(),
                        "connection",
                    );
                    let _ = worker.send(job);
                }
            }
        }
    }

    fn on_command(&mut self, now: Instant, command: Command) {
        match command {
            Command::SendEncoded { session, prefix } => {
                if let Err(err) = self.engine.send_encoded(now, session, &prefix) {
                    tracing::debug!(%err, "send to a session that is gone");
                }
            }
            Command::Send {
                session,
                event,
                payload,
                correlation_id,
            } => {
                let mut envelope = envelope(&event, payload.as_ref());
                envelope.correlation_id = correlation_id.as_deref();
                let result = match (correlation_id.as_deref(), &payload) {
                    // A reply many sessions get alike: its replay copy shares the bytes.
                    (c @ Some(_), Some(Payloads::Shared(shared))) => {
                        self.engine.send_shared(now, session, &shared.prefix(&event), c)
                    }
                    (Some(_), _) => self.engine.send(now, session, &envelope),
                    // A session on another node gets it through the broker.
                    (None, _) => self.engine.send_anywhere(now, session, &envelope).map(|_| 0),
                };
                if let Err(err) = result {
                    tracing::debug!(%err, "send to a session that is gone");
                }
            }
            Command::Error {
                session,
                correlation_id,
                error,
            } => {
                let result = match correlation_id {
                    Some(c) => self
                        .engine
                        .reply_error(now, session, &c, error.code, &error.message),
                    None => {
                        let payload = serde_json::json!({ "code": error.code, "message": error.message });
                        let payload = payload.to_string();
                        self.engine
                            .send(now, session, &json_envelope(sys::ERROR, &payload))
                    }
                };
                if let Err(err) = result {
                    tracing::debug!(%err, "error reply to a session that is gone");
                }
            }
            Command::Broadcast { event, payload } => {
                self.engine.broadcast(now, &envelope(&event, payload.as_ref()));
            }
            Command::BroadcastRoom {
                room,
                event,
                payload,
                except,
            } => {
                self.engine
                    .broadcast_room(now, &room, &envelope(&event, payload.as_ref()), except);
            }
            Command::Emit {
                audience,
                except,
                volatile,
                event,
                payload,
            } => self.emit(
                now,
                audience,
                except,
                volatile,
                &envelope(&event, payload.as_ref()),
            ),
            Command::EmitTo {
                sessions,
                volatile,
                event,
                payload,
            } => {
                let env = envelope(&event, payload.as_ref());
                let pick = |sid: SessionId, _: &UserId| sessions.contains(&sid);
                if volatile {
                    self.engine.broadcast_volatile_filter(now, None, &env, pick);
                } else {
                    self.engine.broadcast_filter(now, &env, pick);
                }
            }
            Command::Sessions { audience, reply } => {
                let _ = reply.send(self.views(&audience));
            }
            Command::RoomPresence { room, reply } => {
                // Answered at the end of the pass, together with every other list asked
                // for meanwhile (what this pass changes included).
                self.members_listed().asks.push((room, reply));
            }
            Command::MemberChanges(changes) => self.announce(now, changes),
            Command::ReportMembers => {
                if let Some(members) = &self.members {
                    if let Some(cluster) = &members.cluster {
                        let _ = cluster.reports.unbounded_send(members.tracker.all());
                    }
                }
            }
            Command::Join { session, room, reply } => {
                let result = self.engine.join_room(now, session, &room);
                if let Ok(true) = result {
                    self.track(now, |t, out| t.joined(session, &room, out));
                }
                let _ = reply.send(result);
            }
            Command::Leave { session, room, reply } => {
                let result = self.engine.leave_room(now, session, &room);
                if let Ok(true) = result {
                    self.track(now, |t, out| t.left(session, &room, out));
                }
                let _ = reply.send(result);
            }
            Command::EndSession { session, reason } => {
                if let Err(err) = self.engine.end_session(now, session, &reason) {
                    tracing::debug!(%err, "end of a session that is gone");
                }
            }
            Command::Request {
                session,
                payload,
                timeout,
                answer,
            } => {
                let sent = self
                    .engine
                    .request_serialized(now, session, payload.payload(), timeout)
                    .map_err(RequestError::from);
                match sent {
                    Ok(id) => {
                        self.requests.insert(id, answer);
                    }
                    Err(err) => {
                        let _ = answer.send(Err(err));
                    }
                }
            }
            Command::Listen {
                session,
                event,
                handler,
            } => {
                if self.engine.session_info(session).is_some() {
                    self.listeners.entry(session).or_default().insert(event, handler);
                }
            }
            Command::Auth {
                id,
                connection,
                result,
            } => {
                let result = result.map(|identity| {
                    self.claims.insert(connection, identity.claims);
                    UserId::new(identity.user)
                });
                if let Err(err) = self.engine.handle_auth_result(now, id, result) {
                    tracing::warn!(%err, "authentication answer the engine did not ask for");
                }
            }
            Command::Remote(publication) => {
                if let (Some(history), PublishTarget::Room(room), Some(_)) =
                    (&mut self.history, &publication.target, publication.offset)
                {
                    if let Some((_, kept)) = history.rooms.get_mut(room) {
                        kept.push((*publication).clone());
                    }
                }
                self.engine.handle_remote_publish(now, &publication)
            }
            Command::RoomCursor(room, offset) => self.engine.handle_room_cursor(now, &room, offset),
            Command::CatchUp(rooms) => {
                if let Some(history) = &mut self.history {
                    for room in rooms {
                        history.rooms.entry(room).or_default().0 += 1;
                    }
                }
            }
            Command::Loaded {
                connection,
                session,
                record,
                mut history,
                catch_up,
            } => {
                // What arrived while the history was read joins it (the engine keeps
                // each publication once, after the session's position).
                if let Some(link) = &mut self.history {
                    for room in &catch_up {
                        let Some((loads, kept)) = link.rooms.get_mut(room) else {
                            continue;
                        };
                        if let Some(history) = &mut history {
                            history.extend(kept.iter().cloned());
                        }
                        *loads -= 1;
                        if *loads == 0 {
                            link.rooms.remove(room);
                        }
                    }
                }
                self.engine
                    .handle_session_loaded(now, connection, session, record.map(|r| *r), history);
                // The read subscribed this node to the rooms; a refused resume left
                // nobody there.
                for room in catch_up {
                    if self.engine.room_len(&room) == 0 {
                        self.to_broker(ToBroker::Vacated(room));
                    }
                }
            }
            Command::Release(session) => {
                self.engine.release_session(now, session);
            }
            Command::Metrics(reply) => {
                let _ = reply.send(self.engine.metrics());
            }
            Command::Shutdown(done) => {
                if self.shutdown.is_none() {
                    match &mut self.store {
                        // Hand the sessions over: no new message is taken; those taken
                        // are answered; the journal is written; then the clients are
                        // told, and close (see docs/PROTOCOL.md).
                        Some(_) => {
                            let grace = self.handover_grace;
                            // The events taken so far go to their workers first (ahead of
                            // the marks below); every later message the engine refuses,
                            // in order on its connection (see `stop_taking_messages`).
                            self.drain(now);
                            self.engine.stop_taking_messages();
                            let done: Vec<oneshot::Receiver<()>> = self
                                .workers
                                .values()
                                .map(|worker| {
                                    let (tx, rx) = oneshot::channel();
                                    let _ = worker.send(Box::pin(async move {
                                        let _ = tx.send(());
                                    }));
                                    rx
                                })
                                .collect();
                            let (handle, runtime) = (self.handle.clone(), self.runtime.clone());
                            self.runtime.spawn(async move {
                                let all = Box::pin(futures_util::future::join_all(done).map(|_| ()));
                                if with_timeout(&runtime, grace, all).await.is_none() {
                                    tracing::warn!(?grace, "handlers still running at the handover");
                                }
                                handle.command(Command::HandlersDone);
                            });
                        }
                        None => {
                            for entry in self.conns.values() {
                                let _ = entry
                                    .outbox
                                    .send(Outbound::Close(CloseCode::GOING_AWAY, "server shutting down"));
                            }
                        }
                    }
                }
                self.shutdown.get_or_insert_with(Vec::new).push(done);
            }
            Command::HandlersDone => {
                // What those handlers answered went through the hub before this
                // command: it is in the journal batch this barrier waits for.
                if let Some(store) = &mut self.store {
                    let written = store.barrier();
                    let handle = self.handle.clone();
                    self.runtime.spawn(async move {
                        let _ = written.await;
                        handle.command(Command::HandOver);
                    });
                }
            }
            Command::HandOver => {
                self.engine.begin_handover(now);
                let (handle, runtime) = (self.handle.clone(), self.runtime.clone());
                let grace = self.handover_grace;
                self.runtime.spawn(async move {
                    runtime.sleep_until(runtime.now() + grace).await;
                    handle.command(Command::CloseForHandover);
                });
            }
            Command::CloseForHandover => {
                let code = ErrorCode::SESSION_MOVED.close_code();
                for entry in self.conns.values() {
                    let _ = entry
                        .outbox
                        .send(Outbound::Close(code, "node stopping: resume elsewhere now"));
                }
            }
        }
    }

    /// Drains the engine's actions and routes each.
    fn drain(&mut self, now: Instant) {
        while let Some(action) = self.engine.poll_action() {
            match action {
                Action::Transmit { connection, message } => self.transmit(connection, message),
                Action::TransmitBroadcast {
                    prefix,
                    codec,
                    recipients,
                } => {
                    for &(connection, seq) in &recipients {
                        let message = OutboundMessage::new(prefix.clone(), Some(seq), codec);
                        self.transmit(connection, message);
                    }
                    self.engine.recycle(recipients);
                }
                Action::TransmitMany { connections, message } => {
                    for connection in connections {
                        self.transmit(connection, message.clone());
                    }
                }
                Action::Close {
                    connection,
                    code,
                    reason,
                } => {
                    // The engine has forgotten the connection; the task closes it and
                    // reports `Closed`, which removes the entry.
                    if let Some(entry) = self.conns.get(&connection) {
                        let _ = entry.outbox.send(Outbound::Close(code, reason));
                    }
                }
                Action::Authenticate(request) => {
                    let authenticator = self.authenticator.clone();
                    let handle = self.handle.clone();
                    self.runtime.spawn(async move {
                        let result = authenticator.authenticate(request.token, request.info).await;
                        handle.command(Command::Auth {
                            id: request.id,
                            connection: request.connection,
                            result,
                        });
                    });
                }
                Action::Event(event) => self.dispatch(event),
                Action::Session(event) => self.on_session_event(now, event),
                Action::Publish(publication) => self.to_broker(ToBroker::Publish(publication)),
                Action::RoomOccupied(room) => {
                    self.to_broker(ToBroker::Occupied(room.clone()));
                    if self.history.is_some() {
                        self.to_broker(ToBroker::Cursor(room));
                    }
                }
                Action::RoomVacated(room) => self.to_broker(ToBroker::Vacated(room)),
                Action::Response { id, result, .. } => {
                    if let Some(answer) = self.requests.remove(&id) {
                        let _ = answer.send(result.map_err(RequestError::from));
                    }
                }
                Action::Journal { session, entry } => {
                    if let Some(store) = &mut self.store {
                        store.push(session, entry);
                    }
                }
                Action::LoadSession {
                    connection,
                    session,
                    token,
                } => self.load_session(connection, session, token),
                // A new kind of action this glue does not know yet: loud, not silent.
                other => tracing::error!(?other, "unhandled engine action"),
            }
        }
        if let Some(store) = &mut self.store {
            store.flush();
        }
    }

    /// Asks the store for a session a resume wants, off the hub, bounded by the
    /// timeout; with room history, then reads what the record's rooms published after
    /// its positions. The answer (or `None`) comes back as a command.
    fn load_session(
        &mut self,
        connection: ConnectionId,
        session: SessionId,
        token: ws_session::TokenVerifier,
    ) {
        let handle = self.handle.clone();
        let Some(store) = &self.store else {
            handle.command(Command::Loaded {
                connection,
                session,
                record: None,
                history: Some(Vec::new()),
                catch_up: Vec::new(),
            });
            return;
        };
        let (link, node, timeout) = (store.store.clone(), store.node, store.timeout);
        let pubsub = self.history.as_ref().map(|h| h.pubsub.clone());
        let runtime = self.runtime.clone();
        self.runtime.spawn(async move {
            let record = match with_timeout(&runtime, timeout, link.load(node, session, token)).await {
                Some(Ok(record)) => record,
                Some(Err(err)) => {
                    tracing::error!(%err, %session, "session load failed; the resume is refused");
                    None
                }
                None => {
                    tracing::error!(%session, "session load timed out; the resume is refused");
                    None
                }
            };
            // Only for a resume the record admits: one whose token does not fit is
            // refused by the engine without it, and must cost what an unknown session
            // costs (one read), not a history read per room of someone else's session.
            let positions: Vec<(Arc<str>, RoomOffset)> = match (&pubsub, &record) {
                (Some(_), Some(record)) if record.admits(&token) => record.room_offsets.clone(),
                _ => Vec::new(),
            };
            let catch_up: Vec<Arc<str>> = positions.iter().map(|(room, _)| room.clone()).collect();
            let mut history = Some(Vec::new());
            if let (Some(pubsub), false) = (pubsub, positions.is_empty()) {
                // The hub keeps what arrives from here on, so that a publication that
                // lands between the read and the answer is not lost.
                handle.command(Command::CatchUp(catch_up.clone()));
                for (room, after) in positions {
                    let read = with_timeout(&runtime, timeout, pubsub.history(node, &room, after)).await;
                    match read {
                        Some(Ok(publications)) => {
                            if let Some(history) = &mut history {
                                history.extend(publications);
                            }
                        }
                        Some(Err(err)) => {
                            tracing::error!(%err, %session, %room, "room history unreadable; the resume is refused as a gap");
                            history = None;
                        }
                        None => {
                            tracing::error!(%session, %room, "room history read timed out; the resume is refused as a gap");
                            history = None;
                        }
                    }
                }
            }
            handle.command(Command::Loaded {
                connection,
                session,
                record: record.map(Box::new),
                history,
                catch_up,
            });
        });
    }

    /// Hands a session's lifecycle event to its hooks, on the session's worker, and
    /// forgets an ended session's listeners and worker.
    fn on_session_event(&mut self, now: Instant, event: SessionEvent) {
        // Attached again (its connection counts now, whatever its codec) or gone: a
        // suspended MessagePack session no longer stands in for a connection.
        if let SessionEvent::Resumed { session, .. }
        | SessionEvent::Expired { session, .. }
        | SessionEvent::Closed { session, .. }
        | SessionEvent::Moved { session } = &event
        {
            if self.msgpack_suspended.remove(session) && self.handle.demand.closed() {
                self.to_broker(ToBroker::MsgPack(false));
            }
        }
        if let SessionEvent::Created {
            session, connection, ..
        }
        | SessionEvent::Resumed { session, connection } = &event
        {
            if let Some(entry) = self.conns.get_mut(connection) {
                entry.session = Some(*session);
            }
        }
        match &event {
            SessionEvent::Created { session, user, .. } => {
                self.track(now, |t, out| t.held(*session, user.clone(), true, [], out));
            }
            SessionEvent::Suspended { session } => {
                self.track(now, |t, out| t.connected(*session, false, out))
            }
            SessionEvent::Resumed { session, .. } => {
                // A session loaded from the store (it moved here) is new to presence:
                // it comes with the rooms of its record.
                let known = self.members.as_ref().is_some_and(|m| m.tracker.holds(*session));
                match self.engine.session_info(*session).filter(|_| !known) {
                    Some(info) => {
                        self.track(now, |t, out| t.held(*session, info.user, true, info.rooms, out))
                    }
                    None => self.track(now, |t, out| t.connected(*session, true, out)),
                }
            }
            SessionEvent::Expired { session, .. } | SessionEvent::Closed { session, .. } => {
                self.track(now, |t, out| t.gone(*session, out));
            }
            // Moved to another node: with shared membership its entries are that node's
            // now (it reports them; reporting them gone here could race it and flicker
            // `left` then `joined`); alone, it left this node's rooms.
            SessionEvent::Moved { session } => {
                let shared = self.members.as_ref().is_some_and(|m| m.cluster.is_some());
                match shared {
                    true => self.track(now, |t, _| t.forget(*session)),
                    false => self.track(now, |t, out| t.gone(*session, out)),
                }
            }
            _ => {}
        }
        // A session moved to another node is gone from this one as if ended.
        let ended = match &event {
            SessionEvent::Expired { session, .. }
            | SessionEvent::Closed { session, .. }
            | SessionEvent::Moved { session } => Some(*session),
            _ => None,
        };
        if let Some(session) = ended {
            self.listeners.remove(&session);
            self.sessions.remove(&session);
        }
        // A new authentication's claims go to the session it created or resumed.
        if let SessionEvent::Created {
            session, connection, ..
        }
        | SessionEvent::Resumed { session, connection } = &event
        {
            let state = self.sessions.entry(*session).or_default();
            if let Some(claims) = self.claims.get(connection) {
                state.set_claims(claims.clone());
            }
        }
        if !self.session_hooks.is_empty() {
            let job = hook_job(
                self.session_hooks.clone(),
                event.clone(),
                self.handle.clone(),
                "session",
            );
            match session_of(&event) {
                Some(session) => {
                    let _ = self.worker(session).send(job);
                }
                // A kind of event this driver does not know: no worker to keep it in
                // order with, but still off the hub.
                None => self.runtime.spawn(job),
            }
        }
        // The ended session's worker runs what is queued (its last handlers, the hook
        // just pushed) and exits when this, its only sender, is dropped.
        if let Some(session) = ended {
            self.workers.remove(&session);
        }
    }

    /// Hands a change of what presence tracks (`change` says it to the tracker) to the
    /// membership backend, or applies it to this node's counts and announces it.
    fn track(&mut self, now: Instant, change: impl FnOnce(&mut Tracker, &mut Vec<MemberUpdate>)) {
        let Some(members) = &mut self.members else {
            return;
        };
        let mut updates = Vec::new();
        change(&mut members.tracker, &mut updates);
        if updates.is_empty() {
            return;
        }
        if let Some(cluster) = &members.cluster {
            let _ = cluster.reports.unbounded_send(updates);
            return;
        }
        let mut changes = Vec::new();
        for update in &updates {
            // Any change of an entry (in, out, online, away) changes the room's list.
            members.lists.remove(&*update.room);
            members.local.apply(0, 0, update, &mut changes);
        }
        self.announce(now, changes);
    }

    /// Presence and membership, started now if the app turned on neither: the first
    /// member list asked for starts tracking this node's sessions (from the engine's
    /// rooms as they are), so that lists are kept up to date from then on instead of
    /// built from the engine's rooms each time. Apps that never ask pay nothing.
    fn members_listed(&mut self) -> &mut Members {
        let engine = &self.engine;
        self.members.get_or_insert_with(|| {
            let mut members = Members::new(None, None);
            let mut updates = Vec::new();
            for session in engine.sessions() {
                if let Some(info) = engine.session_info(session) {
                    let online = info.connection.is_some();
                    members
                        .tracker
                        .held(session, info.user, online, info.rooms, &mut updates);
                }
            }
            // Nothing is announced (presence is off): the counts are only kept.
            let mut changes = Vec::new();
            for update in &updates {
                members.local.apply(0, 0, update, &mut changes);
            }
            members
        })
    }

    /// Answers the member lists asked for in this pass: per room one list, shared by
    /// every caller. This node's own lists come from the ordered member table (a walk)
    /// and are kept until the room changes; with a backend, one call per room, off the
    /// hub, as before.
    fn answer_room_presence(&mut self) {
        let Some(members) = &mut self.members else {
            return;
        };
        if members.asks.is_empty() {
            return;
        }
        let per_user = members.announce.as_ref().map_or(true, |p| p.per_user);
        let asks = std::mem::take(&mut members.asks);
        let Some(cluster) = &members.cluster else {
            for (room, reply) in asks {
                let list = match members.lists.get(room.as_str()) {
                    Some(list) => list.clone(),
                    None => {
                        let walk = members
                            .local
                            .iter_members(&room, 0)
                            .map(|m| (m.session, m.user, m.online));
                        let list = presence::members_ordered(per_user, walk);
                        if !list.is_empty() {
                            members.lists.insert(Arc::from(room), list.clone());
                        }
                        list
                    }
                };
                let _ = reply.send(Ok(list));
            }
            return;
        };
        let mut rooms: HashMap<String, Vec<PresenceReply>> = HashMap::new();
        for (room, reply) in asks {
            rooms.entry(room).or_default().push(reply);
        }
        for (room, replies) in rooms {
            let (backend, timeout, rt) = (cluster.backend.clone(), cluster.timeout, self.runtime.clone());
            self.runtime.spawn(async move {
                let result =
                    match with_timeout(&rt, timeout, backend.members(&room, crate::membership::unix_ms()))
                        .await
                    {
                        Some(Ok(list)) => Ok(presence::members(
                            per_user,
                            list.into_iter().map(|m| (m.session, m.user, m.online)),
                        )),
                        Some(Err(err)) => Err(err),
                        None => Err(MembershipError(format!("no answer within {timeout:?}"))),
                    };
                for reply in replies {
                    let _ = reply.send(result.clone());
                }
            });
        }
    }

    /// Gathers what `changes` change in presence, when presence is on, for the next
    /// announcements ([`flush_presence`](Self::flush_presence), due one
    /// [`Presence::flush_interval`] after the first change gathered).
    fn announce(&mut self, now: Instant, changes: Vec<MemberChange>) {
        let Some(members) = &mut self.members else {
            return;
        };
        let Some(options) = &members.announce else {
            return;
        };
        if changes.is_empty() {
            return;
        }
        for change in &changes {
            members.pending.add(options.per_user, change);
        }
        if members.due.is_none() {
            members.due = Some(now + options.flush_interval);
        }
    }

    /// When the gathered presence changes are due to be announced.
    fn presence_due(&self) -> Option<Instant> {
        self.members.as_ref().and_then(|m| m.due)
    }

    /// Announces the gathered presence changes: per room, one [`presence::PresenceDiff`]
    /// (or several, of [`Presence::max_changes`] entries at most), each volatile, to
    /// the room's connected members on every node.
    fn flush_presence(&mut self, now: Instant) {
        let Some(members) = &mut self.members else {
            return;
        };
        members.due = None;
        let Some(options) = &members.announce else {
            return;
        };
        if members.pending.is_empty() {
            return;
        }
        let diffs = members.pending.take(options.max_changes);
        let event = options.event.clone();
        for diff in diffs {
            let payload = match serde_json::to_string(&diff) {
                Ok(payload) => payload,
                Err(err) => {
                    tracing::error!(%err, "a presence announcement did not serialize");
                    continue;
                }
            };
            let env = json_envelope(&event, &payload);
            self.engine
                .send_volatile(now, PublishTarget::Room(Arc::from(diff.room)), &env, None);
        }
    }

    /// Sends to an audience: in the session streams (encoded once, each recipient a
    /// sequence number) or volatile (encoded once, sent to who is connected now).
    fn emit(
        &mut self,
        now: Instant,
        audience: Audience,
        except: Option<SessionId>,
        volatile: bool,
        env: &OutgoingEnvelope<'_>,
    ) {
        let keep = |sid: SessionId| Some(sid) != except;
        let engine = &mut self.engine;
        match (audience, volatile) {
            (Audience::All, false) => {
                engine.broadcast_except(now, env, except);
            }
            (Audience::Room(room), false) => {
                engine.broadcast_room(now, &room, env, except);
            }
            (Audience::User(user), false) => {
                engine.send_to_user(now, &user, env, except);
            }
            (Audience::Session(session), false) => {
                if keep(session) {
                    if let Err(err) = engine.send_anywhere(now, session, env) {
                        tracing::debug!(%err, "send to a session that is gone");
                    }
                }
            }
            (Audience::All, true) => {
                engine.send_volatile(now, PublishTarget::All, env, except);
            }
            (Audience::Room(room), true) => {
                engine.send_volatile(now, PublishTarget::Room(Arc::from(room)), env, except);
            }
            (Audience::User(user), true) => {
                engine.send_volatile(now, PublishTarget::User(user), env, except);
            }
            (Audience::Session(session), true) => {
                engine.send_volatile(now, PublishTarget::Session(session), env, except);
            }
        }
    }

    /// The sessions of `audience` as the application sees them.
    fn views(&mut self, audience: &Audience) -> Vec<SessionView> {
        let ids: Vec<SessionId> = match audience {
            Audience::All | Audience::User(_) => self.engine.sessions().collect(),
            Audience::Room(room) => self.engine.room_members(room).collect(),
            Audience::Session(session) => vec![*session],
        };
        let mut views = Vec::with_capacity(ids.len());
        for id in ids {
            let Some(info) = self.engine.session_info(id) else {
                continue;
            };
            if matches!(audience, Audience::User(user) if *user != info.user) {
                continue;
            }
            views.push(SessionView {
                id,
                user: info.user,
                online: info.connection.is_some(),
                rooms: info.rooms,
                state: self.sessions.entry(id).or_default().clone(),
            });
        }
        views
    }

    /// Hands a call for the cross-node backend to its task, in order.
    fn to_broker(&self, item: ToBroker) {
        if let Some(publisher) = &self.publisher {
            let _ = publisher.unbounded_send(item);
        }
    }

    /// The worker of `session`, started on first use.
    fn worker(&mut self, session: SessionId) -> &OutboxSender<Job> {
        let runtime = &self.runtime;
        self.workers
            .entry(session)
            .or_insert_with(|| spawn_worker(runtime))
    }

    fn transmit(&self, connection: ConnectionId, message: OutboundMessage) {
        if let Some(entry) = self.conns.get(&connection) {
            let _ = entry.outbox.send(Outbound::Message(message));
        }
    }

    /// Runs the handler for `event` (a session's own listener first, then the app's)
    /// behind the middleware chain, on the session's worker.
    fn dispatch(&mut self, event: InboundEvent) {
        let session = event.session;
        let handler = self
            .listeners
            .get(&session)
            .and_then(|listeners| listeners.get(event.event()))
            .or_else(|| self.handlers.get(event.event()))
            .cloned();
        let Some(handler) = handler else {
            let error = HandlerError::with_code(
                ws_session::ErrorCode::UNKNOWN_EVENT,
                format!("no handler for event `{}`", event.event()),
            );
            self.handle.command(Command::Error {
                session,
                correlation_id: event.correlation_id().map(str::to_owned),
                error,
            });
            return;
        };
        // Everything a handler logs carries its session, user and event, with
        // `ws_driver=debug` on. At `debug`, as the connection's span and tower-http's
        // request spans are: an enabled span costs a `fmt` subscriber ~0.8 µs (its
        // fields formatted, its registry entry made and freed), up to a third of what
        // an echo costs the server, and `info` is where production logs usually are.
        let span = tracing::debug_span!(
            "event",
            session = %session,
            user = event.user.as_str(),
            name = event.event(),
        );
        let state = self.sessions.entry(session).or_default().clone();
        let info = self.engine.connection_info(event.connection);
        let histogram = match self.latency.get(event.event()) {
            Some(histogram) => histogram.clone(),
            None => {
                let histogram = self.handle.handler_latency.histogram(event.event());
                self.latency.insert(event.event().to_owned(), histogram.clone());
                histogram
            }
        };
        let ctx = Context::new(self.handle.clone(), event, state, info);
        // For the error path: its correlation id is copied only if the handler fails.
        let failed = ctx.clone();
        let next = Next::new(self.middleware.clone(), handler);
        let job: Job = Box::pin(tracing::Instrument::instrument(
            async move {
                // A panicking handler must not take its session's worker (and every later
                // message of the session) down with it: it becomes an error for the client.
                let started = std::time::Instant::now();
                let outcome = std::panic::AssertUnwindSafe(next.run(ctx)).catch_unwind().await;
                histogram.observe(started.elapsed().as_secs_f64());
                let error = match outcome {
                    Ok(Ok(())) => return,
                    Ok(Err(error)) => error,
                    Err(_) => {
                        tracing::error!(session = %session, "a handler panicked");
                        HandlerError::with_code(ws_session::ErrorCode::INTERNAL, "internal error")
                    }
                };
                failed.server().command(Command::Error {
                    session,
                    correlation_id: failed.correlation_id().map(str::to_owned),
                    error,
                });
            },
            span,
        ));
        let _ = self.worker(session).send(job);
    }
}

/// The envelope of `event` with a payload this process made as JSON only.
fn json_envelope<'a>(event: &'a str, json: &'a str) -> OutgoingEnvelope<'a> {
    OutgoingEnvelope::new(event).with_payload(Payload::Trusted(json))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_runtime::TestRuntime;

    /// A write report for a connection the engine never had: the hub takes it and
    /// changes nothing.
    fn harmless() -> ConnInput {
        ConnInput::Flushed {
            connection: ConnectionId(u64::MAX),
            bytes: 1,
        }
    }

    #[test]
    fn a_send_into_a_full_queue_waits_for_the_hub_and_then_goes_through() {
        let runtime = TestRuntime::new();
        // The hub's task is spawned but does not run until the runtime is driven.
        let mut hub = App::new().start(runtime.clone());
        let mut at_once = 0;
        let mut wait = loop {
            match hub.send(harmless()) {
                Either::Left(sent) => {
                    assert!(sent.into_inner(), "the hub is there");
                    at_once += 1;
                }
                Either::Right(wait) => break wait,
            }
            assert!(at_once <= CONN_INPUT_BUFFER + 1, "the queue never filled");
        };
        // The queue's room, and the sender's own.
        assert_eq!(at_once, CONN_INPUT_BUFFER + 1);
        assert_eq!(
            (&mut wait).now_or_never(),
            None,
            "no room until the hub takes some"
        );
        runtime.run_until_stalled();
        assert_eq!((&mut wait).now_or_never(), Some(true));
        drop(wait);
        // Room again: the next send goes at once.
        assert!(matches!(hub.send(harmless()), Either::Left(_)));
    }
}
