//! Client statistics: counters, duration samples (RTT, encode time) with percentiles, and
//! the text of the status lines and final summaries both clients print.
//!
//! Samples are kept, not summarised on the fly, because percentiles cannot be merged: every
//! sample is stored up to [`RESERVOIR`] of them, after which reservoir sampling (Vitter's
//! algorithm R) keeps a uniform random subset of that size, so memory stays bounded on a run
//! of any length. Percentiles are computed by sorting a copy at report time (nearest-rank
//! method). Count, mean and max are exact whatever the reservoir keeps.
//!
//! The summaries are meant for people and for the integration tests, which read the
//! `frames:`/`messages:` lines: keep their `word number` pairs stable. For scripts (the
//! benchmark, the loss sweep) the same figures are [`ImgSummary`] and [`MsgSummary`], which
//! `--json-summary` prints as one JSON object and the scripts read back with serde.

use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::hub::stats::human_bytes;
use crate::shutdown::Shutdown;

/// Samples kept at most (per [`Samples`]); beyond that a uniform random subset is kept.
pub const RESERVOIR: usize = 100_000;

/// Duration samples with exact count/mean/max and percentiles over a bounded reservoir.
#[derive(Clone, Debug)]
pub struct Samples {
    /// Nanoseconds, in arrival order (not sorted).
    kept: Vec<u64>,
    capacity: usize,
    seen: u64,
    sum_nanos: u128,
    max_nanos: u64,
    /// xorshift64 state for the reservoir's random choices.
    rng: u64,
}

impl Default for Samples {
    fn default() -> Self {
        Samples::with_capacity(RESERVOIR)
    }
}

impl Samples {
    pub fn new() -> Self {
        Self::default()
    }

    /// A reservoir of at most `capacity` (>= 1) samples.
    pub fn with_capacity(capacity: usize) -> Self {
        Samples {
            kept: Vec::new(),
            capacity: capacity.max(1),
            seen: 0,
            sum_nanos: 0,
            max_nanos: 0,
            rng: 0x9E37_79B9_7F4A_7C15,
        }
    }

    pub fn record(&mut self, d: Duration) {
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.seen += 1;
        self.sum_nanos += u128::from(nanos);
        self.max_nanos = self.max_nanos.max(nanos);
        if self.kept.len() < self.capacity {
            self.kept.push(nanos);
        } else {
            // Algorithm R: the n-th sample replaces a random kept one with probability k/n.
            let j = self.next_random() % self.seen;
            if let Ok(j) = usize::try_from(j) {
                if j < self.capacity {
                    self.kept[j] = nanos;
                }
            }
        }
    }

    fn next_random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }

    /// Samples recorded (all of them, not only those kept).
    pub fn count(&self) -> u64 {
        self.seen
    }

    /// Samples currently kept (at most the capacity).
    pub fn kept(&self) -> usize {
        self.kept.len()
    }

    pub fn mean(&self) -> Option<Duration> {
        let n = u128::from(self.seen);
        (n > 0).then(|| nanos(u64::try_from(self.sum_nanos / n).unwrap_or(u64::MAX)))
    }

    pub fn max(&self) -> Option<Duration> {
        (self.seen > 0).then(|| nanos(self.max_nanos))
    }

    /// The `p`-th percentile (0..=100, nearest rank) of the kept samples.
    pub fn percentile(&self, p: f64) -> Option<Duration> {
        self.percentiles(&[p])[0]
    }

    /// Several percentiles with one sort.
    pub fn percentiles(&self, ps: &[f64]) -> Vec<Option<Duration>> {
        if self.kept.is_empty() {
            return vec![None; ps.len()];
        }
        let mut sorted = self.kept.clone();
        sorted.sort_unstable();
        ps.iter()
            .map(|&p| percentile_of_sorted(&sorted, p).map(nanos))
            .collect()
    }
}

/// The `p`-th percentile (0..=100, nearest rank) of values sorted in ascending order;
/// `None` when there are none. The one percentile of the crate: [`Samples`] and the
/// benchmark's raw-limit program use it.
pub fn percentile_of_sorted<T: Copy>(sorted: &[T], p: f64) -> Option<T> {
    (!sorted.is_empty()).then(|| sorted[nearest_rank(p, sorted.len()) - 1])
}

fn nanos(n: u64) -> Duration {
    Duration::from_nanos(n)
}

/// Nearest-rank index (1-based) of the `p`-th percentile among `n` sorted values.
fn nearest_rank(p: f64, n: usize) -> usize {
    let p = if p.is_nan() {
        50.0
    } else {
        p.clamp(0.0, 100.0)
    };
    let rank = (p / 100.0 * n as f64).ceil() as usize;
    rank.clamp(1, n)
}

/// `1.23 ms`, or `-` when there is no value.
pub fn fmt_ms(d: Option<Duration>) -> String {
    match d {
        Some(d) => format!("{:.2} ms", d.as_secs_f64() * 1e3),
        None => "-".into(),
    }
}

/// Events per second between successive calls (for the status lines).
#[derive(Debug)]
pub struct RateMeter {
    last_at: Instant,
    last_count: u64,
}

impl RateMeter {
    pub fn new(now: Instant) -> Self {
        RateMeter {
            last_at: now,
            last_count: 0,
        }
    }

    /// The rate of `count` (a running total) since the previous call.
    pub fn rate(&mut self, now: Instant, count: u64) -> f64 {
        let secs = now.saturating_duration_since(self.last_at).as_secs_f64();
        let delta = count.saturating_sub(self.last_count);
        self.last_at = now;
        self.last_count = count;
        if secs > 0.0 {
            delta as f64 / secs
        } else {
            0.0
        }
    }
}

/// `count` per second over `elapsed` (0 for an empty interval).
pub fn per_second(count: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 {
        count as f64 / secs
    } else {
        0.0
    }
}

/// Print `line()` on stderr every `interval` until `stop` is triggered.
pub fn spawn_status_printer(
    interval: Duration,
    stop: Shutdown,
    mut line: impl FnMut() -> String + Send + 'static,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("status".into())
        .spawn(move || {
            while !stop.wait_timeout(interval) {
                eprintln!("{}", line());
            }
        })
}

/// Microseconds of a duration, for the JSON summaries.
fn micros(d: Option<Duration>) -> Option<f64> {
    d.map(|d| d.as_secs_f64() * 1e6)
}

/// A summary ([`ImgSummary`], [`MsgSummary`]) as the one JSON line `--json-summary` prints.
pub fn json_line(summary: &impl Serialize) -> String {
    serde_json::to_string(summary).expect("a summary of numbers and strings serializes")
}

/// [`Samples`] in a JSON summary: times in microseconds, `null` where there is no value.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SamplesSummary {
    pub count: u64,
    pub p50_us: Option<f64>,
    pub p99_us: Option<f64>,
    pub max_us: Option<f64>,
    pub mean_us: Option<f64>,
}

impl SamplesSummary {
    pub fn of(samples: &Samples) -> SamplesSummary {
        let p = samples.percentiles(&[50.0, 99.0]);
        SamplesSummary {
            count: samples.count(),
            p50_us: micros(p[0]),
            p99_us: micros(p[1]),
            max_us: micros(samples.max()),
            mean_us: micros(samples.mean()),
        }
    }
}

// ---------------------------------------------------------------------------------------
// img-client
// ---------------------------------------------------------------------------------------

/// The camera client's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ImgCounts {
    /// Frames handed to the network (acked + written + lost).
    pub sent: u64,
    /// Frames the hub acked (UDP formats; the seed TCP stream has no ack).
    pub acked: u64,
    /// TCP: frames the kernel took completely. Not a delivery: the stream has no ack.
    pub written: u64,
    /// Frames without an ack within the ack timeout, or whose sending failed.
    pub lost: u64,
    /// JPEG bytes of the frames sent (headers not included).
    pub bytes: u64,
    /// Live-source frames replaced by a newer one before the sender was free.
    pub skipped: u64,
    /// Acks that came after their frame's timeout (drained before the next frame).
    pub late_acks: u64,
    /// Datagrams that were not an ack from the hub (other sender, other payload).
    pub ignored: u64,
}

/// Everything the camera client measures; shared between its threads behind a mutex.
#[derive(Clone, Debug, Default)]
pub struct ImgStats {
    pub counts: ImgCounts,
    pub rtt: Samples,
    pub encode: Samples,
    /// From each acked frame's capture to its ack's arrival, on this client's wall clock:
    /// an upper bound on the one-way latency capture -> hub (the ack's trip back included).
    pub capture_to_ack: Samples,
    /// The sender's estimate of `hub clock - this client's clock` (framed), the newest.
    pub clock: Option<crate::proto::framed_sender::ClockEstimate>,
    /// What the frames were encoded with (frames encoded here only, not `--jpeg`/`--mjpeg`).
    pub encoding: EncodingStats,
}

/// What the capture thread encoded with: the current choice and its min/mean over the run
/// (with `--adapt on` the controller's, [`crate::proto::adapt`]).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct EncodingStats {
    /// The controller chose the encoding (`--adapt on` with a source that is re-encoded).
    pub adapt: bool,
    /// Frames encoded.
    pub frames: u64,
    pub quality: i32,
    pub width: i32,
    pub height: i32,
    /// The frame rate chosen (`None`: as configured, not chosen).
    pub fps: Option<f64>,
    /// `--window auto`: the frames in flight chosen now.
    pub window: Option<usize>,
    /// Framed with `--fec` on: the parity in use now and what it did.
    pub fec: Option<crate::client::img_sender::FecState>,
    pub quality_min: i32,
    quality_sum: f64,
    pub width_min: i32,
    pub height_min: i32,
    pub fps_min: Option<f64>,
    fps_sum: f64,
    fps_count: u64,
}

impl EncodingStats {
    /// A frame encoded at `quality`, `width` x `height`, with the chosen frame rate `fps`.
    pub fn record(&mut self, quality: i32, width: i32, height: i32, fps: Option<f64>) {
        let first = self.frames == 0;
        self.frames += 1;
        self.quality = quality;
        self.width = width;
        self.height = height;
        self.fps = fps;
        self.quality_sum += f64::from(quality);
        if first || quality < self.quality_min {
            self.quality_min = quality;
        }
        if first
            || i64::from(width) * i64::from(height)
                < i64::from(self.width_min) * i64::from(self.height_min)
        {
            (self.width_min, self.height_min) = (width, height);
        }
        if let Some(f) = fps {
            self.fps_min = Some(self.fps_min.map_or(f, |m| m.min(f)));
            self.fps_sum += f;
            self.fps_count += 1;
        }
    }

    pub fn quality_mean(&self) -> Option<f64> {
        (self.frames > 0).then(|| self.quality_sum / self.frames as f64)
    }

    pub fn fps_mean(&self) -> Option<f64> {
        (self.fps_count > 0).then(|| self.fps_sum / self.fps_count as f64)
    }

    /// The status line's part: ` | q60 640x480 30.0 fps window 2 fec 3/22`.
    pub fn status(&self) -> String {
        if self.frames == 0 && self.window.is_none() && self.fec.is_none() {
            return String::new();
        }
        let mut s = String::from(" |");
        if self.frames > 0 {
            let _ = write!(s, " q{} {}x{}", self.quality, self.width, self.height);
        }
        if let Some(fps) = self.fps {
            let _ = write!(s, " {fps:.1} fps");
        }
        if let Some(w) = self.window {
            let _ = write!(s, " window {w}");
        }
        if let Some(f) = self.fec {
            let _ = write!(s, " fec {}/{}", f.parity, f.data);
        }
        s
    }

    /// The summary's line, or nothing when no frame was encoded and no window chosen.
    fn summary_line(&self, out: &mut String) {
        if self.frames > 0 {
            let _ = write!(
                out,
                "  encoding ({}): quality now {} (min {}, mean {:.1}), size now {}x{} (min {}x{})",
                if self.adapt { "adapted" } else { "fixed" },
                self.quality,
                self.quality_min,
                self.quality_mean().unwrap_or(0.0),
                self.width,
                self.height,
                self.width_min,
                self.height_min
            );
            if let (Some(fps), Some(min), Some(mean)) = (self.fps, self.fps_min, self.fps_mean()) {
                let _ = write!(out, ", fps now {fps:.1} (min {min:.1}, mean {mean:.1})");
            }
        } else if self.window.is_some() {
            out.push_str("  encoding: sent as they are");
        }
        if let Some(w) = self.window {
            let _ = write!(out, ", window now {w}");
        }
        if self.frames > 0 || self.window.is_some() {
            out.push('\n');
        }
        if let Some(f) = self.fec {
            let _ = writeln!(
                out,
                "  fec: now {}/{} (parity/data chunks), {} parity chunks sent, {} data chunks \
                 rebuilt by the hub",
                f.parity, f.data, f.parity_sent, f.rebuilt
            );
        }
    }
}

/// Shared handle to [`ImgStats`].
pub type SharedImgStats = Arc<Mutex<ImgStats>>;

impl ImgCounts {
    /// What the summary calls a frame that went through: acked, or (`has_ack` false, the
    /// seed TCP stream) written; and how many there were.
    fn through(&self, has_ack: bool) -> (&'static str, u64) {
        if has_ack {
            ("acked", self.acked)
        } else {
            ("written", self.written)
        }
    }
}

/// One status line: `img-client: sent 120, acked 119, lost 1 | 29.8 fps | rtt p50 3.20 ms`
/// (`has_ack` false, the seed TCP stream: `written` for `acked`, `write` for `rtt`).
pub fn img_status_line(
    c: &ImgCounts,
    has_ack: bool,
    fps: f64,
    rtt_p50: Option<Duration>,
) -> String {
    let (word, through) = c.through(has_ack);
    let mut line = format!(
        "img-client: sent {}, {word} {through}, lost {}",
        c.sent, c.lost
    );
    if c.skipped > 0 {
        let _ = write!(line, ", skipped {}", c.skipped);
    }
    let timed = if has_ack { "rtt" } else { "write" };
    let _ = write!(line, " | {fps:.1} fps | {timed} p50 {}", fmt_ms(rtt_p50));
    line
}

/// The camera client's final summary (stdout). `has_ack` false (the seed TCP stream, which
/// has no ack): frames are counted as written, never as acked, and the summary says why.
pub fn img_summary(what: &str, stats: &ImgStats, elapsed: Duration, has_ack: bool) -> String {
    let c = &stats.counts;
    let (word, through) = c.through(has_ack);
    let mut out = format!("img-client: summary: {what}\n");
    let _ = writeln!(
        out,
        "  frames: sent {}, {word} {through}, lost {}, skipped {}",
        c.sent, c.lost, c.skipped
    );
    if has_ack {
        let _ = writeln!(
            out,
            "  acks: late {} (drained), ignored datagrams {}",
            c.late_acks, c.ignored
        );
    } else {
        let _ = writeln!(
            out,
            "  (the seed TCP stream has no ack: written means the kernel took the whole \
             frame, not that the hub received it)"
        );
    }
    let per_frame = c.bytes.checked_div(c.sent).unwrap_or(0);
    let _ = writeln!(
        out,
        "  bytes: {} sent ({}, {} per frame)",
        c.bytes,
        human_bytes(c.bytes),
        human_bytes(per_frame)
    );
    let _ = writeln!(
        out,
        "  rate: {:.1} fps {word}, {:.1} fps sent, over {:.2} s",
        per_second(through, elapsed),
        per_second(c.sent, elapsed),
        elapsed.as_secs_f64()
    );
    let p = stats.rtt.percentiles(&[50.0, 99.0]);
    let (timed, meaning) = if has_ack {
        ("rtt", "first datagram sent to ack received")
    } else {
        ("write", "time the kernel took to accept each frame")
    };
    let _ = writeln!(
        out,
        "  {timed}: p50 {}, p99 {}, max {} ({meaning})",
        fmt_ms(p[0]),
        fmt_ms(p[1]),
        fmt_ms(stats.rtt.max())
    );
    if stats.capture_to_ack.count() > 0 {
        let p = stats.capture_to_ack.percentiles(&[50.0, 99.0]);
        let _ = writeln!(
            out,
            "  capture to ack: p50 {}, p99 {}, max {} (capture to its ack's arrival on this \
             client's clock: an upper bound on the one-way latency to the hub)",
            fmt_ms(p[0]),
            fmt_ms(p[1]),
            fmt_ms(stats.capture_to_ack.max())
        );
    }
    if let Some(c) = &stats.clock {
        let _ = writeln!(
            out,
            "  clock: hub - client {:+.3} ms, within {:.3} ms (from the hub's time in its \
             acks, the fastest round trip of the last minute)",
            c.offset_us as f64 / 1e3,
            c.err_us as f64 / 1e3
        );
    }
    let _ = writeln!(
        out,
        "  encode: mean {}, p50 {} per frame ({} frames encoded)",
        fmt_ms(stats.encode.mean()),
        fmt_ms(stats.encode.percentile(50.0)),
        stats.encode.count()
    );
    if stats.capture_to_ack.count() > 0 {
        let p = stats.capture_to_ack.percentiles(&[50.0, 99.0]);
        let _ = writeln!(
            out,
            "  capture to ack: p50 {}, p99 {}, max {}",
            fmt_ms(p[0]),
            fmt_ms(p[1]),
            fmt_ms(stats.capture_to_ack.max())
        );
    }
    stats.encoding.summary_line(&mut out);
    out
}

/// [`EncodingStats`] in a JSON summary.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EncodingSummary {
    pub adapt: bool,
    pub frames: u64,
    pub quality: i32,
    pub quality_min: i32,
    pub quality_mean: Option<f64>,
    pub width: i32,
    pub height: i32,
    pub width_min: i32,
    pub height_min: i32,
    pub fps: Option<f64>,
    pub fps_min: Option<f64>,
    pub fps_mean: Option<f64>,
    pub window: Option<usize>,
    /// Framed with `--fec` on: the newest frame's parity chunks and data chunks, parity
    /// chunks sent, data chunks the hub rebuilt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fec: Option<crate::client::img_sender::FecState>,
}

impl EncodingSummary {
    pub fn of(e: &EncodingStats) -> EncodingSummary {
        EncodingSummary {
            adapt: e.adapt,
            frames: e.frames,
            quality: e.quality,
            quality_min: e.quality_min,
            quality_mean: e.quality_mean(),
            width: e.width,
            height: e.height,
            width_min: e.width_min,
            height_min: e.height_min,
            fps: e.fps,
            fps_min: e.fps_min,
            fps_mean: e.fps_mean(),
            window: e.window,
            fec: e.fec,
        }
    }
}

/// The camera client's summary as `img-client --json-summary` prints it: the text
/// summary's figures, machine-readable.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ImgSummary {
    pub sent: u64,
    /// Frames the hub acked (0 over the seed TCP stream, which has no ack).
    pub acked: u64,
    /// Seed TCP stream: frames the kernel took whole (not a delivery).
    pub written: u64,
    pub lost: u64,
    pub skipped: u64,
    pub bytes: u64,
    pub late_acks: u64,
    pub ignored: u64,
    pub elapsed_s: f64,
    pub fps_acked: f64,
    pub fps_written: f64,
    pub fps_sent: f64,
    /// The `rtt` samples' meaning: the ack round trip, or (seed TCP stream) the write time.
    pub rtt_is_write_time: bool,
    pub rtt: SamplesSummary,
    pub encode: SamplesSummary,
    /// Capture to ack arrival, on this client's clock ([`ImgStats::capture_to_ack`]).
    #[serde(default)]
    pub capture_to_ack: SamplesSummary,
    /// `hub clock - this client's clock`, µs, and its uncertainty (framed, once the hub
    /// sent its time); `null` without an estimate.
    #[serde(default)]
    pub clock_offset_us: Option<i64>,
    #[serde(default)]
    pub clock_offset_err_us: Option<u64>,
    /// What the frames were encoded with (`--adapt`), and the window chosen.
    #[serde(default)]
    pub encoding: EncodingSummary,
    /// Why the run ended early, if it did.
    pub error: Option<String>,
}

impl ImgSummary {
    pub fn of(stats: &ImgStats, elapsed: Duration, error: Option<String>) -> ImgSummary {
        let c = &stats.counts;
        ImgSummary {
            sent: c.sent,
            acked: c.acked,
            written: c.written,
            lost: c.lost,
            skipped: c.skipped,
            bytes: c.bytes,
            late_acks: c.late_acks,
            ignored: c.ignored,
            elapsed_s: elapsed.as_secs_f64(),
            fps_acked: per_second(c.acked, elapsed),
            fps_written: per_second(c.written, elapsed),
            rtt_is_write_time: c.written > 0 && c.acked == 0,
            fps_sent: per_second(c.sent, elapsed),
            rtt: SamplesSummary::of(&stats.rtt),
            encode: SamplesSummary::of(&stats.encode),
            capture_to_ack: SamplesSummary::of(&stats.capture_to_ack),
            clock_offset_us: stats.clock.map(|c| c.offset_us),
            clock_offset_err_us: stats.clock.map(|c| c.err_us),
            encoding: EncodingSummary::of(&stats.encoding),
            error,
        }
    }
}

// ---------------------------------------------------------------------------------------
// msg-client
// ---------------------------------------------------------------------------------------

/// The telemetry client's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MsgCounts {
    /// Messages sent (answered + rejected + lost).
    pub sent: u64,
    /// Messages the hub answered `get the msg`.
    pub answered: u64,
    /// Messages the hub answered with an `error: ...` reply.
    pub rejected: u64,
    /// Messages without a reply within the reply timeout, or whose sending failed.
    pub lost: u64,
    /// Replies that came after their message's timeout (drained before the next message).
    pub late_replies: u64,
    /// Datagrams that were not a reply from the hub.
    pub ignored: u64,
    /// `--stdin` lines that were not a valid message (reported and skipped).
    pub invalid_lines: u64,
    /// Framed: messages sent again because their reply was late (counted once per resend).
    pub resent: u64,
}

/// Everything the telemetry client measures.
#[derive(Clone, Debug, Default)]
pub struct MsgStats {
    pub counts: MsgCounts,
    pub rtt: Samples,
}

/// Shared handle to [`MsgStats`].
pub type SharedMsgStats = Arc<Mutex<MsgStats>>;

/// One status line: `msg-client: sent 100, answered 100, rejected 0, lost 0 | 98.0 msg/s | ...`.
pub fn msg_status_line(c: &MsgCounts, rate: f64, rtt_p50: Option<Duration>) -> String {
    format!(
        "msg-client: sent {}, answered {}, rejected {}, lost {} | {rate:.1} msg/s | rtt p50 {}",
        c.sent,
        c.answered,
        c.rejected,
        c.lost,
        fmt_ms(rtt_p50)
    )
}

/// The telemetry client's final summary (stdout).
pub fn msg_summary(what: &str, stats: &MsgStats, elapsed: Duration) -> String {
    let c = &stats.counts;
    let mut out = format!("msg-client: summary: {what}\n");
    let _ = writeln!(
        out,
        "  messages: sent {}, answered {}, rejected {}, lost {}",
        c.sent, c.answered, c.rejected, c.lost
    );
    let _ = writeln!(
        out,
        "  replies: late {} (drained), ignored datagrams {}; resent {}; invalid stdin lines {}",
        c.late_replies, c.ignored, c.resent, c.invalid_lines
    );
    let _ = writeln!(
        out,
        "  rate: {:.1} msgs/s answered, {:.1} msgs/s sent, over {:.2} s",
        per_second(c.answered, elapsed),
        per_second(c.sent, elapsed),
        elapsed.as_secs_f64()
    );
    let p = stats.rtt.percentiles(&[50.0, 99.0]);
    let _ = writeln!(
        out,
        "  rtt: p50 {}, p99 {}, max {}",
        fmt_ms(p[0]),
        fmt_ms(p[1]),
        fmt_ms(stats.rtt.max())
    );
    out
}

/// The telemetry client's summary as `msg-client --json-summary` prints it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MsgSummary {
    pub sent: u64,
    pub answered: u64,
    pub rejected: u64,
    pub lost: u64,
    pub late_replies: u64,
    pub ignored: u64,
    pub invalid_lines: u64,
    #[serde(default)]
    pub resent: u64,
    pub elapsed_s: f64,
    /// Messages answered per second.
    pub msgs_per_s: f64,
    pub rtt: SamplesSummary,
    /// Why the run ended early, if it did.
    pub error: Option<String>,
}

impl MsgSummary {
    pub fn of(stats: &MsgStats, elapsed: Duration, error: Option<String>) -> MsgSummary {
        let c = &stats.counts;
        MsgSummary {
            sent: c.sent,
            answered: c.answered,
            rejected: c.rejected,
            lost: c.lost,
            late_replies: c.late_replies,
            ignored: c.ignored,
            invalid_lines: c.invalid_lines,
            resent: c.resent,
            elapsed_s: elapsed.as_secs_f64(),
            msgs_per_s: per_second(c.answered, elapsed),
            rtt: SamplesSummary::of(&stats.rtt),
            error,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let mut s = Samples::new();
        // 1..=100 ms in a scrambled order
        for i in 0..100u64 {
            s.record(ms((i * 37) % 100 + 1));
        }
        assert_eq!(s.count(), 100);
        assert_eq!(s.percentile(50.0), Some(ms(50)));
        assert_eq!(s.percentile(99.0), Some(ms(99)));
        assert_eq!(s.percentile(100.0), Some(ms(100)));
        assert_eq!(s.percentile(0.0), Some(ms(1)));
        assert_eq!(s.max(), Some(ms(100)));
        assert_eq!(s.mean(), Some(Duration::from_micros(50_500)));
        assert_eq!(
            s.percentiles(&[50.0, 99.0]),
            vec![Some(ms(50)), Some(ms(99))]
        );
    }

    #[test]
    fn small_sets_and_empty_sets() {
        let mut s = Samples::new();
        assert_eq!(s.percentile(50.0), None);
        assert_eq!(s.mean(), None);
        assert_eq!(s.max(), None);
        s.record(ms(7));
        assert_eq!(s.percentile(50.0), Some(ms(7)));
        assert_eq!(s.percentile(99.0), Some(ms(7)));
        s.record(ms(3));
        assert_eq!(s.percentile(50.0), Some(ms(3)));
        assert_eq!(s.percentile(99.0), Some(ms(7)));
    }

    #[test]
    fn reservoir_is_bounded_and_exact_stats_stay_exact() {
        let mut s = Samples::with_capacity(1000);
        for i in 1..=100_000u64 {
            s.record(Duration::from_micros(i));
        }
        assert_eq!(s.count(), 100_000);
        assert_eq!(s.kept(), 1000);
        assert_eq!(s.max(), Some(Duration::from_micros(100_000)));
        assert_eq!(s.mean(), Some(Duration::from_nanos(50_000_500)));
        // A uniform subset of 1..=100000: its median is near 50000. Generous bounds: the
        // reservoir's randomness is a fixed-seed generator, so this is deterministic anyway.
        let p50 = s.percentile(50.0).unwrap().as_micros();
        assert!((40_000..60_000).contains(&p50), "p50 {p50}");
    }

    #[test]
    fn rate_meter_measures_between_calls() {
        let t0 = Instant::now();
        let mut m = RateMeter::new(t0);
        assert_eq!(m.rate(t0 + ms(500), 10), 20.0);
        assert_eq!(m.rate(t0 + ms(1500), 40), 30.0);
        assert_eq!(m.rate(t0 + ms(1500), 40), 0.0);
        assert_eq!(per_second(10, Duration::ZERO), 0.0);
        assert_eq!(per_second(10, ms(2000)), 5.0);
    }

    #[test]
    fn formats_milliseconds() {
        assert_eq!(fmt_ms(Some(Duration::from_micros(1234))), "1.23 ms");
        assert_eq!(fmt_ms(None), "-");
    }

    #[test]
    fn img_lines_carry_every_count() {
        let mut stats = ImgStats {
            counts: ImgCounts {
                sent: 20,
                acked: 19,
                written: 0,
                lost: 1,
                bytes: 200_000,
                skipped: 3,
                late_acks: 1,
                ignored: 2,
            },
            ..ImgStats::default()
        };
        stats.rtt.record(ms(2));
        stats.encode.record(ms(4));
        let status = img_status_line(&stats.counts, true, 29.84, stats.rtt.percentile(50.0));
        assert_eq!(
            status,
            "img-client: sent 20, acked 19, lost 1, skipped 3 | 29.8 fps | rtt p50 2.00 ms"
        );
        let s = img_summary("pattern -> hub", &stats, ms(2000), true);
        assert!(
            s.starts_with("img-client: summary: pattern -> hub\n"),
            "{s}"
        );
        assert!(
            s.contains("  frames: sent 20, acked 19, lost 1, skipped 3\n"),
            "{s}"
        );
        assert!(
            s.contains("  acks: late 1 (drained), ignored datagrams 2\n"),
            "{s}"
        );
        assert!(
            s.contains("  bytes: 200000 sent (200.0 kB, 10.0 kB per frame)\n"),
            "{s}"
        );
        assert!(
            s.contains("  rate: 9.5 fps acked, 10.0 fps sent, over 2.00 s\n"),
            "{s}"
        );
        assert!(
            s.contains("  rtt: p50 2.00 ms, p99 2.00 ms, max 2.00 ms (first datagram sent to ack received)\n"),
            "{s}"
        );
        assert!(
            s.contains("  encode: mean 4.00 ms, p50 4.00 ms per frame (1 frames encoded)\n"),
            "{s}"
        );
    }

    #[test]
    fn without_an_ack_the_summary_says_written_never_acked() {
        let mut stats = ImgStats::default();
        stats.counts.sent = 10;
        stats.counts.written = 9;
        stats.counts.lost = 1;
        stats.rtt.record(ms(3));
        let status = img_status_line(&stats.counts, false, 10.0, stats.rtt.percentile(50.0));
        assert_eq!(
            status,
            "img-client: sent 10, written 9, lost 1 | 10.0 fps | write p50 3.00 ms"
        );
        let s = img_summary("pattern -> hub", &stats, ms(1000), false);
        assert!(!s.contains("acked") && !s.contains("acks:"), "{s}");
        assert!(
            s.contains("  frames: sent 10, written 9, lost 1, skipped 0\n"),
            "{s}"
        );
        assert!(s.contains("has no ack"), "{s}");
        assert!(s.contains("  rate: 9.0 fps written, 10.0 fps sent"), "{s}");
        assert!(s.contains("  write: p50 3.00 ms"), "{s}");
        let json = serde_json::to_value(ImgSummary::of(&stats, ms(1000), None)).unwrap();
        assert_eq!(
            (json["acked"].as_u64(), json["written"].as_u64()),
            (Some(0), Some(9))
        );
        assert_eq!(json["rtt_is_write_time"], true);
    }

    #[test]
    fn img_summary_without_frames_has_no_nan() {
        let s = img_summary("x", &ImgStats::default(), Duration::ZERO, true);
        assert!(s.contains("frames: sent 0, acked 0, lost 0"), "{s}");
        assert!(s.contains("rtt: p50 -, p99 -, max -"), "{s}");
        assert!(!s.contains("NaN") && !s.contains("inf"), "{s}");
    }

    #[test]
    fn msg_lines_carry_every_count() {
        let mut stats = MsgStats {
            counts: MsgCounts {
                sent: 10,
                answered: 7,
                rejected: 1,
                lost: 2,
                late_replies: 1,
                ignored: 0,
                invalid_lines: 3,
                resent: 4,
            },
            ..MsgStats::default()
        };
        stats.rtt.record(ms(1));
        let status = msg_status_line(&stats.counts, 99.96, stats.rtt.percentile(50.0));
        assert_eq!(
            status,
            "msg-client: sent 10, answered 7, rejected 1, lost 2 | 100.0 msg/s | rtt p50 1.00 ms"
        );
        let s = msg_summary("[0,0,0,1] -> hub", &stats, ms(1000));
        assert!(
            s.contains("  messages: sent 10, answered 7, rejected 1, lost 2\n"),
            "{s}"
        );
        assert!(s.contains("; resent 4; invalid stdin lines 3"), "{s}");
        assert!(s.contains("  rate: 7.0 msgs/s answered"), "{s}");
        assert!(
            s.contains("  rtt: p50 1.00 ms, p99 1.00 ms, max 1.00 ms\n"),
            "{s}"
        );
    }

    #[test]
    fn percentile_of_sorted_values_is_nearest_rank() {
        let v: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(percentile_of_sorted(&v, 50.0), Some(5.0));
        assert_eq!(percentile_of_sorted(&v, 99.0), Some(10.0));
        assert_eq!(percentile_of_sorted(&v, 0.0), Some(1.0));
        assert_eq!(percentile_of_sorted::<f64>(&[], 50.0), None);
    }

    #[test]
    fn json_summaries_carry_the_figures_and_read_back() {
        let mut stats = ImgStats::default();
        stats.counts.sent = 4;
        stats.counts.acked = 3;
        stats.counts.bytes = 4000;
        stats.rtt.record(Duration::from_micros(1500));
        let s = ImgSummary::of(&stats, ms(2000), None);
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["acked"], 3);
        assert_eq!(json["fps_acked"], 1.5);
        assert_eq!(json["rtt"]["p50_us"], 1500.0);
        assert!(json["encode"]["p50_us"].is_null(), "{json}");
        assert_eq!(json["encode"]["count"], 0);
        assert!(json["error"].is_null(), "{json}");
        let back: ImgSummary = serde_json::from_value(json).unwrap();
        assert_eq!(back, s);

        let mut stats = MsgStats::default();
        stats.counts.sent = 2;
        stats.counts.answered = 2;
        let s = MsgSummary::of(&stats, ms(1000), Some("stdin: broken pipe".into()));
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["msgs_per_s"], 2.0);
        assert_eq!(json["error"], "stdin: broken pipe");
        assert!(json["rtt"]["max_us"].is_null(), "{json}");
        let back: MsgSummary = serde_json::from_str(&json.to_string()).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn the_parity_in_use_is_in_the_status_line_the_summary_and_the_json() {
        let mut stats = ImgStats::default();
        assert_eq!(stats.encoding.status(), "");
        stats.encoding.fec = Some(crate::client::img_sender::FecState {
            parity: 3,
            data: 22,
            parity_sent: 30,
            rebuilt: 7,
        });
        assert_eq!(stats.encoding.status(), " | fec 3/22");
        let s = img_summary("x", &stats, Duration::from_secs(1), true);
        assert!(
            s.contains(
                "fec: now 3/22 (parity/data chunks), 30 parity chunks sent, 7 data chunks \
                 rebuilt by the hub"
            ),
            "{s}"
        );
        let json =
            serde_json::to_value(ImgSummary::of(&stats, Duration::from_secs(1), None)).unwrap();
        assert_eq!(
            json["encoding"]["fec"],
            serde_json::json!({"parity": 3, "data": 22, "parity_sent": 30, "rebuilt": 7})
        );
        stats.encoding.fec = None;
        let json =
            serde_json::to_value(ImgSummary::of(&stats, Duration::from_secs(1), None)).unwrap();
        assert!(json["encoding"].get("fec").is_none(), "{json}");
    }
}
