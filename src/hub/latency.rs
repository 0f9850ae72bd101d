//! Per-source frame latency, as `/state`, `/metrics`, the stats lines and the exit summary
//! show it: a bounded window of recent latencies for p50/p99, a histogram over the whole
//! run for Prometheus, and the clock state of the newest frame.
//!
//! Latency is the hub's arrival time minus the capture time moved onto the hub's clock by
//! the sender's offset estimate ([`FrameTiming`], computed in
//! [`crate::proto::framed_receiver`]); only frames with [`ClockSync::Synced`] have one. The
//! window holds the last [`WINDOW_FRAMES`] latencies of the last [`WINDOW`], so p50/p99
//! describe what a source does now and cost a sort of at most 512 numbers per request.

use crate::client::stats::percentile_of_sorted;
use crate::proto::framed_receiver::{ClockSync, FrameTiming};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::time::Duration;

/// Latencies kept for the percentiles, at most.
pub const WINDOW_FRAMES: usize = 512;
/// Latencies older than this are left out of the percentiles.
pub const WINDOW: Duration = Duration::from_secs(10);
/// The histogram's upper bounds, seconds (`le` of `udphub_frame_latency_seconds`).
pub const BUCKETS_S: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

/// One source's latencies. See the module documentation.
#[derive(Clone, Debug)]
pub struct LatencyWindow {
    /// (arrival µs, latency µs), oldest first.
    recent: VecDeque<(u64, u64)>,
    /// Frames per bucket of [`BUCKETS_S`] (not cumulative), then those above the last.
    buckets: [u64; BUCKETS_S.len() + 1],
    sum_us: u64,
    count: u64,
    /// The newest frame's clock state and offset uncertainty.
    clock: ClockSync,
    offset_err_us: Option<u32>,
    /// The newest frame's JPEG quality, as its sender said.
    quality: Option<u8>,
}

impl Default for LatencyWindow {
    fn default() -> Self {
        LatencyWindow {
            recent: VecDeque::new(),
            buckets: [0; BUCKETS_S.len() + 1],
            sum_us: 0,
            count: 0,
            clock: ClockSync::None,
            offset_err_us: None,
            quality: None,
        }
    }
}

/// Latency as `/state` (`latency_ms`) and the summary show it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LatencyState {
    /// Median and 99th percentile over the window, ms (`null` without a synced frame in it).
    pub p50: Option<f64>,
    pub p99: Option<f64>,
    /// The newest frame's: `synced` (latency measured), `unsynced` (a capture time but no
    /// usable clock offset), `none` (no capture time).
    pub clock: String,
    /// The sender's clock-offset uncertainty for the newest frame, ms.
    pub offset_err_ms: Option<f64>,
    /// Latencies in the window.
    pub frames: usize,
    /// The JPEG quality of the newest frame, as its sender said (for the page's plots;
    /// `/state` shows it beside the source, not here).
    #[serde(skip)]
    pub quality: Option<u8>,
}

/// The histogram as `/metrics` shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct LatencyHistogram {
    /// Cumulative counts for each of [`BUCKETS_S`].
    pub cumulative: [u64; BUCKETS_S.len()],
    pub count: u64,
    pub sum_s: f64,
}

impl LatencyWindow {
    /// Take one delivered frame's timing.
    pub fn record(&mut self, t: &FrameTiming) {
        self.clock = t.clock;
        self.quality = t.quality;
        self.offset_err_us = t.offset_err_us;
        let Some(latency_us) = t.latency_us else {
            return;
        };
        if self.recent.len() >= WINDOW_FRAMES {
            self.recent.pop_front();
        }
        self.recent.push_back((t.arrival_us, latency_us));
        let s = latency_us as f64 / 1e6;
        let i = BUCKETS_S
            .iter()
            .position(|&le| s <= le)
            .unwrap_or(BUCKETS_S.len());
        self.buckets[i] += 1;
        self.sum_us = self.sum_us.saturating_add(latency_us);
        self.count += 1;
    }

    /// The state at `now_us` (the hub's wall clock): percentiles over the latencies of the
    /// last [`WINDOW`].
    pub fn state(&self, now_us: u64) -> LatencyState {
        self.state_since(now_us.saturating_sub(WINDOW.as_micros() as u64))
    }

    /// The state over the last [`WINDOW_FRAMES`] latencies, however old (the exit summary,
    /// where a source that stopped a while ago still has figures).
    pub fn state_of_last_frames(&self) -> LatencyState {
        self.state_since(0)
    }

    fn state_since(&self, since: u64) -> LatencyState {
        let mut v: Vec<u64> = self
            .recent
            .iter()
            .filter(|(at, _)| *at >= since)
            .map(|&(_, l)| l)
            .collect();
        v.sort_unstable();
        let pick = |p: f64| percentile_of_sorted(&v, p).map(|us| us as f64 / 1e3);
        LatencyState {
            p50: pick(50.0),
            p99: pick(99.0),
            clock: self.clock.as_str().to_string(),
            offset_err_ms: self.offset_err_us.map(|e| e as f64 / 1e3),
            frames: v.len(),
            quality: self.quality,
        }
    }

    /// The histogram over every synced frame so far.
    pub fn histogram(&self) -> LatencyHistogram {
        let mut cumulative = [0u64; BUCKETS_S.len()];
        let mut running = 0;
        for (c, n) in cumulative.iter_mut().zip(self.buckets) {
            running += n;
            *c = running;
        }
        LatencyHistogram {
            cumulative,
            count: self.count,
            sum_s: self.sum_us as f64 / 1e6,
        }
    }

    /// Whether any frame was recorded (there is something to show).
    pub fn is_empty(&self) -> bool {
        self.count == 0 && self.clock == ClockSync::None
    }
}

impl LatencyState {
    /// `latency p50 12.0 ms, p99 30.1 ms (synced, offset ±0.2 ms)`, or what is known.
    pub fn line(&self) -> String {
        let err = self
            .offset_err_ms
            .map(|e| format!(", offset ±{e:.1} ms"))
            .unwrap_or_default();
        match (self.p50, self.p99) {
            (Some(p50), Some(p99)) => format!(
                "latency p50 {p50:.1} ms, p99 {p99:.1} ms of {} frames ({}{err})",
                self.frames, self.clock
            ),
            _ => format!("latency unknown (clock {}{err})", self.clock),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn synced(arrival_us: u64, latency_us: u64) -> FrameTiming {
        FrameTiming {
            latency_us: Some(latency_us),
            clock: ClockSync::Synced,
            offset_err_us: Some(150),
            capture_us: Some(arrival_us - latency_us),
            quality: Some(80),
            arrival_us,
        }
    }

    #[test]
    fn percentiles_cover_the_recent_window_and_the_histogram_all_frames() {
        let mut w = LatencyWindow::default();
        assert!(w.is_empty());
        let t0 = 1_000_000_000_000;
        // 100 frames at 1..=100 ms, one every 10 ms
        for i in 1..=100u64 {
            w.record(&synced(t0 + i * 10_000, i * 1000));
        }
        let s = w.state(t0 + 1_000_000);
        // nearest rank, as every percentile of the crate (client::stats::percentile_of_sorted)
        assert_eq!((s.p50, s.p99, s.frames), (Some(50.0), Some(99.0), 100));
        assert_eq!((s.clock.as_str(), s.offset_err_ms), ("synced", Some(0.15)));
        // 20 s later nothing is recent, but the histogram keeps every frame
        let later = w.state(t0 + 21_000_000);
        assert_eq!((later.p50, later.frames), (None, 0));
        let h = w.histogram();
        assert_eq!(h.count, 100);
        // le 0.005: 1..=5 ms; le 0.01: 1..=10 ms; le 0.05: 50; le 0.1 and up: all 100
        assert_eq!(h.cumulative[..5], [5, 10, 25, 50, 100]);
        assert_eq!(h.cumulative[9], 100);
        assert!((h.sum_s - 5.05).abs() < 1e-9, "{}", h.sum_s);
        // a frame without a usable clock changes the state, not the figures
        w.record(&FrameTiming::stamped(t0 + 1_000_000, Some(t0)));
        let s = w.state(t0 + 1_000_000);
        assert_eq!(
            (s.clock.as_str(), s.offset_err_ms, s.frames),
            ("unsynced", None, 100)
        );
        assert_eq!(w.histogram().count, 100);
        assert!(
            s.line().contains("p99 99.0 ms of 100 frames (unsynced)"),
            "{}",
            s.line()
        );
        // the summary's figures: the last frames, however old
        assert_eq!(w.state_of_last_frames().p50, Some(50.0));
    }

    #[test]
    fn the_window_is_bounded() {
        let mut w = LatencyWindow::default();
        for i in 0..(3 * WINDOW_FRAMES as u64) {
            w.record(&synced(1_000_000_000 + i, 2000));
        }
        assert_eq!(w.recent.len(), WINDOW_FRAMES);
    }
}
