//! Shared helpers for the `hub` integration tests: start and stop a real `hub` process on
//! OS-chosen loopback ports, and speak the seed wire formats to it.
//!
//! The wire helpers here are written independently of the library (straight from the seed
//! Python scripts), so a bug shared by the library's emitters and parsers cannot hide.
//!
//! Every wait is bounded. Nothing sleeps in place of a condition: replies that must come are
//! awaited with a socket read timeout, and replies that must NOT come are counted after the
//! hub has exited (on loopback every datagram the hub sent is then already queued on the
//! client socket, so [`drain_nonblocking`] sees all of them).
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, ErrorKind, Read};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// The image ack, byte for byte as the seed server sends it (`"get message!!!".encode()`).
pub const IMG_ACK: &[u8] = b"get message!!!";
/// The message ack, byte for byte as the seed server sends it (`'get the msg'.encode()`).
pub const MSG_ACK: &[u8] = b"get the msg";
/// The seed's chunk size for the data datagrams of a chunked frame.
pub const SEED_CHUNK: usize = 1024;
/// The largest UDP payload over IPv4.
pub const MAX_UDP_PAYLOAD: usize = 65507;

/// How long to wait for the hub's startup lines.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the hub may take to exit after a signal before it is killed and the test fails.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest wait for a reply that must come.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// A running `hub` process on OS-chosen loopback ports. Killed on drop.
pub struct HubProcess {
    child: Option<Child>,
    pub img_addr: Option<SocketAddr>,
    pub msg_addr: Option<SocketAddr>,
    pub tcp_addr: Option<SocketAddr>,
    /// The web view's address, with `--http`.
    pub http_addr: Option<SocketAddr>,
    stdout_lines: Receiver<String>,
    stdout_seen: Vec<String>,
    stderr_text: Arc<Mutex<String>>,
    stderr_thread: Option<JoinHandle<()>>,
}

impl HubProcess {
    /// Start `hub --img-port 0 --msg-port 0 --tcp-port 0 <extra_args>` and wait (at most
    /// 20 s) for its `hub: ready` line, collecting the listening addresses on the way.
    pub fn start(extra_args: &[&str]) -> HubProcess {
        Self::start_with_env(extra_args, &[])
    }

    /// [`HubProcess::start`] with environment variables set (`Some`) or removed (`None`).
    pub fn start_with_env(extra_args: &[&str], env: &[(&str, Option<&str>)]) -> HubProcess {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_hub"));
        for (key, value) in env {
            match value {
                Some(v) => cmd.env(key, v),
                None => cmd.env_remove(key),
            };
        }
        cmd.args(["--img-port", "0", "--msg-port", "0", "--tcp-port", "0"])
            .args(extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the hub binary: {e}"));

        let stdout = child.stdout.take().expect("hub stdout is piped");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                match line {
                    Ok(line) => {
                        if tx.send(line).is_err() {
                            break;
                        }
                    }
                    Err(_) => break,
                }
            }
        });

        let stderr = child.stderr.take().expect("hub stderr is piped");
        let stderr_text = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&stderr_text);
        let stderr_thread = thread::spawn(move || {
            let mut reader = BufReader::new(stderr);
            let mut buf = [0u8; 4096];
            loop {
                match reader.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => sink
                        .lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&buf[..n])),
                }
            }
        });

        let mut hub = HubProcess {
            child: Some(child),
            img_addr: None,
            msg_addr: None,
            tcp_addr: None,
            http_addr: None,
            stdout_lines: rx,
            stdout_seen: Vec::new(),
            stderr_text,
            stderr_thread: Some(stderr_thread),
        };
        hub.wait_ready(extra_args);
        hub
    }

    fn wait_ready(&mut self, args: &[&str]) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stdout_lines.recv_timeout(left) {
                Ok(line) => {
                    self.stdout_seen.push(line.clone());
                    if line.trim_end() == "hub: ready" {
                        return;
                    }
                    self.parse_listening_line(&line);
                }
                Err(RecvTimeoutError::Timeout) => self.fail_start(
                    args,
                    &format!("no `hub: ready` line within {START_TIMEOUT:?}"),
                ),
                Err(RecvTimeoutError::Disconnected) => {
                    self.fail_start(args, "the hub closed stdout (exited?) before `hub: ready`")
                }
            }
        }
    }

    /// `hub: img listening on udp 127.0.0.1:40001` and the like.
    fn parse_listening_line(&mut self, line: &str) {
        let words: Vec<&str> = line.split_whitespace().collect();
        // `hub: http listening on http://127.0.0.1:40004` (with --http)
        if let ["hub:", "http", "listening", "on", url] = words.as_slice() {
            let addr = url
                .strip_prefix("http://")
                .unwrap_or_else(|| panic!("bad url in {line:?}"));
            assert!(self.http_addr.is_none(), "http listed twice: {line:?}");
            self.http_addr = Some(
                addr.parse()
                    .unwrap_or_else(|e| panic!("bad address in {line:?}: {e}")),
            );
            return;
        }
        if let ["hub:", service, "listening", "on", _transport, addr] = words.as_slice() {
            let addr: SocketAddr = addr
                .parse()
                .unwrap_or_else(|e| panic!("bad address in hub line {line:?}: {e}"));
            let slot = match *service {
                "img" => &mut self.img_addr,
                "msg" => &mut self.msg_addr,
                "tcp" => &mut self.tcp_addr,
                other => panic!("unknown service {other:?} in hub line {line:?}"),
            };
            assert!(slot.is_none(), "service listed twice: {line:?}");
            *slot = Some(addr);
        }
    }

    fn fail_start(&mut self, args: &[&str], why: &str) -> ! {
        let status = self.kill_and_reap();
        panic!(
            "hub {args:?} failed to start: {why}; exit status {status:?}\nstdout so far:\n{}\nstderr:\n{}",
            self.stdout_seen.join("\n"),
            self.stderr()
        );
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("hub is running").id()
    }

    /// What the hub has written to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr_text.lock().unwrap().clone()
    }

    pub fn img(&self) -> SocketAddr {
        self.img_addr.expect("the img service is enabled")
    }

    pub fn msg(&self) -> SocketAddr {
        self.msg_addr.expect("the msg service is enabled")
    }

    pub fn tcp(&self) -> SocketAddr {
        self.tcp_addr.expect("the tcp service is enabled")
    }

    pub fn http(&self) -> SocketAddr {
        self.http_addr.expect("the hub was started with --http")
    }

    /// Send `SIGINT` or `SIGTERM` (`signal` is "INT" or "TERM") with `kill`, wait at most
    /// 10 s for the hub to exit (kill -9 and panic otherwise), and return its exit status and
    /// everything it wrote to stdout.
    pub fn stop(mut self, signal: &str) -> (ExitStatus, String) {
        assert!(signal == "INT" || signal == "TERM", "signal {signal:?}");
        let pid = self.pid();
        let sent = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -{signal} {pid} failed: {sent:?}");

        let deadline = Instant::now() + STOP_TIMEOUT;
        let status = loop {
            let child = self.child.as_mut().unwrap();
            match child.try_wait().expect("try_wait on hub") {
                Some(status) => break status,
                None if Instant::now() >= deadline => {
                    let _ = self.kill_and_reap();
                    panic!(
                        "hub did not exit within {STOP_TIMEOUT:?} of SIG{signal}; killed it with SIGKILL.\nstderr:\n{}",
                        self.stderr()
                    );
                }
                None => thread::sleep(Duration::from_millis(10)),
            }
        };
        self.child = None;

        // The process has exited, so its stdout pipe is closed: the reader thread reaches EOF
        // and drops the sender. Bounded anyway.
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stdout_lines.recv_timeout(left) {
                Ok(line) => self.stdout_seen.push(line),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => panic!("hub stdout still open after exit"),
            }
        }
        if let Some(t) = self.stderr_thread.take() {
            let _ = t.join();
        }
        if !status.success() {
            eprintln!("hub exited with {status:?}; stderr:\n{}", self.stderr());
        }
        let mut out = self.stdout_seen.join("\n");
        out.push('\n');
        (status, out)
    }

    fn kill_and_reap(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let _ = child.kill();
        let status = child.wait().ok();
        if let Some(t) = self.stderr_thread.take() {
            let _ = t.join();
        }
        status
    }
}

impl Drop for HubProcess {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.kill_and_reap();
            if thread::panicking() {
                eprintln!(
                    "---- hub stdout ----\n{}\n---- hub stderr ----\n{}",
                    self.stdout_seen.join("\n"),
                    self.stderr()
                );
            }
        }
    }
}

/// Assert that stdout holds the shutdown summary: a line starting with `hub: summary`.
pub fn assert_summary(stdout: &str) {
    assert!(
        stdout.lines().any(|l| l.starts_with("hub: summary")),
        "no line starting with `hub: summary` in stdout:\n{stdout}"
    );
}

// ---------------------------------------------------------------------------------------
// Frames and the seed UDP image format
// ---------------------------------------------------------------------------------------

/// A real JPEG of exactly `len` bytes (`len >= 800`), mostly entropy-coded noise, with
/// `seed` stamped in a comment segment: the same bytes for the same arguments, different
/// bytes for different seeds. Frames sent in the seed's chunked format must be real: the hub
/// walks their coded data to catch reordered chunks. One encoding per length per test
/// process; other seeds are restamped copies of it.
pub fn real_jpeg(len: usize, seed: u64) -> Vec<u8> {
    use udphub::media::testjpeg::{jpeg_of_len, restamp};
    static MADE: OnceLock<Mutex<HashMap<usize, Vec<u8>>>> = OnceLock::new();
    let made = MADE.get_or_init(Default::default);
    let mut made = made.lock().unwrap_or_else(|e| e.into_inner());
    let base = made
        .entry(len)
        .or_insert_with(|| jpeg_of_len(len, 0).unwrap());
    restamp(base, seed)
}

/// A fake JPEG of exactly `len` bytes (`len >= 4`): FF D8, pseudo-random bytes, FF D9.
/// The random bytes never contain 0xFF, so no chunk of it can look like a whole JPEG or
/// contain a stray marker. Different seeds give different contents. Only the SOI/EOI check
/// passes it: fine for the framed format, TCP and whole-frame datagrams, but the hub
/// refuses it in the seed's chunked format (use [`real_jpeg`]).
pub fn fake_jpeg(len: usize, seed: u64) -> Vec<u8> {
    assert!(len >= 4, "a fake JPEG needs at least its 4 marker bytes");
    let mut state = seed
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(len as u64)
        | 1;
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(&[0xFF, 0xD8]);
    while out.len() < len - 2 {
        // xorshift64*
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        let r = state.wrapping_mul(0x2545_F491_4F6C_DD1D);
        out.push((r >> 32) as u8 % 0xFF);
    }
    out.extend_from_slice(&[0xFF, 0xD9]);
    out
}

/// The seed's length header, `struct.pack('l', n)`: 8 bytes little-endian on 64-bit Linux.
pub fn header8(n: i64) -> Vec<u8> {
    n.to_le_bytes().to_vec()
}

/// The 4-byte form of the length header (Windows' `'l'`, Python `struct.pack('<i', n)`).
pub fn header4(n: i32) -> Vec<u8> {
    n.to_le_bytes().to_vec()
}

/// Exactly the slices the seed client sends:
/// `for i in range(len(data)//chunk+1): data[chunk*i:] if chunk*(i+1) > len(data) else data[chunk*i:chunk*(i+1)]`.
/// A length that is a multiple of `chunk` therefore ends with an empty slice.
pub fn seed_slices(data: &[u8], chunk: usize) -> Vec<&[u8]> {
    (0..data.len() / chunk + 1)
        .map(|i| {
            if chunk * (i + 1) > data.len() {
                &data[chunk * i..]
            } else {
                &data[chunk * i..chunk * (i + 1)]
            }
        })
        .collect()
}

/// Every datagram of one frame in the seed chunked format: the header, then the data slices.
pub fn seed_datagrams(data: &[u8], header: Vec<u8>, chunk: usize) -> Vec<Vec<u8>> {
    let mut out = vec![header];
    out.extend(seed_slices(data, chunk).into_iter().map(<[u8]>::to_vec));
    out
}

/// Send `data` in the seed chunked format with the 8-byte header and 1024-byte chunks.
pub fn send_chunked(sock: &UdpSocket, to: SocketAddr, data: &[u8]) {
    send_all(
        sock,
        to,
        &seed_datagrams(data, header8(data.len() as i64), SEED_CHUNK),
    );
}

/// Send each datagram in order.
pub fn send_all(sock: &UdpSocket, to: SocketAddr, datagrams: &[Vec<u8>]) {
    for d in datagrams {
        send(sock, to, d);
    }
}

pub fn send(sock: &UdpSocket, to: SocketAddr, datagram: &[u8]) {
    let n = sock
        .send_to(datagram, to)
        .unwrap_or_else(|e| panic!("send_to {to}: {e}"));
    assert_eq!(n, datagram.len(), "short send_to");
}

// ---------------------------------------------------------------------------------------
// Sockets
// ---------------------------------------------------------------------------------------

/// A UDP client socket on 127.0.0.1 with an OS-chosen port and a read timeout of
/// [`REPLY_TIMEOUT`] (the longest wait for a reply that must come).
pub fn udp_client() -> UdpSocket {
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind udp client");
    sock.set_read_timeout(Some(REPLY_TIMEOUT))
        .expect("set_read_timeout");
    sock
}

/// Wait (at most the socket's read timeout) for one datagram, which must come from `from`.
pub fn recv_reply(sock: &UdpSocket, from: SocketAddr, what: &str) -> Vec<u8> {
    let mut buf = vec![0u8; 65536];
    match sock.recv_from(&mut buf) {
        Ok((n, src)) => {
            assert_eq!(src, from, "{what}: reply from an unexpected address");
            buf.truncate(n);
            buf
        }
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
            panic!("{what}: no reply within {REPLY_TIMEOUT:?}")
        }
        Err(e) => panic!("{what}: recv_from failed: {e}"),
    }
}

/// Wait for one reply and assert it is exactly `expected`.
pub fn expect_reply(sock: &UdpSocket, from: SocketAddr, expected: &[u8], what: &str) {
    let got = recv_reply(sock, from, what);
    assert_eq!(
        got,
        expected,
        "{what}: reply {:?}, expected {:?}",
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(expected)
    );
}

/// Every datagram already queued on `sock`, without waiting. Use after the hub has exited
/// to count replies that should never have been sent.
pub fn drain_nonblocking(sock: &UdpSocket) -> Vec<Vec<u8>> {
    sock.set_nonblocking(true).expect("set_nonblocking");
    let mut out = Vec::new();
    let mut buf = vec![0u8; 65536];
    loop {
        match sock.recv_from(&mut buf) {
            Ok((n, _)) => out.push(buf[..n].to_vec()),
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            // An ICMP port-unreachable from an earlier send surfaces here on Linux.
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => continue,
            Err(e) => panic!("drain recv_from: {e}"),
        }
    }
    sock.set_nonblocking(false).expect("set_nonblocking");
    out
}

/// The 16-byte TCP length header of the seed: `str(len).ljust(16).encode()`.
pub fn tcp_header(len: usize) -> Vec<u8> {
    let h = format!("{len:<16}").into_bytes();
    assert_eq!(h.len(), 16);
    h
}

/// A TCP connection to the hub with a read timeout of [`REPLY_TIMEOUT`].
pub fn tcp_connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(REPLY_TIMEOUT))
        .expect("set_read_timeout");
    s
}

// ---------------------------------------------------------------------------------------
// Saved frames
// ---------------------------------------------------------------------------------------

/// The file name the hub gives the `seq`-th (1-based) intact frame from `from`.
pub fn saved_name(transport: &str, from: SocketAddr, seq: u64) -> String {
    format!("{transport}-{}-{}-{seq:08}.jpg", from.ip(), from.port())
}

/// All file names in `dir`, sorted.
pub fn list_dir(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Assert that `dir` holds exactly the given `(name, contents)` files.
pub fn assert_saved_exactly(dir: &Path, expected: &[(String, Vec<u8>)]) {
    let mut want: Vec<&(String, Vec<u8>)> = expected.iter().collect();
    want.sort_by(|a, b| a.0.cmp(&b.0));
    let want_names: Vec<&str> = want.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(list_dir(dir), want_names, "files in the save dir");
    for (name, data) in want {
        let got = std::fs::read(dir.join(name)).unwrap();
        assert!(
            got == *data,
            "{name}: saved {} bytes differ from the {} bytes sent",
            got.len(),
            data.len()
        );
    }
}

/// The contents of the saved files whose names start with `{transport}-{ip}-{port}-` and
/// end with 8 digits and `.jpg`, in name order. Panics on any other file in `dir`.
pub fn saved_from(dir: &Path, transport: &str, from: SocketAddr) -> Vec<Vec<u8>> {
    let prefix = format!("{transport}-{}-{}-", from.ip(), from.port());
    list_dir(dir)
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
        .map(|n| {
            let seq = &n[prefix.len()..];
            assert!(
                seq.len() == 12
                    && seq.ends_with(".jpg")
                    && seq[..8].bytes().all(|b| b.is_ascii_digit()),
                "unexpected saved file name {n:?}"
            );
            std::fs::read(dir.join(&n)).unwrap()
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// The Python seed client
// ---------------------------------------------------------------------------------------

/// Path of `tests/python/seed_sender.py`.
pub fn seed_sender_py() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/seed_sender.py")
}

/// What a run of `seed_sender.py` printed.
pub struct PyRun {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl PyRun {
    /// The `127.0.0.1:port` the script sent from (its `seed_sender: local ADDR` stderr line).
    pub fn local_addr(&self) -> SocketAddr {
        self.stderr
            .lines()
            .find_map(|l| l.strip_prefix("seed_sender: local "))
            .unwrap_or_else(|| panic!("no local address line in stderr:\n{}", self.stderr))
            .trim()
            .parse()
            .expect("local address")
    }
}

/// Run `python3 tests/python/seed_sender.py <args>`; kill it and panic if it runs over 60 s
/// (the script's own reply timeout is much shorter).
pub fn run_seed_sender(args: &[&str]) -> PyRun {
    let mut child = Command::new("python3")
        .arg(seed_sender_py())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run python3 (scripts/setup.sh installs it): {e}"));
    let mut out_pipe = child.stdout.take().unwrap();
    let mut err_pipe = child.stderr.take().unwrap();
    let out_thread = thread::spawn(move || {
        let mut s = String::new();
        let _ = out_pipe.read_to_string(&mut s);
        s
    });
    let err_thread = thread::spawn(move || {
        let mut s = String::new();
        let _ = err_pipe.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait python3") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("seed_sender.py {args:?} still running after 60 s");
        }
        thread::sleep(Duration::from_millis(10));
    };
    PyRun {
        status,
        stdout: out_thread.join().unwrap(),
        stderr: err_thread.join().unwrap(),
    }
}
