//! Shutdown: one small, cloneable flag that every loop in the process checks.
//!
//! Loops never block without a timeout, so setting the flag stops every thread within one
//! poll interval ([`POLL_INTERVAL`]). Ctrl-C and SIGTERM set it through
//! [`Shutdown::install_signal_handler`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// The longest any loop waits before looking at the shutdown flag again.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);

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
    fn trigger_wakes_a_waiting_thread() {
        let a = Shutdown::new();
        let b = a.clone();
        let waiter = std::thread::spawn(move || b.wait_timeout(Duration::from_secs(60)));
        a.trigger();
        assert!(waiter.join().unwrap());
    }
}
