//! Seed 002's UDP image formats, byte for byte.
//!
//! Two senders exist in the seed:
//! 1. a whole JPEG in one datagram (`s.sendto(data, addr)`);
//! 2. a length header, `struct.pack('l', len(data))`, in a datagram of its own, then the JPEG
//!    in datagrams of [`CHUNK_SIZE`] bytes: `for i in range(len(data)//1024+1)`, so the last
//!    datagram is shorter, and *empty* when the length is a multiple of 1024.
//!
//! Python's `'l'` is a native C `long`: 8 bytes little-endian on 64-bit Linux, 4 bytes on
//! Windows. Both are accepted. The receiver answers each frame with [`IMG_ACK`].

use std::fmt;

/// The seed server's reply to every frame: `"get message!!!"`.
pub const IMG_ACK: &[u8] = b"get message!!!";

/// The data datagram size the seed client uses.
pub const CHUNK_SIZE: usize = 1024;

/// Width of the `struct.pack('l', n)` header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderWidth {
    /// 64-bit Linux/macOS: `'l'` is 8 bytes.
    Eight,
    /// Windows (and 32-bit systems): `'l'` is 4 bytes.
    Four,
}

impl HeaderWidth {
    pub fn byte_len(self) -> usize {
        match self {
            HeaderWidth::Eight => 8,
            HeaderWidth::Four => 4,
        }
    }

    /// The largest length a header of this width can carry (`'l'` is signed).
    pub fn max_len(self) -> i64 {
        match self {
            HeaderWidth::Eight => i64::MAX,
            HeaderWidth::Four => i32::MAX.into(),
        }
    }

    /// The header width a datagram of `len` bytes would have, if it is a header at all.
    pub fn of_len(len: usize) -> Option<HeaderWidth> {
        match len {
            8 => Some(HeaderWidth::Eight),
            4 => Some(HeaderWidth::Four),
            _ => None,
        }
    }
}

/// Why a datagram is not an acceptable length header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderError {
    /// Not 4 or 8 bytes long.
    WrongSize(usize),
    /// The length is 0 or negative.
    NotPositive(i64),
    /// The length is above the receiver's limit.
    TooLarge { claimed: i64, max: u64 },
    /// Sending: the length does not fit a header of this width (a 4-byte header carries
    /// at most `i32::MAX`).
    DoesNotFit { len: i64, width: HeaderWidth },
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderError::WrongSize(n) => write!(f, "a length header is 4 or 8 bytes, not {n}"),
            HeaderError::NotPositive(v) => write!(f, "frame length {v} is not positive"),
            HeaderError::TooLarge { claimed, max } => {
                write!(
                    f,
                    "frame length {claimed} is above the limit of {max} bytes"
                )
            }
            HeaderError::DoesNotFit { len, width } => write!(
                f,
                "frame length {len} does not fit a {}-byte length header (at most {})",
                width.byte_len(),
                width.max_len()
            ),
        }
    }
}

impl std::error::Error for HeaderError {}

/// Parse a length header datagram (4 or 8 bytes, little-endian signed) and check the
/// length is in `1..=max_frame_bytes`.
pub fn parse_length_header(datagram: &[u8], max_frame_bytes: u64) -> Result<u64, HeaderError> {
    let value = match HeaderWidth::of_len(datagram.len()) {
        Some(HeaderWidth::Eight) => i64::from_le_bytes(datagram.try_into().expect("8 bytes")),
        Some(HeaderWidth::Four) => {
            i64::from(i32::from_le_bytes(datagram.try_into().expect("4 bytes")))
        }
        None => return Err(HeaderError::WrongSize(datagram.len())),
    };
    if value <= 0 {
        return Err(HeaderError::NotPositive(value));
    }
    if value as u64 > max_frame_bytes {
        return Err(HeaderError::TooLarge {
            claimed: value,
            max: max_frame_bytes,
        });
    }
    Ok(value as u64)
}

/// `struct.pack('l', len)` for the given width: the one place that says which lengths a
/// header can carry. A length that does not fit (outside `i32` for a 4-byte header) is
/// [`HeaderError::DoesNotFit`]. Lengths that are not positive are emitted as they are (the
/// seed packs them without complaint; receivers refuse them, see [`parse_length_header`]).
pub fn emit_length_header(len: i64, width: HeaderWidth) -> Result<Vec<u8>, HeaderError> {
    Ok(match width {
        HeaderWidth::Eight => len.to_le_bytes().to_vec(),
        HeaderWidth::Four => i32::try_from(len)
            .map_err(|_| HeaderError::DoesNotFit { len, width })?
            .to_le_bytes()
            .to_vec(),
    })
}

/// The data datagrams exactly as the seed client slices them:
/// `range(len(data)//chunk+1)`, so there is always one more slice than full chunks, and that
/// last slice is empty when `data.len()` is a multiple of `chunk`.
pub fn seed_chunks(data: &[u8], chunk: usize) -> impl Iterator<Item = &[u8]> {
    assert!(chunk > 0, "chunk size must be positive");
    (0..data.len() / chunk + 1)
        .map(move |i| &data[(chunk * i).min(data.len())..(chunk * (i + 1)).min(data.len())])
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: u64 = 16 << 20;

    #[test]
    fn parses_the_8_byte_linux_header() {
        // struct.pack('l', 66000) on 64-bit Linux
        let b = [0xD0, 0x01, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00];
        assert_eq!(parse_length_header(&b, MAX), Ok(66000));
        assert_eq!(
            emit_length_header(66000, HeaderWidth::Eight),
            Ok(b.to_vec())
        );
    }

    #[test]
    fn parses_the_4_byte_windows_header() {
        // struct.pack('l', 66000) on Windows
        let b = [0xD0, 0x01, 0x01, 0x00];
        assert_eq!(parse_length_header(&b, MAX), Ok(66000));
        assert_eq!(emit_length_header(66000, HeaderWidth::Four), Ok(b.to_vec()));
    }

    #[test]
    fn rejects_zero_negative_huge_and_odd_sizes() {
        assert_eq!(
            parse_length_header(&[0; 8], MAX),
            Err(HeaderError::NotPositive(0))
        );
        // struct.pack('l', -5)
        let minus5 = [0xFB, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF];
        assert_eq!(
            parse_length_header(&minus5, MAX),
            Err(HeaderError::NotPositive(-5))
        );
        assert_eq!(
            parse_length_header(&[0xFB, 0xFF, 0xFF, 0xFF], MAX),
            Err(HeaderError::NotPositive(-5))
        );
        // struct.pack('l', 2**62)
        let huge = [0, 0, 0, 0, 0, 0, 0, 0x40];
        assert_eq!(
            parse_length_header(&huge, MAX),
            Err(HeaderError::TooLarge {
                claimed: 1 << 62,
                max: MAX
            })
        );
        assert_eq!(
            parse_length_header(&[1, 2, 3], MAX),
            Err(HeaderError::WrongSize(3))
        );
    }

    #[test]
    fn emits_up_to_the_width_limit_and_refuses_beyond() {
        // struct.pack('l', 2**31 - 1) on Windows: the largest a 4-byte header carries
        assert_eq!(
            emit_length_header(i32::MAX.into(), HeaderWidth::Four),
            Ok(vec![0xFF, 0xFF, 0xFF, 0x7F])
        );
        let over = i64::from(i32::MAX) + 1;
        assert_eq!(
            emit_length_header(over, HeaderWidth::Four),
            Err(HeaderError::DoesNotFit {
                len: over,
                width: HeaderWidth::Four
            })
        );
        let msg = emit_length_header(over, HeaderWidth::Four)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("4-byte length header"), "{msg}");
        assert!(msg.contains("2147483647"), "{msg}");
        // the same length in an 8-byte header: struct.pack('l', 2**31) on 64-bit Linux
        assert_eq!(
            emit_length_header(over, HeaderWidth::Eight),
            Ok(vec![0x00, 0x00, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00])
        );
        // struct.pack('l', -5): emitted as the seed packs it (receivers refuse it)
        assert_eq!(
            emit_length_header(-5, HeaderWidth::Eight),
            Ok(vec![0xFB, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF])
        );
    }

    #[test]
    fn a_jpeg_tail_is_never_a_valid_header() {
        // The last data datagram of a frame ends with EOI (FF D9); read as a little-endian
        // header its top byte is 0xD9, so it is negative and can never resync a stream.
        assert!(parse_length_header(&[1, 2, 3, 4, 5, 6, 0xFF, 0xD9], u64::MAX).is_err());
        assert!(parse_length_header(&[1, 2, 0xFF, 0xD9], u64::MAX).is_err());
    }

    #[test]
    fn chunks_match_the_seed_loop() {
        let data: Vec<u8> = (0..2500u32).map(|i| i as u8).collect();
        let sizes: Vec<usize> = seed_chunks(&data, 1024).map(<[u8]>::len).collect();
        assert_eq!(sizes, [1024, 1024, 452]);
        let joined: Vec<u8> = seed_chunks(&data, 1024).flatten().copied().collect();
        assert_eq!(joined, data);
        // a multiple of 1024 ends with an empty datagram, as in the seed
        let sizes: Vec<usize> = seed_chunks(&data[..2048], 1024).map(<[u8]>::len).collect();
        assert_eq!(sizes, [1024, 1024, 0]);
        let sizes: Vec<usize> = seed_chunks(&data[..10], 1024).map(<[u8]>::len).collect();
        assert_eq!(sizes, [10]);
    }

    #[test]
    fn ack_text_is_the_seeds() {
        assert_eq!(IMG_ACK, "get message!!!".as_bytes());
    }
}
