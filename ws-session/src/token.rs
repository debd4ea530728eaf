//! Resume tokens: 256 random bits, private, single use, compared in constant time.

use std::fmt;

use rand_core::CryptoRng;

/// The secret that lets a client resume its session: 256 bits from the caller's
/// cryptographic generator, never derived from the session id. Rotated on every resume
/// (the old one is then refused as "used"). Written on the wire as 64 lowercase hex
/// digits. `Debug` does not print it.
#[derive(Clone, Copy)]
pub struct ResumeToken([u8; 32]);

impl ResumeToken {
    /// A fresh token from `rng`.
    pub fn generate(rng: &mut (impl CryptoRng + ?Sized)) -> Self {
        let mut bytes = [0; 32];
        rng.fill_bytes(&mut bytes);
        Self(bytes)
    }

    /// Parses the 64-hex-digit wire form.
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.as_bytes();
        if text.len() != 64 {
            return None;
        }
        let mut bytes = [0; 32];
        for (i, pair) in text.chunks_exact(2).enumerate() {
            bytes[i] = (hex_digit(pair[0])? << 4) | hex_digit(pair[1])?;
        }
        Some(Self(bytes))
    }

    /// Compares in time independent of where the tokens differ, so that response
    /// timing does not leak a prefix of the secret.
    pub fn ct_eq(&self, other: &Self) -> bool {
        let mut diff = 0u8;
        for (a, b) in self.0.iter().zip(other.0.iter()) {
            diff |= a ^ b;
        }
        // black_box keeps the optimizer from turning the fold into an early exit.
        std::hint::black_box(diff) == 0
    }

    /// The wire form: 64 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        let mut out = String::with_capacity(64);
        for b in self.0 {
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 15)]));
        }
        out
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

impl fmt::Debug for ResumeToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ResumeToken(…)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::rand_core::SeedableRng;

    #[test]
    fn hex_round_trip_and_constant_time_eq() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
        let a = ResumeToken::generate(&mut rng);
        let b = ResumeToken::generate(&mut rng);
        assert!(a.ct_eq(&ResumeToken::parse(&a.to_hex()).unwrap()));
        assert!(!a.ct_eq(&b));
        assert!(ResumeToken::parse("00").is_none());
        assert!(ResumeToken::parse(&"g".repeat(64)).is_none());
        assert_eq!(format!("{a:?}"), "ResumeToken(…)");
    }
}
