//! How many parity shards a framed sender puts after a frame's data chunks (issue 13,
//! [`crate::wire::framed`]'s forward error correction): `--fec off`, a fixed share
//! (`--fec N`, N parity chunks per 100 data chunks) or `--fec auto`, from the datagram loss
//! the sender has seen. No socket, no clock: times are passed in.
//!
//! # The loss estimate
//!
//! [`LossEstimator`] keeps, per finished frame, the data chunks sent for it (first sending
//! and resends) and those the hub said were lost: the chunks its nacks listed (each nack
//! the sender acted on) plus the data chunks the hub rebuilt from parity (the ack's
//! `rebuilt` field: the loss that parity hid, without which a working FEC would see no loss
//! and switch itself off). The estimate is lost over sent over the last [`WINDOW_FRAMES`]
//! frames no older than [`WINDOW`]: 2 s at 20 fps with 22 chunks a frame is some 880
//! chunks, enough to tell 1% from 5%, and short enough to follow a link that changes.
//!
//! # The parity for a loss rate
//!
//! With `k` data chunks and independent loss `p`, the chunks lost are about binomial, mean
//! `k p`, deviation `sqrt(k p (1 - p))`; [`auto_parity`] takes the mean plus two deviations,
//! rounded up, plus one (a frame is rebuilt without a round trip about 98% of the time even
//! when the parity shards are lost at the same rate), capped at `k / 2` (at least 1):
//! `m = ceil(k p + 2 sqrt(k p (1 - p))) + 1`, and 0 when no loss was seen. For the study's
//! 30 kB frames (`k = 22`, `examples/fec_study.rs`): 2% gives 3 (the study: 20.0 fps, p99
//! 56 ms, against 15.1 fps and 104 ms with nacks only, for 14% more bytes), 5% gives 5
//! (20.0 fps, p99 58 ms against 14.0 and 107), 10% gives 7 (m = 5 already gave 19.0 fps
//! and 59 ms against 11.4 and 224).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The estimate looks this far back at most.
pub const WINDOW: Duration = Duration::from_secs(2);
/// The estimate covers this many frames at most.
pub const WINDOW_FRAMES: usize = 100;

/// `--fec`: how the parity count is chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FecMode {
    /// No parity.
    Off,
    /// From the loss seen ([`auto_parity`]).
    Auto,
    /// `N` parity chunks per 100 data chunks, rounded up (1..=255 shards).
    Percent(u16),
}

impl FecMode {
    /// The parity shards for a frame of `k` data chunks when the loss estimate is `loss`.
    pub fn parity(self, k: usize, loss: f64) -> u8 {
        match self {
            FecMode::Off | FecMode::Percent(0) => 0,
            FecMode::Auto => auto_parity(k, loss),
            FecMode::Percent(n) => (k * n as usize).div_ceil(100).clamp(1, 255) as u8,
        }
    }
}

impl std::str::FromStr for FecMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(FecMode::Auto),
            "off" => Ok(FecMode::Off),
            n => match n.parse::<u16>() {
                Ok(0) => Ok(FecMode::Off),
                Ok(n) if n <= 100 => Ok(FecMode::Percent(n)),
                _ => Err(format!(
                    "--fec: auto, off or a percent of the data chunks (0..=100), not {s:?}"
                )),
            },
        }
    }
}

/// `ceil(k p + 2 sqrt(k p (1 - p))) + 1` parity shards, at most `k / 2` (at least 1) and
/// 255; 0 when `loss` is 0 (see the module documentation).
pub fn auto_parity(k: usize, loss: f64) -> u8 {
    if loss.is_nan() || loss <= 0.0 || k == 0 {
        return 0;
    }
    let p = loss.min(1.0);
    let mean = k as f64 * p;
    let m = (mean + 2.0 * (mean * (1.0 - p)).sqrt()).ceil() as usize + 1;
    m.min((k / 2).max(1)).min(255) as u8
}

/// The datagram loss rate from what the hub said about finished frames (see the module
/// documentation).
#[derive(Clone, Debug, Default)]
pub struct LossEstimator {
    /// (when the frame finished, data chunks sent, data chunks lost), oldest first.
    frames: VecDeque<(Instant, u32, u32)>,
}

impl LossEstimator {
    /// A frame finished at `now`: `sent` data chunks sent for it, `lost` of them lost.
    pub fn record(&mut self, sent: u32, lost: u32, now: Instant) {
        self.frames.push_back((now, sent, lost.min(sent)));
        while self.frames.len() > WINDOW_FRAMES {
            self.frames.pop_front();
        }
        self.expire(now);
    }

    fn expire(&mut self, now: Instant) {
        while self
            .frames
            .front()
            .is_some_and(|(at, ..)| now.saturating_duration_since(*at) > WINDOW)
        {
            self.frames.pop_front();
        }
    }

    /// Lost over sent in the window at `now` (0 with nothing in it).
    pub fn loss(&self, now: Instant) -> f64 {
        let (sent, lost) = self
            .frames
            .iter()
            .filter(|(at, ..)| now.saturating_duration_since(*at) <= WINDOW)
            .fold((0u64, 0u64), |(s, l), f| {
                (s + u64::from(f.1), l + u64::from(f.2))
            });
        if sent == 0 {
            0.0
        } else {
            lost as f64 / sent as f64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule_gives_the_studys_parity_and_none_without_loss() {
        assert_eq!(auto_parity(22, 0.0), 0);
        assert_eq!(auto_parity(22, 0.02), 3);
        assert_eq!(auto_parity(22, 0.05), 5);
        assert_eq!(auto_parity(22, 0.10), 7);
        // capped at k / 2, at least 1, at most 255
        assert_eq!(auto_parity(22, 0.5), 11);
        assert_eq!(auto_parity(1, 0.3), 1);
        assert_eq!(auto_parity(2000, 0.3), 255);
        assert_eq!(auto_parity(22, f64::NAN), 0);
    }

    #[test]
    fn modes_and_their_flag() {
        assert_eq!("auto".parse(), Ok(FecMode::Auto));
        assert_eq!("off".parse(), Ok(FecMode::Off));
        assert_eq!("0".parse(), Ok(FecMode::Off));
        assert_eq!("15".parse(), Ok(FecMode::Percent(15)));
        assert!("101".parse::<FecMode>().is_err());
        assert!("x".parse::<FecMode>().is_err());
        assert_eq!(FecMode::Off.parity(22, 0.5), 0);
        assert_eq!(FecMode::Percent(15).parity(22, 0.0), 4, "22 * 15% = 3.3: 4");
        assert_eq!(FecMode::Percent(1).parity(22, 0.0), 1);
        assert_eq!(FecMode::Percent(100).parity(1000, 0.0), 255);
        assert_eq!(FecMode::Auto.parity(22, 0.05), 5);
    }

    #[test]
    fn the_estimate_is_lost_over_sent_in_the_window() {
        let t0 = Instant::now();
        let mut e = LossEstimator::default();
        assert_eq!(e.loss(t0), 0.0);
        for i in 0..10 {
            // 22 chunks a frame, one lost every other frame: 5 / 220
            e.record(22, (i % 2) as u32, t0 + Duration::from_millis(50 * i));
        }
        let now = t0 + Duration::from_millis(450);
        assert!((e.loss(now) - 5.0 / 220.0).abs() < 1e-9);
        // resends count as sent; lost never above sent
        e.record(4, 9, now);
        assert!((e.loss(now) - 9.0 / 224.0).abs() < 1e-9);
    }

    #[test]
    fn old_frames_leave_the_window_and_the_loss_goes_to_zero() {
        let t0 = Instant::now();
        let mut e = LossEstimator::default();
        e.record(22, 11, t0);
        assert!((e.loss(t0 + WINDOW) - 0.5).abs() < 1e-9);
        assert_eq!(e.loss(t0 + WINDOW + Duration::from_millis(1)), 0.0);
        // a clean frame after the window: no loss, no parity
        let later = t0 + WINDOW * 2;
        e.record(22, 0, later);
        assert_eq!(e.loss(later), 0.0);
        assert_eq!(FecMode::Auto.parity(22, e.loss(later)), 0);
    }

    #[test]
    fn at_most_the_last_100_frames_count() {
        let t0 = Instant::now();
        let mut e = LossEstimator::default();
        e.record(10, 10, t0);
        for _ in 0..WINDOW_FRAMES {
            e.record(10, 0, t0);
        }
        assert_eq!(e.loss(t0), 0.0, "the lossy frame is the 101st back");
    }
}
