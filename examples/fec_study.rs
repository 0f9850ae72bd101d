//! `fec_study`: does a little forward error correction per frame beat nack round trips
//! (issue 13)? Run it with `cargo run --release --example fec_study` (some 10 s).
//!
//! It decided that the framed protocol should have parity chunks, and now compares the
//! real implementation ([`udphub::proto::fec`], `img-client --fec`) with the model it was
//! decided on. Every contender runs in virtual time through the same
//! simulated path, made of the relay's own socket-free models: the link
//! ([`udphub::relay::link::Link`]: rate and a 500 ms queue, toward the hub only) and the
//! fault stage ([`udphub::relay::fault::FaultInjector`]: independent loss and half the
//! round trip of delay, both ways). Frames are captured at a fixed rate, the latest frame
//! wins (a frame is sent only when fewer than `window` are in flight, else it is skipped),
//! and a frame's latency is from its capture to the moment the hub has all of it.
//!
//! - **nack**: the real [`FramedSender`] and [`FramedReceiver`] state machines, as the hub
//!   and img-client run them (the hub nacks what is missing when the last chunk or a poll
//!   arrives; the sender resends exactly that, or probes after its RTO).
//! - **real fec auto / real fec N%**: the same state machines with parity shards
//!   (`SenderConfig::fec`: `--fec auto`, and `--fec N` for each `--parity` share).
//! - **fec m**: a model of the same protocol with `m` Reed-Solomon parity chunks after each
//!   frame's `k` data chunks (any `k` of the `k + m` rebuild it), falling back to the same
//!   nack-and-resend rounds (what is still missing, the last flagged) when more than `m` are
//!   lost, with the sender's probe after 2 RTT + 10 ms of silence. The parity's cost is
//!   measured for real: `reed-solomon-simd` (a well-kept, SIMD-accelerated Leopard-RS
//!   implementation) encodes the `m` shards of a frame and rebuilds `m` lost ones, timed on
//!   this machine.
//!
//! Printed: per loss rate and contender, frames delivered per second, latency p50/p99/max,
//! frames given up, and the bytes sent per byte of frame (resends and parity included).

use clap::Parser;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use udphub::client::stats::percentile_of_sorted;
use udphub::proto::fec::FecMode;
use udphub::proto::framed_receiver::{FramedConfig, FramedEvent, FramedReceiver};
use udphub::proto::framed_sender::{FrameMeta, FramedSender, SenderConfig, SenderEvent};
use udphub::relay::fault::{Emit, FaultConfig, FaultInjector};
use udphub::relay::link::{Link, LinkConfig};
use udphub::wire::framed;

/// Forward error correction against nack rounds, in a simulated narrow lossy link.
#[derive(Parser, Debug)]
struct Args {
    /// The link's rate toward the hub, Mbit/s.
    #[arg(long, default_value_t = 8.0)]
    rate_mbit: f64,
    /// Round trip, ms (half each way).
    #[arg(long, default_value_t = 40)]
    rtt_ms: u64,
    /// Loss rates (both ways), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "0.02,0.05,0.1")]
    losses: Vec<f64>,
    /// Bytes per frame.
    #[arg(long, default_value_t = 30_000)]
    frame_bytes: usize,
    /// Frames captured per second.
    #[arg(long, default_value_t = 20.0)]
    fps: f64,
    /// Frames in flight at most.
    #[arg(long, default_value_t = 4)]
    window: usize,
    /// Parity chunks per frame to try, as a fraction of the data chunks (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "0.05,0.1,0.2")]
    parity: Vec<f64>,
    /// Simulated seconds per run.
    #[arg(long, default_value_t = 120.0)]
    seconds: f64,
}

const CLIENT: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::LOCALHOST,
    5000,
));
const HUB: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::LOCALHOST,
    9999,
));

/// One direction: (toward the hub) the link, then loss and delay.
struct Path {
    link: Option<Link<Vec<u8>>>,
    faults: FaultInjector<Vec<u8>>,
    arrivals: BTreeMap<(Instant, u64), Vec<u8>>,
    seq: u64,
    scratch: Vec<Emit<Vec<u8>>>,
    /// Payload bytes put on the path.
    bytes: u64,
}

impl Path {
    fn new(link: Option<LinkConfig>, loss: f64, delay: Duration, seed: u64) -> Path {
        Path {
            link: link.map(|c| Link::new(c).expect("a valid link")),
            faults: FaultInjector::new(FaultConfig {
                loss,
                delay,
                seed,
                ..FaultConfig::default()
            })
            .expect("valid faults"),
            arrivals: BTreeMap::new(),
            seq: 0,
            scratch: Vec::new(),
            bytes: 0,
        }
    }

    fn send(&mut self, d: Vec<u8>, now: Instant) {
        self.bytes += d.len() as u64;
        match &mut self.link {
            Some(link) => {
                let len = d.len();
                let _ = link.push(d, len, now); // a full queue drops it at the tail
            }
            None => self.after_link(d, now),
        }
    }

    fn after_link(&mut self, d: Vec<u8>, now: Instant) {
        self.faults.feed(d, now, &mut self.scratch);
        for e in self.scratch.drain(..) {
            self.seq += 1;
            self.arrivals
                .insert((e.at.unwrap_or(now), self.seq), e.datagram);
        }
    }

    /// Move what left the link by `now` on to the fault stage.
    fn advance(&mut self, now: Instant) {
        while let Some(d) = self.link.as_mut().and_then(|l| l.poll_departure(now)) {
            self.after_link(d, now);
        }
    }

    fn next_time(&self) -> Option<Instant> {
        let link = self.link.as_ref().and_then(Link::poll_timeout);
        let arrival = self.arrivals.keys().next().map(|k| k.0);
        link.into_iter().chain(arrival).min()
    }

    fn pop_due(&mut self, now: Instant) -> Option<Vec<u8>> {
        self.advance(now);
        let key = *self.arrivals.keys().next()?;
        (key.0 <= now).then(|| self.arrivals.remove(&key).expect("present"))
    }
}

#[derive(Default)]
struct RunFigures {
    latencies_ms: Vec<f64>,
    given_up: u64,
    skipped: u64,
    captured: u64,
    bytes_sent: u64,
    frame_bytes_sent: u64,
    /// Real FEC: frames the hub rebuilt from parity, and the parity of the last frame.
    rebuilt: u64,
    parity: u8,
}

struct Scenario<'a> {
    args: &'a Args,
    loss: f64,
}

impl Scenario<'_> {
    fn paths(&self, seed: u64) -> (Path, Path) {
        let half = Duration::from_micros(self.args.rtt_ms * 500);
        let mut link = LinkConfig::new(self.args.rate_mbit);
        link.queue_bytes = ((self.args.rate_mbit * 1e6 / 8.0 * 0.5) as usize).max(1500);
        (
            Path::new(Some(link), self.loss, half, seed),
            Path::new(None, self.loss, half, seed ^ 0x5EED),
        )
    }

    fn period(&self) -> Duration {
        Duration::from_secs_f64(1.0 / self.args.fps)
    }

    fn end(&self, t0: Instant) -> Instant {
        t0 + Duration::from_secs_f64(self.args.seconds)
    }
}

/// The real state machines, with `fec`.
fn run_real(s: &Scenario, fec: FecMode) -> RunFigures {
    let t0 = Instant::now();
    let (mut up, mut down) = s.paths(1);
    let config = SenderConfig {
        window: s.args.window,
        fec,
        ..SenderConfig::default()
    };
    let mut sender = FramedSender::new(config, HUB, 0xC0FFEE, t0);
    let mut hub = FramedReceiver::new(FramedConfig::default());
    let mut r = RunFigures::default();
    let mut captured_at: HashMap<u32, Instant> = HashMap::new();
    let (mut now, mut next_capture, end) = (t0, t0, s.end(t0));
    let mut i = 0u64;
    while now < end + Duration::from_secs(2) {
        if now >= next_capture && now < end {
            next_capture += s.period();
            r.captured += 1;
            if sender.can_send() {
                i += 1;
                let frame = Arc::new(udphub::jpegcheck::filler_jpeg(s.args.frame_bytes, i));
                let id = sender
                    .send_frame(frame, FrameMeta::default(), now)
                    .expect("the window has room");
                captured_at.insert(id, now);
                r.frame_bytes_sent += s.args.frame_bytes as u64;
            } else {
                r.skipped += 1;
            }
        }
        while let Some(t) = sender.poll_transmit(now) {
            up.send(t.payload.into_owned(), now);
        }
        while let Some(d) = up.pop_due(now) {
            hub.handle_datagram(CLIENT, &d, now);
        }
        if hub.poll_timeout().is_some_and(|t| t <= now) {
            hub.handle_timeout(now);
        }
        while let Some(t) = hub.poll_transmit() {
            down.send(t.payload.into_owned(), now);
        }
        while let Some(e) = hub.poll_event() {
            if let FramedEvent::Frame { frame, .. } = e {
                if let Some(at) = captured_at.remove(&frame) {
                    r.latencies_ms.push((now - at).as_secs_f64() * 1e3);
                }
            }
        }
        while let Some(d) = down.pop_due(now) {
            sender.handle_datagram(&d, now);
        }
        if sender.poll_timeout().is_some_and(|t| t <= now) {
            sender.handle_timeout(now);
        }
        while let Some(e) = sender.poll_event() {
            if let SenderEvent::GaveUp { .. } = e {
                r.given_up += 1;
            }
        }
        let wake = [
            up.next_time(),
            down.next_time(),
            sender.poll_timeout(),
            hub.poll_timeout(),
            (next_capture < end).then_some(next_capture),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(now + Duration::from_millis(1));
        now = wake.max(now + Duration::from_micros(1));
    }
    r.bytes_sent = up.bytes;
    r.rebuilt = hub.rebuilt().frames;
    r.parity = sender.parity_in_use().0;
    r
}

/// A datagram of the FEC model: kind (0 data/parity, 1 nack, 2 ack), frame, index, flags,
/// need; padded to the chunk's size on the wire.
fn model_datagram(kind: u8, frame: u32, last: bool, need: u16, len: usize) -> Vec<u8> {
    let mut d = vec![0u8; len.max(12)];
    d[0] = kind;
    d[1..5].copy_from_slice(&frame.to_le_bytes());
    d[5] = u8::from(last);
    d[6..8].copy_from_slice(&need.to_le_bytes());
    d
}

struct ModelFrame {
    captured: Instant,
    last_heard: Instant,
    probes: u32,
}

/// The FEC model: `m` parity chunks after the `k` data chunks, nack rounds past that.
fn run_fec(s: &Scenario, m: usize) -> RunFigures {
    let t0 = Instant::now();
    let (mut up, mut down) = s.paths(1);
    let chunk = framed::DEFAULT_CHUNK_SIZE;
    let k = framed::chunk_count(s.args.frame_bytes, chunk);
    let wire_len = chunk + framed::DATA_HEADER_LEN;
    let rtt = Duration::from_millis(s.args.rtt_ms);
    let rto = 2 * rtt + Duration::from_millis(10);
    let deadline = Duration::from_millis(1000);
    let mut r = RunFigures::default();
    let mut in_flight: BTreeMap<u32, ModelFrame> = BTreeMap::new();
    // the hub: chunks received per frame, and the frames it has whole
    let mut received: HashMap<u32, usize> = HashMap::new();
    let mut complete: HashMap<u32, ()> = HashMap::new();
    let mut newest_complete: Option<u32> = None;
    let (mut now, mut next_capture, end) = (t0, t0, s.end(t0));
    let mut next_id = 0u32;
    while now < end + Duration::from_secs(2) {
        if now >= next_capture && now < end {
            next_capture += s.period();
            r.captured += 1;
            if in_flight.len() < s.args.window {
                let id = next_id;
                next_id += 1;
                for i in 0..k + m {
                    up.send(model_datagram(0, id, i == k + m - 1, 0, wire_len), now);
                }
                in_flight.insert(
                    id,
                    ModelFrame {
                        captured: now,
                        last_heard: now,
                        probes: 0,
                    },
                );
                r.frame_bytes_sent += s.args.frame_bytes as u64;
            } else {
                r.skipped += 1;
            }
        }
        // the hub
        while let Some(d) = up.pop_due(now) {
            let frame = u32::from_le_bytes(d[1..5].try_into().expect("4 bytes"));
            let last = d[5] == 1;
            if complete.contains_key(&frame) {
                if last {
                    down.send(model_datagram(2, frame, false, 0, 28), now);
                }
                continue;
            }
            if newest_complete.is_some_and(|n| frame < n) {
                // the hub delivered a newer frame: this one is stale, as in FramedReceiver
                if last {
                    down.send(model_datagram(2, frame, false, 0, 28), now);
                }
                continue;
            }
            let got = received.entry(frame).or_default();
            *got += 1;
            if *got >= k {
                received.retain(|&f, _| f > frame);
                complete.insert(frame, ());
                newest_complete = Some(frame);
                if let Some(f) = in_flight.get(&frame) {
                    r.latencies_ms.push((now - f.captured).as_secs_f64() * 1e3);
                }
                down.send(model_datagram(2, frame, false, 0, 28), now);
            } else if last {
                let need = (k - *got) as u16;
                down.send(model_datagram(1, frame, false, need, 24), now);
            }
        }
        // the sender
        while let Some(d) = down.pop_due(now) {
            let frame = u32::from_le_bytes(d[1..5].try_into().expect("4 bytes"));
            let need = u16::from_le_bytes([d[6], d[7]]) as usize;
            match d[0] {
                2 => {
                    // an ack, or the answer to a stale frame: either way it is over
                    if in_flight.remove(&frame).is_some() && !complete.contains_key(&frame) {
                        r.given_up += 1;
                    }
                }
                _ => {
                    if let Some(f) = in_flight.get_mut(&frame) {
                        f.last_heard = now;
                        f.probes = 0;
                        for i in 0..need {
                            up.send(model_datagram(0, frame, i == need - 1, 0, wire_len), now);
                        }
                    }
                }
            }
        }
        // probes and deadlines
        let mut gave_up = Vec::new();
        for (&id, f) in in_flight.iter_mut() {
            if now - f.captured >= deadline {
                gave_up.push(id);
            } else if now >= f.last_heard + rto * (1 << f.probes.min(4)) {
                f.probes += 1;
                f.last_heard = now;
                up.send(model_datagram(0, id, true, 0, wire_len), now);
            }
        }
        for id in gave_up {
            in_flight.remove(&id);
            if !complete.contains_key(&id) {
                r.given_up += 1;
            }
        }
        let timers = in_flight
            .values()
            .map(|f| (f.last_heard + rto * (1 << f.probes.min(4))).min(f.captured + deadline))
            .min();
        let wake = [
            up.next_time(),
            down.next_time(),
            timers,
            (next_capture < end).then_some(next_capture),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(now + Duration::from_millis(1));
        now = wake.max(now + Duration::from_micros(1));
    }
    r.bytes_sent = up.bytes;
    r
}

/// Time reed-solomon-simd on a frame's shards with an encoder and a decoder made once (as a
/// sender and a hub would keep them): (encode µs, rebuild `m` lost µs), best of 200.
fn time_parity(k: usize, m: usize, shard: usize) -> (f64, f64) {
    use reed_solomon_simd::{ReedSolomonDecoder, ReedSolomonEncoder};
    let originals: Vec<Vec<u8>> = (0..k)
        .map(|i| (0..shard).map(|j| (i * 31 + j * 7) as u8).collect())
        .collect();
    let mut encoder = ReedSolomonEncoder::new(k, m, shard).expect("encoder");
    let mut decoder = ReedSolomonDecoder::new(k, m, shard).expect("decoder");
    let (mut enc, mut dec) = (f64::MAX, f64::MAX);
    for _ in 0..200 {
        let t = Instant::now();
        encoder.reset(k, m, shard).expect("reset");
        for o in &originals {
            encoder.add_original_shard(o).expect("add");
        }
        let recovery: Vec<Vec<u8>> = encoder
            .encode()
            .expect("encode")
            .recovery_iter()
            .map(<[u8]>::to_vec)
            .collect();
        enc = enc.min(t.elapsed().as_secs_f64() * 1e6);
        let t = Instant::now();
        decoder.reset(k, m, shard).expect("reset");
        for (i, o) in originals.iter().enumerate().skip(m) {
            decoder.add_original_shard(i, o).expect("add");
        }
        for (i, r) in recovery.iter().enumerate() {
            decoder.add_recovery_shard(i, r).expect("add");
        }
        let result = decoder.decode().expect("decode");
        let restored: Vec<(usize, Vec<u8>)> = result
            .restored_original_iter()
            .map(|(i, s)| (i, s.to_vec()))
            .collect();
        dec = dec.min(t.elapsed().as_secs_f64() * 1e6);
        assert_eq!(restored.len(), m);
        assert!(restored.iter().all(|(i, s)| s == &originals[*i]));
    }
    (enc, dec)
}

/// The real hub's cost of a rebuild: the datagram that lets [`FramedReceiver`] rebuild a
/// frame of `bytes` with `m` of its data chunks lost (decode, check, JPEG check, ack), and
/// for comparison the last datagram of the same frame with nothing lost; µs, best of 200.
fn time_real_rebuild(bytes: usize, m: u8) -> (f64, f64) {
    let t0 = Instant::now();
    let frame = Arc::new(udphub::jpegcheck::filler_jpeg(bytes, 7));
    let k = framed::chunk_count(bytes, framed::DEFAULT_CHUNK_SIZE);
    let pct = (1..=100u16)
        .find(|&p| FecMode::Percent(p).parity(k, 0.0) == m)
        .expect("a share that gives m");
    let mut sender = FramedSender::new(
        SenderConfig {
            fec: FecMode::Percent(pct),
            ..SenderConfig::default()
        },
        HUB,
        1,
        t0,
    );
    sender
        .send_frame(Arc::clone(&frame), FrameMeta::default(), t0)
        .expect("room");
    assert_eq!(sender.parity_in_use().0, m);
    let all: Vec<Vec<u8>> = std::iter::from_fn(|| sender.poll_transmit(t0))
        .map(|t| t.payload.into_owned())
        .collect();
    let time = |datagrams: &[&Vec<u8>]| {
        let mut best = f64::MAX;
        for _ in 0..200 {
            let mut hub = FramedReceiver::new(FramedConfig::default());
            let (last, rest) = datagrams.split_last().expect("datagrams");
            for d in rest {
                hub.handle_datagram(CLIENT, d, t0);
            }
            let t = Instant::now();
            hub.handle_datagram(CLIENT, last, t0);
            best = f64::min(best, t.elapsed().as_secs_f64() * 1e6);
            assert!(matches!(hub.poll_event(), Some(FramedEvent::Frame { .. })));
        }
        best
    };
    // m data chunks lost: the m-th shard completes it
    let lossy: Vec<&Vec<u8>> = all[m as usize..k + m as usize].iter().collect();
    let clean: Vec<&Vec<u8>> = all[..k].iter().collect();
    (time(&lossy), time(&clean))
}

fn row(name: &str, loss: f64, r: &RunFigures, seconds: f64) -> String {
    let mut lat = r.latencies_ms.clone();
    lat.sort_by(f64::total_cmp);
    let p = |q| percentile_of_sorted(&lat, q).map_or("-".into(), |v: f64| format!("{v:.0}"));
    format!(
        "| {:.0}% | {name} | {:.1} | {} | {} | {} | {} | {} | {:.3} | {} |",
        loss * 100.0,
        lat.len() as f64 / seconds,
        p(50.0),
        p(99.0),
        lat.last().map_or("-".into(), |v| format!("{v:.0}")),
        r.given_up,
        r.skipped,
        r.bytes_sent as f64 / r.frame_bytes_sent.max(1) as f64,
        if r.rebuilt > 0 || r.parity > 0 {
            format!("{} (m = {} at the end)", r.rebuilt, r.parity)
        } else {
            "-".into()
        }
    )
}

fn main() {
    let args = Args::parse();
    let k = framed::chunk_count(args.frame_bytes, framed::DEFAULT_CHUNK_SIZE);
    println!(
        "{:.0} kB frames at {} fps ({} data chunks of {} bytes), window {}, link {} Mbit/s, \
         RTT {} ms, {} s simulated per run\n",
        args.frame_bytes as f64 / 1e3,
        args.fps,
        k,
        framed::DEFAULT_CHUNK_SIZE,
        args.window,
        args.rate_mbit,
        args.rtt_ms,
        args.seconds
    );
    println!("| loss | contender | fps delivered | latency p50 ms | p99 ms | max ms | given up | skipped | bytes sent / frame bytes | rebuilt (real) |");
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let ms: Vec<usize> = args
        .parity
        .iter()
        .map(|f| ((k as f64 * f).ceil() as usize).max(1))
        .collect();
    for &loss in &args.losses {
        let s = Scenario { args: &args, loss };
        println!(
            "{}",
            row(
                "nack (real)",
                loss,
                &run_real(&s, FecMode::Off),
                args.seconds
            )
        );
        println!(
            "{}",
            row(
                "fec auto (real)",
                loss,
                &run_real(&s, FecMode::Auto),
                args.seconds
            )
        );
        for &f in &args.parity {
            let pct = (f * 100.0).round() as u16;
            let name = format!("fec {pct}% (real)");
            let r = run_real(&s, FecMode::Percent(pct));
            println!("{}", row(&name, loss, &r, args.seconds));
        }
        println!(
            "{}",
            row("fec 0 (model)", loss, &run_fec(&s, 0), args.seconds)
        );
        for &m in &ms {
            let name = format!("fec {m} (model)");
            println!("{}", row(&name, loss, &run_fec(&s, m), args.seconds));
        }
    }
    println!("\nParity cost on this machine (reed-solomon-simd, {k} shards of {} bytes, best of 200, encoder and decoder kept):", framed::DEFAULT_CHUNK_SIZE);
    for &m in &ms {
        let (enc, dec) = time_parity(k, m, framed::DEFAULT_CHUNK_SIZE);
        println!("  m = {m}: encode {enc:.1} µs per frame, rebuild {m} lost chunks {dec:.1} µs");
    }
    println!("\nThe real hub (FramedReceiver), the datagram that completes a frame, best of 200:");
    for (bytes, m) in [
        (args.frame_bytes, 3u8),
        (args.frame_bytes, 5),
        (67_000, 5),
        (67_000, 10),
    ] {
        let (rebuild, clean) = time_real_rebuild(bytes, m);
        println!(
            "  {:.0} kB, {m} chunks lost: rebuilt, checked and acked in {rebuild:.1} µs \
             (nothing lost: {clean:.1} µs)",
            bytes as f64 / 1e3
        );
    }
}
