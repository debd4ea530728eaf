//! What a handler gets: the event, who sent it, and the ways to answer.

use std::sync::Arc;

use futures_channel::oneshot;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::borrow::Cow;
use ws_proto::envelope::{Codec, EnvelopeError, OutgoingEnvelope};
use ws_session::{ApiError, ConnectionId, ConnectionInfo, EncodedPrefix, InboundEvent, SessionId, UserId};

use crate::error::HandlerError;
use crate::handler::Handler;
use crate::hub::{Command, ServerHandle};
use crate::payloads::{EncodedPayload, Payloads};
use crate::state::SessionState;

/// One application event and its sender. Cheap to clone; every method that sends
/// only queues a command for the hub, so none of them blocks.
#[derive(Clone)]
pub struct Context {
    inner: Arc<Inner>,
}

struct Inner {
    handle: ServerHandle,
    event: InboundEvent,
    session: Arc<SessionState>,
    info: Option<Arc<ConnectionInfo>>,
    /// A binary payload as JSON, made on the first [`Context::payload_raw`].
    json: std::sync::OnceLock<Option<String>>,
}

impl Context {
    pub(crate) fn new(
        handle: ServerHandle,
        event: InboundEvent,
        session: Arc<SessionState>,
        info: Option<Arc<ConnectionInfo>>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                handle,
                event,
                session,
                info,
                json: std::sync::OnceLock::new(),
            }),
        }
    }

    /// The application state of type `S` ([`App::with_state`](crate::App::with_state)).
    ///
    /// # Panics
    ///
    /// If the app has no state of type `S` (a bug in the application; the client gets
    /// `sys.error` 4199 and the server logs it).
    pub fn state<S: Send + Sync + 'static>(&self) -> &S {
        self.inner.handle.state()
    }

    /// The application state of type `S`, or `None` when the app has none.
    pub fn try_state<S: Send + Sync + 'static>(&self) -> Option<&S> {
        self.inner.handle.try_state()
    }

    /// The claims the authenticator attached to this session's identity
    /// ([`Identity::with_claims`](crate::Identity::with_claims)), if they are a `C`.
    /// Replaced by the authenticator's answer on every resume.
    pub fn claims<C: Send + Sync + 'static>(&self) -> Option<Arc<C>> {
        self.inner.session.claims()
    }

    /// The session's data of type `T`, as set by [`Context::set_data`] in this or an
    /// earlier handler or middleware of the session. Kept while the session lives,
    /// across reconnects.
    pub fn data<T: Send + Sync + 'static>(&self) -> Option<Arc<T>> {
        self.inner.session.data()
    }

    /// Sets the session's data of type `T` (one value per type), for the session's
    /// later handlers, this one's `next` in a middleware chain included.
    pub fn set_data<T: Send + Sync + 'static>(&self, value: T) {
        self.inner.session.set_data(value);
    }

    /// Removes the session's data of type `T`, returning it.
    pub fn remove_data<T: Send + Sync + 'static>(&self) -> Option<Arc<T>> {
        self.inner.session.remove_data()
    }

    /// What the connection's upgrade request said (path, query, headers, peer
    /// address); `None` only for a connection that closed meanwhile.
    pub fn connection_info(&self) -> Option<&ConnectionInfo> {
        self.inner.info.as_deref()
    }

    /// The value of header `name` (ASCII case-insensitive) of the connection's upgrade
    /// request. Credentials (`Authorization`, `Cookie`) are there too: do not log them.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.connection_info()?.headers.get(name)
    }

    /// The peer's address, when the transport has one.
    pub fn peer_addr(&self) -> Option<std::net::SocketAddr> {
        self.connection_info()?.peer_addr
    }

    /// The query string of the upgrade request (without `?`), if any.
    pub fn query(&self) -> Option<&str> {
        self.connection_info()?.query.as_deref()
    }

    /// The envelope's timestamp (`t`, milliseconds), when the client set one.
    pub fn timestamp(&self) -> Option<u64> {
        self.inner.event.timestamp()
    }

    /// The session that sent the event.
    pub fn session_id(&self) -> SessionId {
        self.inner.event.session
    }

    /// The authenticated user of the session.
    pub fn user_id(&self) -> &UserId {
        &self.inner.event.user
    }

    /// Whether the session is anonymous (no credential; only with
    /// `EngineConfig::allow_anonymous`).
    pub fn is_anonymous(&self) -> bool {
        self.inner.event.anonymous
    }

    /// The connection the event arrived on.
    pub fn connection_id(&self) -> ConnectionId {
        self.inner.event.connection
    }

    /// The event name (`e`).
    pub fn event(&self) -> &str {
        self.inner.event.event()
    }

    /// The payload (`p`) as JSON text, if any: the raw text the client sent on a JSON
    /// connection; on a MessagePack connection the payload transcoded once, on the
    /// first call (binary data shows as an array of numbers, as `serde_json` writes
    /// bytes; a payload with no JSON form, such as a map with array keys, is `None`).
    /// [`payload`](Self::payload) reads either codec directly.
    pub fn payload_raw(&self) -> Option<&str> {
        match self.inner.event.codec() {
            Codec::MsgPack => self
                .inner
                .json
                .get_or_init(|| {
                    self.inner
                        .event
                        .payload_json()
                        .ok()
                        .flatten()
                        .map(Cow::into_owned)
                })
                .as_deref(),
            _ => self.inner.event.payload(),
        }
    }

    /// The envelope codec of the connection the event came on (fixed at its upgrade).
    pub fn codec(&self) -> Codec {
        self.inner.event.codec()
    }

    /// The payload deserialized as `T` with the codec it came in: `serde_json` for a
    /// JSON connection, `rmp-serde` for a MessagePack one, where binary data reaches
    /// byte buffers (`serde_bytes::ByteBuf`, `#[serde(with = "serde_bytes")]`) as it
    /// is, without base64. A missing payload parses as null. A payload of the wrong
    /// shape is a `sys.error` 4013 for the client when returned with `?`.
    pub fn payload<T: DeserializeOwned>(&self) -> Result<T, HandlerError> {
        self.inner.event.payload_as().map_err(|err| match err {
            EnvelopeError::InvalidPayload { reason } => HandlerError::invalid_payload(reason),
            other => HandlerError::invalid_payload(other),
        })
    }

    /// The correlation id (`c`) of the request, if the client set one.
    pub fn correlation_id(&self) -> Option<&str> {
        self.inner.event.correlation_id()
    }

    /// The server handle, to act beyond this session.
    pub fn server(&self) -> &ServerHandle {
        &self.inner.handle
    }

    /// Answers the request: `event` with `payload`, carrying the request's
    /// correlation id, in the session's stream (so it survives a reconnect).
    ///
    /// On a JSON connection, for a request with a correlation id, the whole envelope
    /// but `s` is encoded here, the payload serialized straight into it, and the hub
    /// only numbers it. On a MessagePack connection the payload is serialized in both
    /// codecs, so that binary data (`serde_bytes`) reaches the client as `bin`; the
    /// JSON form is for JSON connections the session may resume on, and for other
    /// nodes.
    pub fn reply(&self, event: &str, payload: &impl Serialize) -> Result<(), HandlerError> {
        if let (Some(c), false) = (self.correlation_id(), self.codec() == Codec::MsgPack) {
            let envelope = OutgoingEnvelope::new(event).with_correlation_id(c);
            let prefix = EncodedPrefix::serialize(&envelope, payload).map_err(HandlerError::internal)?;
            self.inner.handle.command(Command::SendEncoded {
                session: self.session_id(),
                prefix,
            });
            return Ok(());
        }
        let payload = Payloads::of(payload, self.codec() == Codec::MsgPack)?;
        self.send_own(event, payload, self.correlation_id().map(str::to_owned));
        Ok(())
    }

    /// Answers the request as [`reply`](Self::reply) does, with a payload serialized
    /// before ([`EncodedPayload`]): the one to use when many sessions get the same
    /// payload, e.g. [`MemberList::encoded`](crate::MemberList::encoded) in a join
    /// reply. JSON connections get its text as it is; MessagePack ones, transcoded.
    pub fn reply_encoded(&self, event: &str, payload: &EncodedPayload) {
        let payload = Payloads::Shared(payload.clone());
        self.send_own(event, payload, self.correlation_id().map(str::to_owned));
    }

    /// A message to this session (serialized in its connection's codec as well as in
    /// JSON, or shared).
    fn send_own(&self, event: &str, payload: Payloads, correlation_id: Option<String>) {
        self.inner.handle.command(Command::Send {
            session: self.session_id(),
            event: event.to_owned(),
            payload: Some(payload),
            correlation_id,
        });
    }

    /// Answers the request with a `sys.error` of `code` and `message` (with the
    /// request's correlation id). Returning `Err(HandlerError)` does the same.
    pub fn error(&self, code: u16, message: impl Into<String>) {
        self.inner.handle.command(Command::Error {
            session: self.session_id(),
            correlation_id: self.correlation_id().map(str::to_owned),
            error: HandlerError::new(code, message),
        });
    }

    /// Sends `event` to this session outside any request (no correlation id); in both
    /// codecs on a MessagePack connection, as [`reply`](Self::reply).
    pub fn emit(&self, event: &str, payload: &impl Serialize) -> Result<(), HandlerError> {
        let payload = Payloads::of(payload, self.codec() == Codec::MsgPack)?;
        self.send_own(event, payload, None);
        Ok(())
    }

    /// Sends `event` to another session.
    pub fn send_to(
        &self,
        session: SessionId,
        event: &str,
        payload: &impl Serialize,
    ) -> Result<(), HandlerError> {
        self.inner.handle.send(session, event, payload)
    }

    /// Sends `event` to every member of `room` except this session.
    pub fn to_room_others(
        &self,
        room: &str,
        event: &str,
        payload: &impl Serialize,
    ) -> Result<(), HandlerError> {
        self.inner
            .handle
            .broadcast_room(room, event, payload, Some(self.session_id()))
    }

    /// Sends `event` to every member of `room`, this session included.
    pub fn to_room(&self, room: &str, event: &str, payload: &impl Serialize) -> Result<(), HandlerError> {
        self.inner.handle.broadcast_room(room, event, payload, None)
    }

    /// Sends `event` to every session.
    pub fn broadcast(&self, event: &str, payload: &impl Serialize) -> Result<(), HandlerError> {
        self.inner.handle.broadcast(event, payload)
    }

    /// Puts this session in `room`; `Ok(false)` if it already was. Refused (as a
    /// `sys.error` when returned with `?`) past the room limits.
    pub async fn join(&self, room: &str) -> Result<bool, HandlerError> {
        let (reply, answer) = oneshot::channel();
        self.inner.handle.command(Command::Join {
            session: self.session_id(),
            room: room.to_owned(),
            reply,
        });
        room_answer(answer.await)
    }

    /// Takes this session out of `room`; `Ok(false)` if it was not in it.
    pub async fn leave(&self, room: &str) -> Result<bool, HandlerError> {
        let (reply, answer) = oneshot::channel();
        self.inner.handle.command(Command::Leave {
            session: self.session_id(),
            room: room.to_owned(),
            reply,
        });
        room_answer(answer.await)
    }

    /// Registers `handler` for `event` on this session only, ahead of the app's
    /// handler for the same event. Listeners registered after a login step are
    /// unreachable for sessions that never took it. They end with the session.
    pub fn listen(&self, event: &str, handler: impl Handler) {
        self.inner.handle.command(Command::Listen {
            session: self.session_id(),
            event: event.to_owned(),
            handler: Arc::new(handler),
        });
    }

    /// Ends this session on purpose ([`ServerHandle::end_session`]): its client is
    /// told why and does not come back.
    pub fn end_session(&self, reason: &str) {
        self.inner.handle.end_session(self.session_id(), reason);
    }

    /// The former name of [`end_session`](Self::end_session), with an empty reason.
    #[deprecated(note = "use end_session, which says why and tells the client not to come back")]
    pub fn close_session(&self) {
        self.end_session("");
    }

    /// A handle that can reach this session after the handler returns.
    pub fn session(&self) -> SessionHandle {
        SessionHandle {
            handle: self.inner.handle.clone(),
            session: self.session_id(),
        }
    }
}

/// Sends to one session from anywhere (a spawned task, a timer).
#[derive(Clone)]
pub struct SessionHandle {
    handle: ServerHandle,
    session: SessionId,
}

impl SessionHandle {
    /// The session.
    pub fn id(&self) -> SessionId {
        self.session
    }

    /// Sends `event` to the session, in its stream.
    pub fn send(&self, event: &str, payload: &impl Serialize) -> Result<(), HandlerError> {
        self.handle.send(self.session, event, payload)
    }
}

fn room_answer(answer: Result<Result<bool, ApiError>, oneshot::Canceled>) -> Result<bool, HandlerError> {
    match answer {
        Ok(Ok(changed)) => Ok(changed),
        Ok(Err(ApiError::TooManyRooms { max })) => Err(HandlerError::with_code(
            ws_session::ErrorCode::TOO_MANY_ROOMS,
            format!("the session is already in {max} rooms"),
        )),
        Ok(Err(ApiError::RoomNameTooLong { len, max })) => Err(HandlerError::with_code(
            ws_session::ErrorCode::ROOM_NAME_TOO_LONG,
            format!("room name of {len} bytes exceeds {max}"),
        )),
        Ok(Err(err)) => Err(HandlerError::internal(err)),
        Err(_) => Err(HandlerError::with_code(
            ws_session::ErrorCode::INTERNAL,
            "the server is shutting down",
        )),
    }
}
