//! Incremental UTF-8 validation that fails on the first byte that cannot start or
//! continue a valid sequence, however the text is split.

/// Validates UTF-8 fed in pieces.
///
/// It leans on `std::str::from_utf8` (fast, vectorised for ASCII) and keeps only the
/// up-to-three bytes of a code point cut by a split, so it costs no allocation.
#[derive(Debug, Clone, Default)]
pub struct Utf8Validator {
    /// Bytes of an incomplete code point at the end of the last piece.
    partial: [u8; 4],
    partial_len: usize,
    /// Bytes accepted so far, for error reporting.
    consumed: usize,
}

impl Utf8Validator {
    /// A validator at the start of a text.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds the next piece. Returns `Err(valid_up_to)` (counted from the start of the
    /// text) as soon as the bytes seen cannot be the prefix of valid UTF-8.
    pub fn feed(&mut self, mut data: &[u8]) -> Result<(), usize> {
        if self.partial_len > 0 {
            let width = sequence_width(self.partial[0]);
            let take = (width - self.partial_len).min(data.len());
            self.partial[self.partial_len..self.partial_len + take].copy_from_slice(&data[..take]);
            self.partial_len += take;
            data = &data[take..];
            match std::str::from_utf8(&self.partial[..self.partial_len]) {
                Ok(_) => {
                    self.consumed += self.partial_len;
                    self.partial_len = 0;
                }
                // Still a valid prefix of one code point: wait for more.
                Err(e) if e.error_len().is_none() && self.partial_len < width => return Ok(()),
                Err(_) => return Err(self.consumed),
            }
        }
        match std::str::from_utf8(data) {
            Ok(_) => {
                self.consumed += data.len();
                Ok(())
            }
            Err(e) => {
                let valid = e.valid_up_to();
                if e.error_len().is_some() {
                    return Err(self.consumed + valid);
                }
                // The piece ends inside a code point whose bytes so far are valid.
                let tail = &data[valid..];
                self.partial[..tail.len()].copy_from_slice(tail);
                self.partial_len = tail.len();
                self.consumed += valid;
                Ok(())
            }
        }
    }

    /// Whether the text fed so far ends on a code point boundary (a complete text).
    pub fn is_complete(&self) -> bool {
        self.partial_len == 0
    }

    /// Starts over for a new text.
    pub fn reset(&mut self) {
        *self = Self::default();
    }
}

/// The length of the sequence a lead byte starts; 1 for bytes that cannot lead
/// (std then reports them invalid).
fn sequence_width(lead: u8) -> usize {
    match lead {
        0xc2..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf4 => 4,
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_split(data: &[u8], split: usize) -> Result<bool, usize> {
        let mut v = Utf8Validator::new();
        for piece in data.chunks(split.max(1)) {
            v.feed(piece)?;
        }
        Ok(v.is_complete())
    }

    #[test]
    fn agrees_with_std_under_every_split() {
        let samples: &[&[u8]] = &[
            "κόσμε".as_bytes(),
            "Hello-µ@ßöäüàá-UTF-8!!".as_bytes(),
            &[0xf0, 0x9f, 0x98, 0x80],
            &[
                0xce, 0xba, 0xe1, 0xbd, 0xb9, 0xcf, 0x83, 0xce, 0xbc, 0xce, 0xb5, 0xed, 0xa0, 0x80, 0x65,
            ],
            &[0xf4, 0x90, 0x80, 0x80],
            &[0xc0, 0xaf],
            &[0xe0, 0x80, 0xaf],
            &[0xed, 0x9f, 0xbf],
            &[0xef, 0xbf, 0xbf],
            &[0xf8, 0x88, 0x80, 0x80, 0x80],
            &[0xe2, 0x82],
        ];
        for sample in samples {
            let std_ok = std::str::from_utf8(sample);
            for split in 1..=sample.len() {
                let ours = feed_split(sample, split);
                match std_ok {
                    Ok(_) => assert_eq!(ours, Ok(true), "{sample:x?} split {split}"),
                    Err(e) if e.error_len().is_none() => {
                        assert_eq!(ours, Ok(false), "{sample:x?} split {split}")
                    }
                    Err(e) => assert_eq!(ours, Err(e.valid_up_to()), "{sample:x?} split {split}"),
                }
            }
        }
    }

    #[test]
    fn fails_on_the_first_impossible_byte() {
        // 0xf4 0x90 can never start a valid sequence (above U+10FFFF): fail at once,
        // without waiting for the rest of the code point.
        let mut v = Utf8Validator::new();
        v.feed(b"ab").unwrap();
        v.feed(&[0xf4]).unwrap();
        assert_eq!(v.feed(&[0x90]), Err(2));
    }
}
