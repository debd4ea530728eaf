//! Client-to-server masking (RFC 6455 §5.3).

/// XORs `buf` with the 4-byte `mask`, starting at byte `offset` of the mask cycle.
///
/// `offset` lets a payload that arrives in several pieces be unmasked piece by piece:
/// pass the number of payload bytes already unmasked.
#[inline]
pub fn apply_mask(buf: &mut [u8], mask: [u8; 4], offset: usize) {
    // Rotate the mask so that byte 0 of `buf` lines up with mask byte `offset % 4`,
    // then work eight bytes at a time: the compiler turns this into wide XORs.
    let mut m = [0u8; 4];
    for (i, b) in m.iter_mut().enumerate() {
        *b = mask[(offset + i) & 3];
    }
    let word = u64::from_ne_bytes([m[0], m[1], m[2], m[3], m[0], m[1], m[2], m[3]]);
    let mut chunks = buf.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let v = u64::from_ne_bytes(chunk.try_into().expect("chunk of 8")) ^ word;
        chunk.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= m[i & 3];
    }
}

/// Where a client connection gets its masking keys.
///
/// RFC 6455 §5.3 asks for keys an intermediary cannot predict. The core has no
/// entropy of its own (Sans-IO, `docs/ARCHITECTURE.md`): the caller supplies a
/// source, for example
/// [`SeededMasks`] seeded from the operating system's generator.
pub trait MaskSource: Send {
    /// The masking key for the next frame.
    fn next_mask(&mut self) -> [u8; 4];
}

impl<F: FnMut() -> [u8; 4] + Send> MaskSource for F {
    fn next_mask(&mut self) -> [u8; 4] {
        self()
    }
}

/// A fast generator of masking keys (xorshift64*), deterministic for a given seed.
///
/// Seed it from real entropy in production and from a constant in tests.
#[derive(Debug, Clone)]
pub struct SeededMasks {
    state: u64,
}

impl SeededMasks {
    /// A generator started from `seed` (a zero seed is replaced by a fixed odd constant).
    pub fn new(seed: u64) -> Self {
        Self {
            state: if seed == 0 { 0x9E37_79B9_7F4A_7C15 } else { seed },
        }
    }
}

impl MaskSource for SeededMasks {
    fn next_mask(&mut self) -> [u8; 4] {
        let mut x = self.state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.state = x;
        let out = x.wrapping_mul(0x2545_F491_4F6C_DD1D);
        ((out >> 32) as u32).to_ne_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(buf: &mut [u8], mask: [u8; 4], offset: usize) {
        for (i, b) in buf.iter_mut().enumerate() {
            *b ^= mask[(offset + i) % 4];
        }
    }

    #[test]
    fn wide_mask_matches_bytewise_for_every_length_and_offset() {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        for len in 0..40 {
            for offset in 0..8 {
                let data: Vec<u8> = (0..len as u8).map(|b| b.wrapping_mul(31)).collect();
                let mut fast = data.clone();
                let mut slow = data.clone();
                apply_mask(&mut fast, mask, offset);
                naive(&mut slow, mask, offset);
                assert_eq!(fast, slow, "len {len} offset {offset}");
            }
        }
    }

    #[test]
    fn masking_in_pieces_equals_masking_at_once() {
        let mask = [1, 2, 3, 4];
        let data: Vec<u8> = (0..=255).collect();
        let mut whole = data.clone();
        apply_mask(&mut whole, mask, 0);
        let mut pieces = data.clone();
        let (a, rest) = pieces.split_at_mut(7);
        let (b, c) = rest.split_at_mut(100);
        apply_mask(a, mask, 0);
        apply_mask(b, mask, 7);
        apply_mask(c, mask, 107);
        assert_eq!(whole, pieces);
    }

    #[test]
    fn seeded_masks_are_deterministic_and_vary() {
        let mut a = SeededMasks::new(42);
        let mut b = SeededMasks::new(42);
        let first: Vec<_> = (0..4).map(|_| a.next_mask()).collect();
        let second: Vec<_> = (0..4).map(|_| b.next_mask()).collect();
        assert_eq!(first, second);
        assert_ne!(first[0], first[1]);
    }
}
