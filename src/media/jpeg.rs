//! JPEG encoding and decoding of frames.
//!
//! Frames travel on the wire as JPEG, so this is the one place that turns an OpenCV `Mat`
//! into JPEG bytes (camera client) and JPEG bytes back into a `Mat` (hub display, checks).
//! Bytes that are not a JPEG are an error, never a panic or an empty image.

use opencv::core::{Mat, Vector};
use opencv::imgcodecs;
use opencv::prelude::*;

use super::{MediaError, Result};

/// Encodes a BGR (or grayscale) frame as JPEG with the given quality (0..=100).
pub fn encode(frame: &Mat, quality: i32) -> Result<Vec<u8>> {
    if !(0..=100).contains(&quality) {
        return Err(MediaError::InvalidInput(format!(
            "JPEG quality must be within 0..=100, got {quality}"
        )));
    }
    if frame.empty() {
        return Err(MediaError::InvalidInput(
            "cannot encode an empty frame as JPEG".into(),
        ));
    }
    let params = Vector::<i32>::from_slice(&[imgcodecs::IMWRITE_JPEG_QUALITY, quality]);
    let mut buf = Vector::<u8>::new();
    if !imgcodecs::imencode(".jpg", frame, &mut buf, &params)? {
        return Err(MediaError::InvalidInput(format!(
            "OpenCV could not encode a {}x{} frame of type {} as JPEG",
            frame.cols(),
            frame.rows(),
            frame.typ()
        )));
    }
    Ok(buf.to_vec())
}

/// Decodes JPEG bytes into a 3-channel BGR frame.
///
/// Returns [`MediaError::NotJpeg`] ("not a decodable JPEG") for anything OpenCV cannot decode,
/// including an empty buffer.
pub fn decode(jpeg: &[u8]) -> Result<Mat> {
    if jpeg.is_empty() {
        return Err(MediaError::NotJpeg);
    }
    // imdecode returns an empty Mat (not an error) for undecodable input; some corrupt
    // inputs raise an OpenCV exception instead. Both mean the same to callers.
    let mat =
        imgcodecs::imdecode(&jpeg, imgcodecs::IMREAD_COLOR).map_err(|_| MediaError::NotJpeg)?;
    if mat.empty() {
        return Err(MediaError::NotJpeg);
    }
    Ok(mat)
}

/// Returns the `(width, height)` of the image the JPEG bytes decode to.
pub fn decoded_size(jpeg: &[u8]) -> Result<(i32, i32)> {
    let mat = decode(jpeg)?;
    Ok((mat.cols(), mat.rows()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::{FrameSource, PatternSource};

    fn pattern_frame(w: i32, h: i32) -> Mat {
        PatternSource::new(w, h).next_frame().unwrap().unwrap()
    }

    #[test]
    fn encode_then_decode_keeps_size() {
        let frame = pattern_frame(320, 240);
        let jpeg = encode(&frame, 80).unwrap();
        assert_eq!(&jpeg[..2], &[0xFF, 0xD8], "JPEG starts with SOI");
        let back = decode(&jpeg).unwrap();
        assert_eq!((back.cols(), back.rows()), (320, 240));
        assert_eq!(back.channels(), 3);
    }

    #[test]
    fn decoded_size_reports_width_then_height() {
        let jpeg = encode(&pattern_frame(160, 90), 70).unwrap();
        assert_eq!(decoded_size(&jpeg).unwrap(), (160, 90));
    }

    #[test]
    fn lower_quality_gives_smaller_output() {
        let frame = pattern_frame(320, 240);
        let high = encode(&frame, 95).unwrap();
        let low = encode(&frame, 10).unwrap();
        assert!(low.len() < high.len(), "{} !< {}", low.len(), high.len());
    }

    #[test]
    fn garbage_is_not_a_jpeg() {
        for bytes in [
            &b""[..],
            b"hello, world",
            &[0xFF, 0xD8, 0xFF, 0xE0, 0, 0][..],
        ] {
            let err = decode(bytes).unwrap_err();
            assert!(matches!(err, MediaError::NotJpeg), "{err:?}");
            assert_eq!(err.to_string(), "not a decodable JPEG");
            assert!(decoded_size(bytes).is_err());
        }
    }

    #[test]
    fn bad_encode_inputs_are_errors() {
        let frame = pattern_frame(32, 32);
        assert!(encode(&frame, 101).is_err());
        assert!(encode(&frame, -1).is_err());
        assert!(encode(&Mat::default(), 80).is_err());
    }
}
