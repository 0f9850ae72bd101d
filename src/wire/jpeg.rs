//! The structural check a frame must pass before the hub acks or delivers it.
//!
//! A complete JPEG starts with the SOI marker `FF D8` and ends with the EOI marker `FF D9`.
//! This catches truncated, misaligned and foreign data cheaply, without decoding; decoding
//! (which costs milliseconds) is left to the consumers that need pixels.

/// Start-of-image marker.
pub const SOI: [u8; 2] = [0xFF, 0xD8];
/// End-of-image marker.
pub const EOI: [u8; 2] = [0xFF, 0xD9];

/// True when `bytes` starts with SOI and ends with EOI (and is long enough to hold both).
pub fn is_complete_jpeg(bytes: &[u8]) -> bool {
    bytes.len() >= 4 && bytes.starts_with(&SOI) && bytes.ends_with(&EOI)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_soi_to_eoi() {
        assert!(is_complete_jpeg(&[0xFF, 0xD8, 0xFF, 0xD9]));
        assert!(is_complete_jpeg(&[0xFF, 0xD8, 0x00, 0x11, 0xFF, 0xD9]));
    }

    #[test]
    fn rejects_truncated_or_foreign() {
        assert!(!is_complete_jpeg(&[]));
        assert!(!is_complete_jpeg(&[0xFF, 0xD8, 0xD9]));
        assert!(!is_complete_jpeg(&[0xFF, 0xD8, 0x00, 0x11]));
        assert!(!is_complete_jpeg(&[0x00, 0xD8, 0xFF, 0xD9]));
        assert!(!is_complete_jpeg(b"[0, 0, 0, 1]"));
    }
}
