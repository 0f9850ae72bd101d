//! Seed 000's TCP stream: for every frame, a 16-byte ASCII decimal length padded with
//! spaces (`str(len(data)).ljust(16)`), then exactly that many JPEG bytes; repeated until
//! the peer closes. The seed server sends nothing back.

use std::fmt;

/// Size of the length header.
pub const HEADER_LEN: usize = 16;

/// Why 16 bytes are not an acceptable length header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderError {
    /// Not an ASCII decimal number padded with spaces; holds a printable preview.
    NotANumber(String),
    /// The length is zero.
    Zero,
    /// The length is above the receiver's limit.
    TooLarge { claimed: u64, max: u64 },
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderError::NotANumber(p) => write!(f, "length header {p:?} is not a number"),
            HeaderError::Zero => write!(f, "frame length 0"),
            HeaderError::TooLarge { claimed, max } => {
                write!(
                    f,
                    "frame length {claimed} is above the limit of {max} bytes"
                )
            }
        }
    }
}

impl std::error::Error for HeaderError {}

/// Parse the 16-byte header. Like Python's `int()`, surrounding spaces are allowed.
pub fn parse_header(header: &[u8; HEADER_LEN], max_frame_bytes: u64) -> Result<u64, HeaderError> {
    let not_a_number = || HeaderError::NotANumber(header.escape_ascii().to_string());
    let text = std::str::from_utf8(header).map_err(|_| not_a_number())?;
    let digits = text.trim_matches(' ');
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(not_a_number());
    }
    let claimed: u64 = digits.parse().map_err(|_| not_a_number())?;
    if claimed == 0 {
        return Err(HeaderError::Zero);
    }
    if claimed > max_frame_bytes {
        return Err(HeaderError::TooLarge {
            claimed,
            max: max_frame_bytes,
        });
    }
    Ok(claimed)
}

/// `str(len).ljust(16).encode()`. Panics for lengths of more than 16 digits (10^16 bytes).
pub fn emit_header(len: usize) -> [u8; HEADER_LEN] {
    // the digits, left-aligned in spaces (`f"{len:<16}"`), without an allocation
    let mut header = [b' '; HEADER_LEN];
    std::io::Write::write_fmt(&mut &mut header[..], format_args!("{len}"))
        .expect("a frame length has at most 16 digits");
    header
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: u64 = 16 << 20;

    #[test]
    fn parses_the_seed_header() {
        // str(66000).ljust(16).encode('utf-8')
        let h = b"66000           ";
        assert_eq!(parse_header(h, MAX), Ok(66000));
        assert_eq!(&emit_header(66000), h);
        assert_eq!(&emit_header(7), b"7               ");
    }

    #[test]
    fn accepts_leading_spaces_like_python_int() {
        assert_eq!(parse_header(b"           66000", MAX), Ok(66000));
    }

    #[test]
    fn rejects_bad_headers() {
        assert!(matches!(
            parse_header(b"hello world!!!!!", MAX),
            Err(HeaderError::NotANumber(_))
        ));
        assert!(matches!(
            parse_header(b"                ", MAX),
            Err(HeaderError::NotANumber(_))
        ));
        assert!(matches!(
            parse_header(b"12 34           ", MAX),
            Err(HeaderError::NotANumber(_))
        ));
        assert!(matches!(
            parse_header(b"-5              ", MAX),
            Err(HeaderError::NotANumber(_))
        ));
        assert!(matches!(
            parse_header(&[0xFF; 16], MAX),
            Err(HeaderError::NotANumber(_))
        ));
        assert_eq!(
            parse_header(b"0               ", MAX),
            Err(HeaderError::Zero)
        );
        assert_eq!(
            parse_header(b"9999999999999999", MAX),
            Err(HeaderError::TooLarge {
                claimed: 9999999999999999,
                max: MAX
            })
        );
    }
}
