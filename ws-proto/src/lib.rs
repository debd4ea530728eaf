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
//! - [`envelope`]: the JSON envelope `{v,e,p,c,t,s}` of tether's protocol v1.
//!
//! A panic in this crate is a bug in it, never the consequence of bad input.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod close;
mod config;
mod connection;
pub mod envelope;
mod error;
pub mod frame;
pub mod handshake;
mod message;
mod utf8;

pub use close::{CloseCode, CloseFrame};
pub use config::Config;
pub use connection::{Connection, ConnectionState, Event, Role};
pub use error::{ProtocolError, SendError};
pub use message::Message;
pub use utf8::Utf8Validator;
