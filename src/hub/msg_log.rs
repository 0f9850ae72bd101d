//! The `--msg-log` file: one JSON line per recorded message, rotated by size, and a write
//! that recovers by itself once the disk has room again. The writer ([`LineLog`]) takes any
//! lines: `--frame-log` ([`super::frame_log`]) writes through it too, with the same bounds.
//!
//! Why rotation: a log that only grows fills its disk (issue 11: 216 MB/s from one sender).
//! The live file `FILE` holds at most `--msg-log-max-bytes`; when the next line would not
//! fit, `FILE.{keep-1}` becomes `FILE.{keep}` (the oldest, `FILE.{keep}`, is overwritten), …,
//! `FILE` becomes `FILE.1`, and a new `FILE` is started. So the log never holds more than
//! `max_bytes × (keep + 1)` bytes.
//!
//! Why the truncate on error: a write that fails part-way (disk full) would leave half a
//! line that breaks every reader of the file. The file is cut back to the last whole line,
//! the caller answers the message as not recorded, and the next message tries again
//! (reopening the file if it could not be cut back): no restart is needed once space
//! returns. [`WriteOutage`] logs such an outage once when it starts and once when it ends.

use crate::wire::seed_msg::single_line;
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The smallest `--msg-log-max-bytes`: one largest message's line must fit in a file.
pub const MIN_MAX_BYTES: u64 = 128 << 10;

/// The `k`th rotated file of `base`: `base` itself for 0, else `base.k`.
pub fn rotated_path(base: &Path, k: u32) -> PathBuf {
    if k == 0 {
        return base.to_path_buf();
    }
    let mut name = OsString::from(base.as_os_str());
    name.push(format!(".{k}"));
    PathBuf::from(name)
}

/// The message log's writer, for any lines. See the module documentation.
pub struct LineLog {
    path: PathBuf,
    max_bytes: u64,
    keep: u32,
    /// `None` after a failure the file could not be cut back from: reopened on the next
    /// append.
    file: Option<File>,
    /// Bytes in the live file, whole lines only.
    len: u64,
    /// Not a regular file (`/dev/stdout`, a FIFO, `/dev/full`): never renamed or cut.
    special: bool,
    line: Vec<u8>,
}

/// The `--msg-log` file.
pub type MsgLog = LineLog;

impl LineLog {
    /// Open `path` for appending (creating it if needed); rotate past `max_bytes` (at least
    /// [`MIN_MAX_BYTES`]), keeping `keep` older files.
    pub fn open(path: &Path, max_bytes: u64, keep: u32) -> io::Result<LineLog> {
        let mut log = LineLog {
            path: path.to_path_buf(),
            max_bytes: max_bytes.max(MIN_MAX_BYTES),
            keep,
            file: None,
            len: 0,
            special: false,
            line: Vec::with_capacity(256),
        };
        log.reopen()?;
        Ok(log)
    }

    fn reopen(&mut self) -> io::Result<&mut File> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        let meta = file.metadata()?;
        self.special = !meta.is_file();
        self.len = meta.len();
        Ok(self.file.insert(file))
    }

    /// Append `{"ts": <unix seconds>, "from": "ip:port", "msg": <json_text>}` in one write
    /// (with a `"name"` after `"from"` for a named sender: the name as shown, which is in
    /// a JSON-safe alphabet), rotating first if the line would take the file past its cap.
    /// On an error nothing of the line is left in the file (as far as the file system
    /// lets it be cut back).
    pub fn append(
        &mut self,
        from: SocketAddr,
        name: Option<&str>,
        json_text: &str,
    ) -> io::Result<()> {
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        self.line.clear();
        match name {
            None => writeln!(
                self.line,
                "{{\"ts\": {ts:.6}, \"from\": \"{from}\", \"msg\": {}}}",
                single_line(json_text)
            )?,
            Some(name) => writeln!(
                self.line,
                "{{\"ts\": {ts:.6}, \"from\": \"{from}\", \"name\": \"{name}\", \"msg\": {}}}",
                single_line(json_text)
            )?,
        }
        let line = std::mem::take(&mut self.line);
        let result = self.append_line(&line);
        self.line = line;
        result
    }

    /// Append `line` (one or more whole lines, each ending in `\n`) in one write, rotating
    /// first if it would take the file past its cap. On an error nothing of it is left in
    /// the file (as far as the file system lets it be cut back).
    pub fn append_line(&mut self, line: &[u8]) -> io::Result<()> {
        let line_len = line.len() as u64;
        if self.file.is_none() {
            self.reopen()?;
        }
        if !self.special && self.len > 0 && self.len + line_len > self.max_bytes {
            self.rotate()?;
        }
        let len = self.len;
        let Some(file) = self.file.as_mut() else {
            return Err(io::Error::other("the log file is not open"));
        };
        match file.write_all(line) {
            Ok(()) => {
                self.len += line_len;
                Ok(())
            }
            Err(e) => {
                if self.special || file.set_len(len).is_err() {
                    self.file = None;
                }
                Err(e)
            }
        }
    }

    /// Shift `FILE.{k}` to `FILE.{k+1}` (the last one is overwritten), `FILE` to `FILE.1`,
    /// and start a new `FILE`; with `keep` 0, `FILE` is started again empty.
    fn rotate(&mut self) -> io::Result<()> {
        self.file = None;
        let result = (|| {
            if self.keep == 0 {
                return fs::remove_file(&self.path);
            }
            for k in (1..self.keep).rev() {
                match fs::rename(rotated_path(&self.path, k), rotated_path(&self.path, k + 1)) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
            fs::rename(&self.path, rotated_path(&self.path, 1))
        })();
        match result {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => self.reopen().map(|_| ()),
        }
    }

    /// Push what was written to the disk.
    pub fn sync(&self) -> io::Result<()> {
        match &self.file {
            Some(file) => file.sync_data(),
            None => Ok(()),
        }
    }
}

/// How often an outage that goes on is logged again.
const OUTAGE_REMINDER: Duration = Duration::from_secs(60);

/// Logs a run of write failures once when it starts (and once a minute while it lasts),
/// and once when writing works again, with how many writes failed: a full disk gives a
/// handful of lines, not one per message.
#[derive(Debug, Default)]
pub struct WriteOutage {
    failures: u64,
    last_logged: Option<Instant>,
}

impl WriteOutage {
    /// A write of `what` failed with `e` at `now`.
    pub fn failed(&mut self, what: &str, e: &io::Error, now: Instant) {
        self.failures += 1;
        let due = self
            .last_logged
            .is_none_or(|t| now.saturating_duration_since(t) >= OUTAGE_REMINDER);
        if self.failures == 1 || due {
            self.last_logged = Some(now);
            log::error!(
                "{what}: cannot write: {e} ({} failed so far; retried at each new write)",
                self.failures
            );
        }
    }

    /// A write of `what` worked: if it ends an outage, say so.
    pub fn succeeded(&mut self, what: &str) {
        if self.failures > 0 {
            log::warn!(
                "{what}: writing again after {} failed writes",
                self.failures
            );
            self.failures = 0;
            self.last_logged = None;
        }
    }

    /// Whether the last write failed.
    pub fn is_failing(&self) -> bool {
        self.failures > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from() -> SocketAddr {
        "127.0.0.1:4242".parse().unwrap()
    }

    #[test]
    fn log_lines_are_json_objects_with_the_message_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.jsonl");
        let mut log = MsgLog::open(&path, 1 << 20, 2).unwrap();
        log.append(from(), None, "[0, 0, 0, 1]").unwrap();
        log.append(
            from(),
            Some("pi-1"),
            "{\"big\": 123456789012345678901234567890,\n \"s\": \"a\\nb\"}",
        )
        .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        let first: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(first["from"], "127.0.0.1:4242");
        assert_eq!(first["msg"], serde_json::json!([0, 0, 0, 1]));
        assert!(first["ts"].as_f64().unwrap() > 1.7e9);
        assert!(
            lines[1].contains("123456789012345678901234567890"),
            "big number kept exactly"
        );
        let second: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
        assert_eq!(second["msg"]["s"], "a\nb");
        assert_eq!(
            (first.get("name"), &second["name"]),
            (None, &serde_json::json!("pi-1"))
        );
    }

    #[test]
    fn rotated_names_are_file_dot_k() {
        let base = Path::new("/var/log/m.jsonl");
        assert_eq!(rotated_path(base, 0), base);
        assert_eq!(rotated_path(base, 1), Path::new("/var/log/m.jsonl.1"));
        assert_eq!(rotated_path(base, 12), Path::new("/var/log/m.jsonl.12"));
    }

    #[test]
    fn rotation_keeps_n_files_each_within_the_cap_and_the_newest_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.jsonl");
        let mut log = MsgLog::open(&path, MIN_MAX_BYTES, 2).unwrap();
        let payload = format!("\"{}\"", "x".repeat(1000));
        for i in 0..1000 {
            log.append(from(), None, &format!("[{i}, {payload}]"))
                .unwrap();
        }
        let mut names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["m.jsonl", "m.jsonl.1", "m.jsonl.2"]);
        let mut last_of_older = None;
        for k in [2, 1, 0] {
            let text = fs::read_to_string(rotated_path(&path, k)).unwrap();
            assert!(
                text.len() as u64 <= MIN_MAX_BYTES,
                "file {k}: {}",
                text.len()
            );
            let firsts: Vec<i64> = text
                .lines()
                .map(|l| {
                    serde_json::from_str::<serde_json::Value>(l).unwrap()["msg"][0]
                        .as_i64()
                        .unwrap()
                })
                .collect();
            // lines follow on from the older file, without a gap
            if let Some(prev) = last_of_older {
                assert_eq!(firsts[0], prev + 1, "file {k}");
            }
            last_of_older = firsts.last().copied();
        }
        assert_eq!(last_of_older, Some(999), "the newest line is in FILE");
    }

    #[test]
    fn keep_zero_starts_the_file_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.jsonl");
        let mut log = MsgLog::open(&path, MIN_MAX_BYTES, 0).unwrap();
        let payload = "y".repeat(10_000);
        for i in 0..100 {
            log.append(from(), None, &format!("[{i}, \"{payload}\"]"))
                .unwrap();
        }
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
        assert!(fs::metadata(&path).unwrap().len() <= MIN_MAX_BYTES);
    }

    #[test]
    fn an_existing_log_is_appended_to_and_counted_against_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.jsonl");
        fs::write(&path, vec![b'\n'; MIN_MAX_BYTES as usize - 10]).unwrap();
        let mut log = MsgLog::open(&path, MIN_MAX_BYTES, 1).unwrap();
        log.append(from(), None, "[1]").unwrap();
        assert_eq!(
            fs::metadata(rotated_path(&path, 1)).unwrap().len(),
            MIN_MAX_BYTES - 10
        );
        assert!(fs::read_to_string(&path).unwrap().contains("\"msg\": [1]"));
    }

    #[test]
    fn a_log_whose_file_was_removed_is_recreated_after_a_failure() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("sub");
        fs::create_dir(&sub).unwrap();
        let path = sub.join("m.jsonl");
        let mut log = MsgLog::open(&path, MIN_MAX_BYTES, 1).unwrap();
        log.append(from(), None, "[1]").unwrap();
        // the folder goes away: a reopen fails, then it comes back and the log is written
        fs::remove_dir_all(&sub).unwrap();
        log.file = None;
        assert!(log.append(from(), None, "[2]").is_err());
        fs::create_dir(&sub).unwrap();
        log.append(from(), None, "[3]").unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 1);
        assert!(text.contains("\"msg\": [3]"));
    }
}
