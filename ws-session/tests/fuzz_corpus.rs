//! Replays every file of `fuzz/corpus/engine/` through the logic the cargo-fuzz target
//! runs (`fuzz/logic/engine.rs`), so plain `cargo test` on stable keeps every input that
//! once found a bug.

#![allow(unreachable_pub)] // the shared fuzz logic declares its entry point `pub`

use std::path::Path;

#[path = "../../fuzz/logic/engine.rs"]
mod engine;

#[test]
fn engine_corpus() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/engine");
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("corpus entry").path();
        let data = std::fs::read(&path).expect("corpus file");
        engine::engine(&data);
        count += 1;
    }
    assert!(count > 0, "no corpus in {}", dir.display());
}

/// Pseudo-random inputs beyond the committed corpus, so the replay also explores.
#[test]
fn engine_random_inputs() {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    for len in [0usize, 1, 7, 64, 256, 1024, 4096] {
        for _ in 0..8 {
            let data: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect();
            engine::engine(&data);
        }
    }
}

/// Random operation sequences beyond the corpus: a few hundred in every `cargo test`;
/// for a longer soak on machines without cargo-fuzz:
/// `ENGINE_SOAK=100000 cargo test --release -p ws-session --test fuzz_corpus`.
#[test]
fn engine_random_soak() {
    let runs: u64 = std::env::var("ENGINE_SOAK")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    for run in 0..runs {
        let mut state = run.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let len = (state % 3000) as usize;
        let data: Vec<u8> = (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        if let Err(panic) = std::panic::catch_unwind(|| engine::engine(&data)) {
            std::fs::write(format!("/tmp/engine-crash-{run}"), &data).ok();
            std::panic::resume_unwind(panic);
        }
    }
}
