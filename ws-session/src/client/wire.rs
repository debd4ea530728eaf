//! The client engine on a connection of either codec.
//!
//! [`ClientEngine`](super::ClientEngine) makes and reads JSON envelopes. On a
//! connection that negotiated MessagePack (`tether.v1.msgpack`), its driver turns each
//! envelope it transmits into a binary frame with [`to_wire`] and each binary frame it
//! receives back into JSON with [`from_binary`]: one conversion per message, for the
//! one connection a client has (the server, which sends to many, encodes once per
//! codec instead).

use ws_proto::envelope::msgpack::encode_msgpack;
use ws_proto::envelope::{Codec, Envelope, MsgPackEnvelope};
use ws_proto::{Config, Message};

/// The frame that carries `text` (an envelope from
/// [`ClientAction::Transmit`](super::ClientAction::Transmit)) on a connection of
/// `codec`: the text itself for JSON, the same envelope in MessagePack for
/// MessagePack. The engine's own envelopes always convert; if one did not, it goes as
/// text and the server refuses it (4117).
pub fn to_wire(codec: Codec, text: String) -> Message {
    if codec != Codec::MsgPack {
        return Message::Text(text);
    }
    // Our own envelope: decoded without the limits meant for a peer.
    let config = Config {
        max_message_size: usize::MAX,
        max_envelope_depth: usize::MAX,
        ..Config::default()
    };
    let mut out = Vec::with_capacity(text.len());
    match Envelope::decode(&text, &config).map(|env| encode_msgpack(&env.as_outgoing(), &mut out)) {
        Ok(Ok(())) => Message::Binary(out.into()),
        _ => Message::Text(text),
    }
}

/// The JSON text of the binary envelope `bytes`, for
/// [`ClientEngine::handle_message`](super::ClientEngine::handle_message); `None` when
/// it is not a binary envelope within `config`'s limits (ignored, as the engine
/// ignores a text it cannot decode).
pub fn from_binary(bytes: &[u8], config: &Config) -> Option<String> {
    MsgPackEnvelope::decode(bytes, config).ok()?.to_json().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_envelope_crosses_the_wire_and_back() {
        let text = r#"{"v":"1.0","e":"chat","p":{"t":"hé","n":[1,-2,0.5]},"c":"q1","s":4}"#.to_owned();
        assert_eq!(to_wire(Codec::Json, text.clone()), Message::Text(text.clone()));
        let Message::Binary(bytes) = to_wire(Codec::MsgPack, text.clone()) else {
            panic!("a binary frame");
        };
        assert_eq!(from_binary(&bytes, &Config::default()).as_deref(), Some(&*text));
        // Not an envelope: nothing to hand the engine.
        assert_eq!(from_binary(&[0x93, 1, 2, 3], &Config::default()), None);
        let small = Config {
            max_message_size: 8,
            ..Config::default()
        };
        assert_eq!(from_binary(&bytes, &small), None);
    }
}
