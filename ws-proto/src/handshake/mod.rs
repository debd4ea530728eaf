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
//! (10 s in ARCHITECTURE §4) when the connection opens and close the socket if no
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
pub use extension::Extension;
pub use headers::Headers;
pub use rejection::Rejection;
pub use request::{Accept, Request};
pub use response::Response;
pub use server::ServerHandshake;
