//! Bounded disk and the message budget (issue 11), end to end on loopback: a flood of
//! 65,000-byte JSON datagrams from one address while a legitimate sender keeps being acked
//! and logged, the log within `--msg-log-max-bytes × (keep + 1)`, `--save-dir` within
//! `--save-max-bytes`, and a full disk (a small tmpfs) that the hub records on again by
//! itself once space is freed.

mod common;

use common::*;
use serde_json::Value;
use std::fs;
use std::io::Write;
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

/// The log lines of `path` (every one must be a JSON object).
fn log_lines(path: &Path) -> Vec<Value> {
    let text = fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("a broken log line ({e}): {l:.80}"))
        })
        .collect()
}

/// Send `msg` and wait for its reply, sending again (at most 5 times, 1 s apart) if none
/// comes: a flood may fill the hub's receive buffer, and the kernel then drops any
/// datagram, the legitimate one too. Returns the reply and how many sends it took.
fn send_and_wait(sock: &UdpSocket, hub: SocketAddr, msg: &[u8]) -> (Vec<u8>, u32) {
    sock.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let mut buf = vec![0u8; 2048];
    for attempt in 1..=5 {
        send(sock, hub, msg);
        match sock.recv_from(&mut buf) {
            Ok((n, from)) => {
                assert_eq!(from, hub, "a reply from somewhere else");
                return (buf[..n].to_vec(), attempt);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("recv: {e}"),
        }
    }
    panic!("no reply to {} after 5 sends", String::from_utf8_lossy(msg));
}

/// A valid JSON message of exactly `len` bytes: `["flood", n, "xxx…"]`.
fn big_message(len: usize, n: u64) -> Vec<u8> {
    let head = format!("[\"flood\", {n}, \"");
    let mut m = head.into_bytes();
    m.resize(len - 2, b'x');
    m.extend_from_slice(b"\"]");
    m
}

#[test]
fn a_json_flood_from_one_address_cannot_take_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("m.jsonl");
    let max_bytes: u64 = 256 << 10;
    let keep = 2;
    let hub = HubProcess::start(&[
        "--msg-log",
        log.to_str().unwrap(),
        "--msg-log-max-bytes",
        &max_bytes.to_string(),
        "--msg-log-keep",
        &keep.to_string(),
        "--msg-budget-bytes-per-s",
        "1000000",
        "--json-summary",
    ]);
    let msg = hub.msg();
    // the flooder on another loopback address: the budget is shared per address
    let flooder = UdpSocket::bind("127.0.0.2:0").expect("bind 127.0.0.2");
    let legit = udp_client();
    let rounds = 100u64;
    let mut resent = 0;
    for i in 0..rounds {
        for k in 0..10 {
            let _ = flooder.send_to(&big_message(65_000, i * 10 + k), msg);
        }
        let text = format!("{{\"legit\": {i}}}");
        let (reply, sends) = send_and_wait(&legit, msg, text.as_bytes());
        assert_eq!(
            reply,
            MSG_ACK,
            "legit message {i}: {:?}",
            String::from_utf8_lossy(&reply)
        );
        resent += sends - 1;
    }
    let (status, stdout) = hub.stop("INT");
    assert!(status.success(), "hub exit {status:?}");
    println!("legit messages sent again after a lost datagram: {resent}");

    // the log rotated (the flood's first burst alone is past one file) and stayed in its cap
    let files: Vec<String> = list_dir(dir.path());
    assert_eq!(files, ["m.jsonl", "m.jsonl.1", "m.jsonl.2"], "log files");
    let mut total = 0;
    let mut legit_seen = std::collections::BTreeSet::new();
    let mut flood_lines = 0;
    for name in &files {
        let path = dir.path().join(name);
        let len = fs::metadata(&path).unwrap().len();
        assert!(len <= max_bytes, "{name} is {len} bytes");
        total += len;
        for line in log_lines(&path) {
            if let Some(i) = line["msg"]["legit"].as_u64() {
                legit_seen.insert(i);
            } else {
                assert_eq!(line["msg"][0], "flood");
                flood_lines += 1;
            }
        }
    }
    assert!(total <= max_bytes * (keep + 1), "log is {total} bytes");
    // every legitimate message since the oldest kept file began is there
    let first = *legit_seen.iter().next().expect("legit messages in the log");
    assert_eq!(
        legit_seen.len() as u64,
        rounds - first,
        "legit messages {first}.. missing: {legit_seen:?}"
    );
    assert!(
        legit_seen.contains(&(rounds - 1)),
        "the newest legit message"
    );
    assert!(flood_lines > 0);
    // the flood past its budget was counted as rejected, the legit sender's messages never
    let summary: Value = serde_json::from_str(stdout.lines().last().unwrap_or("")).unwrap();
    let msg_sources = summary["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["service"] == "msg")
        .map(|s| s["sources"].as_array().unwrap().clone())
        .unwrap_or_else(|| panic!("no msg service: {summary}"));
    let by_addr = |addr: SocketAddr| {
        msg_sources
            .iter()
            .find(|s| s["addr"] == addr.to_string())
            .unwrap_or_else(|| panic!("no source {addr}: {summary}"))
    };
    let legit_counts = by_addr(legit.local_addr().unwrap());
    assert_eq!(legit_counts["rejected"], 0, "{legit_counts}");
    assert!(
        legit_counts["items"].as_u64() >= Some(rounds),
        "{legit_counts}"
    );
    let flood_counts = by_addr(flooder.local_addr().unwrap());
    assert!(
        flood_counts["rejected"].as_u64() > Some(0),
        "{flood_counts}"
    );
}

#[test]
fn save_dir_stays_within_its_cap_counting_what_was_there() {
    let dir = tempfile::tempdir().unwrap();
    // left from an earlier run: two frames (counted, deleted first) and a file not ours
    fs::write(
        dir.path().join("udp-127.0.0.9-1-00000001.jpg"),
        vec![0u8; 30_000],
    )
    .unwrap();
    fs::write(
        dir.path().join("udp-127.0.0.9-1-00000002.jpg"),
        vec![0u8; 30_000],
    )
    .unwrap();
    fs::write(dir.path().join("notes.txt"), b"keep me").unwrap();
    let cap: u64 = 100_000;
    let hub = HubProcess::start(&[
        "--save-dir",
        dir.path().to_str().unwrap(),
        "--save-max-bytes",
        &cap.to_string(),
    ]);
    let sock = udp_client();
    let me = sock.local_addr().unwrap();
    let frames: Vec<Vec<u8>> = (0..20).map(|i| real_jpeg(20_000, i)).collect();
    for (i, frame) in frames.iter().enumerate() {
        send(&sock, hub.img(), frame);
        expect_reply(&sock, hub.img(), IMG_ACK, &format!("frame {i}"));
    }
    let (status, _) = hub.stop("INT");
    assert!(status.success(), "hub exit {status:?}");
    let names = list_dir(dir.path());
    let jpgs: Vec<&String> = names.iter().filter(|n| n.ends_with(".jpg")).collect();
    let total: u64 = jpgs
        .iter()
        .map(|n| fs::metadata(dir.path().join(n)).unwrap().len())
        .sum();
    assert!(total <= cap, "save dir holds {total} bytes: {names:?}");
    assert!(names.contains(&"notes.txt".to_string()), "{names:?}");
    // the newest frames are kept, the oldest (the earlier run's first) deleted
    let newest = saved_name("udp", me, 20);
    assert_eq!(fs::read(dir.path().join(&newest)).unwrap(), frames[19]);
    assert_eq!(jpgs.len(), 5, "{names:?}");
    assert!(
        !names.iter().any(|n| n.starts_with("udp-127.0.0.9")),
        "{names:?}"
    );
}

/// A tmpfs mounted on a fresh folder, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// `None` (with the reason printed) when not root: mounting needs it.
    fn mount(size: &str) -> Option<Tmpfs> {
        let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
        let euid = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap_or("");
        if euid != "0" {
            println!("SKIPPED: mounting a small tmpfs needs root (euid {euid:?})");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let run = run_bounded(
            Command::new("mount").args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size}"),
                "tmpfs",
                dir.path().to_str().unwrap(),
            ]),
            b"",
            Duration::from_secs(20),
        );
        assert!(run.status.success(), "mount tmpfs: {}", run.describe());
        Some(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = run_bounded(
            Command::new("umount").args(["-l", self.dir.path().to_str().unwrap()]),
            b"",
            Duration::from_secs(20),
        );
    }
}

/// Write a file until the file system is full; returns its path.
fn fill(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("filler");
    let mut f = fs::File::create(&path).unwrap();
    let chunk = vec![0xAAu8; 64 << 10];
    for _ in 0..10_000 {
        if let Err(e) = f.write_all(&chunk) {
            assert_eq!(e.raw_os_error(), Some(28), "expected ENOSPC, got {e}");
            return path;
        }
    }
    panic!("the tmpfs never filled");
}

#[test]
fn a_full_disk_is_answered_as_not_recorded_and_recording_resumes_by_itself() {
    let Some(tmpfs) = Tmpfs::mount("2m") else {
        return;
    };
    let log = tmpfs.path().join("m.jsonl");
    let saves = tmpfs.path().join("frames");
    let hub = HubProcess::start(&[
        "--msg-log",
        log.to_str().unwrap(),
        "--save-dir",
        saves.to_str().unwrap(),
        "--json-summary",
    ]);
    let sock = udp_client();
    let msg = hub.msg();
    let frame = real_jpeg(20_000, 1);
    let mut n = 0;
    let mut message = |tag: &str| {
        n += 1;
        format!("{{\"{tag}\": {n}}}")
    };
    for _ in 0..5 {
        send(&sock, msg, message("before").as_bytes());
        expect_reply(&sock, msg, MSG_ACK, "before the disk is full");
    }
    send(&sock, hub.img(), &frame);
    expect_reply(&sock, hub.img(), IMG_ACK, "frame 1");
    // the saver writes on a thread of its own after the ack: frame 1 is on disk before the
    // disk fills (CI once filled it first, and frame 1 failed too)
    let first = saves.join(saved_name("udp", sock.local_addr().unwrap(), 1));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !first.exists() {
        assert!(Instant::now() < deadline, "frame 1 was never saved");
        thread::sleep(Duration::from_millis(5));
    }

    // the disk fills. The log's last page may still hold a few lines (tmpfs allocates
    // whole pages): they are recorded until a line needs a new page. From then on every
    // message is still answered, as not recorded.
    let filler = fill(tmpfs.path());
    let not_recorded = b"error: the hub could not record the message";
    let mut fit_in_page = 0;
    loop {
        send(&sock, msg, message("full").as_bytes());
        let reply = recv_reply(&sock, msg, "on a full disk");
        if reply == not_recorded {
            break;
        }
        assert_eq!(reply, MSG_ACK);
        fit_in_page += 1;
        assert!(fit_in_page < 200, "the log never hit the full disk");
    }
    for _ in 0..20 {
        send(&sock, msg, message("full").as_bytes());
        expect_reply(&sock, msg, not_recorded, "on a full disk");
    }
    for _ in 0..3 {
        send(&sock, hub.img(), &frame);
        expect_reply(&sock, hub.img(), IMG_ACK, "frame on a full disk");
    }

    // space returns: recorded again, with no restart and no other action
    fs::remove_file(&filler).unwrap();
    for _ in 0..20 {
        send(&sock, msg, message("after").as_bytes());
        expect_reply(&sock, msg, MSG_ACK, "after space returned");
    }
    // the saver writes again too: a frame offered now is on disk once the hub has stopped
    send(&sock, hub.img(), &frame);
    expect_reply(&sock, hub.img(), IMG_ACK, "frame after space returned");
    let (status, stdout) = hub.stop("INT");
    assert!(status.success(), "hub exit {status:?}");

    // whole lines only (nothing half-written on the full disk), in order
    let lines = log_lines(&log);
    let tags: Vec<String> = lines
        .iter()
        .map(|l| l["msg"].as_object().unwrap().keys().next().unwrap().clone())
        .collect();
    assert_eq!(tags.len(), 25 + fit_in_page, "{tags:?}");
    assert!(tags[..5].iter().all(|t| t == "before"), "{tags:?}");
    let after_full = 5 + fit_in_page;
    assert!(tags[5..after_full].iter().all(|t| t == "full"), "{tags:?}");
    assert!(tags[after_full..].iter().all(|t| t == "after"), "{tags:?}");
    let summary: Value = serde_json::from_str(stdout.lines().last().unwrap_or("")).unwrap();
    let saved = summary["saved"]["saved"].as_u64();
    let me = sock.local_addr().unwrap();
    assert!(
        saves.join(saved_name("udp", me, 5)).exists(),
        "the frame after space returned is saved: {summary}"
    );
    assert!(saved >= Some(2), "{summary}");
}
