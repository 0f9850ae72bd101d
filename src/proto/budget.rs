//! A byte budget over time: one token bucket type, and the fair per-source sharing of one
//! rate built on it.
//!
//! Why: the hub must not let one peer take a resource every peer needs (the message log
//! above all: a sender of 65,000-byte JSON datagrams could otherwise fill the disk at
//! hundreds of MB/s and crowd out everyone else). [`TokenBucket`] is the classic rule:
//! it refills at `rate` bytes per second up to `burst`, and a cost is paid only if the
//! tokens are there. [`SharedBudget`] gives every active source a bucket whose refill is an
//! equal share of one total rate, so a flooder is held to its share while others keep
//! theirs.
//!
//! Like everything in [`crate::proto`], no socket and no clock: the time is passed in.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// Tokens (bytes) that refill at `rate_per_s` up to `burst`. Starts full.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    tokens: f64,
    burst: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket holding `burst` bytes, as of `now`.
    pub fn new(burst: u64, now: Instant) -> Self {
        TokenBucket {
            tokens: burst as f64,
            burst: burst as f64,
            last: now,
        }
    }

    /// Add what `rate_per_s` gave since the last call (time never runs backwards here: an
    /// earlier `now` adds nothing).
    pub fn refill(&mut self, rate_per_s: u64, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = self.last.max(now);
        self.tokens = (self.tokens + elapsed * rate_per_s as f64).min(self.burst);
    }

    /// Pay `cost` bytes if the bucket holds them (after refilling at `rate_per_s`);
    /// `false` leaves the bucket as it was.
    pub fn try_take(&mut self, cost: u64, rate_per_s: u64, now: Instant) -> bool {
        self.refill(rate_per_s, now);
        if self.tokens >= cost as f64 {
            self.tokens -= cost as f64;
            true
        } else {
            false
        }
    }

    /// Whether the bucket is full (as of its last refill): its source has used nothing it
    /// has not got back, so forgetting it changes nothing.
    pub fn is_full(&self) -> bool {
        self.tokens >= self.burst
    }
}

/// How many sources [`SharedBudget`] tracks one by one; past it (after forgetting idle
/// ones), new sources share one bucket, so thousands of new sources cost bounded memory and
/// together get one share.
pub const MAX_TRACKED_SOURCES: usize = 4096;

/// One total rate shared equally by the sources that use it: each active source has a
/// bucket of `burst` bytes refilled at `rate_per_s / active sources`. A source whose bucket
/// is full again is forgotten (it costs nothing to recreate it full).
#[derive(Debug)]
pub struct SharedBudget<K> {
    rate_per_s: u64,
    burst: u64,
    buckets: HashMap<K, TokenBucket>,
    /// The bucket the sources past [`MAX_TRACKED_SOURCES`] share.
    overflow: Option<TokenBucket>,
    next_prune: Option<Instant>,
}

/// How often full buckets are forgotten.
const PRUNE_EVERY: Duration = Duration::from_secs(1);

impl<K: Hash + Eq + Clone> SharedBudget<K> {
    /// `rate_per_s` bytes per second shared by all sources; each may spend up to `burst`
    /// at once.
    pub fn new(rate_per_s: u64, burst: u64) -> Self {
        SharedBudget {
            rate_per_s,
            burst,
            buckets: HashMap::new(),
            overflow: None,
            next_prune: None,
        }
    }

    /// Charge `cost` bytes to `source` at `now`: `true` if it was within the source's share.
    pub fn try_take(&mut self, source: &K, cost: u64, now: Instant) -> bool {
        if self.next_prune.is_none_or(|t| now >= t) {
            self.prune(now);
        }
        let active = (self.buckets.len() + usize::from(self.overflow.is_some())).max(1);
        let share = self.rate_per_s / active as u64;
        if let Some(bucket) = self.buckets.get_mut(source) {
            return bucket.try_take(cost, share, now);
        }
        let burst = self.burst;
        let bucket = if self.buckets.len() < MAX_TRACKED_SOURCES {
            self.buckets
                .entry(source.clone())
                .or_insert_with(|| TokenBucket::new(burst, now))
        } else {
            self.overflow
                .get_or_insert_with(|| TokenBucket::new(burst, now))
        };
        bucket.try_take(cost, share, now)
    }

    /// Sources tracked one by one now (for tests and statistics).
    pub fn tracked_sources(&self) -> usize {
        self.buckets.len()
    }

    /// Forget the sources idle for [`PRUNE_EVERY`] whose buckets have refilled.
    fn prune(&mut self, now: Instant) {
        self.next_prune = Some(now + PRUNE_EVERY);
        let active = (self.buckets.len() + usize::from(self.overflow.is_some())).max(1);
        let share = self.rate_per_s / active as u64;
        let mut forget = |b: &mut TokenBucket| {
            let idle = now.saturating_duration_since(b.last) >= PRUNE_EVERY;
            b.refill(share, now);
            idle && b.is_full()
        };
        self.buckets.retain(|_, b| !forget(b));
        if self.overflow.as_mut().is_some_and(&mut forget) {
            self.overflow = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_bucket_spends_its_burst_then_refills_at_its_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1000, t0);
        assert!(b.try_take(600, 1000, t0));
        assert!(!b.try_take(600, 1000, t0), "only 400 left");
        assert!(b.try_take(400, 1000, t0));
        assert!(!b.try_take(1, 1000, t0));
        // 1000 bytes/s: 100 ms later 100 bytes are back, not 101
        assert!(!b.try_take(101, 1000, t0 + 100 * MS));
        assert!(b.try_take(100, 1000, t0 + 100 * MS));
        // never more than the burst, however long it waits
        assert!(!b.try_take(1001, 1000, t0 + Duration::from_secs(3600)));
        assert!(b.try_take(1000, 1000, t0 + Duration::from_secs(3600)));
    }

    #[test]
    fn time_running_backwards_adds_nothing() {
        let t0 = Instant::now() + Duration::from_secs(10);
        let mut b = TokenBucket::new(100, t0);
        assert!(b.try_take(100, 1000, t0));
        assert!(!b.try_take(1, 1000, t0 - Duration::from_secs(5)));
        assert!(!b.try_take(1, 1000, t0));
    }

    #[test]
    fn a_flooder_is_held_to_its_share_while_a_quiet_source_keeps_its_own() {
        // 1 MB/s shared, 100 kB bursts; the flooder offers 65,000 bytes every ms (65 MB/s),
        // the quiet source 200 bytes every 10 ms, for 2 simulated seconds
        let t0 = Instant::now();
        let mut budget = SharedBudget::new(1_000_000, 100_000);
        let (mut flood_ok, mut quiet_ok, mut quiet_sent) = (0u64, 0u64, 0u64);
        for ms in 0..2000u32 {
            let now = t0 + ms * MS;
            if budget.try_take(&"flooder", 65_000, now) {
                flood_ok += 65_000;
            }
            if ms % 10 == 0 {
                quiet_sent += 1;
                if budget.try_take(&"quiet", 200, now) {
                    quiet_ok += 1;
                }
            }
        }
        assert_eq!(quiet_ok, quiet_sent, "every quiet message within budget");
        // its share is half of 1 MB/s (two active sources) plus one burst
        assert!(
            flood_ok <= 2 * 500_000 + 100_000,
            "flooder got {flood_ok} bytes"
        );
        assert!(
            flood_ok >= 500_000,
            "flooder still gets its share: {flood_ok}"
        );
    }

    #[test]
    fn idle_sources_are_forgotten_and_many_new_ones_share_one_bucket() {
        let t0 = Instant::now();
        let mut budget = SharedBudget::new(1_000_000, 1000);
        for i in 0..MAX_TRACKED_SOURCES + 100 {
            budget.try_take(&i, 10, t0);
        }
        assert_eq!(budget.tracked_sources(), MAX_TRACKED_SOURCES);
        // the extra 100 shared the overflow bucket: 1000 bytes in all at once
        let extra: usize = (0..200)
            .filter(|j| budget.try_take(&(MAX_TRACKED_SOURCES + 1000 + j), 10, t0))
            .count();
        assert!(extra < 100, "{extra} new sources got their own budget");
        // long enough later every bucket has refilled and is forgotten
        let later = t0 + Duration::from_secs(3600);
        assert!(budget.try_take(&0usize, 10, later));
        assert_eq!(budget.tracked_sources(), 1);
    }
}
