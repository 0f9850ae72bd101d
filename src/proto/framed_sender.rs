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
//!
//! Forward error correction ([`SenderConfig::fec`], [`FramedSender::set_fec`]): a frame
//! may get `m` Reed-Solomon parity shards ([`framed::PARITY`], computed with
//! `reed-solomon-simd` when the frame is queued) sent after its data chunks, the last shard
//! flagged [`framed::POLL`] instead of the last data chunk; the hub rebuilds up to `m` lost
//! data chunks without a round trip. Resends (after a nack, and probes) are data chunks
//! only. `m` is chosen per frame by [`super::fec::FecMode`] from the loss the hub reported:
//! the chunks its nacks listed and the chunks its acks say were rebuilt
//! (the ack's `rebuilt`), over the data chunks sent ([`super::fec::LossEstimator`]).
//!
//! Clock: every data datagram is flagged [`framed::CLOCK`], and a hub that knows the flag
//! puts its wall clock (`hub_us`) into the ack. With `t1` the sender's wall time when the
//! answered datagram left (its echoed `ts_us`, mapped through the wall anchor taken at
//! construction), `t2 = hub_us` and `t4` the sender's wall time when the ack came, one
//! sample is `offset = t2 - (t1 + t4) / 2` (hub clock minus sender clock) with `err =
//! (t4 - t1) / 2`: whatever the split of the round trip between the two directions, the
//! true offset is within `err` of the sample. [`ClockFilter`] keeps the sample with the
//! smallest round trip of the last minute, as NTP's clock filter does (queueing only ever
//! adds delay, so the fastest round trip is the least distorted), its error growing with
//! its age by [`DRIFT_PPM`]. Chunk 0 of every frame with a capture time carries the
//! capture time, this estimate and the quality ([`framed::CAPTURED`]), so the hub can tell
//! how old the frame is on its own clock.

use super::fec::{FecMode, LossEstimator};
use super::Transmit;
use crate::wire::framed::{self, AckStatus, Captured, DataHeader, DataHeaderBytes, Packet};
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
    /// Parity shards per frame (forward error correction): none by default.
    pub fec: FecMode,
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
            fec: FecMode::Off,
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

/// How fast two clocks may drift apart, at most, in parts per million (NTP's bound for a
/// disciplined clock is 15; an undisciplined crystal can be worse): the error of a clock
/// sample grows by this much per second of its age.
pub const DRIFT_PPM: u64 = 50;

/// A clock-offset estimate: `hub clock - sender clock`, within `err_us` (µs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClockEstimate {
    pub offset_us: i64,
    pub err_us: u64,
}

/// NTP's clock filter, simplified: the minimum-round-trip sample of a recent window, the
/// best of each [`ClockFilter::BUCKET`] kept for [`ClockFilter::BUCKETS`] buckets (about a
/// minute), so a burst of queued acks cannot push a good sample out. Socket-free: times
/// passed in.
#[derive(Clone, Debug, Default)]
pub struct ClockFilter {
    /// (bucket start, best sample in it: estimate and when it was taken), oldest first.
    buckets: VecDeque<(Instant, ClockEstimate, Instant)>,
    samples: u64,
}

impl ClockFilter {
    /// The span of one bucket.
    pub const BUCKET: Duration = Duration::from_secs(4);
    /// Buckets kept: samples older than `BUCKET * BUCKETS` are forgotten.
    pub const BUCKETS: usize = 15;

    /// One exchange: `t1` the wall time the datagram left, `t2` the hub's wall time in its
    /// answer, `t4` the wall time the answer came (all µs), observed at `now`. A sample
    /// with `t4 < t1` (impossible) is ignored.
    pub fn add(&mut self, t1: u64, t2: u64, t4: u64, now: Instant) {
        let Some(rtt) = t4.checked_sub(t1) else {
            return;
        };
        let mid = t1 as i128 + rtt as i128 / 2;
        let offset = (t2 as i128 - mid).clamp(i64::MIN as i128 + 1, i64::MAX as i128) as i64;
        let sample = ClockEstimate {
            offset_us: offset,
            err_us: rtt.div_ceil(2),
        };
        self.samples += 1;
        while self.buckets.front().is_some_and(|(start, ..)| {
            now.saturating_duration_since(*start) >= Self::BUCKET * Self::BUCKETS as u32
        }) {
            self.buckets.pop_front();
        }
        match self.buckets.back_mut() {
            Some((start, best, at)) if now.saturating_duration_since(*start) < Self::BUCKET => {
                if sample.err_us <= best.err_us {
                    (*best, *at) = (sample, now);
                }
            }
            _ => self.buckets.push_back((now, sample, now)),
        }
    }

    /// The best estimate at `now`: the sample whose error, grown by [`DRIFT_PPM`] for its
    /// age, is smallest; `None` before the first sample (or once every sample is a minute old).
    pub fn estimate(&self, now: Instant) -> Option<ClockEstimate> {
        let horizon = Self::BUCKET * Self::BUCKETS as u32;
        self.buckets
            .iter()
            .filter(|(start, ..)| now.saturating_duration_since(*start) < horizon)
            .map(|(_, e, at)| {
                let age_us = now.saturating_duration_since(*at).as_micros() as u64;
                ClockEstimate {
                    offset_us: e.offset_us,
                    err_us: e.err_us + age_us * DRIFT_PPM / 1_000_000,
                }
            })
            .min_by_key(|e| e.err_us)
    }

    /// Samples taken so far.
    pub fn samples(&self) -> u64 {
        self.samples
    }
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

/// One data or parity datagram to send: [`Chunk::header`] followed by [`Chunk::payload`].
#[derive(Clone, Debug)]
pub struct Chunk {
    pub header: DataHeaderBytes,
    /// The bytes the payload is part of (shared, not copied): the frame, or for a parity
    /// datagram its frame's parity (each shard after its check).
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
    /// Parity shards (`m`), and their datagrams' payloads: `m` blocks of the check and a
    /// shard.
    parity: u8,
    parity_data: Arc<Vec<u8>>,
    /// Data chunks sent (first sending and resends), and of them reported lost (nacked, or
    /// rebuilt from parity by the hub): the loss estimate's sample.
    sent_data: u32,
    lost: u32,
}

/// The framed sender. See the module documentation.
pub struct FramedSender {
    config: SenderConfig,
    /// Where its datagrams go.
    hub: SocketAddr,
    stream: u32,
    epoch: Instant,
    /// The sender's wall clock at `epoch`, µs since the Unix epoch: `ts_us` values map to
    /// wall times through it (one anchor per run, so a wall-clock step does not split it).
    wall_at_epoch_us: u64,
    clock: ClockFilter,
    next_frame: u32,
    in_flight: VecDeque<InFlight>,
    /// (frame, slot) to send, in order: slot `i < count` is data chunk `i`, `count + j`
    /// parity shard `j`.
    queue: VecDeque<(u32, u32)>,
    loss: LossEstimator,
    /// The parity count and data chunk count of the newest frame.
    last_parity: (u8, u16),
    /// Made once, reused for every frame's parity.
    encoder: Option<reed_solomon_simd::ReedSolomonEncoder>,
    /// Parity shards sent, data chunks rebuilt by the hub (from its acks).
    parity_sent: u64,
    rebuilt: u64,
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
        let wall_at_epoch = std::time::SystemTime::now()
            .checked_sub(Instant::now().saturating_duration_since(epoch))
            .unwrap_or(std::time::UNIX_EPOCH);
        Self::with_wall_clock(config, hub, stream, epoch, wall_us(wall_at_epoch))
    }

    /// [`FramedSender::new`] with the wall-clock time `epoch` stands for, µs since the Unix
    /// epoch (tests, and callers with their own clock).
    pub fn with_wall_clock(
        config: SenderConfig,
        hub: SocketAddr,
        stream: u32,
        epoch: Instant,
        wall_at_epoch_us: u64,
    ) -> Self {
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
            wall_at_epoch_us,
            clock: ClockFilter::default(),
            next_frame: 0,
            in_flight: VecDeque::new(),
            queue: VecDeque::new(),
            loss: LossEstimator::default(),
            last_parity: (0, 0),
            encoder: None,
            parity_sent: 0,
            rebuilt: 0,
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

    /// Frames in flight at most from now on (at least 1; `--window auto` changes it as the
    /// link does). Frames already in flight beyond a smaller window stay in flight.
    pub fn set_window(&mut self, window: usize) {
        self.config.window = window.max(1);
    }

    pub fn window(&self) -> usize {
        self.config.window
    }

    /// How frames queued from now on get their parity shards.
    pub fn set_fec(&mut self, fec: FecMode) {
        self.config.fec = fec;
    }

    pub fn fec(&self) -> FecMode {
        self.config.fec
    }

    /// The newest frame's parity: (`m` parity shards, `k` data chunks).
    pub fn parity_in_use(&self) -> (u8, u16) {
        self.last_parity
    }

    /// The datagram loss rate the hub reported lately ([`LossEstimator`]).
    pub fn loss_estimate(&self, now: Instant) -> f64 {
        self.loss.loss(now)
    }

    /// Parity shards sent so far.
    pub fn parity_sent(&self) -> u64 {
        self.parity_sent
    }

    /// Data chunks the hub said it rebuilt from parity, so far.
    pub fn rebuilt(&self) -> u64 {
        self.rebuilt
    }

    /// The parity datagrams' payloads of `data` in `count` chunks with `m` shards: each
    /// shard after the frame's check; `None` when the codec cannot (it can for every
    /// shape the wire allows).
    fn encode_parity(&mut self, data: &[u8], count: u16, m: u8) -> Option<Vec<u8>> {
        let (k, m) = (count as usize, m as usize);
        let length = data.len() as u32;
        let (c, s) = (
            framed::chunk_len(length, count),
            framed::shard_len(length, count),
        );
        let encoder = match &mut self.encoder {
            Some(e) => {
                e.reset(k, m, s).ok()?;
                e
            }
            None => self
                .encoder
                .insert(reed_solomon_simd::ReedSolomonEncoder::new(k, m, s).ok()?),
        };
        let mut padded = vec![0u8; s];
        for i in 0..k {
            let chunk = &data[(i * c).min(data.len())..((i + 1) * c).min(data.len())];
            padded[..chunk.len()].copy_from_slice(chunk);
            padded[chunk.len()..].fill(0);
            encoder.add_original_shard(&padded).ok()?;
        }
        let check = framed::frame_check(data).to_le_bytes();
        let result = encoder.encode().ok()?;
        let mut out = Vec::with_capacity(m * (framed::PARITY_CHECK_LEN + s));
        for shard in result.recovery_iter() {
            out.extend_from_slice(&check);
            out.extend_from_slice(shard);
        }
        Some(out)
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
        let mut m = self.config.fec.parity(count, self.loss.loss(now));
        if count > framed::MAX_PARITY_DATA as usize {
            m = 0;
        }
        let parity_data = match m {
            0 => Vec::new(),
            _ => self
                .encode_parity(&data, count as u16, m)
                .unwrap_or_else(|| {
                    m = 0;
                    Vec::new()
                }),
        };
        self.last_parity = (m, count as u16);
        let frame = self.next_frame;
        self.next_frame = self.next_frame.wrapping_add(1);
        self.queue
            .extend((0..count as u32 + u32::from(m)).map(|i| (frame, i)));
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
            queued: count as u32 + u32::from(m),
            parity: m,
            parity_data: Arc::new(parity_data),
            sent_data: 0,
            lost: 0,
        });
        Ok(frame)
    }

    fn ts(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_micros() as u64
    }

    /// The sender's wall clock at `now`, µs since the Unix epoch (through its anchor).
    pub fn wall_us(&self, now: Instant) -> u64 {
        self.wall_at_epoch_us + self.ts(now)
    }

    /// The current estimate of `hub clock - sender clock` ([`ClockFilter`]); `None` before
    /// a hub that puts its time into acks has answered.
    pub fn clock_estimate(&self, now: Instant) -> Option<ClockEstimate> {
        self.clock.estimate(now)
    }

    /// Acks with the hub's time seen so far.
    pub fn clock_samples(&self) -> u64 {
        self.clock.samples()
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
        while let Some((frame, slot)) = self.queue.pop_front() {
            let ts_us = self.ts(now);
            let Some(f) = self.in_flight.iter_mut().find(|f| f.frame == frame) else {
                continue; // given up or acked meanwhile
            };
            f.queued = f.queued.saturating_sub(1);
            f.last_activity = now;
            let length = f.data.len() as u32;
            // The last of a batch asks for an answer; every datagram asks for the hub's
            // clock in it, and says the frame's parity count.
            let flags = framed::CLOCK
                | if f.queued == 0 { framed::POLL } else { 0 }
                | u16::from(f.parity) << 8;
            if slot >= u32::from(f.count) {
                let j = (slot - u32::from(f.count)) as u16;
                let block = framed::PARITY_CHECK_LEN + framed::shard_len(length, f.count);
                let header = DataHeader {
                    flags,
                    stream: self.stream,
                    frame,
                    index: j,
                    count: f.count,
                    length,
                    ts_us,
                };
                self.parity_sent += 1;
                return Some(Chunk {
                    header: framed::parity_header(&header),
                    frame: Arc::clone(&f.parity_data),
                    payload: j as usize * block..(j as usize + 1) * block,
                });
            }
            let index = slot as u16;
            f.sent_data += 1;
            let start = framed::chunk_len(length, f.count) * index as usize;
            let len = framed::payload_len(length, f.count, index);
            let captured = (index == 0 && f.meta.capture_us != 0).then(|| {
                let (offset_us, offset_err_us) = match self.clock.estimate(now) {
                    Some(e) => (e.offset_us, e.err_us.min(u32::MAX as u64) as u32),
                    None => (framed::NO_OFFSET, u32::MAX),
                };
                Captured {
                    capture_us: f.meta.capture_us,
                    offset_us,
                    offset_err_us,
                    quality: f.meta.quality,
                }
            });
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
                    captured.as_ref(),
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
                hub_us,
                rebuilt,
            }) if stream == self.stream => {
                if let (Some(t2), true) = (hub_us, ts_us != 0) {
                    // a clock sample, whether or not the frame is still in flight
                    let (t1, t4) = (self.wall_at_epoch_us + ts_us, self.wall_us(now));
                    self.clock.add(t1, t2, t4, now);
                }
                let Some(at) = self.in_flight.iter().position(|f| f.frame == frame) else {
                    return; // late: no longer in flight
                };
                let f = self.in_flight.remove(at).expect("present");
                if ts_us != 0 {
                    self.sample_rtt(now, ts_us);
                }
                let rebuilt = u32::from(rebuilt);
                self.rebuilt += u64::from(rebuilt);
                // after a nack, chunks rebuilt are resends not waited for: the nack
                // counted the loss already
                let lost = if f.lost == 0 { rebuilt } else { f.lost };
                self.loss.record(f.sent_data, lost, now);
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
                    return self.give_up(frame, GiveUp::Deadline, now);
                }
                f.rounds += 1;
                let count = f.count;
                let mut n = 0;
                for &(start, len) in &missing {
                    for i in start..start.saturating_add(len).min(count) {
                        self.queue.push_back((frame, u32::from(i)));
                        n += 1;
                    }
                }
                f.queued += n;
                f.resent += n;
                f.lost += n;
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

    fn give_up(&mut self, frame: u32, reason: GiveUp, now: Instant) {
        if let Some(at) = self.in_flight.iter().position(|f| f.frame == frame) {
            let f = self.in_flight.remove(at).expect("present");
            self.loss.record(f.sent_data, f.lost, now);
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
                self.queue.push_back((f.frame, u32::from(f.count - 1)));
            }
        }
        for frame in give_up {
            self.give_up(frame, GiveUp::Deadline, now);
        }
    }

    pub fn poll_event(&mut self) -> Option<SenderEvent> {
        self.events.pop_front()
    }
}
