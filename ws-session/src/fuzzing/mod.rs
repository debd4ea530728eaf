//! What the cargo-fuzz targets run, compiled only for fuzzing (`--cfg fuzzing`, which
//! cargo-fuzz sets) and for this crate's own tests, with the simulation harness
//! (feature `sim`). The tests replay every committed corpus input
//! (`fuzz/corpus/<target>/`) and some pseudo-random ones on stable. Each function takes
//! one raw input and panics only on a bug: a broken invariant, never bad input.
//!
//! The targets in `fuzz/fuzz_targets/` are one line each over these functions.

mod client_engine;
mod engine;

pub use client_engine::client_engine;
pub use engine::engine;

#[cfg(test)]
mod corpus {
    use std::path::Path;

    /// Runs every file of `fuzz/corpus/<target>/` through `run`.
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

    /// `count` pseudo-random inputs (xorshift from `seed`) of lengths up to `max_len`;
    /// a failing one is written to the temporary directory so it can join the corpus.
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
                std::fs::write(std::env::temp_dir().join(format!("{name}-crash-{n}")), &data).ok();
                std::panic::resume_unwind(panic);
            }
        }
    }

    #[test]
    fn engine_corpus() {
        replay("engine", super::engine);
    }

    #[test]
    fn client_engine_corpus() {
        replay("client_engine", super::client_engine);
    }

    /// Random operation sequences beyond the corpus: a few hundred in every `cargo
    /// test`; for a longer soak on machines without cargo-fuzz:
    /// `ENGINE_SOAK=100000 cargo test --release -p ws-session --lib fuzzing`.
    #[test]
    fn engine_random_soak() {
        let runs = std::env::var("ENGINE_SOAK")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(300);
        random_inputs("engine", 0x9E37_79B9_7F4A_7C15, runs, 3000, super::engine);
    }

    #[test]
    fn client_engine_random_inputs() {
        random_inputs(
            "client-engine",
            0x2545_F491_4F6C_DD1D,
            224,
            4096,
            super::client_engine,
        );
    }
}
