//! "Latest frame wins" for the HTTP view: the newest JPEG of every image source, which
//! `/stream` viewers wait on and `/snapshot` returns.
//!
//! The receiving threads feed it from [`FrameSinks::deliver`](crate::hub::sinks::FrameSinks)
//! and must never wait on HTTP, so a frame is stored by swapping one pointer: the registry
//! lock is held for one hash lookup (a new source also inserts its slot), then the source's
//! own slot lock for the swap. No per-frame allocation beyond the `Arc` the sinks already
//! made; the frame that is replaced is freed after the locks are released. Viewers each wait
//! on their source's slot with a timeout and take whatever is newest when they wake, so a
//! slow viewer skips frames and holds up nobody.

use crate::hub::stats::SourceId;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// Sources whose newest frame is kept, at most. Past it, the source that has been quiet the
/// longest is forgotten (TCP senders get a new source per connection, so old ones pile up).
pub const MAX_SOURCES: usize = 256;

/// The newest frame of every image source.
#[derive(Default)]
pub struct LatestFrames {
    slots: Mutex<HashMap<SourceId, Arc<FrameSlot>>>,
    /// Counts every frame put, to tell which source was updated the longest ago.
    puts: AtomicU64,
}

/// The newest frame of one source, and a wake-up for the viewers waiting for a newer one.
pub struct FrameSlot {
    state: Mutex<SlotState>,
    changed: Condvar,
}

struct SlotState {
    frame: Arc<Vec<u8>>,
    /// Counts the frames put here (the first is 1); viewers remember the last one they sent.
    generation: u64,
    /// The value of [`LatestFrames::puts`] when this frame came.
    stamp: u64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl LatestFrames {
    /// Make `jpeg` the newest frame of `source`. Never blocks on a viewer.
    pub fn put(&self, source: SourceId, jpeg: Arc<Vec<u8>>) {
        let stamp = self.puts.fetch_add(1, Relaxed);
        let slot = {
            let mut slots = lock(&self.slots);
            match slots.get(&source) {
                Some(slot) => slot.clone(),
                None => {
                    if slots.len() >= MAX_SOURCES {
                        evict_quietest(&mut slots);
                    }
                    slots.insert(source, Arc::new(FrameSlot::new(jpeg, stamp)));
                    return;
                }
            }
        };
        let replaced = slot.replace(jpeg, stamp);
        drop(replaced); // possibly the last reference: freed outside every lock
    }

    /// The slot of `source`, if a frame of it has come.
    pub fn get(&self, source: &SourceId) -> Option<Arc<FrameSlot>> {
        lock(&self.slots).get(source).cloned()
    }

    /// The source whose [`SourceId::slug`] is `slug`, with its slot.
    pub fn find(&self, slug: &str) -> Option<(SourceId, Arc<FrameSlot>)> {
        lock(&self.slots)
            .iter()
            .find(|(id, _)| id.slug() == slug)
            .map(|(id, slot)| (*id, slot.clone()))
    }
}

fn evict_quietest(slots: &mut HashMap<SourceId, Arc<FrameSlot>>) {
    let quietest = slots
        .iter()
        .min_by_key(|(_, slot)| lock(&slot.state).stamp)
        .map(|(id, _)| *id);
    if let Some(id) = quietest {
        slots.remove(&id);
    }
}

impl FrameSlot {
    fn new(frame: Arc<Vec<u8>>, stamp: u64) -> Self {
        FrameSlot {
            state: Mutex::new(SlotState {
                frame,
                generation: 1,
                stamp,
            }),
            changed: Condvar::new(),
        }
    }

    /// Store `frame` as the newest and wake the viewers; returns the frame it replaced.
    fn replace(&self, frame: Arc<Vec<u8>>, stamp: u64) -> Arc<Vec<u8>> {
        let old = {
            let mut s = lock(&self.state);
            s.generation += 1;
            s.stamp = stamp;
            std::mem::replace(&mut s.frame, frame)
        };
        self.changed.notify_all();
        old
    }

    /// The newest frame and its generation.
    pub fn latest(&self) -> (u64, Arc<Vec<u8>>) {
        let s = lock(&self.state);
        (s.generation, s.frame.clone())
    }

    /// The newest frame if its generation is above `seen`, waiting at most `timeout` for
    /// one to come.
    pub fn wait_newer(&self, seen: u64, timeout: Duration) -> Option<(u64, Arc<Vec<u8>>)> {
        let guard = lock(&self.state);
        let (s, _) = self
            .changed
            .wait_timeout_while(guard, timeout, |s| s.generation <= seen)
            .unwrap_or_else(|e| e.into_inner());
        (s.generation > seen).then(|| (s.generation, s.frame.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::stats::Service;
    use std::net::SocketAddr;

    fn id(port: u16) -> SourceId {
        SourceId {
            service: Service::Img,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }

    #[test]
    fn a_viewer_gets_only_the_newest_frame() {
        let frames = LatestFrames::default();
        assert!(frames.find("udp-127.0.0.1-1").is_none());
        frames.put(id(1), Arc::new(vec![1]));
        let (_, slot) = frames.find("udp-127.0.0.1-1").expect("found by slug");
        let (seen, first) = slot.latest();
        assert_eq!(*first, vec![1]);
        assert!(slot.wait_newer(seen, Duration::ZERO).is_none());
        frames.put(id(1), Arc::new(vec![2]));
        frames.put(id(1), Arc::new(vec![3]));
        let (newer, frame) = slot.wait_newer(seen, Duration::ZERO).unwrap();
        assert_eq!((newer, frame.as_slice()), (seen + 2, &[3u8][..]));
    }

    #[test]
    fn a_waiting_viewer_is_woken_by_a_new_frame() {
        let frames = Arc::new(LatestFrames::default());
        frames.put(id(1), Arc::new(vec![1]));
        let slot = frames.get(&id(1)).unwrap();
        let (seen, _) = slot.latest();
        let waiter = std::thread::spawn(move || slot.wait_newer(seen, Duration::from_secs(60)));
        frames.put(id(1), Arc::new(vec![2]));
        let (_, frame) = waiter.join().unwrap().expect("woken with the new frame");
        assert_eq!(*frame, vec![2]);
    }

    #[test]
    fn the_quietest_source_is_forgotten_past_the_limit() {
        let frames = LatestFrames::default();
        for port in 1..=MAX_SOURCES as u16 {
            frames.put(id(port), Arc::new(vec![0]));
        }
        frames.put(id(1), Arc::new(vec![1])); // port 2 is now the quietest
        frames.put(id(9999), Arc::new(vec![0]));
        assert!(frames.get(&id(2)).is_none());
        assert!(frames.get(&id(1)).is_some() && frames.get(&id(9999)).is_some());
    }
}
