//! What the cargo-fuzz targets run, compiled only for fuzzing (`--cfg fuzzing`, which
//! cargo-fuzz sets) and for this crate's own tests, which replay every committed corpus
//! input (`fuzz/corpus/<target>/`) on stable. Each function takes one raw input and
//! panics only on a bug: a broken invariant, never bad bytes.
//!
//! The targets in `fuzz/fuzz_targets/` are one line each over these functions.

mod envelope;
mod frames;
mod handshake;
mod inflate;
mod msgpack_envelope;
mod prefixed;

pub use envelope::envelope;
pub use frames::frames;
pub use handshake::{client_handshake_response, server_handshake};
pub use inflate::inflate;
pub use msgpack_envelope::msgpack_envelope;
pub use prefixed::prefixed;

#[cfg(test)]
mod corpus {
    use std::path::Path;

    /// Runs every file of `fuzz/corpus/<target>/` through `run`.
    pub(crate) fn replay(target: &str, run: fn(&[u8])) {
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

    #[test]
    fn msgpack_envelope_corpus() {
        replay("msgpack_envelope", super::msgpack_envelope);
    }

    #[test]
    fn prefixed_corpus() {
        replay("prefixed", super::prefixed);
    }

    #[test]
    fn frames_corpus() {
        replay("frames", super::frames);
    }

    #[test]
    fn envelope_corpus() {
        replay("envelope", super::envelope);
    }

    #[test]
    fn server_handshake_corpus() {
        replay("server_handshake", super::server_handshake);
    }

    #[test]
    fn client_handshake_response_corpus() {
        replay("client_handshake_response", super::client_handshake_response);
    }

    #[test]
    fn inflate_corpus() {
        replay("inflate", super::inflate);
    }
}
