//! The JPEG payload check: is a byte string one whole, well-formed JPEG, and was its middle
//! put together in the right order?
//!
//! Why it exists: the seed chunked UDP format (a length header, then 1024-byte datagrams
//! with no index and no checksum) cannot show two datagrams swapped by the network, or one
//! lost and another of the same size duplicated: the frame has the right length, SOI and
//! EOI. Nothing in the format can catch that, so the payload itself is checked: this walk
//! is what rejects a corrupt frame before the hub acks or delivers it
//! ([`crate::proto::seed_reassembly`]). It is not a wire format (it keeps the state of a
//! full entropy walk: Huffman and quantization tables, DC predictors), hence its own
//! module rather than one under [`crate::wire`].
//!
//! Three levels:
//! - [`is_complete_jpeg`]: starts with the SOI marker `FF D8` and ends with the EOI marker
//!   `FF D9`. This catches truncated, misaligned and foreign data in nanoseconds, but not
//!   a frame whose middle is wrong.
//! - [`check_structure`]: the marker segments in order (SOI, a frame header with sane
//!   dimensions, a scan, EOI), the coded data skipped to its end marker; what the hub asks
//!   of every frame in the formats that keep bytes in order (framed, single, TCP).
//! - [`validate`]: walks the marker segments and the Huffman-coded data of a sequential
//!   JPEG (what OpenCV / libjpeg write) without decoding pixels, so reordered, duplicated
//!   or lost data shows up as an undefined Huffman code, a coefficient past the end of a
//!   block, a DC value no 8-bit image can have, the data ending before the last MCU or
//!   data left over after it. 0.1 to 0.7 ms for a 640x480 frame, a fifth of what an OpenCV
//!   decode costs (`examples/jpeg_walk_speed.rs` times it); decoding to pixels is left to
//!   the consumers that need pixels.
//!
//! A seed frame's capture time rides in a JPEG comment ([`capture_stamp`],
//! [`with_capture_stamp`]; see `stamp`).
//!
//! Inside: `markers` names the marker codes and walks the segments, `segments` parses the
//! DQT, DHT, SOF, DRI and SOS segments, `entropy` walks the entropy-coded data of a scan.

mod entropy;
mod markers;
#[cfg(test)]
mod reference_walk;
mod segments;
mod stamp;
#[cfg(test)]
mod test_encoder;
#[cfg(test)]
mod tests;

use markers::{Depth, Marker};
pub use stamp::{capture_stamp, with_capture_stamp, STAMP_PREFIX};
use std::fmt;

/// Start-of-image marker.
pub const SOI: [u8; 2] = [markers::PREFIX, markers::SOI];
/// End-of-image marker.
pub const EOI: [u8; 2] = [markers::PREFIX, markers::EOI];

/// True when `bytes` starts with SOI and ends with EOI (and is long enough to hold both).
pub fn is_complete_jpeg(bytes: &[u8]) -> bool {
    bytes.len() >= 4 && bytes.starts_with(&SOI) && bytes.ends_with(&EOI)
}

/// What [`validate`] found out about a valid JPEG.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JpegInfo {
    /// Image width in pixels (1..=65535).
    pub width: u16,
    /// Image height in pixels (1..=65535).
    pub height: u16,
    /// Number of colour components: 1 (grayscale) or 3 (YCbCr) in practice, at most 4.
    pub components: u8,
    /// MCUs per restart interval in the first scan; 0 when there are no restart markers.
    pub restart_interval: u16,
}

/// Why [`validate`] rejected a byte string. Offsets are from the start of the buffer;
/// offsets inside entropy-coded data ("near byte N") are approximate to a byte or two.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JpegError {
    /// The data does not start with SOI (`FF D8`).
    NotJpeg,
    /// Between marker segments, a byte other than `FF` where a marker must start.
    ExpectedMarker { offset: usize, found: u8 },
    /// A marker segment's length runs past the end of the data.
    Truncated { offset: usize },
    /// A marker segment whose content is invalid.
    BadSegment {
        marker: u8,
        offset: usize,
        reason: &'static str,
    },
    /// A marker that may not appear where it does (a second SOI, EOI before any scan, an
    /// RST outside a scan, an unknown marker...).
    UnexpectedMarker { marker: u8, offset: usize },
    /// A valid JPEG this validator does not handle: progressive, lossless, hierarchical or
    /// arithmetic-coded JPEG, or a height given by a DNL marker. The caller decides: such
    /// frames cannot be checked here, only by decoding them.
    Unsupported(&'static str),
    /// No Huffman code of the table in use matches the next 16 bits.
    UndefinedHuffmanCode { offset: usize },
    /// A DC difference category above what the sample precision allows (11 for 8 bits).
    DcCategory { category: u8, offset: usize },
    /// An AC symbol that cannot occur in a sequential scan: a size above 10 (8-bit
    /// samples), or an end-of-band run.
    AcSymbol { symbol: u8, offset: usize },
    /// A run of zeros or a coefficient that goes past coefficient 63 of a block.
    CoefficientPast63 { offset: usize },
    /// The DC value of a block (the running sum of DC differences) is outside the range
    /// the DCT of in-range samples can produce: the block would average below 0 or above
    /// 255. This catches most reordered data that still parses.
    DcOutOfRange { component: u8, offset: usize },
    /// An AC coefficient too large for its quantizer: its magnitude times the quantizer
    /// exceeds twice what the DCT of in-range samples can produce.
    AcOutOfRange { component: u8, offset: usize },
    /// The entropy-coded data stops (at a marker or at the end of the buffer) before the
    /// last block of MCU `mcu` (1-based) of `mcus`.
    DataEndsEarly {
        mcu: u32,
        mcus: u32,
        offset: usize,
        /// The marker found at `offset`, `None` for the end of the buffer.
        marker: Option<u8>,
    },
    /// The bits after the last MCU of a scan or restart interval are not all 1s.
    BadPadding { offset: usize },
    /// Whole bytes of entropy-coded data left over after the last MCU of a scan (before
    /// `marker`, normally EOI) or of a restart interval (before an RST marker).
    ExtraData {
        bytes: usize,
        marker: u8,
        offset: usize,
    },
    /// A restart interval ended and the marker found is not RST`expected`.
    BadRestart {
        expected: u8,
        found: u8,
        offset: usize,
    },
    /// The data ends without an EOI marker.
    MissingEoi,
    /// Bytes after the EOI marker.
    TrailingBytes { bytes: usize },
    /// A component of the frame is coded in no scan.
    ComponentNotCoded { id: u8 },
}

impl fmt::Display for JpegError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            JpegError::NotJpeg => f.write_str("does not start with SOI (FF D8)"),
            JpegError::ExpectedMarker { offset, found } => {
                write!(f, "expected a marker at byte {offset}, found {found:#04x}")
            }
            JpegError::Truncated { offset } => {
                write!(f, "truncated marker segment at byte {offset}")
            }
            JpegError::BadSegment {
                marker,
                offset,
                reason,
            } => write!(f, "bad {} segment at byte {offset}: {reason}", Marker(marker)),
            JpegError::UnexpectedMarker { marker, offset } => {
                write!(f, "unexpected {} at byte {offset}", Marker(marker))
            }
            JpegError::Unsupported(what) => write!(f, "unsupported: {what}"),
            JpegError::UndefinedHuffmanCode { offset } => {
                write!(f, "undefined Huffman code near byte {offset}")
            }
            JpegError::DcCategory { category, offset } => write!(
                f,
                "DC difference category {category} out of range near byte {offset}"
            ),
            JpegError::AcSymbol { symbol, offset } => write!(
                f,
                "AC symbol {symbol:#04x} invalid in a sequential scan near byte {offset}"
            ),
            JpegError::CoefficientPast63 { offset } => {
                write!(f, "coefficient index past 63 near byte {offset}")
            }
            JpegError::DcOutOfRange { component, offset } => write!(
                f,
                "DC value of component {component} out of range near byte {offset}"
            ),
            JpegError::AcOutOfRange { component, offset } => write!(
                f,
                "AC coefficient of component {component} too large for its quantizer near byte {offset}"
            ),
            JpegError::DataEndsEarly {
                mcu,
                mcus,
                offset,
                marker,
            } => {
                write!(f, "data ends before MCU {mcu} of {mcus}: ")?;
                match marker {
                    Some(m) => write!(f, "{} at byte {offset}", Marker(m)),
                    None => write!(f, "end of buffer at byte {offset}"),
                }
            }
            JpegError::BadPadding { offset } => {
                write!(f, "padding bits before byte {offset} are not all 1s")
            }
            JpegError::ExtraData {
                bytes,
                marker,
                offset,
            } => write!(
                f,
                "{bytes} bytes between the last MCU and {} at byte {offset}",
                Marker(marker)
            ),
            JpegError::BadRestart {
                expected,
                found,
                offset,
            } => write!(
                f,
                "expected RST{expected} at byte {offset}, found {}",
                Marker(found)
            ),
            JpegError::MissingEoi => f.write_str("no EOI (FF D9) marker after the scan"),
            JpegError::TrailingBytes { bytes } => write!(f, "{bytes} bytes after EOI"),
            JpegError::ComponentNotCoded { id } => write!(f, "component {id} is in no scan"),
        }
    }
}

impl std::error::Error for JpegError {}

/// Checks that `bytes` is exactly one well-formed sequential (baseline or extended,
/// Huffman-coded) JPEG, from SOI to EOI, without decoding pixels.
///
/// Marker segments: SOI first; APPn and COM are skipped by their length; DQT, DHT, SOF0,
/// SOF1, DRI and SOS are parsed and checked; any other marker is an error (as in libjpeg).
/// Entropy-coded data: every block of every MCU is walked through the Huffman tables, with
/// byte stuffing and restart markers (which must come after exactly every `restart_interval`
/// MCUs, numbered in turn). Each DC value must lie in the range the DCT of 0..=255 samples
/// can produce (a block averaging below 0 or above 255 is impossible for any encoder), and
/// each AC coefficient within twice that range. After the last MCU the rest of the byte must
/// be 1-bit padding and EOI must follow at once (no fill bytes) and end the buffer.
///
/// Several sequential scans (each component in exactly one) are walked in turn.
/// Progressive, lossless, hierarchical and arithmetic-coded JPEGs, and frames whose height
/// is given by a DNL marker, give [`JpegError::Unsupported`]: they may be valid, but cannot
/// be checked here; the caller decides whether to decode them instead or drop them.
///
/// What no validator can promise: data swapped, duplicated or lost in whole datagrams
/// sometimes still parses as a valid image (the Huffman code falls back in step and the DC
/// values stay in range), just a wrong one. Measured with 1024-byte datagrams of 640x480
/// frames: every such corruption of the synthetic test pattern was caught, but about 2% of
/// them (up to 6% for some photos) got through for natural photos. Only a protocol that
/// numbers its datagrams (the framed protocol) rules this out.
///
/// Allocates nothing; uses about 41 KiB of stack for the tables (see `entropy`).
pub fn validate(bytes: &[u8]) -> Result<JpegInfo, JpegError> {
    let result = markers::walk_segments(bytes, Depth::Entropy { range_checks: true });
    // Every validation in the unit tests is a lockstep test of the fast walk.
    #[cfg(test)]
    assert_eq!(
        result,
        reference_walk::validate_reference(bytes),
        "the fast walk and the reference walk disagree"
    );
    result
}

/// New bytes [`IncrementalCheck::advance`] waits for before it walks again.
pub const ADVANCE_STEP: usize = 2 * 1024;

/// [`validate`] for a frame whose bytes arrive in order over a while (a seed chunked frame
/// over a slow link): [`advance`](Self::advance) walks the entropy-coded data that has
/// arrived so far (pausing at an MCU that could need bytes not yet there), and
/// [`finish`](Self::finish) walks the rest and gives the verdict on the whole frame,
/// exactly [`validate`]'s (the unit tests check every call against it). So when the last
/// datagram comes, only its share of the walk is left.
///
/// Only the first scan is walked ahead, and only when it has no restart intervals (a
/// live camera's frames have one scan and, from OpenCV and libjpeg, no restart markers);
/// everything else is walked by `finish`. The first walk that reaches the scan keeps the
/// tables the headers defined (on the heap, about 41 KiB: [`heap_bytes`](Self::heap_bytes)),
/// so later ones start at the scan; each walks only every [`ADVANCE_STEP`] new bytes.
#[derive(Debug)]
pub struct IncrementalCheck {
    resume: markers::Resume,
    walked: usize,
    /// [`ADVANCE_STEP`], smaller in the tests.
    step: usize,
}

impl Default for IncrementalCheck {
    fn default() -> Self {
        IncrementalCheck {
            resume: markers::Resume::default(),
            walked: 0,
            step: ADVANCE_STEP,
        }
    }
}

impl IncrementalCheck {
    pub fn new() -> Self {
        IncrementalCheck::default()
    }

    /// A check that walks every `step` new bytes.
    #[cfg(test)]
    fn with_step(step: usize) -> Self {
        IncrementalCheck {
            step,
            ..IncrementalCheck::default()
        }
    }

    /// The MCU of the first scan the walk has paused at (0: not walked ahead).
    #[cfg(test)]
    fn paused_at_mcu(&self) -> u32 {
        self.resume.progress.map_or(0, |p| p.mcu())
    }

    /// Walk on through `prefix`, the frame's first bytes (each call at least as many as the
    /// last); does nothing until [`ADVANCE_STEP`] more bytes are there.
    pub fn advance(&mut self, prefix: &[u8]) {
        if self.resume.settled || prefix.len() < self.walked + self.step {
            return;
        }
        self.walked = prefix.len();
        self.resume.limit = Some(prefix.len());
        // the verdict on part of a frame means nothing; the progress is what counts
        let _ = markers::walk_segments_resumable(
            prefix,
            Depth::Entropy { range_checks: true },
            Some(&mut self.resume),
        );
    }

    /// What [`heap_bytes`](Self::heap_bytes) is once the tables are kept.
    pub fn tables_bytes() -> usize {
        markers::Resume::TABLES_BYTES
    }

    /// Heap bytes this check holds: the tables it keeps once the walk reached the first
    /// scan (about 41 KiB), 0 before. A caller bounding memory counts them.
    pub fn heap_bytes(&self) -> usize {
        self.resume.heap_bytes()
    }

    /// The verdict on the whole `frame` (whose first bytes every [`advance`](Self::advance)
    /// was given): the same as [`validate`]`(frame)`.
    pub fn finish(mut self, frame: &[u8]) -> Result<JpegInfo, JpegError> {
        self.resume.limit = None;
        let result = markers::walk_segments_resumable(
            frame,
            Depth::Entropy { range_checks: true },
            Some(&mut self.resume),
        );
        #[cfg(test)]
        assert_eq!(
            result,
            validate(frame),
            "the incremental walk and the whole walk disagree"
        );
        result
    }
}

/// Whether `bytes` is structurally one JPEG: SOI, then marker segments each whole, a frame
/// header (baseline, extended or progressive) with a width and height of at least 1 and 1
/// to 4 components, at least one scan after it, and EOI as the last two bytes. A scan's
/// coded data is skipped to the marker that ends it, not decoded: this is a single pass
/// that looks at each byte once, for formats whose transport already keeps the bytes in
/// order (framed, single datagrams, the TCP stream), where [`validate`]'s entropy walk
/// would add nothing. Huffman tables need not be present (many webcams' MJPEG frames use
/// the standard tables without including them).
///
/// It refuses what is not an image at all (`FF D8 00 FF D9`, text between SOI and EOI, a
/// frame cut short and padded), so a peer cannot have such bytes delivered and saved as
/// frames.
pub fn check_structure(bytes: &[u8]) -> Result<JpegInfo, JpegError> {
    markers::walk_segments(bytes, Depth::Structure)
}

/// The shortest [`filler_jpeg`]: SOI, a frame header, a scan header and EOI.
pub const FILLER_MIN_LEN: usize = FILLER_HEAD.len() + EOI.len();

/// SOI; SOF0 for an 8x8 one-component frame (length 11: precision 8, height 8, width 8, one
/// component, id 1, sampling 1x1, table 0); SOS for that component (length 8: one
/// component, id 1, tables 0/0, spectral 0..63, approximation 0).
const FILLER_HEAD: [u8; 25] = [
    0xFF, 0xD8, // SOI
    0xFF, 0xC0, 0x00, 0x0B, 0x08, 0x00, 0x08, 0x00, 0x08, 0x01, 0x01, 0x11, 0x00, // SOF0
    0xFF, 0xDA, 0x00, 0x08, 0x01, 0x01, 0x00, 0x00, 0x3F, 0x00, // SOS
];

/// A JPEG of exactly `len` bytes (at least [`FILLER_MIN_LEN`]; shorter is padded to it)
/// that passes [`check_structure`] but whose coded data is pseudo-random filler (never an
/// `FF`), different for each `seed`: it decodes to nothing meaningful and fails
/// [`validate`]. For testing and measuring a transport without an encoder.
///
/// ```
/// let frame = udphub::jpegcheck::filler_jpeg(5000, 1);
/// assert_eq!(frame.len(), 5000);
/// assert!(udphub::jpegcheck::check_structure(&frame).is_ok());
/// ```
pub fn filler_jpeg(len: usize, seed: u64) -> Vec<u8> {
    let len = len.max(FILLER_MIN_LEN);
    let mut v = Vec::with_capacity(len);
    v.extend_from_slice(&FILLER_HEAD);
    let mut state = seed ^ 0x9E37_79B9_7F4A_7C15 ^ len as u64;
    while v.len() < len - EOI.len() {
        // splitmix64
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let n = (len - EOI.len() - v.len()).min(8);
        v.extend(z.to_le_bytes()[..n].iter().map(|&b| b.min(0xFE)));
    }
    v.extend_from_slice(&EOI);
    v
}
