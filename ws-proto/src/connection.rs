//! The RFC 6455 connection state machine (being written).

/// Which end of the connection this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The server end.
    Server,
    /// The client end.
    Client,
}

/// Placeholder.
#[derive(Debug)]
pub struct Connection;

/// Placeholder.
#[derive(Debug)]
pub enum ConnectionState {
    /// Open.
    Open,
}

/// Placeholder.
#[derive(Debug)]
pub enum Event {
    /// Failed.
    Failed(crate::ProtocolError),
}
