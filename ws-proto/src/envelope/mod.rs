//! The JSON envelope of protocol v1.
