//! The tokio adapter of tether: sockets, tasks and timers around the Sans-IO core.
//!
//! This crate is a skeleton until the adapter lands (see the project issues).
#![deny(missing_docs)]
