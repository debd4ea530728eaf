//! A payload the application gives, serialized for the hub: as JSON always (what JSON
//! connections, journals and stores get), and as MessagePack too when a MessagePack
//! connection may receive it, so that binary data (`serde_bytes`, `bytes::Bytes`)
//! reaches those as `bin` rather than as the array of numbers JSON makes of it.
//!
//! "May receive it": this node has a MessagePack connection now, or a suspended
//! session whose connection spoke MessagePack (it replays what it is sent meanwhile), or the cross-node
//! backend says another node has ([`PubSub::msgpack_elsewhere`]). A server whose
//! clients all speak JSON serializes once, as before.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use serde::Serialize;
use ws_proto::envelope::{OutgoingEnvelope, Payload};
use ws_session::SharedPrefix;

use crate::error::HandlerError;
use crate::pubsub::PubSub;

/// A payload in the forms the hub needs.
#[derive(Debug)]
pub(crate) enum Payloads {
    /// Serialized for this message.
    Made {
        /// The payload as JSON.
        json: String,
        /// The same payload as MessagePack (`rmp-serde`, structs as maps), when made.
        msgpack: Option<Vec<u8>>,
    },
    /// Serialized once by the application for many messages; JSON only (MessagePack
    /// connections get it transcoded, as any JSON payload).
    Shared(EncodedPayload),
}

impl Payloads {
    /// `payload` as JSON, and as MessagePack too when `msgpack`.
    pub(crate) fn of(payload: &impl Serialize, msgpack: bool) -> Result<Self, HandlerError> {
        Ok(Self::Made {
            json: serde_json::to_string(payload).map_err(HandlerError::internal)?,
            msgpack: match msgpack {
                true => Some(rmp_serde::to_vec_named(payload).map_err(HandlerError::internal)?),
                false => None,
            },
        })
    }

    /// The payload in the forms it was made in, for an envelope.
    pub(crate) fn payload(&self) -> Payload<'_> {
        match self {
            Self::Made {
                json,
                msgpack: Some(msgpack),
            } => Payload::Both { json, msgpack },
            Self::Made { json, msgpack: None } => Payload::Trusted(json),
            Self::Shared(encoded) => Payload::Trusted(encoded.as_json()),
        }
    }
}

/// A payload serialized once, to send many times: a snapshot that many sessions get
/// (a room's member list in every join reply, a game state), made into JSON by the
/// first who needs it and handed to [`Context::reply_encoded`] by each, instead of
/// serializing the same value once per recipient. Cloning it shares the text.
///
/// It is JSON only: a MessagePack connection gets it transcoded from the JSON, as any
/// payload made without MessagePack, so binary data (`serde_bytes`) reaches those as
/// the array of numbers JSON makes of it rather than as `bin`. Payloads with binary
/// data are better sent with [`Context::reply`].
///
/// [`Context::reply_encoded`]: crate::Context::reply_encoded
/// [`Context::reply`]: crate::Context::reply
///
/// The replies made of it share more than the serializing: the envelope's event and
/// payload are encoded once per event ([`SharedPrefix`]), and the replay buffers that
/// keep the replies until each client acknowledges its own hold those bytes by
/// reference, each with its own `c` and `s` beside them.
#[derive(Debug, Clone)]
pub struct EncodedPayload(Arc<Encoded>);

#[derive(Debug)]
struct Encoded {
    json: Box<str>,
    /// The envelope prefix of the last event this payload was sent with: replies to a
    /// storm of requests all name the same event.
    prefix: Mutex<Option<(Box<str>, SharedPrefix)>>,
}

impl EncodedPayload {
    /// Serializes `payload` as JSON; its error if it does not serialize (a map with
    /// keys that are not strings, a failing `Serialize` impl).
    pub fn new(payload: &impl Serialize) -> Result<Self, HandlerError> {
        let json = serde_json::to_string(payload).map_err(HandlerError::internal)?;
        Ok(Self(Arc::new(Encoded {
            json: json.into_boxed_str(),
            prefix: Mutex::new(None),
        })))
    }

    /// The JSON text.
    pub fn as_json(&self) -> &str {
        &self.0.json
    }

    /// The envelope of `event` with this payload, encoded once for every reply that
    /// sends it (again when the event changes).
    pub(crate) fn prefix(&self, event: &str) -> SharedPrefix {
        let mut cached = self.0.prefix.lock().unwrap_or_else(PoisonError::into_inner);
        match &*cached {
            Some((named, prefix)) if **named == *event => prefix.clone(),
            _ => {
                let prefix = SharedPrefix::new(event, Payload::Trusted(&self.0.json));
                *cached = Some((event.into(), prefix.clone()));
                prefix
            }
        }
    }
}

impl PartialEq for EncodedPayload {
    fn eq(&self, other: &Self) -> bool {
        self.0.json == other.0.json
    }
}

impl Eq for EncodedPayload {}

/// The envelope of `event` with `payload` in the forms it was given in.
pub(crate) fn envelope<'a>(event: &'a str, payload: Option<&'a Payloads>) -> OutgoingEnvelope<'a> {
    let envelope = OutgoingEnvelope::new(event);
    match payload {
        Some(payload) => envelope.with_payload(payload.payload()),
        None => envelope,
    }
}

/// Whether a payload should be made in MessagePack too: shared by the hub, which
/// counts this node's MessagePack connections, and every [`ServerHandle`] clone, which
/// serializes.
///
/// [`ServerHandle`]: crate::ServerHandle
pub(crate) struct Demand {
    /// MessagePack connections open on this node, and suspended sessions whose last
    /// connection spoke MessagePack (their replay goes to a MessagePack client).
    local: AtomicUsize,
    /// The cross-node backend and this node's id on it, when there is one.
    cluster: Option<(Arc<dyn PubSub>, u64)>,
}

impl Demand {
    pub(crate) fn new(cluster: Option<(Arc<dyn PubSub>, u64)>) -> Self {
        Self {
            local: AtomicUsize::new(0),
            cluster,
        }
    }

    /// Whether a MessagePack connection, here or on another node, may receive what is
    /// sent now.
    pub(crate) fn msgpack(&self) -> bool {
        self.local.load(Ordering::Relaxed) > 0
            || self
                .cluster
                .as_ref()
                .is_some_and(|(pubsub, node)| pubsub.msgpack_elsewhere(*node))
    }

    /// A MessagePack connection opened; returns whether it is the node's first.
    pub(crate) fn opened(&self) -> bool {
        self.local.fetch_add(1, Ordering::Relaxed) == 0
    }

    /// A MessagePack connection closed; returns whether it was the node's last.
    pub(crate) fn closed(&self) -> bool {
        self.local.fetch_sub(1, Ordering::Relaxed) == 1
    }
}
