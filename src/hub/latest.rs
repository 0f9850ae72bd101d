//! "Latest frame wins": a mailbox per source that holds only the newest frame.
//!
//! The receiving thread replaces the frame (a pointer swap under a lock held for
//! nanoseconds) and never waits for the consumer; a slow consumer simply skips frames.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Condvar, Mutex};
use std::time::Duration;

/// The newest value per key, plus a wake-up for the consumer.
pub struct LatestByKey<K, V> {
    slots: Mutex<HashMap<K, V>>,
    changed: Condvar,
}

impl<K: Eq + Hash + Clone, V> Default for LatestByKey<K, V> {
    fn default() -> Self {
        LatestByKey {
            slots: Mutex::new(HashMap::new()),
            changed: Condvar::new(),
        }
    }
}

impl<K: Eq + Hash + Clone, V> LatestByKey<K, V> {
    /// Replace the value for `key` (the older one, if not yet taken, is dropped).
    pub fn put(&self, key: K, value: V) {
        self.slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, value);
        self.changed.notify_one();
    }

    /// Take every waiting value, waiting at most `timeout` for one to arrive.
    pub fn take_all(&self, timeout: Duration) -> Vec<(K, V)> {
        let guard = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let (mut guard, _) = self
            .changed
            .wait_timeout_while(guard, timeout, |m| m.is_empty())
            .unwrap_or_else(|e| e.into_inner());
        guard.drain().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
