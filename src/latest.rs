//! "Latest value wins": the one mailbox that every newest-frame handoff in the crate is built on.
//!
//! A writer puts a value and never waits for a reader: the new value replaces the one still
//! waiting, which is counted as skipped and handed back so the caller frees it after the lock
//! is released (a swap under a lock held for nanoseconds). A reader either takes the value
//! (one consumer: [`Latest::take`]) or looks at it and leaves it (many viewers:
//! [`Latest::latest`], [`Latest::wait_newer`], which follow a version that counts the puts).
//! Every wait has a timeout, and either side can end the exchange at once: the writer by
//! [`Latest::close`] (nothing more will come; the waiting value is still delivered), the reader
//! by [`Latest::hang_up`] (nothing more will be taken; further puts fail).
//!
//! - [`Latest`]: one slot: the camera client's capture-to-send handoff
//!   ([`crate::client::handoff`]) and the HTTP view's newest frame of a source
//!   ([`crate::hub::http::frames`]);
//! - [`LatestByKey`]: the newest value per key with one consumer that takes them all: the
//!   hub's display queue ([`crate::hub::display`]).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

use crate::shutdown::{Shutdown, POLL_INTERVAL};

/// The result of [`Latest::take`].
#[derive(Debug, PartialEq, Eq)]
pub enum Take<T> {
    Item(T),
    /// Nothing arrived within the timeout.
    Empty,
    /// The writer closed and the slot is empty: nothing more will come.
    Closed,
}

struct State<T> {
    value: Option<T>,
    /// Counts the values put (the first is 1); viewers remember the last one they saw.
    version: u64,
    /// Values replaced before anyone took them.
    skipped: u64,
    closed: bool,
    hung_up: bool,
}

/// One slot holding the newest value, and a wake-up for whoever waits on it.
pub struct Latest<T> {
    state: Mutex<State<T>>,
    changed: Condvar,
}

impl<T> Default for Latest<T> {
    fn default() -> Self {
        Self::with_state(None, 0)
    }
}

impl<T> Latest<T> {
    /// An empty slot.
    pub fn new() -> Self {
        Self::default()
    }

    /// A slot that already holds `value` (as its first put: version 1).
    pub fn holding(value: T) -> Self {
        Self::with_state(Some(value), 1)
    }

    fn with_state(value: Option<T>, version: u64) -> Self {
        Latest {
            state: Mutex::new(State {
                value,
                version,
                skipped: 0,
                closed: false,
                hung_up: false,
            }),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The state once `waiting` is false of it, or after `timeout` (whichever comes first).
    fn wait_while(
        &self,
        timeout: Duration,
        waiting: impl FnMut(&mut State<T>) -> bool,
    ) -> MutexGuard<'_, State<T>> {
        self.changed
            .wait_timeout_while(self.lock(), timeout, waiting)
            .unwrap_or_else(|e| e.into_inner())
            .0
    }

    /// Make `value` the newest and wake every waiter. Never waits. Returns the value it
    /// replaced, if that was not taken yet (counted skipped), so the caller drops it outside
    /// the lock; gives `value` back as `Err` when the reader has hung up.
    pub fn put(&self, value: T) -> Result<Option<T>, T> {
        let replaced = {
            let mut s = self.lock();
            if s.hung_up {
                return Err(value);
            }
            let replaced = s.value.replace(value);
            s.version += 1;
            if replaced.is_some() {
                s.skipped += 1;
            }
            replaced
        };
        self.changed.notify_all();
        Ok(replaced)
    }

    /// Put `value` once the slot is empty (backpressure: nothing is ever skipped), waiting
    /// for the reader to take what is there. Gives `value` back as `Err` when the reader hangs
    /// up or `stop` is triggered first (it is looked at every [`POLL_INTERVAL`]).
    pub fn put_when_taken(&self, value: T, stop: &Shutdown) -> Result<(), T> {
        {
            let mut s = self.lock();
            while s.value.is_some() && !s.hung_up && !stop.is_triggered() {
                s = match self.changed.wait_timeout(s, POLL_INTERVAL) {
                    Ok((s, _)) => s,
                    Err(e) => e.into_inner().0,
                };
            }
            if s.hung_up || stop.is_triggered() {
                return Err(value);
            }
            s.value = Some(value);
            s.version += 1;
        }
        self.changed.notify_all();
        Ok(())
    }

    /// Take the waiting value, waiting at most `timeout` for one.
    pub fn take(&self, timeout: Duration) -> Take<T> {
        let mut s = self.wait_while(timeout, |s| s.value.is_none() && !s.closed);
        match s.value.take() {
            Some(value) => {
                drop(s);
                self.changed.notify_all(); // a writer may be waiting for room
                Take::Item(value)
            }
            None if s.closed => Take::Closed,
            None => Take::Empty,
        }
    }

    /// Writer: nothing more will be put. The value in the slot is still delivered.
    pub fn close(&self) {
        self.lock().closed = true;
        self.changed.notify_all();
    }

    /// Reader: nothing more will be taken; waiting writers return at once and further puts
    /// fail.
    pub fn hang_up(&self) {
        self.lock().hung_up = true;
        self.changed.notify_all();
    }

    /// True once the reader has hung up.
    pub fn is_hung_up(&self) -> bool {
        self.lock().hung_up
    }

    /// Values replaced before anyone took them.
    pub fn skipped(&self) -> u64 {
        self.lock().skipped
    }
}

impl<T: Clone> Latest<T> {
    /// The newest value (left in the slot) and its version.
    pub fn latest(&self) -> Option<(u64, T)> {
        let s = self.lock();
        s.value.clone().map(|v| (s.version, v))
    }

    /// The newest value (left in the slot) if its version is above `seen`, waiting at most
    /// `timeout` for one to come. A closed slot ends the wait at once.
    pub fn wait_newer(&self, seen: u64, timeout: Duration) -> Option<(u64, T)> {
        let s = self.wait_while(timeout, |s| s.version <= seen && !s.closed);
        if s.version <= seen {
            return None;
        }
        s.value.clone().map(|v| (s.version, v))
    }
}

/// The newest value per key, taken all at once by one consumer: a [`Latest`] whose value is
/// a map that each put adds to.
pub struct LatestByKey<K, V> {
    slot: Latest<HashMap<K, V>>,
}

impl<K, V> Default for LatestByKey<K, V> {
    fn default() -> Self {
        LatestByKey {
            slot: Latest::default(),
        }
    }
}

impl<K: Eq + Hash, V> LatestByKey<K, V> {
    /// Replace the value for `key` (the older one, if not yet taken, is dropped after the lock
    /// is released). Never waits.
    pub fn put(&self, key: K, value: V) {
        let replaced = {
            let mut s = self.slot.lock();
            let replaced = s.value.get_or_insert_with(HashMap::new).insert(key, value);
            s.version += 1;
            if replaced.is_some() {
                s.skipped += 1;
            }
            replaced
        };
        self.slot.changed.notify_all();
        drop(replaced);
    }

    /// Take every waiting value, waiting at most `timeout` for one to arrive. (The map is
    /// drained, not taken, so its room is kept for the next puts.)
    pub fn take_all(&self, timeout: Duration) -> Vec<(K, V)> {
        let mut s = self
            .slot
            .wait_while(timeout, |s| s.value.as_ref().is_none_or(HashMap::is_empty));
        s.value
            .as_mut()
            .map_or_else(Vec::new, |values| values.drain().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::thread;

    const LONG: Duration = Duration::from_secs(30);

    #[test]
    fn a_put_replaces_the_waiting_value_and_hands_it_back() {
        let l = Latest::new();
        assert_eq!(l.put(1), Ok(None));
        assert_eq!(l.put(2), Ok(Some(1)));
        assert_eq!(l.skipped(), 1);
        assert_eq!(l.latest(), Some((2, 2)), "looking leaves the value");
        assert_eq!(l.take(Duration::ZERO), Take::Item(2));
        assert_eq!(l.take(Duration::ZERO), Take::Empty);
        assert_eq!(l.put(3), Ok(None), "a taken value is not skipped");
        assert_eq!(l.skipped(), 1);
        l.close();
        assert_eq!(l.take(LONG), Take::Item(3), "closing still delivers");
        assert_eq!(l.take(LONG), Take::Closed);
    }

    #[test]
    fn after_a_hang_up_puts_fail_and_give_the_value_back() {
        let l = Latest::new();
        l.hang_up();
        assert!(l.is_hung_up());
        assert_eq!(l.put(1), Err(1));
        assert_eq!(l.put_when_taken(2, &Shutdown::new()), Err(2));
        assert_eq!(l.take(Duration::ZERO), Take::Empty);
    }

    #[test]
    fn a_viewer_waits_for_a_newer_version_and_leaves_the_value() {
        let l = Arc::new(Latest::holding("first"));
        let (seen, first) = l.latest().unwrap();
        assert_eq!((seen, first), (1, "first"));
        assert_eq!(l.wait_newer(seen, Duration::ZERO), None);
        let waiter = {
            let l = l.clone();
            thread::spawn(move || l.wait_newer(seen, LONG))
        };
        l.put("second").unwrap();
        assert_eq!(waiter.join().unwrap(), Some((2, "second")));
        assert_eq!(l.wait_newer(seen, Duration::ZERO), Some((2, "second")));
    }

    #[test]
    fn a_put_when_taken_waits_for_the_reader() {
        let l = Arc::new(Latest::new());
        l.put_when_taken(1, &Shutdown::new()).unwrap();
        let writer = {
            let l = l.clone();
            thread::spawn(move || l.put_when_taken(2, &Shutdown::new()))
        };
        assert_eq!(l.take(LONG), Take::Item(1));
        assert_eq!(writer.join().unwrap(), Ok(()));
        assert_eq!(l.take(LONG), Take::Item(2));
        assert_eq!(l.skipped(), 0);
    }

    #[test]
    fn newest_value_wins() {
        let l = LatestByKey::default();
        l.put("a", 1);
        l.put("a", 2);
        l.put("b", 7);
        let mut got = l.take_all(Duration::ZERO);
        got.sort();
        assert_eq!(got, vec![("a", 2), ("b", 7)]);
        assert!(l.take_all(Duration::ZERO).is_empty());
    }
}
