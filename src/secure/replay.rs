//! The anti-replay window of RFC 6479 (as WireGuard and IPsec use it): which 64-bit
//! counters of a session have been delivered, so that a replayed or duplicated datagram is
//! refused while datagrams reordered by up to [`WINDOW`] counters are each delivered once.
//!
//! A ring of [`BLOCKS`] 64-bit blocks holds one bit per counter near the highest counter
//! accepted so far. Moving ahead clears whole blocks (no bit shifting), so a jump of any size
//! costs at most [`BLOCKS`] word writes. One block is always the partly filled newest one,
//! so the window that is guaranteed is `(BLOCKS - 1) * 64` = [`WINDOW`] counters; anything
//! older is refused, since it cannot be told from a replay.
//!
//! Use [`ReplayWindow::check`] before decrypting (cheap refusal) and
//! [`ReplayWindow::update`] only after the datagram authenticated: a forged counter must not
//! move the window.

/// Bits per block.
const BLOCK_BITS: u64 = 64;
/// Blocks in the ring (2048 bits).
pub const BLOCKS: usize = 32;
/// How far behind the highest accepted counter a counter is still accepted (if new).
pub const WINDOW: u64 = (BLOCKS as u64 - 1) * BLOCK_BITS;
/// The one counter never accepted: snow refuses the nonce `u64::MAX` (Noise reserves it).
pub const MAX_COUNTER: u64 = u64::MAX - 1;

/// One receive direction's window.
#[derive(Clone, Debug)]
pub struct ReplayWindow {
    /// The highest counter accepted, if any.
    last: Option<u64>,
    bitmap: [u64; BLOCKS],
}

impl Default for ReplayWindow {
    fn default() -> Self {
        ReplayWindow::new()
    }
}

impl ReplayWindow {
    pub fn new() -> ReplayWindow {
        ReplayWindow {
            last: None,
            bitmap: [0; BLOCKS],
        }
    }

    /// Would `counter` be accepted? (Not seen, and not older than [`WINDOW`] behind the
    /// highest one accepted.) Changes nothing.
    pub fn check(&self, counter: u64) -> bool {
        if counter > MAX_COUNTER {
            return false;
        }
        let Some(last) = self.last else {
            return true;
        };
        if counter > last {
            return true;
        }
        if last - counter >= WINDOW {
            return false;
        }
        let (block, bit) = position(counter);
        self.bitmap[block] & bit == 0
    }

    /// Record `counter` as delivered. Call only for a counter that [`check`](Self::check)
    /// accepted and whose datagram then authenticated.
    pub fn update(&mut self, counter: u64) {
        debug_assert!(self.check(counter));
        let index = counter / BLOCK_BITS;
        match self.last {
            None => {
                self.bitmap = [0; BLOCKS];
                self.last = Some(counter);
            }
            Some(last) if counter > last => {
                let current = last / BLOCK_BITS;
                let advance = (index - current).min(BLOCKS as u64);
                for i in 1..=advance {
                    self.bitmap[((current + i) % BLOCKS as u64) as usize] = 0;
                }
                self.last = Some(counter);
            }
            Some(_) => {}
        }
        let (block, bit) = position(counter);
        self.bitmap[block] |= bit;
    }

    /// [`check`](Self::check), then [`update`](Self::update) if accepted.
    pub fn accept(&mut self, counter: u64) -> bool {
        let ok = self.check(counter);
        if ok {
            self.update(counter);
        }
        ok
    }

    /// The highest counter accepted so far.
    pub fn last(&self) -> Option<u64> {
        self.last
    }
}

fn position(counter: u64) -> (usize, u64) {
    let block = ((counter / BLOCK_BITS) % BLOCKS as u64) as usize;
    (block, 1u64 << (counter % BLOCK_BITS))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    #[test]
    fn in_order_then_duplicate() {
        let mut w = ReplayWindow::new();
        for c in 0..5000 {
            assert!(w.accept(c), "{c}");
        }
        assert!(!w.accept(4999));
        assert!(!w.accept(4000));
        assert_eq!(w.last(), Some(4999));
    }

    #[test]
    fn counter_zero_once() {
        let mut w = ReplayWindow::new();
        assert!(w.check(0));
        assert!(w.accept(0));
        assert!(!w.check(0));
        assert!(!w.accept(0));
    }

    #[test]
    fn reordered_within_window_each_once() {
        let mut w = ReplayWindow::new();
        assert!(w.accept(10_000));
        // Every counter up to WINDOW - 1 behind, in reverse order: each accepted once.
        for c in (10_000 - (WINDOW - 1)..10_000).rev() {
            assert!(w.accept(c), "{c}");
            assert!(!w.accept(c), "{c} twice");
        }
        assert!(
            !w.accept(10_000 - WINDOW),
            "exactly WINDOW behind is too old"
        );
    }

    #[test]
    fn too_old_is_refused_even_if_never_seen() {
        let mut w = ReplayWindow::new();
        assert!(w.accept(5));
        assert!(w.accept(5 + WINDOW));
        assert!(!w.check(5), "seen and now too old");
        assert!(!w.check(4), "never seen but too old");
        assert!(w.check(6), "just inside");
    }

    #[test]
    fn far_jump_ahead_clears_the_ring() {
        let mut w = ReplayWindow::new();
        for c in 0..100 {
            assert!(w.accept(c));
        }
        let far = 1u64 << 40;
        assert!(w.accept(far));
        // The bits of 0..100 live in blocks that the jump cleared; they are too old anyway.
        for c in 0..100 {
            assert!(!w.check(c));
        }
        // New counters just behind the jump are all fresh, even those whose block index
        // modulo the ring equals an old one.
        for c in far - (WINDOW - 1)..far {
            assert!(w.check(c), "{c}");
        }
        assert!(!w.check(far));
    }

    #[test]
    fn u64_max_is_never_accepted_and_max_counter_is() {
        let mut w = ReplayWindow::new();
        assert!(!w.check(u64::MAX));
        assert!(w.accept(MAX_COUNTER));
        assert!(!w.accept(MAX_COUNTER));
        assert!(!w.accept(u64::MAX));
        assert!(w.accept(MAX_COUNTER - 1));
        assert!(!w.accept(0));
    }

    proptest! {
        /// Against the exact model: accepted iff never accepted before and newer than
        /// WINDOW behind the highest accepted; so no counter is ever accepted twice.
        #[test]
        fn matches_the_model_and_never_accepts_twice(
            steps in proptest::collection::vec((0u64..6000, any::<bool>(), 0u64..4), 1..2000)
        ) {
            let mut w = ReplayWindow::new();
            let mut seen = HashSet::new();
            let mut last: Option<u64> = None;
            let mut base = 0u64;
            for (offset, jump, size) in steps {
                // Mostly near the front, sometimes a jump far ahead.
                if jump && size == 3 {
                    base = base.saturating_add(offset * 1000);
                }
                let c = base.saturating_add(offset).min(MAX_COUNTER);
                let model = !seen.contains(&c)
                    && match last {
                        None => true,
                        Some(l) => c > l || l - c < WINDOW,
                    };
                let got = w.accept(c);
                prop_assert_eq!(got, model, "counter {}", c);
                if got {
                    prop_assert!(seen.insert(c), "accepted twice: {}", c);
                    last = Some(last.map_or(c, |l| l.max(c)));
                }
            }
        }
    }
}
