//! The async-std / smol adapter of tether over futures-io.
//!
//! This crate is a skeleton until the adapter lands (see the project issues).
#![deny(missing_docs)]
