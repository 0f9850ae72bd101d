//! A one-slot handoff between the camera client's capture thread and its send thread.
//!
//! One slot is enough for the two to overlap (the next frame is encoded while the current
//! one is on the network) and keeps latency to at most one frame. What happens when the
//! producer has a frame and the slot is still full depends on the source:
//! - [`Mode::LatestWins`] (live sources: camera, test pattern): the new frame replaces the
//!   waiting one, which is counted as skipped. The sender always gets the freshest frame
//!   and a slow network never makes the picture lag.
//! - [`Mode::Backpressure`] (files: video, images): the producer waits until the sender
//!   has taken the waiting frame. Nothing is ever skipped, so `--video` sends every frame.
//!
//! Either side can end the exchange: the producer by [`Handoff::close`] (the source ended;
//! the frame in the slot is still delivered), the consumer by [`Handoff::hang_up`] (it
//! stopped sending; a waiting producer returns at once). Every wait is bounded. The slot is
//! the crate's one "latest wins" mailbox, [`Latest`]; this adds only the choice of mode.

use std::sync::Arc;
use std::time::Duration;

use crate::latest::Latest;
pub use crate::latest::Take;
use crate::shutdown::Shutdown;

/// What the producer does when the slot is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Replace the waiting item (count it skipped).
    LatestWins,
    /// Wait for the consumer to take it.
    Backpressure,
}

/// Both ends of the slot (clone it to give one to each thread).
pub struct Handoff<T> {
    slot: Arc<Latest<T>>,
    mode: Mode,
}

impl<T> Clone for Handoff<T> {
    fn clone(&self) -> Self {
        Handoff {
            slot: Arc::clone(&self.slot),
            mode: self.mode,
        }
    }
}

impl<T> Handoff<T> {
    pub fn new(mode: Mode) -> Self {
        Handoff {
            slot: Arc::new(Latest::new()),
            mode,
        }
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Offer `item`. Returns false (dropping it) when the consumer has hung up or `stop` is
    /// triggered while waiting for room.
    pub fn put(&self, item: T, stop: &Shutdown) -> bool {
        match self.mode {
            Mode::LatestWins => !stop.is_triggered() && self.slot.put(item).is_ok(),
            Mode::Backpressure => self.slot.put_when_taken(item, stop).is_ok(),
        }
    }

    /// Take the waiting item, waiting at most `timeout` for one.
    pub fn take(&self, timeout: Duration) -> Take<T> {
        self.slot.take(timeout)
    }

    /// Producer: nothing more will be put. The item in the slot is still delivered.
    pub fn close(&self) {
        self.slot.close()
    }

    /// Consumer: nothing more will be taken; producers stop waiting and further puts fail.
    pub fn hang_up(&self) {
        self.slot.hang_up()
    }

    /// True once the consumer has hung up.
    pub fn is_hung_up(&self) -> bool {
        self.slot.is_hung_up()
    }

    /// Items replaced before they were taken (only in [`Mode::LatestWins`]).
    pub fn skipped(&self) -> u64 {
        self.slot.skipped()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::thread;

    const LONG: Duration = Duration::from_secs(30);

    #[test]
    fn latest_wins_replaces_and_counts() {
        let h = Handoff::new(Mode::LatestWins);
        let stop = Shutdown::new();
        assert!(h.put(1, &stop));
        assert!(h.put(2, &stop));
        assert!(h.put(3, &stop));
        assert_eq!(h.skipped(), 2);
        assert_eq!(h.take(LONG), Take::Item(3));
        assert_eq!(h.take(Duration::ZERO), Take::Empty);
        h.close();
        assert_eq!(h.take(LONG), Take::Closed);
    }

    #[test]
    fn backpressure_delivers_everything_in_order() {
        let h = Handoff::new(Mode::Backpressure);
        let producer = {
            let h = h.clone();
            thread::spawn(move || {
                let stop = Shutdown::new();
                for i in 0..200 {
                    assert!(h.put(i, &stop));
                }
                h.close();
            })
        };
        let mut got = Vec::new();
        loop {
            match h.take(LONG) {
                Take::Item(i) => got.push(i),
                Take::Closed => break,
                Take::Empty => panic!("nothing within {LONG:?}"),
            }
        }
        producer.join().unwrap();
        assert_eq!(got, (0..200).collect::<Vec<_>>());
        assert_eq!(h.skipped(), 0);
    }

    #[test]
    fn close_still_delivers_the_last_item() {
        let h = Handoff::new(Mode::Backpressure);
        assert!(h.put("last", &Shutdown::new()));
        h.close();
        assert_eq!(h.take(LONG), Take::Item("last"));
        assert_eq!(h.take(LONG), Take::Closed);
    }

    #[test]
    fn hang_up_releases_a_waiting_producer() {
        let h = Handoff::new(Mode::Backpressure);
        let stop = Shutdown::new();
        assert!(h.put(1, &stop));
        let producer = {
            let h = h.clone();
            // The slot is full, so this put waits until the consumer hangs up.
            thread::spawn(move || h.put(2, &Shutdown::new()))
        };
        h.hang_up();
        assert!(!producer.join().unwrap());
        assert!(h.is_hung_up());
        assert!(!h.put(3, &stop));
    }

    #[test]
    fn stop_releases_a_waiting_producer() {
        let h = Handoff::new(Mode::Backpressure);
        let stop = Shutdown::new();
        assert!(h.put(1, &stop));
        let producer = {
            let (h, stop) = (h.clone(), stop.clone());
            thread::spawn(move || h.put(2, &stop))
        };
        stop.trigger();
        assert!(!producer.join().unwrap());
        assert_eq!(h.take(LONG), Take::Item(1));
    }
}
