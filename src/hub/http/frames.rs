//! "Latest frame wins" for the HTTP view: the newest JPEG of every image source, which
//! `/stream` viewers wait on and `/snapshot` returns.
//!
//! The receiving threads feed it from [`FrameSinks::deliver`](crate::hub::sinks::FrameSinks)
//! and must never wait on HTTP, so a frame is stored by swapping one pointer: the registry
//! lock is held for one hash lookup (a new source also inserts its slot), then the source's
//! own slot lock for the swap. No per-frame allocation beyond the `Arc` the sinks already
//! made; the frame that is replaced is freed after the locks are released. Each source's
//! slot is a [`Latest`] (the crate's one "latest wins" mailbox) that viewers look at
//! without taking: each waits on its source's slot with a timeout and takes whatever is
//! newest when it wakes, so a slow viewer skips frames and holds up nobody. What this adds
//! is the registry: finding a source by its slug, and a bound on how many are kept.

use crate::hub::source::SourceId;
use crate::latest::Latest;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// Sources whose newest frame is kept, at most. Past it, the source that has been quiet the
/// longest is forgotten (TCP senders get a new source per connection, so old ones pile up).
pub const MAX_SOURCES: usize = 256;

/// The newest frame of one source; its version counts the frames put there (the first is 1),
/// and viewers remember the last one they sent.
pub type FrameSlot = Latest<Arc<Vec<u8>>>;

/// The newest frame of every image source.
#[derive(Default)]
pub struct LatestFrames {
    registry: Mutex<Registry>,
}

#[derive(Default)]
struct Registry {
    slots: HashMap<SourceId, Listed>,
    /// Counts every frame put, to tell which source was updated the longest ago.
    puts: u64,
}

struct Listed {
    slot: Arc<FrameSlot>,
    /// The value of [`Registry::puts`] when the source's newest frame came.
    stamp: u64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl LatestFrames {
    /// Make `jpeg` the newest frame of `source`. Never blocks on a viewer.
    pub fn put(&self, source: SourceId, jpeg: Arc<Vec<u8>>) {
        let slot = {
            let mut registry = lock(&self.registry);
            registry.puts += 1;
            let stamp = registry.puts;
            match registry.slots.get_mut(&source) {
                Some(listed) => {
                    listed.stamp = stamp;
                    listed.slot.clone()
                }
                None => {
                    if registry.slots.len() >= MAX_SOURCES {
                        registry.evict_quietest();
                    }
                    let slot = Arc::new(FrameSlot::holding(jpeg));
                    registry.slots.insert(source, Listed { slot, stamp });
                    return;
                }
            }
        };
        // Possibly the last reference to the replaced frame: freed outside every lock. A
        // frame slot is never hung up, so the put cannot fail.
        drop(slot.put(jpeg));
    }

    /// The slot of `source`, if a frame of it has come.
    pub fn get(&self, source: &SourceId) -> Option<Arc<FrameSlot>> {
        lock(&self.registry)
            .slots
            .get(source)
            .map(|listed| listed.slot.clone())
    }

    /// The source whose [`SourceId::slug`] is `slug`, with its slot.
    pub fn find(&self, slug: &str) -> Option<(SourceId, Arc<FrameSlot>)> {
        lock(&self.registry)
            .slots
            .iter()
            .find(|(id, _)| id.slug() == slug)
            .map(|(id, listed)| (*id, listed.slot.clone()))
    }
}

impl Registry {
    fn evict_quietest(&mut self) {
        let quietest = self
            .slots
            .iter()
            .min_by_key(|(_, listed)| listed.stamp)
            .map(|(id, _)| *id);
        if let Some(id) = quietest {
            self.slots.remove(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::source::Service;
    use std::net::SocketAddr;
    use std::time::Duration;

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
        let (seen, first) = slot.latest().expect("a listed source has a frame");
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
        let (seen, _) = slot.latest().expect("a listed source has a frame");
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
