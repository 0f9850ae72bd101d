//! Shared helpers for the integration tests: start and stop a real `hub` process on
//! OS-chosen loopback ports, run the clients with a deadline (both through
//! [`udphub_testkit`], the harness the benchmark examples use too, with a panic where it
//! returns an error), and speak the seed wire formats to the hub.
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
use std::io::ErrorKind;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};
pub use udphub_testkit::Finished;
use udphub_testkit::Signal;

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
/// The longest a client run (`img-client`, `msg-client`) may take before the test fails.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

/// A running `hub` process on OS-chosen loopback ports ([`udphub_testkit::HubProcess`],
/// panicking where it returns an error). Killed on drop.
pub struct HubProcess {
    hub: udphub_testkit::HubProcess,
    pub img_addr: Option<SocketAddr>,
    pub msg_addr: Option<SocketAddr>,
    pub tcp_addr: Option<SocketAddr>,
    /// The web view's address, with `--http`.
    pub http_addr: Option<SocketAddr>,
}

impl HubProcess {
    /// Start `hub --img-port 0 --msg-port 0 --tcp-port 0 <extra_args>` and wait (at most
    /// 20 s) for its `hub: ready` line, collecting the listening addresses on the way.
    pub fn start(extra_args: &[&str]) -> HubProcess {
        Self::start_with_env(extra_args, &[])
    }

    /// [`HubProcess::start`] with environment variables set (`Some`) or removed (`None`).
    /// `RUST_LOG` is `info` unless it is set.
    pub fn start_with_env(extra_args: &[&str], env: &[(&str, Option<&str>)]) -> HubProcess {
        let mut env = env.to_vec();
        if std::env::var_os("RUST_LOG").is_none() {
            env.push(("RUST_LOG", Some("info")));
        }
        let hub = udphub_testkit::HubProcess::start(
            Path::new(env!("CARGO_BIN_EXE_hub")),
            extra_args,
            &env,
            START_TIMEOUT,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let ports = hub.ports;
        HubProcess {
            hub,
            img_addr: ports.img,
            msg_addr: ports.msg,
            tcp_addr: ports.tcp,
            http_addr: ports.http,
        }
    }

    pub fn pid(&self) -> u32 {
        self.hub.pid()
    }

    /// What the hub has written to stderr so far.
    pub fn stderr(&self) -> String {
        self.hub.stderr()
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

    /// Send `SIGINT` or `SIGTERM` (`signal` is "INT" or "TERM"), wait at most 10 s for the
    /// hub to exit (kill -9 and panic otherwise), and return its exit status and
    /// everything it wrote to stdout.
    pub fn stop(self, signal: &str) -> (ExitStatus, String) {
        let (status, stdout, _) = self.stop_with_stderr(signal);
        (status, stdout)
    }

    /// [`HubProcess::stop`], with everything the hub wrote to stderr as well.
    pub fn stop_with_stderr(self, signal: &str) -> (ExitStatus, String, String) {
        let signal = match signal {
            "INT" => Signal::Int,
            "TERM" => Signal::Term,
            other => panic!("signal {other:?}"),
        };
        let stopped = self
            .hub
            .stop(signal, STOP_TIMEOUT)
            .unwrap_or_else(|e| panic!("{e}"));
        if !stopped.status.success() {
            eprintln!(
                "hub exited with {:?}; stderr:\n{}",
                stopped.status, stopped.stderr
            );
        }
        (stopped.status, stopped.stdout, stopped.stderr)
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

/// A JPEG of exactly `len` bytes (at least [`udphub::jpegcheck::FILLER_MIN_LEN`], 27;
/// shorter is padded to it) whose coded data is pseudo-random filler without `FF`
/// ([`udphub::jpegcheck::filler_jpeg`]), different for each seed: no chunk of it can look
/// like a whole JPEG or hold a stray marker. It has the structure the hub asks of every
/// frame, so the framed format, TCP and whole-frame datagrams deliver it; the seed's
/// chunked format walks the coded data too and refuses it (use [`real_jpeg`]).
pub fn fake_jpeg(len: usize, seed: u64) -> Vec<u8> {
    udphub::jpegcheck::filler_jpeg(len, seed)
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
    let mut cmd = Command::new("python3");
    cmd.arg(seed_sender_py()).args(args);
    let run = udphub_testkit::run(&mut cmd, b"", Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e} (scripts/setup.sh installs python3)"));
    PyRun {
        status: run.status,
        stdout: run.stdout,
        stderr: run.stderr,
    }
}

// ---------------------------------------------------------------------------------------
// The clients
// ---------------------------------------------------------------------------------------

/// Run `cmd` to its end with `stdin` as its input; kill it and panic if it runs over
/// `timeout`.
pub fn run_bounded(cmd: &mut Command, stdin: &[u8], timeout: Duration) -> Finished {
    udphub_testkit::run(cmd, stdin, timeout).unwrap_or_else(|e| panic!("{e}"))
}

/// Run the client binary `bin` (`env!("CARGO_BIN_EXE_…")`) with `args` and `stdin`
/// (`RUST_LOG=warn`), bounded by [`CLIENT_TIMEOUT`].
pub fn run_client(bin: &str, args: &[&str], stdin: &[u8]) -> Finished {
    let mut cmd = Command::new(bin);
    cmd.args(args).env("RUST_LOG", "warn");
    run_bounded(&mut cmd, stdin, CLIENT_TIMEOUT)
}

/// The number after `word` in the client summary line that starts with `line:`:
/// `summary_count(out, "frames", "acked")` is 20 for `  frames: sent 20, acked 20, lost 0`
/// (parts are split at `,` and `;`).
pub fn summary_count(summary: &str, line: &str, word: &str) -> u64 {
    let prefix = format!("{line}:");
    let body = summary
        .lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no `{prefix}` line in:\n{summary}"));
    body.split([',', ';'])
        .find_map(|part| {
            let words: Vec<&str> = part.split_whitespace().collect();
            let i = words.iter().position(|w| *w == word)?;
            words.get(i + 1)?.parse().ok()
        })
        .unwrap_or_else(|| panic!("no `{word} N` in the `{prefix}` line of:\n{summary}"))
}

/// `udphub-keygen FILE`: writes a new private key there and returns the public key it prints.
pub fn keygen(file: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_udphub-keygen"))
        .arg(file)
        .output()
        .expect("udphub-keygen");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// A client left running (e.g. `msg-client` taking commands), its stdout lines arriving
/// as they are printed; killed and reaped on drop.
pub struct LiveClient {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl LiveClient {
    pub fn start(bin: &str, args: &[&str]) -> LiveClient {
        use std::io::BufRead;
        let mut child = std::process::Command::new(bin)
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        LiveClient { child, lines }
    }

    /// The first stdout line (from now) that `want` accepts, waiting at most `within`.
    pub fn line_where(&self, within: Duration, want: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            match self.lines.recv_timeout(left) {
                Ok(line) if want(&line) => return Some(line),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    }
}

/// `udp-relay` in front of `upstream` with these fault and link flags, listening on a
/// loopback port the OS chose: the relay (killed on drop) and the address to send to.
#[allow(dead_code)]
pub fn start_relay(upstream: &str, flags: &[&str]) -> (LiveClient, String) {
    let mut args = vec!["--listen", "127.0.0.1:0", "--upstream", upstream];
    args.extend_from_slice(flags);
    let relay = LiveClient::start(env!("CARGO_BIN_EXE_udp-relay"), &args);
    let listening = relay
        .line_where(Duration::from_secs(10), |l| l.contains("listening on udp"))
        .expect("the relay says where it listens");
    let at = listening
        .strip_prefix("udp-relay: listening on udp ")
        .and_then(|r| r.split_once(" -> "))
        .map(|(addr, _)| addr.to_owned())
        .unwrap_or_else(|| panic!("unexpected line {listening:?}"));
    (relay, at)
}

impl Drop for LiveClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Wait (at most `within`) until the hub's stderr contains `needle`.
pub fn wait_stderr(hub: &HubProcess, needle: &str, within: Duration) {
    let deadline = Instant::now() + within;
    while !hub.stderr().contains(needle) {
        assert!(
            Instant::now() < deadline,
            "{needle:?} not in the hub's stderr within {within:?}:\n{}",
            hub.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `POST /api/sources/<source>/command` with `body` to the hub's web view at `http`: the
/// status and the response body.
pub fn post_command(http: SocketAddr, source: &str, body: &str) -> (u16, String) {
    http_request(
        http,
        "POST",
        &format!("/api/sources/{source}/command"),
        Some(body),
    )
}

/// One HTTP/1.1 request (`Connection: close`) to the web view at `http`, with a JSON `body`
/// when given: the status and the response body. Reads time out after 10 s.
pub fn http_request(
    http: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect(http).expect("connect to the web view");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {http}\r\nConnection: close\r\n");
    if let Some(body) = body {
        head += &format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        );
    }
    write!(s, "{head}\r\n{}", body.unwrap_or("")).unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).expect("the response");
    let (head, body) = text.split_once("\r\n\r\n").expect("a response head");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    (status, body.to_owned())
}
