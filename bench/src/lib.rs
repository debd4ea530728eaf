//! # tether-bench: tether and its peers through real sockets
//!
//! One command (`bench/run.sh`, or `tether-bench all` once the peers are built)
//! builds or finds every subject, runs every scenario against each in interleaved
//! rounds, with the server pinned to one core and this load generator to the other,
//! and writes the tables into docs/BENCHMARKS.md. See bench/README.md.
//!
//! - [`wire`]: the client side of RFC 6455 as a load generator needs it;
//! - [`proto`]: tether's envelope and Socket.IO v4, as far as the scenarios go;
//! - [`load`]: the scenarios and what they measure and count;
//! - [`servers`]: tether as the subject, on tokio, smol and async-std;
//! - `storm`: the resume storm ([`load::Scenario::ResumeStorm`]);
//! - [`engine`]: the engine alone, in process (no sockets, no runtime);
//! - [`chart`]: the summary ratios as an SVG bar chart;
//! - [`runner`]: subjects, rounds, medians, markdown.

pub mod chart;
pub mod engine;
mod join;
pub mod load;
pub mod proc_stat;
pub mod proto;
pub mod runner;
pub mod servers;
mod storm;
pub mod wire;
