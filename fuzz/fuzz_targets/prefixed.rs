#![no_main]
//! cargo-fuzz target over `ws_proto::fuzzing::prefixed` (raw TCP's preamble and
//! length-prefixed frames), which the crate's own tests also run on every committed
//! corpus input.

libfuzzer_sys::fuzz_target!(|data: &[u8]| ws_proto::fuzzing::prefixed(data));
