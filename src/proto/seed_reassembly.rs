//! Reassembly of seed 002's UDP image formats, per sender address, robust to loss.
//!
//! The seed format has no frame id and no chunk index, so this state machine relies on what
//! the bytes themselves say:
//! - with no frame in progress from a sender, a 4- or 8-byte datagram is a length header, a
//!   datagram that is a complete JPEG (FF D8 .. FF D9) is a whole frame, an empty datagram
//!   is the seed's trailing empty chunk, and anything else is stray data (rejected);
//! - with a frame in progress, datagrams are appended until the header's byte count is
//!   reached exactly; then the frame is delivered and acked only if it is a complete JPEG.
//!   A valid header arriving instead means datagrams were lost: the partial frame is dropped and the new header starts the next
//!   frame, so one lost datagram costs one frame, never the stream. A datagram that would
//!   overrun the count marks the frame corrupt and is then looked at afresh.
//! - a partial frame that gets no datagram for `frame_timeout` is dropped;
//! - memory is bounded: bytes are allocated and charged only as they arrive (never on a
//!   header's claim: a header alone costs [`PARTIAL_OVERHEAD`], and a buffer stays under
//!   twice what came, see [`grow_for`]), and past `max_partial_bytes` (or
//!   `max_partial_frames`) a partial frame is dropped by the fair-share policy of
//!   [`super::memory`]: senders that never completed a frame first, the heaviest address
//!   range and then the heaviest sender in it first, so a flood of headers from many
//!   sockets evicts only itself;
//! - no amplification ([`super::reply_credit`]): the 14-byte ack goes only to a sender
//!   whose frame took at least as many bytes.
//!
//! What the seed format cannot show: two chunks swapped by the network, or one lost and
//! another of the same size duplicated, leave a frame of the right length with SOI and EOI.
//! So a frame assembled from several datagrams must also pass [`jpegcheck::validate`], a walk of
//! its Huffman-coded data (about 0.1 to 0.7 ms for a 640x480 frame) that finds data out of
//! place; a JPEG kind it does not walk (progressive, arithmetic) falls back to the SOI/EOI
//! check. The walk runs as the datagrams come ([`IncrementalCheck`], every 8 KiB), so when
//! the last one arrives only the last few kilobytes are left to walk before the ack. A
//! frame in one datagram cannot be reordered and gets the SOI/EOI check only. The framed
//! protocol carries chunk indices and needs none of this.

use super::memory::{grow_for, PartialMemory};
use super::Transmit;
use crate::jpegcheck::{self, is_complete_jpeg, IncrementalCheck, JpegError};
use crate::wire::seed_udp::{self, HeaderError, HeaderWidth, IMG_ACK};
use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Bytes charged to the memory budget for each partial frame on top of its buffer, so a
/// flood of headers alone is bounded too.
pub const PARTIAL_OVERHEAD: usize = 256;

/// Limits of the reassembler.
#[derive(Clone, Debug)]
pub struct SeedConfig {
    /// Largest frame a header may announce.
    pub max_frame_bytes: u64,
    /// A partial frame with no datagram for this long is dropped.
    pub frame_timeout: Duration,
    /// Memory all partial frames together may hold (buffers plus [`PARTIAL_OVERHEAD`] each).
    pub max_partial_bytes: usize,
    /// Number of partial frames (senders mid-frame) at most.
    pub max_partial_frames: usize,
}

impl Default for SeedConfig {
    fn default() -> Self {
        SeedConfig {
            max_frame_bytes: 16 << 20,
            frame_timeout: Duration::from_millis(1000),
            max_partial_bytes: 64 << 20,
            max_partial_frames: 1024,
        }
    }
}

/// Why a partial frame was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// No datagram for `frame_timeout`.
    Timeout,
    /// A new header came before the frame was complete (datagrams were lost).
    Superseded,
    /// The memory or count budget for partial frames was exceeded; this was the oldest.
    Evicted,
}

/// Why a complete-length frame was not delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Corruption {
    /// The byte count matched but the bytes are not a complete JPEG.
    NotJpeg,
    /// Complete, but its coded data is out of place (chunks reordered, lost or duplicated).
    BadData(JpegError),
    /// A datagram would have taken the frame past the header's byte count.
    Overrun,
}

/// Why a datagram was not used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// A 4- or 8-byte datagram whose length is 0, negative or too large.
    BadHeader(HeaderError),
    /// Data with no frame in progress, and not a whole JPEG.
    Stray { len: usize },
}

/// What the reassembler has to report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SeedEvent {
    /// An intact frame (already acked through `poll_transmit`).
    Frame { from: SocketAddr, jpeg: Vec<u8> },
    /// A frame that reached (or overran) its length but failed the check. Not acked.
    Corrupt {
        from: SocketAddr,
        reason: Corruption,
        expected: u64,
    },
    /// A partial frame given up.
    Dropped {
        from: SocketAddr,
        reason: DropReason,
        received: usize,
        expected: u64,
    },
    /// A datagram that was not used.
    Rejected { from: SocketAddr, reason: Rejection },
}

impl fmt::Display for SeedEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SeedEvent::Frame { from, jpeg } => {
                write!(f, "frame of {} bytes from {from}", jpeg.len())
            }
            SeedEvent::Corrupt {
                from,
                reason,
                expected,
            } => {
                let why = match reason {
                    Corruption::NotJpeg => "is not a complete JPEG".to_string(),
                    Corruption::BadData(e) => format!("is not a valid JPEG ({e})"),
                    Corruption::Overrun => "overran its length".to_string(),
                };
                write!(
                    f,
                    "corrupt frame from {from}: {expected} bytes announced, data {why}"
                )
            }
            SeedEvent::Dropped {
                from,
                reason,
                received,
                expected,
            } => {
                let why = match reason {
                    DropReason::Timeout => "no datagram within the frame timeout",
                    DropReason::Superseded => "a new header came first (datagrams lost)",
                    DropReason::Evicted => "partial-frame memory budget exceeded",
                };
                write!(
                    f,
                    "dropped partial frame from {from} ({received} of {expected} bytes): {why}"
                )
            }
            SeedEvent::Rejected {
                from,
                reason: Rejection::BadHeader(e),
            } => {
                write!(f, "rejected header from {from}: {e}")
            }
            SeedEvent::Rejected {
                from,
                reason: Rejection::Stray { len },
            } => {
                write!(f, "rejected {len}-byte datagram from {from}: no frame in progress and not a whole JPEG")
            }
        }
    }
}

struct Partial {
    expected: u64,
    buf: Vec<u8>,
    last_seen: Instant,
    /// The JPEG walk of the bytes so far, so that the last datagram leaves only its share.
    check: IncrementalCheck,
}

impl Partial {
    fn held(&self) -> usize {
        self.buf.capacity() + PARTIAL_OVERHEAD + self.check.heap_bytes()
    }
}

/// The per-sender reassembler for the seed formats. See the module documentation.
pub struct SeedReassembler {
    config: SeedConfig,
    partials: HashMap<SocketAddr, Partial>,
    memory: PartialMemory,
    /// No partial frame times out before this (a lower bound: exact after
    /// `handle_timeout`, and a partial's deadline only moves later as datagrams come).
    wake_at: Option<Instant>,
    events: VecDeque<SeedEvent>,
    transmits: VecDeque<Transmit>,
}

impl SeedReassembler {
    pub fn new(config: SeedConfig) -> Self {
        SeedReassembler {
            memory: PartialMemory::new(config.max_partial_bytes),
            config,
            partials: HashMap::new(),
            wake_at: None,
            events: VecDeque::new(),
            transmits: VecDeque::new(),
        }
    }

    pub fn config(&self) -> &SeedConfig {
        &self.config
    }

    /// Feed one datagram received from `from` at time `now`.
    pub fn handle_datagram(&mut self, from: SocketAddr, data: &[u8], now: Instant) {
        let Some(partial) = self.partials.get_mut(&from) else {
            return self.handle_idle(from, data, now);
        };
        if now.saturating_duration_since(partial.last_seen) >= self.config.frame_timeout {
            self.drop_partial(from, DropReason::Timeout);
            return self.handle_idle(from, data, now);
        }
        if data.is_empty() {
            return; // noise; a seed sender's trailing empty chunk comes after a complete frame
        }
        let remaining = partial.expected as usize - partial.buf.len();
        // A valid header's last byte is 0x00 (its top byte, for any length up to 2^56), so
        // it can never be the end of a JPEG: read it as the next frame's header even when
        // it is exactly the byte count still missing.
        if seed_udp::parse_length_header(data, self.config.max_frame_bytes).is_ok() {
            self.drop_partial(from, DropReason::Superseded);
            return self.handle_idle(from, data, now);
        }
        if data.len() > remaining {
            let expected = partial.expected;
            self.remove_partial(from);
            self.events.push_back(SeedEvent::Corrupt {
                from,
                reason: Corruption::Overrun,
                expected,
            });
            return self.handle_idle(from, data, now);
        }
        let before = partial.held();
        grow_for(&mut partial.buf, data.len(), partial.expected as usize);
        partial.buf.extend_from_slice(data);
        partial.last_seen = now;
        let complete = partial.buf.len() as u64 == partial.expected;
        if !complete {
            partial.check.advance(&partial.buf);
        }
        let after = partial.held();
        self.memory.recharge(from, before, after, now);
        if complete {
            let partial = self.remove_partial(from).expect("present");
            self.finish(from, partial.buf, partial.expected, Some(partial.check));
        } else {
            self.evict_until_within_budget();
        }
    }

    /// When [`SeedReassembler::handle_timeout`] should next be called: when the oldest
    /// partial frame may time out (never later; at worst a call finds nothing to drop).
    /// `None` with no partial frame.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.wake_at
    }

    /// Drop every partial frame that has had no datagram for `frame_timeout` as of `now`.
    /// Call it at [`SeedReassembler::poll_timeout`] (earlier or more often does no harm).
    pub fn handle_timeout(&mut self, now: Instant) {
        let timeout = self.config.frame_timeout;
        let stale: Vec<SocketAddr> = self
            .partials
            .iter()
            .filter(|(_, p)| now.saturating_duration_since(p.last_seen) >= timeout)
            .map(|(a, _)| *a)
            .collect();
        for from in stale {
            self.drop_partial(from, DropReason::Timeout);
        }
        self.wake_at = self.partials.values().map(|p| p.last_seen + timeout).min();
    }

    /// The next thing to report, oldest first.
    pub fn poll_event(&mut self) -> Option<SeedEvent> {
        self.events.pop_front()
    }

    /// The next datagram to send (acks), oldest first.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// Bytes currently charged to the partial-frame budget.
    pub fn partial_bytes(&self) -> usize {
        self.memory.total()
    }

    /// Bytes charged to the partial-frame budget for `from`'s partial frame.
    pub fn partial_bytes_of(&self, from: SocketAddr) -> usize {
        self.memory.held_by(from)
    }

    /// Senders currently mid-frame.
    pub fn partial_frames(&self) -> usize {
        self.partials.len()
    }

    /// Whether `from` is mid-frame.
    pub fn has_partial(&self, from: SocketAddr) -> bool {
        self.partials.contains_key(&from)
    }

    fn handle_idle(&mut self, from: SocketAddr, data: &[u8], now: Instant) {
        if data.is_empty() {
            return; // the seed's trailing empty chunk after a multiple-of-1024 frame
        }
        if HeaderWidth::of_len(data.len()).is_some() {
            match seed_udp::parse_length_header(data, self.config.max_frame_bytes) {
                Ok(expected) => self.start_partial(from, expected, now),
                Err(e) => self.events.push_back(SeedEvent::Rejected {
                    from,
                    reason: Rejection::BadHeader(e),
                }),
            }
        } else if is_complete_jpeg(data) {
            self.finish(from, data.to_vec(), data.len() as u64, None);
        } else {
            self.events.push_back(SeedEvent::Rejected {
                from,
                reason: Rejection::Stray { len: data.len() },
            });
        }
    }

    fn start_partial(&mut self, from: SocketAddr, expected: u64, now: Instant) {
        while self.partials.len() >= self.config.max_partial_frames.max(1) {
            self.evict_one();
        }
        let partial = Partial {
            expected,
            buf: Vec::new(),
            last_seen: now,
            check: IncrementalCheck::new(),
        };
        self.memory.charge(from, partial.held(), now);
        let deadline = now + self.config.frame_timeout;
        self.wake_at = Some(self.wake_at.map_or(deadline, |w| w.min(deadline)));
        self.partials.insert(from, partial);
        self.evict_until_within_budget();
    }

    /// Deliver and ack `jpeg` if it passes the check (see the module comment; `assembled`:
    /// it came in several datagrams, walked as they came), or report it corrupt.
    fn finish(
        &mut self,
        from: SocketAddr,
        jpeg: Vec<u8>,
        expected: u64,
        assembled: Option<IncrementalCheck>,
    ) {
        let structure = |jpeg: &[u8]| {
            jpegcheck::check_structure(jpeg)
                .map(drop)
                .map_err(Corruption::BadData)
        };
        let verdict = if !is_complete_jpeg(&jpeg) {
            Err(Corruption::NotJpeg)
        } else if let Some(check) = assembled {
            // the full walk where chunks could be out of order (the rest of the walk that
            // ran as they came, with the same verdict); what it cannot walk (progressive
            // frames) must at least have the structure of a JPEG
            match check.finish(&jpeg) {
                Ok(_) => Ok(()),
                Err(JpegError::Unsupported(_)) => structure(&jpeg),
                Err(e) => Err(Corruption::BadData(e)),
            }
        } else {
            structure(&jpeg)
        };
        if let Err(reason) = verdict {
            self.events.push_back(SeedEvent::Corrupt {
                from,
                reason,
                expected,
            });
        } else {
            // no amplification: the frame's own bytes came from `from`, at least as many
            // as the ack unless the "JPEG" is shorter than it
            if jpeg.len() >= IMG_ACK.len() {
                self.transmits.push_back(Transmit {
                    to: from,
                    payload: Cow::Borrowed(IMG_ACK),
                });
            }
            self.memory.mark_completed(from);
            self.events.push_back(SeedEvent::Frame { from, jpeg });
        }
    }

    fn remove_partial(&mut self, from: SocketAddr) -> Option<Partial> {
        let partial = self.partials.remove(&from)?;
        self.memory.release(from, partial.held());
        Some(partial)
    }

    fn drop_partial(&mut self, from: SocketAddr, reason: DropReason) {
        if let Some(p) = self.remove_partial(from) {
            self.events.push_back(SeedEvent::Dropped {
                from,
                reason,
                received: p.buf.len(),
                expected: p.expected,
            });
        }
    }

    fn evict_until_within_budget(&mut self) {
        while self.memory.over_budget() && !self.partials.is_empty() {
            self.evict_one();
        }
    }

    /// Drop the partial frame of the sender the fair-share policy picks
    /// ([`PartialMemory::victim`]; every partial frame is charged at least its overhead).
    fn evict_one(&mut self) {
        if let Some(from) = self.memory.victim() {
            self.drop_partial(from, DropReason::Evicted);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::seed_udp::{emit_length_header, seed_chunks};

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    /// A real JPEG of exactly `len` bytes: the reassembler walks its coded data.
    fn jpeg(len: usize, seed: u8) -> Vec<u8> {
        crate::media::testjpeg::jpeg_of_len(len, u64::from(seed)).unwrap()
    }

    /// The seed sender's datagrams for one frame: header, then 1024-byte chunks.
    fn seed_datagrams(frame: &[u8]) -> Vec<Vec<u8>> {
        let mut d = vec![emit_length_header(frame.len() as i64, HeaderWidth::Eight).unwrap()];
        d.extend(seed_chunks(frame, 1024).map(<[u8]>::to_vec));
        d
    }

    struct Run {
        frames: Vec<(SocketAddr, Vec<u8>)>,
        acks: Vec<SocketAddr>,
        other: Vec<SeedEvent>,
    }

    fn drain(r: &mut SeedReassembler) -> Run {
        let mut run = Run {
            frames: vec![],
            acks: vec![],
            other: vec![],
        };
        while let Some(e) = r.poll_event() {
            match e {
                SeedEvent::Frame { from, jpeg } => run.frames.push((from, jpeg)),
                e => run.other.push(e),
            }
        }
        while let Some(t) = r.poll_transmit() {
            assert_eq!(&*t.payload, IMG_ACK);
            run.acks.push(t.to);
        }
        run
    }

    fn feed(r: &mut SeedReassembler, from: SocketAddr, datagrams: &[Vec<u8>], now: Instant) {
        for d in datagrams {
            r.handle_datagram(from, d, now);
        }
    }

    #[test]
    fn reassembles_a_chunked_frame_and_acks_once() {
        let mut r = SeedReassembler::new(SeedConfig::default());
        let now = Instant::now();
        for len in [800, 1023, 1024, 1025, 2048, 66_000] {
            let f = jpeg(len, 1);
            feed(&mut r, addr(1), &seed_datagrams(&f), now);
            let run = drain(&mut r);
            assert_eq!(run.frames, vec![(addr(1), f)], "len {len}");
            assert_eq!(run.acks, vec![addr(1)]);
            assert!(run.other.is_empty(), "{:?}", run.other);
            assert_eq!(r.partial_frames(), 0);
            assert_eq!(r.partial_bytes(), 0);
        }
    }

    #[test]
    fn whole_jpeg_in_one_datagram_and_4_byte_headers() {
        let mut r = SeedReassembler::new(SeedConfig::default());
        let now = Instant::now();
        let f = jpeg(5000, 2);
        r.handle_datagram(addr(1), &f, now);
        r.handle_datagram(
            addr(2),
            &emit_length_header(5000, HeaderWidth::Four).unwrap(),
            now,
        );
        for c in f.chunks(2048) {
            r.handle_datagram(addr(2), c, now);
        }
        let run = drain(&mut r);
        assert_eq!(run.frames, vec![(addr(1), f.clone()), (addr(2), f)]);
        assert_eq!(run.acks, vec![addr(1), addr(2)]);
    }

    #[test]
    fn interleaved_senders_never_mix() {
        let mut r = SeedReassembler::new(SeedConfig::default());
        let now = Instant::now();
        let (a, b) = (jpeg(5000, 3), jpeg(7000, 4));
        let (da, db) = (seed_datagrams(&a), seed_datagrams(&b));
        for i in 0..da.len().max(db.len()) {
            if let Some(d) = da.get(i) {
                r.handle_datagram(addr(1), d, now);
            }
            if let Some(d) = db.get(i) {
                r.handle_datagram(addr(2), d, now);
            }
        }
        let mut run = drain(&mut r);
        run.frames.sort();
        assert_eq!(run.frames, vec![(addr(1), a), (addr(2), b)]);
    }

    #[test]
    fn one_lost_datagram_costs_one_frame_never_the_stream() {
        let now = Instant::now();
        let f = jpeg(5000, 5);
        let good = seed_datagrams(&f);
        for lost in 0..good.len() {
            let mut r = SeedReassembler::new(SeedConfig::default());
            let mut damaged = good.clone();
            damaged.remove(lost);
            feed(&mut r, addr(1), &damaged, now);
            feed(&mut r, addr(1), &good, now);
            let run = drain(&mut r);
            assert_eq!(
                run.frames,
                vec![(addr(1), f.clone())],
                "lost datagram {lost}"
            );
            assert_eq!(run.acks.len(), 1, "lost datagram {lost}");
        }
    }

    #[test]
    fn duplicated_datagram_is_never_acked() {
        let now = Instant::now();
        let f = jpeg(5000, 6);
        let good = seed_datagrams(&f);
        for dup in 1..good.len() {
            let mut r = SeedReassembler::new(SeedConfig::default());
            let mut damaged = good.clone();
            damaged.insert(dup, good[dup].clone());
            feed(&mut r, addr(1), &damaged, now);
            let run = drain(&mut r);
            // The frame completes before the duplicate of the last chunk arrives: that one
            // is a stray. Any other duplicate makes the frame corrupt.
            if dup == good.len() - 1 {
                assert_eq!(run.frames.len(), 1);
            } else {
                assert!(run.frames.is_empty(), "dup {dup}");
                assert!(run.acks.is_empty(), "dup {dup}");
            }
            feed(&mut r, addr(1), &good, now);
            let run = drain(&mut r);
            assert_eq!(run.frames, vec![(addr(1), f.clone())], "after dup {dup}");
        }
    }

    /// The case the SOI/EOI check cannot see: two full-size chunks swapped (length, SOI and
    /// EOI all right), or a chunk lost and the one before it duplicated in its place. Every
    /// such frame is reported corrupt, never delivered or acked, and the next frame from
    /// the same sender goes through.
    #[test]
    fn reordered_or_replaced_chunks_are_corrupt_and_never_acked() {
        let now = Instant::now();
        let f = jpeg(20 * 1024 + 500, 14);
        let good = seed_datagrams(&f);
        // good[0] is the header, good[1..=20] full chunks, good[21] the 500-byte tail.
        // Chunk 1 holds SOI and the headers (a swap there fails the SOI check); from chunk 2
        // on it is all coded data.
        let mut damaged_frames = Vec::new();
        for i in 2..20 {
            let mut swapped = good.clone();
            swapped.swap(i, i + 1);
            damaged_frames.push((format!("chunks {i} and {} swapped", i + 1), swapped));
            let mut replaced = good.clone();
            replaced[i + 1] = good[i].clone();
            damaged_frames.push((format!("chunk {} replaced by {i}", i + 1), replaced));
        }
        for (what, damaged) in damaged_frames {
            let mut r = SeedReassembler::new(SeedConfig::default());
            feed(&mut r, addr(1), &damaged, now);
            let run = drain(&mut r);
            assert!(run.frames.is_empty() && run.acks.is_empty(), "{what}");
            assert!(
                matches!(
                    run.other[..],
                    [SeedEvent::Corrupt {
                        reason: Corruption::BadData(_),
                        expected,
                        ..
                    }] if expected == f.len() as u64
                ),
                "{what}: {:?}",
                run.other
            );
            feed(&mut r, addr(1), &good, now);
            let run = drain(&mut r);
            assert_eq!(run.frames, vec![(addr(1), f.clone())], "after {what}");
            assert_eq!(run.acks, vec![addr(1)], "after {what}");
        }
    }

    /// A frame in one datagram gets the structure check only (it cannot be reordered), so
    /// filler for coded data passes there, while the same bytes in chunks do not; bytes
    /// that merely start with SOI and end with EOI pass neither.
    #[test]
    fn coded_data_is_walked_only_for_frames_in_several_datagrams() {
        let now = Instant::now();
        let mut r = SeedReassembler::new(SeedConfig::default());
        let mut shaped = vec![0x5A; 3000];
        shaped[..2].copy_from_slice(&[0xFF, 0xD8]);
        shaped[2998..].copy_from_slice(&[0xFF, 0xD9]);
        r.handle_datagram(addr(1), &shaped, now);
        let run = drain(&mut r);
        assert!(run.frames.is_empty() && run.acks.is_empty());
        assert!(
            matches!(
                run.other[..],
                [SeedEvent::Corrupt {
                    reason: Corruption::BadData(JpegError::ExpectedMarker { .. }),
                    ..
                }]
            ),
            "{:?}",
            run.other
        );
        let f = crate::jpegcheck::filler_jpeg(3000, 0x5A);
        r.handle_datagram(addr(1), &f, now);
        assert_eq!(drain(&mut r).frames, vec![(addr(1), f.clone())]);
        feed(&mut r, addr(1), &seed_datagrams(&f), now);
        let run = drain(&mut r);
        assert!(run.frames.is_empty() && run.acks.is_empty());
        assert!(
            matches!(
                run.other[..],
                [SeedEvent::Corrupt {
                    reason: Corruption::BadData(JpegError::BadSegment { .. }),
                    ..
                }]
            ),
            "{:?}",
            run.other
        );
    }

    #[test]
    fn bad_headers_are_rejected_and_the_next_frame_works() {
        let mut r = SeedReassembler::new(SeedConfig::default());
        let now = Instant::now();
        for bad in [
            emit_length_header(0, HeaderWidth::Eight).unwrap(),
            emit_length_header(-5, HeaderWidth::Eight).unwrap(),
            emit_length_header(1 << 62, HeaderWidth::Eight).unwrap(),
            vec![1, 2, 3],
            vec![],
        ] {
            r.handle_datagram(addr(1), &bad, now);
            assert_eq!(r.partial_frames(), 0, "no state kept for {bad:?}");
        }
        let run = drain(&mut r);
        assert_eq!(run.other.len(), 4, "{:?}", run.other); // the empty datagram is ignored
        let f = jpeg(3000, 7);
        feed(&mut r, addr(1), &seed_datagrams(&f), now);
        assert_eq!(drain(&mut r).frames, vec![(addr(1), f)]);
    }

    #[test]
    fn losing_exactly_the_last_8_bytes_costs_only_that_frame() {
        let mut r = SeedReassembler::new(SeedConfig::default());
        let now = Instant::now();
        let a = jpeg(1024 + 8, 12);
        let b = jpeg(3000, 13);
        let mut d = seed_datagrams(&a);
        d.pop(); // the 8-byte tail of frame a is lost
        feed(&mut r, addr(1), &d, now);
        feed(&mut r, addr(1), &seed_datagrams(&b), now);
        let run = drain(&mut r);
        assert_eq!(run.frames, vec![(addr(1), b)]);
        assert_eq!(run.acks.len(), 1);
    }

    #[test]
    fn header_twice_then_data() {
        let mut r = SeedReassembler::new(SeedConfig::default());
        let now = Instant::now();
        let f = jpeg(3000, 8);
        let mut d = seed_datagrams(&f);
        d.insert(0, d[0].clone());
        feed(&mut r, addr(1), &d, now);
        assert_eq!(drain(&mut r).frames, vec![(addr(1), f)]);
    }

    #[test]
    fn right_length_but_not_a_jpeg_is_corrupt_and_not_acked() {
        let mut r = SeedReassembler::new(SeedConfig::default());
        let now = Instant::now();
        let mut f = jpeg(3000, 9);
        f[2999] = 0;
        feed(&mut r, addr(1), &seed_datagrams(&f), now);
        let run = drain(&mut r);
        assert!(run.frames.is_empty() && run.acks.is_empty());
        assert!(matches!(
            run.other[..],
            [SeedEvent::Corrupt {
                reason: Corruption::NotJpeg,
                expected: 3000,
                ..
            }]
        ));
    }

    #[test]
    fn stalled_frame_times_out_and_the_sender_resyncs() {
        let mut r = SeedReassembler::new(SeedConfig {
            frame_timeout: Duration::from_millis(1000),
            ..SeedConfig::default()
        });
        let t0 = Instant::now();
        let f = jpeg(5000, 10);
        let d = seed_datagrams(&f);
        assert_eq!(r.poll_timeout(), None, "no partial frame, no timer");
        feed(&mut r, addr(1), &d[..3], t0);
        assert_eq!(r.poll_timeout(), Some(t0 + Duration::from_millis(1000)));
        r.handle_timeout(t0 + Duration::from_millis(999));
        assert_eq!(r.partial_frames(), 1, "not yet");
        r.handle_timeout(t0 + Duration::from_millis(1000));
        assert_eq!(r.partial_frames(), 0);
        assert_eq!(r.poll_timeout(), None);
        let run = drain(&mut r);
        assert!(matches!(
            run.other[..],
            [SeedEvent::Dropped {
                reason: DropReason::Timeout,
                received: 2048,
                expected: 5000,
                ..
            }]
        ));
        // the rest of the old frame arrives late: strays, never a frame
        feed(&mut r, addr(1), &d[3..], t0 + Duration::from_millis(1500));
        let run = drain(&mut r);
        assert!(run.frames.is_empty() && run.acks.is_empty());
        feed(&mut r, addr(1), &d, t0 + Duration::from_millis(1600));
        assert_eq!(drain(&mut r).frames, vec![(addr(1), f)]);
    }

    #[test]
    fn poll_timeout_is_never_later_than_the_oldest_partials_deadline() {
        let mut r = SeedReassembler::new(SeedConfig::default());
        let t0 = Instant::now();
        let d = seed_datagrams(&jpeg(5000, 10));
        feed(&mut r, addr(1), &d[..2], t0);
        let t1 = t0 + Duration::from_millis(400);
        feed(&mut r, addr(1), &d[2..3], t1);
        assert_eq!(r.poll_timeout(), Some(t0 + Duration::from_millis(1000)));
        r.handle_timeout(t0 + Duration::from_millis(1000));
        assert_eq!(r.partial_frames(), 1, "it had a datagram 400 ms in");
        assert_eq!(r.poll_timeout(), Some(t1 + Duration::from_millis(1000)));
    }

    #[test]
    fn a_stale_partial_is_dropped_on_the_senders_next_datagram() {
        let mut r = SeedReassembler::new(SeedConfig::default());
        let t0 = Instant::now();
        let f = jpeg(5000, 11);
        let d = seed_datagrams(&f);
        feed(&mut r, addr(1), &d[..2], t0);
        // no handle_timeout call: the next datagram, 2 s later, finds the partial stale
        feed(&mut r, addr(1), &d[2..], t0 + Duration::from_secs(2));
        let run = drain(&mut r);
        assert!(run.frames.is_empty());
        assert!(matches!(
            run.other[0],
            SeedEvent::Dropped {
                reason: DropReason::Timeout,
                ..
            }
        ));
    }

    #[test]
    fn memory_budget_drops_the_oldest_partial() {
        // (a partial frame also holds its walk's tables once the walk reached its scan:
        // room for two of them)
        let budget = 200_000 + 2 * IncrementalCheck::tables_bytes();
        let mut r = SeedReassembler::new(SeedConfig {
            max_partial_bytes: budget,
            ..SeedConfig::default()
        });
        let t0 = Instant::now();
        let frames: Vec<Vec<u8>> = (0..4).map(|i| jpeg(150_000, i)).collect();
        // four senders each get 100 KB into a 150 KB frame: the budget holds at most one or
        // two, and always drops the oldest
        for (i, f) in frames.iter().enumerate() {
            let d = seed_datagrams(f);
            feed(
                &mut r,
                addr(i as u16),
                &d[..100],
                t0 + Duration::from_millis(i as u64),
            );
            assert!(r.partial_bytes() <= budget);
        }
        let run = drain(&mut r);
        let evicted: Vec<SocketAddr> = run
            .other
            .iter()
            .filter_map(|e| match e {
                SeedEvent::Dropped {
                    from,
                    reason: DropReason::Evicted,
                    ..
                } => Some(*from),
                _ => None,
            })
            .collect();
        assert!(!evicted.is_empty());
        assert_eq!(evicted[0], addr(0), "oldest first");
        assert!(r.partial_frames() >= 1);
        // the newest sender still completes its frame
        let d = seed_datagrams(&frames[3]);
        feed(&mut r, addr(3), &d[100..], t0 + Duration::from_millis(10));
        assert_eq!(drain(&mut r).frames, vec![(addr(3), frames[3].clone())]);
    }

    #[test]
    fn header_flood_is_bounded_by_count() {
        let mut r = SeedReassembler::new(SeedConfig {
            max_partial_frames: 8,
            ..SeedConfig::default()
        });
        let now = Instant::now();
        for port in 0..100 {
            r.handle_datagram(
                addr(port),
                &emit_length_header(16 << 20, HeaderWidth::Eight).unwrap(),
                now,
            );
        }
        assert_eq!(r.partial_frames(), 8);
        assert_eq!(r.partial_bytes(), 8 * PARTIAL_OVERHEAD);
    }

    #[test]
    fn buffer_never_grows_past_the_frame() {
        let mut buf = Vec::new();
        grow_for(&mut buf, 1024, 1500);
        assert!(buf.capacity() >= 1024 && buf.capacity() <= 1500 + 64);
        let mut buf = Vec::new();
        grow_for(&mut buf, 1024, 16 << 20);
        assert!(
            buf.capacity() < 128 * 1024,
            "first allocation bounded by arrived bytes"
        );
    }
}
