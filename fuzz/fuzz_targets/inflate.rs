#![no_main]
//! cargo-fuzz target; the logic lives in `fuzz/logic/inflate.rs`, shared with the
//! corpus replay test that plain `cargo test` runs.

#[path = "../logic/inflate.rs"]
#[allow(dead_code)]
mod logic;

libfuzzer_sys::fuzz_target!(|data: &[u8]| logic::inflate(data));
