//! JPEG marker codes by name, their display names, and the segment walk: marker by marker
//! from SOI to EOI, handing each segment to its parser ([`super::segments`]) and each scan's
//! entropy-coded data to [`super::entropy`] (or, for the structure check, skipping it to
//! the next marker).
//!
//! A marker is the byte [`PREFIX`] (`FF`) followed by one of the codes below (ITU T.81
//! table B.1); the other files name markers by these constants, never by number.

use super::entropy::{walk_scan, walk_scan_from, Huffman, ScanProgress, Walked};
use super::segments::{parse_dht, parse_dqt, parse_dri, Frame, FrameError, Scan};
use super::{JpegError, JpegInfo};
use std::fmt;

/// The byte every marker starts with (and, stuffed with a `00` after it, a data byte).
pub(super) const PREFIX: u8 = 0xFF;

/// Start of frame, baseline DCT (Huffman).
pub(super) const SOF0: u8 = 0xC0;
/// Start of frame, extended sequential DCT (Huffman).
pub(super) const SOF1: u8 = 0xC1;
/// Start of frame, progressive DCT (Huffman).
pub(super) const SOF2: u8 = 0xC2;
/// Start of frame, lossless (Huffman).
pub(super) const SOF3: u8 = 0xC3;
/// Define Huffman tables.
pub(super) const DHT: u8 = 0xC4;
/// Start of frame, differential sequential DCT (Huffman, hierarchical).
pub(super) const SOF5: u8 = 0xC5;
/// Start of frame, differential progressive DCT (Huffman, hierarchical).
pub(super) const SOF6: u8 = 0xC6;
/// Start of frame, differential lossless (Huffman, hierarchical).
pub(super) const SOF7: u8 = 0xC7;
/// Reserved for JPEG extensions.
pub(super) const JPG: u8 = 0xC8;
/// Start of frame, extended sequential DCT (arithmetic).
pub(super) const SOF9: u8 = 0xC9;
/// Start of frame, progressive DCT (arithmetic).
pub(super) const SOF10: u8 = 0xCA;
/// Start of frame, lossless (arithmetic).
pub(super) const SOF11: u8 = 0xCB;
/// Define arithmetic coding conditioning.
pub(super) const DAC: u8 = 0xCC;
/// Start of frame, differential sequential DCT (arithmetic).
pub(super) const SOF13: u8 = 0xCD;
/// Start of frame, differential progressive DCT (arithmetic).
pub(super) const SOF14: u8 = 0xCE;
/// Start of frame, differential lossless (arithmetic).
pub(super) const SOF15: u8 = 0xCF;
/// Restart marker 0; RST`n` is `RST0 + n`, n in 0..=7.
pub(super) const RST0: u8 = 0xD0;
/// Restart marker 7, the last.
pub(super) const RST7: u8 = 0xD7;
/// Start of image.
pub(super) const SOI: u8 = 0xD8;
/// End of image.
pub(super) const EOI: u8 = 0xD9;
/// Start of scan.
pub(super) const SOS: u8 = 0xDA;
/// Define quantization tables.
pub(super) const DQT: u8 = 0xDB;
/// Define number of lines.
pub(super) const DNL: u8 = 0xDC;
/// Define restart interval.
pub(super) const DRI: u8 = 0xDD;
/// Define hierarchical progression.
pub(super) const DHP: u8 = 0xDE;
/// Expand reference components (hierarchical).
pub(super) const EXP: u8 = 0xDF;
/// Application segment 0; APP`n` is `APP0 + n`, n in 0..=15.
pub(super) const APP0: u8 = 0xE0;
/// Application segment 15, the last.
pub(super) const APP15: u8 = 0xEF;
/// Comment.
pub(super) const COM: u8 = 0xFE;

/// Displays a marker code as its name and bytes, e.g. `RST3 (FF D3)`.
pub(super) struct Marker(pub(super) u8);

impl fmt::Display for Marker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        match m {
            SOF0..=SOF15 if !matches!(m, DHT | JPG | DAC) => write!(f, "SOF{}", m - SOF0)?,
            DHT => f.write_str("DHT")?,
            DAC => f.write_str("DAC")?,
            RST0..=RST7 => write!(f, "RST{}", m - RST0)?,
            SOI => f.write_str("SOI")?,
            EOI => f.write_str("EOI")?,
            SOS => f.write_str("SOS")?,
            DQT => f.write_str("DQT")?,
            DNL => f.write_str("DNL")?,
            DRI => f.write_str("DRI")?,
            APP0..=APP15 => write!(f, "APP{}", m - APP0)?,
            COM => f.write_str("COM")?,
            _ => f.write_str("marker")?,
        }
        write!(f, " (FF {m:02X})")
    }
}

/// How deep [`walk_segments`] looks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Depth {
    /// The markers and segments only ([`check_structure`](super::check_structure)): a
    /// scan's entropy-coded data is skipped to the next marker, progressive frames are
    /// accepted, and Huffman tables need not be present (MJPEG from webcams leaves them out).
    Structure,
    /// The whole walk ([`validate`](super::validate)): every scan's Huffman-coded data is
    /// walked; `range_checks` turns the coefficient range checks on or off (off: the tests
    /// measure what the code structure alone catches).
    Entropy { range_checks: bool },
}

/// The segment walk behind [`validate`](super::validate) and
/// [`check_structure`](super::check_structure): marker by marker from SOI to EOI, each
/// segment parsed by [`super::segments`] and (at [`Depth::Entropy`]) each scan walked by
/// [`super::entropy`].
pub(super) fn walk_segments(bytes: &[u8], depth: Depth) -> Result<JpegInfo, JpegError> {
    walk_segments_resumable(bytes, depth, None)
}

/// Where a walk of part of a frame stands (see [`super::IncrementalCheck`]).
#[derive(Debug, Default)]
pub(super) struct Resume {
    /// How many bytes of the frame the walk is given (`None`: all of them).
    pub(super) limit: Option<usize>,
    /// Where the walk of the first scan paused last.
    pub(super) progress: Option<ScanProgress>,
    /// A walk with a limit went past the first scan without pausing (a fault, a marker,
    /// the scan's end, restart intervals): walking more of a part adds nothing.
    pub(super) settled: bool,
    /// What the segments before the first scan defined, kept by the first walk that got
    /// there, so later walks start at that scan's header instead of building the tables
    /// again (on the heap: about 41 KiB).
    pub(super) headers: Option<Box<Headers>>,
}

/// The tables and frame header in force at the first scan, and where its SOS marker is.
#[derive(Clone)]
pub(super) struct Headers {
    huff: [[Huffman; 4]; 2],
    /// The rest, what a walk resumed from these headers starts with.
    start: Start,
}

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Headers")
            .field("sos", &self.start.sos)
            .finish_non_exhaustive()
    }
}

impl Resume {
    /// The kept headers' size.
    pub(super) const TABLES_BYTES: usize = std::mem::size_of::<Headers>();

    /// Heap bytes held (the kept headers).
    pub(super) fn heap_bytes(&self) -> usize {
        self.headers.as_ref().map_or(0, |_| Self::TABLES_BYTES)
    }
}

/// [`walk_segments`] at [`Depth::Entropy`], whose first scan is walked on from
/// `resume.progress` and, with `resume.limit`, pauses where the bytes there are may end
/// (recording where in `resume.progress`). The verdict of a walk given part of a frame
/// means nothing (a paused walk returns [`JpegError::MissingEoi`]); a walk of the whole
/// frame from a progress found in a part of it gives exactly the verdict of a walk from
/// the start.
pub(super) fn walk_segments_resumable(
    bytes: &[u8],
    depth: Depth,
    mut resume: Option<&mut Resume>,
) -> Result<JpegInfo, JpegError> {
    if let Some(r) = resume.as_deref_mut() {
        if let Some(mut kept) = r.headers.take() {
            // the same bytes as when they were kept: start at the first scan's header, and
            // walk with the kept tables where they are (copying 40 KiB of them for every
            // advance cost more than the walk of a datagram's share)
            let Headers { huff, start } = &mut *kept;
            let start = start.clone();
            let mut tables_changed = false;
            let result = walk_from(
                bytes,
                depth,
                Some(&mut *r),
                huff,
                Some(start),
                &mut tables_changed,
            );
            // a later table definition (for a later scan) wrote into them: forget them,
            // the next walk builds them again from the bytes
            if !tables_changed {
                r.headers = Some(kept);
            }
            return result;
        }
    }
    let mut huff = [[Huffman::EMPTY; 4], [Huffman::EMPTY; 4]];
    walk_from(bytes, depth, resume, &mut huff, None, &mut false)
}

/// What a walk resumed from kept [`Headers`] starts with (the tables aside).
#[derive(Clone)]
struct Start {
    quant: [Option<[u16; 64]>; 4],
    frame: Frame,
    restart_interval: u16,
    coded: [bool; 4],
    sos: usize,
}

/// The walk of [`walk_segments_resumable`], with the Huffman tables in `huff` (empty, or
/// kept ones with `start`); `tables_changed` is set when a DHT segment wrote into them.
fn walk_from(
    bytes: &[u8],
    depth: Depth,
    mut resume: Option<&mut Resume>,
    huff: &mut [[Huffman; 4]; 2],
    start: Option<Start>,
    tables_changed: &mut bool,
) -> Result<JpegInfo, JpegError> {
    let structure_only = depth == Depth::Structure;
    let mut scans = 0;
    if !bytes.starts_with(&super::SOI) {
        return Err(JpegError::NotJpeg);
    }
    let resumed = start.is_some();
    let mut quant: [Option<[u16; 64]>; 4] = [None; 4];
    let mut frame: Option<Frame> = None;
    let mut restart_interval: u16 = 0;
    let mut first_interval: Option<u16> = None;
    let mut coded = [false; 4];
    let mut pos = 2;
    if let Some(s) = start {
        quant = s.quant;
        frame = Some(s.frame);
        restart_interval = s.restart_interval;
        coded = s.coded;
        pos = s.sos;
    }
    // Right after entropy-coded data, the marker must follow at once; between marker
    // segments, FF fill bytes may come first (the standard allows them, libjpeg skips them).
    let mut after_scan = false;
    loop {
        let Some(&b) = bytes.get(pos) else {
            return Err(JpegError::MissingEoi);
        };
        if b != PREFIX {
            return Err(JpegError::ExpectedMarker {
                offset: pos,
                found: b,
            });
        }
        while !after_scan && bytes.get(pos + 1) == Some(&PREFIX) {
            pos += 1;
        }
        after_scan = false;
        let Some(&marker) = bytes.get(pos + 1) else {
            return Err(JpegError::MissingEoi);
        };
        let unexpected = JpegError::UnexpectedMarker {
            marker,
            offset: pos,
        };
        match marker {
            EOI => {
                let Some(frame) = frame.as_ref().filter(|_| first_interval.is_some()) else {
                    return Err(unexpected);
                };
                let all_coded = (0..frame.count).find(|&i| !coded[i] && !structure_only);
                if let Some(c) = all_coded {
                    return Err(JpegError::ComponentNotCoded {
                        id: frame.comps[c].id,
                    });
                }
                let end = pos + 2;
                if end != bytes.len() {
                    return Err(JpegError::TrailingBytes {
                        bytes: bytes.len() - end,
                    });
                }
                return Ok(JpegInfo {
                    width: frame.width,
                    height: frame.height,
                    components: frame.count as u8,
                    restart_interval: first_interval.unwrap_or(0),
                });
            }
            SOF2 if structure_only => {}
            SOF2 | SOF6 | SOF10 | SOF14 => {
                return Err(JpegError::Unsupported("progressive JPEG"));
            }
            SOF3 | SOF7 | SOF11 | SOF15 => return Err(JpegError::Unsupported("lossless JPEG")),
            SOF5 | DHP | EXP => return Err(JpegError::Unsupported("hierarchical JPEG")),
            SOF9 | DAC | SOF13 => {
                return Err(JpegError::Unsupported("arithmetic-coded JPEG"));
            }
            DNL => return Err(JpegError::Unsupported("DNL marker")),
            SOF0 | SOF1 | DHT | SOS | DQT | DRI | APP0..=APP15 | COM => {}
            _ => return Err(unexpected),
        }
        // A marker segment: 2-byte big-endian length, counting itself.
        let Some(len) = bytes.get(pos + 2..pos + 4) else {
            return Err(JpegError::Truncated { offset: pos });
        };
        let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
        let end = pos + 2 + len;
        if len < 2 || end > bytes.len() {
            return Err(JpegError::Truncated { offset: pos });
        }
        let seg = &bytes[pos + 4..end];
        let bad = |reason| JpegError::BadSegment {
            marker,
            offset: pos,
            reason,
        };
        match marker {
            DHT => {
                *tables_changed = true;
                parse_dht(seg, huff).map_err(bad)?
            }
            DQT => parse_dqt(seg, &mut quant).map_err(bad)?,
            SOF0 | SOF1 | SOF2 => {
                if frame.is_some() {
                    return Err(bad("a second frame header"));
                }
                frame = Some(Frame::parse(seg, marker).map_err(|e| match e {
                    FrameError::Bad(reason) => bad(reason),
                    FrameError::Unsupported(what) => JpegError::Unsupported(what),
                })?);
            }
            DRI => restart_interval = parse_dri(seg).map_err(bad)?,
            SOS => {
                let Some(frame) = frame.as_ref() else {
                    return Err(bad("scan before the frame header (SOF)"));
                };
                first_interval.get_or_insert(restart_interval);
                if let Some(r) = resume
                    .as_deref_mut()
                    .filter(|r| r.headers.is_none() && !resumed)
                {
                    if scans == 0 {
                        r.headers = Some(Box::new(Headers {
                            huff: huff.clone(),
                            start: Start {
                                quant,
                                frame: frame.clone(),
                                restart_interval,
                                coded,
                                sos: pos,
                            },
                        }));
                    }
                }
                pos = match depth {
                    Depth::Structure => {
                        check_scan_header(seg, frame.count).map_err(bad)?;
                        skip_entropy(bytes, end)?
                    }
                    Depth::Entropy { range_checks } => {
                        let scan = Scan::parse(seg, frame, &mut coded, huff, &quant, range_checks)
                            .map_err(bad)?;
                        #[cfg(test)]
                        if super::reference_walk::ACTIVE.with(|a| a.get()) {
                            super::reference_walk::walk_scan(
                                bytes,
                                end,
                                frame,
                                scan,
                                restart_interval,
                            )?
                        } else {
                            walk_first_or_next(
                                bytes,
                                end,
                                frame,
                                scan,
                                restart_interval,
                                &mut scans,
                                &mut resume,
                            )?
                        }
                        #[cfg(not(test))]
                        walk_first_or_next(
                            bytes,
                            end,
                            frame,
                            scan,
                            restart_interval,
                            &mut scans,
                            &mut resume,
                        )?
                    }
                };
                after_scan = true;
                continue;
            }
            _ => {} // APPn, COM
        }
        pos = end;
    }
}

/// Walk a scan: the first one resumably when there is a `resume` (see
/// [`walk_segments_resumable`]), the others from their start.
fn walk_first_or_next(
    bytes: &[u8],
    start: usize,
    frame: &Frame,
    scan: Scan,
    restart_interval: u16,
    scans: &mut u32,
    resume: &mut Option<&mut Resume>,
) -> Result<usize, JpegError> {
    *scans += 1;
    let Some(r) = resume.as_deref_mut().filter(|_| *scans == 1) else {
        return walk_scan(bytes, start, frame, scan, restart_interval);
    };
    match walk_scan_from(
        bytes,
        start,
        frame,
        scan,
        restart_interval,
        r.progress,
        r.limit,
    ) {
        Walked::Done(result) => {
            r.settled |= r.limit.is_some();
            result
        }
        Walked::Paused(progress) => {
            r.progress = Some(progress);
            Err(JpegError::MissingEoi)
        }
    }
}

/// The structure check's look at a scan header: 1..=4 components, each of the frame's
/// count at most, and a length that matches (the component ids, tables and progression
/// fields are the decoder's business).
fn check_scan_header(seg: &[u8], frame_components: usize) -> Result<(), &'static str> {
    let Some(&count) = seg.first() else {
        return Err("empty scan header");
    };
    let count = usize::from(count);
    if !(1..=frame_components.min(4)).contains(&count) {
        return Err("number of scan components must be 1..=4 and at most the frame's");
    }
    if seg.len() != 1 + 2 * count + 3 {
        return Err("length does not match the number of components");
    }
    Ok(())
}

/// Skip a scan's entropy-coded data from `from`: the offset of the marker that ends it.
/// In coded data `FF` is followed by `00` (a stuffed data byte), a restart marker, fill
/// `FF`s, or the marker that ends the scan; the data must end with such a marker.
fn skip_entropy(bytes: &[u8], from: usize) -> Result<usize, JpegError> {
    let mut pos = from;
    loop {
        let Some(at) = bytes
            .get(pos..)
            .and_then(|b| b.iter().position(|&x| x == PREFIX))
        else {
            return Err(JpegError::MissingEoi);
        };
        let ff = pos + at;
        match bytes.get(ff + 1) {
            None => return Err(JpegError::MissingEoi),
            Some(0x00) | Some(RST0..=RST7) => pos = ff + 2,
            Some(&PREFIX) => pos = ff + 1,
            Some(_) => return Ok(ff),
        }
    }
}
