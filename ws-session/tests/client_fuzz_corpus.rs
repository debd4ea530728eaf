//! Replays every file of `fuzz/corpus/client_engine/` through the logic the cargo-fuzz
//! target runs (`fuzz/logic/client_engine.rs`), plus pseudo-random inputs, so plain
//! `cargo test` on stable keeps every input that once found a bug.

#![allow(unreachable_pub)] // the shared fuzz logic declares its entry point `pub`

use std::path::Path;

#[path = "../../fuzz/logic/client_engine.rs"]
mod client_engine;

#[test]
fn client_engine_corpus() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/client_engine");
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("corpus entry").path();
        let data = std::fs::read(&path).expect("corpus file");
        client_engine::client_engine(&data);
        count += 1;
    }
    assert!(count > 0, "no corpus in {}", dir.display());
}

#[test]
fn client_engine_random_inputs() {
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    for len in [0usize, 1, 7, 64, 256, 1024, 4096] {
        for _ in 0..32 {
            let data: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect();
            client_engine::client_engine(&data);
        }
    }
}
