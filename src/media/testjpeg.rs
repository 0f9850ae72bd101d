//! Real JPEG frames for tests ([`jpeg_of_len`]: an exact byte length) and benchmarks
//! ([`noisy_pattern_jpeg`], [`noise_jpeg`]: camera-like and incompressible frames of about
//! a given size, the frames `examples/bench.rs`, `loss_sweep.rs` and `jpeg_walk_speed.rs`
//! share).
//!
//! The hub checks frames it reassembles from the seed's chunked format by walking their
//! Huffman-coded data ([`crate::jpegcheck::validate`]), because a frame with two chunks
//! swapped still has the right length, SOI and EOI. So tests that send seed frames must send
//! real JPEGs, and many of them need an exact size (a multiple of the 1024-byte chunk, one
//! byte over it, the largest datagram...). [`jpeg_of_len`] makes one: seeded noise (which
//! JPEG cannot compress, so the entropy-coded data fills most of the frame and a reordered
//! chunk lands in it), encoded by OpenCV at quality 90, then padded to the exact length with
//! comment (COM) segments right after SOI (at most 512 bytes), which every decoder skips.

use opencv::core::{Mat, Scalar, CV_8UC3};
use opencv::prelude::*;

use super::source::add_noise;
use super::{jpeg, FrameSource, MediaError, PatternSource, Result};

/// The shortest frame [`jpeg_of_len`] makes: a small colour JPEG with OpenCV's tables is
/// about 730 bytes.
pub const MIN_LEN: usize = 800;

/// Largest payload of one COM segment (its 2-byte length counts itself).
const COM_MAX_PAYLOAD: usize = 65_533;

/// The first COM segment: marker, length and the 8-byte stamp at least.
const STAMPED_COM: usize = 12;

/// The same frame with `seed` stamped into its first COM segment instead: different bytes
/// at no encoding cost, for tests that need many distinct frames of one size. `jpeg` must
/// come from [`jpeg_of_len`].
pub fn restamp(jpeg: &[u8], seed: u64) -> Vec<u8> {
    assert_eq!(jpeg[2..4], [0xFF, 0xFE], "not a jpeg_of_len frame");
    let mut out = jpeg.to_vec();
    out[6..14].copy_from_slice(&seed.to_le_bytes());
    out
}

/// A valid baseline JPEG of exactly `len` bytes (at least [`MIN_LEN`]), the same bytes for
/// the same `len` and `seed`, different bytes for different seeds. All but the headers and
/// at most 512 bytes of padding is entropy-coded noise.
pub fn jpeg_of_len(len: usize, seed: u64) -> Result<Vec<u8>> {
    if len < MIN_LEN {
        return Err(MediaError::InvalidInput(format!(
            "a test JPEG needs at least {MIN_LEN} bytes, {len} asked"
        )));
    }
    // The image: its first `k` 8x8 blocks (in raster order) seeded noise, the rest flat
    // grey, which costs a few bits a block. The JPEG's size grows with `k` about one noisy
    // block (~100 bytes) at a time, so a binary search on `k` lands within a block of `len`;
    // COM padding makes up the rest: at least one segment, with the seed stamped in its
    // first 8 bytes ([`restamp`]), so an encoding "fits" when it leaves 12 bytes or more.
    let fits = |n: usize| n + STAMPED_COM <= len;
    let smallest = jpeg::encode(&noise(8, 8, seed)?, 90)?;
    if !fits(smallest.len()) {
        return Err(MediaError::InvalidInput(format!(
            "a test JPEG of {len} bytes is shorter than the smallest one ({} bytes)",
            smallest.len()
        )));
    }
    let mut blocks = 64usize;
    loop {
        let (w, h) = shape(blocks);
        let full = noise(w, h, seed)?;
        let encode = |k: usize| jpeg::encode(&noisy_blocks(&full, k)?, 90);
        let all = encode(w * h / 64)?;
        if fits(all.len()) && len - all.len() > 512 {
            blocks *= 2; // even all noise is too short: a bigger image
            continue;
        }
        let (mut lo, mut hi) = (0, w * h / 64); // encode(lo) fits; encode(hi) does not, or is the best
        let mut best = encode(0)?;
        if !fits(best.len()) {
            return Err(MediaError::InvalidInput(format!(
                "no test JPEG of exactly {len} bytes ({} bytes with no noise at all)",
                best.len()
            )));
        }
        if fits(all.len()) {
            best = all;
            lo = hi;
        }
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            let encoded = encode(mid)?;
            if fits(encoded.len()) {
                if encoded.len() > best.len() {
                    best = encoded;
                }
                lo = mid;
            } else {
                hi = mid;
            }
        }
        return pad(&best, len, seed).ok_or_else(|| {
            MediaError::InvalidInput(format!("no test JPEG of exactly {len} bytes"))
        });
    }
}

/// `full` with every 8x8 block from the `k`-th on (raster order) made flat grey.
fn noisy_blocks(full: &Mat, k: usize) -> Result<Mat> {
    let mut img = full.try_clone()?;
    let (w, h) = (img.cols() as usize, img.rows() as usize);
    let row_bytes = w * 3;
    let data = img.data_bytes_mut()?;
    for b in k..(w / 8) * (h / 8) {
        let (bx, by) = (b % (w / 8), b / (w / 8));
        for y in by * 8..by * 8 + 8 {
            let at = y * row_bytes + bx * 24;
            data[at..at + 24].fill(128);
        }
    }
    Ok(img)
}

/// A width and height (multiples of 8, wider than high) of at least `blocks` 8x8 blocks.
fn shape(blocks: usize) -> (usize, usize) {
    let blocks = blocks.max(1);
    let rows = ((blocks as f64 / 2.0).sqrt() as usize).max(1);
    let cols = blocks.div_ceil(rows);
    (cols * 8, rows * 8)
}

/// A `w` x `h` BGR image of noise from `seed` (splitmix64).
fn noise(w: usize, h: usize, seed: u64) -> Result<Mat> {
    let mut img = Mat::new_rows_cols_with_default(h as i32, w as i32, CV_8UC3, Scalar::all(0.0))?;
    let mut state = seed ^ 0x9E37_79B9_7F4A_7C15;
    for chunk in img.data_bytes_mut()?.chunks_mut(8) {
        let word = splitmix64(&mut state).to_le_bytes();
        chunk.copy_from_slice(&word[..chunk.len()]);
    }
    Ok(img)
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `jpeg` with COM segments after SOI adding up to exactly `len` bytes, the first one's
/// payload starting with `seed`; `None` when that leaves less than [`STAMPED_COM`] bytes.
fn pad(jpeg: &[u8], len: usize, seed: u64) -> Option<Vec<u8>> {
    let mut gap = len.checked_sub(jpeg.len())?;
    if gap < STAMPED_COM {
        return None;
    }
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(&jpeg[..2]);
    let mut state = seed;
    let mut first = true;
    while gap > 0 {
        // Leave no remainder of 1..=3 bytes for the next segment.
        let mut payload = (gap - 4).min(COM_MAX_PAYLOAD);
        if (1..4).contains(&(gap - 4 - payload)) {
            payload -= 4;
        }
        out.extend_from_slice(&[0xFF, 0xFE]);
        out.extend_from_slice(&((payload + 2) as u16).to_be_bytes());
        let stamp = if first { 8 } else { 0 };
        out.extend_from_slice(&seed.to_le_bytes()[..stamp]);
        out.extend((stamp..payload).map(|_| splitmix64(&mut state) as u8));
        first = false;
        gap -= payload + 4;
    }
    out.extend_from_slice(&jpeg[2..]);
    debug_assert_eq!(out.len(), len);
    Some(out)
}

/// The test pattern at `w`x`h` with uniform noise added (as a camera sensor would), the
/// noise amplitude bisected until the JPEG at `quality` is within 3% of `target` bytes: the
/// plain pattern compresses to a third of a camera frame's size (~22 KB at 640x480 q90),
/// which would understate the datagrams per frame. The pattern draws the clock in, so the
/// bytes change from run to run.
pub fn noisy_pattern_jpeg(w: i32, h: i32, quality: i32, target: usize) -> Result<Vec<u8>> {
    let frame = PatternSource::new(w, h)
        .next_frame()?
        .ok_or_else(|| MediaError::InvalidInput("the test pattern ended".into()))?;
    let encode = |amplitude: f64| -> Result<Vec<u8>> {
        opencv::core::set_rng_seed(7)?;
        jpeg::encode(&add_noise(&frame, amplitude)?, quality)
    };
    // The size grows with the noise amplitude: bisect it.
    let (mut lo, mut hi, mut amplitude) = (0.0, 255.0, 32.0);
    let mut bytes = encode(amplitude)?;
    for _ in 0..14 {
        let off = bytes.len() as f64 / target as f64;
        if (off - 1.0).abs() <= 0.03 {
            break;
        }
        if off > 1.0 {
            hi = amplitude;
        } else {
            lo = amplitude;
        }
        amplitude = (lo + hi) / 2.0;
        bytes = encode(amplitude)?;
    }
    Ok(bytes)
}

/// A 4:3 JPEG of uniform noise at quality 100 (which JPEG cannot compress), scaled until it
/// is within 5% of `target` bytes; with its width and height.
pub fn noise_jpeg(target: usize) -> Result<(Vec<u8>, i32, i32)> {
    let encode = |w: i32, h: i32| -> Result<Vec<u8>> {
        let mut mat = Mat::new_rows_cols_with_default(h, w, CV_8UC3, Scalar::all(0.0))?;
        opencv::core::randu(&mut mat, &Scalar::all(0.0), &Scalar::all(256.0))?;
        jpeg::encode(&mat, 100)
    };
    // Noise at quality 100 takes about 2.5 bytes per pixel; refine from there.
    let mut w = ((target as f64 / 2.5 * 4.0 / 3.0).sqrt() as i32).max(16);
    let mut bytes = encode(w, w * 3 / 4)?;
    for _ in 0..4 {
        let off = bytes.len() as f64 / target as f64;
        if (off - 1.0).abs() <= 0.05 {
            break;
        }
        w = ((w as f64 / off.sqrt()) as i32).max(16);
        bytes = encode(w, w * 3 / 4)?;
    }
    Ok((bytes, w, w * 3 / 4))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jpegcheck::validate;

    #[test]
    fn exact_lengths_valid_and_decodable() {
        for len in [
            MIN_LEN,
            1025,
            2048,
            3 * 1024 + 1,
            10_000,
            65_507,
            66 * 1024 + 123,
            131_075,
            300_000,
        ] {
            let j = jpeg_of_len(len, 7).unwrap();
            assert_eq!(j.len(), len);
            validate(&j).unwrap_or_else(|e| panic!("{len}: {e}"));
            jpeg::decode(&j).unwrap();
        }
    }

    #[test]
    fn mostly_entropy_coded_data() {
        for len in [5000, 20 * 1024 + 500, 66 * 1024, 300_000] {
            let j = jpeg_of_len(len, 1).unwrap();
            let padding: usize = com_segments(&j).iter().sum();
            assert!(padding <= 512, "{len}: {padding} bytes of padding");
        }
    }

    #[test]
    fn seeded() {
        assert_eq!(jpeg_of_len(5000, 3).unwrap(), jpeg_of_len(5000, 3).unwrap());
        assert_ne!(jpeg_of_len(5000, 3).unwrap(), jpeg_of_len(5000, 4).unwrap());
    }

    #[test]
    fn restamped_frames_differ_and_stay_valid() {
        let a = jpeg_of_len(3000, 0).unwrap();
        let b = restamp(&a, 1);
        assert_eq!(b.len(), a.len());
        assert_ne!(a, b);
        validate(&b).unwrap();
        assert_eq!(restamp(&b, 0), a, "the seed is the stamp");
    }

    #[test]
    fn too_short_is_an_error() {
        assert!(jpeg_of_len(MIN_LEN - 1, 0).is_err());
    }

    /// Total bytes of the COM segments right after SOI.
    fn com_segments(j: &[u8]) -> Vec<usize> {
        let mut pos = 2;
        let mut out = Vec::new();
        while j[pos..pos + 2] == [0xFF, 0xFE] {
            let n = usize::from(u16::from_be_bytes([j[pos + 2], j[pos + 3]])) + 2;
            out.push(n);
            pos += n;
        }
        out
    }
}
