//! Unit tests of the JPEG check: OpenCV frames and synthetic layouts accepted, and every
//! kind of corruption the seed chunked format can suffer (datagrams swapped, duplicated,
//! lost; truncation; flipped bytes; bad headers) rejected. An `#[ignore]`d measurement
//! prints what fraction of corruptions is caught; `examples/jpeg_walk_speed.rs` is the
//! timing tool.

use super::markers::{
    self, walk_segments, Depth, DHT, PREFIX, RST0, RST7, SOF0, SOF2, SOF3, SOF9, SOS,
};
use super::test_encoder::Synth;
use super::*;
use crate::media::jpeg::{decode, encode};
use crate::media::{FrameSource, Mat, PatternSource};
use opencv::core::Vector;
use opencv::imgcodecs;
use opencv::imgproc;
use opencv::prelude::*;

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

// ---- helpers ----

/// Corrupted copies of a frame, each with a name saying what was done.
type Variants = Vec<(String, Vec<u8>)>;
type MakeVariants = fn(&[u8]) -> Variants;

fn pattern(w: i32, h: i32) -> Mat {
    PatternSource::new(w, h).next_frame().unwrap().unwrap()
}

/// OpenCV's JPEG of `frame` with extra imwrite parameters (pairs).
fn encode_with(frame: &Mat, quality: i32, extra: &[i32]) -> Vec<u8> {
    let mut params = vec![imgcodecs::IMWRITE_JPEG_QUALITY, quality];
    params.extend_from_slice(extra);
    let mut buf = Vector::<u8>::new();
    assert!(imgcodecs::imencode(".jpg", frame, &mut buf, &Vector::from_slice(&params)).unwrap());
    buf.to_vec()
}

fn frame_640x480_q90() -> Vec<u8> {
    encode(&pattern(640, 480), 90).unwrap()
}

/// Offset of the first byte of entropy-coded data (after the first SOS segment).
fn scan_start(jpeg: &[u8]) -> usize {
    let mut pos = 2;
    loop {
        assert_eq!(jpeg[pos], 0xFF);
        let len = usize::from(u16::from_be_bytes([jpeg[pos + 2], jpeg[pos + 3]]));
        let next = pos + 2 + len;
        if jpeg[pos + 1] == SOS {
            return next;
        }
        pos = next;
    }
}

/// Offset of the first marker segment with code `marker`.
fn segment(jpeg: &[u8], marker: u8) -> usize {
    let mut pos = 2;
    while jpeg[pos + 1] != marker {
        pos += 2 + usize::from(u16::from_be_bytes([jpeg[pos + 2], jpeg[pos + 3]]));
    }
    pos
}

/// Indexes of the 1024-byte datagrams (as the seed sender cuts them) that lie wholly
/// inside the entropy-coded data.
fn middle_chunks(jpeg: &[u8]) -> std::ops::Range<usize> {
    let first = scan_start(jpeg).div_ceil(1024);
    let end = (jpeg.len() - 2) / 1024; // chunk `end` holds EOI
    first..end
}

fn chunk(jpeg: &[u8], i: usize) -> &[u8] {
    &jpeg[i * 1024..(i + 1) * 1024]
}

fn swapped(jpeg: &[u8], i: usize, j: usize) -> Vec<u8> {
    let mut out = jpeg.to_vec();
    out[i * 1024..(i + 1) * 1024].copy_from_slice(chunk(jpeg, j));
    out[j * 1024..(j + 1) * 1024].copy_from_slice(chunk(jpeg, i));
    out
}

/// Chunk `i` lost and chunk `j` received twice (j != i): same length as the original.
fn lost_and_duplicated(jpeg: &[u8], i: usize, j: usize) -> Vec<u8> {
    let n = jpeg.len().div_ceil(1024);
    let mut out = Vec::with_capacity(jpeg.len());
    for k in 0..n {
        let c = &jpeg[k * 1024..((k + 1) * 1024).min(jpeg.len())];
        if k != i {
            out.extend_from_slice(c);
        }
        if k == j {
            out.extend_from_slice(c);
        }
    }
    out
}

/// What `walk_segments` made of a set of corrupted variants of a frame.
#[derive(Debug, Default)]
struct Caught {
    /// Variants whose bytes differ from the frame's.
    tried: usize,
    rejected: usize,
    /// Accepted, but OpenCV decodes them to exactly the frame's pixels: nothing was
    /// corrupted in effect (e.g. a run of identical MCUs in a flat area moved).
    harmless: usize,
    /// Accepted and decoding to other pixels: corruption that got through.
    missed: Vec<String>,
}

fn same_pixels(a: &[u8], b: &[u8]) -> bool {
    match (decode(a), decode(b)) {
        (Ok(a), Ok(b)) => a.data_bytes().unwrap() == b.data_bytes().unwrap(),
        _ => false,
    }
}

fn caught(jpeg: &[u8], variants: Variants, range_checks: bool) -> Caught {
    let mut c = Caught::default();
    for (name, v) in variants {
        if v == jpeg {
            continue;
        }
        c.tried += 1;
        if walk_segments(&v, Depth::Entropy { range_checks }).is_err() {
            c.rejected += 1;
        } else if same_pixels(jpeg, &v) {
            c.harmless += 1;
        } else {
            c.missed.push(name);
        }
    }
    c
}

fn adjacent_swaps(jpeg: &[u8]) -> Variants {
    let r = middle_chunks(jpeg);
    (r.start..r.end - 1)
        .map(|i| (format!("swap {i}<->{}", i + 1), swapped(jpeg, i, i + 1)))
        .collect()
}

fn duplicated_over_next(jpeg: &[u8]) -> Variants {
    let r = middle_chunks(jpeg);
    (r.start..r.end - 1)
        .map(|i| {
            let mut v = jpeg.to_vec();
            v[(i + 1) * 1024..(i + 2) * 1024].copy_from_slice(chunk(jpeg, i));
            (format!("dup {i} over {}", i + 1), v)
        })
        .collect()
}

fn lost_and_duplicated_all(jpeg: &[u8]) -> Variants {
    let r = middle_chunks(jpeg);
    let mut out = Vec::new();
    for i in r.clone() {
        for j in [i.wrapping_sub(3), i.wrapping_sub(1), i + 1, i + 4] {
            if r.contains(&j) {
                out.push((format!("lose {i} dup {j}"), lost_and_duplicated(jpeg, i, j)));
            }
        }
    }
    out
}

/// Each sampled byte of the entropy-coded data XORed with `mask(i)`.
fn byte_flips(jpeg: &[u8], samples: usize, mask: impl Fn(usize) -> u8) -> Variants {
    let (start, end) = (scan_start(jpeg), jpeg.len() - 2);
    let step = ((end - start) / samples).max(1);
    (start..end)
        .step_by(step)
        .enumerate()
        .map(|(n, i)| {
            let mut v = jpeg.to_vec();
            v[i] ^= mask(n);
            (format!("flip byte {i} ^ {:#04x}", mask(n)), v)
        })
        .collect()
}

fn expect_ok(jpeg: &[u8], w: u16, h: u16, components: u8) -> JpegInfo {
    let info = validate(jpeg).unwrap_or_else(|e| panic!("{w}x{h}: {e}"));
    assert_eq!(
        (info.width, info.height, info.components),
        (w, h, components)
    );
    info
}

// ---- valid frames ----

#[test]
fn accepts_opencv_frames() {
    for (w, h, q) in [
        (640, 480, 90),
        (320, 240, 50),
        (64, 48, 100),
        (33, 17, 75),
        (1, 1, 90),
    ] {
        let jpeg = encode(&pattern(w, h), q).unwrap();
        let info = expect_ok(&jpeg, w as u16, h as u16, 3);
        assert_eq!(info.restart_interval, 0);
    }
    for q in [0, 1, 10, 30, 60, 80, 95, 100] {
        expect_ok(&encode(&pattern(160, 120), q).unwrap(), 160, 120, 3);
    }
}

#[test]
fn accepts_a_sequence_of_changing_frames() {
    let mut source = PatternSource::new(320, 240);
    for _ in 0..20 {
        let frame = source.next_frame().unwrap().unwrap();
        expect_ok(&encode(&frame, 85).unwrap(), 320, 240, 3);
    }
}

#[test]
fn accepts_grayscale() {
    for (w, h) in [(640, 480), (37, 21)] {
        let mut gray = Mat::default();
        imgproc::cvt_color_def(&pattern(w, h), &mut gray, imgproc::COLOR_BGR2GRAY).unwrap();
        assert_eq!(gray.channels(), 1);
        let jpeg = encode(&gray, 90).unwrap();
        expect_ok(&jpeg, w as u16, h as u16, 1);
    }
}

#[test]
fn accepts_restart_intervals() {
    let frame = pattern(640, 480);
    for interval in [1, 3, 40, 1200, 5000] {
        let jpeg = encode_with(
            &frame,
            90,
            &[imgcodecs::IMWRITE_JPEG_RST_INTERVAL, interval],
        );
        let info = expect_ok(&jpeg, 640, 480, 3);
        assert_eq!(i32::from(info.restart_interval), interval);
    }
    let mut gray = Mat::default();
    imgproc::cvt_color_def(&frame, &mut gray, imgproc::COLOR_BGR2GRAY).unwrap();
    let jpeg = encode_with(&gray, 70, &[imgcodecs::IMWRITE_JPEG_RST_INTERVAL, 7]);
    assert_eq!(expect_ok(&jpeg, 640, 480, 1).restart_interval, 7);
}

#[test]
fn accepts_optimized_huffman_tables() {
    let jpeg = encode_with(
        &pattern(320, 240),
        90,
        &[imgcodecs::IMWRITE_JPEG_OPTIMIZE, 1],
    );
    expect_ok(&jpeg, 320, 240, 3);
}

// ---- synthetic layouts OpenCV 4.6 cannot write (no IMWRITE_JPEG_SAMPLING_FACTOR) ----

#[test]
fn accepts_synthetic_sampling_layouts() {
    let layouts: [&[(u8, u8)]; 7] = [
        &[(1, 1), (1, 1), (1, 1)], // 4:4:4
        &[(2, 1), (1, 1), (1, 1)], // 4:2:2
        &[(1, 2), (1, 1), (1, 1)], // 4:4:0
        &[(2, 2), (1, 1), (1, 1)], // 4:2:0
        &[(4, 1), (1, 1), (1, 1)], // 4:1:1
        &[(2, 2)],                 // grayscale with (useless) 2x2 sampling
        &[(1, 1), (1, 1), (1, 1), (1, 1)],
    ];
    for sampling in layouts {
        for (width, height) in [(64, 48), (101, 75), (8, 8), (17, 9)] {
            for restart_interval in [0, 1, 5] {
                for interleaved in [true, false] {
                    let synth = Synth {
                        width,
                        height,
                        sampling,
                        restart_interval,
                        interleaved,
                    };
                    let jpeg = synth.encode();
                    let info = validate(&jpeg).unwrap_or_else(|e| {
                        panic!("{sampling:?} {width}x{height} ri {restart_interval} interleaved {interleaved}: {e}")
                    });
                    assert_eq!(info.width, width);
                    assert_eq!(info.height, height);
                    assert_eq!(usize::from(info.components), sampling.len());
                    assert_eq!(info.restart_interval, restart_interval);
                    if sampling.len() != 4 {
                        synth.check_decoded(&jpeg);
                    }
                }
            }
        }
    }
}

#[test]
fn rejects_a_wrong_sampling_declaration() {
    // Data laid out for 4:4:4 but declared 4:2:0 (and the reverse): the MCU count and
    // block order no longer match the data.
    let p444: &[(u8, u8)] = &[(1, 1), (1, 1), (1, 1)];
    let p420: &[(u8, u8)] = &[(2, 2), (1, 1), (1, 1)];
    for (coded, declared) in [(p444, p420), (p420, p444)] {
        let mut jpeg = Synth {
            width: 101,
            height: 75,
            sampling: coded,
            restart_interval: 0,
            interleaved: true,
        }
        .encode();
        let sof = segment(&jpeg, SOF0);
        jpeg[sof + 2 + 2 + 6 + 1] = (declared[0].0 << 4) | declared[0].1;
        assert!(validate(&jpeg).is_err());
    }
}

#[test]
fn accepts_a_separate_scan_per_component_and_rejects_a_missing_one() {
    let synth = Synth {
        width: 40,
        height: 24,
        sampling: &[(1, 1), (1, 1), (1, 1)],
        restart_interval: 0,
        interleaved: false,
    };
    let jpeg = synth.encode();
    validate(&jpeg).unwrap();
    // Cut the third scan out: component 3 is never coded.
    let mut pos = scan_start(&jpeg);
    let mut sos = Vec::new();
    while pos + 1 < jpeg.len() {
        if jpeg[pos] == PREFIX && jpeg[pos + 1] == SOS {
            sos.push(pos);
        }
        pos += 1;
    }
    assert_eq!(sos.len(), 2, "scans 2 and 3 after the first");
    let mut cut = jpeg[..sos[1]].to_vec();
    cut.extend_from_slice(&EOI);
    assert_eq!(validate(&cut), Err(JpegError::ComponentNotCoded { id: 3 }));
    // The same scan twice.
    let mut twice = jpeg[..jpeg.len() - 2].to_vec();
    twice.extend_from_slice(&jpeg[sos[1]..]);
    assert!(matches!(
        validate(&twice),
        Err(JpegError::BadSegment { marker: 0xDA, .. })
    ));
}

// ---- corrupt frames ----

/// A few consecutive 640x480 pattern frames at quality 90 (the ball, the frame
/// counter and the clock differ between them).
fn pattern_frames_640x480_q90(n: usize) -> Vec<Vec<u8>> {
    // a fixed clock: the same frames on every run, so what is caught does not depend on
    // the time of day the test runs at
    let mut source = PatternSource::new(640, 480).with_fixed_clock("12:00:00.000 UTC");
    (0..n)
        .map(|_| encode(&source.next_frame().unwrap().unwrap(), 90).unwrap())
        .collect()
}

/// Asserts that every variant that changes the decoded image is rejected.
fn assert_all_caught(variants: MakeVariants, min_tried: usize) {
    for jpeg in pattern_frames_640x480_q90(3) {
        let c = caught(&jpeg, variants(&jpeg), true);
        assert!(c.tried >= min_tried, "{c:?}");
        assert!(c.missed.is_empty(), "corrupt frames accepted: {c:?}");
    }
}

#[test]
fn rejects_every_swap_of_adjacent_middle_datagrams() {
    assert_all_caught(adjacent_swaps, 15);
}

#[test]
fn rejects_a_datagram_duplicated_over_the_next() {
    assert_all_caught(duplicated_over_next, 15);
}

#[test]
fn rejects_a_lost_datagram_replaced_by_a_duplicate() {
    assert_all_caught(lost_and_duplicated_all, 50);
}

#[test]
fn rejects_truncated_frames_with_eoi_appended() {
    let jpeg = frame_640x480_q90();
    let start = scan_start(&jpeg);
    let mut cuts: Vec<usize> = (1..40).collect();
    cuts.extend((100..jpeg.len() - start).step_by(997));
    for cut in cuts {
        let mut v = jpeg[..jpeg.len() - 2 - cut].to_vec();
        v.extend_from_slice(&EOI);
        assert!(is_complete_jpeg(&v));
        assert!(validate(&v).is_err(), "cut {cut} accepted");
    }
    // Cut inside the headers.
    for end in [3, 4, 10, 100, start - 1, start] {
        let mut v = jpeg[..end].to_vec();
        v.extend_from_slice(&EOI);
        assert!(validate(&v).is_err(), "cut at {end} accepted");
    }
    assert!(validate(&jpeg[..jpeg.len() - 2]).is_err());
    assert!(validate(&jpeg[..jpeg.len() - 1]).is_err());
}

#[test]
fn rejects_most_flipped_bytes() {
    let jpeg = frame_640x480_q90();
    // Measured: about 70% of inverted bytes and 50% of one-bit flips are caught in
    // this mostly flat frame (see measure_caught_fractions); a flip that keeps the
    // Huffman codes in step is a valid image with a wrong pixel or two.
    let c = caught(&jpeg, byte_flips(&jpeg, 500, |_| 0xFF), true);
    assert!(c.rejected * 2 > c.tried, "inverted bytes: {c:?}");
    let c = caught(&jpeg, byte_flips(&jpeg, 500, |n| 1 << (n % 8)), true);
    assert!(c.rejected * 3 > c.tried, "one-bit flips: {c:?}");
}

#[test]
fn rejects_garbage_between_soi_and_eoi() {
    let mut garbage = SOI.to_vec();
    garbage.extend((0..5000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8));
    garbage.extend_from_slice(&EOI);
    assert!(is_complete_jpeg(&garbage));
    assert!(validate(&garbage).is_err());
    // Garbage in place of the entropy-coded data, after valid headers.
    let jpeg = frame_640x480_q90();
    let start = scan_start(&jpeg);
    let mut v = jpeg[..start].to_vec();
    v.extend((0..jpeg.len() - start - 2).map(|i| (i as u32).wrapping_mul(2654435761) as u8 | 1));
    v.extend_from_slice(&EOI);
    assert!(validate(&v).is_err());
    // Bytes between the last MCU and EOI; bytes after EOI.
    let mut v = jpeg[..jpeg.len() - 2].to_vec();
    v.extend_from_slice(&[0x12, 0x34]);
    v.extend_from_slice(&EOI);
    assert!(matches!(
        validate(&v),
        Err(JpegError::ExtraData {
            bytes: 2,
            marker: 0xD9,
            ..
        }) | Err(JpegError::BadPadding { .. })
    ));
    let mut v = jpeg.clone();
    v.extend_from_slice(&EOI);
    assert_eq!(validate(&v), Err(JpegError::TrailingBytes { bytes: 2 }));
    // Fill bytes before EOI are refused (libjpeg does not write them).
    let mut v = jpeg[..jpeg.len() - 2].to_vec();
    v.push(PREFIX);
    v.extend_from_slice(&EOI);
    assert!(validate(&v).is_err());
}

/// A position inside the entropy-coded data that is not part of an `FF 00` pair.
fn plain_position(jpeg: &[u8], near: usize) -> usize {
    (near..)
        .find(|&i| jpeg[i - 1] != PREFIX && jpeg[i] != PREFIX)
        .unwrap()
}

#[test]
fn rejects_a_stray_restart_marker() {
    let jpeg = frame_640x480_q90();
    let start = scan_start(&jpeg);
    for near in [start + 10, (start + jpeg.len()) / 2, jpeg.len() - 300] {
        let at = plain_position(&jpeg, near);
        // Inserted, and overwriting two bytes (same length).
        let mut inserted = jpeg[..at].to_vec();
        inserted.extend_from_slice(&[PREFIX, RST0]);
        inserted.extend_from_slice(&jpeg[at..]);
        let err = validate(&inserted).unwrap_err();
        assert!(
            matches!(
                err,
                JpegError::DataEndsEarly {
                    marker: Some(0xD0),
                    ..
                }
            ),
            "{err}"
        );
        let mut overwritten = jpeg.clone();
        overwritten[at..at + 2].copy_from_slice(&[PREFIX, RST0 + 3]);
        assert!(validate(&overwritten).is_err());
    }
    // Just before EOI: all MCUs are there, then RST0 instead of EOI.
    let mut v = jpeg[..jpeg.len() - 2].to_vec();
    v.extend_from_slice(&[PREFIX, RST0]);
    v.extend_from_slice(&EOI);
    assert!(matches!(
        validate(&v),
        Err(JpegError::UnexpectedMarker { marker: 0xD0, .. })
    ));
}

/// Positions of the RST markers in the entropy-coded data.
fn restart_markers(jpeg: &[u8]) -> Vec<usize> {
    (scan_start(jpeg)..jpeg.len() - 1)
        .filter(|&i| jpeg[i] == PREFIX && (RST0..=RST7).contains(&jpeg[i + 1]))
        .collect()
}

#[test]
fn rejects_missing_or_misnumbered_restart_markers() {
    let jpeg = encode_with(
        &pattern(320, 240),
        80,
        &[imgcodecs::IMWRITE_JPEG_RST_INTERVAL, 10],
    );
    validate(&jpeg).unwrap();
    let rst = restart_markers(&jpeg);
    assert_eq!(rst.len(), 300 / 10 - 1);
    // One removed.
    let mut v = jpeg.clone();
    v.drain(rst[5]..rst[5] + 2);
    assert!(validate(&v).is_err());
    // Renumbered.
    let mut v = jpeg.clone();
    v[rst[5] + 1] = RST0 + ((v[rst[5] + 1] - RST0 + 1) & 7);
    let err = validate(&v).unwrap_err();
    assert!(
        matches!(
            err,
            JpegError::BadRestart {
                expected: 5,
                found: 0xD6,
                ..
            }
        ),
        "{err}"
    );
    // Restart intervals make chunk swaps no easier to miss.
    let c = caught(&jpeg, adjacent_swaps(&jpeg), true);
    assert!(c.missed.is_empty(), "corrupt frames accepted: {c:?}");
}

// ---- headers ----

#[test]
fn progressive_and_arithmetic_are_unsupported() {
    let frame = pattern(160, 120);
    let progressive = encode_with(&frame, 90, &[imgcodecs::IMWRITE_JPEG_PROGRESSIVE, 1]);
    assert!(decode(&progressive).is_ok());
    assert_eq!(
        validate(&progressive),
        Err(JpegError::Unsupported("progressive JPEG"))
    );
    assert_eq!(
        validate(&progressive).unwrap_err().to_string(),
        "unsupported: progressive JPEG"
    );
    let jpeg = encode(&frame, 90).unwrap();
    let sof = segment(&jpeg, SOF0);
    let mut arithmetic = jpeg.clone();
    arithmetic[sof + 1] = SOF9;
    assert_eq!(
        validate(&arithmetic),
        Err(JpegError::Unsupported("arithmetic-coded JPEG"))
    );
    let mut lossless = jpeg.clone();
    lossless[sof + 1] = SOF3;
    assert_eq!(
        validate(&lossless),
        Err(JpegError::Unsupported("lossless JPEG"))
    );
    let mut dnl = jpeg.clone();
    dnl[sof + 5..sof + 7].copy_from_slice(&[0, 0]);
    assert!(matches!(validate(&dnl), Err(JpegError::Unsupported(_))));
}

#[test]
fn rejects_bad_headers() {
    let jpeg = encode(&pattern(160, 120), 90).unwrap();
    assert_eq!(validate(&[]), Err(JpegError::NotJpeg));
    assert_eq!(validate(&jpeg[1..]), Err(JpegError::NotJpeg));
    assert_eq!(
        validate(&[0xFF, 0xD8, 0xFF, 0xD9]),
        Err(JpegError::UnexpectedMarker {
            marker: 0xD9,
            offset: 2
        })
    );
    let dht = segment(&jpeg, DHT);
    let sof = segment(&jpeg, SOF0);
    let sos = segment(&jpeg, SOS);
    // A segment length running past the end.
    let mut v = jpeg.clone();
    v[dht + 2..dht + 4].copy_from_slice(&0xFFF0u16.to_be_bytes());
    assert!(validate(&v[..4000]).is_err());
    // Bad table class.
    let mut v = jpeg.clone();
    v[dht + 4] = 0x20;
    assert!(matches!(
        validate(&v),
        Err(JpegError::BadSegment { marker: 0xC4, .. })
    ));
    // Sampling factor 0; 5 components claimed.
    let mut v = jpeg.clone();
    v[sof + 2 + 2 + 6 + 1] = 0x02;
    assert!(matches!(
        validate(&v),
        Err(JpegError::BadSegment { marker: 0xC0, .. })
    ));
    let mut v = jpeg.clone();
    v[sof + 2 + 2 + 5] = 5;
    assert!(matches!(
        validate(&v),
        Err(JpegError::BadSegment { marker: 0xC0, .. })
    ));
    // The scan uses Huffman table 3, which is not defined.
    let mut v = jpeg.clone();
    v[sos + 2 + 2 + 2] = 0x33;
    assert!(matches!(
        validate(&v),
        Err(JpegError::BadSegment { marker: 0xDA, .. })
    ));
    // A scan component that is not in the frame.
    let mut v = jpeg.clone();
    v[sos + 2 + 2 + 1] = 9;
    assert!(matches!(
        validate(&v),
        Err(JpegError::BadSegment { marker: 0xDA, .. })
    ));
    // Progressive scan parameters in a sequential frame.
    let mut v = jpeg.clone();
    let ns = usize::from(v[sos + 4]);
    v[sos + 5 + 2 * ns + 1] = 5;
    assert!(matches!(
        validate(&v),
        Err(JpegError::BadSegment { marker: 0xDA, .. })
    ));
    // A byte that is not a marker between segments.
    let mut v = jpeg.clone();
    v[dht] = 0x00;
    assert_eq!(
        validate(&v),
        Err(JpegError::ExpectedMarker {
            offset: dht,
            found: 0
        })
    );
    // A second SOI; an RST between segments; an unknown marker.
    // (0xF0 is a reserved JPGn code, 0x01 TEM: codes the walk has no name for.)
    for m in [markers::SOI, RST0, 0xF0, 0x01] {
        let mut v = jpeg[..dht].to_vec();
        v.extend_from_slice(&[PREFIX, m, 0, 2]);
        v.extend_from_slice(&jpeg[dht..]);
        assert_eq!(
            validate(&v),
            Err(JpegError::UnexpectedMarker {
                marker: m,
                offset: dht
            })
        );
    }
    // Fill bytes before a marker are fine between segments, not after the scan (see
    // rejects_garbage_between_soi_and_eoi).
    let mut v = jpeg[..dht].to_vec();
    v.extend_from_slice(&[PREFIX; 3]);
    v.extend_from_slice(&jpeg[dht..]);
    assert!(validate(&v).is_ok());
    // A Huffman table whose code lengths overflow.
    let mut v = jpeg.clone();
    v[dht + 5] = 3; // three codes of length 1
    assert!(matches!(
        validate(&v),
        Err(JpegError::BadSegment { marker: 0xC4, .. }) | Err(JpegError::Truncated { .. })
    ));
}

#[test]
fn error_messages_say_what_is_wrong() {
    let cases = [
        (
            JpegError::Truncated { offset: 20 },
            "truncated marker segment at byte 20",
        ),
        (
            JpegError::UndefinedHuffmanCode { offset: 700 },
            "undefined Huffman code near byte 700",
        ),
        (
            JpegError::CoefficientPast63 { offset: 9 },
            "coefficient index past 63 near byte 9",
        ),
        (
            JpegError::DataEndsEarly {
                mcu: 5,
                mcus: 1200,
                offset: 900,
                marker: Some(0xD9),
            },
            "data ends before MCU 5 of 1200: EOI (FF D9) at byte 900",
        ),
        (
            JpegError::ExtraData {
                bytes: 3,
                marker: 0xD9,
                offset: 77,
            },
            "3 bytes between the last MCU and EOI (FF D9) at byte 77",
        ),
        (
            JpegError::BadRestart {
                expected: 2,
                found: 0xD4,
                offset: 5,
            },
            "expected RST2 at byte 5, found RST4 (FF D4)",
        ),
        (
            JpegError::BadSegment {
                marker: 0xC4,
                offset: 4,
                reason: "more than 256 codes in a table",
            },
            "bad DHT (FF C4) segment at byte 4: more than 256 codes in a table",
        ),
        (
            JpegError::Unsupported("progressive JPEG"),
            "unsupported: progressive JPEG",
        ),
    ];
    for (err, text) in cases {
        assert_eq!(err.to_string(), text);
    }
}

// ---- measurements (cargo test --release --lib jpegcheck -- --ignored --nocapture) ----

/// A 640x480 camera-like frame: the pattern plus noise, about 60-70 KB at quality 90.
fn noisy_640x480() -> Mat {
    let frame = pattern(640, 480);
    let mut noise =
        Mat::new_rows_cols_with_default(480, 640, frame.typ(), opencv::core::Scalar::all(0.0))
            .unwrap();
    opencv::core::randn(
        &mut noise,
        &opencv::core::Scalar::all(0.0),
        &opencv::core::Scalar::all(8.0),
    )
    .unwrap();
    let mut out = Mat::default();
    opencv::core::add_def(&frame, &noise, &mut out).unwrap();
    out
}

/// 640x480 crops of a photo (scaled to 800x600 first), alternately at quality 90 and
/// 75.
fn photo_frames(path: &str) -> Vec<Vec<u8>> {
    let img = imgcodecs::imread(path, imgcodecs::IMREAD_COLOR).unwrap();
    assert!(!img.empty(), "cannot read {path}");
    let big = crate::media::resize_to(&img, 800, 600).unwrap();
    [(0, 0), (160, 120), (80, 40), (17, 99)]
        .into_iter()
        .enumerate()
        .map(|(i, (x, y))| {
            let rect = opencv::core::Rect::new(x, y, 640, 480);
            let crop = Mat::roi(&big, rect).unwrap().try_clone().unwrap();
            encode(&crop, if i % 2 == 0 { 90 } else { 75 }).unwrap()
        })
        .collect()
}

/// Prints how many datagram swaps, duplicates and byte flips of 640x480 frames are
/// caught: the test pattern, the pattern with noise, and photos named (colon-separated)
/// in JPEG_VALIDATE_PHOTOS.
#[test]
#[ignore = "measurement: prints how many corruptions are caught"]
fn measure_caught_fractions() {
    let noisy = |quality, extra: &[i32]| {
        (0..4)
            .map(|_| encode_with(&noisy_640x480(), quality, extra))
            .collect::<Vec<_>>()
    };
    let mut kinds = vec![
        (
            "pattern 640x480 q90".to_string(),
            pattern_frames_640x480_q90(8),
        ),
        (
            "pattern 640x480 q50".to_string(),
            (0..4)
                .map(|_| encode(&pattern(640, 480), 50).unwrap())
                .collect(),
        ),
        ("noisy 640x480 q90".to_string(), noisy(90, &[])),
        (
            "noisy 640x480 q75 rst 8".to_string(),
            noisy(75, &[imgcodecs::IMWRITE_JPEG_RST_INTERVAL, 8]),
        ),
    ];
    for path in std::env::var("JPEG_VALIDATE_PHOTOS")
        .unwrap_or_default()
        .split(':')
    {
        if !path.is_empty() {
            kinds.push((format!("photo {path}, q90/q75"), photo_frames(path)));
        }
    }
    let experiments: [(&str, MakeVariants); 5] = [
        ("adjacent swaps", adjacent_swaps),
        ("dup over next", duplicated_over_next),
        ("lose + dup", lost_and_duplicated_all),
        ("byte inverted", |j| byte_flips(j, 1500, |_| 0xFF)),
        ("one bit flipped", |j| byte_flips(j, 1500, |n| 1 << (n % 8))),
    ];
    for (name, frames) in &kinds {
        for jpeg in frames {
            validate(jpeg).unwrap();
        }
        let sizes: Vec<usize> = frames.iter().map(Vec::len).collect();
        println!("{name}, {} frames of {sizes:?} bytes:", frames.len());
        for (what, make) in experiments {
            let (mut all, mut structural, mut missed) = (Caught::default(), 0, Vec::new());
            for jpeg in frames {
                let variants = make(jpeg);
                let c = caught(jpeg, variants.clone(), true);
                structural += caught(jpeg, variants, false).rejected;
                all.tried += c.tried;
                all.rejected += c.rejected;
                all.harmless += c.harmless;
                missed.extend(c.missed);
            }
            println!(
                "  {what}: {}/{} rejected ({:.1}%; {structural} by structure alone), \
                 {} accepted but pixel-identical, {} corrupt accepted {:?}",
                all.rejected,
                all.tried,
                100.0 * all.rejected as f64 / all.tried as f64,
                all.harmless,
                missed.len(),
                &missed[..missed.len().min(3)],
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// check_structure
// ---------------------------------------------------------------------------------------

/// SOI, SOF0 (8x8, one component), SOS, `data`, EOI.
fn structural(data: &[u8]) -> Vec<u8> {
    let mut v = vec![0xFF, 0xD8];
    v.extend_from_slice(&[0xFF, 0xC0, 0x00, 0x0B, 0x08, 0x00, 0x08, 0x00, 0x08, 0x01]);
    v.extend_from_slice(&[0x01, 0x11, 0x00]);
    v.extend_from_slice(&[0xFF, 0xDA, 0x00, 0x08, 0x01, 0x01, 0x00, 0x00, 0x3F, 0x00]);
    v.extend_from_slice(data);
    v.extend_from_slice(&[0xFF, 0xD9]);
    v
}

#[test]
fn structure_accepts_markers_in_order_with_stuffing_and_restarts_in_the_data() {
    let info = check_structure(&structural(&[0x12, 0xFF, 0x00, 0x34, 0xFF, 0xD3, 0x56]));
    assert_eq!(
        info,
        Ok(JpegInfo {
            width: 8,
            height: 8,
            components: 1,
            restart_interval: 0
        })
    );
    // fill bytes before the closing marker are allowed
    assert!(check_structure(&structural(&[0x12, 0xFF, 0xFF])).is_ok());
    // and the structural filler used by the transport tests passes, but not the full walk
    for len in [FILLER_MIN_LEN, 100, 70_000] {
        let f = filler_jpeg(len, 3);
        assert_eq!(f.len(), len);
        assert!(check_structure(&f).is_ok(), "{len}");
        assert!(len == FILLER_MIN_LEN || f != filler_jpeg(len, 4), "{len}");
    }
    assert!(validate(&filler_jpeg(5000, 1)).is_err());
}

#[test]
fn structure_refuses_what_is_not_an_image() {
    // the 5-byte "JPEG" of the flood: SOI, a data byte, EOI
    assert_eq!(
        check_structure(&[0xFF, 0xD8, 0x00, 0xFF, 0xD9]),
        Err(JpegError::ExpectedMarker {
            offset: 2,
            found: 0x00
        })
    );
    // SOI then EOI: no frame, no scan
    assert!(matches!(
        check_structure(&[0xFF, 0xD8, 0xFF, 0xD9]),
        Err(JpegError::UnexpectedMarker { marker: 0xD9, .. })
    ));
    // a frame header but no scan
    let mut no_scan = structural(&[]);
    no_scan.drain(15..25);
    assert!(check_structure(&no_scan).is_err());
    // the scan before the frame header
    let mut v = vec![0xFF, 0xD8];
    v.extend_from_slice(&[
        0xFF, 0xDA, 0x00, 0x08, 0x01, 0x01, 0x00, 0x00, 0x3F, 0x00, 0x11,
    ]);
    v.extend_from_slice(&[0xFF, 0xD9]);
    assert!(check_structure(&v).is_err());
    // width 0
    let mut w0 = structural(&[0x11]);
    w0[9..11].copy_from_slice(&[0, 0]);
    assert!(check_structure(&w0).is_err());
    // bytes after EOI; no EOI at all
    let mut trailing = structural(&[0x11]);
    trailing.push(0);
    assert_eq!(
        check_structure(&trailing),
        Err(JpegError::TrailingBytes { bytes: 1 })
    );
    let cut = structural(&[0x11]);
    assert_eq!(
        check_structure(&cut[..cut.len() - 2]),
        Err(JpegError::MissingEoi)
    );
    // a segment length running past the end
    let mut long = structural(&[]);
    long[5] = 0x40;
    assert!(check_structure(&long).is_err());
}

#[test]
fn structure_accepts_progressive_frames_that_the_full_walk_leaves_alone() {
    let mut p = structural(&[0x11, 0x22]);
    p[3] = SOF2;
    assert!(check_structure(&p).is_ok());
    assert_eq!(
        validate(&p),
        Err(JpegError::Unsupported("progressive JPEG"))
    );
}

// ---- the fast walk in lockstep with the reference walk (the walk as it was) ----

/// The frames the lockstep tests mutate: OpenCV's (plain, noisy, with restart intervals,
/// with optimized Huffman tables, grayscale, noise at quality 100 with its long codes)
/// and the test encoder's (4:2:0 with restarts, separate scans).
fn lockstep_frames() -> &'static [Vec<u8>] {
    static FRAMES: std::sync::OnceLock<Vec<Vec<u8>>> = std::sync::OnceLock::new();
    FRAMES.get_or_init(|| {
        let frame = pattern(160, 120);
        let mut gray = Mat::default();
        imgproc::cvt_color_def(&frame, &mut gray, imgproc::COLOR_BGR2GRAY).unwrap();
        let synth = |sampling: &[(u8, u8)], restart_interval, interleaved| {
            Synth {
                width: 101,
                height: 75,
                sampling,
                restart_interval,
                interleaved,
            }
            .encode()
        };
        vec![
            encode_with(&frame, 90, &[]),
            crate::media::testjpeg::noisy_pattern_jpeg(160, 120, 90, 12_000).unwrap(),
            encode_with(&frame, 75, &[imgcodecs::IMWRITE_JPEG_RST_INTERVAL, 3]),
            encode_with(&frame, 95, &[imgcodecs::IMWRITE_JPEG_OPTIMIZE, 1]),
            encode_with(&gray, 60, &[]),
            crate::media::testjpeg::noise_jpeg(20_000).unwrap().0,
            synth(&[(2, 2), (1, 1), (1, 1)], 2, true),
            synth(&[(1, 1), (1, 1), (1, 1)], 0, false),
        ]
    })
}

/// Both walks on `bytes`: the same result, `Ok` or the same error with the same offsets.
fn assert_lockstep(bytes: &[u8]) -> Result<JpegInfo, JpegError> {
    let fast = walk_segments(bytes, Depth::Entropy { range_checks: true });
    let reference = super::reference_walk::validate_reference(bytes);
    assert_eq!(
        fast, reference,
        "the fast walk and the reference walk disagree"
    );
    fast
}

#[test]
fn lockstep_on_the_unmutated_frames_and_every_truncation_of_one() {
    for jpeg in lockstep_frames() {
        assert!(assert_lockstep(jpeg).is_ok());
    }
    // Every length of the noisy frame, with and without EOI appended: the data ends at
    // every bit position the walk can be at when the bytes run out.
    let jpeg = &lockstep_frames()[1];
    let mut ends_early = 0;
    for len in scan_start(jpeg)..jpeg.len() {
        let mut cut = jpeg[..len].to_vec();
        assert!(assert_lockstep(&cut).is_err());
        cut.extend_from_slice(&EOI);
        if let Err(JpegError::DataEndsEarly { .. }) = assert_lockstep(&cut) {
            ends_early += 1;
        }
    }
    assert!(ends_early > 0);
}

/// Check `jpeg` as if its bytes came `step` at a time: the verdict (which
/// [`IncrementalCheck::finish`] asserts to be [`validate`]'s, in the tests) and the MCU the
/// walk had got to before the last bytes came.
fn incremental(jpeg: &[u8], step: usize) -> (Result<JpegInfo, JpegError>, u32) {
    let mut check = IncrementalCheck::with_step(step);
    let mut n = 0;
    while n < jpeg.len() {
        n = (n + step).min(jpeg.len());
        if n < jpeg.len() {
            check.advance(&jpeg[..n]);
        }
    }
    let paused = check.paused_at_mcu();
    (check.finish(jpeg), paused)
}

#[test]
fn the_incremental_walk_gives_the_whole_walks_verdict_and_walks_ahead() {
    for (i, jpeg) in lockstep_frames().iter().enumerate() {
        for step in [256, 1024, 1400, 8192] {
            assert!(incremental(jpeg, step).0.is_ok(), "frame {i}, step {step}");
        }
    }
    // A 640x480 frame in 1400-byte steps: the walk was most of the way through (its
    // 1200 MCUs of 4:2:0) before the last datagram, and the result is the same.
    let jpeg = frame_640x480_q90();
    let (verdict, paused) = incremental(&jpeg, 1400);
    assert!(verdict.is_ok());
    assert!(
        paused > 600,
        "paused at MCU {paused} of 1200 in a {}-byte frame",
        jpeg.len()
    );
    // A frame with restart intervals is walked only at the end, with the same verdict.
    let (verdict, paused) = incremental(&lockstep_frames()[2], 256);
    assert!(verdict.is_ok());
    assert_eq!(paused, 0);
    // Every cut of the noisy frame with EOI appended, in small steps.
    let jpeg = &lockstep_frames()[1];
    for len in (scan_start(jpeg)..jpeg.len()).step_by(97) {
        let mut cut = jpeg[..len].to_vec();
        cut.extend_from_slice(&EOI);
        assert!(incremental(&cut, 300).0.is_err());
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

    /// Flipped bits, overwritten bytes, swapped or moved chunks of any size, cuts with
    /// EOI appended: the two walks give the same verdict on every mutant.
    #[test]
    fn lockstep_on_mutated_frames(
        which in 0usize..8,
        kind in 0u8..5,
        at in proptest::prelude::any::<proptest::sample::Index>(),
        other in proptest::prelude::any::<proptest::sample::Index>(),
        size in 1usize..3000,
        value in proptest::prelude::any::<u8>(),
        extra in proptest::collection::vec(proptest::prelude::any::<proptest::sample::Index>(), 0..4),
    ) {
        let jpeg = &lockstep_frames()[which];
        let start = scan_start(jpeg);
        let coded = start..jpeg.len() - 2;
        let pick = |i: &proptest::sample::Index| coded.start + i.index(coded.len());
        let mut m = jpeg.clone();
        match kind {
            0 => {
                // Bit flips in the coded data (and sometimes a few more).
                m[pick(&at)] ^= 1 << (value & 7);
                for e in &extra {
                    m[pick(e)] ^= 1 << (e.index(8));
                }
            }
            1 => m[pick(&at)] = value, // a byte overwritten (FF and 00 included)
            2 => {
                // Two chunks of `size` bytes swapped.
                let size = size.min(coded.len() / 2);
                let (a, b) = (pick(&at).min(coded.end - size), pick(&other).min(coded.end - size));
                let (a, b) = (a.min(b), a.max(b));
                if b >= a + size {
                    let (x, y) = (jpeg[a..a + size].to_vec(), jpeg[b..b + size].to_vec());
                    m[a..a + size].copy_from_slice(&y);
                    m[b..b + size].copy_from_slice(&x);
                }
            }
            3 => {
                // A chunk lost and another duplicated in its place.
                let size = size.min(coded.len() / 2);
                let (a, b) = (pick(&at).min(coded.end - size), pick(&other).min(coded.end - size));
                m[a..a + size].copy_from_slice(&jpeg[b..b + size]);
            }
            _ => {
                // Cut anywhere in the coded data, EOI appended.
                m.truncate(pick(&at));
                m.extend_from_slice(&EOI);
            }
        }
        assert_lockstep(&m).ok();
        // and the same verdict when the mutant's bytes come `size` at a time
        let _ = incremental(&m, size.max(64));
    }
}
