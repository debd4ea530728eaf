//! Frame header encoding and decoding (RFC 6455 §5.2).

use bytes::BufMut;

use super::{apply_mask, OpCode};
use crate::error::ProtocolError;

/// The longest header: 2 bytes, an 8-byte extended length and a 4-byte mask.
pub const MAX_HEADER_LEN: usize = 14;

/// A decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// FIN: this frame ends its message.
    pub fin: bool,
    /// RSV1–RSV3 as three bits (`0b100` is RSV1). Extensions give them meaning.
    pub rsv: u8,
    /// The opcode.
    pub opcode: OpCode,
    /// The masking key, present on client-to-server frames.
    pub mask: Option<[u8; 4]>,
    /// The payload length.
    pub payload_len: u64,
}

impl FrameHeader {
    /// Decodes a header from the start of `buf`.
    ///
    /// Returns `Ok(None)` when `buf` does not yet hold the whole header, or the header
    /// and its length in bytes. The checks that need no connection state are made
    /// here: reserved opcodes, control frames that are fragmented or longer than 125
    /// bytes, and lengths that are not minimally encoded or have the top bit set.
    /// Reserved bits and masking depend on the role and extensions; the connection
    /// checks those.
    pub fn decode(buf: &[u8]) -> Result<Option<(Self, usize)>, ProtocolError> {
        let [b0, b1, ..] = *buf else { return Ok(None) };
        let fin = b0 & 0x80 != 0;
        let rsv = (b0 >> 4) & 0x7;
        let opcode = OpCode::from_u8(b0 & 0x0f).ok_or(ProtocolError::ReservedOpcode { opcode: b0 & 0x0f })?;
        let masked = b1 & 0x80 != 0;
        let short = b1 & 0x7f;
        if opcode.is_control() {
            if !fin {
                return Err(ProtocolError::FragmentedControlFrame { opcode });
            }
            if short > 125 {
                // Announced as 126/127: a control frame may never be that long.
                return Err(ProtocolError::ControlFrameTooLarge {
                    len: u64::from(short),
                });
            }
        }
        let ext = match short {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let mask_len = if masked { 4 } else { 0 };
        let len = 2 + ext + mask_len;
        if buf.len() < len {
            return Ok(None);
        }
        let payload_len = match ext {
            2 => {
                let n = u64::from(u16::from_be_bytes([buf[2], buf[3]]));
                if n < 126 {
                    return Err(ProtocolError::NonMinimalLength { len: n });
                }
                n
            }
            8 => {
                let n = u64::from_be_bytes(buf[2..10].try_into().expect("8 bytes"));
                if n >> 63 != 0 {
                    return Err(ProtocolError::LengthTopBitSet);
                }
                if n <= 0xffff {
                    return Err(ProtocolError::NonMinimalLength { len: n });
                }
                n
            }
            _ => u64::from(short),
        };
        let mask = masked.then(|| buf[2 + ext..2 + ext + 4].try_into().expect("4 bytes"));
        Ok(Some((
            Self {
                fin,
                rsv,
                opcode,
                mask,
                payload_len,
            },
            len,
        )))
    }

    /// The encoded length of this header.
    pub fn encoded_len(&self) -> usize {
        let ext = match self.payload_len {
            0..=125 => 0,
            126..=0xffff => 2,
            _ => 8,
        };
        2 + ext + if self.mask.is_some() { 4 } else { 0 }
    }

    /// Writes this header with the shortest length encoding.
    pub fn encode(&self, out: &mut impl BufMut) {
        let b0 = (u8::from(self.fin) << 7) | ((self.rsv & 0x7) << 4) | self.opcode.as_u8();
        let mask_bit = if self.mask.is_some() { 0x80 } else { 0 };
        out.put_u8(b0);
        match self.payload_len {
            // The range pattern guarantees each narrowing below is lossless.
            n @ 0..=125 => out.put_u8(mask_bit | n as u8),
            n @ 126..=0xffff => {
                out.put_u8(mask_bit | 126);
                out.put_u16(n as u16);
            }
            n => {
                out.put_u8(mask_bit | 127);
                out.put_u64(n);
            }
        }
        if let Some(mask) = self.mask {
            out.put_slice(&mask);
        }
    }
}

/// Appends one whole frame (header and payload, masked when `mask` is given) to `out`.
///
/// This is the one place frames are written; the connection and the broadcast path of
/// the layers above both use it, so a payload shared by many recipients is framed once.
pub fn encode_frame<B: BufMut + AsMut<[u8]>>(
    out: &mut B,
    fin: bool,
    opcode: OpCode,
    payload: &[u8],
    mask: Option<[u8; 4]>,
) {
    let header = FrameHeader {
        fin,
        rsv: 0,
        opcode,
        mask,
        payload_len: payload.len() as u64,
    };
    header.encode(out);
    let start = out.as_mut().len();
    out.put_slice(payload);
    if let Some(mask) = mask {
        apply_mask(&mut out.as_mut()[start..], mask, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(header: FrameHeader) {
        let mut buf = Vec::new();
        header.encode(&mut buf);
        assert_eq!(buf.len(), header.encoded_len());
        // Every strict prefix is incomplete, never an error.
        for cut in 0..buf.len() {
            assert_eq!(FrameHeader::decode(&buf[..cut]), Ok(None), "prefix {cut}");
        }
        assert_eq!(FrameHeader::decode(&buf), Ok(Some((header, buf.len()))));
    }

    #[test]
    fn lengths_at_the_encoding_boundaries_roundtrip() {
        for len in [
            0,
            1,
            125,
            126,
            127,
            0xffff,
            0x1_0000,
            (1 << 32) + 5,
            (1 << 63) - 1,
        ] {
            for mask in [None, Some([9, 8, 7, 6])] {
                roundtrip(FrameHeader {
                    fin: true,
                    rsv: 0,
                    opcode: OpCode::Binary,
                    mask,
                    payload_len: len,
                });
            }
        }
    }

    #[test]
    fn encoding_is_minimal() {
        let mut buf = Vec::new();
        encode_frame(&mut buf, true, OpCode::Text, &[b'a'; 125], None);
        assert_eq!(&buf[..2], &[0x81, 125]);
        buf.clear();
        encode_frame(&mut buf, true, OpCode::Text, &[b'a'; 126], None);
        assert_eq!(&buf[..4], &[0x81, 126, 0, 126]);
        buf.clear();
        encode_frame(
            &mut buf,
            false,
            OpCode::Binary,
            &vec![0; 65536],
            Some([1, 2, 3, 4]),
        );
        assert_eq!(&buf[..14], &[0x02, 0xff, 0, 0, 0, 0, 0, 1, 0, 0, 1, 2, 3, 4]);
    }

    #[test]
    fn reserved_opcodes_are_refused() {
        for op in [3u8, 4, 5, 6, 7, 0xb, 0xc, 0xd, 0xe, 0xf] {
            assert_eq!(
                FrameHeader::decode(&[0x80 | op, 0]),
                Err(ProtocolError::ReservedOpcode { opcode: op })
            );
        }
    }

    #[test]
    fn control_frames_must_be_short_and_final() {
        assert_eq!(
            FrameHeader::decode(&[0x09, 0]),
            Err(ProtocolError::FragmentedControlFrame { opcode: OpCode::Ping })
        );
        assert_eq!(
            FrameHeader::decode(&[0x89, 126, 0, 126]),
            Err(ProtocolError::ControlFrameTooLarge { len: 126 })
        );
        assert!(FrameHeader::decode(&[0x89, 125]).unwrap().is_some());
    }

    #[test]
    fn non_minimal_and_top_bit_lengths_are_refused() {
        assert_eq!(
            FrameHeader::decode(&[0x82, 126, 0, 125]),
            Err(ProtocolError::NonMinimalLength { len: 125 })
        );
        assert_eq!(
            FrameHeader::decode(&[0x82, 127, 0, 0, 0, 0, 0, 0, 0xff, 0xff]),
            Err(ProtocolError::NonMinimalLength { len: 0xffff })
        );
        assert_eq!(
            FrameHeader::decode(&[0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 0]),
            Err(ProtocolError::LengthTopBitSet)
        );
    }

    #[test]
    fn masked_payload_unmasks_back() {
        let mut buf = Vec::new();
        encode_frame(
            &mut buf,
            true,
            OpCode::Text,
            b"Hello",
            Some([0x37, 0xfa, 0x21, 0x3d]),
        );
        // The example of RFC 6455 §5.7.
        assert_eq!(
            buf,
            [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]
        );
    }
}
