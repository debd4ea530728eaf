//! # ws-proto: the Sans-IO WebSocket wire layer of tether
//!
//! Bytes in, events and bytes out. Nothing here owns a socket, reads a clock, draws
//! randomness or knows an async runtime; the caller supplies all of that (masking keys
//! and handshake nonces included), so every behaviour is reproducible in a test.
//!
//! - [`handshake`]: the HTTP/1.1 upgrade, server side ([`handshake::ServerHandshake`])
//!   and client side ([`handshake::ClientHandshake`]).
//! - [`Connection`]: the RFC 6455 state machine for either role: frame decoding from
//!   any split of the input, reassembly, incremental UTF-8 validation, automatic pongs,
//!   the closing handshake, and every peer fault answered with its close code.
//! - [`deflate`]: permessage-deflate (RFC 7692), negotiated in the handshake and run
//!   by the connection.
//! - [`envelope`]: the JSON envelope `{v,e,p,c,t,s}` of tether's protocol v1.
//! - [`prefixed`]: length-prefixed framing, the same messages over a plain byte stream
//!   (raw TCP) instead of WebSocket.
//!
//! A panic in this crate is a bug in it, never the consequence of bad input.
//!
//! Where this crate sits among the others, the drive loop every layer shares and the
//! house rules it keeps (its `clippy.toml` denies clocks, threads and OS entropy) are
//! in `docs/ARCHITECTURE.md`.
//!
//! # The drive loop
//!
//! A server connection over any byte stream the caller owns; here a blocking
//! `Read + Write` (a TCP socket, a TLS stream, a pipe), but the same calls work from
//! any runtime. See `examples/echo_server.rs` for a complete server.
//!
//! ```no_run
//! use std::io::{Read, Write};
//! use ws_proto::handshake::{Accept, ServerHandshake};
//! use ws_proto::{Config, Connection, Event};
//!
//! fn serve(mut socket: impl Read + Write) -> std::io::Result<()> {
//! let config = Config::default();
//! let mut buf = vec![0; 64 * 1024];
//!
//! // 1. The upgrade request, in whatever pieces the socket delivers it.
//! let mut handshake = ServerHandshake::new(&config);
//! let request = loop {
//!     let n = socket.read(&mut buf)?;
//!     match handshake.handle_bytes(&buf[..n]) {
//!         Ok(Some(request)) => break request,
//!         Ok(None) if n > 0 => continue,
//!         Ok(None) => return Ok(()), // EOF before a whole request
//!         Err(rejection) => return socket.write_all(&rejection.to_response()),
//!     }
//! };
//! socket.write_all(&request.accept(&Accept::new()).expect("no subprotocol chosen"))?;
//!
//! // 2. Frames: bytes in, drain events, drain transmits, until closed.
//! let mut conn = Connection::server(config);
//! conn.handle_bytes(request.rest());
//! loop {
//!     while let Some(event) = conn.poll_event() {
//!         match event {
//!             Event::Text(text) => conn.send_text(&text).ok(),
//!             Event::Binary(data) => conn.send_binary(&data).ok(),
//!             // Pongs and close frames owed are already queued.
//!             _ => None,
//!         };
//!     }
//!     while let Some(bytes) = conn.poll_transmit() {
//!         socket.write_all(&bytes)?;
//!     }
//!     if conn.is_closed() {
//!         return Ok(()); // dropping the socket closes it
//!     }
//!     match socket.read(&mut buf)? {
//!         0 => conn.handle_eof(),
//!         n => conn.handle_bytes(&buf[..n]),
//!     }
//! }
//! }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod close;
mod config;
mod connection;
pub mod deflate;
pub mod envelope;
mod error;
pub mod frame;
#[cfg(any(fuzzing, test))]
pub mod fuzzing;
pub mod handshake;
mod message;
pub mod prefixed;
mod utf8;

pub use close::{CloseCode, CloseFrame};
pub use config::Config;
pub use connection::{Connection, ConnectionState, Event, Events, Role};
pub use deflate::{DeflateParams, Precompressed};
pub use error::{ProtocolError, SendError};
pub use message::Message;
pub use utf8::Utf8Validator;
