//! The sender's side of the framed protocol ([`crate::wire::framed`]): chunks frames,
//! keeps up to `window` of them in flight, resends exactly the chunks the hub says are
//! missing, and gives a frame up after a bounded number of resend rounds or its deadline.
//!
//! No socket, no clock: the caller passes `now` to every call, sends the [`Transmit`]s
//! [`FramedSender::poll_transmit`] returns (the shape every state machine in
//! [`crate::proto`] speaks), or the same datagrams as [`FramedSender::poll_chunk`] gives
//! them: a header and the payload's place in the shared frame, so a socket that gathers can
//! send them without the payload ever being copied on the sender's side. It feeds back every
//! datagram it receives, and calls [`FramedSender::handle_timeout`] when
//! [`FramedSender::poll_timeout`] says so.
//!
//! Recovery: when the hub gets the last chunk of an incomplete frame it sends a nack with
//! the missing ranges, which are resent at once, the last of them flagged
//! [`framed::POLL`] so the hub answers again: a recovery round costs one round trip. When
//! nothing comes back for one retransmission timeout (RTO, from the measured round-trip
//! time), the last chunk is sent again as a probe: the hub answers it with a nack, or with
//! the ack that was lost. Probes back off (RTO doubling per silent probe, up to 16x) and the
//! backoff starts over whenever the hub is heard from.
//! Acks for frames no longer in flight, or of another stream, are ignored.

use super::Transmit;
use crate::wire::framed::{self, AckStatus, DataHeader, DataHeaderBytes, Packet};
use crate::wire::name::SourceName;
use std::borrow::Cow;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Settings of a framed sender.
#[derive(Clone, Debug)]
pub struct SenderConfig {
    /// Payload bytes per datagram.
    pub chunk_size: usize,
    /// Frames in flight at most (1 = stop-and-wait).
    pub window: usize,
    /// A frame not acked this long after it was first sent is given up.
    pub frame_deadline: Duration,
    /// Resend rounds (nacks answered plus probes) per frame, at most.
    pub max_resend_rounds: u32,
    /// Bounds of the retransmission timeout.
    pub min_rto: Duration,
    pub max_rto: Duration,
    /// The sender's name, carried in chunk 0 of every frame ([`framed::NAMED`]).
    pub name: Option<SourceName>,
}

impl Default for SenderConfig {
    fn default() -> Self {
        SenderConfig {
            chunk_size: framed::DEFAULT_CHUNK_SIZE,
            window: 1,
            frame_deadline: Duration::from_millis(1000),
            max_resend_rounds: 16,
            min_rto: Duration::from_millis(10),
            max_rto: Duration::from_millis(250),
            name: None,
        }
    }
}

/// What the sender knows about a frame besides its bytes; [`Default`] is "unknown".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrameMeta {
    /// When the frame was captured: wall clock, µs since the Unix epoch (0 = unknown).
    pub capture_us: u64,
    /// The JPEG quality the sender encoded it with (0 = unknown, e.g. bytes sent unchanged).
    pub quality: u8,
}

impl FrameMeta {
    /// A frame captured at `at` (wall clock), encoded with `quality` (0 = unknown).
    pub fn captured_at(at: std::time::SystemTime, quality: u8) -> Self {
        FrameMeta {
            capture_us: wall_us(at),
            quality,
        }
    }

    /// A frame captured now (the wall clock), encoded with `quality` (0 = unknown).
    pub fn captured_now(quality: u8) -> Self {
        Self::captured_at(std::time::SystemTime::now(), quality)
    }
}

/// `at` as µs since the Unix epoch (0 before it: unknown).
pub fn wall_us(at: std::time::SystemTime) -> u64 {
    at.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Why a frame was given up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GiveUp {
    /// No ack before the deadline or the resend rounds ran out.
    Deadline,
    /// The hub refused it (too large, or not a JPEG).
    Rejected,
    /// The hub delivered a newer frame first.
    Stale,
}

/// What the sender reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SenderEvent {
    Acked {
        frame: u32,
        /// From the frame's first datagram to its ack.
        latency: Duration,
        /// Chunks sent again for it.
        resent: u32,
        /// What [`FramedSender::send_frame`] was told about it.
        meta: FrameMeta,
    },
    GaveUp {
        frame: u32,
        reason: GiveUp,
        resent: u32,
    },
}

/// One data datagram to send: [`Chunk::header`] followed by [`Chunk::payload`].
#[derive(Clone, Debug)]
pub struct Chunk {
    pub header: DataHeaderBytes,
    /// The frame the payload is part of (shared, not copied).
    pub frame: Arc<Vec<u8>>,
    /// Where the payload is in `frame`.
    pub payload: Range<usize>,
}

impl Chunk {
    pub fn payload(&self) -> &[u8] {
        &self.frame[self.payload.clone()]
    }
}

struct InFlight {
    frame: u32,
    data: Arc<Vec<u8>>,
    meta: FrameMeta,
    count: u16,
    first_sent: Instant,
    last_activity: Instant,
    rounds: u32,
    /// Probes in a row that heard nothing (the backoff exponent).
    silent: u32,
    resent: u32,
    /// Chunks of this frame waiting in the transmit queue.
    queued: u32,
}

/// The framed sender. See the module documentation.
pub struct FramedSender {
    config: SenderConfig,
    /// Where its datagrams go.
    hub: SocketAddr,
    stream: u32,
    epoch: Instant,
    next_frame: u32,
    in_flight: VecDeque<InFlight>,
    /// (frame, chunk index) to send, in order.
    queue: VecDeque<(u32, u16)>,
    srtt: Option<Duration>,
    rttvar: Duration,
    events: VecDeque<SenderEvent>,
}

/// Why [`FramedSender::send_frame`] refused a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendError {
    WindowFull,
    Empty,
    /// Longer than `u32::MAX` bytes or more than 65535 chunks.
    TooLarge,
}

impl FramedSender {
    /// A sender to `hub` for stream `stream` (pick it at random per run). `epoch` is the
    /// origin of the timestamps put into datagrams.
    pub fn new(config: SenderConfig, hub: SocketAddr, stream: u32, epoch: Instant) -> Self {
        let chunk_size = config.chunk_size.clamp(1, framed::MAX_CHUNK_SIZE);
        FramedSender {
            config: SenderConfig {
                chunk_size,
                window: config.window.max(1),
                ..config
            },
            hub,
            stream,
            epoch,
            next_frame: 0,
            in_flight: VecDeque::new(),
            queue: VecDeque::new(),
            srtt: None,
            rttvar: Duration::ZERO,
            events: VecDeque::new(),
        }
    }

    pub fn stream(&self) -> u32 {
        self.stream
    }

    /// Whether another frame may be sent now.
    pub fn can_send(&self) -> bool {
        self.in_flight.len() < self.config.window
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// The current retransmission timeout.
    pub fn rto(&self) -> Duration {
        let rto = match self.srtt {
            Some(srtt) => srtt * 2 + self.rttvar * 4,
            None => self.config.max_rto,
        };
        rto.clamp(self.config.min_rto, self.config.max_rto)
    }

    /// Queue a frame with what is known about it (`meta`); returns its id.
    pub fn send_frame(
        &mut self,
        data: Arc<Vec<u8>>,
        meta: FrameMeta,
        now: Instant,
    ) -> Result<u32, SendError> {
        if !self.can_send() {
            return Err(SendError::WindowFull);
        }
        if data.is_empty() {
            return Err(SendError::Empty);
        }
        let count = framed::chunk_count(data.len(), self.config.chunk_size);
        if data.len() > u32::MAX as usize || count > u16::MAX as usize {
            return Err(SendError::TooLarge);
        }
        let frame = self.next_frame;
        self.next_frame = self.next_frame.wrapping_add(1);
        self.queue.extend((0..count as u16).map(|i| (frame, i)));
        self.in_flight.push_back(InFlight {
            frame,
            data,
            meta,
            count: count as u16,
            first_sent: now,
            last_activity: now,
            rounds: 0,
            silent: 0,
            resent: 0,
            queued: count as u32,
        });
        Ok(frame)
    }

    fn ts(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_micros() as u64
    }

    /// The next datagram to send, to the hub; `None` when there is none.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        let chunk = self.poll_chunk(now)?;
        let mut payload = Vec::with_capacity(chunk.header.len() + chunk.payload.len());
        payload.extend_from_slice(&chunk.header);
        payload.extend_from_slice(chunk.payload());
        Some(Transmit {
            to: self.hub,
            payload: Cow::Owned(payload),
        })
    }

    /// The next datagram to send (to the hub, as [`FramedSender::poll_transmit`]'s), as its
    /// header and the place of its payload in the frame (so a socket can send both parts
    /// without the payload being copied); `None` when there is none.
    pub fn poll_chunk(&mut self, now: Instant) -> Option<Chunk> {
        while let Some((frame, index)) = self.queue.pop_front() {
            let ts_us = self.ts(now);
            let Some(f) = self.in_flight.iter_mut().find(|f| f.frame == frame) else {
                continue; // given up or acked meanwhile
            };
            f.queued = f.queued.saturating_sub(1);
            f.last_activity = now;
            let length = f.data.len() as u32;
            let start = framed::chunk_len(length, f.count) * index as usize;
            let len = framed::payload_len(length, f.count, index);
            // The last of a batch asks for an answer.
            let flags = if f.queued == 0 { framed::POLL } else { 0 };
            let header = DataHeader {
                flags,
                stream: self.stream,
                frame,
                index,
                count: f.count,
                length,
                ts_us,
            };
            return Some(Chunk {
                header: framed::data_header(
                    &header,
                    self.config.name.as_ref().filter(|_| index == 0),
                ),
                frame: Arc::clone(&f.data),
                payload: start..start + len,
            });
        }
        None
    }

    /// Feed a datagram received from the hub.
    pub fn handle_datagram(&mut self, data: &[u8], now: Instant) {
        match framed::parse(data) {
            Ok(Packet::Ack {
                stream,
                frame,
                status,
                ts_us,
            }) if stream == self.stream => {
                let Some(at) = self.in_flight.iter().position(|f| f.frame == frame) else {
                    return; // late: no longer in flight
                };
                let f = self.in_flight.remove(at).expect("present");
                if ts_us != 0 {
                    self.sample_rtt(now, ts_us);
                }
                let event = match status {
                    AckStatus::Delivered => SenderEvent::Acked {
                        frame,
                        latency: now.saturating_duration_since(f.first_sent),
                        resent: f.resent,
                        meta: f.meta,
                    },
                    AckStatus::Rejected => SenderEvent::GaveUp {
                        frame,
                        reason: GiveUp::Rejected,
                        resent: f.resent,
                    },
                    AckStatus::Stale => SenderEvent::GaveUp {
                        frame,
                        reason: GiveUp::Stale,
                        resent: f.resent,
                    },
                };
                self.events.push_back(event);
            }
            Ok(Packet::Nack {
                stream,
                frame,
                missing,
                ..
            }) if stream == self.stream => {
                let max_rounds = self.config.max_resend_rounds;
                let Some(f) = self.in_flight.iter_mut().find(|f| f.frame == frame) else {
                    return;
                };
                f.last_activity = now;
                f.silent = 0;
                if f.queued > 0 {
                    return; // a resend is already on its way
                }
                if f.rounds >= max_rounds {
                    return self.give_up(frame, GiveUp::Deadline);
                }
                f.rounds += 1;
                let count = f.count;
                let mut n = 0;
                for &(start, len) in &missing {
                    for i in start..start.saturating_add(len).min(count) {
                        self.queue.push_back((frame, i));
                        n += 1;
                    }
                }
                f.queued += n;
                f.resent += n;
            }
            _ => {} // another stream's, a foreign datagram, or garbage: ignore
        }
    }

    fn sample_rtt(&mut self, now: Instant, ts_us: u64) {
        let sample = Duration::from_micros(self.ts(now).saturating_sub(ts_us));
        match self.srtt {
            None => {
                self.srtt = Some(sample);
                self.rttvar = sample / 2;
            }
            Some(srtt) => {
                let diff = srtt.abs_diff(sample);
                self.rttvar = (self.rttvar * 3 + diff) / 4;
                self.srtt = Some((srtt * 7 + sample) / 8);
            }
        }
    }

    fn give_up(&mut self, frame: u32, reason: GiveUp) {
        if let Some(at) = self.in_flight.iter().position(|f| f.frame == frame) {
            let f = self.in_flight.remove(at).expect("present");
            self.events.push_back(SenderEvent::GaveUp {
                frame,
                reason,
                resent: f.resent,
            });
        }
    }

    /// When [`FramedSender::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let rto = self.rto();
        self.in_flight
            .iter()
            .filter(|f| f.queued == 0)
            .map(|f| {
                let backoff = rto * (1 << f.silent.min(4));
                (f.last_activity + backoff.min(self.config.max_rto * 4))
                    .min(f.first_sent + self.config.frame_deadline)
            })
            .min()
    }

    /// Probe frames that heard nothing for an RTO; give up those past their deadline or
    /// resend rounds.
    pub fn handle_timeout(&mut self, now: Instant) {
        let rto = self.rto();
        let (deadline, max_rounds, max_rto) = (
            self.config.frame_deadline,
            self.config.max_resend_rounds,
            self.config.max_rto,
        );
        let mut give_up = Vec::new();
        for f in self.in_flight.iter_mut().filter(|f| f.queued == 0) {
            if now >= f.first_sent + deadline || f.rounds >= max_rounds {
                if now >= f.first_sent + deadline
                    || now >= f.last_activity + (rto * (1 << f.silent.min(4))).min(max_rto * 4)
                {
                    give_up.push(f.frame);
                }
                continue;
            }
            if now >= f.last_activity + (rto * (1 << f.silent.min(4))).min(max_rto * 4) {
                f.rounds += 1;
                f.silent += 1;
                f.resent += 1;
                f.queued += 1;
                self.queue.push_back((f.frame, f.count - 1));
            }
        }
        for frame in give_up {
            self.give_up(frame, GiveUp::Deadline);
        }
    }

    pub fn poll_event(&mut self) -> Option<SenderEvent> {
        self.events.pop_front()
    }
}
