//! libjpeg-turbo's entropy decode, as the yardstick of the hub's JPEG walk.
//!
//! `examples/jpeg_walk_speed` times `udphub::jpegcheck::validate` and
//! [`read_coefficients`] on the same bytes in one run and prints the ratio, so the claim
//! "the walk costs half of a real decoder's Huffman pass" is measured, not remembered.
//! `jpeg_read_coefficients` decodes every block's coefficients (the same work the walk
//! does to find a corrupt frame) without dequantisation, IDCT or colour conversion.
//! The C side is csrc/libjpeg_entropy.c, linked against the system libjpeg.

use std::os::raw::{c_int, c_uchar, c_ulong};

extern "C" {
    fn udphub_libjpeg_read_coefficients(data: *const c_uchar, len: c_ulong) -> c_int;
}

/// Decodes every coefficient of `jpeg` with libjpeg; `Err` when libjpeg reports an error.
pub fn read_coefficients(jpeg: &[u8]) -> Result<(), String> {
    // SAFETY: the C function reads `len` bytes from `data` and keeps no pointer past its
    // return; errors come back through its own longjmp, never out of it.
    let rc = unsafe { udphub_libjpeg_read_coefficients(jpeg.as_ptr(), jpeg.len() as c_ulong) };
    if rc == 0 {
        Ok(())
    } else {
        Err("libjpeg could not decode the file".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::read_coefficients;

    #[test]
    fn decodes_a_real_jpeg_and_rejects_a_truncated_one() {
        let jpeg = udphub::media::testjpeg::noisy_pattern_jpeg(64, 48, 90, 2_000).unwrap();
        assert_eq!(read_coefficients(&jpeg), Ok(()));
        assert!(read_coefficients(&jpeg[..20]).is_err());
    }
}
