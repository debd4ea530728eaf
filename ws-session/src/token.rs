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

    /// The token's verifier: what a shared session store keeps instead of the token
    /// (SHA-256 of its 32 bytes). Knowing it does not let anyone resume.
    pub fn verifier(&self) -> TokenVerifier {
        use sha2::Digest;
        TokenVerifier(sha2::Sha256::digest(self.0).into())
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

/// The SHA-256 of a [`ResumeToken`]: sessions and shared session stores keep this, never
/// the token. A resume presents the token; its verifier is compared (in constant time)
/// with the session's. `Debug` prints only a short prefix.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenVerifier(pub [u8; 32]);

impl TokenVerifier {
    /// Compares in time independent of where the verifiers differ.
    pub fn ct_eq(&self, other: &Self) -> bool {
        let mut diff = 0u8;
        for (a, b) in self.0.iter().zip(other.0.iter()) {
            diff |= a ^ b;
        }
        std::hint::black_box(diff) == 0
    }

    /// Whether `presented` resumes a session whose current token has verifier
    /// `current`, whose previous (rotated) token had `previous`, and whose client has
    /// or has not `confirmed` it holds the current one. `Ok(true)`: the current token;
    /// `Ok(false)`: the previous one, still good because the rotation was not
    /// confirmed; else why not. The one place this rule is decided: the engine's resume
    /// and [`SessionRecord::admits`](crate::journal::SessionRecord::admits) (what a
    /// store checks before letting a node claim a session) both ask here.
    pub fn check(
        presented: &Self,
        current: &Self,
        previous: Option<&Self>,
        confirmed: bool,
    ) -> Result<bool, crate::NotRecoverable> {
        if presented.ct_eq(current) {
            return Ok(true);
        }
        match previous {
            Some(previous) if presented.ct_eq(previous) => {
                if confirmed {
                    Err(crate::NotRecoverable::Used)
                } else {
                    Ok(false)
                }
            }
            _ => Err(crate::NotRecoverable::InvalidToken),
        }
    }
}

impl fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "TokenVerifier({:02x}{:02x}{:02x}{:02x}…)",
            self.0[0], self.0[1], self.0[2], self.0[3]
        )
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

    #[test]
    fn verifier_is_sha256_and_never_the_token() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(2);
        let a = ResumeToken::generate(&mut rng);
        assert_ne!(a.verifier().0, a.0);
        assert!(a.verifier().ct_eq(&a.verifier()));
        // SHA-256 of 32 zero bytes.
        let zero = ResumeToken([0; 32]).verifier();
        assert_eq!(zero.0[..4], [0x66, 0x68, 0x7a, 0xad], "sha256(0^32) = 66687aad…");
        let (cur, prev) = (a.verifier(), ResumeToken::generate(&mut rng).verifier());
        use crate::NotRecoverable::*;
        assert_eq!(TokenVerifier::check(&cur, &cur, Some(&prev), true), Ok(true));
        assert_eq!(TokenVerifier::check(&prev, &cur, Some(&prev), false), Ok(false));
        assert_eq!(TokenVerifier::check(&prev, &cur, Some(&prev), true), Err(Used));
        assert_eq!(
            TokenVerifier::check(&zero, &cur, Some(&prev), false),
            Err(InvalidToken)
        );
    }
}
