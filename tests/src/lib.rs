//! Cross-crate tests of tether live in `tests/tests/`; this library holds shared helpers.
#![deny(missing_docs)]
