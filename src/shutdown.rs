//! Shutdown: one small, cloneable flag that every loop in the process checks.
//!
//! Loops never block without a timeout, so setting the flag stops every thread within one
//! poll interval ([`POLL_INTERVAL`]). Ctrl-C and SIGTERM set it through
//! [`Shutdown::install_signal_handler`].
//! A socket loop blocks until the earlier of its state machine's next timer (its
//! `poll_timeout`) and one poll interval: [`wait_until`] says how long, and [`ReadTimeout`]
//! sets that on the socket without a system call per datagram.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// The longest any loop waits before looking at the shutdown flag again.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// How long a loop may block from `now`: until `wake` (a state machine's `poll_timeout`),
/// but no longer than [`POLL_INTERVAL`], and at least 1 ms (a socket read timeout cannot be
/// zero).
pub fn wait_until(wake: Option<Instant>, now: Instant) -> Duration {
    wake.map_or(POLL_INTERVAL, |w| {
        w.saturating_duration_since(now).min(POLL_INTERVAL)
    })
    .max(READ_TIMEOUT_SLACK)
}

/// How far a socket's read timeout may be off the wanted one before it is set again.
const READ_TIMEOUT_SLACK: Duration = Duration::from_millis(1);

/// A socket's read timeout as last set: [`ReadTimeout::set`] changes it only when the
/// wanted one differs by more than 1 ms, so a loop that takes datagrams back to back does
/// not pay a system call for each (it wakes at most 1 ms late or early, and an early wake
/// only goes round the loop once more).
#[derive(Debug, Default)]
pub struct ReadTimeout {
    current: Option<Duration>,
}

impl ReadTimeout {
    pub fn new() -> Self {
        Self::default()
    }

    /// Make the read timeout `wanted`, through `set_read_timeout` when it must change.
    pub fn set(
        &mut self,
        wanted: Duration,
        set_read_timeout: impl FnOnce(Option<Duration>) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        let close = self
            .current
            .is_some_and(|c| c.abs_diff(wanted) <= READ_TIMEOUT_SLACK);
        if !close {
            set_read_timeout(Some(wanted))?;
            self.current = Some(wanted);
        }
        Ok(())
    }
}

/// A shared "stop now" flag.
#[derive(Clone, Debug, Default)]
pub struct Shutdown {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    flag: AtomicBool,
    lock: Mutex<()>,
    wake: Condvar,
}

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    /// Ask every loop holding a clone of this flag to stop.
    pub fn trigger(&self) {
        let _guard = self.inner.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.inner.flag.store(true, Ordering::SeqCst);
        self.inner.wake.notify_all();
    }

    pub fn is_triggered(&self) -> bool {
        self.inner.flag.load(Ordering::SeqCst)
    }

    /// Wait until the flag is set or `timeout` has passed; true if it is set.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut guard = self.inner.lock.lock().unwrap_or_else(|e| e.into_inner());
        while !self.is_triggered() {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            guard = match self.inner.wake.wait_timeout(guard, deadline - now) {
                Ok((g, _)) => g,
                Err(e) => e.into_inner().0,
            };
        }
        true
    }

    /// Trigger this flag on Ctrl-C (SIGINT) and SIGTERM. Can be installed once per process.
    /// (With the `cli` feature, which brings the `ctrlc` crate.)
    #[cfg(feature = "cli")]
    pub fn install_signal_handler(&self) -> Result<(), ctrlc::Error> {
        let me = self.clone();
        ctrlc::set_handler(move || me.trigger())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_the_flag() {
        let a = Shutdown::new();
        let b = a.clone();
        assert!(!b.is_triggered());
        assert!(!b.wait_timeout(Duration::ZERO));
        a.trigger();
        assert!(b.is_triggered());
        assert!(
            b.wait_timeout(Duration::from_secs(3600)),
            "returns at once once set"
        );
    }

    #[test]
    fn loops_wait_for_the_earlier_of_their_timer_and_the_poll_interval() {
        let now = Instant::now();
        assert_eq!(wait_until(None, now), POLL_INTERVAL);
        let soon = now + Duration::from_millis(7);
        assert_eq!(wait_until(Some(soon), now), Duration::from_millis(7));
        assert_eq!(
            wait_until(Some(now + Duration::from_secs(9)), now),
            POLL_INTERVAL
        );
        assert_eq!(
            wait_until(Some(now), now),
            Duration::from_millis(1),
            "never zero"
        );
    }

    #[test]
    fn read_timeout_is_set_only_when_it_changes_by_more_than_a_millisecond() {
        let mut calls = Vec::new();
        let mut t = ReadTimeout::new();
        for ms in [50, 50, 49, 48, 47, 100, 100] {
            t.set(Duration::from_millis(ms), |d| {
                calls.push(d.unwrap());
                Ok(())
            })
            .unwrap();
        }
        let ms: Vec<u128> = calls.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, vec![50, 48, 100]);
    }

    #[test]
    fn trigger_wakes_a_waiting_thread() {
        let a = Shutdown::new();
        let b = a.clone();
        let waiter = std::thread::spawn(move || b.wait_timeout(Duration::from_secs(60)));
        a.trigger();
        assert!(waiter.join().unwrap());
    }
}
