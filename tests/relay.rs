//! Integration tests of the lossy UDP relay (`udphub::relay` and the `udp-relay` binary),
//! on loopback with OS-chosen ports, against a small echo server.
//!
//! Every wait is bounded. Nothing sleeps in place of a condition: replies that must come are
//! awaited with a socket read timeout; "nothing came back" is checked only after the relay
//! has counted every datagram as received and has stopped, so there is nothing in flight.
//! No assertion depends on timing.

use std::collections::{BTreeSet, HashSet};
use std::io::{BufRead, BufReader, ErrorKind, Read};
use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};
use udphub::relay::{FaultConfig, LinkConfig, Relay, RelayHandle, RelayLimits, RelayStats};
use udphub::shutdown::Shutdown;

/// The longest wait for a reply that must come, or for a count to be reached.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Echoes every datagram back to its sender and remembers the senders.
struct EchoServer {
    addr: SocketAddr,
    received: Arc<AtomicU64>,
    sources: Arc<Mutex<Vec<SocketAddr>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EchoServer {
    fn start() -> EchoServer {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let addr = socket.local_addr().unwrap();
        let received = Arc::new(AtomicU64::new(0));
        let sources = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, s, st) = (received.clone(), sources.clone(), stop.clone());
        let thread = thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while !st.load(Ordering::SeqCst) {
                match socket.recv_from(&mut buf) {
                    Ok((n, from)) => {
                        r.fetch_add(1, Ordering::SeqCst);
                        {
                            let mut s = s.lock().unwrap();
                            if !s.contains(&from) {
                                s.push(from);
                            }
                        }
                        let _ = socket.send_to(&buf[..n], from);
                    }
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                    Err(e) => panic!("echo server: {e}"),
                }
            }
        });
        EchoServer {
            addr,
            received,
            sources,
            stop,
            thread: Some(thread),
        }
    }

    fn received(&self) -> u64 {
        self.received.load(Ordering::SeqCst)
    }

    fn sources(&self) -> Vec<SocketAddr> {
        self.sources.lock().unwrap().clone()
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn start_relay(upstream: SocketAddr, to_up: FaultConfig, to_client: FaultConfig) -> Running {
    start_relay_with(upstream, to_up, to_client, RelayLimits::default())
}

fn start_relay_with(
    upstream: SocketAddr,
    to_up: FaultConfig,
    to_client: FaultConfig,
    limits: RelayLimits,
) -> Running {
    let shutdown = Shutdown::new();
    let relay = Relay::start_with_limits(
        "127.0.0.1:0".parse().unwrap(),
        upstream,
        to_up,
        to_client,
        limits,
        shutdown.clone(),
    )
    .unwrap();
    Running {
        relay: Some(relay),
        shutdown,
    }
}

/// A relay that is stopped when dropped (so a failing test does not leave it running).
struct Running {
    relay: Option<RelayHandle>,
    shutdown: Shutdown,
}

impl Running {
    fn addr(&self) -> SocketAddr {
        self.relay.as_ref().unwrap().local_addr()
    }

    fn stats(&self) -> RelayStats {
        self.relay.as_ref().unwrap().stats()
    }

    /// Wait (bounded) until `done` holds for the relay's counts.
    fn wait_for(&self, what: &str, done: impl Fn(&RelayStats) -> bool) {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let s = self.stats();
            if done(&s) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {s:?}"
            );
            thread::sleep(Duration::from_millis(2));
        }
    }

    fn stop(mut self) -> RelayStats {
        self.shutdown.trigger();
        self.relay.take().unwrap().join()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.trigger();
        if let Some(r) = self.relay.take() {
            r.join();
        }
    }
}

fn client() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s
}

fn recv(socket: &UdpSocket) -> Vec<u8> {
    let mut buf = vec![0u8; 65536];
    match socket.recv(&mut buf) {
        Ok(n) => buf[..n].to_vec(),
        Err(e) => panic!("no reply within {TIMEOUT:?}: {e}"),
    }
}

/// Datagram `i`: its number, then a length and pattern that vary with it.
fn payload(i: u32) -> Vec<u8> {
    let len = (i as usize * 37) % 1400;
    let mut p = i.to_be_bytes().to_vec();
    p.extend((0..len).map(|k| (k as u32 ^ i) as u8));
    p
}

fn no_faults() -> FaultConfig {
    FaultConfig::default()
}

#[test]
fn without_faults_200_datagrams_come_back_intact_and_in_order() {
    let echo = EchoServer::start();
    let relay = start_relay(echo.addr, no_faults(), no_faults());
    let c = client();
    for window in 0..20u32 {
        let ids: Vec<u32> = (window * 10..window * 10 + 10).collect();
        for &i in &ids {
            c.send_to(&payload(i), relay.addr()).unwrap();
        }
        for &i in &ids {
            assert_eq!(recv(&c), payload(i), "datagram {i}");
        }
    }
    let stats = relay.stop();
    for dir in [stats.to_upstream, stats.to_client] {
        assert_eq!((dir.received, dir.forwarded), (200, 200), "{stats:?}");
        assert_eq!(dir.dropped + dir.duplicated + dir.reordered + dir.errors, 0);
    }
    assert_eq!(stats.clients_opened, 1);
    assert_eq!(echo.received(), 200);
}

#[test]
fn full_loss_upstream_lets_nothing_through_and_counts_every_drop() {
    let echo = EchoServer::start();
    let loss = FaultConfig {
        loss: 1.0,
        ..no_faults()
    };
    let relay = start_relay(echo.addr, loss, no_faults());
    let c = client();
    for i in 0..50 {
        c.send_to(&payload(i), relay.addr()).unwrap();
    }
    relay.wait_for("50 datagrams received", |s| s.to_upstream.received == 50);
    let stats = relay.stop();
    assert_eq!(stats.to_upstream.dropped, 50, "{stats:?}");
    assert_eq!(stats.to_upstream.forwarded, 0);
    assert_eq!(stats.to_client.received, 0);
    assert_eq!(echo.received(), 0);
    c.set_nonblocking(true).unwrap();
    let err = c.recv(&mut [0u8; 16]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::WouldBlock, "nothing came back");
}

#[test]
fn each_client_appears_upstream_as_its_own_sender() {
    let echo = EchoServer::start();
    let relay = start_relay(echo.addr, no_faults(), no_faults());
    let clients: Vec<UdpSocket> = (0..8).map(|_| client()).collect();
    for (i, c) in clients.iter().enumerate() {
        c.send_to(format!("client {i}").as_bytes(), relay.addr())
            .unwrap();
    }
    for (i, c) in clients.iter().enumerate() {
        assert_eq!(recv(c), format!("client {i}").as_bytes(), "its own reply");
    }
    // A second round goes through the same mappings.
    for (i, c) in clients.iter().enumerate() {
        c.send_to(format!("again {i}").as_bytes(), relay.addr())
            .unwrap();
        assert_eq!(recv(c), format!("again {i}").as_bytes());
    }
    let sources: HashSet<SocketAddr> = echo.sources().into_iter().collect();
    assert_eq!(sources.len(), 8, "eight senders: {sources:?}");
    assert!(!sources.contains(&relay.addr()));
    for c in &clients {
        assert!(!sources.contains(&c.local_addr().unwrap()));
    }
    let stats = relay.stop();
    assert_eq!(stats.clients_opened, 8);
    assert_eq!(stats.to_client.forwarded, 16);
}

#[test]
fn a_full_client_table_refuses_new_clients() {
    let echo = EchoServer::start();
    let limits = RelayLimits {
        max_clients: 1,
        ..RelayLimits::default()
    };
    let relay = start_relay_with(echo.addr, no_faults(), no_faults(), limits);
    let (a, b) = (client(), client());
    a.send_to(b"a", relay.addr()).unwrap();
    assert_eq!(recv(&a), b"a");
    b.send_to(b"b", relay.addr()).unwrap();
    relay.wait_for("b's datagram received", |s| s.to_upstream.received == 2);
    let stats = relay.stop();
    assert_eq!(stats.to_upstream.errors, 1, "{stats:?}");
    assert_eq!(stats.clients_opened, 1);
    assert_eq!(echo.received(), 1);
    assert_eq!(echo.sources().len(), 1);
}

#[test]
fn idle_mappings_expire_and_a_returning_client_gets_a_new_one() {
    let echo = EchoServer::start();
    let limits = RelayLimits {
        client_idle_timeout: Duration::from_millis(300),
        ..RelayLimits::default()
    };
    let relay = start_relay_with(echo.addr, no_faults(), no_faults(), limits);
    let clients: Vec<UdpSocket> = (0..3).map(|_| client()).collect();
    for c in &clients {
        c.send_to(b"first", relay.addr()).unwrap();
        assert_eq!(recv(c), b"first");
    }
    relay.wait_for("the idle mappings to close", |s| {
        s.clients_opened == 3 && s.clients == 0
    });
    for c in &clients {
        c.send_to(b"again", relay.addr()).unwrap();
        assert_eq!(recv(c), b"again");
    }
    let stats = relay.stop();
    assert_eq!(stats.clients_opened, 6, "{stats:?}");
    assert_eq!(stats.to_client.forwarded, 6);
}

#[test]
fn duplicates_come_back_twice() {
    let echo = EchoServer::start();
    let dup = FaultConfig {
        duplicate: 1.0,
        ..no_faults()
    };
    let relay = start_relay(echo.addr, dup, no_faults());
    let c = client();
    c.send_to(b"twice", relay.addr()).unwrap();
    assert_eq!(recv(&c), b"twice");
    assert_eq!(recv(&c), b"twice");
    let stats = relay.stop();
    assert_eq!(stats.to_upstream.duplicated, 1);
    assert_eq!(stats.to_upstream.forwarded, 2);
    assert_eq!(stats.to_client.received, 2);
}

#[test]
fn reorder_delay_and_jitter_without_loss_deliver_each_datagram_exactly_once() {
    let echo = EchoServer::start();
    let faults = FaultConfig {
        reorder: 0.3,
        delay: Duration::from_millis(2),
        jitter: Duration::from_millis(3),
        seed: 99,
        ..no_faults()
    };
    let relay = start_relay(
        echo.addr,
        faults,
        FaultConfig {
            seed: 100,
            ..faults
        },
    );
    let c = client();
    for window in 0..10u32 {
        let ids: BTreeSet<u32> = (window * 10..window * 10 + 10).collect();
        for &i in &ids {
            c.send_to(&payload(i), relay.addr()).unwrap();
        }
        let mut got = BTreeSet::new();
        for _ in 0..ids.len() {
            let d = recv(&c);
            let i = u32::from_be_bytes(d[..4].try_into().unwrap());
            assert_eq!(d, payload(i), "intact");
            assert!(got.insert(i), "datagram {i} came back twice");
        }
        assert_eq!(got, ids);
    }
    let stats = relay.stop();
    assert!(stats.to_upstream.reordered > 0, "{stats:?}");
    for dir in [stats.to_upstream, stats.to_client] {
        assert_eq!((dir.received, dir.forwarded, dir.errors), (100, 100, 0));
    }
}

/// A limit on the replies only: the burst reaches the echo server whole, and only the way
/// back drops at its full queue (each direction has its own link).
#[test]
fn a_rate_limit_on_one_direction_leaves_the_other_alone() {
    const SENT: u64 = 40;
    let echo = EchoServer::start();
    let narrow = FaultConfig {
        link: Some(LinkConfig {
            rate_mbit: 0.1,
            queue_bytes: 1500,
            burst_bytes: 0,
        }),
        ..no_faults()
    };
    let relay = start_relay(echo.addr, no_faults(), narrow);
    let c = client();
    for i in 0..SENT as u32 {
        c.send_to(&payload(i), relay.addr()).unwrap();
    }
    relay.wait_for("every echo past the return link", |s| {
        s.to_client.received == SENT && s.to_client.forwarded >= 1
    });
    let stats = relay.stop();
    assert_eq!(echo.received(), SENT, "{stats:?}");
    assert_eq!(stats.to_upstream.forwarded, SENT);
    assert_eq!(stats.to_upstream.queue_drops, 0);
    let back = stats.to_client;
    assert!(back.queue_drops > 0, "{stats:?}");
    assert_eq!(
        back.forwarded + back.queue_drops + back.errors,
        SENT,
        "{stats:?}"
    );
}

#[test]
fn invalid_faults_are_refused_at_start() {
    let bad = FaultConfig {
        loss: 1.5,
        ..no_faults()
    };
    let err = Relay::start(
        "127.0.0.1:0".parse().unwrap(),
        "127.0.0.1:9".parse().unwrap(),
        bad,
        no_faults(),
        Shutdown::new(),
    )
    .err()
    .expect("refused");
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(err.to_string().contains("loss"), "{err}");
}

/// The `udp-relay` process; killed on drop.
struct RelayProcess {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
    stderr: Arc<Mutex<String>>,
}

impl RelayProcess {
    fn start(args: &[&str]) -> RelayProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_udp-relay"))
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("udp-relay starts");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut stderr_pipe = child.stderr.take().unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = stderr_pipe.read(&mut buf) {
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        RelayProcess {
            child,
            lines,
            seen: Vec::new(),
            stderr,
        }
    }

    /// The next stdout line, waiting at most `TIMEOUT`; `None` once stdout is closed.
    fn next_line(&mut self) -> Option<String> {
        match self.lines.recv_timeout(TIMEOUT) {
            Ok(line) => {
                self.seen.push(line.clone());
                Some(line)
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => None,
            Err(mpsc::RecvTimeoutError::Timeout) => panic!(
                "udp-relay printed nothing for {TIMEOUT:?}; stdout so far {:?}, stderr:\n{}",
                self.seen,
                self.stderr.lock().unwrap()
            ),
        }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Read the "listening on udp ADDR -> UPSTREAM" and "ready" lines; the address clients
    /// send to.
    fn wait_ready(&mut self, upstream: &str) -> SocketAddr {
        let first = self.next_line().expect("a listening line");
        let rest = first
            .strip_prefix("udp-relay: listening on udp ")
            .unwrap_or_else(|| panic!("unexpected first line {first:?}"));
        let (addr, up) = rest.split_once(" -> ").expect("ADDR -> UPSTREAM");
        let addr: SocketAddr = addr.parse().unwrap();
        assert_eq!(up, upstream);
        assert_ne!(addr.port(), 0);
        assert_eq!(self.next_line().as_deref(), Some("udp-relay: ready"));
        addr
    }

    /// Send SIGINT, wait (bounded) for a successful exit and return all it printed.
    fn interrupt(&mut self) -> String {
        let pid = self.child.id().to_string();
        let killed = Command::new("kill").args(["-INT", &pid]).status().unwrap();
        assert!(killed.success());
        let deadline = Instant::now() + TIMEOUT;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "udp-relay still running {TIMEOUT:?} after SIGINT; stderr:\n{}",
                self.stderr()
            );
            thread::sleep(Duration::from_millis(10));
        };
        while self.next_line().is_some() {}
        assert!(status.success(), "{status}; stderr:\n{}", self.stderr());
        self.seen.join("\n")
    }
}

/// The counter `name` (e.g. "queue drops") of the summary line starting with `prefix`
/// (e.g. "udp-relay: to upstream: ") in the relay's output.
fn counter(out: &str, prefix: &str, name: &str) -> u64 {
    let line = out
        .lines()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no line {prefix:?} in {out}"));
    line.split(", ")
        .find_map(|field| field.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no counter {name:?} in {line:?}"))
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[test]
fn binary_relays_and_prints_its_counts_on_sigint() {
    let echo = EchoServer::start();
    let upstream = echo.addr.to_string();
    let mut p = RelayProcess::start(&["--listen", "127.0.0.1:0", "--upstream", &upstream]);
    let addr = p.wait_ready(&upstream);

    let c = client();
    c.send_to(b"hello through the relay", addr).unwrap();
    assert_eq!(recv(&c), b"hello through the relay");

    let out = p.interrupt();
    assert!(
        out.contains("udp-relay: to upstream: received 1, forwarded 1, dropped 0"),
        "{out}"
    );
    assert!(
        out.contains("udp-relay: to client: received 1, forwarded 1, dropped 0"),
        "{out}"
    );
}

/// A burst into a 0.1 Mbit/s link with a 3000-byte queue: the relay reads every datagram,
/// and each one either reaches the echo server or is counted as a queue drop (never lost
/// unaccounted). The burst of 50 datagrams of 1000 bytes is sent in far less than the 4 s
/// the link needs for it, so the queue must overflow.
#[test]
fn binary_rate_limit_counts_every_datagram_as_delivered_or_queue_dropped() {
    const SENT: u64 = 50;
    let echo = EchoServer::start();
    let upstream = echo.addr.to_string();
    let mut p = RelayProcess::start(&[
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        &upstream,
        "--rate-mbit",
        "0.1",
        "--queue-bytes",
        "3000",
    ]);
    let addr = p.wait_ready(&upstream);
    let c = client();
    let data = vec![0x5Au8; 1000];
    for _ in 0..SENT {
        c.send_to(&data, addr).unwrap();
    }
    // Two echoes back: the relay has looped past the whole burst (the second leaves the
    // link one serialization time after the first).
    assert_eq!(recv(&c), data);
    assert_eq!(recv(&c), data);

    let out = p.interrupt();
    let up = "udp-relay: to upstream: ";
    let forwarded = counter(&out, up, "forwarded");
    let queue_drops = counter(&out, up, "queue drops");
    assert_eq!(counter(&out, up, "received"), SENT, "{out}");
    assert_eq!(counter(&out, up, "errors"), 0, "{out}");
    assert_eq!(forwarded + queue_drops, SENT, "{out}");
    assert!(queue_drops > 0, "the queue overflowed: {out}");
    let deadline = Instant::now() + TIMEOUT;
    while echo.received() < forwarded && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(echo.received() + queue_drops, SENT, "{out}");
}

#[test]
fn binary_refuses_a_bad_rate_or_queue() {
    for (flags, expect) in [
        (&["--rate-mbit", "0"][..], "--rate-mbit"),
        (&["--rate-mbit", "inf"][..], "positive"),
        (&["--rate-mbit=-3"][..], "--rate-mbit"),
        (
            &["--rate-mbit", "8", "--queue-bytes", "1499"][..],
            "at least 1500",
        ),
        (&["--queue-bytes", "4000"][..], "--rate-mbit"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_udp-relay"))
            .args(["--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:9"])
            .args(flags)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(!out.status.success(), "{flags:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expect), "{flags:?}: {err}");
    }
}

#[test]
fn binary_refuses_a_probability_above_one() {
    let out = Command::new(env!("CARGO_BIN_EXE_udp-relay"))
        .args(["--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:9"])
        .args(["--loss", "1.5"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--loss") && err.contains("between 0 and 1"),
        "{err}"
    );
}

/// Not a test of correctness: how many datagrams a second the relay moves on loopback with
/// no faults. Run with `cargo test --release --test relay -- --ignored --nocapture`.
///
/// One-way: a sender pushes 100 000 datagrams of 1400 bytes through the relay to a counting
/// sink, keeping at most `WINDOW` in flight (so the kernel drops nothing and the figure is
/// the relay's, not the sender's).
#[test]
#[ignore]
fn throughput_without_faults() {
    const N: u64 = 100_000;
    const WINDOW: u64 = 64;
    let sink = UdpSocket::bind("127.0.0.1:0").unwrap();
    sink.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let sink_addr = sink.local_addr().unwrap();
    let count = Arc::new(AtomicU64::new(0));
    let counter = count.clone();
    let sink_thread = thread::spawn(move || {
        let mut buf = vec![0u8; 2048];
        while counter.load(Ordering::Relaxed) < N {
            match sink.recv(&mut buf) {
                Ok(_) => {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
                Err(_) => break,
            }
        }
    });
    let relay = start_relay(sink_addr, no_faults(), no_faults());
    let c = UdpSocket::bind("127.0.0.1:0").unwrap();
    c.connect(relay.addr()).unwrap();
    let data = vec![0xA5u8; 1400];
    let t0 = Instant::now();
    let mut stalled = false;
    for sent in 0..N {
        let wait_start = Instant::now();
        while sent - count.load(Ordering::Relaxed) >= WINDOW {
            if wait_start.elapsed() > Duration::from_secs(1) {
                stalled = true;
                break;
            }
            thread::yield_now();
        }
        if stalled {
            break;
        }
        c.send(&data).unwrap();
    }
    sink_thread.join().unwrap();
    let elapsed = t0.elapsed();
    let got = count.load(Ordering::Relaxed);
    let stats = relay.stop();
    println!(
        "relayed {got} of {N} datagrams of 1400 bytes in {elapsed:?}: {:.0} datagrams/s, \
         {:.0} Mbit/s{}; relay {:?}",
        got as f64 / elapsed.as_secs_f64(),
        got as f64 * 1400.0 * 8.0 / elapsed.as_secs_f64() / 1e6,
        if stalled {
            " (stalled: some were lost)"
        } else {
            ""
        },
        stats.to_upstream
    );
}
