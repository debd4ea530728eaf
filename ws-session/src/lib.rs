//! The Sans-IO session engine of tether: sessions, rooms, authentication flow,
//! heartbeats, resume with replay and limits.
//!
//! This crate is a skeleton until the session engine lands (see the project issues).
#![forbid(unsafe_code)]
#![deny(missing_docs)]
