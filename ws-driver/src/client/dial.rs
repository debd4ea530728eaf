//! How the client opens a transport for each connection attempt: from a URL through
//! a [`Connector`]'s byte streams (WebSocket or raw TCP), or any [`Dialer`] of the
//! application's (the in-memory one, a transport of its own).

use std::io;

use ws_proto::handshake::ClientRequest;
use ws_proto::Config;

use ws_proto::envelope::msgpack::{JSON_PROTOCOL, MSGPACK_PROTOCOL};
use ws_proto::envelope::Codec;

use super::driver::upgrade as upgrade_stream;
use super::{Connector, Scheme, Target};
use crate::handler::BoxFuture;
use crate::prefixed::dial_prefixed;
use crate::transport::{BoxTransport, StreamTransport};

/// What the client asks of one connection attempt. Transports with a handshake that
/// carries headers (WebSocket, the in-memory pair) send them; raw TCP has none.
#[derive(Debug, Clone, Default)]
pub struct DialRequest {
    /// The `Origin` header, if any.
    pub origin: Option<String>,
    /// Extra headers, with `Authorization: Bearer` when the credential travels in
    /// the handshake ([`AuthMode::Handshake`](super::AuthMode::Handshake)).
    pub headers: Vec<(String, String)>,
    /// The envelope codec to ask for (`ClientConfig::codec`). The WebSocket upgrade
    /// offers `tether.v1.msgpack` then `tether.v1.json` for MessagePack, and the
    /// transport reports what the server named ([`Transport::codec`]); transports that
    /// cannot negotiate one (raw TCP) run JSON.
    ///
    /// [`Transport::codec`]: crate::transport::Transport::codec
    pub codec: Codec,
}

/// Opens transports to one server: what [`Client::start_with`](super::Client::start_with)
/// runs over. A failed attempt is an `io::Error`; an error carrying a
/// [`HandshakeError::NotSwitchingProtocols`](ws_proto::handshake::HandshakeError)
/// is reported as a refusal with its HTTP status (no retry when it is final).
pub trait Dialer: Send + Sync + 'static {
    /// Opens one transport, its handshake done.
    fn dial(&self, request: DialRequest) -> BoxFuture<io::Result<BoxTransport>>;
}

/// The dialer of a URL: a [`Connector`]'s byte stream, then the WebSocket upgrade
/// (`ws://`, `wss://`) or the raw TCP preamble (`tcp://`).
pub(super) struct UrlDialer<C> {
    pub(super) connector: C,
    pub(super) target: Target,
    /// The wire limits (`ClientConfig::proto`).
    pub(super) proto: Config,
}

impl<C: Connector> Dialer for UrlDialer<C> {
    fn dial(&self, request: DialRequest) -> BoxFuture<io::Result<BoxTransport>> {
        let opening = self.connector.connect(&self.target);
        let proto = self.proto.clone();
        match self.target.scheme {
            Scheme::WebSocket => {
                let upgrade = upgrade_request(&self.target, request);
                Box::pin(async move {
                    let (stream, conn, codec) = upgrade_stream(opening.await?, upgrade, &proto).await?;
                    Ok(Box::new(StreamTransport::new(stream, conn, &[]).with_codec(codec)) as BoxTransport)
                })
            }
            Scheme::Tcp => Box::pin(async move {
                let transport = dial_prefixed(opening.await?, &proto).await?;
                Ok(Box::new(transport) as BoxTransport)
            }),
        }
    }
}

/// The upgrade request of one attempt: host and path from `target`, a fresh key,
/// `request`'s origin and headers.
fn upgrade_request(target: &Target, request: DialRequest) -> ClientRequest {
    let mut upgrade = target.request();
    upgrade.origin = request.origin;
    upgrade.headers = request.headers;
    if request.codec == Codec::MsgPack {
        // JSON as well: a server that does not speak MessagePack then names JSON.
        upgrade.protocols = vec![MSGPACK_PROTOCOL.to_owned(), JSON_PROTOCOL.to_owned()];
    }
    upgrade
}
