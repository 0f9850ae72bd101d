//! `hub --frame-log FILE`: one JSON line per delivered frame, from every image service
//! (framed and seed UDP, seed TCP), so a benchmark can read each frame's capture time,
//! arrival and latency afterwards:
//!
//! ```text
//! {"arrival_us": 1764787200123456, "source": "10.0.0.5:50000", "name": "cam", "frame": 17,
//!  "bytes": 66712, "capture_us": 1764787200101234, "latency_ms": 22.222,
//!  "clock": "synced", "quality": 90}
//! ```
//!
//! `arrival_us` is the hub's wall clock (µs since the Unix epoch) when the frame was
//! complete; `frame` the framed frame id, or the per-source count for seed frames;
//! `capture_us` the sender's capture time (framed: [`crate::wire::framed::CAPTURED`]; seed:
//! the JPEG's comment stamp, [`crate::jpegcheck::capture_stamp`]) or `null`; `latency_ms`
//! the latency on the hub's clock when `clock` is `synced`, else `null`; `quality` the
//! sender's JPEG quality, or `null`.
//!
//! The receiving threads never wait for the disk: a record goes into a bounded queue
//! ([`QUEUE`] records) that a writer thread empties; when it is full the record is dropped
//! and counted ([`FrameLog::dropped`]). The file is written through [`LineLog`] (the
//! `--msg-log` writer): rotated by size, recovering by itself after a full disk.

use super::msg_log::{LineLog, WriteOutage};
use crate::proto::framed_receiver::FrameTiming;
use crate::shutdown::{Shutdown, POLL_INTERVAL};
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Records waiting for the writer, at most.
pub const QUEUE: usize = 4096;

/// One delivered frame, as logged.
#[derive(Clone, Debug)]
pub struct FrameRecord {
    pub source: SocketAddr,
    pub name: Option<Arc<str>>,
    /// The framed frame id, or the per-source count of a seed frame.
    pub frame: u64,
    pub bytes: usize,
    pub timing: FrameTiming,
}

impl FrameRecord {
    /// The record's line (with its `\n`), appended to `out`.
    pub fn write_line(&self, out: &mut Vec<u8>) {
        let t = &self.timing;
        let name = match &self.name {
            Some(n) => serde_json::to_string(&**n).unwrap_or_else(|_| "null".into()),
            None => "null".into(),
        };
        let opt = |v: Option<String>| v.unwrap_or_else(|| "null".into());
        let _ = writeln!(
            out,
            "{{\"arrival_us\": {}, \"source\": \"{}\", \"name\": {name}, \"frame\": {}, \
             \"bytes\": {}, \"capture_us\": {}, \"latency_ms\": {}, \"clock\": \"{}\", \
             \"quality\": {}}}",
            t.arrival_us,
            self.source,
            self.frame,
            self.bytes,
            opt(t.capture_us.map(|c| c.to_string())),
            opt(t.latency_us.map(|l| format!("{:.3}", l as f64 / 1e3))),
            t.clock.as_str(),
            opt(t.quality.map(|q| q.to_string())),
        );
    }
}

/// The receiving threads' end of the frame log (cheap to clone).
#[derive(Clone)]
pub struct FrameLog {
    queue: SyncSender<FrameRecord>,
    dropped: Arc<AtomicU64>,
}

impl FrameLog {
    /// Queue a record; never waits. A full queue (the disk behind) drops it, counted.
    pub fn offer(&self, record: FrameRecord) {
        match self.queue.try_send(record) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Relaxed);
            }
        }
    }

    /// Records dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Relaxed)
    }
}

/// Start the writer on `log`. It ends once every [`FrameLog`] is dropped, or once
/// `shutdown` is set and the queue is empty, and says what it wrote and dropped.
pub fn spawn(mut log: LineLog, shutdown: Shutdown) -> std::io::Result<(FrameLog, JoinHandle<()>)> {
    let (tx, rx) = mpsc::sync_channel::<FrameRecord>(QUEUE);
    let dropped = Arc::new(AtomicU64::new(0));
    let handle = FrameLog {
        queue: tx,
        dropped: dropped.clone(),
    };
    let thread = std::thread::Builder::new()
        .name("frame-log".into())
        .spawn(move || {
            let mut line = Vec::with_capacity(256);
            let mut outage = WriteOutage::default();
            let (mut written, mut failed) = (0u64, 0u64);
            loop {
                let record = match rx.recv_timeout(POLL_INTERVAL) {
                    Ok(r) => r,
                    Err(RecvTimeoutError::Timeout) if shutdown.is_triggered() => break,
                    Err(RecvTimeoutError::Timeout) => continue,
                    Err(RecvTimeoutError::Disconnected) => break,
                };
                // take what else is queued into the same write
                line.clear();
                let mut n = 0;
                for r in std::iter::once(record).chain(rx.try_iter().take(255)) {
                    r.write_line(&mut line);
                    n += 1;
                }
                match log.append_line(&line) {
                    Ok(()) => {
                        written += n;
                        outage.succeeded("frame log");
                    }
                    Err(e) => {
                        failed += n;
                        outage.failed("frame log", &e, std::time::Instant::now());
                    }
                }
            }
            let dropped = dropped.load(Relaxed);
            if dropped > 0 || failed > 0 {
                log::warn!(
                    "frame log: {written} lines written, {dropped} dropped (the writer was \
                     behind), {failed} not written (write errors)"
                );
            } else {
                log::debug!("frame log: {written} lines written");
            }
        })?;
    Ok((handle, thread))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::framed_receiver::ClockSync;

    #[test]
    fn a_line_has_exactly_the_documented_keys() {
        let record = FrameRecord {
            source: "10.0.0.5:50000".parse().unwrap(),
            name: Some("cam#2".into()),
            frame: 17,
            bytes: 66712,
            timing: FrameTiming {
                arrival_us: 1_764_787_200_123_456,
                capture_us: Some(1_764_787_200_101_234),
                quality: Some(90),
                clock: ClockSync::Synced,
                offset_err_us: Some(120),
                latency_us: Some(22_222),
            },
        };
        let mut out = Vec::new();
        record.write_line(&mut out);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "{\"arrival_us\": 1764787200123456, \"source\": \"10.0.0.5:50000\", \"name\": \
             \"cam#2\", \"frame\": 17, \"bytes\": 66712, \"capture_us\": 1764787200101234, \
             \"latency_ms\": 22.222, \"clock\": \"synced\", \"quality\": 90}\n"
        );
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        let mut expected = [
            "arrival_us",
            "source",
            "name",
            "frame",
            "bytes",
            "capture_us",
            "latency_ms",
            "clock",
            "quality",
        ];
        expected.sort();
        assert_eq!(keys, expected);
        // a seed frame without a stamp
        let seed = FrameRecord {
            name: None,
            timing: FrameTiming::stamped(5, None),
            ..record
        };
        let mut out = Vec::new();
        seed.write_line(&mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["name"], serde_json::Value::Null);
        assert_eq!(v["capture_us"], serde_json::Value::Null);
        assert_eq!(v["latency_ms"], serde_json::Value::Null);
        assert_eq!(v["quality"], serde_json::Value::Null);
        assert_eq!(v["clock"], "none");
    }

    #[test]
    fn the_writer_writes_every_record_and_a_full_queue_drops_instead_of_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("frames.jsonl");
        let log = LineLog::open(&path, super::super::msg_log::MIN_MAX_BYTES, 1).unwrap();
        let shutdown = Shutdown::new();
        let (handle, thread) = spawn(log, shutdown).unwrap();
        let record = |frame| FrameRecord {
            source: "127.0.0.1:1".parse().unwrap(),
            name: None,
            frame,
            bytes: 10,
            timing: FrameTiming::arrived(1),
        };
        for i in 0..100 {
            handle.offer(record(i));
        }
        drop(handle);
        thread.join().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let frames: Vec<u64> = text
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["frame"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        assert_eq!(frames, (0..100).collect::<Vec<_>>());
        // no writer: the queue fills, and further records are dropped (counted) at once
        let (tx, _rx) = mpsc::sync_channel(2);
        let stalled = FrameLog {
            queue: tx,
            dropped: Arc::new(AtomicU64::new(0)),
        };
        for i in 0..5 {
            stalled.offer(record(i));
        }
        assert_eq!(stalled.dropped(), 3);
    }
}
