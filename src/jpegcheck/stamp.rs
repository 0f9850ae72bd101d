//! The capture-time stamp of a seed frame: a JPEG comment (COM, `FF FE`) segment whose
//! payload is `udphub-capture-us=<decimal µs since the Unix epoch>`, the first COM segment
//! of the file (img-client puts it right after SOI). The seed formats have no field for a
//! capture time, and a COM segment is ignored by every decoder, so a stamped frame is still
//! the same picture to everyone else; the hub reads the stamp to log and report when the
//! frame was captured.
//!
//! Reading it looks at the few marker segments before the first scan (lengths only, a
//! handful of bytes), never at the coded data: it costs nothing measurable per frame.

/// What a stamp's payload starts with; the decimal µs follow.
pub const STAMP_PREFIX: &str = "udphub-capture-us=";

/// Segments looked at, at most, before giving up (a stamp is the first or an early one).
const MAX_SEGMENTS: usize = 16;

/// The capture time in the first COM segment of `jpeg`, if that segment is a stamp.
pub fn capture_stamp(jpeg: &[u8]) -> Option<u64> {
    if !jpeg.starts_with(&[0xFF, 0xD8]) {
        return None;
    }
    let mut at = 2;
    for _ in 0..MAX_SEGMENTS {
        // fill bytes (0xFF) may precede a marker
        while jpeg.get(at + 1) == Some(&0xFF) && jpeg[at] == 0xFF {
            at += 1;
        }
        if *jpeg.get(at)? != 0xFF {
            return None;
        }
        let marker = *jpeg.get(at + 1)?;
        if matches!(marker, 0xDA | 0xD9) {
            return None; // the scan (or the end) before any comment
        }
        let len = u16::from_be_bytes([*jpeg.get(at + 2)?, *jpeg.get(at + 3)?]) as usize;
        if len < 2 {
            return None;
        }
        if marker == 0xFE {
            let payload = jpeg.get(at + 4..at + 2 + len)?;
            let digits = payload.strip_prefix(STAMP_PREFIX.as_bytes())?;
            if digits.is_empty() || digits.len() > 20 || !digits.iter().all(u8::is_ascii_digit) {
                return None;
            }
            return std::str::from_utf8(digits).ok()?.parse().ok();
        }
        at += 2 + len;
    }
    None
}

/// `jpeg` with a stamp of `capture_us` inserted right after SOI (a copy; `jpeg` must start
/// with SOI, else it is returned as it is).
pub fn with_capture_stamp(jpeg: &[u8], capture_us: u64) -> Vec<u8> {
    if !jpeg.starts_with(&[0xFF, 0xD8]) {
        return jpeg.to_vec();
    }
    let payload = format!("{STAMP_PREFIX}{capture_us}");
    let len = (payload.len() + 2) as u16;
    let mut out = Vec::with_capacity(jpeg.len() + 4 + payload.len());
    out.extend_from_slice(&[0xFF, 0xD8, 0xFF, 0xFE]);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(payload.as_bytes());
    out.extend_from_slice(&jpeg[2..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jpegcheck::{check_structure, filler_jpeg};

    #[test]
    fn a_stamp_is_read_back_and_the_frame_stays_a_jpeg() {
        let jpeg = filler_jpeg(2000, 3);
        assert_eq!(capture_stamp(&jpeg), None);
        let stamped = with_capture_stamp(&jpeg, 1_764_787_200_123_456);
        // FF D8, FF FE, length 2 + 34, "udphub-capture-us=1764787200123456", the rest
        assert_eq!(stamped[..6], [0xFF, 0xD8, 0xFF, 0xFE, 0, 36]);
        assert_eq!(&stamped[6..24], STAMP_PREFIX.as_bytes());
        assert_eq!(&stamped[24..40], b"1764787200123456");
        assert_eq!(stamped[40..], jpeg[2..]);
        assert_eq!(capture_stamp(&stamped), Some(1_764_787_200_123_456));
        check_structure(&stamped).expect("still a JPEG");
    }

    #[test]
    fn a_stamp_after_other_segments_counts_and_other_comments_do_not() {
        let jpeg = filler_jpeg(2000, 3);
        // APP0-like segment first, then the stamp
        let mut b = vec![0xFF, 0xD8, 0xFF, 0xE0, 0, 4, 1, 2];
        b.extend_from_slice(&with_capture_stamp(&jpeg, 42)[2..]);
        assert_eq!(capture_stamp(&b), Some(42));
        // a first comment that is not a stamp: no stamp
        let mut c = vec![0xFF, 0xD8, 0xFF, 0xFE, 0, 7, b'h', b'e', b'l', b'l', b'o'];
        c.extend_from_slice(&with_capture_stamp(&jpeg, 42)[2..]);
        assert_eq!(capture_stamp(&c), None);
        // not digits, cut short, not a JPEG
        let mut d = with_capture_stamp(&jpeg, 42);
        d[24] = b'x';
        assert_eq!(capture_stamp(&d), None);
        assert_eq!(capture_stamp(&with_capture_stamp(&jpeg, 42)[..20]), None);
        assert_eq!(capture_stamp(b"hello"), None);
    }
}
