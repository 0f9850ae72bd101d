//! The camera client's adaptation to the link (issue 13): from the acks it sees, what to
//! encode (JPEG quality first, then resolution, then frame rate) and how many frames to keep
//! in flight, so that latency stays under `--max-latency-ms` and the stream within what the
//! link carries, climbing back when the link frees up. No socket, no clock: the caller
//! passes `now` and what happened to every frame, as for the other state machines here.
//!
//! # The estimator: frame dispersion, not GCC's delay gradient
//!
//! WebRTC's GCC sees every packet's arrival time (transport-wide feedback) and filters the
//! delay gradient. The framed protocol acks a whole frame, once, and the ack echoes only the
//! stamp of the chunk that completed it; so the controller works per frame, with what a
//! frame tells: its chunks leave the sender in one burst, so the bottleneck spaces them at
//! its own rate whatever the average sending rate is (each frame is a packet train). A
//! frame of `S` bytes sent at `t0` and acked at `t1` took `t1 - max(t0 + P, prev_ack)` of
//! the bottleneck's time, where `P` is the path's round trip without queueing and
//! `prev_ack` the previous ack (a frame queued behind the one before starts when that one
//! is done): the rate sample is `S` over that. Samples go into a max filter over
//! [`RATE_WINDOW`] (as BBR's bandwidth filter), so a frame that lost a chunk (its resend
//! costs a round trip, so its sample is low) or met cross traffic does not pull the
//! estimate down, and the estimate is not app-limited: small frames measure the link as
//! well as large ones.
//!
//! `P` is the intercept of a line `D = P + S / R` (least squares, refitted twice through
//! the points on or under it: the lower edge, as queueing only adds delay) through the frames' times
//! from first send to ack (`D`) against their sizes, over the last [`BASE_WINDOW`], using
//! only frames that did not wait behind an earlier one and had no resend; the line needs
//! sizes that differ (by 30% or more, which every change of the encoding gives: the start
//! from full quality, a step down, a climb); without one the last `P` is kept (a path's
//! delay changes rarely), and `P` never exceeds the smallest `D` seen. Until it is known it
//! counts as 0, which makes the rate samples low, never high.
//!
//! Queue build-up (the delay-based part, in the spirit of GCC's overuse detector, with
//! the round trip above the path's own as the signal): a frame's own bottleneck time less
//! `S / R` is the queueing it met (an estimate of `R` on the low side makes it lower, never
//! higher, so it is only looked at once `P` came from a line); more than
//! `max(10 ms, 10% of max latency)` is overuse, and so is a frame later (capture to ack,
//! less half the round trip) than the max latency, and a frame given up at its deadline.
//! A frame with resends (random loss) or dropped by the hub as stale (a newer one got there
//! first) is no overuse. On overuse the estimate drops at once to the frame's own sample
//! (or by 15%, if that is lower): back off fast; for [`OVERUSE_HOLD`] after, frames sent
//! before the cut are not counted again. Otherwise it follows the max filter,
//! down at once, up at most [`GROWTH_PER_SECOND`] (probe up slowly), and not at all for
//! [`OVERUSE_HOLD`] after an overuse.
//!
//! # From the estimate to the encoding
//!
//! The frame budget is the smaller of [`UTILIZATION`] of the rate over the frame rate, and
//! what the bottleneck passes in half the max latency less half the round trip (the other
//! half is for the wait at the sender and for jitter). The encoding is the best rung of the
//! ladder ([`Controller::levels`]: the configured quality, then down in steps of 10 to
//! [`MIN_QUALITY`], then 3/4 and 1/2 of the size at that quality) whose expected size fits
//! the budget (with forward error correction, a frame's JPEG and its parity shards:
//! [`Controller::set_parity_overhead`]; the rate samples count the parity sent too);
//! expected sizes are learnt from the frames encoded (a moving average per
//! rung, the other rungs scaled from the nearest known one by a prior curve). Down is at
//! once, to whatever fits; up is one rung at a time, at most every [`CLIMB_HOLD`], and only
//! when the rung above fits with 10% to spare: hysteresis, so it never flips between two
//! rungs. When even the last rung does not fit, the frame rate goes down (to
//! [`MIN_FPS`] at worst).
//!
//! The window (`--window auto`): the frames in flight that keep the frame rate going, the
//! expected time from send to ack times the frame rate (about the bandwidth-delay product
//! over the frame size, plus the frame on the wire), rounded up, 1 to [`MAX_AUTO_WINDOW`].

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// `--window auto` keeps at most this many frames in flight.
pub const MAX_AUTO_WINDOW: usize = 8;
/// The lowest JPEG quality before the resolution goes down.
pub const MIN_QUALITY: i32 = 30;
/// Quality steps of the ladder.
pub const QUALITY_STEP: i32 = 10;
/// The sizes of the ladder, after the qualities.
pub const SCALES: [Scale; 3] = [
    Scale { num: 1, den: 1 },
    Scale { num: 3, den: 4 },
    Scale { num: 1, den: 2 },
];
/// The lowest frame rate the controller goes down to.
pub const MIN_FPS: f64 = 1.0;
/// The share of the estimated rate the stream may use.
pub const UTILIZATION: f64 = 0.8;
/// The rate samples' max filter spans this long.
pub const RATE_WINDOW: Duration = Duration::from_secs(1);
/// The path's delay (and the queueing baseline) is taken from this long.
pub const BASE_WINDOW: Duration = Duration::from_secs(10);
/// The estimate grows at most this factor a second.
pub const GROWTH_PER_SECOND: f64 = 2.0;
/// At most one rung up per this long.
pub const CLIMB_HOLD: Duration = Duration::from_millis(300);
/// No growth (and no second cut) for this long after an overuse.
pub const OVERUSE_HOLD: Duration = Duration::from_millis(500);
/// Without a line through the frames' times, the path's delay is taken as this share of
/// the smallest send-to-ack.
pub const BASE_GUESS: f64 = 0.9;
/// The share of the frame budget used while the last frame still met a queue, so it
/// drains (a queue as deep as the rate's 500 ms then drains in about a second).
pub const DRAIN_SHARE: f64 = 0.5;
/// Observations kept at most.
const MAX_HISTORY: usize = 512;

/// A fraction of the configured width and height.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scale {
    pub num: u32,
    pub den: u32,
}

impl Scale {
    pub const FULL: Scale = Scale { num: 1, den: 1 };

    /// `width` x `height` scaled (each at least 1).
    pub fn apply(self, width: i32, height: i32) -> (i32, i32) {
        let s = |v: i32| ((i64::from(v) * i64::from(self.num) / i64::from(self.den)) as i32).max(1);
        (s(width), s(height))
    }

    fn factor(self) -> f64 {
        f64::from(self.num) / f64::from(self.den)
    }
}

/// One rung of the ladder: what a frame is encoded with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Level {
    pub quality: i32,
    pub scale: Scale,
}

/// How the window is chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WindowMode {
    /// From the estimates (see the module documentation).
    Auto,
    /// Always this many (at least 1).
    Fixed(usize),
}

/// The controller's settings.
#[derive(Clone, Debug)]
pub struct AdaptConfig {
    /// Latency (capture to ack) to stay under.
    pub max_latency: Duration,
    /// The frame rate when the link allows it (the capture rate).
    pub max_fps: f64,
    /// The best quality (the top rung).
    pub quality: i32,
    /// false: the encoding and the frame rate stay at the top; only the window is chosen.
    pub adapt: bool,
    pub window: WindowMode,
}

/// What to encode and send now.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Target {
    /// The rung (index into [`Controller::levels`]).
    pub level: usize,
    pub quality: i32,
    pub scale: Scale,
    pub fps: f64,
    pub window: usize,
}

/// What an acked frame tells.
#[derive(Clone, Copy, Debug)]
pub struct Acked {
    /// Its bytes on the link: the JPEG and its parity shards, if any.
    pub bytes: usize,
    /// From its first datagram sent to its ack.
    pub send_to_ack: Duration,
    /// From its capture to its ack, when known.
    pub capture_to_ack: Option<Duration>,
    /// Chunks sent again for it.
    pub resent: u32,
}

/// The controller's view of the link, for status lines and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Estimates {
    /// The bottleneck's rate in bytes a second, once one frame was acked.
    pub rate: Option<f64>,
    /// The round trip without queueing (0 until known).
    pub base_rtt: Duration,
    /// Overuses seen so far.
    pub overuses: u64,
}

#[derive(Clone, Copy, Debug)]
struct Obs {
    at: Instant,
    bytes: f64,
    /// Send to ack, seconds.
    d: f64,
    /// Its own time on the bottleneck, seconds (NaN: a frame with resends).
    own: f64,
    /// Usable for the line that gives the path's delay.
    for_base: bool,
}

/// The controller. See the module documentation.
#[derive(Debug)]
pub struct Controller {
    config: AdaptConfig,
    levels: Vec<Level>,
    /// Moving average of the encoded bytes per rung.
    sizes: Vec<Option<f64>>,
    level: usize,
    fps: f64,
    window: usize,
    last_climb: Instant,
    history: VecDeque<Obs>,
    samples: VecDeque<(Instant, f64)>,
    rate: Option<f64>,
    rate_at: Instant,
    base: f64,
    /// `base` came from a line (not the 0 it starts at).
    base_known: bool,
    prev_ack: Option<Instant>,
    hold_until: Instant,
    /// Moving average of send to ack (seconds) of frames without resends.
    d_avg: Option<f64>,
    overuses: u64,
    /// The queueing the last frame without resends met, seconds.
    queueing: f64,
    /// Parity bytes sent per JPEG byte (forward error correction): the budget is for both.
    parity_overhead: f64,
}

/// Relative JPEG size against quality, at full size (1 at quality 90): measured on the
/// noisy test pattern, the shape of which camera frames share.
const QUALITY_CURVE: [(f64, f64); 10] = [
    (0.0, 0.10),
    (20.0, 0.15),
    (30.0, 0.175),
    (40.0, 0.20),
    (50.0, 0.24),
    (60.0, 0.30),
    (70.0, 0.40),
    (80.0, 0.55),
    (90.0, 1.0),
    (100.0, 2.0),
];

fn prior(level: &Level) -> f64 {
    let q = f64::from(level.quality);
    let mut y = QUALITY_CURVE[QUALITY_CURVE.len() - 1].1;
    for w in QUALITY_CURVE.windows(2) {
        let ((x0, y0), (x1, y1)) = (w[0], w[1]);
        if q <= x1 {
            y = y0 + (y1 - y0) * ((q - x0) / (x1 - x0)).clamp(0.0, 1.0);
            break;
        }
    }
    // Scaling down smooths noise away: a little less than the pixel count's share.
    let f = level.scale.factor();
    y * f.powf(1.6)
}

/// The least-squares line `y = a x + b` through `pts`, as `(a, b)`; `None` without two
/// distinct `x`.
fn line(pts: &[(f64, f64)]) -> Option<(f64, f64)> {
    let n = pts.len() as f64;
    let mx = pts.iter().map(|p| p.0).sum::<f64>() / n;
    let my = pts.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = pts.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    (sxx > 0.0).then(|| (sxy / sxx, my - sxy / sxx * mx))
}

/// The ladder for a top quality of `quality`.
pub fn ladder(quality: i32) -> Vec<Level> {
    let mut levels = vec![Level {
        quality,
        scale: Scale::FULL,
    }];
    let floor = MIN_QUALITY.min(quality);
    let mut q = (quality - 1).div_euclid(QUALITY_STEP) * QUALITY_STEP;
    while q >= floor && q > 0 {
        levels.push(Level {
            quality: q,
            scale: Scale::FULL,
        });
        q -= QUALITY_STEP;
    }
    let last_q = levels.last().expect("one").quality;
    for &scale in &SCALES[1..] {
        levels.push(Level {
            quality: last_q,
            scale,
        });
    }
    levels
}

impl Controller {
    pub fn new(config: AdaptConfig, now: Instant) -> Self {
        let levels = ladder(config.quality);
        let window = match config.window {
            WindowMode::Fixed(n) => n.max(1),
            WindowMode::Auto => 1,
        };
        Controller {
            fps: config.max_fps,
            sizes: vec![None; levels.len()],
            levels,
            level: 0,
            window,
            last_climb: now,
            history: VecDeque::new(),
            samples: VecDeque::new(),
            rate: None,
            rate_at: now,
            base: 0.0,
            base_known: false,
            prev_ack: None,
            hold_until: now,
            d_avg: None,
            overuses: 0,
            queueing: 0.0,
            parity_overhead: 0.0,
            config,
        }
    }

    pub fn levels(&self) -> &[Level] {
        &self.levels
    }

    pub fn target(&self) -> Target {
        let l = self.levels[self.level];
        Target {
            level: self.level,
            quality: l.quality,
            scale: l.scale,
            fps: self.fps,
            window: self.window,
        }
    }

    pub fn estimates(&self) -> Estimates {
        Estimates {
            rate: self.rate,
            base_rtt: Duration::from_secs_f64(self.base),
            overuses: self.overuses,
        }
    }

    /// The sender adds `overhead` parity bytes per JPEG byte from now on
    /// ([`crate::proto::fec`]): a frame's expected bytes on the link are its JPEG's times
    /// `1 + overhead`, and the rung chosen is the one whose JPEG and parity fit the budget.
    /// (The acks' [`Acked::bytes`] are to include the parity as well.)
    pub fn set_parity_overhead(&mut self, overhead: f64) {
        self.parity_overhead = overhead.max(0.0);
    }

    /// The expected bytes on the link of a frame at rung `level`: its JPEG and its parity.
    fn expected_wire_bytes(&self, level: usize) -> f64 {
        self.expected_bytes(level) * (1.0 + self.parity_overhead)
    }

    /// A frame was encoded at rung `level` into `bytes`.
    pub fn on_encoded(&mut self, level: usize, bytes: usize) {
        if let Some(s) = self.sizes.get_mut(level) {
            let b = bytes as f64;
            *s = Some(s.map_or(b, |avg| avg * 0.7 + b * 0.3));
        }
    }

    /// The expected bytes of a frame at rung `level`.
    pub fn expected_bytes(&self, level: usize) -> f64 {
        if let Some(s) = self.sizes[level] {
            return s;
        }
        let known = (0..self.levels.len())
            .filter(|&k| self.sizes[k].is_some())
            .min_by_key(|&k| k.abs_diff(level));
        let p = prior(&self.levels[level]);
        match known {
            Some(k) => self.sizes[k].expect("known") * p / prior(&self.levels[k]),
            // a 640x480 camera frame at q90 is some 60 kB
            None => 60_000.0 * p,
        }
    }

    /// A frame was given up at its deadline: counted as overuse (a frame lost despite its
    /// resends is mostly a full queue). A frame the hub dropped as stale (a newer one got
    /// there first) or refused says nothing of the link: do not call this for those.
    pub fn on_gave_up(&mut self, now: Instant) {
        if let Some(rate) = self.rate {
            self.overuse(now, rate * 0.85);
        }
        self.decide(now);
    }

    fn overuse(&mut self, now: Instant, rate: f64) {
        self.overuses += 1;
        self.rate = Some(rate.max(1.0));
        self.rate_at = now;
        self.samples.clear();
        self.hold_until = now + OVERUSE_HOLD;
    }

    /// A frame was acked at `now`; [`Acked::bytes`] counts its parity too.
    pub fn on_acked(&mut self, a: Acked, now: Instant) {
        let d = a.send_to_ack.as_secs_f64();
        let sent = now.checked_sub(a.send_to_ack).unwrap_or(now);
        let bytes = a.bytes.max(1) as f64;
        let clean = a.resent == 0;
        let waited = |base: f64| {
            self.prev_ack
                .is_some_and(|p| p > sent + Duration::from_secs_f64(base))
        };
        // the path's delay first, with this frame's point in the line
        let for_base = clean && !waited(self.base);
        self.history.push_back(Obs {
            at: now,
            bytes,
            d,
            own: f64::NAN,
            for_base,
        });
        while self.history.len() > MAX_HISTORY
            || self
                .history
                .front()
                .is_some_and(|o| now.saturating_duration_since(o.at) > BASE_WINDOW)
        {
            self.history.pop_front();
        }
        self.fit_base();
        // when the frame could start through the bottleneck: after the path's delay, and
        // after the frame before it was done
        let base = Duration::from_secs_f64(self.base);
        let start = match self.prev_ack {
            Some(p) if p > sent + base => p,
            _ => sent + base,
        };
        let own = now.saturating_duration_since(start).as_secs_f64().max(1e-4);
        // a frame with resends took a round trip more: its sample is low, never high
        let sample = bytes / own;
        // a frame late because a chunk of it was lost and resent says nothing of the queue
        let one_way_back = self.base * 0.5;
        let late = clean
            && a.capture_to_ack.unwrap_or(a.send_to_ack).as_secs_f64() - one_way_back
                > self.config.max_latency.as_secs_f64();
        // queueing: its own time less its size over the rate (a low rate makes it low,
        // never high); only once the path's delay is known (until then `own` holds it)
        let excess = self.rate.map_or(f64::NAN, |r| own - bytes / r);
        let threshold = (self.config.max_latency.as_secs_f64() * 0.1).max(0.010);
        let queued = clean && excess > threshold;
        if clean {
            self.queueing = excess.max(0.0);
        }
        if late || queued {
            log::debug!(
                "adapt: overuse ({}): {bytes} bytes, send to ack {:.1} ms, own {:.1} ms, \
                 sample {:.0} B/s, rate {:?}, base {:.1} ms",
                if late { "late" } else { "queued" },
                d * 1e3,
                own * 1e3,
                sample,
                self.rate.map(|r| r as u64),
                self.base * 1e3
            );
        }
        match self.rate {
            // the same overuse still showing (frames sent before the cut): no second cut
            Some(_) if (late || queued) && now < self.hold_until => {}
            Some(rate) if late || queued => {
                let to = sample.min(rate * 0.85);
                if to < rate * 0.7 {
                    // the link itself changed: what was seen before is of another link
                    self.history.retain(|o| o.at == now);
                }
                self.overuse(now, to);
            }
            _ => {
                self.samples.push_back((now, sample));
                while self
                    .samples
                    .front()
                    .is_some_and(|(t, _)| now.saturating_duration_since(*t) > RATE_WINDOW)
                {
                    self.samples.pop_front();
                }
                let max = self.samples.iter().map(|s| s.1).fold(0.0, f64::max);
                self.rate = Some(match self.rate {
                    None => max,
                    Some(rate) if now < self.hold_until => rate.min(max),
                    Some(rate) => {
                        let dt = now.saturating_duration_since(self.rate_at).as_secs_f64();
                        max.min(rate * GROWTH_PER_SECOND.powf(dt.min(1.0)))
                    }
                });
                self.rate_at = now;
            }
        }
        if self.prev_ack.is_none_or(|p| now > p) {
            self.prev_ack = Some(now);
        }
        if clean {
            self.d_avg = Some(self.d_avg.map_or(d, |avg| avg * 0.8 + d * 0.2));
        }
        if clean {
            if let Some(o) = self.history.back_mut() {
                o.own = own;
            }
        }
        self.decide(now);
    }

    /// The path's delay from the line through (bytes, send to ack); see the module doc.
    fn fit_base(&mut self) {
        let pts: Vec<(f64, f64)> = self
            .history
            .iter()
            .filter(|o| o.for_base)
            .map(|o| (o.bytes, o.d))
            .collect();
        let Some(min_d) = pts.iter().map(|p| p.1).reduce(f64::min) else {
            return;
        };
        let (lo, hi) = pts.iter().fold((f64::INFINITY, 0.0f64), |(lo, hi), p| {
            (lo.min(p.0), hi.max(p.0))
        });
        if pts.len() >= 3 && hi >= lo * 1.3 {
            // least squares, then again through the points on or under the line: queueing
            // only ever adds delay, so the path is the lower edge of the cloud
            let mut fit = line(&pts);
            for _ in 0..2 {
                let Some((slope, icept)) = fit else { break };
                let lower: Vec<(f64, f64)> = pts
                    .iter()
                    .copied()
                    .filter(|p| p.1 <= icept + slope * p.0 + 1e-4)
                    .collect();
                match line(&lower) {
                    Some(f) if lower.len() >= 3 => fit = Some(f),
                    _ => break,
                }
            }
            if let Some((_, icept)) = fit.filter(|f| f.0 > 0.0) {
                self.base = icept.max(0.0);
                self.base_known = true;
            }
        }
        self.base = if self.base_known {
            self.base.min(min_d)
        } else {
            // no line yet (every frame of about one size): the smallest send-to-ack less a
            // share for the frame's own time on the link. Too high a rate follows, which the
            // queueing it causes corrects at once; too low a one (0, as before) would hold
            // the estimate at frame size over round trip, far under the link's on a long
            // path, with nothing to lift it
            BASE_GUESS * min_d
        };
    }

    fn decide(&mut self, now: Instant) {
        let Some(rate) = self.rate else {
            return;
        };
        let max_fps = self.config.max_fps;
        if self.config.adapt {
            let lat = self.config.max_latency.as_secs_f64() * 0.5 - self.base * 0.5;
            let mut budget = (UTILIZATION * rate / max_fps).min(lat.max(0.0) * rate);
            if self.queueing > (self.config.max_latency.as_secs_f64() * 0.1).max(0.010) {
                // a queue is still there: send under the rate until it drains
                budget *= DRAIN_SHARE;
            }
            let last = self.levels.len() - 1;
            let want = (0..self.levels.len())
                .find(|&l| self.expected_wire_bytes(l) <= budget)
                .unwrap_or(last);
            if want != self.level {
                log::debug!(
                    "adapt: rate {:.0} B/s, base {:.1} ms, budget {budget:.0} B: rung {want} \
                     wanted, at {}",
                    rate,
                    self.base * 1e3,
                    self.level
                );
            }
            if want > self.level {
                self.level = want;
                self.last_climb = now;
            } else if want < self.level
                && now.saturating_duration_since(self.last_climb) >= CLIMB_HOLD
                && self.expected_wire_bytes(self.level - 1) <= budget * 0.9
            {
                self.level -= 1;
                self.last_climb = now;
            }
            let e = self.expected_wire_bytes(self.level);
            self.fps = if self.level == last && e * max_fps > UTILIZATION * rate {
                (UTILIZATION * rate / e).clamp(MIN_FPS.min(max_fps), max_fps)
            } else {
                max_fps
            };
        }
        if self.config.window == WindowMode::Auto {
            let e = self.expected_wire_bytes(self.level);
            let t = (self.base + e / rate).max(self.d_avg.unwrap_or(0.0));
            self.window = ((t * self.fps).ceil() as usize).clamp(1, MAX_AUTO_WINDOW);
        }
    }
}

#[cfg(test)]
#[path = "adapt_tests.rs"]
mod tests;
