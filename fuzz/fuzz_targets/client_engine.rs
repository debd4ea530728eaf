#![no_main]
//! cargo-fuzz target; the logic lives in `fuzz/logic/client_engine.rs`, shared with the
//! corpus replay test that plain `cargo test` runs.

#[path = "../logic/client_engine.rs"]
#[allow(dead_code)]
mod logic;

libfuzzer_sys::fuzz_target!(|data: &[u8]| logic::client_engine(data));
