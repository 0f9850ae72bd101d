//! Tests of the framed protocol: a sender and a receiver joined by a simulated link with a
//! virtual clock and a seeded generator deciding loss, duplication, reordering and delay.
//! No socket, no sleep: time only moves when the simulation says so.

use super::framed_receiver::{FramedConfig, FramedDrop, FramedEvent, FramedReceiver};
use super::framed_sender::{FrameMeta, FramedSender, GiveUp, SenderConfig, SenderEvent};
use crate::wire::framed::{self, AckStatus, DataHeader};
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

struct SplitMix(u64);
impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 > 1.0 - p
    }
}

#[derive(Clone, Copy)]
struct Faults {
    loss: f64,
    dup: f64,
    reorder: f64,
}

/// A one-way link: datagrams arrive after `delay`, some lost, doubled, or delayed extra.
struct Link {
    faults: Faults,
    rng: SplitMix,
    delay: Duration,
    queue: BTreeMap<(Instant, u64), Vec<u8>>,
    seq: u64,
}

impl Link {
    fn new(faults: Faults, seed: u64) -> Self {
        Link {
            faults,
            rng: SplitMix(seed),
            delay: Duration::from_millis(1),
            queue: BTreeMap::new(),
            seq: 0,
        }
    }
    fn send(&mut self, now: Instant, d: Vec<u8>) {
        if self.rng.chance(self.faults.loss) {
            return;
        }
        let copies = if self.rng.chance(self.faults.dup) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let extra = if self.rng.chance(self.faults.reorder) {
                Duration::from_micros(1500)
            } else {
                Duration::ZERO
            };
            self.seq += 1;
            self.queue
                .insert((now + self.delay + extra, self.seq), d.clone());
        }
    }
    fn next_arrival(&self) -> Option<Instant> {
        self.queue.keys().next().map(|k| k.0)
    }
    fn pop_due(&mut self, now: Instant) -> Option<Vec<u8>> {
        let key = *self.queue.keys().next()?;
        if key.0 > now {
            return None;
        }
        self.queue.remove(&key)
    }
}

fn jpeg(len: usize, seed: u64) -> Vec<u8> {
    crate::jpegcheck::filler_jpeg(len, seed)
}

const CLIENT: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::LOCALHOST,
    5000,
));
const HUB: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::LOCALHOST,
    9999,
));

struct Outcome {
    delivered: Vec<(u32, Vec<u8>)>,
    acked: Vec<u32>,
    gave_up: Vec<(u32, GiveUp)>,
    resent: u32,
    hub_events: Vec<FramedEvent>,
}

/// Send `frames` through a faulty link both ways; returns what each side saw.
fn simulate(frames: &[Vec<u8>], config: SenderConfig, faults: Faults, seed: u64) -> Outcome {
    let t0 = Instant::now();
    let mut now = t0;
    let mut sender = FramedSender::new(config, HUB, 0xC0FFEE, t0);
    let mut hub = FramedReceiver::new(FramedConfig::default());
    let mut up = Link::new(faults, seed);
    let mut down = Link::new(faults, seed ^ 0xDEAD_BEEF);
    let mut out = Outcome {
        delivered: vec![],
        acked: vec![],
        gave_up: vec![],
        resent: 0,
        hub_events: vec![],
    };
    let mut next = 0;
    let mut steps = 0;
    while next < frames.len() || sender.in_flight() > 0 {
        steps += 1;
        assert!(steps < 10_000_000, "simulation does not end");
        while next < frames.len() && sender.can_send() {
            sender
                .send_frame(Arc::new(frames[next].clone()), FrameMeta::default(), now)
                .unwrap();
            next += 1;
        }
        while let Some(t) = sender.poll_transmit(now) {
            assert_eq!(t.to, HUB);
            up.send(now, t.payload.into_owned());
        }
        while let Some(d) = up.pop_due(now) {
            hub.handle_datagram(CLIENT, &d, now);
        }
        // only when the hub asks: its poll_timeout is never later than a real deadline
        if hub.poll_timeout().is_some_and(|t| t <= now) {
            hub.handle_timeout(now);
        }
        while let Some(t) = hub.poll_transmit() {
            assert_eq!(t.to, CLIENT);
            down.send(now, t.payload.into_owned());
        }
        while let Some(e) = hub.poll_event() {
            match e {
                FramedEvent::Frame { frame, jpeg, .. } => out.delivered.push((frame, jpeg)),
                e => out.hub_events.push(e),
            }
        }
        while let Some(d) = down.pop_due(now) {
            sender.handle_datagram(&d, now);
        }
        if sender.poll_timeout().is_some_and(|t| t <= now) {
            sender.handle_timeout(now);
        }
        while let Some(e) = sender.poll_event() {
            match e {
                SenderEvent::Acked { frame, resent, .. } => {
                    out.acked.push(frame);
                    out.resent += resent;
                }
                SenderEvent::GaveUp {
                    frame,
                    reason,
                    resent,
                } => {
                    out.gave_up.push((frame, reason));
                    out.resent += resent;
                }
            }
        }
        // advance virtual time to the next thing that can happen
        let wake = [
            up.next_arrival(),
            down.next_arrival(),
            sender.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min();
        match wake {
            Some(t) if t > now => now = t,
            Some(_) => {}
            None if sender.poll_timeout().is_none() && up.next_arrival().is_none() => {
                now += Duration::from_millis(1)
            }
            None => {}
        }
    }
    out
}

fn frames(n: usize, len: usize) -> Vec<Vec<u8>> {
    (0..n).map(|i| jpeg(len + i % 7, i as u64)).collect()
}

#[test]
fn clean_link_delivers_every_frame_once_without_resends() {
    let f = frames(50, 66_000);
    let o = simulate(
        &f,
        SenderConfig::default(),
        Faults {
            loss: 0.0,
            dup: 0.0,
            reorder: 0.0,
        },
        1,
    );
    assert_eq!(o.delivered.len(), 50);
    for (i, (id, bytes)) in o.delivered.iter().enumerate() {
        assert_eq!((*id as usize, bytes), (i, &f[i]));
    }
    assert_eq!(o.acked.len(), 50);
    assert_eq!(o.resent, 0);
}

#[test]
fn lossy_link_delivers_all_500_frames_intact() {
    // 5% loss, 2% duplication, 2% reordering, both ways
    let f = frames(500, 66_000);
    let o = simulate(
        &f,
        SenderConfig::default(),
        Faults {
            loss: 0.05,
            dup: 0.02,
            reorder: 0.02,
        },
        7,
    );
    assert!(o.gave_up.is_empty(), "gave up: {:?}", o.gave_up);
    assert_eq!(o.acked.len(), 500);
    assert_eq!(o.delivered.len(), 500, "each frame delivered exactly once");
    for (id, bytes) in &o.delivered {
        assert_eq!(bytes, &f[*id as usize], "frame {id} intact");
    }
    assert!(o.resent > 0, "loss must have caused resends");
}

#[test]
fn window_of_four_on_a_lossy_link_never_delivers_a_frame_twice_or_corrupt() {
    let f = frames(200, 20_000);
    let config = SenderConfig {
        window: 4,
        ..SenderConfig::default()
    };
    let o = simulate(
        &f,
        config,
        Faults {
            loss: 0.05,
            dup: 0.02,
            reorder: 0.05,
        },
        3,
    );
    let mut ids: Vec<u32> = o.delivered.iter().map(|(id, _)| *id).collect();
    for (id, bytes) in &o.delivered {
        assert_eq!(bytes, &f[*id as usize]);
    }
    let n = ids.len();
    ids.dedup();
    assert_eq!(ids.len(), n, "no duplicates");
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "latest frame wins: delivered in order"
    );
    assert_eq!(
        o.acked.len() + o.gave_up.len(),
        200,
        "every frame accounted for"
    );
    assert!(o
        .gave_up
        .iter()
        .all(|(_, r)| *r == GiveUp::Stale || *r == GiveUp::Deadline));
}

#[test]
fn dead_link_gives_every_frame_up_and_ends() {
    let f = frames(5, 5000);
    let o = simulate(
        &f,
        SenderConfig::default(),
        Faults {
            loss: 1.0,
            dup: 0.0,
            reorder: 0.0,
        },
        1,
    );
    assert!(o.delivered.is_empty());
    assert_eq!(
        o.gave_up,
        (0..5).map(|i| (i, GiveUp::Deadline)).collect::<Vec<_>>()
    );
}

fn data(stream: u32, frame: u32, index: u16, count: u16, bytes: &[u8]) -> Vec<u8> {
    let length = bytes.len() as u32;
    let start = framed::chunk_len(length, count) * index as usize;
    let len = framed::payload_len(length, count, index);
    let mut out = Vec::new();
    let h = DataHeader {
        flags: 0,
        stream,
        frame,
        index,
        count,
        length,
        ts_us: 1,
    };
    framed::emit_data(&mut out, &h, &bytes[start..start + len]);
    out
}

fn acks(hub: &mut FramedReceiver) -> Vec<framed::Packet<'static>> {
    let mut v = Vec::new();
    while let Some(t) = hub.poll_transmit() {
        let bytes: &'static [u8] = Box::leak(t.payload.into_owned().into_boxed_slice());
        v.push(framed::parse(bytes).unwrap());
    }
    v
}

#[test]
fn the_hub_nacks_exactly_the_missing_chunks() {
    let mut hub = FramedReceiver::new(FramedConfig::default());
    let now = Instant::now();
    let f = jpeg(10_000, 1);
    for i in [0u16, 1, 4, 7, 9] {
        hub.handle_datagram(CLIENT, &data(1, 0, i, 10, &f), now);
    }
    assert_eq!(
        acks(&mut hub),
        vec![framed::Packet::Nack {
            stream: 1,
            frame: 0,
            received: 5,
            missing: vec![(2, 2), (5, 2), (8, 1)]
        }]
    );
    for i in [2u16, 3, 5, 6, 8] {
        hub.handle_datagram(CLIENT, &data(1, 0, i, 10, &f), now);
    }
    assert_eq!(
        acks(&mut hub),
        vec![framed::Packet::Ack {
            stream: 1,
            frame: 0,
            status: AckStatus::Delivered,
            ts_us: 1,
            hub_us: None,
            rebuilt: 0
        }]
    );
    // a resent chunk of a finished frame gets the ack again (the first may have been lost)
    hub.handle_datagram(CLIENT, &data(1, 0, 9, 10, &f), now);
    assert!(matches!(
        acks(&mut hub)[..],
        [framed::Packet::Ack {
            frame: 0,
            status: AckStatus::Delivered,
            ..
        }]
    ));
    assert!(matches!(
        hub.poll_event(),
        Some(FramedEvent::Frame { frame: 0, .. })
    ));
    assert_eq!(hub.poll_event(), None, "delivered once");
}

/// Only the last chunk and chunks flagged POLL are answered: a resend batch that still
/// leaves a gap gets a nack at once, without waiting for a probe.
#[test]
fn a_polled_chunk_is_answered_with_what_is_still_missing() {
    let mut hub = FramedReceiver::new(FramedConfig::default());
    let now = Instant::now();
    let f = jpeg(10_000, 1);
    for i in [0u16, 3, 9] {
        hub.handle_datagram(CLIENT, &data(1, 0, i, 10, &f), now);
    }
    let nack = |missing| framed::Packet::Nack {
        stream: 1,
        frame: 0,
        received: 3,
        missing,
    };
    assert_eq!(acks(&mut hub), vec![nack(vec![(1, 2), (4, 5)])]);
    // resends of 1, 2 and 4 (the last polled); 4 lost on the way
    hub.handle_datagram(CLIENT, &data(1, 0, 1, 10, &f), now);
    assert_eq!(acks(&mut hub), vec![], "unflagged chunks are not answered");
    let mut polled = data(1, 0, 2, 10, &f);
    polled[6] = framed::POLL as u8;
    hub.handle_datagram(CLIENT, &polled, now);
    assert_eq!(
        acks(&mut hub),
        vec![framed::Packet::Nack {
            stream: 1,
            frame: 0,
            received: 5,
            missing: vec![(4, 5)]
        }]
    );
}

/// The sender flags the last datagram of every batch (the first sending and each resend)
/// POLL, and only that one.
#[test]
fn the_last_datagram_of_each_batch_is_polled() {
    let t0 = Instant::now();
    let mut sender = FramedSender::new(
        SenderConfig {
            chunk_size: 1000,
            ..SenderConfig::default()
        },
        HUB,
        1,
        t0,
    );
    let f = jpeg(10_000, 2);
    sender
        .send_frame(Arc::new(f), FrameMeta::default(), t0)
        .unwrap();
    let batch = |sender: &mut FramedSender| {
        let mut out = Vec::new();
        while let Some(t) = sender.poll_transmit(t0) {
            match framed::parse(&t.payload) {
                Ok(framed::Packet::Data { header: h, .. }) => {
                    // every datagram asks for the hub's clock; POLL is what differs
                    assert_ne!(h.flags & framed::CLOCK, 0);
                    out.push((h.index, h.flags & !framed::CLOCK))
                }
                other => panic!("{other:?}"),
            }
        }
        out
    };
    let first = batch(&mut sender);
    assert_eq!(first.len(), 10);
    assert!(first[..9].iter().all(|&(_, flags)| flags == 0));
    assert_eq!(first[9], (9, framed::POLL));
    sender.handle_datagram(&framed::emit_nack(1, 0, 6, &[(2, 1), (5, 3)]), t0);
    assert_eq!(
        batch(&mut sender),
        vec![(2, 0), (5, 0), (6, 0), (7, framed::POLL)]
    );
}

/// 20% loss both ways with a 200 ms deadline per frame: recovery rounds cost a round trip
/// each (polled resends), and the probe backoff starts over whenever the hub answers, so
/// nearly every frame makes it (the same link without either got about half through).
#[test]
fn heavy_loss_recovers_within_a_short_deadline() {
    let f = frames(200, 66_000);
    let o = simulate(
        &f,
        SenderConfig {
            frame_deadline: Duration::from_millis(200),
            ..SenderConfig::default()
        },
        Faults {
            loss: 0.2,
            dup: 0.0,
            reorder: 0.0,
        },
        3,
    );
    assert!(o.acked.len() >= 190, "acked {} of 200", o.acked.len());
    for (id, bytes) in &o.delivered {
        assert_eq!(bytes, &f[*id as usize], "frame {id} intact");
    }
}

#[test]
fn a_restarted_sender_drops_its_old_partial_and_its_new_frames_arrive() {
    let mut hub = FramedReceiver::new(FramedConfig::default());
    let now = Instant::now();
    let (old, new) = (jpeg(5000, 1), jpeg(6000, 2));
    hub.handle_datagram(CLIENT, &data(111, 40, 0, 4, &old), now);
    for i in 0..4 {
        hub.handle_datagram(CLIENT, &data(222, 0, i, 4, &new), now);
    }
    assert!(matches!(
        hub.poll_event(),
        Some(FramedEvent::Dropped {
            frame: 40,
            reason: FramedDrop::Restarted,
            received: 1,
            count: 4,
            ..
        })
    ));
    assert!(matches!(
        hub.poll_event(),
        Some(FramedEvent::Frame {
            from: CLIENT,
            stream: 222,
            frame: 0,
            name: None,
            jpeg,
            ..
        }) if jpeg == new
    ));
    assert_eq!(hub.partial_frames(), 0);
    assert_eq!(hub.partial_bytes(), 0);
}

#[test]
fn partial_frames_expire_and_memory_is_bounded() {
    let config = FramedConfig {
        max_partial_bytes: 100_000,
        ..FramedConfig::default()
    };
    let mut hub = FramedReceiver::new(config);
    let t0 = Instant::now();
    // 20 senders each send 29 of the 30 chunks of a 30 KB frame: at most three fit in
    // 100 KB (memory is charged for the chunks that came, not for the frame's claim)
    let f = jpeg(30_000, 1);
    for port in 0..20u16 {
        let from = SocketAddr::from(([127, 0, 0, 1], 6000 + port));
        for i in 0..29 {
            hub.handle_datagram(from, &data(port as u32, 0, i, 30, &f), t0);
            assert!(hub.partial_bytes() <= 100_000);
        }
    }
    assert_eq!(hub.partial_frames(), 3);
    assert_eq!(hub.poll_timeout(), Some(t0 + Duration::from_millis(1000)));
    hub.handle_timeout(t0 + Duration::from_millis(999));
    assert_eq!(hub.partial_frames(), 3);
    hub.handle_timeout(t0 + Duration::from_millis(1000));
    assert_eq!((hub.partial_frames(), hub.partial_bytes()), (0, 0));
    // what is left is remembering the 20 senders: forgotten 30 s after their datagram
    assert_eq!(hub.poll_timeout(), Some(t0 + Duration::from_secs(30)));
    hub.handle_timeout(t0 + Duration::from_secs(30));
    assert_eq!(hub.poll_timeout(), None);
}

#[test]
fn poll_timeout_follows_the_oldest_partial_frame() {
    let mut hub = FramedReceiver::new(FramedConfig::default());
    let t0 = Instant::now();
    assert_eq!(hub.poll_timeout(), None);
    let f = jpeg(3000, 3);
    hub.handle_datagram(CLIENT, &data(1, 0, 0, 3, &f), t0);
    let second = t0 + Duration::from_millis(400);
    hub.handle_datagram(CLIENT, &data(1, 0, 1, 3, &f), second);
    // a lower bound: the first chunk's deadline, though the second moved the frame's later
    assert_eq!(hub.poll_timeout(), Some(t0 + Duration::from_millis(1000)));
    hub.handle_timeout(t0 + Duration::from_millis(1000));
    assert_eq!(hub.partial_frames(), 1, "the frame had a chunk 400 ms in");
    assert_eq!(
        hub.poll_timeout(),
        Some(second + Duration::from_millis(1000)),
        "exact after handle_timeout"
    );
    hub.handle_timeout(second + Duration::from_millis(1000));
    assert_eq!(hub.partial_frames(), 0);
}

#[test]
fn a_newer_complete_frame_makes_older_partials_stale() {
    let mut hub = FramedReceiver::new(FramedConfig::default());
    let now = Instant::now();
    let (a, b) = (jpeg(3000, 1), jpeg(3000, 2));
    hub.handle_datagram(CLIENT, &data(1, 5, 0, 3, &a), now);
    for i in 0..3 {
        hub.handle_datagram(CLIENT, &data(1, 6, i, 3, &b), now);
    }
    let sent = acks(&mut hub);
    assert!(sent.contains(&framed::Packet::Ack {
        stream: 1,
        frame: 5,
        status: AckStatus::Stale,
        ts_us: 0,
        hub_us: None,
        rebuilt: 0
    }));
    // the rest of frame 5 arrives late: answered stale, never delivered
    hub.handle_datagram(CLIENT, &data(1, 5, 1, 3, &a), now);
    assert!(matches!(
        acks(&mut hub)[..],
        [framed::Packet::Ack {
            frame: 5,
            status: AckStatus::Stale,
            ..
        }]
    ));
    let delivered: Vec<u32> = std::iter::from_fn(|| hub.poll_event())
        .filter_map(|e| match e {
            FramedEvent::Frame { frame, .. } => Some(frame),
            _ => None,
        })
        .collect();
    assert_eq!(delivered, vec![6]);
}

#[test]
fn late_and_foreign_acks_are_ignored_by_the_sender() {
    let t0 = Instant::now();
    let mut s = FramedSender::new(SenderConfig::default(), HUB, 9, t0);
    let meta = FrameMeta {
        capture_us: 1_700_000_000_123_456,
        quality: 77,
    };
    s.send_frame(Arc::new(jpeg(3000, 1)), meta, t0).unwrap();
    while s.poll_transmit(t0).is_some() {}
    s.handle_datagram(&framed::emit_ack(9, 77, AckStatus::Delivered, 0), t0); // not in flight
    s.handle_datagram(&framed::emit_ack(8, 0, AckStatus::Delivered, 0), t0); // other stream
    s.handle_datagram(b"get message!!!", t0);
    assert_eq!(s.poll_event(), None);
    assert_eq!(s.in_flight(), 1);
    s.handle_datagram(
        &framed::emit_ack(9, 0, AckStatus::Delivered, 0),
        t0 + Duration::from_millis(3),
    );
    assert!(matches!(
        s.poll_event(),
        Some(SenderEvent::Acked {
            frame: 0,
            resent: 0,
            meta: m,
            ..
        }) if m == meta
    ));
    assert!(s.can_send());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any loss, duplication and reordering of a frame's datagrams: the receiver delivers
    /// exactly the original bytes, or nothing; never anything else, never twice.
    #[test]
    fn reassembly_delivers_the_original_or_nothing(
        len in 2usize..20_000,
        chunk in 1usize..3000,
        picks in proptest::collection::vec(0usize..1000, 0..60),
    ) {
        let f = jpeg(len.max(4), len as u64);
        let count = framed::chunk_count(f.len(), chunk).min(u16::MAX as usize) as u16;
        let chunk_ok = framed::chunk_len(f.len() as u32, count) <= framed::MAX_CHUNK_SIZE;
        prop_assume!(chunk_ok);
        let mut hub = FramedReceiver::new(FramedConfig::default());
        let now = Instant::now();
        for p in &picks {
            hub.handle_datagram(CLIENT, &data(1, 0, (p % count as usize) as u16, count, &f), now);
        }
        let mut frames = Vec::new();
        while let Some(e) = hub.poll_event() {
            if let FramedEvent::Frame { jpeg, .. } = e { frames.push(jpeg); }
        }
        let all_present = (0..count as usize).all(|i| picks.iter().any(|p| p % count as usize == i));
        if all_present {
            prop_assert_eq!(frames, vec![f]);
        } else {
            prop_assert!(frames.is_empty());
        }
    }

    /// Arbitrary bytes never panic the receiver or the sender, and never make a frame.
    #[test]
    fn arbitrary_bytes_are_harmless(datagrams in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 0..30), magic in any::<bool>()) {
        let mut hub = FramedReceiver::new(FramedConfig::default());
        let mut s = FramedSender::new(SenderConfig::default(), HUB, 1, Instant::now());
        let now = Instant::now();
        for mut d in datagrams {
            if magic && d.len() >= 6 {
                d[..4].copy_from_slice(&framed::MAGIC);
                d[4] = framed::VERSION;
                d[5] %= 3;
            }
            hub.handle_datagram(CLIENT, &d, now);
            s.handle_datagram(&d, now);
        }
        while let Some(e) = hub.poll_event() {
            let is_frame = matches!(e, FramedEvent::Frame { .. });
            prop_assert!(!is_frame, "a frame from random bytes");
        }
    }
}

// ---- abuse (issue 11): claims cost what came, fair shares, no amplification ----

/// Virtual time that moves 10 us per datagram, so "least recently heard" means something.
struct Clock(Instant);
impl Clock {
    fn new() -> Clock {
        Clock(Instant::now())
    }
    fn tick(&mut self) -> Instant {
        self.0 += Duration::from_micros(10);
        self.0
    }
}

/// A real JPEG (the receiver's checks may look inside), `len` bytes.
fn real_jpeg(len: usize, seed: u64) -> Vec<u8> {
    crate::media::testjpeg::jpeg_of_len(len, seed).unwrap()
}

/// A data datagram claiming a frame of `length` bytes in `count` chunks, carrying chunk
/// `index` with `payload` (which must be that chunk's size for it to parse).
fn claim(from_stream: u32, index: u16, count: u16, length: u32, flags: u16) -> Vec<u8> {
    let h = DataHeader {
        flags,
        stream: from_stream,
        frame: 0,
        index,
        count,
        length,
        ts_us: 1,
    };
    let payload = vec![0x5A; framed::payload_len(length, count, index)];
    let mut out = Vec::new();
    framed::emit_data(&mut out, &h, &payload);
    out
}

/// The `i`th attacking source, spread over 127.0.0.0/8 (40 /24s of 50 hosts, as many
/// sockets per host as it takes).
fn attacker(i: usize) -> SocketAddr {
    let host = i % 2000;
    SocketAddr::from((
        [127, 1 + (host / 50) as u8, 0, 1 + (host % 50) as u8],
        10_000 + (i / 2000) as u16,
    ))
}

/// The camera's frame `frame` as 1400-byte chunks.
fn camera_chunks(f: &[u8], frame: u32) -> Vec<Vec<u8>> {
    let count = framed::chunk_count(f.len(), 1400) as u16;
    (0..count)
        .map(|i| {
            let mut d = data(7, frame, i, count, f);
            d[12..16].copy_from_slice(&frame.to_le_bytes());
            d
        })
        .collect()
}

/// Frames delivered from `from`, draining the events.
fn delivered_from(hub: &mut FramedReceiver, from: SocketAddr) -> Vec<u32> {
    let mut v = Vec::new();
    while let Some(e) = hub.poll_event() {
        if let FramedEvent::Frame { from: f, frame, .. } = e {
            if f == from {
                v.push(frame);
            }
        }
    }
    v
}

/// The first attack: from 2000 sources across 127.0.0.0/8, one datagram each
/// whose header claims a 16 MiB frame, between every chunk of a camera's frames. Each
/// claim costs the chunk that came (not 16 MiB), and the camera completes every frame.
#[test]
fn claims_of_16_mib_from_2000_sources_cost_what_came_and_the_camera_keeps_going() {
    let mut hub = FramedReceiver::new(FramedConfig::default());
    let mut clock = Clock::new();
    let f = real_jpeg(67_000, 1);
    let mut next_attacker = 0;
    let mut sent = 0usize;
    for frame in 0..30u32 {
        for chunk in camera_chunks(&f, frame) {
            hub.handle_datagram(CLIENT, &chunk, clock.tick());
            for _ in 0..50 {
                let d = claim(next_attacker as u32, 0, 16384, 16 << 20, 0);
                hub.handle_datagram(attacker(next_attacker), &d, clock.tick());
                next_attacker += 1;
                sent += d.len();
            }
            // what the flood holds is bounded by what it sent, never by its claims
            assert!(hub.partial_bytes() <= 2 * sent + 256 * next_attacker + 200_000);
        }
        let one = hub.partial_bytes_of(attacker(next_attacker - 1));
        assert!(one <= 1024 + 256 + 48, "one claim holds {one} bytes");
    }
    assert_eq!(
        delivered_from(&mut hub, CLIENT),
        (0..30).collect::<Vec<_>>()
    );
    assert!(next_attacker >= 2000);
    assert!(hub.senders() <= FramedConfig::default().max_streams);
}

/// The same claim on the *last* chunk (index 32767 of a 16 MiB frame): before, each one
/// zero-filled a 16 MiB gap. Now each costs its chunk: after N such datagrams the partial
/// bytes are at most N times (datagram + overhead), and the camera completes every frame.
#[test]
fn last_chunk_claims_cost_one_chunk_each_and_the_camera_keeps_going() {
    let mut hub = FramedReceiver::new(FramedConfig::default());
    let mut clock = Clock::new();
    let f = real_jpeg(67_000, 2);
    let (mut n, mut camera_bytes) = (0usize, 0usize);
    let per_claim = claim(0, 32767, 32768, 16 << 20, 0).len() + 256 + 48;
    for frame in 0..20u32 {
        let chunks = camera_chunks(&f, frame);
        for chunk in &chunks {
            hub.handle_datagram(CLIENT, chunk, clock.tick());
            camera_bytes += chunk.len();
            for _ in 0..20 {
                let d = claim(n as u32, 32767, 32768, 16 << 20, 0);
                hub.handle_datagram(attacker(n), &d, clock.tick());
                n += 1;
                let flood_bytes = hub.partial_bytes() - hub.partial_bytes_of(CLIENT);
                assert!(flood_bytes <= n * per_claim, "{flood_bytes} after {n}");
                // the nack to each claim is no bigger than the claim (no amplification)
                while let Some(t) = hub.poll_transmit() {
                    if t.to != CLIENT {
                        assert!(
                            t.payload.len() <= d.len(),
                            "{} > {}",
                            t.payload.len(),
                            d.len()
                        );
                    }
                }
            }
        }
        // the camera's own partial never held more than twice what it sent of it
        assert!(hub.partial_bytes_of(CLIENT) <= 2 * camera_bytes + 256);
        camera_bytes = 0;
    }
    assert_eq!(
        delivered_from(&mut hub, CLIENT),
        (0..20).collect::<Vec<_>>()
    );
}

/// Under real memory pressure (sources that send bytes, not just claims, far more than the
/// budget): a camera that has delivered a frame before keeps its share and completes
/// every frame; the flood evicts only its own partials.
#[test]
fn a_flood_that_sends_real_bytes_evicts_only_itself() {
    let config = FramedConfig {
        max_partial_bytes: 1 << 20,
        ..FramedConfig::default()
    };
    let mut hub = FramedReceiver::new(config);
    let mut clock = Clock::new();
    let f = real_jpeg(67_000, 3);
    let mut n = 0;
    let mut flood_evicted = 0;
    // frame 0 before the flood: from then on the camera is a source that completed one
    for frame in 0..20u32 {
        for chunk in camera_chunks(&f, frame) {
            hub.handle_datagram(CLIENT, &chunk, clock.tick());
            if frame == 0 {
                continue;
            }
            // 20 sources each send 10 in-order 1024-byte chunks of a 256 KiB frame
            for _ in 0..20 {
                for i in 0..10 {
                    let d = claim(n as u32, i, 256, 256 << 10, 0);
                    hub.handle_datagram(attacker(n), &d, clock.tick());
                }
                n += 1;
            }
            assert!(hub.partial_bytes() <= 1 << 20);
        }
        while let Some(e) = hub.poll_event() {
            match e {
                FramedEvent::Frame {
                    from, frame: got, ..
                } => {
                    assert_eq!((from, got), (CLIENT, frame))
                }
                FramedEvent::Dropped { from, .. } => {
                    assert_ne!(from, CLIENT, "the camera's frame was evicted");
                    flood_evicted += 1;
                }
                _ => {}
            }
        }
    }
    assert!(
        flood_evicted > 1000,
        "the flood did press the budget: {flood_evicted}"
    );
}

/// A camera that has not completed a frame yet, in its own /24, beside a flood from one
/// other /24 that fills the budget: the flood's range is the heavier, so it pays, and the
/// camera's first frames complete.
#[test]
fn a_new_camera_in_its_own_range_keeps_its_share_of_a_flooded_budget() {
    let config = FramedConfig {
        max_partial_bytes: 512 << 10,
        ..FramedConfig::default()
    };
    let mut hub = FramedReceiver::new(config);
    let mut clock = Clock::new();
    let f = real_jpeg(67_000, 4);
    let flood = |i: usize| SocketAddr::from(([127, 0, 9, 1 + (i % 50) as u8], 20_000 + i as u16));
    let mut n = 0;
    for frame in 0..3u32 {
        for chunk in camera_chunks(&f, frame) {
            hub.handle_datagram(CLIENT, &chunk, clock.tick());
            for _ in 0..10 {
                for i in 0..8 {
                    let d = claim(n as u32, i, 256, 256 << 10, 0);
                    hub.handle_datagram(flood(n), &d, clock.tick());
                }
                n += 1;
            }
        }
        assert!(hub.partial_bytes() <= 512 << 10);
    }
    assert_eq!(delivered_from(&mut hub, CLIENT), vec![0, 1, 2]);
}

/// The POLL amplification: a 33-byte datagram flagged POLL for a frame with 256
/// chunks missing got a 1044-byte nack (31.6x) toward whatever address it claimed. Now an
/// address that never completed a frame gets back at most what it sent, in total, however
/// it asks; and the legitimate sender on a lossy link still gets every frame (the lossy
/// simulations above run through the same credit).
#[test]
fn poll_replies_to_an_unvalidated_address_never_exceed_what_it_sent() {
    let mut hub = FramedReceiver::new(FramedConfig::default());
    let now = Instant::now();
    let victim = SocketAddr::from(([127, 3, 4, 5], 4444));
    // one spoofed POLL: 513 chunks of 1 byte, only chunk 1 sent
    let d = claim(9, 1, 513, 513, framed::POLL);
    assert_eq!(d.len(), 33);
    hub.handle_datagram(victim, &d, now);
    let replies: Vec<super::Transmit> = std::iter::from_fn(|| hub.poll_transmit()).collect();
    let total: usize = replies.iter().map(|t| t.payload.len()).sum();
    assert!(total <= 33, "{total} bytes back for 33");
    assert!(
        matches!(framed::parse(&replies[0].payload), Ok(framed::Packet::Nack { ref missing, .. }) if !missing.is_empty()),
        "still a useful nack: at least one range"
    );
    // then every other chunk, each polled: 256 gaps; the replies never add up to more
    let (mut received, mut sent) = (33usize, total);
    for i in (3..513).step_by(2) {
        let d = claim(9, i, 513, 513, framed::POLL);
        hub.handle_datagram(victim, &d, now);
        received += d.len();
        sent += std::iter::from_fn(|| hub.poll_transmit())
            .map(|t| t.payload.len())
            .sum::<usize>();
        assert!(sent <= received, "{sent} sent for {received} received");
    }
    assert!(
        sent > received / 2,
        "the credit is used, not withheld: {sent}"
    );
}

/// Once a frame from an address completed (validated), nacks are no longer cut to 1x: a
/// camera that lost most chunks of a frame gets the full list back.
#[test]
fn a_validated_sender_gets_full_nacks() {
    let mut hub = FramedReceiver::new(FramedConfig::default());
    let mut clock = Clock::new();
    let f = real_jpeg(67_000, 5);
    for chunk in camera_chunks(&f, 0) {
        hub.handle_datagram(CLIENT, &chunk, clock.tick());
    }
    assert_eq!(delivered_from(&mut hub, CLIENT), vec![0]);
    while hub.poll_transmit().is_some() {}
    let chunks = camera_chunks(&f, 1);
    let last = chunks.len() - 1;
    for i in (0..last).step_by(2).chain([last]) {
        hub.handle_datagram(CLIENT, &chunks[i], clock.tick());
    }
    let nacks = acks(&mut hub);
    let want: Vec<(u16, u16)> = (1..last as u16).step_by(2).map(|i| (i, 1)).collect();
    assert!(
        matches!(&nacks[..], [framed::Packet::Nack { missing, .. }] if *missing == want),
        "{nacks:?}"
    );
}

/// The hub's clock runs 3.7 s ahead of the sender's; datagrams take 30 ms up and 2 ms down
/// (asymmetric), some frames another 0..60 ms in a queue on the way up. The sender's offset
/// estimate is within its stated error of the truth, the error is at most half the fastest
/// round trip, and the hub's latency figure (synced) is within that error of the true
/// capture-to-arrival time.
#[test]
fn the_clock_offset_is_estimated_within_its_error_over_an_asymmetric_path() {
    use super::framed_receiver::{ClockSync, WallClock};
    use std::time::UNIX_EPOCH;
    let t0 = Instant::now();
    let sender_wall0 = 1_764_000_000_000_000u64; // µs
    let offset_true_us: i64 = 3_700_000;
    let (up, down) = (Duration::from_millis(30), Duration::from_millis(2));
    let hub_wall = UNIX_EPOCH + Duration::from_micros(sender_wall0 + offset_true_us as u64);
    let mut hub =
        FramedReceiver::with_wall_clock(FramedConfig::default(), WallClock::anchored(t0, hub_wall));
    let mut s = FramedSender::with_wall_clock(SenderConfig::default(), HUB, 5, t0, sender_wall0);
    assert_eq!(s.clock_estimate(t0), None, "no sample yet");
    let mut timings = Vec::new();
    for i in 0..40u32 {
        let sent = t0 + Duration::from_millis(100) * i;
        let queued = Duration::from_millis(u64::from(i % 4) * 20);
        let capture_us = s.wall_us(sent) - 5_000; // captured 5 ms before it was sent
        let meta = FrameMeta {
            capture_us,
            quality: 70,
        };
        s.send_frame(Arc::new(jpeg(3000, u64::from(i))), meta, sent)
            .unwrap();
        let arrives = sent + up + queued;
        while let Some(t) = s.poll_transmit(sent) {
            hub.handle_datagram(CLIENT, &t.payload, arrives);
        }
        while let Some(t) = hub.poll_transmit() {
            s.handle_datagram(&t.payload, arrives + down);
        }
        while let Some(e) = hub.poll_event() {
            if let FramedEvent::Frame { timing, .. } = e {
                let truth_us = (arrives - sent).as_micros() as u64 + 5_000;
                timings.push((timing, truth_us));
            }
        }
        assert!(matches!(s.poll_event(), Some(SenderEvent::Acked { .. })));
    }
    let est = s.clock_estimate(t0 + Duration::from_secs(4)).unwrap();
    let diff = (est.offset_us - offset_true_us).unsigned_abs();
    assert!(
        diff <= est.err_us,
        "estimate {est:?}, truth {offset_true_us}"
    );
    // the fastest round trip is 32 ms: its half, plus a little drift allowance
    assert!(est.err_us <= 16_500, "{est:?}");
    // every ack was a sample but the first (sent at the epoch: ts_us 0 stands for "no time")
    assert_eq!(s.clock_samples(), 39);
    // the first two frames went out before any estimate (the first ack had no usable
    // time): a capture time, but unsynced
    for (t, _) in &timings[..2] {
        assert_eq!(
            (t.clock, t.latency_us, t.quality),
            (ClockSync::Unsynced, None, Some(70))
        );
        assert!(t.capture_us.is_some());
    }
    assert_eq!(timings.len(), 40);
    for (i, (t, truth_us)) in timings.iter().enumerate().skip(2) {
        let err = t.offset_err_us.unwrap();
        if err > super::framed_receiver::MAX_SYNC_ERR_US {
            // only the queued round trips were sampled yet: too uncertain to tell
            assert!(i < 5, "{i}: {t:?}");
            assert_eq!((t.clock, t.latency_us), (ClockSync::Unsynced, None));
            continue;
        }
        assert_eq!(t.clock, ClockSync::Synced, "{t:?}");
        let err = u64::from(err);
        let latency = t.latency_us.unwrap();
        assert!(
            latency.abs_diff(*truth_us) <= err,
            "{t:?}, truth {truth_us}"
        );
    }
}

/// The hub puts its clock into an ack only for a datagram that asks (CLOCK or CAPTURED)
/// and is at least as long as that ack: a short datagram gets the plain 28-byte ack.
#[test]
fn the_hub_time_never_makes_an_ack_longer_than_what_it_answers() {
    let now = Instant::now();
    let mut hub = FramedReceiver::new(FramedConfig::default());
    let send = |hub: &mut FramedReceiver, stream: u32, flags: u16, payload: &[u8]| {
        let h = DataHeader {
            flags,
            stream,
            frame: 0,
            index: 0,
            count: 1,
            length: payload.len() as u32,
            ts_us: 9,
        };
        let mut d = Vec::new();
        framed::emit_data(&mut d, &h, payload);
        hub.handle_datagram(CLIENT, &d, now);
        let t = hub.poll_transmit().expect("an answer");
        let hub_us = match framed::parse(&t.payload) {
            Ok(framed::Packet::Ack { hub_us, .. }) => hub_us,
            other => panic!("{other:?}"),
        };
        (d.len(), t.payload.len(), hub_us)
    };
    // 3 bytes (not a JPEG: rejected) in a 35-byte datagram: the plain ack
    let (sent, got, hub_us) = send(&mut hub, 1, framed::CLOCK, b"abc");
    assert_eq!((sent, got, hub_us), (35, framed::ACK_LEN, None));
    // 4 bytes: 36 = the timed ack's length
    let (sent, got, hub_us) = send(&mut hub, 2, framed::CLOCK, b"abcd");
    assert_eq!((sent, got), (36, framed::TIMED_ACK_LEN));
    assert!(
        hub_us.is_some_and(|t| t > 1_700_000_000_000_000),
        "{hub_us:?}"
    );
    // not asked for: none
    let (_, got, _) = send(&mut hub, 3, 0, &jpeg(500, 1));
    assert_eq!(got, framed::ACK_LEN);
}

/// Latency is computed only with an offset estimate within MAX_SYNC_ERR_US; without one
/// (or with a worse one) the frame is "unsynced", and a frame without a capture time "none".
#[test]
fn latency_needs_a_good_enough_offset() {
    use super::framed_receiver::{ClockSync, FrameTiming, MAX_SYNC_ERR_US};
    use crate::wire::framed::{Captured, NO_OFFSET};
    let c = Captured {
        capture_us: 1_000_000_000,
        offset_us: 3_700_000,
        offset_err_us: 500,
        quality: 0,
    };
    let arrival = 1_000_000_000 + 3_700_000 + 42_000;
    let t = FrameTiming::framed(arrival, Some(&c));
    assert_eq!(
        (t.clock, t.latency_us, t.quality),
        (ClockSync::Synced, Some(42_000), None)
    );
    let worse = Captured {
        offset_err_us: MAX_SYNC_ERR_US + 1,
        ..c
    };
    let t = FrameTiming::framed(arrival, Some(&worse));
    assert_eq!((t.clock, t.latency_us), (ClockSync::Unsynced, None));
    let none = Captured {
        offset_us: NO_OFFSET,
        ..c
    };
    let t = FrameTiming::framed(arrival, Some(&none));
    assert_eq!(
        (t.clock, t.latency_us, t.offset_err_us),
        (ClockSync::Unsynced, None, None)
    );
    let t = FrameTiming::framed(arrival, None);
    assert_eq!((t.clock, t.capture_us), (ClockSync::None, None));
    // an estimate that puts the capture after the arrival (within its error) gives 0
    let ahead = Captured {
        offset_us: 3_700_000 + 43_000,
        ..c
    };
    assert_eq!(
        FrameTiming::framed(arrival, Some(&ahead)).latency_us,
        Some(0)
    );
}

// ---- forward error correction (issue 13): parity shards rebuild lost chunks ----

/// A sender with 1000-byte chunks and `fec`, one frame of `f` queued: its datagrams, each
/// with what it is (`Ok(data index)` or `Err(parity shard number)`).
fn fec_frame(fec: super::fec::FecMode, f: &[u8], t0: Instant) -> (FramedSender, Vec<Sent>) {
    let config = SenderConfig {
        chunk_size: 1000,
        fec,
        ..SenderConfig::default()
    };
    let mut sender = FramedSender::new(config, HUB, 1, t0);
    sender
        .send_frame(Arc::new(f.to_vec()), FrameMeta::default(), t0)
        .unwrap();
    let out = drain(&mut sender, t0);
    (sender, out)
}

/// A datagram sent: `Ok(data index)` or `Err(parity shard number)`, and its bytes.
type Sent = (Result<u16, u16>, Vec<u8>);

fn drain(sender: &mut FramedSender, now: Instant) -> Vec<Sent> {
    std::iter::from_fn(|| sender.poll_transmit(now))
        .map(|t| {
            let d = t.payload.into_owned();
            let what = match framed::parse(&d) {
                Ok(framed::Packet::Data { header, .. }) => Ok(header.index),
                Ok(framed::Packet::Parity { header, .. }) => Err(header.index),
                other => panic!("{other:?}"),
            };
            (what, d)
        })
        .collect()
}

fn the_frame(hub: &mut FramedReceiver) -> Option<Vec<u8>> {
    let mut got = None;
    while let Some(e) = hub.poll_event() {
        match e {
            FramedEvent::Frame { jpeg, .. } => {
                assert!(got.is_none(), "delivered once");
                got = Some(jpeg)
            }
            FramedEvent::Corrupt { .. } => panic!("corrupt"),
            _ => {}
        }
    }
    got
}

/// 20 data chunks with 20% parity: 4 shards, after the data, the last one polled; data
/// chunks carry m too.
#[test]
fn parity_shards_follow_the_data_chunks_and_the_last_is_polled() {
    let t0 = Instant::now();
    let f = jpeg(20_000, 5);
    let (sender, out) = fec_frame(super::fec::FecMode::Percent(20), &f, t0);
    let what: Vec<_> = out.iter().map(|(w, _)| *w).collect();
    let expected: Vec<Result<u16, u16>> = (0..20).map(Ok).chain((0..4).map(Err)).collect();
    assert_eq!(what, expected);
    for (i, (_, d)) in out.iter().enumerate() {
        let flags = u16::from_le_bytes([d[6], d[7]]);
        assert_eq!(flags >> 8, 4, "datagram {i} says m = 4");
        assert_eq!(
            flags & framed::POLL != 0,
            i == 23,
            "only the last is polled"
        );
    }
    assert_eq!(sender.parity_in_use(), (4, 20));
    assert_eq!(sender.parity_sent(), 4);
}

/// Any `m` of the data chunks lost (here 40 random choices of 4 of 20, the last data
/// chunk and the first among them sometimes): the frame is delivered, intact, acked with
/// `rebuilt = 4`, and nothing is nacked.
#[test]
fn any_m_lost_data_chunks_are_rebuilt_without_a_nack() {
    let t0 = Instant::now();
    let f = jpeg(19_999, 6); // odd chunk size: shards are padded
    let mut rng = SplitMix(11);
    for trial in 0..40 {
        let (mut sender, out) = fec_frame(super::fec::FecMode::Percent(20), &f, t0);
        let mut lost = std::collections::BTreeSet::new();
        lost.insert(if trial % 2 == 0 { 19 } else { 0 });
        while lost.len() < 4 {
            lost.insert((rng.next() % 20) as u16);
        }
        let mut hub = FramedReceiver::new(FramedConfig::default());
        for (what, d) in &out {
            if matches!(what, Ok(i) if lost.contains(i)) {
                continue;
            }
            hub.handle_datagram(CLIENT, d, t0);
        }
        let replies: Vec<Vec<u8>> = std::iter::from_fn(|| hub.poll_transmit())
            .map(|t| t.payload.into_owned())
            .collect();
        assert_eq!(replies.len(), 1, "lost {lost:?}: one reply");
        assert!(
            matches!(
                framed::parse(&replies[0]),
                Ok(framed::Packet::Ack {
                    status: AckStatus::Delivered,
                    rebuilt: 4,
                    ..
                })
            ),
            "lost {lost:?}: an ack saying 4 chunks were rebuilt, no nack"
        );
        assert_eq!(the_frame(&mut hub).as_ref(), Some(&f), "lost {lost:?}");
        // the sender hears of the 4 lost chunks (of 20 sent)
        sender.handle_datagram(&replies[0], t0);
        assert!(matches!(
            sender.poll_event(),
            Some(SenderEvent::Acked { resent: 0, .. })
        ));
        assert!((sender.loss_estimate(t0) - 0.2).abs() < 1e-9);
        assert_eq!(hub.partial_bytes(), 0);
    }
    assert_eq!(
        FramedReceiver::new(FramedConfig::default()).rebuilt(),
        Default::default()
    );
}

/// The rebuild happens as soon as enough came: with the last shard lost too, the frame is
/// delivered at the shard before (no probe needed), and shards after a delivered frame
/// get no reply unless polled.
#[test]
fn a_frame_is_rebuilt_as_soon_as_enough_came_and_later_shards_are_not_answered() {
    let t0 = Instant::now();
    let f = jpeg(20_000, 7);
    let (_, out) = fec_frame(super::fec::FecMode::Percent(20), &f, t0);
    let mut hub = FramedReceiver::new(FramedConfig::default());
    // chunks 3 and 4 lost: the second shard completes the 20
    for (what, d) in &out {
        if matches!(what, Ok(3 | 4)) {
            continue;
        }
        hub.handle_datagram(CLIENT, d, t0);
        let replies = acks(&mut hub);
        match what {
            Err(1) => assert!(matches!(
                replies[..],
                [framed::Packet::Ack {
                    status: AckStatus::Delivered,
                    ..
                }]
            )),
            // the last shard is polled: answered with the ack again, as any chunk of a
            // delivered frame
            Err(3) => assert!(matches!(replies[..], [framed::Packet::Ack { .. }])),
            _ => assert_eq!(replies, vec![], "{what:?}"),
        }
    }
    assert_eq!(the_frame(&mut hub).as_ref(), Some(&f));
    let r = hub.rebuilt();
    assert_eq!((r.frames, r.chunks, r.failed), (1, 2, 0));
}

/// `m + 1` data chunks lost: the last shard is answered with a nack of exactly them; the
/// sender resends those (data only, the last polled) and the frame is delivered.
#[test]
fn m_plus_one_lost_chunks_are_nacked_and_resent() {
    let t0 = Instant::now();
    let f = jpeg(20_000, 8);
    let (mut sender, out) = fec_frame(super::fec::FecMode::Percent(20), &f, t0);
    let mut hub = FramedReceiver::new(FramedConfig::default());
    for (what, d) in &out {
        if matches!(what, Ok(2 | 7 | 8 | 9 | 19)) {
            continue;
        }
        hub.handle_datagram(CLIENT, d, t0);
    }
    let replies: Vec<Vec<u8>> = std::iter::from_fn(|| hub.poll_transmit())
        .map(|t| t.payload.into_owned())
        .collect();
    assert_eq!(replies.len(), 1);
    assert_eq!(
        framed::parse(&replies[0]),
        Ok(framed::Packet::Nack {
            stream: 1,
            frame: 0,
            received: 15,
            missing: vec![(2, 1), (7, 3), (19, 1)]
        })
    );
    sender.handle_datagram(&replies[0], t0);
    let resent = drain(&mut sender, t0);
    assert_eq!(
        resent.iter().map(|(w, _)| *w).collect::<Vec<_>>(),
        vec![Ok(2), Ok(7), Ok(8), Ok(9), Ok(19)],
        "data chunks only"
    );
    // the first resend makes 16 chunks, with the 4 shards enough: the other 4 are rebuilt
    hub.handle_datagram(CLIENT, &resent[0].1, t0);
    let ack = hub.poll_transmit().expect("the ack").payload.into_owned();
    assert!(matches!(
        framed::parse(&ack),
        Ok(framed::Packet::Ack { rebuilt: 4, .. })
    ));
    for (_, d) in &resent[1..] {
        hub.handle_datagram(CLIENT, d, t0);
    }
    assert_eq!(the_frame(&mut hub).as_ref(), Some(&f));
    sender.handle_datagram(&ack, t0);
    assert!(matches!(
        sender.poll_event(),
        Some(SenderEvent::Acked { resent: 5, .. })
    ));
    // the nack's 5 lost, of 25 sent (the rebuilt ones were counted in the nack)
    assert!((sender.loss_estimate(t0) - 5.0 / 25.0).abs() < 1e-9);
}

/// A parity shard with a wrong byte (its check right), or all shards with a wrong check:
/// the rebuild does not match, the frame is not delivered, the missing chunk is nacked,
/// and after its resend the right frame is delivered.
#[test]
fn a_wrong_parity_shard_never_delivers_a_wrong_frame() {
    let t0 = Instant::now();
    let f = real_jpeg(20_000, 9);
    for corrupt_check in [false, true] {
        let (mut sender, out) = fec_frame(super::fec::FecMode::Percent(10), &f, t0);
        let mut hub = FramedReceiver::new(FramedConfig::default());
        for (what, d) in &out {
            let mut d = d.clone();
            match what {
                Ok(5) => continue,
                Err(_) if corrupt_check => d[framed::DATA_HEADER_LEN] ^= 1,
                Err(0) => *d.last_mut().unwrap() ^= 0x40,
                _ => {}
            }
            hub.handle_datagram(CLIENT, &d, t0);
        }
        assert_eq!(
            the_frame(&mut hub),
            None,
            "not delivered from a wrong shard"
        );
        assert_eq!(hub.rebuilt().failed, 1);
        let replies: Vec<Vec<u8>> = std::iter::from_fn(|| hub.poll_transmit())
            .map(|t| t.payload.into_owned())
            .collect();
        assert_eq!(
            replies
                .iter()
                .map(|r| framed::parse(r).unwrap())
                .collect::<Vec<_>>(),
            vec![framed::Packet::Nack {
                stream: 1,
                frame: 0,
                received: 19,
                missing: vec![(5, 1)]
            }]
        );
        sender.handle_datagram(&replies[0], t0);
        for (_, d) in drain(&mut sender, t0) {
            hub.handle_datagram(CLIENT, &d, t0);
        }
        assert_eq!(the_frame(&mut hub).as_ref(), Some(&f));
    }
}

/// Shards whose check disagrees with an earlier shard's are refused as a mismatch.
#[test]
fn shards_with_different_checks_are_a_mismatch() {
    let t0 = Instant::now();
    let f = jpeg(20_000, 10);
    let (_, out) = fec_frame(super::fec::FecMode::Percent(10), &f, t0);
    let mut hub = FramedReceiver::new(FramedConfig::default());
    let shards: Vec<&Vec<u8>> = out
        .iter()
        .filter(|(w, _)| w.is_err())
        .map(|(_, d)| d)
        .collect();
    hub.handle_datagram(CLIENT, shards[0], t0);
    let mut other = shards[1].clone();
    other[framed::DATA_HEADER_LEN] ^= 1;
    hub.handle_datagram(CLIENT, &other, t0);
    assert!(matches!(
        hub.poll_event(),
        Some(FramedEvent::Rejected {
            reason: super::framed_receiver::FramedReject::Mismatch,
            ..
        })
    ));
    // and so is a data chunk saying another parity count than its frame's
    let mut d = out[0].1.clone();
    d[7] = 5;
    hub.handle_datagram(CLIENT, &d, t0);
    assert!(matches!(
        hub.poll_event(),
        Some(FramedEvent::Rejected {
            reason: super::framed_receiver::FramedReject::Mismatch,
            ..
        })
    ));
}

/// The budget holds with parity: 20 senders each send 25 of the 30 chunks of a 30 KB
/// frame and its 4 shards (too few to rebuild), in 100 KB: the shards are charged with the
/// chunks, the total never goes over, and every sender's frame is evicted or expires.
#[test]
fn parity_is_charged_to_the_partial_frame_budget() {
    let config = FramedConfig {
        max_partial_bytes: 100_000,
        ..FramedConfig::default()
    };
    let mut hub = FramedReceiver::new(config);
    let t0 = Instant::now();
    let f = jpeg(30_000, 1);
    let (_, out) = fec_frame(super::fec::FecMode::Percent(13), &f, t0);
    assert_eq!(out.iter().filter(|(w, _)| w.is_err()).count(), 4);
    let one = SocketAddr::from(([127, 0, 0, 1], 6000));
    let mut held_one = 0;
    for port in 0..20u16 {
        let from = SocketAddr::from(([127, 0, 0, 1], 6000 + port));
        for (what, d) in &out {
            if matches!(what, Ok(i) if *i >= 25) {
                continue;
            }
            hub.handle_datagram(from, d, t0);
            assert!(hub.partial_bytes() <= 100_000);
            if port == 0 {
                held_one = held_one.max(hub.partial_bytes_of(one));
            }
        }
    }
    // 25 chunks of 1000 and 4 shards of 1000 (plus their check) are held for one sender
    assert!(held_one >= 29_000, "parity charged: {held_one}");
    assert!(
        (1..=3).contains(&hub.partial_frames()),
        "what fits in 100 KB"
    );
    hub.handle_timeout(t0 + Duration::from_millis(1000));
    assert_eq!((hub.partial_frames(), hub.partial_bytes()), (0, 0));
    assert_eq!(hub.rebuilt().frames, 0);
}

/// The lossy simulation with 20% parity: every frame intact, and far fewer resends than
/// the same link and seed with nacks only.
#[test]
fn parity_on_a_lossy_link_delivers_every_frame_with_fewer_resends() {
    let f = frames(200, 30_000);
    let faults = Faults {
        loss: 0.05,
        dup: 0.02,
        reorder: 0.02,
    };
    let nack = simulate(&f, SenderConfig::default(), faults, 7);
    let fec = simulate(
        &f,
        SenderConfig {
            fec: super::fec::FecMode::Percent(20),
            ..SenderConfig::default()
        },
        faults,
        7,
    );
    for o in [&nack, &fec] {
        assert!(o.gave_up.is_empty(), "gave up: {:?}", o.gave_up);
        assert_eq!(o.delivered.len(), 200);
        for (id, bytes) in &o.delivered {
            assert_eq!(bytes, &f[*id as usize], "frame {id} intact");
        }
    }
    assert!(
        fec.resent * 4 < nack.resent,
        "resent {} with parity, {} without",
        fec.resent,
        nack.resent
    );
}

/// `--fec auto`: no parity until the hub reports loss, then the rule's parity.
#[test]
fn auto_parity_starts_at_zero_and_follows_the_reported_loss() {
    let t0 = Instant::now();
    let config = SenderConfig {
        chunk_size: 1000,
        fec: super::fec::FecMode::Auto,
        ..SenderConfig::default()
    };
    let mut sender = FramedSender::new(config, HUB, 1, t0);
    let f = jpeg(22_000, 3);
    sender
        .send_frame(Arc::new(f.clone()), FrameMeta::default(), t0)
        .unwrap();
    assert_eq!(sender.parity_in_use(), (0, 22));
    assert_eq!(drain(&mut sender, t0).len(), 22);
    // the hub lost one of the 22 (4.5%): nacked, resent, acked
    sender.handle_datagram(&framed::emit_nack(1, 0, 21, &[(4, 1)]), t0);
    assert_eq!(drain(&mut sender, t0).len(), 1);
    sender.handle_datagram(&framed::emit_ack(1, 0, AckStatus::Delivered, 0), t0);
    let loss = sender.loss_estimate(t0);
    assert!((loss - 1.0 / 23.0).abs() < 1e-9, "{loss}");
    sender
        .send_frame(Arc::new(f), FrameMeta::default(), t0)
        .unwrap();
    let m = super::fec::auto_parity(22, loss);
    assert_eq!(m, 4);
    assert_eq!(sender.parity_in_use(), (m, 22));
    assert_eq!(drain(&mut sender, t0).len(), 22 + m as usize);
}

/// Parity shards are charged like data chunks: a flood of made-up shards (20 sources per
/// camera chunk, each 10 shards of a claimed 256 KiB frame with 255 of them) presses the
/// budget, and only the flood is evicted; the camera's frames, with parity of their own
/// and a chunk of each lost, are all rebuilt and delivered.
#[test]
fn a_flood_of_parity_shards_evicts_only_itself() {
    let config = FramedConfig {
        max_partial_bytes: 1 << 20,
        ..FramedConfig::default()
    };
    let mut hub = FramedReceiver::new(config);
    let mut clock = Clock::new();
    let t0 = Instant::now();
    let mut n = 0;
    let mut flood_evicted = 0;
    let mut delivered = Vec::new();
    for frame in 0..10u32 {
        let f = real_jpeg(30_000, u64::from(frame));
        let (_, out) = fec_frame(super::fec::FecMode::Percent(10), &f, t0);
        for (what, d) in &out {
            let mut d = d.clone();
            d[12..16].copy_from_slice(&frame.to_le_bytes());
            if *what == Ok(7) {
                continue; // lost: parity rebuilds it
            }
            hub.handle_datagram(CLIENT, &d, clock.tick());
            for _ in 0..20 {
                for j in 0..10 {
                    let h = DataHeader {
                        flags: 255 << 8,
                        stream: n as u32,
                        frame: 0,
                        index: j,
                        count: 256,
                        length: 256 << 10,
                        ts_us: 1,
                    };
                    let mut p = Vec::new();
                    framed::emit_parity(&mut p, &h, 0, &[0x5A; 1024]);
                    hub.handle_datagram(attacker(n), &p, clock.tick());
                }
                n += 1;
            }
            assert!(hub.partial_bytes() <= 1 << 20);
        }
        while let Some(e) = hub.poll_event() {
            match e {
                FramedEvent::Frame {
                    from, frame: got, ..
                } => {
                    assert_eq!(from, CLIENT);
                    delivered.push(got);
                }
                FramedEvent::Dropped { from, .. } => {
                    assert_ne!(from, CLIENT, "the camera's frame was evicted");
                    flood_evicted += 1;
                }
                _ => {}
            }
        }
    }
    assert_eq!(delivered, (0..10).collect::<Vec<_>>());
    assert_eq!(hub.rebuilt().frames, 10);
    assert!(
        flood_evicted > 1000,
        "the flood did press the budget: {flood_evicted}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any loss, duplication and reordering of a frame's data and parity datagrams, and a
    /// byte of one shard (or its check) changed: the receiver delivers exactly the
    /// original, or nothing, never twice; and it does deliver it when every data chunk
    /// came, or (no shard changed) when data chunks and shards together are enough.
    #[test]
    fn parity_reassembly_delivers_the_original_or_nothing(
        len in 2usize..20_000,
        chunk in 200usize..3000,
        pct in 1u16..=100,
        picks in proptest::collection::vec(0usize..1000, 0..80),
        corrupt in proptest::option::of((0usize..1000, 0usize..5000, 1u8..=255)),
    ) {
        let f = jpeg(len.max(4), len as u64);
        let t0 = Instant::now();
        let config = SenderConfig {
            chunk_size: chunk,
            fec: super::fec::FecMode::Percent(pct),
            ..SenderConfig::default()
        };
        let mut sender = FramedSender::new(config, HUB, 1, t0);
        sender.send_frame(Arc::new(f.clone()), FrameMeta::default(), t0).unwrap();
        let out = drain(&mut sender, t0);
        let (m, k) = sender.parity_in_use();
        prop_assert_eq!(out.len(), k as usize + m as usize);
        let shards: Vec<usize> = (0..out.len()).filter(|&i| out[i].0.is_err()).collect();
        let corrupt = corrupt.map(|(which, at, x)| {
            let i = shards[which % shards.len()];
            let body = out[i].1.len() - framed::DATA_HEADER_LEN;
            (i, framed::DATA_HEADER_LEN + at % body, x)
        });
        let mut hub = FramedReceiver::new(FramedConfig::default());
        let (mut data, mut parity) = (std::collections::BTreeSet::new(), std::collections::BTreeSet::new());
        let mut frames = Vec::new();
        for p in &picks {
            let i = p % out.len();
            let mut d = out[i].1.clone();
            if let Some((ci, at, x)) = corrupt {
                if ci == i {
                    d[at] ^= x;
                }
            }
            match out[i].0 {
                Ok(index) => data.insert(index),
                Err(j) => parity.insert(j),
            };
            hub.handle_datagram(CLIENT, &d, t0);
            while let Some(e) = hub.poll_event() {
                if let FramedEvent::Frame { jpeg, .. } = e { frames.push(jpeg); }
            }
        }
        prop_assert!(frames.len() <= 1, "delivered twice");
        prop_assert!(frames.iter().all(|j| j == &f), "a wrong frame delivered");
        let enough = data.len() + parity.len() >= k as usize;
        if data.len() == k as usize || (corrupt.is_none() && enough) {
            prop_assert_eq!(frames.len(), 1);
        }
    }
}
