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

    /// Validates the next piece and appends its complete code points to `out`.
    ///
    /// Returns `Err(valid_up_to)` (counted from the start of the text) as soon as the
    /// bytes seen cannot be the prefix of valid UTF-8. Each byte is validated once:
    /// building the text as it is validated is what lets a caller produce a `String`
    /// without a second pass and without `unsafe`.
    pub fn push(&mut self, mut data: &[u8], out: &mut String) -> Result<(), usize> {
        if self.partial_len > 0 {
            let width = sequence_width(self.partial[0]);
            let take = (width - self.partial_len).min(data.len());
            self.partial[self.partial_len..self.partial_len + take].copy_from_slice(&data[..take]);
            self.partial_len += take;
            data = &data[take..];
            match std::str::from_utf8(&self.partial[..self.partial_len]) {
                Ok(complete) => {
                    out.push_str(complete);
                    self.consumed += self.partial_len;
                    self.partial_len = 0;
                }
                // Still a valid prefix of one code point: wait for more.
                Err(e) if e.error_len().is_none() && self.partial_len < width => return Ok(()),
                Err(_) => return Err(self.consumed),
            }
        }
        // Cut off a code point the piece ends inside of, validate the rest in one pass.
        let cut = incomplete_tail_start(data);
        let (body, tail) = data.split_at(cut);
        match simdutf8::compat::from_utf8(body) {
            Ok(text) => out.push_str(text),
            Err(e) => return Err(self.consumed + e.valid_up_to()),
        }
        self.consumed += body.len();
        if !tail.is_empty() {
            // The tail must be a valid start of a code point (fail fast on F4 90 …).
            if matches!(std::str::from_utf8(tail), Err(e) if e.error_len().is_some()) {
                return Err(self.consumed);
            }
            self.partial[..tail.len()].copy_from_slice(tail);
            self.partial_len = tail.len();
        }
        Ok(())
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

/// Where a code point that `data` ends inside of begins, or `data.len()` when the
/// last code point is complete (or the bytes are invalid: the caller's validation
/// then reports them).
fn incomplete_tail_start(data: &[u8]) -> usize {
    let len = data.len();
    for back in 1..=len.min(3) {
        let byte = data[len - back];
        if byte & 0xc0 != 0x80 {
            // The last byte that is not a continuation byte: does its sequence fit?
            return if sequence_width(byte) > back {
                len - back
            } else {
                len
            };
        }
    }
    len
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
        let mut out = String::new();
        for piece in data.chunks(split.max(1)) {
            v.push(piece, &mut out)?;
        }
        // What was built is exactly the valid text fed so far.
        let valid = std::str::from_utf8(data).map_or_else(|e| e.valid_up_to(), str::len);
        assert_eq!(out.as_bytes(), &data[..valid]);
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
        let mut out = String::new();
        v.push(b"ab", &mut out).unwrap();
        v.push(&[0xf4], &mut out).unwrap();
        assert_eq!(v.push(&[0x90], &mut out), Err(2));
        assert_eq!(
            Utf8Validator::new().push(&[0xf4, 0x90], &mut String::new()),
            Err(0)
        );
    }
}
