//! The HTTP/1.1 upgrade handshake (RFC 6455 §4), server and client side.
//!
//! Both sides are Sans-IO: hand them the bytes read from the socket, in whatever
//! pieces the socket delivers, and write the bytes they render. The end of the head is
//! found in time linear in the input (each byte is examined once however it is split),
//! the head is parsed once when complete, and the limits
//! [`Config::max_handshake_size`](crate::Config::max_handshake_size) (16 KiB) and
//! [`Config::max_handshake_headers`](crate::Config::max_handshake_headers) (64) apply.
//!
//! **The handshake timeout is the caller's.** This crate has no clock: start a timer
//! (ws-driver's default is 10 s) when the connection opens and close the socket if no
//! outcome has arrived when it fires.
//!
//! Faults of the peer are values, never panics: on the server a [`Rejection`] with its
//! HTTP status (400, 405, 426, 431) and the response to send; on the client a
//! [`HandshakeError`].
//!
//! # Example
//!
//! A client and a server handshake talking to each other in memory:
//!
//! ```
//! use ws_proto::handshake::{Accept, ClientHandshake, ClientRequest, ServerHandshake};
//! use ws_proto::Config;
//!
//! let config = Config::default();
//!
//! // Client: the nonce comes from the caller's random source.
//! let mut request = ClientRequest::new("example.com", "/chat?token=abc", [7; 16]);
//! request.protocols = vec!["chat.v1".into()];
//! let (mut client, request_bytes) = ClientHandshake::new(&config, request)?;
//!
//! // Server: feed what was read, in any split.
//! let mut server = ServerHandshake::new(&config);
//! let (head, tail) = request_bytes.split_at(10);
//! assert!(server.handle_bytes(head).map_err(|r| r.into_error())?.is_none());
//! let request = match server.handle_bytes(tail) {
//!     Ok(Some(request)) => request,
//!     Ok(None) => unreachable!("the head is complete"),
//!     Err(rejection) => {
//!         // Write `rejection.to_response()`, then close.
//!         return Err(rejection.into_error().into());
//!     }
//! };
//! assert_eq!(request.path(), "/chat");
//! assert_eq!(request.query_param("token").as_deref(), Some("abc"));
//! if request.origin().is_some_and(|o| o != "https://example.com") {
//!     let _response = request.reject(403, "origin not allowed")?.to_response();
//!     return Ok(());
//! }
//! let response_bytes = request.accept(&Accept::new().with_protocol("chat.v1"))?;
//!
//! // Client: the server's first frame may arrive in the same read as its head.
//! let mut read = response_bytes.to_vec();
//! read.extend_from_slice(&[0x81, 0x02, b'h', b'i']);
//! let mut response = client.handle_bytes(&read)?.expect("complete");
//! assert_eq!(response.protocol(), Some("chat.v1"));
//! assert_eq!(&response.take_rest()[..], &[0x81, 0x02, b'h', b'i']);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod accept_key;
mod client;
mod error;
mod extension;
mod head;
mod headers;
mod rejection;
mod request;
mod response;
mod server;

pub use accept_key::accept_key;
pub use client::{ClientHandshake, ClientRequest};
pub use error::HandshakeError;
#[cfg(test)]
pub(crate) use extension::parse_extensions;
pub use extension::Extension;
pub use headers::{is_credential_header, Headers};
pub use rejection::Rejection;
pub use request::{Accept, Request};
pub use response::Response;
pub use server::{validate_request_parts, RequestHeadReader, ServerHandshake};

#[cfg(test)]
mod round_trip {
    use super::*;
    use crate::Config;

    #[test]
    fn client_request_is_accepted_by_the_server_and_back() {
        let config = Config::default();
        let mut request = ClientRequest::new("example.com", "/live?token=s%C3%A9cret&x=1+2", [42; 16]);
        request.protocols = vec!["tether.v1".into(), "tether.bin.v1".into()];
        request.extensions = Some("permessage-deflate; client_max_window_bits, x-other; q=\"a b\"".into());
        request.origin = Some("https://app.example.com".into());
        request.headers = vec![
            ("Authorization".into(), "Bearer tok.en".into()),
            ("X-Trace".into(), "7".into()),
        ];
        let (mut client, request_bytes) = ClientHandshake::new(&config, request).unwrap();

        let mut server = ServerHandshake::new(&config);
        let mut request = None;
        for byte in request_bytes.iter() {
            if let Some(r) = server.handle_bytes(std::slice::from_ref(byte)).unwrap() {
                request = Some(r);
            }
        }
        let request = request.expect("complete");
        assert_eq!(request.host(), "example.com");
        assert_eq!(request.path(), "/live");
        assert_eq!(request.query_param("token").as_deref(), Some("s\u{e9}cret"));
        assert_eq!(request.query_param("x").as_deref(), Some("1 2"));
        assert_eq!(request.origin(), Some("https://app.example.com"));
        assert_eq!(request.bearer_token(), Some("tok.en"));
        assert_eq!(request.header("x-trace"), Some("7"));
        assert_eq!(request.protocols(), ["tether.v1", "tether.bin.v1"]);
        let names: Vec<_> = request.extensions().iter().map(Extension::name).collect();
        assert_eq!(names, ["permessage-deflate", "x-other"]);
        assert_eq!(request.extensions()[1].param("q"), Some(Some("a b")));
        assert!(request.rest().is_empty());

        let accept = Accept::new()
            .with_protocol("tether.bin.v1")
            .with_extensions("permessage-deflate; server_no_context_takeover");
        let mut response_bytes = request.accept(&accept).unwrap().to_vec();
        response_bytes.extend_from_slice(&[0x82, 0x00]);
        let mut response = client.handle_bytes(&response_bytes).unwrap().unwrap();
        assert_eq!(response.protocol(), Some("tether.bin.v1"));
        assert_eq!(
            response.extensions()[0].param("server_no_context_takeover"),
            Some(None)
        );
        assert_eq!(&response.take_rest()[..], &[0x82, 0x00]);
    }

    #[test]
    fn server_rejection_reaches_the_client_as_its_status() {
        let config = Config::default();
        let (mut client, request_bytes) =
            ClientHandshake::new(&config, ClientRequest::new("h", "/", [1; 16])).unwrap();
        let mut server = ServerHandshake::new(&config);
        let request = server.handle_bytes(&request_bytes).unwrap().unwrap();
        let rejection = request.reject(403, "origin not allowed").unwrap();
        assert_eq!(
            client.handle_bytes(&rejection.to_response()),
            Err(HandshakeError::NotSwitchingProtocols { status: 403 })
        );
    }
}
