//! What the engine asks its caller to do.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use ws_proto::envelope::{Codec, EnvelopeError};
use ws_proto::CloseCode;

use crate::journal::JournalEntry;
use crate::{
    AuthId, ConnectionId, ConnectionInfo, OutboundMessage, RequestFailure, RequestId, SessionId,
    TokenVerifier, UserId,
};

/// One thing for the caller to do, from [`Engine::poll_action`](crate::Engine::poll_action).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Action {
    /// Send `message` as one frame on `connection` (text for JSON, binary for
    /// MessagePack: [`OutboundMessage::codec`]), then report the bytes with
    /// [`Engine::handle_flushed`](crate::Engine::handle_flushed) once written.
    Transmit {
        /// The connection.
        connection: ConnectionId,
        /// The envelope to send.
        message: OutboundMessage,
    },
    /// A broadcast: send the envelope `prefix`, completed with each recipient's own
    /// sequence number, to each connection of `recipients` — for recipient `(c, s)`
    /// `OutboundMessage::new(prefix.clone(), Some(s), codec)`. Serialized
    /// once per codec (a broadcast to connections of both codecs is two of these);
    /// each recipient costs a tail (`,"s":N}` or `s`). Report flushed bytes per
    /// connection as for `Transmit`; hand the list back with
    /// [`Engine::recycle`](crate::Engine::recycle) to spare an allocation.
    TransmitBroadcast {
        /// The envelope up to `s` (shared), in `codec`.
        prefix: Bytes,
        /// The codec of every recipient.
        codec: Codec,
        /// Each connection and the `s` its copy carries.
        recipients: Vec<(ConnectionId, u64)>,
    },
    /// Send the same `message` (outside the session stream, no `s`) to each of
    /// `connections`; report flushed bytes per connection as for `Transmit`.
    TransmitMany {
        /// The connections.
        connections: Vec<ConnectionId>,
        /// The envelope to send to each.
        message: OutboundMessage,
    },
    /// Send a close frame with `code` and `reason` and close `connection`. The engine
    /// has forgotten the connection: no later action addresses it, and later input for
    /// it is ignored.
    Close {
        /// The connection.
        connection: ConnectionId,
        /// The close code.
        code: CloseCode,
        /// The close reason (short ASCII).
        reason: &'static str,
    },
    /// Check a credential; answer with
    /// [`Engine::handle_auth_result`](crate::Engine::handle_auth_result).
    Authenticate(AuthRequest),
    /// An application event from a client, for the application's handler.
    Event(InboundEvent),
    /// A session changed state.
    Session(SessionEvent),
    /// A broadcast that other nodes should deliver too (only with
    /// [`EngineConfig::publish_broadcasts`](crate::EngineConfig::publish_broadcasts)).
    /// Forward it to the cross-node backend; on the other nodes feed it to
    /// [`Engine::handle_remote_publish`](crate::Engine::handle_remote_publish), which
    /// delivers locally and never publishes again (no echo loops).
    Publish(Publication),
    /// The first session of this node entered the room (only with
    /// [`EngineConfig::publish_broadcasts`](crate::EngineConfig::publish_broadcasts)):
    /// a cross-node backend starts receiving the room's publications, so that a node
    /// gets only the rooms it has members in.
    RoomOccupied(Arc<str>),
    /// The last session of this node left the room (with `publish_broadcasts`): the
    /// backend stops receiving its publications.
    RoomVacated(Arc<str>),
    /// A server→client request ([`Engine::request`](crate::Engine::request)) is over:
    /// the client's answer (`sys.reply`), or why there is none. Each request gets
    /// exactly one.
    Response {
        /// The request.
        id: RequestId,
        /// The session it was sent to.
        session: SessionId,
        /// The answer's payload as raw JSON (`None` for no payload), or the failure.
        result: Result<Option<String>, RequestFailure>,
    },
    /// A change of `session` that a resume on another node needs (only with
    /// [`EngineConfig::shared_sessions`](crate::EngineConfig::shared_sessions)):
    /// append it to the session's journal in the shared store, in the order given.
    Journal {
        /// The session.
        session: SessionId,
        /// The change.
        entry: JournalEntry,
    },
    /// A resume of `session`, which this engine does not hold, waits on `connection`
    /// (only with `shared_sessions`): load the session's record from the shared store
    /// — claiming it for this node when the record
    /// [admits](crate::journal::SessionRecord::admits) `token` — and answer with
    /// [`Engine::handle_session_loaded`](crate::Engine::handle_session_loaded) (`None`
    /// when there is none or the store did not answer in time).
    LoadSession {
        /// The connection that asked.
        connection: ConnectionId,
        /// The session it wants.
        session: SessionId,
        /// The verifier of the token it presented.
        token: TokenVerifier,
    },
}

/// A request to authenticate a connection.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AuthRequest {
    /// The id to answer with.
    pub id: AuthId,
    /// The connection being authenticated.
    pub connection: ConnectionId,
    /// The credential (from the handshake, `sys.auth` or `sys.reconnect.request`).
    pub token: String,
    /// The connection's handshake metadata.
    pub info: Arc<ConnectionInfo>,
}

/// A lifecycle change of a session.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionEvent {
    /// A session was created and attached to `connection`; `sys.session.created` was sent.
    Created {
        /// The session.
        session: SessionId,
        /// Its user.
        user: UserId,
        /// The connection it is attached to.
        connection: ConnectionId,
    },
    /// The session lost its connection; it stays in its rooms and buffers messages for
    /// the resume window.
    Suspended {
        /// The session.
        session: SessionId,
    },
    /// The session was resumed on `connection`.
    Resumed {
        /// The session.
        session: SessionId,
        /// The connection it is now attached to.
        connection: ConnectionId,
    },
    /// The resume window passed: the session left every room and is gone.
    Expired {
        /// The session.
        session: SessionId,
        /// Its user.
        user: UserId,
    },
    /// The session ended before its window passed: ended by the application or by its
    /// client, replaced by a resume on its fresh connection, or abandoned after a
    /// refused resume (gap); `reason` says which. It left every room and is gone.
    Closed {
        /// The session.
        session: SessionId,
        /// Its user.
        user: UserId,
        /// Why it ended.
        reason: CloseReason,
    },
    /// Another node took the session over from a shared store
    /// ([`Engine::release_session`](crate::Engine::release_session)): it lives on
    /// there, and this engine forgot it (an attached connection was closed with 4116
    /// [`ErrorCode::SESSION_MOVED`](crate::ErrorCode::SESSION_MOVED)). Not an end:
    /// no `Expired` or `Closed` follows here.
    Moved {
        /// The session.
        session: SessionId,
    },
}

/// Why a session was closed ([`SessionEvent::Closed`]). A network drop is not one: it
/// suspends the session ([`SessionEvent::Suspended`]), which expires after the resume
/// window ([`SessionEvent::Expired`]) unless resumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CloseReason {
    /// The application ended it ([`Engine::end_session`](crate::Engine::end_session)):
    /// its client was told (`sys.session.ended`, close 4115) and does not come back.
    ByServer,
    /// Its client ended it (`sys.session.end`, sent by the clients' `close`).
    ByClient,
    /// A resume on the connection that carried this fresh session replaced it.
    Replaced,
    /// A resume presenting its valid token was refused with `gap` (the missed messages
    /// were no longer buffered): the token's holder moves on to a new session.
    Gap,
}

impl CloseReason {
    /// A short name for logs: `by-server`, `by-client`, `replaced`, `gap`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ByServer => "by-server",
            Self::ByClient => "by-client",
            Self::Replaced => "replaced",
            Self::Gap => "gap",
        }
    }
}

/// Where a [`Publication`] goes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PublishTarget {
    /// Every session.
    All,
    /// The members of a room.
    Room(Arc<str>),
    /// Every session of a user (on whichever nodes they are).
    User(UserId),
    /// One session: the node that holds it delivers, the others ignore it.
    Session(SessionId),
}

/// A broadcast for other nodes: its target and the encoded envelope prefix (without
/// `s`, which each node's sessions add). Bytes from a trusted backend, not a client.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Publication {
    /// Who receives it.
    pub target: PublishTarget,
    /// A session that must not receive it (the sender, typically).
    pub except: Option<SessionId>,
    /// The envelope as JSON, encoded up to `s` ([`OutboundMessage::prefix`] of a JSON
    /// message): what JSON connections, journals and stores get.
    pub prefix: Bytes,
    /// The envelope as MessagePack, encoded up to `s` (the map counting `s` unless the
    /// publication is volatile), when the application gave the payload in MessagePack
    /// too ([`Payload::Both`](ws_proto::envelope::Payload::Both)): receivers send it as
    /// it is to their MessagePack connections, so binary data stays `bin`. `None`: each
    /// receiver makes the binary form from `prefix` (binary data then shows as the
    /// array of numbers JSON made of it).
    pub msgpack: Option<Bytes>,
    /// Outside the session streams: delivered to the recipients connected when it
    /// arrives, without `s`, never replayed (presence, typing). A backend may drop a
    /// volatile publication it cannot carry; it must not drop a stream one.
    pub volatile: bool,
    /// Its place in the room's history, when a backend that keeps room history
    /// ([`EngineConfig::room_history`](crate::EngineConfig::room_history)) delivers a
    /// room publication: every node receives the room's publications in this order,
    /// and a session that moves resumes the room after the last offset it has.
    pub offset: Option<RoomOffset>,
}

/// A position in a room's history, assigned by the backend that keeps it (Redis: the
/// stream entry id, `ms-seq`). Offsets of one room grow in the order its publications
/// are delivered; offsets of different rooms are not comparable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RoomOffset(pub u64, pub u64);

impl std::fmt::Display for RoomOffset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.0, self.1)
    }
}

impl Publication {
    /// A publication in the recipients' streams (for backends that rebuild one from
    /// their wire format).
    pub fn new(target: PublishTarget, except: Option<SessionId>, prefix: Bytes) -> Self {
        Self {
            target,
            except,
            prefix,
            msgpack: None,
            volatile: false,
            offset: None,
        }
    }

    /// This publication at `offset` of its room's history.
    pub fn at(self, offset: RoomOffset) -> Self {
        Self {
            offset: Some(offset),
            ..self
        }
    }

    /// The same publication with `msgpack` as its [`msgpack`](Self::msgpack) form.
    pub fn with_msgpack(mut self, msgpack: Option<Bytes>) -> Self {
        self.msgpack = msgpack;
        self
    }

    /// A volatile publication ([`Publication::volatile`]).
    pub fn new_volatile(target: PublishTarget, except: Option<SessionId>, prefix: Bytes) -> Self {
        Self {
            volatile: true,
            ..Self::new(target, except, prefix)
        }
    }
}

/// Where a part of an inbound event lives: a range of its body, or a copy when the
/// text had JSON escapes there.
#[derive(Debug, Clone)]
pub(crate) enum Span {
    In(Range<usize>),
    Owned(Box<str>),
}

/// The message an inbound event arrived in, kept whole.
#[derive(Debug, Clone)]
pub(crate) enum Body {
    /// A JSON envelope from a text frame.
    Text(String),
    /// A MessagePack envelope from a binary frame. A boxed slice, so that the enum is
    /// no larger than the `String` alone (it fits beside the `String`'s niche).
    Binary(Box<[u8]>),
}

/// An application event received from a client, owning the message it arrived in
/// (moved, not copied) and pointing into it.
#[derive(Debug, Clone)]
pub struct InboundEvent {
    /// The session it came from.
    pub session: SessionId,
    /// The session's user.
    pub user: UserId,
    /// Whether the session is anonymous (created without a credential, with
    /// [`EngineConfig::allow_anonymous`](crate::EngineConfig::allow_anonymous)).
    pub anonymous: bool,
    /// The connection it came on.
    pub connection: ConnectionId,
    pub(crate) body: Body,
    pub(crate) event: Span,
    pub(crate) payload: Option<Span>,
    pub(crate) correlation_id: Option<Span>,
    pub(crate) timestamp: Option<u64>,
}

impl InboundEvent {
    fn span<'a>(&'a self, span: &'a Span) -> &'a str {
        match (span, &self.body) {
            (Span::In(range), Body::Text(text)) => &text[range.clone()],
            // Spans into a binary body are strings the decoder checked to be UTF-8.
            (Span::In(range), Body::Binary(bytes)) => {
                std::str::from_utf8(&bytes[range.clone()]).unwrap_or("")
            }
            (Span::Owned(text), _) => text,
        }
    }

    /// The codec of the envelope: that of the connection it came on.
    pub fn codec(&self) -> Codec {
        match self.body {
            Body::Text(_) => Codec::Json,
            Body::Binary(_) => Codec::MsgPack,
        }
    }

    /// The event name `e`.
    pub fn event(&self) -> &str {
        self.span(&self.event)
    }

    /// The payload `p` as raw JSON text; `None` when absent or `null`, and for an
    /// envelope that came in a binary frame (see [`payload_json`](Self::payload_json),
    /// [`payload_msgpack`](Self::payload_msgpack) and [`payload_as`](Self::payload_as)).
    pub fn payload(&self) -> Option<&str> {
        match &self.body {
            Body::Text(_) => self.payload.as_ref().map(|s| self.span(s)),
            Body::Binary(_) => None,
        }
    }

    /// The payload `p` as JSON text whatever the codec: borrowed for a JSON envelope,
    /// transcoded from MessagePack otherwise (binary data becomes an array of numbers,
    /// as `serde_json` writes bytes). `Err` for a binary payload with no JSON form (a
    /// map with array keys, say).
    pub fn payload_json(&self) -> Result<Option<std::borrow::Cow<'_, str>>, EnvelopeError> {
        match &self.body {
            Body::Text(_) => Ok(self.payload().map(std::borrow::Cow::Borrowed)),
            Body::Binary(_) => self
                .payload_msgpack()
                .map(|p| {
                    let mut out = Vec::new();
                    ws_proto::envelope::msgpack::msgpack_to_json(p, &mut out)
                        .ok()
                        .and_then(|()| String::from_utf8(out).ok())
                        .map(std::borrow::Cow::Owned)
                        .ok_or_else(|| EnvelopeError::InvalidPayload {
                            reason: "the payload has no JSON form".into(),
                        })
                })
                .transpose(),
        }
    }

    /// The raw MessagePack bytes of the payload `p` of an envelope that came in a
    /// binary frame; `None` when absent, `nil`, or for a JSON envelope.
    pub fn payload_msgpack(&self) -> Option<&[u8]> {
        match (&self.body, &self.payload) {
            (Body::Binary(bytes), Some(Span::In(range))) => Some(&bytes[range.clone()]),
            _ => None,
        }
    }

    /// The payload deserialized as `T` with the codec it came in (`serde_json` or
    /// `rmp-serde`); an absent payload deserializes from null / nil. Binary data in a
    /// MessagePack payload deserializes into byte buffers (`serde_bytes`, `Vec<u8>`)
    /// as it is.
    pub fn payload_as<'a, T: serde::Deserialize<'a>>(&'a self) -> Result<T, EnvelopeError> {
        let invalid = |reason: String| EnvelopeError::InvalidPayload { reason };
        match &self.body {
            Body::Text(_) => serde_json::from_str(self.payload.as_ref().map_or("null", |s| self.span(s)))
                .map_err(|e| invalid(e.to_string())),
            Body::Binary(_) => rmp_serde::from_slice(self.payload_msgpack().unwrap_or(&[0xc0]))
                .map_err(|e| invalid(e.to_string())),
        }
    }

    /// The correlation id `c`, to answer with [`Engine::reply`](crate::Engine::reply).
    pub fn correlation_id(&self) -> Option<&str> {
        self.correlation_id.as_ref().map(|s| self.span(s))
    }

    /// The timestamp `t`.
    pub fn timestamp(&self) -> Option<u64> {
        self.timestamp
    }

    /// The whole envelope text as received; empty for a binary envelope (see
    /// [`bytes`](Self::bytes)).
    pub fn text(&self) -> &str {
        match &self.body {
            Body::Text(text) => text,
            Body::Binary(_) => "",
        }
    }

    /// The whole envelope as received, text or MessagePack.
    pub fn bytes(&self) -> &[u8] {
        match &self.body {
            Body::Text(text) => text.as_bytes(),
            Body::Binary(bytes) => bytes,
        }
    }

    /// The text back, so a transport can reuse its buffer for the next message (no
    /// allocation per inbound message in steady state); empty for a binary envelope.
    pub fn into_text(self) -> String {
        match self.body {
            Body::Text(text) => text,
            Body::Binary(_) => String::new(),
        }
    }
}
