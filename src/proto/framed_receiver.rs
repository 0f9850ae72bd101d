//! The hub's side of the framed protocol ([`crate::wire::framed`]): reassembles frames out
//! of order, ignores duplicates, asks for missing chunks, and acks each frame once complete.
//!
//! State is kept per sender address, for one stream at a time: a datagram with a new stream
//! id from the same address means the sender restarted, and its old partial frames are
//! dropped. Rules:
//! - a frame is delivered only when every chunk is there, the length is exact, and the bytes
//!   are a complete JPEG; it is acked `Delivered` (or `Rejected` when not a JPEG or too big);
//! - when the last chunk of an incomplete frame arrives (also as a resend: the sender's probe
//!   after a timeout), or a chunk flagged [`framed::POLL`] (the last of a batch of
//!   resends), the hub answers with a nack listing the missing chunk ranges;
//! - a chunk of a frame already finished is answered with that frame's ack again (the first
//!   one may have been lost); a parity shard of one only when it is the last or polled;
//! - parity ([`framed::PARITY`]): a frame's parity shards are kept with its chunks (and
//!   charged to the same budget); as soon as the chunks and shards held are as many as its
//!   data chunks, the missing chunks are rebuilt (reed-solomon-simd's decoder), the whole
//!   frame is checked against the shards' check ([`framed::frame_check`]) and, when it
//!   matches, finished as any complete frame (its ack saying how many chunks were rebuilt).
//!   This is sooner than the frame's last datagram: the loss of the last shard costs no
//!   probe. A check that differs (a wrong shard) drops the frame's shards (later ones are
//!   not kept) and the missing chunks are nacked as without parity: a frame is never
//!   delivered from a wrong shard. When the frame has parity, its last datagram is the
//!   last shard, not the last data chunk;
//! - latest frame wins: once a frame is delivered, older partial frames of the stream are
//!   dropped and acked `Stale`, and chunks of older frames are answered `Stale`;
//! - partial frames expire after `frame_timeout`; memory is bounded per stream (a few partial
//!   frames) and in total, shared fairly between senders ([`super::memory`]: senders that
//!   never completed a frame are evicted first, the heaviest address range first).
//!
//! Memory is charged for what arrived, never for what a header claims: a frame's chunks
//! that come in order are appended to one buffer that grows with them ([`grow_for`]: at
//! most twice what came, never past the frame's length); a chunk past a gap is kept on its
//! own until the gap fills, and then moved into the buffer. Nothing is allocated, zeroed or
//! booked for chunks that have not come, so a header claiming 16 MiB in 32768 chunks costs
//! the one chunk that came, and the work per datagram is O(datagram) (the missing ranges
//! of a nack are found from the chunks held, up to the nack's size, not by a walk over the
//! claimed count).
//!
//! Replies obey [`super::reply_credit`]: an address gets at most as many bytes back as it
//! sent until a frame from it has completed (then three times). A nack is cut to the
//! ranges that fit (the sender resends those and polls again); an ack that does not fit is
//! not sent (the sender probes again).
//!
//! Time: a chunk flagged [`framed::CLOCK`] or [`framed::CAPTURED`] is answered with an ack
//! carrying the hub's wall clock ([`framed::HUB_TIME`]) when the chunk is at least as long
//! as that ack, so the sender can estimate the clock offset; the hub's wall clock is an
//! anchor taken at construction plus the monotonic `now` passed in. Every delivered frame
//! comes with its [`FrameTiming`]: arrival on the hub's clock and, when chunk 0 carried
//! [`framed::CAPTURED`], capture time, quality and the latency corrected by the sender's
//! offset estimate ([`FrameTiming::framed`]).
//!
//! Cost per datagram (the hub's receiving thread runs this for every one): one hash lookup
//! of the sender, no lock; an allocation only as a buffer grows (amortised doubling), for a
//! chunk past a gap, and for an ack or nack.

use super::memory::{grow_for, PartialMemory};
use super::reply_credit::{ReplyCredit, UnvalidatedReplies};
use super::Transmit;
use crate::jpegcheck::check_structure;
use crate::wire::framed::{self, AckStatus, Captured, DataHeader, Packet, ParseError};
use crate::wire::name::SourceName;
use reed_solomon_simd::ReedSolomonDecoder;
use std::borrow::Cow;
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// A sender's clock-offset estimate counts as good enough to correct latency with when its
/// uncertainty is at most this (µs): the latency shown is then within this of the truth.
/// The uncertainty is half the best round trip, so this takes paths of up to about 100 ms
/// round trip (a Wi-Fi link to a distant hub); `offset_err_ms` says how good it is.
pub const MAX_SYNC_ERR_US: u32 = 50_000;

/// Whether a frame's latency could be measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClockSync {
    /// Capture time and an offset estimate within [`MAX_SYNC_ERR_US`]: latency measured.
    Synced,
    /// A capture time, but no offset estimate or one too uncertain (or a seed frame's
    /// stamp, whose sender's clock the hub knows nothing about): no latency.
    Unsynced,
    /// No capture time (a sender that predates it).
    None,
}

impl ClockSync {
    pub fn as_str(self) -> &'static str {
        match self {
            ClockSync::Synced => "synced",
            ClockSync::Unsynced => "unsynced",
            ClockSync::None => "none",
        }
    }
}

/// When a delivered frame was captured and arrived, and how late it was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameTiming {
    /// When the frame was complete, the hub's wall clock, µs since the Unix epoch.
    pub arrival_us: u64,
    /// When the sender captured it, the sender's wall clock (µs), if it said.
    pub capture_us: Option<u64>,
    /// The JPEG quality the sender chose, if it said.
    pub quality: Option<u8>,
    pub clock: ClockSync,
    /// The sender's offset uncertainty (µs), if it has an estimate.
    pub offset_err_us: Option<u32>,
    /// `arrival - (capture + offset)` in µs (never below 0: the true latency cannot be),
    /// when [`ClockSync::Synced`].
    pub latency_us: Option<u64>,
}

impl FrameTiming {
    /// A frame without a capture time.
    pub fn arrived(arrival_us: u64) -> Self {
        FrameTiming {
            arrival_us,
            capture_us: None,
            quality: None,
            clock: ClockSync::None,
            offset_err_us: None,
            latency_us: None,
        }
    }

    /// A framed frame: its chunk 0's [`Captured`] extension, if it had one. The capture
    /// time is moved onto the hub's clock by the sender's offset estimate when that is
    /// within [`MAX_SYNC_ERR_US`].
    pub fn framed(arrival_us: u64, captured: Option<&Captured>) -> Self {
        let Some(c) = captured else {
            return Self::arrived(arrival_us);
        };
        let offset = c.offset();
        let synced = offset.filter(|&(_, err)| err <= MAX_SYNC_ERR_US);
        FrameTiming {
            arrival_us,
            capture_us: Some(c.capture_us),
            quality: (c.quality != 0).then_some(c.quality),
            clock: if synced.is_some() {
                ClockSync::Synced
            } else {
                ClockSync::Unsynced
            },
            offset_err_us: offset.map(|(_, err)| err),
            latency_us: synced.map(|(offset, _)| {
                let on_hub = c.capture_us as i128 + offset as i128;
                (arrival_us as i128 - on_hub).clamp(0, u64::MAX as i128) as u64
            }),
        }
    }

    /// A seed frame with the capture time stamped into its JPEG, if any
    /// ([`crate::jpegcheck::capture_stamp`]): the hub has no offset for a seed sender, so
    /// its latency is not known ("unsynced").
    pub fn stamped(arrival_us: u64, capture_us: Option<u64>) -> Self {
        FrameTiming {
            capture_us,
            clock: match capture_us {
                Some(_) => ClockSync::Unsynced,
                None => ClockSync::None,
            },
            ..Self::arrived(arrival_us)
        }
    }

    pub fn latency_ms(&self) -> Option<f64> {
        self.latency_us.map(|us| us as f64 / 1e3)
    }
}

/// A wall clock driven by the monotonic `now` callers pass in: an anchor pair taken once.
#[derive(Clone, Copy, Debug)]
pub struct WallClock {
    instant: Instant,
    wall_us: u64,
}

impl WallClock {
    /// The system's wall clock, now.
    pub fn system() -> Self {
        Self::anchored(Instant::now(), std::time::SystemTime::now())
    }

    /// `instant` stands for `wall` (tests).
    pub fn anchored(instant: Instant, wall: std::time::SystemTime) -> Self {
        WallClock {
            instant,
            wall_us: super::framed_sender::wall_us(wall),
        }
    }

    /// The wall clock at `now`, µs since the Unix epoch.
    pub fn at(&self, now: Instant) -> u64 {
        match now.checked_duration_since(self.instant) {
            Some(d) => self.wall_us + d.as_micros() as u64,
            None => self
                .wall_us
                .saturating_sub(self.instant.duration_since(now).as_micros() as u64),
        }
    }
}

/// Bytes charged per partial frame on top of its buffer.
const PARTIAL_OVERHEAD: usize = 256;
/// Bytes charged per chunk held past a gap, on top of its payload (its map entry).
const CHUNK_OVERHEAD: usize = 48;
/// Finished frames remembered per stream, to re-ack resent chunks.
const RECENT: usize = 64;

/// Limits of the framed receiver.
#[derive(Clone, Debug)]
pub struct FramedConfig {
    pub max_frame_bytes: u64,
    pub frame_timeout: Duration,
    /// All partial frames together (buffers plus overhead).
    pub max_partial_bytes: usize,
    /// Partial frames per stream.
    pub max_partials_per_stream: usize,
    /// Senders tracked at once; the least recently heard is forgotten first.
    pub max_streams: usize,
}

impl Default for FramedConfig {
    fn default() -> Self {
        FramedConfig {
            max_frame_bytes: 16 << 20,
            frame_timeout: Duration::from_millis(1000),
            max_partial_bytes: 64 << 20,
            max_partials_per_stream: 8,
            max_streams: 1024,
        }
    }
}

/// Why a partial frame was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FramedDrop {
    Timeout,
    /// A newer frame of the stream was delivered first.
    Stale,
    /// The sender restarted (new stream id).
    Restarted,
    /// Memory budget or per-stream limit.
    Evicted,
}

/// Why a datagram was not used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FramedReject {
    Parse(ParseError),
    /// An ack or nack sent to the hub.
    WrongDirection,
    /// The announced length is above `max_frame_bytes`.
    TooLarge(u32),
    /// A chunk disagrees with earlier chunks of its frame (length, count, parity count, or
    /// a parity shard's check).
    Mismatch,
}

/// What the receiver reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FramedEvent {
    Frame {
        from: SocketAddr,
        stream: u32,
        frame: u32,
        /// The name the stream gave ([`framed::NAMED`]), if any.
        name: Option<SourceName>,
        jpeg: Vec<u8>,
        /// Arrival, capture time and latency.
        timing: FrameTiming,
    },
    /// Every chunk arrived but the bytes are not a complete JPEG.
    Corrupt { from: SocketAddr, frame: u32 },
    Dropped {
        from: SocketAddr,
        frame: u32,
        reason: FramedDrop,
        received: u16,
        count: u16,
    },
    Rejected {
        from: SocketAddr,
        reason: FramedReject,
    },
}

impl fmt::Display for FramedEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FramedEvent::Frame {
                from, frame, jpeg, ..
            } => {
                write!(
                    f,
                    "framed frame {frame} of {} bytes from {from}",
                    jpeg.len()
                )
            }
            FramedEvent::Corrupt { from, frame } => {
                write!(
                    f,
                    "framed frame {frame} from {from} is complete but not a JPEG"
                )
            }
            FramedEvent::Dropped {
                from,
                frame,
                reason,
                received,
                count,
            } => write!(
                f,
                "dropped framed frame {frame} from {from} ({received} of {count} chunks): {}",
                match reason {
                    FramedDrop::Timeout => "no chunk within the frame timeout",
                    FramedDrop::Stale => "a newer frame was delivered first",
                    FramedDrop::Restarted => "the sender restarted",
                    FramedDrop::Evicted => "partial-frame memory budget exceeded",
                }
            ),
            FramedEvent::Rejected { from, reason } => match reason {
                FramedReject::Parse(e) => write!(f, "rejected datagram from {from}: {e}"),
                FramedReject::WrongDirection => {
                    write!(
                        f,
                        "rejected datagram from {from}: an ack or nack sent to the hub"
                    )
                }
                FramedReject::TooLarge(n) => {
                    write!(
                        f,
                        "rejected framed frame from {from}: {n} bytes is above the limit"
                    )
                }
                FramedReject::Mismatch => write!(
                    f,
                    "rejected chunk from {from}: disagrees with earlier chunks of its frame"
                ),
            },
        }
    }
}

/// Give a dropped partial frame's memory back and report it as dropped for `reason`.
fn report_dropped(
    p: Partial,
    from: SocketAddr,
    reason: FramedDrop,
    memory: &mut PartialMemory,
    events: &mut VecDeque<FramedEvent>,
) {
    memory.release(from, p.held());
    events.push_back(FramedEvent::Dropped {
        from,
        frame: p.frame,
        reason,
        received: p.received,
        count: p.count,
    });
}

struct Partial {
    frame: u32,
    length: u32,
    count: u16,
    received: u16,
    /// Chunks `0..in_order` are in `buf`, in order.
    in_order: u16,
    buf: Vec<u8>,
    /// Chunks that came past a gap, until it fills.
    later: BTreeMap<u16, Box<[u8]>>,
    later_bytes: usize,
    started: Instant,
    last_seen: Instant,
    /// Chunk 0's capture extension, once chunk 0 came.
    captured: Option<Captured>,
    /// The frame's parity count `m`, and the shards that came (by number).
    parity_count: u8,
    parity: BTreeMap<u16, Box<[u8]>>,
    parity_bytes: usize,
    /// The check the shards carry (the first shard's; the others must agree).
    check: Option<u64>,
    /// A rebuild failed its check: the shards are dropped and no more are kept.
    parity_failed: bool,
}

impl Partial {
    fn new(h: &DataHeader, now: Instant) -> Partial {
        Partial {
            frame: h.frame,
            length: h.length,
            count: h.count,
            received: 0,
            in_order: 0,
            buf: Vec::new(),
            later: BTreeMap::new(),
            later_bytes: 0,
            started: now,
            last_seen: now,
            captured: None,
            parity_count: h.parity_count(),
            parity: BTreeMap::new(),
            parity_bytes: 0,
            check: None,
            parity_failed: false,
        }
    }

    /// Bytes charged to the budget: what the chunks that came take, never the claim.
    fn held(&self) -> usize {
        self.buf.capacity()
            + self.later_bytes
            + self.later.len() * CHUNK_OVERHEAD
            + self.parity_bytes
            + self.parity.len() * CHUNK_OVERHEAD
            + PARTIAL_OVERHEAD
    }

    /// Keep chunk `index` (not held yet), whose payload [`framed::parse`] checked to be
    /// exactly that chunk's size. The next chunk in order is appended to `buf`, with any
    /// that came before it past the gap; any other is kept on its own.
    fn write(&mut self, index: u16, payload: &[u8]) {
        let length = self.length as usize;
        if index != self.in_order {
            self.later_bytes += payload.len();
            self.later.insert(index, payload.into());
            return;
        }
        grow_for(&mut self.buf, payload.len(), length);
        self.buf.extend_from_slice(payload);
        self.in_order += 1;
        while let Some(entry) = self.later.first_entry() {
            if *entry.key() != self.in_order {
                break;
            }
            let chunk = entry.remove();
            self.later_bytes -= chunk.len();
            grow_for(&mut self.buf, chunk.len(), length);
            self.buf.extend_from_slice(&chunk);
            self.in_order += 1;
        }
    }

    fn has(&self, index: u16) -> bool {
        index < self.in_order || self.later.contains_key(&index)
    }

    /// Chunks and shards held are enough to rebuild the missing chunks.
    fn can_rebuild(&self) -> bool {
        !self.parity_failed
            && self.received < self.count
            && self.received as usize + self.parity.len() >= self.count as usize
    }

    /// The frame from its chunks and shards, if the shards rebuild it and it matches their
    /// check; else `None`, and the shards are dropped (the missing chunks are nacked).
    fn rebuild(&mut self, decoder: &mut Option<ReedSolomonDecoder>) -> Option<Vec<u8>> {
        let rebuilt = self.decode(decoder);
        if rebuilt.is_none() {
            self.parity_failed = true;
            self.parity.clear();
            self.parity_bytes = 0;
        }
        rebuilt
    }

    fn decode(&self, decoder: &mut Option<ReedSolomonDecoder>) -> Option<Vec<u8>> {
        let (k, m) = (self.count as usize, self.parity_count as usize);
        let (length, count) = (self.length, self.count);
        let (c, s) = (
            framed::chunk_len(length, count),
            framed::shard_len(length, count),
        );
        let decoder = match decoder {
            Some(d) => {
                d.reset(k, m, s).ok()?;
                d
            }
            None => decoder.insert(ReedSolomonDecoder::new(k, m, s).ok()?),
        };
        let chunk = |i: u16| -> Option<&[u8]> {
            if i < self.in_order {
                let start = c * i as usize;
                Some(&self.buf[start..start + framed::payload_len(length, count, i)])
            } else {
                self.later.get(&i).map(|b| &b[..])
            }
        };
        let mut padded = vec![0u8; s];
        for i in 0..count {
            if let Some(bytes) = chunk(i) {
                padded[..bytes.len()].copy_from_slice(bytes);
                padded[bytes.len()..].fill(0);
                decoder.add_original_shard(i as usize, &padded).ok()?;
            }
        }
        for (&j, shard) in &self.parity {
            decoder.add_recovery_shard(j as usize, shard).ok()?;
        }
        let result = decoder.decode().ok()?;
        let mut frame = Vec::with_capacity(length as usize);
        for i in 0..count {
            let len = framed::payload_len(length, count, i);
            match chunk(i) {
                Some(bytes) => frame.extend_from_slice(bytes),
                None => frame.extend_from_slice(&result.restored_original(i as usize)?[..len]),
            }
        }
        (Some(framed::frame_check(&frame)) == self.check).then_some(frame)
    }

    /// Missing chunk ranges, `(start, len)`, in order, at most `limit` of them: found from
    /// the chunks held, so O(`limit`) and never O(count).
    fn missing(&self, limit: usize) -> Vec<(u16, u16)> {
        let mut ranges = Vec::new();
        let mut next = self.in_order;
        for &i in self.later.keys() {
            if ranges.len() == limit {
                return ranges;
            }
            if i > next {
                ranges.push((next, i - next));
            }
            next = i + 1;
        }
        if ranges.len() < limit && next < self.count {
            ranges.push((next, self.count - next));
        }
        ranges
    }
}

struct Stream {
    id: u32,
    partials: Vec<Partial>,
    newest_delivered: Option<u32>,
    recent: VecDeque<(u32, AckStatus)>,
    last_seen: Instant,
    /// What the address sent and got back, kept across restarts of its stream.
    credit: ReplyCredit,
    /// The name the stream gave in its first named datagram.
    name: Option<SourceName>,
}

impl Stream {
    fn new(id: u32, now: Instant) -> Stream {
        Stream {
            id,
            partials: Vec::new(),
            name: None,
            newest_delivered: None,
            recent: VecDeque::new(),
            last_seen: now,
            credit: ReplyCredit::default(),
        }
    }

    /// Drop every partial frame, reporting each as dropped for `reason`.
    fn drop_partials(
        &mut self,
        from: SocketAddr,
        reason: FramedDrop,
        memory: &mut PartialMemory,
        events: &mut VecDeque<FramedEvent>,
    ) {
        for p in self.partials.drain(..) {
            report_dropped(p, from, reason, memory, events);
        }
    }

    /// Remove partial `at` (keeping the others' order), reporting it dropped for `reason`.
    fn drop_partial(
        &mut self,
        at: usize,
        from: SocketAddr,
        reason: FramedDrop,
        memory: &mut PartialMemory,
        events: &mut VecDeque<FramedEvent>,
    ) {
        let p = self.partials.remove(at);
        report_dropped(p, from, reason, memory, events);
    }

    /// Index of the partial frame started first.
    fn oldest_partial(&self) -> Option<usize> {
        (0..self.partials.len()).min_by_key(|&i| self.partials[i].started)
    }

    /// Queue `payload` to `to` if the address's reply credit allows it.
    /// Send `payload` to `to` if both its own credit and (unvalidated) the shared
    /// unvalidated reply rate allow it.
    fn reply(&mut self, out: &mut Replies, to: SocketAddr, validated: bool, payload: Vec<u8>) {
        let Replies {
            transmits,
            unvalidated,
            now,
            ..
        } = out;
        if self.credit.available(validated) >= payload.len()
            && unvalidated.allow(payload.len(), validated, *now)
            && self.credit.try_spend(payload.len(), validated)
        {
            send(transmits, to, payload);
        }
    }
}

fn send(transmits: &mut VecDeque<Transmit>, to: SocketAddr, payload: Vec<u8>) {
    transmits.push_back(Transmit {
        to,
        payload: Cow::Owned(payload),
    });
}

/// Where replies go, and the shared rate that replies to unvalidated addresses pay.
struct Replies<'a> {
    transmits: &'a mut VecDeque<Transmit>,
    unvalidated: &'a mut UnvalidatedReplies,
    now: Instant,
    /// The hub's wall clock at `now`, µs.
    wall_us: u64,
}

/// The ack answering data chunk `h` (in a datagram of `datagram_len` bytes) about `frame`:
/// with the hub's clock when the chunk asked for it and is at least as long as that ack.
fn ack_for(
    h: &DataHeader,
    datagram_len: usize,
    frame: u32,
    status: AckStatus,
    wall_us: u64,
    rebuilt: u16,
) -> Vec<u8> {
    let asks = h.flags & (framed::CLOCK | framed::CAPTURED) != 0;
    let hub_us = (asks && datagram_len >= framed::TIMED_ACK_LEN).then_some(wall_us);
    framed::emit_rebuilt_ack(h.stream, frame, status, h.ts_us, hub_us, rebuilt)
}

/// `a` is newer than `b` in wrapping (serial number) order.
pub fn newer(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

/// When the sender table is full, 1/`FORGET_BATCH` of it is forgotten at once.
const FORGET_BATCH: usize = 16;

/// The hub's framed-protocol state. See the module documentation.
pub struct FramedReceiver {
    config: FramedConfig,
    streams: HashMap<SocketAddr, Stream>,
    memory: PartialMemory,
    /// Nothing expires before this (a lower bound: exact after `handle_timeout`; every
    /// datagram can only add a deadline `frame_timeout` after it, or push one later).
    wake_at: Option<Instant>,
    events: VecDeque<FramedEvent>,
    transmits: VecDeque<Transmit>,
    unvalidated: UnvalidatedReplies,
    wall: WallClock,
    /// Made once, reused for every rebuild.
    decoder: Option<ReedSolomonDecoder>,
    rebuilt: Rebuilt,
}

impl FramedReceiver {
    pub fn new(config: FramedConfig) -> Self {
        Self::with_wall_clock(config, WallClock::system())
    }

    /// A receiver whose wall clock (arrival times, the time in acks) is `wall` (tests).
    pub fn with_wall_clock(config: FramedConfig, wall: WallClock) -> Self {
        FramedReceiver {
            wall,
            memory: PartialMemory::new(config.max_partial_bytes),
            config,
            streams: HashMap::new(),
            wake_at: None,
            events: VecDeque::new(),
            transmits: VecDeque::new(),
            unvalidated: UnvalidatedReplies::default(),
            decoder: None,
            rebuilt: Rebuilt::default(),
        }
    }

    /// Frames and chunks rebuilt from parity so far.
    pub fn rebuilt(&self) -> Rebuilt {
        self.rebuilt
    }

    pub fn poll_event(&mut self) -> Option<FramedEvent> {
        self.events.pop_front()
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// When [`FramedReceiver::handle_timeout`] should next be called: when a partial frame
    /// may time out or a quiet sender be forgotten (never later; at worst a call finds
    /// nothing to do). `None` with no sender tracked.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.wake_at
    }

    /// How long a sender with no partial frame is remembered after its last datagram.
    fn forget_after(&self) -> Duration {
        (self.config.frame_timeout * 30).max(Duration::from_secs(30))
    }

    /// Bytes charged to the partial-frame budget.
    pub fn partial_bytes(&self) -> usize {
        self.memory.total()
    }

    /// Bytes charged to the partial-frame budget for `from`'s partial frames.
    pub fn partial_bytes_of(&self, from: SocketAddr) -> usize {
        self.memory.held_by(from)
    }

    /// Partial frames held, over all streams.
    pub fn partial_frames(&self) -> usize {
        self.streams.values().map(|s| s.partials.len()).sum()
    }

    /// Replies to unvalidated addresses held back by their shared rate.
    pub fn unvalidated_replies_refused(&self) -> u64 {
        self.unvalidated.refused()
    }

    /// Senders remembered.
    pub fn senders(&self) -> usize {
        self.streams.len()
    }

    fn reject(&mut self, from: SocketAddr, reason: FramedReject) {
        self.events
            .push_back(FramedEvent::Rejected { from, reason });
    }

    /// Feed one datagram (that starts with the framed magic) from `from` at `now`.
    pub fn handle_datagram(&mut self, from: SocketAddr, data: &[u8], now: Instant) {
        let (h, name, captured, payload) = match framed::parse(data) {
            Ok(Packet::Data {
                header,
                name,
                captured,
                payload,
            }) => (header, name, captured, Piece::Data(payload)),
            Ok(Packet::Parity {
                header,
                check,
                shard,
            }) => (header, None, None, Piece::Parity { check, shard }),
            Ok(_) => return self.reject(from, FramedReject::WrongDirection),
            Err(e) => return self.reject(from, FramedReject::Parse(e)),
        };
        // the earliest deadline this datagram can start: a new partial frame's
        let deadline = now + self.config.frame_timeout;
        self.wake_at = Some(self.wake_at.map_or(deadline, |w| w.min(deadline)));
        if u64::from(h.length) > self.config.max_frame_bytes {
            // no state: an ack (28 bytes) is shorter than any data datagram (32 and more)
            send(
                &mut self.transmits,
                from,
                framed::emit_ack(h.stream, h.frame, AckStatus::Rejected, h.ts_us),
            );
            return self.reject(from, FramedReject::TooLarge(h.length));
        }
        if self.streams.len() >= self.config.max_streams.max(1) && !self.streams.contains_key(&from)
        {
            self.forget_quietest_streams();
        }
        self.on_data(from, &h, name, captured, payload, data.len(), now);
        self.evict_until_within_budget();
    }

    /// A parsed data chunk, in a datagram of `datagram_len` bytes.
    #[allow(clippy::too_many_arguments)]
    fn on_data(
        &mut self,
        from: SocketAddr,
        h: &DataHeader,
        name: Option<&str>,
        captured: Option<Captured>,
        piece: Piece,
        datagram_len: usize,
        now: Instant,
    ) {
        let FramedReceiver {
            config,
            streams,
            memory,
            events,
            transmits,
            unvalidated,
            wall,
            decoder,
            rebuilt,
            ..
        } = self;
        let parity = matches!(piece, Piece::Parity { .. });
        // the frame's last datagram (its last parity shard, when it has parity), or polled
        let m = h.parity_count();
        let last = match parity {
            true => h.index + 1 == u16::from(m),
            false => m == 0 && h.index == h.count - 1,
        };
        let answer = last || h.flags & framed::POLL != 0;
        let mut out = Replies {
            transmits,
            unvalidated,
            now,
            wall_us: wall.at(now),
        };
        let stream = match streams.entry(from) {
            Entry::Occupied(e) => {
                let stream = e.into_mut();
                if stream.id != h.stream {
                    // the sender restarted
                    stream.drop_partials(from, FramedDrop::Restarted, memory, events);
                    let credit = stream.credit;
                    *stream = Stream::new(h.stream, now);
                    stream.credit = credit;
                }
                stream
            }
            Entry::Vacant(e) => e.insert(Stream::new(h.stream, now)),
        };
        stream.last_seen = now;
        stream.credit.on_received(datagram_len);
        if stream.name.is_none() {
            // the first name a stream gives is its name for the rest of its run
            stream.name = name.and_then(|n| SourceName::parse(n).ok());
        }
        let validated = memory.has_completed(from);
        // A chunk of a frame in progress, the usual case, is looked for first: such a frame
        // is never among the finished ones, nor older than the newest delivered (finishing
        // a frame removes it and every older partial), so the checks below cannot apply.
        let at = match stream.partials.iter().position(|p| p.frame == h.frame) {
            Some(at) => at,
            None => {
                if parity && !answer && stream.recent.iter().any(|(f, _)| *f == h.frame) {
                    return; // the rest of a rebuilt frame's shards: no reply each
                }
                if let Some(&(_, status)) = stream.recent.iter().find(|(f, _)| *f == h.frame) {
                    let ack = ack_for(h, datagram_len, h.frame, status, out.wall_us, 0);
                    return stream.reply(&mut out, from, validated, ack);
                }
                if stream.newest_delivered.is_some_and(|n| !newer(h.frame, n)) {
                    if parity && !answer {
                        return;
                    }
                    let ack = ack_for(h, datagram_len, h.frame, AckStatus::Stale, out.wall_us, 0);
                    return stream.reply(&mut out, from, validated, ack);
                }
                if h.length as usize + PARTIAL_OVERHEAD > config.max_partial_bytes {
                    let ack = framed::emit_ack(h.stream, h.frame, AckStatus::Rejected, h.ts_us);
                    stream.reply(&mut out, from, validated, ack);
                    return events.push_back(FramedEvent::Rejected {
                        from,
                        reason: FramedReject::TooLarge(h.length),
                    });
                }
                // per stream: drop this stream's oldest partial when it has too many
                let per_stream = config.max_partials_per_stream.max(1);
                while stream.partials.len() >= per_stream {
                    let i = stream.oldest_partial().expect("at least one partial");
                    stream.drop_partial(i, from, FramedDrop::Evicted, memory, events);
                }
                let p = Partial::new(h, now);
                memory.charge(from, p.held(), now);
                stream.partials.push(p);
                stream.partials.len() - 1
            }
        };
        let p = &mut stream.partials[at];
        if p.length != h.length || p.count != h.count || p.parity_count != m {
            return events.push_back(FramedEvent::Rejected {
                from,
                reason: FramedReject::Mismatch,
            });
        }
        p.last_seen = now;
        if captured.is_some() {
            p.captured = captured;
        }
        match piece {
            Piece::Data(payload) => {
                if !p.has(h.index) {
                    let before = p.held();
                    p.write(h.index, payload);
                    p.received += 1;
                    memory.recharge(from, before, p.held(), now);
                }
            }
            Piece::Parity { check, shard } => {
                if p.check.is_some_and(|c| c != check) {
                    return events.push_back(FramedEvent::Rejected {
                        from,
                        reason: FramedReject::Mismatch,
                    });
                }
                if !p.parity_failed && p.received < p.count && !p.parity.contains_key(&h.index) {
                    let before = p.held();
                    p.check = Some(check);
                    p.parity_bytes += shard.len();
                    p.parity.insert(h.index, shard.into());
                    memory.recharge(from, before, p.held(), now);
                }
            }
        }
        if p.received == p.count {
            let p = stream.partials.swap_remove(at);
            memory.release(from, p.held());
            debug_assert_eq!(p.buf.len(), p.length as usize, "every chunk written");
            let captured = p.captured;
            let done = Done {
                h,
                datagram_len,
                captured,
                rebuilt: 0,
            };
            return Self::finish(from, done, p.buf, stream, memory, events, &mut out);
        }
        if p.can_rebuild() {
            let before = p.held();
            match p.rebuild(decoder) {
                Some(frame) => {
                    let p = stream.partials.swap_remove(at);
                    memory.release(from, before);
                    let n = p.count - p.received;
                    rebuilt.frames += 1;
                    rebuilt.chunks += u64::from(n);
                    let done = Done {
                        h,
                        datagram_len,
                        captured: p.captured,
                        rebuilt: n,
                    };
                    return Self::finish(from, done, frame, stream, memory, events, &mut out);
                }
                None => {
                    log::debug!(
                        "framed: frame {} from {from} does not match its parity's check",
                        h.frame
                    );
                    rebuilt.failed += 1;
                    memory.recharge(from, before, p.held(), now);
                }
            }
        }
        let p = &mut stream.partials[at];
        if answer {
            // as many ranges as the reply credit allows, at least one
            let room = stream.credit.available(validated);
            let fit = room.saturating_sub(framed::NACK_HEADER_LEN) / 4;
            let limit = fit.min(framed::MAX_NACK_RANGES);
            if limit > 0 {
                let missing = p.missing(limit);
                let nack = framed::emit_nack(h.stream, h.frame, p.received, &missing);
                stream.reply(&mut out, from, validated, nack);
            }
        }
    }

    /// Drop partial frames with no chunk for `frame_timeout`, and forget long-idle senders.
    pub fn handle_timeout(&mut self, now: Instant) {
        let timeout = self.config.frame_timeout;
        let forget_after = self.forget_after();
        for (from, stream) in self.streams.iter_mut() {
            while let Some(i) = stream
                .partials
                .iter()
                .position(|p| now.saturating_duration_since(p.last_seen) >= timeout)
            {
                stream.drop_partial(
                    i,
                    *from,
                    FramedDrop::Timeout,
                    &mut self.memory,
                    &mut self.events,
                );
            }
        }
        self.streams.retain(|_, s| {
            !s.partials.is_empty() || now.saturating_duration_since(s.last_seen) < forget_after
        });
        self.wake_at = self
            .streams
            .values()
            .filter_map(|s| match s.partials.is_empty() {
                // as the retain above: a sender is forgotten only once it has no partials
                true => Some(s.last_seen + forget_after),
                false => s.partials.iter().map(|p| p.last_seen + timeout).min(),
            })
            .min();
    }

    /// Make room for a new sender: forget the least recently heard ones, those that never
    /// completed a frame before any that did. A batch (1/[`FORGET_BATCH`] of the table) goes
    /// at once, so a flood of new sources costs one O(n) selection per n/16 of them
    /// (amortised O(1) per datagram), never a scan of every sender per datagram.
    fn forget_quietest_streams(&mut self) {
        let memory = &self.memory;
        let mut order: Vec<((bool, Instant), SocketAddr)> = self
            .streams
            .iter()
            .map(|(a, s)| ((memory.has_completed(*a), s.last_seen), *a))
            .collect();
        let n = (order.len() / FORGET_BATCH).max(1);
        if order.len() > n {
            order.select_nth_unstable(n - 1);
        }
        for (_, a) in order.into_iter().take(n) {
            if let Some(mut stream) = self.streams.remove(&a) {
                stream.drop_partials(a, FramedDrop::Evicted, &mut self.memory, &mut self.events);
            }
        }
    }

    /// While over the budget, drop the oldest partial frame of the sender the fair-share
    /// policy picks ([`PartialMemory::victim`]).
    fn evict_until_within_budget(&mut self) {
        while self.memory.over_budget() {
            let Some(from) = self.memory.victim() else {
                return;
            };
            let stream = self
                .streams
                .get_mut(&from)
                .expect("a charged sender is tracked");
            let i = stream
                .oldest_partial()
                .expect("a charged sender has a partial");
            stream.drop_partial(
                i,
                from,
                FramedDrop::Evicted,
                &mut self.memory,
                &mut self.events,
            );
        }
    }

    /// Every chunk of a frame is in: check it, ack it, and deliver it.
    fn finish(
        from: SocketAddr,
        done: Done,
        jpeg: Vec<u8>,
        stream: &mut Stream,
        memory: &mut PartialMemory,
        events: &mut VecDeque<FramedEvent>,
        out: &mut Replies,
    ) {
        let h = done.h;
        let status = if check_structure(&jpeg).is_ok() {
            AckStatus::Delivered
        } else {
            AckStatus::Rejected
        };
        stream.recent.push_back((h.frame, status));
        if stream.recent.len() > RECENT {
            stream.recent.pop_front();
        }
        if status == AckStatus::Delivered {
            // the address is validated: a whole frame came from it
            memory.mark_completed(from);
        }
        let validated = memory.has_completed(from);
        let ack = ack_for(
            h,
            done.datagram_len,
            h.frame,
            status,
            out.wall_us,
            done.rebuilt,
        );
        stream.reply(out, from, validated, ack);
        if status == AckStatus::Rejected {
            return events.push_back(FramedEvent::Corrupt {
                from,
                frame: h.frame,
            });
        }
        // latest frame wins: older partial frames of this stream are stale now
        stream.newest_delivered = Some(match stream.newest_delivered {
            Some(n) if newer(n, h.frame) => n,
            _ => h.frame,
        });
        while let Some(i) = stream.partials.iter().position(|p| newer(h.frame, p.frame)) {
            let frame = stream.partials[i].frame;
            stream.drop_partial(i, from, FramedDrop::Stale, memory, events);
            let ack = framed::emit_ack(h.stream, frame, AckStatus::Stale, 0);
            stream.reply(out, from, validated, ack);
        }
        events.push_back(FramedEvent::Frame {
            from,
            stream: h.stream,
            frame: h.frame,
            name: stream.name.clone(),
            jpeg,
            timing: FrameTiming::framed(out.wall_us, done.captured.as_ref()),
        });
    }
}

/// The chunk that completed a frame, and what its chunk 0 said.
struct Done<'a> {
    h: &'a DataHeader,
    datagram_len: usize,
    captured: Option<Captured>,
    /// Data chunks rebuilt from parity.
    rebuilt: u16,
}

/// What a data datagram carries.
enum Piece<'a> {
    Data(&'a [u8]),
    Parity { check: u64, shard: &'a [u8] },
}

/// Frames rebuilt from parity (see the module documentation).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Rebuilt {
    /// Frames completed with chunks rebuilt from parity (then checked as any complete
    /// frame: one that is not a JPEG is still refused).
    pub frames: u64,
    /// Data chunks rebuilt.
    pub chunks: u64,
    /// Rebuilds whose frame did not match the parity's check (dropped, then nacked).
    pub failed: u64,
}

impl std::ops::Add for Rebuilt {
    type Output = Rebuilt;
    /// The counts of both, added.
    fn add(self, other: Rebuilt) -> Rebuilt {
        Rebuilt {
            frames: self.frames + other.frames,
            chunks: self.chunks + other.chunks,
            failed: self.failed + other.failed,
        }
    }
}
