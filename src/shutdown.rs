//! Shutdown: one small, cloneable flag that every loop in the process checks.
//!
//! Loops never block without a timeout, so setting the flag stops every thread within one
//! poll interval ([`POLL_INTERVAL`]). Ctrl-C and SIGTERM set it through [`Shutdown::install_signal_handler`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The longest any loop waits before looking at the shutdown flag again.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// A shared "stop now" flag.
#[derive(Clone, Debug, Default)]
pub struct Shutdown {
    flag: Arc<AtomicBool>,
}

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    /// Ask every loop holding a clone of this flag to stop.
    pub fn trigger(&self) {
        self.flag.store(true, Ordering::SeqCst);
    }

    pub fn is_triggered(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
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
        a.trigger();
        assert!(b.is_triggered());
    }
}
