//! Replays every file of `fuzz/corpus/engine/` and `fuzz/corpus/client_engine/` through
//! the logic the cargo-fuzz targets run (`fuzz/logic/`), plus pseudo-random inputs, so
//! plain `cargo test` on stable keeps every input that once found a bug and explores a
//! little beyond it.

#![allow(unreachable_pub)] // the shared fuzz logic declares its entry points `pub`

use std::path::Path;

#[path = "../../fuzz/logic/engine.rs"]
mod engine;

// The client fuzz logic reads the real clock once, as its fake clock's origin.
#[allow(clippy::disallowed_methods)]
#[path = "../../fuzz/logic/client_engine.rs"]
mod client_engine;

fn replay(target: &str, run: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("corpus entry").path();
        let data = std::fs::read(&path).expect("corpus file");
        run(&data);
        count += 1;
    }
    assert!(count > 0, "no corpus in {}", dir.display());
}

/// `count` pseudo-random inputs (xorshift from `seed`) of lengths up to `max_len`; a
/// failing one is written to /tmp so it can join the corpus.
fn random_inputs(name: &str, seed: u64, count: u64, max_len: u64, run: fn(&[u8])) {
    for n in 0..count {
        let mut state = (seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1;
        let len = (state % max_len) as usize;
        let data: Vec<u8> = (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        if let Err(panic) = std::panic::catch_unwind(|| run(&data)) {
            std::fs::write(format!("/tmp/{name}-crash-{n}"), &data).ok();
            std::panic::resume_unwind(panic);
        }
    }
}

#[test]
fn engine_corpus() {
    replay("engine", engine::engine);
}

#[test]
fn client_engine_corpus() {
    replay("client_engine", client_engine::client_engine);
}

/// Random operation sequences beyond the corpus: a few hundred in every `cargo test`;
/// for a longer soak on machines without cargo-fuzz:
/// `ENGINE_SOAK=100000 cargo test --release -p ws-session --test fuzz_corpus`.
#[test]
fn engine_random_soak() {
    let runs = std::env::var("ENGINE_SOAK")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    random_inputs("engine", 0x9E37_79B9_7F4A_7C15, runs, 3000, engine::engine);
}

#[test]
fn client_engine_random_inputs() {
    random_inputs(
        "client-engine",
        0x2545_F491_4F6C_DD1D,
        224,
        4096,
        client_engine::client_engine,
    );
}
