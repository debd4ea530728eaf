//! Replays every committed fuzz corpus file through the same logic the cargo-fuzz
//! targets run (`fuzz/logic/`), so plain `cargo test` on stable keeps every input
//! that once found a bug.

#![allow(unreachable_pub)] // the shared fuzz logic declares its entry points `pub`

use std::path::Path;

#[path = "../../fuzz/logic/frames.rs"]
mod frames;

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

#[test]
fn frames_corpus() {
    replay("frames", frames::frames);
}

#[path = "../../fuzz/logic/envelope.rs"]
mod envelope;

#[test]
fn envelope_corpus() {
    replay("envelope", envelope::envelope);
}

#[path = "../../fuzz/logic/handshake.rs"]
mod handshake;

#[test]
fn server_handshake_corpus() {
    replay("server_handshake", handshake::server_handshake);
}

#[test]
fn client_handshake_response_corpus() {
    replay("client_handshake_response", handshake::client_handshake_response);
}

#[path = "../../fuzz/logic/inflate.rs"]
mod inflate;

#[test]
fn inflate_corpus() {
    replay("inflate", inflate::inflate);
}
