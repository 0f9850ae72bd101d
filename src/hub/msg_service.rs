//! The UDP message service: one JSON value per datagram, answered `get the msg`.
//!
//! Which reply a datagram gets, and that a message is acknowledged only once it is
//! recorded, is decided by the socket-free [`crate::proto::msg_receiver`]; this loop moves
//! datagrams in and replies out, and does the recording. With `--msg-log`, each valid
//! message is appended to the log as one JSON line *before* the reply is sent (an
//! unbuffered write, so it is in the kernel once `write` returns): a message that was
//! answered is never lost, even on Ctrl-C. Invalid datagrams get a short error reply and a
//! log line with the detail.
//!
//! The loop waits on nothing but the socket: per message it parses, counts (atomics), hands
//! the text to the HTTP view under a lock it only tries to take (see
//! [`Stats::try_set_last_message`]), and replies; with `--msg-log`, one `write` of the line.

use super::net::{is_timeout, LogLimiter};
use super::source::Service;
use super::stats::{SourceCache, Stats};
use crate::proto::msg_receiver::{MsgReceiver, Received};
use crate::shutdown::{wait_until, ReadTimeout, Shutdown};
use crate::wire::seed_msg::single_line;
use crate::wire::MAX_UDP_PAYLOAD;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// The `--msg-log` file: one JSON object per line.
pub struct MsgLog {
    file: File,
    line: Vec<u8>,
}

impl MsgLog {
    /// Open `path` for appending, creating it if needed.
    pub fn open(path: &Path) -> io::Result<MsgLog> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(MsgLog {
            file,
            line: Vec::with_capacity(256),
        })
    }

    /// Append `{"ts": <unix seconds>, "from": "ip:port", "msg": <json_text>}` in one write.
    pub fn append(&mut self, from: SocketAddr, json_text: &str) -> io::Result<()> {
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        self.line.clear();
        writeln!(
            self.line,
            "{{\"ts\": {ts:.6}, \"from\": \"{from}\", \"msg\": {}}}",
            single_line(json_text)
        )?;
        self.file.write_all(&self.line)
    }

    /// Push what was written to the disk.
    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }
}

/// Run the message service on `socket` until shutdown.
/// With a `tap` (a program embedding the hub), every recorded message is also offered to it.
pub fn run(
    socket: UdpSocket,
    mut log_file: Option<MsgLog>,
    tap: Option<Arc<super::MessageTap>>,
    stats: Arc<Stats>,
    shutdown: Shutdown,
) {
    let mut receiver = MsgReceiver::new();
    let mut read_timeout = ReadTimeout::new();
    let mut sources = SourceCache::new(Service::Msg, stats.clone());
    let mut limiter = LogLimiter::new(10);
    let mut buf = vec![0u8; MAX_UDP_PAYLOAD + 1];
    // The newest message when the HTTP view was reading the previous one at that moment
    // (rare): offered again at the next message or poll tick, never waited for.
    let mut unpublished: Option<(SocketAddr, String, f64)> = None;
    while !shutdown.is_triggered() {
        let wait = wait_until(receiver.poll_timeout(), Instant::now());
        if let Err(e) = read_timeout.set(wait, |t| socket.set_read_timeout(t)) {
            log::error!("msg: cannot set the socket timeout: {e}");
            return;
        }
        let (n, from) = match socket.recv_from(&mut buf) {
            Ok(r) => r,
            Err(e) if is_timeout(&e) => {
                if let Some((from, text, at_s)) = &unpublished {
                    if stats.try_set_last_message(*from, text, *at_s) {
                        unpublished = None;
                    }
                }
                continue;
            }
            Err(e) => {
                if let Some(suppressed) = limiter.allow(Instant::now()) {
                    log::warn!("msg: receive error: {e}{suppressed}");
                }
                continue;
            }
        };
        match receiver.handle_datagram(from, &buf[..n], Instant::now()) {
            Received::Message(text) => {
                let recorded = match &mut log_file {
                    None => Ok(()),
                    Some(log_file) => log_file.append(from, text),
                };
                if let Err(e) = &recorded {
                    if let Some(suppressed) = limiter.allow(Instant::now()) {
                        log::error!("msg: cannot write the message log: {e}{suppressed}");
                    }
                }
                receiver.handle_recorded(recorded.is_ok());
                if recorded.is_ok() {
                    sources.record_item(from, n);
                    if let Some(tap) = &tap {
                        tap.offer(from, text);
                    }
                    let at_s = stats.uptime().as_secs_f64();
                    unpublished = (!stats.try_set_last_message(from, text, at_s))
                        .then(|| (from, text.to_owned(), at_s));
                    log::debug!("msg: from {from}: {text}");
                }
            }
            Received::Invalid(e) => {
                sources.get(from).corrupt.fetch_add(1, Relaxed);
                if let Some(suppressed) = limiter.allow(Instant::now()) {
                    log::warn!("msg: {n}-byte datagram from {from} is {e}{suppressed}");
                }
            }
        }
        while let Some(t) = receiver.poll_transmit() {
            if let Err(e) = socket.send_to(&t.payload, t.to) {
                log::debug!("msg: cannot reply to {}: {e}", t.to);
            }
        }
    }
    if let Some(log_file) = &log_file {
        if let Err(e) = log_file.sync() {
            log::error!("msg: cannot flush the message log: {e}");
        }
    }
    log::debug!("msg: stopped");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_are_json_objects_with_the_message_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.jsonl");
        let mut log = MsgLog::open(&path).unwrap();
        let from: SocketAddr = "127.0.0.1:4242".parse().unwrap();
        log.append(from, "[0, 0, 0, 1]").unwrap();
        log.append(
            from,
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
    }
}
