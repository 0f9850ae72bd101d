//! The fault decisions of the relay, kept apart from sockets and clocks so they can be
//! tested exactly: feed [`FaultInjector::feed`] a datagram and the time, and it says which
//! copies to send now and which to send later.
//!
//! Each datagram goes through four stages, in this order, with one seeded generator per
//! direction (so the same seed and the same sequence of datagrams give the same decisions):
//!
//! 1. **loss**: with probability `loss` it is dropped;
//! 2. **duplicate**: with probability `duplicate` it becomes two copies;
//! 3. **reorder**: with probability `reorder` (and only if no datagram is already held) it
//!    is held back and released right after the next datagram of the same direction that
//!    survives the loss stage, so the two swap places. A held datagram is never held for
//!    ever: [`FaultInjector::on_timer`] releases it after `max(delay + jitter, 5 ms)`.
//! 4. **delay**: every copy is scheduled `delay + U[0, jitter]` after it leaves stage 3
//!    (jitter is drawn per copy, so jitter alone can reorder too, as on a real link).
//!
//! With `delay` and `jitter` both zero every emitted copy is for "now" (`at == None`).
//!
//! A bandwidth limit ([`FaultConfig::link`]) comes after all four: the relay's engine feeds
//! each copy to a [`super::link::Link`] when its delay has passed. The injector only
//! carries and validates that setting.

use super::link::{LinkConfig, LinkConfigError};
use super::rng::SplitMix64;
use std::fmt;
use std::io;
use std::time::{Duration, Instant};

/// The longest a datagram may be held back for reordering when `delay + jitter` is shorter.
pub const MIN_HOLD: Duration = Duration::from_millis(5);

/// The largest `delay + jitter` accepted (larger values are almost surely a unit mistake,
/// and would only fill memory with queued datagrams).
pub const MAX_DELAY: Duration = Duration::from_secs(60);

/// What one direction of the relay does to its datagrams. The default injects no faults.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct FaultConfig {
    /// Probability (0..=1) that a datagram is dropped.
    pub loss: f64,
    /// Probability (0..=1) that a datagram that was not dropped is sent twice.
    pub duplicate: f64,
    /// Probability (0..=1) that a datagram is held back and sent after the next one.
    pub reorder: f64,
    /// Fixed delay added to every datagram.
    pub delay: Duration,
    /// Extra delay drawn uniformly from `0..=jitter` for every copy.
    pub jitter: Duration,
    /// Seed of the generator; the same seed gives the same decisions.
    pub seed: u64,
    /// A narrow link after the four stages (its rate and queue); `None`: no limit.
    pub link: Option<LinkConfig>,
}

impl FaultConfig {
    /// Check that the probabilities are within 0..=1 and the delay is sane.
    pub fn validate(&self) -> Result<(), FaultConfigError> {
        for (name, value) in [
            ("loss", self.loss),
            ("duplicate", self.duplicate),
            ("reorder", self.reorder),
        ] {
            if !(0.0..=1.0).contains(&value) {
                return Err(FaultConfigError::Probability { name, value });
            }
        }
        if self.delay.saturating_add(self.jitter) > MAX_DELAY {
            return Err(FaultConfigError::Delay {
                delay: self.delay,
                jitter: self.jitter,
            });
        }
        if let Some(link) = &self.link {
            link.validate().map_err(FaultConfigError::Link)?;
        }
        Ok(())
    }

    /// True when this configuration changes nothing (every datagram is sent once, at once).
    pub fn is_transparent(&self) -> bool {
        self.loss == 0.0
            && self.duplicate == 0.0
            && self.reorder == 0.0
            && self.delay.is_zero()
            && self.jitter.is_zero()
            && self.link.is_none()
    }

    /// How long a datagram may be held for reordering: `max(delay + jitter, MIN_HOLD)`.
    pub fn hold_limit(&self) -> Duration {
        (self.delay + self.jitter).max(MIN_HOLD)
    }
}

impl fmt::Display for FaultConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "loss {}, duplicate {}, reorder {}, delay {:?}, jitter {:?}, seed {}",
            self.loss, self.duplicate, self.reorder, self.delay, self.jitter, self.seed
        )?;
        match &self.link {
            Some(link) => write!(f, ", link {link}"),
            None => Ok(()),
        }
    }
}

/// Why a [`FaultConfig`] was refused.
#[derive(Clone, Debug, PartialEq)]
pub enum FaultConfigError {
    /// A probability outside 0..=1 (or NaN).
    Probability { name: &'static str, value: f64 },
    /// `delay + jitter` above [`MAX_DELAY`].
    Delay { delay: Duration, jitter: Duration },
    /// A bandwidth limit with a bad rate or too small a queue.
    Link(LinkConfigError),
}

impl fmt::Display for FaultConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FaultConfigError::Probability { name, value } => {
                write!(
                    f,
                    "{name} must be a probability between 0 and 1, got {value}"
                )
            }
            FaultConfigError::Delay { delay, jitter } => write!(
                f,
                "delay + jitter must be at most {MAX_DELAY:?}, got {delay:?} + {jitter:?}"
            ),
            FaultConfigError::Link(e) => write!(f, "link: {e}"),
        }
    }
}

impl std::error::Error for FaultConfigError {}

impl From<FaultConfigError> for io::Error {
    fn from(e: FaultConfigError) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidInput, e)
    }
}

/// One copy of a datagram to send: now (`at == None`) or not before `at`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Emit<T> {
    pub at: Option<Instant>,
    pub datagram: T,
}

/// What the injector decided so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultCounts {
    /// Datagrams fed in.
    pub received: u64,
    /// Datagrams dropped by the loss stage.
    pub dropped: u64,
    /// Extra copies made by the duplicate stage.
    pub duplicated: u64,
    /// Datagrams held back by the reorder stage.
    pub reordered: u64,
}

struct Held<T> {
    datagram: T,
    copies: u8,
    deadline: Instant,
}

/// The fault decisions of one direction (see the module documentation for the stages).
pub struct FaultInjector<T> {
    config: FaultConfig,
    rng: SplitMix64,
    held: Option<Held<T>>,
    counts: FaultCounts,
}

impl<T: Clone> FaultInjector<T> {
    pub fn new(config: FaultConfig) -> Result<Self, FaultConfigError> {
        config.validate()?;
        Ok(FaultInjector {
            config,
            rng: SplitMix64::new(config.seed),
            held: None,
            counts: FaultCounts::default(),
        })
    }

    pub fn config(&self) -> &FaultConfig {
        &self.config
    }

    pub fn counts(&self) -> FaultCounts {
        self.counts
    }

    /// Decide what happens to `datagram`, received at `now`; the copies to send are appended
    /// to `out` in the order they should leave.
    pub fn feed(&mut self, datagram: T, now: Instant, out: &mut Vec<Emit<T>>) {
        self.counts.received += 1;
        if self.rng.chance(self.config.loss) {
            self.counts.dropped += 1;
            return;
        }
        let copies = if self.rng.chance(self.config.duplicate) {
            self.counts.duplicated += 1;
            2
        } else {
            1
        };
        if self.held.is_none() && self.rng.chance(self.config.reorder) {
            self.counts.reordered += 1;
            self.held = Some(Held {
                datagram,
                copies,
                deadline: now + self.config.hold_limit(),
            });
            return;
        }
        self.emit(datagram, copies, now, out);
        if let Some(held) = self.held.take() {
            self.emit(held.datagram, held.copies, now, out);
        }
    }

    /// When [`on_timer`](Self::on_timer) next has something to do (a held datagram's limit).
    pub fn next_deadline(&self) -> Option<Instant> {
        self.held.as_ref().map(|h| h.deadline)
    }

    /// Release the held datagram if its hold limit has passed at `now`.
    pub fn on_timer(&mut self, now: Instant, out: &mut Vec<Emit<T>>) {
        if self.held.as_ref().is_some_and(|h| h.deadline <= now) {
            self.flush(now, out);
        }
    }

    /// Release the held datagram, if any, whatever its limit (used when stopping).
    pub fn flush(&mut self, now: Instant, out: &mut Vec<Emit<T>>) {
        if let Some(held) = self.held.take() {
            self.emit(held.datagram, held.copies, now, out);
        }
    }

    /// Stage 4: schedule each copy after its delay.
    fn emit(&mut self, datagram: T, copies: u8, now: Instant, out: &mut Vec<Emit<T>>) {
        if copies > 1 {
            let at = self.release_time(now);
            out.push(Emit {
                at,
                datagram: datagram.clone(),
            });
        }
        let at = self.release_time(now);
        out.push(Emit { at, datagram });
    }

    fn release_time(&mut self, now: Instant) -> Option<Instant> {
        let FaultConfig { delay, jitter, .. } = self.config;
        if delay.is_zero() && jitter.is_zero() {
            return None;
        }
        let extra = if jitter.is_zero() {
            Duration::ZERO
        } else {
            jitter.mul_f64(self.rng.next_f64())
        };
        Some(now + delay + extra)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> FaultConfig {
        FaultConfig {
            seed: 7,
            ..FaultConfig::default()
        }
    }

    /// Feed 0..n at `now`, then flush; return what was emitted.
    fn run(config: FaultConfig, n: u32, now: Instant) -> (Vec<Emit<u32>>, FaultCounts) {
        let mut inj = FaultInjector::new(config).unwrap();
        let mut out = Vec::new();
        for i in 0..n {
            inj.feed(i, now, &mut out);
        }
        inj.flush(now, &mut out);
        (out, inj.counts())
    }

    fn datagrams(out: &[Emit<u32>]) -> Vec<u32> {
        out.iter().map(|e| e.datagram).collect()
    }

    #[test]
    fn no_faults_passes_everything_at_once_and_in_order() {
        assert!(config().is_transparent());
        let (out, counts) = run(config(), 100, Instant::now());
        assert_eq!(datagrams(&out), (0..100).collect::<Vec<_>>());
        assert!(out.iter().all(|e| e.at.is_none()));
        assert_eq!(
            counts,
            FaultCounts {
                received: 100,
                ..FaultCounts::default()
            }
        );
    }

    #[test]
    fn half_loss_drops_about_half_and_the_same_seed_decides_the_same() {
        let c = FaultConfig {
            loss: 0.5,
            seed: 12345,
            ..FaultConfig::default()
        };
        let now = Instant::now();
        let (a, counts) = run(c, 10_000, now);
        assert!(
            (4500..=5500).contains(&counts.dropped),
            "dropped {}",
            counts.dropped
        );
        assert_eq!(a.len() as u64, 10_000 - counts.dropped);
        let (b, _) = run(c, 10_000, now);
        assert_eq!(a, b, "same seed, same decisions");
        let (other, _) = run(FaultConfig { seed: 54321, ..c }, 10_000, now);
        assert_ne!(datagrams(&a), datagrams(&other), "another seed differs");
    }

    #[test]
    fn full_loss_drops_everything() {
        let c = FaultConfig {
            loss: 1.0,
            reorder: 1.0,
            duplicate: 1.0,
            ..config()
        };
        let (out, counts) = run(c, 1000, Instant::now());
        assert!(out.is_empty());
        assert_eq!(counts.dropped, 1000);
        assert_eq!(counts.duplicated + counts.reordered, 0);
    }

    #[test]
    fn full_duplication_sends_each_twice() {
        let c = FaultConfig {
            duplicate: 1.0,
            ..config()
        };
        let (out, counts) = run(c, 50, Instant::now());
        let expected: Vec<u32> = (0..50).flat_map(|i| [i, i]).collect();
        assert_eq!(datagrams(&out), expected);
        assert_eq!(counts.duplicated, 50);
    }

    #[test]
    fn reorder_permutes_but_keeps_every_datagram_exactly_once() {
        let c = FaultConfig {
            reorder: 0.3,
            ..config()
        };
        let (out, counts) = run(c, 1000, Instant::now());
        let got = datagrams(&out);
        assert_ne!(got, (0..1000).collect::<Vec<_>>(), "some out of order");
        assert!(counts.reordered > 100, "reordered {}", counts.reordered);
        let mut sorted = got.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..1000).collect::<Vec<_>>(), "each exactly once");
        assert!(out.iter().all(|e| e.at.is_none()));
    }

    #[test]
    fn a_held_datagram_leaves_right_after_the_next_one() {
        let c = FaultConfig {
            reorder: 1.0,
            ..config()
        };
        let (out, counts) = run(c, 6, Instant::now());
        assert_eq!(datagrams(&out), [1, 0, 3, 2, 5, 4]);
        assert_eq!(counts.reordered, 3);
    }

    #[test]
    fn a_held_datagram_is_released_by_the_timer_at_its_limit() {
        let t0 = Instant::now();
        let mut inj = FaultInjector::new(FaultConfig {
            reorder: 1.0,
            ..config()
        })
        .unwrap();
        let mut out = Vec::new();
        inj.feed(42u32, t0, &mut out);
        assert!(out.is_empty());
        assert_eq!(inj.next_deadline(), Some(t0 + MIN_HOLD));
        inj.on_timer(t0 + MIN_HOLD - Duration::from_micros(1), &mut out);
        assert!(out.is_empty());
        inj.on_timer(t0 + MIN_HOLD, &mut out);
        assert_eq!(datagrams(&out), [42]);
        assert_eq!(inj.next_deadline(), None);

        let slow = FaultConfig {
            reorder: 1.0,
            delay: Duration::from_millis(20),
            jitter: Duration::from_millis(10),
            ..config()
        };
        assert_eq!(slow.hold_limit(), Duration::from_millis(30));
    }

    #[test]
    fn delay_schedules_at_now_plus_delay_and_jitter_stays_in_its_band() {
        let now = Instant::now();
        let delay = Duration::from_millis(30);
        let (out, _) = run(FaultConfig { delay, ..config() }, 10, now);
        assert!(out.iter().all(|e| e.at == Some(now + delay)));

        let jitter = Duration::from_millis(5);
        let (out, _) = run(
            FaultConfig {
                delay,
                jitter,
                ..config()
            },
            1000,
            now,
        );
        let ats: Vec<Instant> = out.iter().map(|e| e.at.unwrap()).collect();
        assert!(ats
            .iter()
            .all(|&t| t >= now + delay && t <= now + delay + jitter));
        assert!(ats.iter().any(|&t| t != ats[0]), "jitter varies");
    }

    #[test]
    fn invalid_configs_are_refused_with_the_field_named() {
        for (c, field) in [
            (
                FaultConfig {
                    loss: 1.5,
                    ..config()
                },
                "loss",
            ),
            (
                FaultConfig {
                    loss: -0.1,
                    ..config()
                },
                "loss",
            ),
            (
                FaultConfig {
                    duplicate: f64::NAN,
                    ..config()
                },
                "duplicate",
            ),
            (
                FaultConfig {
                    reorder: 2.0,
                    ..config()
                },
                "reorder",
            ),
            (
                FaultConfig {
                    delay: Duration::from_secs(3600),
                    ..config()
                },
                "delay",
            ),
            (
                FaultConfig {
                    link: Some(LinkConfig::new(0.0)),
                    ..config()
                },
                "rate",
            ),
        ] {
            let err = FaultInjector::<u32>::new(c).err().expect("refused");
            assert!(err.to_string().contains(field), "{err}");
        }
        assert!(FaultConfig {
            loss: 1.0,
            duplicate: 0.0,
            reorder: 1.0,
            ..config()
        }
        .validate()
        .is_ok());
    }
}
