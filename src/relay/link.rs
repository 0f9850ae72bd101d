//! The relay's bandwidth limit: one direction of a narrow link (a bottleneck with a queue),
//! socket-free and clock-free so it is tested exactly. Push each datagram with the time it
//! reaches the link; [`Link::poll_timeout`] says when the next one leaves and
//! [`Link::poll_departure`] hands out the ones that have left.
//!
//! The model is "link busy until": the link sends one datagram at a time, and a datagram
//! of `len` bytes takes `(len + DATAGRAM_OVERHEAD) * 8 / rate` to go out. It leaves when that time has passed after it started, which is when it arrived (link
//! idle) or when the one before it left (link busy), so back-to-back datagrams are spaced by
//! exactly their serialization time. Sizes count a fixed [`DATAGRAM_OVERHEAD`] of 28 bytes per
//! datagram (the IPv4 and UDP headers), so a flood of small datagrams is limited as on a real
//! link, not only by its payload.
//!
//! With a burst ([`LinkConfig::burst_bytes`] above 0) it is a token bucket instead, as the
//! kernel's `tbf` is: tokens (bytes) accrue at the rate up to the burst, and a datagram
//! leaves as soon as the tokens cover it (at once while the bucket holds enough, so a frame
//! smaller than the burst crosses an idle link with no serialization delay), taking them.
//!
//! The datagrams waiting for the link (not the one being sent) are the queue, counted in the
//! same bytes; one that would take the queue above its limit is dropped at the tail and
//! counted in [`LinkCounts::queue_drops`], apart from the random loss of the fault stages.

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

/// Bytes counted per datagram on top of its payload: an IPv4 header (20) and a UDP header (8).
pub const DATAGRAM_OVERHEAD: usize = 28;

/// The smallest queue accepted: one full Ethernet-sized datagram.
pub const MIN_QUEUE_BYTES: usize = 1500;

/// The queue when none is given: 64 KiB.
pub const DEFAULT_QUEUE_BYTES: usize = 64 * 1024;

/// A narrow link in one direction.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinkConfig {
    /// The link's rate, in Mbit/s (10^6 bits a second); > 0 and finite.
    pub rate_mbit: f64,
    /// The most bytes (each datagram counted with [`DATAGRAM_OVERHEAD`]) waiting for the link;
    /// at least [`MIN_QUEUE_BYTES`].
    pub queue_bytes: usize,
    /// A token bucket's depth in bytes (0: none, every datagram takes its serialization
    /// time); at least [`MIN_QUEUE_BYTES`] when set, as `tbf` needs a burst of one MTU.
    pub burst_bytes: usize,
}

impl LinkConfig {
    /// A link of `rate_mbit` with the [`DEFAULT_QUEUE_BYTES`] queue.
    pub fn new(rate_mbit: f64) -> Self {
        LinkConfig {
            rate_mbit,
            queue_bytes: DEFAULT_QUEUE_BYTES,
            burst_bytes: 0,
        }
    }

    /// Check that the rate is positive and finite and the queue holds one full datagram.
    pub fn validate(&self) -> Result<(), LinkConfigError> {
        if !(self.rate_mbit.is_finite() && self.rate_mbit > 0.0) {
            return Err(LinkConfigError::Rate(self.rate_mbit));
        }
        if self.queue_bytes < MIN_QUEUE_BYTES {
            return Err(LinkConfigError::Queue(self.queue_bytes));
        }
        if self.burst_bytes != 0 && self.burst_bytes < MIN_QUEUE_BYTES {
            return Err(LinkConfigError::Burst(self.burst_bytes));
        }
        Ok(())
    }

    /// How long a datagram of `len` payload bytes (plus the overhead) takes to go out.
    pub fn serialization_time(&self, len: usize) -> Duration {
        let bits = ((len + DATAGRAM_OVERHEAD) * 8) as f64;
        // Mbit/s is bits per microsecond: bits / rate is microseconds, * 1000 nanoseconds.
        Duration::from_nanos((bits * 1000.0 / self.rate_mbit).round() as u64)
    }
}

impl fmt::Display for LinkConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "rate {} Mbit/s, queue {} bytes",
            self.rate_mbit, self.queue_bytes
        )?;
        if self.burst_bytes > 0 {
            write!(f, ", burst {} bytes", self.burst_bytes)?;
        }
        Ok(())
    }
}

/// Why a [`LinkConfig`] was refused.
#[derive(Clone, Debug, PartialEq)]
pub enum LinkConfigError {
    /// A rate that is not a positive, finite number of Mbit/s.
    Rate(f64),
    /// A queue smaller than [`MIN_QUEUE_BYTES`].
    Queue(usize),
    /// A burst above 0 but smaller than [`MIN_QUEUE_BYTES`].
    Burst(usize),
}

impl fmt::Display for LinkConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkConfigError::Rate(r) => {
                write!(f, "the rate must be a positive number of Mbit/s, got {r}")
            }
            LinkConfigError::Queue(q) => write!(
                f,
                "the queue must hold at least {MIN_QUEUE_BYTES} bytes, got {q}"
            ),
            LinkConfigError::Burst(b) => write!(
                f,
                "the burst must be 0 (none) or at least {MIN_QUEUE_BYTES} bytes, got {b}"
            ),
        }
    }
}

impl std::error::Error for LinkConfigError {}

/// What the link did so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkCounts {
    /// Datagrams pushed in.
    pub received: u64,
    /// Datagrams dropped because the queue was full.
    pub queue_drops: u64,
}

/// One direction of a narrow link (see the module documentation).
pub struct Link<T> {
    config: LinkConfig,
    /// The datagram being sent and when it has left.
    sending: Option<(T, Instant)>,
    /// Datagrams waiting for the link, with their size including the overhead.
    waiting: VecDeque<(T, usize)>,
    waiting_bytes: usize,
    /// Datagrams that have left, with the time they left, not yet handed out.
    departed: VecDeque<(T, Instant)>,
    counts: LinkCounts,
    /// With a burst: the bucket's bytes at `tokens_at` (`None`: full, nothing sent yet).
    tokens: f64,
    tokens_at: Option<Instant>,
}

impl<T> Link<T> {
    pub fn new(config: LinkConfig) -> Result<Self, LinkConfigError> {
        config.validate()?;
        Ok(Link {
            config,
            sending: None,
            waiting: VecDeque::new(),
            waiting_bytes: 0,
            departed: VecDeque::new(),
            counts: LinkCounts::default(),
            tokens: 0.0,
            tokens_at: None,
        })
    }

    pub fn config(&self) -> &LinkConfig {
        &self.config
    }

    pub fn counts(&self) -> LinkCounts {
        self.counts
    }

    /// Bytes (with the overhead) waiting for the link now.
    pub fn queued_bytes(&self) -> usize {
        self.waiting_bytes
    }

    /// `datagram`, of `len` payload bytes, reaches the link at `now`. It is queued, or
    /// handed back (`Err`) if it would overflow the queue (a tail drop, counted).
    pub fn push(&mut self, datagram: T, len: usize, now: Instant) -> Result<(), T> {
        self.advance(now);
        self.counts.received += 1;
        if self.sending.is_none() {
            let leaves = self.departure(now, len);
            self.sending = Some((datagram, leaves));
            return Ok(());
        }
        let size = len + DATAGRAM_OVERHEAD;
        if self.waiting_bytes + size > self.config.queue_bytes {
            self.counts.queue_drops += 1;
            return Err(datagram);
        }
        self.waiting_bytes += size;
        self.waiting.push_back((datagram, size));
        Ok(())
    }

    /// When the next datagram leaves (now or in the past if one is ready to be handed out);
    /// `None` when the link is empty.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.departed
            .front()
            .map(|d| d.1)
            .or(self.sending.as_ref().map(|s| s.1))
    }

    /// The next datagram that has left the link by `now`, in the order they left.
    pub fn poll_departure(&mut self, now: Instant) -> Option<T> {
        self.advance(now);
        self.departed.pop_front().map(|d| d.0)
    }

    /// Every datagram still on the link or in its queue, in order, at once (when stopping).
    pub fn drain(&mut self) -> impl Iterator<Item = T> + '_ {
        self.waiting_bytes = 0;
        let departed = self.departed.drain(..).map(|d| d.0);
        let sending = self.sending.take().map(|s| s.0);
        departed
            .chain(sending)
            .chain(self.waiting.drain(..).map(|w| w.0))
    }

    /// Move what has left by `now` to `departed`, starting each waiting datagram when the
    /// one before it left.
    fn advance(&mut self, now: Instant) {
        while let Some((_, leaves)) = self.sending {
            if leaves > now {
                break;
            }
            if let Some((datagram, _)) = self.sending.take() {
                self.departed.push_back((datagram, leaves));
            }
            if let Some((datagram, size)) = self.waiting.pop_front() {
                self.waiting_bytes -= size;
                let leaves = self.departure(leaves, size - DATAGRAM_OVERHEAD);
                self.sending = Some((datagram, leaves));
            }
        }
    }

    /// When a datagram of `len` payload bytes that starts through the link at `start`
    /// has left: its serialization time later, or with a burst when the bucket covers it.
    fn departure(&mut self, start: Instant, len: usize) -> Instant {
        let burst = self.config.burst_bytes as f64;
        if burst == 0.0 {
            return start + self.config.serialization_time(len);
        }
        let bytes_per_s = self.config.rate_mbit * 1e6 / 8.0;
        let size = (len + DATAGRAM_OVERHEAD) as f64;
        let tokens = match self.tokens_at {
            None => burst,
            Some(at) => {
                let accrued = start.saturating_duration_since(at).as_secs_f64() * bytes_per_s;
                (self.tokens + accrued).min(burst)
            }
        };
        let wait = ((size.min(burst) - tokens).max(0.0)) / bytes_per_s;
        let leaves = start + Duration::from_secs_f64(wait);
        // what the bucket holds once it has paid for the datagram (a datagram larger than
        // the burst leaves a debt, paid at the rate before the next one can go)
        self.tokens = tokens + wait * bytes_per_s - size;
        self.tokens_at = Some(leaves);
        leaves
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const US: Duration = Duration::from_micros(1);

    fn link(rate_mbit: f64, queue_bytes: usize) -> Link<u32> {
        Link::new(LinkConfig {
            rate_mbit,
            queue_bytes,
            burst_bytes: 0,
        })
        .unwrap()
    }

    /// 8 Mbit/s (1 byte a microsecond) with a 32 KiB bucket, as `tbf rate 8mbit burst 32kb`:
    /// a full bucket lets 30 datagrams of 1000 bytes (1028 with the headers: 30,840) leave
    /// at once; the next waits for the tokens it lacks, and from then on the link's rate
    /// spaces them; after a pause the bucket refills at the rate.
    #[test]
    fn a_burst_crosses_an_idle_link_at_once_then_the_rate_spaces_the_rest() {
        let t0 = Instant::now();
        let mut l = Link::new(LinkConfig {
            rate_mbit: 8.0,
            queue_bytes: 1 << 20,
            burst_bytes: 32 * 1024,
        })
        .unwrap();
        for i in 0..40 {
            l.push(i, 1000, t0).unwrap();
        }
        // (departures() looks a nanosecond before each time: not for datagrams that leave
        // together)
        let mut out = Vec::new();
        while let Some(t) = l.poll_timeout() {
            let d = l.poll_departure(t).expect("due at its poll_timeout");
            out.push((d, t));
        }
        assert_eq!(out.len(), 40);
        assert!(out.iter().map(|d| d.0).eq(0..40), "in order");
        assert!(out[..31].iter().all(|&(_, t)| t == t0), "{:?}", &out[..32]);
        // 31 x 1028 = 31,868 <= 32,768; the 32nd lacks 1028 - 900 = 128 bytes: 128 us
        assert_eq!(out[31].1, t0 + 128 * US);
        for w in out[31..].windows(2) {
            assert_eq!(w[1].1 - w[0].1, 1028 * US);
        }
        // a second later the bucket is full again: the next datagram leaves at once
        let later = t0 + Duration::from_secs(2);
        l.push(99, 1000, later).unwrap();
        assert_eq!(l.poll_timeout(), Some(later));
        // and a burst below 1500 bytes is refused, as tbf refuses one under an MTU
        let bad = LinkConfig {
            burst_bytes: 1000,
            ..LinkConfig::new(8.0)
        };
        assert_eq!(bad.validate(), Err(LinkConfigError::Burst(1000)));
    }

    /// Every departure by `until`, stepping the clock to each `poll_timeout`, with the time
    /// it was handed out.
    fn departures(l: &mut Link<u32>, until: Instant) -> Vec<(u32, Instant)> {
        let mut out = Vec::new();
        for _ in 0..100_000 {
            let Some(t) = l.poll_timeout().filter(|&t| t <= until) else {
                break;
            };
            assert_eq!(l.poll_departure(t - Duration::from_nanos(1)), None);
            let d = l.poll_departure(t).expect("due at its poll_timeout");
            out.push((d, t));
        }
        out
    }

    #[test]
    fn a_1000_byte_datagram_at_8_mbit_leaves_1028_us_after_it_arrives_on_an_idle_link() {
        let t0 = Instant::now();
        let mut l = link(8.0, DEFAULT_QUEUE_BYTES);
        assert_eq!(l.config().serialization_time(1000), 1028 * US);
        assert_eq!(l.poll_timeout(), None);
        l.push(7, 1000, t0).unwrap();
        assert_eq!(l.poll_timeout(), Some(t0 + 1028 * US));
        assert_eq!(l.poll_departure(t0 + 1027 * US), None);
        assert_eq!(l.poll_departure(t0 + 1028 * US), Some(7));
        assert_eq!(l.poll_timeout(), None);
        assert_eq!(l.counts().queue_drops, 0);
    }

    #[test]
    fn back_to_back_datagrams_are_spaced_by_their_serialization_time() {
        let t0 = Instant::now();
        let mut l = link(8.0, DEFAULT_QUEUE_BYTES);
        // 1000 + 28 bytes: 1028 us; 472 + 28: 500 us; 100 + 28: 128 us at 8 Mbit/s.
        l.push(0, 1000, t0).unwrap();
        l.push(1, 472, t0).unwrap();
        l.push(2, 100, t0 + 10 * US).unwrap();
        assert_eq!(l.queued_bytes(), 500 + 128);
        let got = departures(&mut l, t0 + Duration::from_secs(1));
        assert_eq!(
            got,
            [
                (0, t0 + 1028 * US),
                (1, t0 + 1528 * US),
                (2, t0 + 1656 * US)
            ]
        );
        // Idle again: the next one starts when it arrives, not when the last one left.
        l.push(3, 1000, t0 + 5000 * US).unwrap();
        assert_eq!(l.poll_timeout(), Some(t0 + 6028 * US));
    }

    #[test]
    fn a_departure_handed_out_late_still_started_the_next_on_time() {
        let t0 = Instant::now();
        let mut l = link(8.0, DEFAULT_QUEUE_BYTES);
        for i in 0..3 {
            l.push(i, 1000, t0).unwrap();
        }
        // Nobody looked until much later: all three have left, at their own times.
        assert_eq!(l.poll_departure(t0 + 10_000 * US), Some(0));
        assert_eq!(l.poll_timeout(), Some(t0 + 2056 * US));
        assert_eq!(l.poll_departure(t0 + 10_000 * US), Some(1));
        assert_eq!(l.poll_departure(t0 + 10_000 * US), Some(2));
        assert_eq!(l.poll_departure(t0 + 10_000 * US), None);
    }

    #[test]
    fn a_burst_beyond_the_queue_is_tail_dropped_with_the_exact_count() {
        let t0 = Instant::now();
        // 1028 bytes each: one on the link, then 4 fit in 4200 bytes (4112), the 5th does not.
        let mut l = link(8.0, 4200);
        let mut dropped = Vec::new();
        for i in 0..10 {
            if let Err(d) = l.push(i, 1000, t0) {
                dropped.push(d);
            }
        }
        assert_eq!(dropped, [5, 6, 7, 8, 9], "the tail is dropped");
        assert_eq!(
            l.counts(),
            LinkCounts {
                received: 10,
                queue_drops: 5
            }
        );
        assert_eq!(l.queued_bytes(), 4 * 1028);
        // Once the first has left there is room for one more.
        assert_eq!(l.poll_departure(t0 + 1028 * US), Some(0));
        l.push(10, 1000, t0 + 1028 * US).unwrap();
        assert!(l.push(11, 1000, t0 + 1028 * US).is_err());
        assert_eq!(l.counts().queue_drops, 6);
        let ids: Vec<u32> = departures(&mut l, t0 + Duration::from_secs(1))
            .into_iter()
            .map(|d| d.0)
            .collect();
        assert_eq!(ids, [1, 2, 3, 4, 10]);
    }

    #[test]
    fn poll_timeout_is_the_next_departure() {
        let t0 = Instant::now();
        let mut l = link(1.0, DEFAULT_QUEUE_BYTES);
        // At 1 Mbit/s: 1028 bytes take 8224 us, 72 + 28 bytes take 800 us.
        l.push(0, 1000, t0).unwrap();
        l.push(1, 72, t0).unwrap();
        assert_eq!(l.poll_timeout(), Some(t0 + 8224 * US));
        assert_eq!(l.poll_departure(t0 + 8224 * US), Some(0));
        assert_eq!(l.poll_timeout(), Some(t0 + 9024 * US));
        assert_eq!(l.poll_departure(t0 + 9024 * US), Some(1));
        assert_eq!(l.poll_timeout(), None);
    }

    #[test]
    fn the_two_directions_are_independent_links() {
        let t0 = Instant::now();
        let (mut up, mut down) = (link(8.0, 2100), link(2.0, DEFAULT_QUEUE_BYTES));
        for i in 0..4 {
            let _ = up.push(i, 1000, t0);
        }
        down.push(100, 1000, t0).unwrap();
        // The full queue one way drops nothing the other way, and each keeps its own rate.
        assert_eq!(up.counts().queue_drops, 1);
        assert_eq!(down.counts().queue_drops, 0);
        assert_eq!(up.poll_timeout(), Some(t0 + 1028 * US));
        assert_eq!(down.poll_timeout(), Some(t0 + 4112 * US));
        let up_times: Vec<Instant> = departures(&mut up, t0 + Duration::from_secs(1))
            .into_iter()
            .map(|d| d.1)
            .collect();
        assert_eq!(
            up_times,
            [t0 + 1028 * US, t0 + 2056 * US, t0 + 3084 * US],
            "8 Mbit/s while the other way is busy for 4112 us"
        );
        assert_eq!(down.poll_departure(t0 + 4112 * US), Some(100));
    }

    #[test]
    fn drain_hands_out_everything_in_order() {
        let t0 = Instant::now();
        let mut l = link(8.0, DEFAULT_QUEUE_BYTES);
        for i in 0..5 {
            l.push(i, 1000, t0).unwrap();
        }
        assert_eq!(l.poll_departure(t0 + 2056 * US), Some(0));
        assert_eq!(l.drain().collect::<Vec<_>>(), [1, 2, 3, 4]);
        assert_eq!(l.poll_timeout(), None);
        assert_eq!(l.queued_bytes(), 0);
    }

    #[test]
    fn invalid_links_are_refused_with_a_clear_reason() {
        for rate in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let err = LinkConfig::new(rate).validate().unwrap_err();
            assert!(matches!(err, LinkConfigError::Rate(_)), "{rate}: {err:?}");
            assert!(err.to_string().contains("rate"), "{err}");
        }
        let small = LinkConfig {
            queue_bytes: 1499,
            ..LinkConfig::new(8.0)
        };
        let err = small.validate().unwrap_err();
        assert!(err.to_string().contains("at least 1500 bytes"), "{err}");
        assert!(LinkConfig {
            queue_bytes: 1500,
            ..small
        }
        .validate()
        .is_ok());
    }
}
