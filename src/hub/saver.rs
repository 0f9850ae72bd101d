//! `--save-dir`: writes every Nth intact frame to disk on a thread of its own, each source
//! getting its share of the queue, within the folder's size cap.
//!
//! Files are named `{transport}-{ip}-{port}-{seq:08}.jpg` and written atomically: the bytes
//! go to a hidden temp file in the same folder, which is then renamed, so a reader never
//! sees half a frame. The folder is kept within `--save-max-bytes`, oldest frames deleted
//! first ([`super::save_dir`]).
//!
//! The queue is bounded in bytes and in frames; when the disk falls behind, frames are
//! skipped (and counted) rather than ever blocking a receiving thread. Fair share (issue 11:
//! one source of thousands of tiny frames crowded out a camera): each source has a queue of
//! its own and the writer takes one frame from each in turn (round robin), so a source gets
//! its frames written at the same rate as any other however many it offers; and when the
//! queue is full, a frame from a source holding less than the biggest holder evicts that
//! holder's newest frame instead of being skipped. So a flooder can only skip its own frames.
//! A write that fails (disk full) is counted, logged once per outage, and the next frame is
//! tried again.

use super::msg_log::WriteOutage;
use super::save_dir::SaveDir;
use super::source::SourceId;
use std::collections::{HashMap, VecDeque};
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Frames waiting to be written, at most.
const QUEUE_FRAMES: usize = 1024;

/// A frame to save.
pub struct SaveJob {
    pub source: SourceId,
    /// The name the source is shown as, if it gave one.
    pub name: Option<Arc<str>>,
    pub seq: u64,
    pub jpeg: Arc<Vec<u8>>,
}

/// The name a frame is saved under: `{slug}-{seq}.jpg`, or for a named source
/// `{name}-{port}-{seq}.jpg` (the port keeps a restarted device's new run, numbered from 1
/// again, from overwriting the old one's files; a `#` of `NAME#2` becomes `+`).
pub fn file_name(source: &SourceId, name: Option<&str>, seq: u64) -> String {
    match name {
        Some(name) => format!(
            "{}-{}-{:08}.jpg",
            name.replace('#', "+"),
            source.addr.port(),
            seq
        ),
        None => format!("{}-{:08}.jpg", source.slug(), seq),
    }
}

#[derive(Default)]
struct Counts {
    saved: AtomicU64,
    skipped: AtomicU64,
    failed: AtomicU64,
}

/// What one source has queued.
#[derive(Default)]
struct SourceQueue {
    jobs: VecDeque<SaveJob>,
    bytes: usize,
}

/// The frames waiting, per source, and the round-robin order of the sources with any.
#[derive(Default)]
struct Queue {
    per_source: HashMap<SourceId, SourceQueue>,
    order: VecDeque<SourceId>,
    bytes: usize,
    frames: usize,
    /// Every [`Saver`] is gone: write out what is queued and stop.
    closed: bool,
}

impl Queue {
    /// The source other than `me` with the most queued frames (`by_frames`) or bytes, if it
    /// holds more than `me` would after adding `me_adds` (frames or bytes).
    fn biggest_other(&self, me: &SourceId, by_frames: bool, me_adds: usize) -> Option<SourceId> {
        let size = |q: &SourceQueue| if by_frames { q.jobs.len() } else { q.bytes };
        let mine = self.per_source.get(me).map_or(0, size) + me_adds;
        self.per_source
            .iter()
            .filter(|(id, q)| *id != me && size(q) > mine)
            .max_by_key(|(_, q)| size(q))
            .map(|(id, _)| *id)
    }

    /// Drop the newest frame of `source`.
    fn evict_newest(&mut self, source: &SourceId) -> Option<SaveJob> {
        let q = self.per_source.get_mut(source)?;
        let job = q.jobs.pop_back()?;
        q.bytes -= job.jpeg.len();
        self.bytes -= job.jpeg.len();
        self.frames -= 1;
        if q.jobs.is_empty() {
            self.per_source.remove(source);
            self.order.retain(|id| id != source);
        }
        Some(job)
    }

    fn push(&mut self, job: SaveJob) {
        let len = job.jpeg.len();
        let q = self.per_source.entry(job.source).or_default();
        if q.jobs.is_empty() {
            self.order.push_back(job.source);
        }
        q.bytes += len;
        q.jobs.push_back(job);
        self.bytes += len;
        self.frames += 1;
    }

    /// The next frame to write: the oldest of the source whose turn it is.
    fn pop_round_robin(&mut self) -> Option<SaveJob> {
        let source = self.order.pop_front()?;
        let q = self.per_source.get_mut(&source)?;
        let job = q.jobs.pop_front()?;
        q.bytes -= job.jpeg.len();
        if q.jobs.is_empty() {
            self.per_source.remove(&source);
        } else {
            self.order.push_back(source);
        }
        self.bytes -= job.jpeg.len();
        self.frames -= 1;
        Some(job)
    }
}

struct Shared {
    queue: Mutex<Queue>,
    ready: Condvar,
    counts: Counts,
    max_queued_bytes: usize,
    max_queued_frames: usize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Closes the queue when the last [`Saver`] clone is dropped.
struct CloseOnDrop(Arc<Shared>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.lock().closed = true;
        self.0.ready.notify_all();
    }
}

/// The sending side, cloned into every service thread. The writer thread ends once every
/// clone is dropped and the queue is written out.
#[derive(Clone)]
pub struct Saver {
    shared: Arc<Shared>,
    _close: Arc<CloseOnDrop>,
    every: u64,
}

/// What the writer did, for the summary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SaverReport {
    pub saved: u64,
    pub skipped: u64,
    pub failed: u64,
}

/// Handle to join the writer thread.
pub struct SaverThread {
    handle: JoinHandle<()>,
    shared: Arc<Shared>,
}

impl SaverThread {
    pub fn join(self) -> SaverReport {
        let _ = self.handle.join();
        let c = &self.shared.counts;
        SaverReport {
            saved: c.saved.load(Relaxed),
            skipped: c.skipped.load(Relaxed),
            failed: c.failed.load(Relaxed),
        }
    }
}

/// Create `dir` if needed, index what it holds, and start the writer thread. `every` = N
/// keeps frames 1, N+1, 2N+1… of each source; the queue holds at most `max_queued_bytes`;
/// the folder at most `max_dir_bytes` of frames.
pub fn spawn(
    dir: &Path,
    every: u64,
    max_queued_bytes: usize,
    max_dir_bytes: u64,
) -> io::Result<(Saver, SaverThread)> {
    let save_dir = SaveDir::open(dir, max_dir_bytes)?;
    let shared = Arc::new(Shared {
        queue: Mutex::new(Queue::default()),
        ready: Condvar::new(),
        counts: Counts::default(),
        max_queued_bytes,
        max_queued_frames: QUEUE_FRAMES,
    });
    let s = shared.clone();
    let handle = std::thread::Builder::new()
        .name("saver".into())
        .spawn(move || write_loop(save_dir, &s))?;
    let saver = Saver {
        shared: shared.clone(),
        _close: Arc::new(CloseOnDrop(shared.clone())),
        every: every.max(1),
    };
    Ok((saver, SaverThread { handle, shared }))
}

impl Saver {
    /// Queue frame `seq` (1-based) of `source` if it is one to keep. Never blocks (beyond
    /// the queue's lock, held for a few pointer moves).
    pub fn offer(&self, source: SourceId, name: Option<&Arc<str>>, seq: u64, jpeg: &Arc<Vec<u8>>) {
        if (seq - 1) % self.every != 0 {
            return;
        }
        let len = jpeg.len();
        let shared = &*self.shared;
        let mut queue = shared.lock();
        loop {
            let over_frames = queue.frames + 1 > shared.max_queued_frames;
            let over_bytes = queue.bytes + len > shared.max_queued_bytes;
            if !over_frames && !over_bytes {
                break;
            }
            let victim =
                queue.biggest_other(&source, over_frames, if over_frames { 1 } else { len });
            match victim.and_then(|v| queue.evict_newest(&v)) {
                Some(evicted) => self.skip(evicted.source, evicted.seq),
                None => {
                    drop(queue);
                    self.skip(source, seq);
                    return;
                }
            }
        }
        queue.push(SaveJob {
            source,
            name: name.cloned(),
            seq,
            jpeg: jpeg.clone(),
        });
        drop(queue);
        shared.ready.notify_one();
    }

    fn skip(&self, source: SourceId, seq: u64) {
        let counts = &self.shared.counts;
        if counts.skipped.fetch_add(1, Relaxed) % 100 == 0 {
            log::warn!(
                "save: the disk is behind or {source} is over its share of the queue: frame \
                 {seq} not saved (skipped so far: {})",
                counts.skipped.load(Relaxed)
            );
        }
    }
}

/// How long the writer waits for work before looking at the queue again.
const IDLE_WAIT: Duration = Duration::from_secs(1);

fn write_loop(mut save_dir: SaveDir, shared: &Shared) {
    let mut outage = WriteOutage::default();
    loop {
        let job = {
            let mut queue = shared.lock();
            loop {
                if let Some(job) = queue.pop_round_robin() {
                    break job;
                }
                if queue.closed {
                    return;
                }
                queue = shared
                    .ready
                    .wait_timeout(queue, IDLE_WAIT)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
        };
        let name = file_name(&job.source, job.name.as_deref(), job.seq);
        match save_dir.save(&name, &job.jpeg) {
            Ok(()) => {
                shared.counts.saved.fetch_add(1, Relaxed);
                outage.succeeded("save: --save-dir");
            }
            Err(e) => {
                shared.counts.failed.fetch_add(1, Relaxed);
                outage.failed(&format!("save: {name}"), &e, Instant::now());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::source::Service;
    use std::fs;

    fn src(port: u16) -> SourceId {
        SourceId {
            service: Service::Img,
            addr: ([127, 0, 0, 1], port).into(),
        }
    }

    #[test]
    fn saves_every_nth_frame_byte_identical() {
        let dir = tempfile::tempdir().unwrap();
        let (saver, thread) = spawn(dir.path(), 2, 1 << 20, 1 << 30).unwrap();
        for seq in 1..=5u64 {
            saver.offer(src(7), None, seq, &Arc::new(vec![seq as u8; 10]));
        }
        drop(saver);
        let report = thread.join();
        assert_eq!(
            report,
            SaverReport {
                saved: 3,
                skipped: 0,
                failed: 0
            }
        );
        let mut names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "udp-127.0.0.1-7-00000001.jpg",
                "udp-127.0.0.1-7-00000003.jpg",
                "udp-127.0.0.1-7-00000005.jpg"
            ]
        );
        assert_eq!(fs::read(dir.path().join(&names[1])).unwrap(), vec![3u8; 10]);
    }

    #[test]
    fn a_full_queue_skips_instead_of_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let (saver, thread) = spawn(dir.path(), 1, 25, 1 << 30).unwrap();
        // 10-byte frames against a 25-byte budget: whatever the writer has not taken yet
        // bounds the queue, so some of 1000 offers are skipped and none blocks
        for seq in 1..=1000u64 {
            saver.offer(src(8), None, seq, &Arc::new(vec![0; 10]));
        }
        drop(saver);
        let report = thread.join();
        assert_eq!(report.saved + report.skipped, 1000);
        assert_eq!(report.failed, 0);
    }

    #[test]
    fn ipv6_names_have_no_colons() {
        let id = SourceId {
            service: Service::Tcp,
            addr: "[::1]:9".parse().unwrap(),
        };
        assert_eq!(file_name(&id, None, 12), "tcp-__1-9-00000012.jpg");
        assert_eq!(file_name(&id, Some("cam#2"), 12), "cam+2-9-00000012.jpg");
    }

    #[test]
    fn a_source_of_many_tiny_frames_cannot_crowd_out_another() {
        // the writer thread is not started: only the queue's admission rule is looked at
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            ready: Condvar::new(),
            counts: Counts::default(),
            max_queued_bytes: 100_000,
            max_queued_frames: 64,
        });
        let saver = Saver {
            shared: shared.clone(),
            _close: Arc::new(CloseOnDrop(shared.clone())),
            every: 1,
        };
        let tiny = Arc::new(vec![0u8; 5]);
        let camera = Arc::new(vec![1u8; 20_000]);
        for seq in 1..=10_000 {
            saver.offer(src(1), None, seq, &tiny);
        }
        for seq in 1..=4 {
            saver.offer(src(2), None, seq, &camera);
        }
        let mut queue = shared.lock();
        assert_eq!(
            queue.per_source[&src(2)].jobs.len(),
            4,
            "every camera frame queued"
        );
        assert!(queue.frames <= 64 && queue.bytes <= 100_000);
        // round robin: the camera's frames come out in the first turns, not after the flood
        let first: Vec<SourceId> = (0..8)
            .map(|_| queue.pop_round_robin().unwrap().source)
            .collect();
        assert_eq!(first.iter().filter(|s| **s == src(2)).count(), 4);
        drop(queue);
        assert_eq!(shared.counts.skipped.load(Relaxed), 10_000 + 4 - 64);
    }

    #[test]
    fn a_big_frame_source_cannot_crowd_out_a_small_one_by_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            ready: Condvar::new(),
            counts: Counts::default(),
            max_queued_bytes: 100_000,
            max_queued_frames: 1024,
        });
        let saver = Saver {
            shared: shared.clone(),
            _close: Arc::new(CloseOnDrop(shared.clone())),
            every: 1,
        };
        for seq in 1..=100 {
            saver.offer(src(1), None, seq, &Arc::new(vec![0u8; 30_000]));
        }
        saver.offer(src(2), None, 1, &Arc::new(vec![0u8; 20_000]));
        assert_eq!(shared.lock().per_source[&src(2)].jobs.len(), 1);
        assert!(shared.lock().bytes <= 100_000);
        // and the queue drains to the folder once the writer runs
        drop(saver);
        write_loop(SaveDir::open(dir.path(), 1 << 30).unwrap(), &shared);
        assert!(dir.path().join("udp-127.0.0.1-2-00000001.jpg").exists());
    }
}
