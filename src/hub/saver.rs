//! `--save-dir`: writes every Nth intact frame to disk on a thread of its own.
//!
//! Files are named `{transport}-{ip}-{port}-{seq:08}.jpg` and written atomically: the bytes
//! go to a hidden temp file in the same folder, which is then renamed, so a reader never
//! sees half a frame. The queue is bounded in bytes; when the disk falls behind, frames are
//! skipped (and counted) rather than ever blocking a receiving thread.

use super::source::SourceId;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Frames waiting to be written, at most.
const QUEUE_FRAMES: usize = 1024;

/// A frame to save.
pub struct SaveJob {
    pub source: SourceId,
    pub seq: u64,
    pub jpeg: Arc<Vec<u8>>,
}

/// The name a frame is saved under.
pub fn file_name(source: &SourceId, seq: u64) -> String {
    format!("{}-{:08}.jpg", source.slug(), seq)
}

#[derive(Default)]
struct Counts {
    queued_bytes: AtomicUsize,
    saved: AtomicU64,
    skipped: AtomicU64,
    failed: AtomicU64,
}

/// The sending side, cloned into every service thread. The writer thread ends once every
/// clone is dropped and the queue is written out.
#[derive(Clone)]
pub struct Saver {
    tx: SyncSender<SaveJob>,
    counts: Arc<Counts>,
    every: u64,
    max_queued_bytes: usize,
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
    counts: Arc<Counts>,
}

impl SaverThread {
    pub fn join(self) -> SaverReport {
        let _ = self.handle.join();
        SaverReport {
            saved: self.counts.saved.load(Relaxed),
            skipped: self.counts.skipped.load(Relaxed),
            failed: self.counts.failed.load(Relaxed),
        }
    }
}

/// Create `dir` if needed and start the writer thread. `every` = N keeps frames 1, N+1, 2N+1…
/// of each source.
pub fn spawn(dir: &Path, every: u64, max_queued_bytes: usize) -> io::Result<(Saver, SaverThread)> {
    fs::create_dir_all(dir)?;
    let (tx, rx) = mpsc::sync_channel(QUEUE_FRAMES);
    let counts = Arc::new(Counts::default());
    let dir = dir.to_path_buf();
    let c = counts.clone();
    let handle = std::thread::Builder::new()
        .name("saver".into())
        .spawn(move || write_loop(&dir, rx, &c))?;
    let saver = Saver {
        tx,
        counts: counts.clone(),
        every: every.max(1),
        max_queued_bytes,
    };
    Ok((saver, SaverThread { handle, counts }))
}

impl Saver {
    /// Queue frame `seq` (1-based) of `source` if it is one to keep. Never blocks.
    pub fn offer(&self, source: SourceId, seq: u64, jpeg: &Arc<Vec<u8>>) {
        if (seq - 1) % self.every != 0 {
            return;
        }
        let len = jpeg.len();
        if self.counts.queued_bytes.load(Relaxed) + len > self.max_queued_bytes {
            self.skip(source, seq);
            return;
        }
        self.counts.queued_bytes.fetch_add(len, Relaxed);
        let job = SaveJob {
            source,
            seq,
            jpeg: jpeg.clone(),
        };
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = self.tx.try_send(job) {
            self.counts.queued_bytes.fetch_sub(len, Relaxed);
            self.skip(source, seq);
        }
    }

    fn skip(&self, source: SourceId, seq: u64) {
        if self.counts.skipped.fetch_add(1, Relaxed) % 100 == 0 {
            log::warn!(
                "save: the disk is behind, frame {seq} of {source} not saved (skipped so far: {})",
                self.counts.skipped.load(Relaxed)
            );
        }
    }
}

fn write_loop(dir: &Path, rx: Receiver<SaveJob>, counts: &Counts) {
    for job in rx {
        let path = dir.join(file_name(&job.source, job.seq));
        match write_atomically(&path, &job.jpeg) {
            Ok(()) => {
                counts.saved.fetch_add(1, Relaxed);
            }
            Err(e) => {
                if counts.failed.fetch_add(1, Relaxed) % 100 == 0 {
                    log::error!("save: cannot write {}: {e}", path.display());
                }
            }
        }
        counts.queued_bytes.fetch_sub(job.jpeg.len(), Relaxed);
    }
}

/// Write `bytes` to `path` through a temp file and a rename.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("frame");
    let tmp: PathBuf = path.with_file_name(format!(".{name}.tmp"));
    let result = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.flush()?;
        drop(f);
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::source::Service;

    fn src(port: u16) -> SourceId {
        SourceId {
            service: Service::Img,
            addr: ([127, 0, 0, 1], port).into(),
        }
    }

    #[test]
    fn saves_every_nth_frame_byte_identical() {
        let dir = tempfile::tempdir().unwrap();
        let (saver, thread) = spawn(dir.path(), 2, 1 << 20).unwrap();
        for seq in 1..=5u64 {
            saver.offer(src(7), seq, &Arc::new(vec![seq as u8; 10]));
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
        let (saver, thread) = spawn(dir.path(), 1, 25).unwrap();
        // 10-byte frames against a 25-byte budget: whatever the writer has not taken yet
        // bounds the queue, so some of 1000 offers are skipped and none blocks
        for seq in 1..=1000u64 {
            saver.offer(src(8), seq, &Arc::new(vec![0; 10]));
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
        assert_eq!(file_name(&id, 12), "tcp-__1-9-00000012.jpg");
    }
}
