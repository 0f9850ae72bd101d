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
//!   one may have been lost);
//! - latest frame wins: once a frame is delivered, older partial frames of the stream are
//!   dropped and acked `Stale`, and chunks of older frames are answered `Stale`;
//! - partial frames expire after `frame_timeout`; memory is bounded per stream (a few partial
//!   frames) and in total (oldest partial dropped first).
//!
//! A frame's buffer is allocated at its first chunk with room for the announced length
//! (bounded by `max_frame_bytes` and charged to the budget) but not filled: chunks that come
//! in order are appended, and a chunk past a gap zero-fills the gap first (the chunks that
//! fill it later overwrite those zeros). So each byte is written once, by the one copy out
//! of the datagram, and a buffer only takes physical memory as chunks arrive.
//!
//! Cost per datagram (the hub's receiving thread runs this for every one): one hash lookup
//! of the sender, no allocation (one per frame: its buffer, and its ack), no lock.

use super::Transmit;
use crate::wire::framed::{self, AckStatus, DataHeader, Packet, ParseError};
use crate::wire::jpeg::is_complete_jpeg;
use std::borrow::Cow;
use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Bytes charged per partial frame on top of its buffer.
const PARTIAL_OVERHEAD: usize = 256;
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
    /// A chunk disagrees with earlier chunks of its frame (length or count).
    Mismatch,
}

/// What the receiver reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FramedEvent {
    Frame {
        from: SocketAddr,
        stream: u32,
        frame: u32,
        jpeg: Vec<u8>,
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

struct Partial {
    frame: u32,
    length: u32,
    count: u16,
    received: u16,
    have: Vec<u64>,
    buf: Vec<u8>,
    started: Instant,
    last_seen: Instant,
}

impl Partial {
    fn new(h: &DataHeader, now: Instant) -> Partial {
        Partial {
            frame: h.frame,
            length: h.length,
            count: h.count,
            received: 0,
            have: vec![0; (h.count as usize).div_ceil(64)],
            buf: Vec::with_capacity(h.length as usize),
            started: now,
            last_seen: now,
        }
    }

    /// Bytes charged to the budget: the announced length, whatever has been written yet.
    fn held(&self) -> usize {
        self.length as usize + PARTIAL_OVERHEAD
    }

    /// Write chunk `index`, whose payload [`framed::parse`] checked to be exactly that
    /// chunk's size (so chunks tile `0..length` and `buf` ends at a chunk boundary). In
    /// order, it is appended; past a gap, the gap is zero-filled first; into a gap, it
    /// overwrites the zeros. `buf` never grows past its capacity, so it is never moved.
    fn write(&mut self, index: u16, payload: &[u8]) {
        let start = framed::chunk_len(self.length, self.count) * index as usize;
        if self.buf.len() < start {
            self.buf.resize(start, 0);
        }
        if self.buf.len() == start {
            self.buf.extend_from_slice(payload);
        } else {
            self.buf[start..start + payload.len()].copy_from_slice(payload);
        }
    }

    fn has(&self, index: u16) -> bool {
        self.have[index as usize / 64] & (1 << (index % 64)) != 0
    }

    /// Missing chunk ranges, `(start, len)`, in order.
    fn missing(&self) -> Vec<(u16, u16)> {
        let mut ranges: Vec<(u16, u16)> = Vec::new();
        for i in 0..self.count {
            if self.has(i) {
                continue;
            }
            match ranges.last_mut() {
                Some((s, l)) if *s + *l == i => *l += 1,
                _ => ranges.push((i, 1)),
            }
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
}

impl Stream {
    fn new(id: u32, now: Instant) -> Stream {
        Stream {
            id,
            partials: Vec::new(),
            newest_delivered: None,
            recent: VecDeque::new(),
            last_seen: now,
        }
    }

    /// Drop every partial frame, reporting each as dropped for `reason`.
    fn drop_partials(
        &mut self,
        from: SocketAddr,
        reason: FramedDrop,
        held: &mut usize,
        events: &mut VecDeque<FramedEvent>,
    ) {
        for p in self.partials.drain(..) {
            *held -= p.held();
            events.push_back(FramedEvent::Dropped {
                from,
                frame: p.frame,
                reason,
                received: p.received,
                count: p.count,
            });
        }
    }
}

/// Whether [`FramedReceiver::on_data`] finished with a datagram.
#[derive(PartialEq, Eq)]
enum Step {
    Done,
    /// A new partial frame needs room in the budget first.
    NeedRoom,
}

fn send(transmits: &mut VecDeque<Transmit>, to: SocketAddr, payload: Vec<u8>) {
    transmits.push_back(Transmit {
        to,
        payload: Cow::Owned(payload),
    });
}

/// `a` is newer than `b` in wrapping (serial number) order.
pub fn newer(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

/// The hub's framed-protocol state. See the module documentation.
pub struct FramedReceiver {
    config: FramedConfig,
    streams: HashMap<SocketAddr, Stream>,
    held: usize,
    /// Nothing expires before this (a lower bound: exact after `handle_timeout`; every
    /// datagram can only add a deadline `frame_timeout` after it, or push one later).
    wake_at: Option<Instant>,
    events: VecDeque<FramedEvent>,
    transmits: VecDeque<Transmit>,
}

impl FramedReceiver {
    pub fn new(config: FramedConfig) -> Self {
        FramedReceiver {
            config,
            streams: HashMap::new(),
            held: 0,
            wake_at: None,
            events: VecDeque::new(),
            transmits: VecDeque::new(),
        }
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
        self.held
    }

    /// Partial frames held, over all streams.
    pub fn partial_frames(&self) -> usize {
        self.streams.values().map(|s| s.partials.len()).sum()
    }

    fn send(&mut self, to: SocketAddr, payload: Vec<u8>) {
        send(&mut self.transmits, to, payload);
    }

    fn reject(&mut self, from: SocketAddr, reason: FramedReject) {
        self.events
            .push_back(FramedEvent::Rejected { from, reason });
    }

    /// Feed one datagram (that starts with the framed magic) from `from` at `now`.
    pub fn handle_datagram(&mut self, from: SocketAddr, data: &[u8], now: Instant) {
        let (h, payload) = match framed::parse(data) {
            Ok(Packet::Data(h, payload)) => (h, payload),
            Ok(_) => return self.reject(from, FramedReject::WrongDirection),
            Err(e) => return self.reject(from, FramedReject::Parse(e)),
        };
        // the earliest deadline this datagram can start: a new partial frame's
        let deadline = now + self.config.frame_timeout;
        self.wake_at = Some(self.wake_at.map_or(deadline, |w| w.min(deadline)));
        if u64::from(h.length) > self.config.max_frame_bytes {
            self.send(
                from,
                framed::emit_ack(h.stream, h.frame, AckStatus::Rejected, h.ts_us),
            );
            return self.reject(from, FramedReject::TooLarge(h.length));
        }
        if self.streams.len() >= self.config.max_streams.max(1) && !self.streams.contains_key(&from)
        {
            self.forget_quietest_stream();
        }
        // The sender is looked up once; only a new partial frame that needs room taken
        // from other senders' partials leaves and comes back for a second lookup.
        if self.on_data(from, &h, payload, now, false) == Step::NeedRoom {
            let cost = h.length as usize + PARTIAL_OVERHEAD;
            while self.held + cost > self.config.max_partial_bytes {
                if !self.evict_oldest() {
                    break;
                }
            }
            self.on_data(from, &h, payload, now, true);
        }
    }

    /// A parsed data chunk. With `room_made`, a new partial frame is started even over
    /// the budget (everything that could be evicted was).
    fn on_data(
        &mut self,
        from: SocketAddr,
        h: &DataHeader,
        payload: &[u8],
        now: Instant,
        room_made: bool,
    ) -> Step {
        let FramedReceiver {
            config,
            streams,
            held,
            events,
            transmits,
            ..
        } = self;
        let stream = match streams.entry(from) {
            Entry::Occupied(e) => {
                let stream = e.into_mut();
                if stream.id != h.stream {
                    // the sender restarted
                    stream.drop_partials(from, FramedDrop::Restarted, held, events);
                    *stream = Stream::new(h.stream, now);
                }
                stream
            }
            Entry::Vacant(e) => e.insert(Stream::new(h.stream, now)),
        };
        stream.last_seen = now;
        // A chunk of a frame in progress, the usual case, is looked for first: such a frame
        // is never among the finished ones, nor older than the newest delivered (finishing
        // a frame removes it and every older partial), so the checks below cannot apply.
        let at = match stream.partials.iter().position(|p| p.frame == h.frame) {
            Some(at) => at,
            None => {
                if let Some(&(_, status)) = stream.recent.iter().find(|(f, _)| *f == h.frame) {
                    send(
                        transmits,
                        from,
                        framed::emit_ack(h.stream, h.frame, status, h.ts_us),
                    );
                    return Step::Done;
                }
                if stream.newest_delivered.is_some_and(|n| !newer(h.frame, n)) {
                    send(
                        transmits,
                        from,
                        framed::emit_ack(h.stream, h.frame, AckStatus::Stale, h.ts_us),
                    );
                    return Step::Done;
                }
                let cost = h.length as usize + PARTIAL_OVERHEAD;
                if cost > config.max_partial_bytes {
                    send(
                        transmits,
                        from,
                        framed::emit_ack(h.stream, h.frame, AckStatus::Rejected, h.ts_us),
                    );
                    events.push_back(FramedEvent::Rejected {
                        from,
                        reason: FramedReject::TooLarge(h.length),
                    });
                    return Step::Done;
                }
                // per stream: drop this stream's oldest partial when it has too many
                let per_stream = config.max_partials_per_stream.max(1);
                while stream.partials.len() >= per_stream {
                    let (i, _) = stream
                        .partials
                        .iter()
                        .enumerate()
                        .min_by_key(|(_, p)| p.started)
                        .expect("at least one partial");
                    let p = stream.partials.swap_remove(i);
                    *held -= p.held();
                    events.push_back(FramedEvent::Dropped {
                        from,
                        frame: p.frame,
                        reason: FramedDrop::Evicted,
                        received: p.received,
                        count: p.count,
                    });
                }
                if *held + cost > config.max_partial_bytes && !room_made {
                    return Step::NeedRoom;
                }
                stream.partials.push(Partial::new(h, now));
                *held += cost;
                stream.partials.len() - 1
            }
        };
        let p = &mut stream.partials[at];
        if p.length != h.length || p.count != h.count {
            events.push_back(FramedEvent::Rejected {
                from,
                reason: FramedReject::Mismatch,
            });
            return Step::Done;
        }
        p.last_seen = now;
        if !p.has(h.index) {
            p.write(h.index, payload);
            p.have[h.index as usize / 64] |= 1 << (h.index % 64);
            p.received += 1;
        }
        if p.received == p.count {
            let p = stream.partials.swap_remove(at);
            *held -= p.held();
            debug_assert_eq!(p.buf.len(), p.length as usize, "every chunk written");
            Self::finish(from, h, p.buf, stream, held, events, transmits);
            return Step::Done;
        }
        if h.index == h.count - 1 || h.flags & framed::POLL != 0 {
            let (received, missing) = (p.received, p.missing());
            send(
                transmits,
                from,
                framed::emit_nack(h.stream, h.frame, received, &missing),
            );
        }
        Step::Done
    }

    /// Drop partial frames with no chunk for `frame_timeout`, and forget long-idle senders.
    pub fn handle_timeout(&mut self, now: Instant) {
        let timeout = self.config.frame_timeout;
        let forget_after = self.forget_after();
        let mut dropped = Vec::new();
        for (from, stream) in self.streams.iter_mut() {
            stream.partials.retain(|p| {
                let stale = now.saturating_duration_since(p.last_seen) >= timeout;
                if stale {
                    dropped.push((*from, p.frame, p.received, p.count, p.held()));
                }
                !stale
            });
        }
        for (from, frame, received, count, held) in dropped {
            self.held -= held;
            self.events.push_back(FramedEvent::Dropped {
                from,
                frame,
                reason: FramedDrop::Timeout,
                received,
                count,
            });
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

    /// Forget the least recently heard sender, to make room for a new one.
    fn forget_quietest_stream(&mut self) {
        let quietest = self
            .streams
            .iter()
            .min_by_key(|(_, s)| s.last_seen)
            .map(|(a, _)| *a);
        if let Some(a) = quietest {
            if let Some(mut stream) = self.streams.remove(&a) {
                stream.drop_partials(a, FramedDrop::Evicted, &mut self.held, &mut self.events);
            }
        }
    }

    /// Drop the oldest partial frame of all senders; false if there was none.
    fn evict_oldest(&mut self) -> bool {
        let oldest = self
            .streams
            .iter()
            .flat_map(|(a, s)| {
                s.partials
                    .iter()
                    .enumerate()
                    .map(move |(i, p)| (p.started, *a, i))
            })
            .min();
        let Some((_, from, i)) = oldest else {
            return false;
        };
        let p = self
            .streams
            .get_mut(&from)
            .expect("present")
            .partials
            .swap_remove(i);
        self.held -= p.held();
        self.events.push_back(FramedEvent::Dropped {
            from,
            frame: p.frame,
            reason: FramedDrop::Evicted,
            received: p.received,
            count: p.count,
        });
        true
    }

    /// Every chunk of a frame is in: check it, ack it, and deliver it.
    fn finish(
        from: SocketAddr,
        h: &DataHeader,
        jpeg: Vec<u8>,
        stream: &mut Stream,
        held: &mut usize,
        events: &mut VecDeque<FramedEvent>,
        transmits: &mut VecDeque<Transmit>,
    ) {
        let status = if is_complete_jpeg(&jpeg) {
            AckStatus::Delivered
        } else {
            AckStatus::Rejected
        };
        stream.recent.push_back((h.frame, status));
        if stream.recent.len() > RECENT {
            stream.recent.pop_front();
        }
        send(
            transmits,
            from,
            framed::emit_ack(h.stream, h.frame, status, h.ts_us),
        );
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
        let mut stale = Vec::new();
        stream.partials.retain(|p| {
            let is_stale = newer(h.frame, p.frame);
            if is_stale {
                stale.push((p.frame, p.received, p.count, p.held()));
            }
            !is_stale
        });
        for (frame, received, count, p_held) in stale {
            *held -= p_held;
            send(
                transmits,
                from,
                framed::emit_ack(h.stream, frame, AckStatus::Stale, 0),
            );
            events.push_back(FramedEvent::Dropped {
                from,
                frame,
                reason: FramedDrop::Stale,
                received,
                count,
            });
        }
        events.push_back(FramedEvent::Frame {
            from,
            stream: h.stream,
            frame: h.frame,
            jpeg,
        });
    }
}
