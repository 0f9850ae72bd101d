//! `raw_limit`: what the kernel allows on this machine for the datagrams udphub sends, as
//! the yardstick `examples/bench.rs` compares the real `hub` and clients against.
//!
//! Why it exists: a throughput figure for the hub means little on its own (it depends on the
//! machine); its ratio to a minimal program moving *the very same bytes* the same way says
//! how much the hub and clients add on top of the kernel. So this sends exactly the
//! datagrams of the real protocols, built once with the crate's own wire code (chunked: the
//! 8-byte `struct.pack('l', n)` header datagram, then the seed's 1024-byte slices including
//! the trailing empty one; framed: 32-byte header + chunk payload per datagram; tcp: the
//! 16-byte ASCII length + the frame; msg: `[0, 0, 0, 1]`), with the same ack pattern (one
//! ack per frame, of the real size: 14 bytes seed, 28 framed; an 11-byte reply per
//! message) and the same syscalls (`sendto`/`recvfrom` on unconnected sockets, two
//! `write`s per tcp frame), but with no parsing, no reassembly and no copies: the
//! receiver counts datagrams per sender address and acks when a frame's count is reached,
//! from one preallocated buffer.
//!
//! One process: a receiver thread and `--senders` sender threads on 127.0.0.1 (OS-chosen
//! ports), each sender running for `--duration-ms` and keeping `--window` frames in
//! flight; with `--processes` the senders are processes of their own (copies of this
//! program, started together), as several real clients are: switching between processes
//! costs more than between threads, and that is part of what the kernel allows. Prints one JSON object: rates, per-frame RTT percentiles measured at the
//! senders (tcp: the time to write a frame, as `img-client` reports it), per-sender rates,
//! and the CPU time of the receiver thread and of the sender threads. A frame not acked within 1 s counts as lost (the
//! receiver forgets partial counts after 50 ms of silence, so the senders resynchronise).
//!
//! `cargo run --release --example raw_limit -- --proto framed --frame-bytes 66000`

use clap::{Parser, ValueEnum};
use serde_json::json;
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};
use udphub::client::stats::percentile_of_sorted;
use udphub::hub::net::bind_udp;
use udphub::wire::framed::{self, AckStatus, DataHeader};
use udphub::wire::seed_msg::MSG_ACK;
use udphub::wire::seed_tcp;
use udphub::wire::seed_udp::{self, HeaderWidth, CHUNK_SIZE, IMG_ACK};
use udphub::wire::MAX_UDP_PAYLOAD;

/// The message the seed's `udp_client_2.py` sends: `json.dumps([0,0,0,1])`.
const SEED_MESSAGE: &[u8] = b"[0, 0, 0, 1]";
/// A frame without its ack this long counts as lost.
const ACK_TIMEOUT: Duration = Duration::from_secs(1);
/// The receiver forgets partial datagram counts after this much silence.
const RESYNC_IDLE: Duration = Duration::from_millis(50);

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Proto {
    Chunked,
    Framed,
    Tcp,
    Msg,
}

/// Measure the kernel's limit for udphub's datagrams on loopback.
#[derive(Parser, Debug)]
struct Args {
    #[arg(long, value_enum)]
    proto: Proto,
    /// Frame size in bytes (ignored for msg). The bytes are a fake JPEG unless --jpeg.
    #[arg(long, default_value_t = 66_000)]
    frame_bytes: usize,
    /// Send this file's bytes instead of a fake frame of --frame-bytes.
    #[arg(long)]
    jpeg: Option<PathBuf>,
    /// framed: payload bytes per datagram.
    #[arg(long, default_value_t = framed::DEFAULT_CHUNK_SIZE)]
    chunk_size: usize,
    /// Frames in flight per sender (udp image protocols).
    #[arg(long, default_value_t = 1)]
    window: usize,
    /// Sender threads, each with its own socket.
    #[arg(long, default_value_t = 1)]
    senders: usize,
    /// How long each sender sends.
    #[arg(long, default_value_t = 1000)]
    duration_ms: u64,
    /// Receive buffer asked for the receiver's UDP socket (the hub's default).
    #[arg(long, default_value_t = 8 << 20)]
    recv_buffer_bytes: usize,
    /// udp: run each sender as a process of its own (as the real clients are), not a thread.
    #[arg(long)]
    processes: bool,
    /// (internal) Be one sender process aimed at this receiver; start on a line on stdin.
    #[arg(long, hide = true)]
    child_to: Option<SocketAddr>,
}

/// What one sender measured.
#[derive(Default)]
struct SenderResult {
    frames: u64,
    lost: u64,
    elapsed: Duration,
    rtt_us: Vec<f64>,
    /// The sender thread's CPU time.
    cpu: Duration,
}

fn main() {
    let args = Args::parse();
    if let Err(e) = run(&args) {
        eprintln!("raw_limit: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Result<(), String> {
    let frame = match &args.jpeg {
        Some(path) => std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?,
        None => fake_frame(args.frame_bytes),
    };
    let senders = args.senders.max(1);
    let duration = Duration::from_millis(args.duration_ms);
    if let Some(to) = args.child_to {
        return child_sender(args, to, &frame, duration);
    }
    let (results, receiver_cpu, datagrams_per_frame, receiver_frames) = match args.proto {
        Proto::Chunked | Proto::Framed | Proto::Msg => {
            let (datagrams, ack) = datagrams(args, &frame)?;
            let (results, cpu) = run_udp(args, senders, duration, &datagrams, ack)?;
            (results, cpu, datagrams.len(), None)
        }
        Proto::Tcp => {
            let (results, cpu, received) = run_tcp(senders, duration, &frame)?;
            (results, cpu, 0, Some(received))
        }
    };

    let frames: u64 = results.iter().map(|r| r.frames).sum();
    let lost: u64 = results.iter().map(|r| r.lost).sum();
    let wall = results
        .iter()
        .map(|r| r.elapsed)
        .max()
        .unwrap_or_default()
        .as_secs_f64();
    let per_sender: Vec<f64> = results
        .iter()
        .map(|r| r.frames as f64 / r.elapsed.as_secs_f64().max(1e-9))
        .collect();
    // tcp: frames count when the receiver has read them all, not when they were written.
    let counted = receiver_frames.unwrap_or(frames);
    let fps = counted as f64 / wall.max(1e-9);
    let mut rtts: Vec<f64> = results
        .iter()
        .flat_map(|r| r.rtt_us.iter().copied())
        .collect();
    rtts.sort_by(f64::total_cmp);
    // Per sender, as the benchmark reports several real clients: the median of their p50s
    // and the largest of their p99s.
    let (mut p50s, mut p99s) = (Vec::new(), Vec::new());
    for r in &results {
        let mut v = r.rtt_us.clone();
        v.sort_by(f64::total_cmp);
        p50s.push(percentile(&v, 50.0));
        p99s.push(percentile(&v, 99.0));
    }
    p50s.sort_by(f64::total_cmp);
    let fastest = per_sender.iter().copied().fold(0.0, f64::max);
    let slowest = per_sender.iter().copied().fold(f64::INFINITY, f64::min);
    let out = json!({
        "proto": format!("{:?}", args.proto).to_lowercase(),
        "frame_bytes": if args.proto == Proto::Msg { SEED_MESSAGE.len() } else { frame.len() },
        "datagrams_per_frame": datagrams_per_frame,
        "senders": senders,
        "window": args.window,
        "frames": counted,
        "lost": lost,
        "elapsed_s": wall,
        "fps": fps,
        "per_sender_fps": per_sender,
        "slowest_over_fastest": if fastest > 0.0 { slowest / fastest } else { 0.0 },
        "rtt_p50_us": percentile(&rtts, 50.0),
        "rtt_p99_us": percentile(&rtts, 99.0),
        "median_sender_p50_us": p50s.get(p50s.len() / 2).copied().unwrap_or(0.0),
        "max_sender_p99_us": p99s.iter().copied().fold(0.0, f64::max),
        "processes": args.processes,
        "receiver_cpu_s": receiver_cpu.as_secs_f64(),
        "sender_cpu_s": results.iter().map(|r| r.cpu.as_secs_f64()).sum::<f64>(),
    });
    println!("{out}");
    Ok(())
}

/// A JPEG-shaped frame of `len` bytes (filler for coded data); the kernel does not look
/// inside.
fn fake_frame(len: usize) -> Vec<u8> {
    udphub::jpegcheck::filler_jpeg(len, 0)
}

/// The datagrams of one frame (or one message), built once, and the ack that answers it.
fn datagrams(args: &Args, frame: &[u8]) -> Result<(Vec<Vec<u8>>, &'static [u8]), String> {
    Ok(match args.proto {
        Proto::Chunked => {
            let mut d = vec![
                seed_udp::emit_length_header(frame.len() as i64, HeaderWidth::Eight)
                    .map_err(|e| e.to_string())?,
            ];
            d.extend(seed_udp::seed_chunks(frame, CHUNK_SIZE).map(<[u8]>::to_vec));
            (d, IMG_ACK)
        }
        Proto::Framed => {
            let chunk = args.chunk_size.clamp(1, framed::MAX_CHUNK_SIZE);
            let count = framed::chunk_count(frame.len(), chunk);
            let count16 = u16::try_from(count).map_err(|_| "too many chunks".to_string())?;
            let length = u32::try_from(frame.len()).map_err(|_| "frame too large")?;
            let size = framed::chunk_len(length, count16);
            let d = (0..count16)
                .map(|index| {
                    let start = size * index as usize;
                    let len = framed::payload_len(length, count16, index);
                    let header = DataHeader {
                        flags: 0,
                        stream: 1,
                        frame: 0,
                        index,
                        count: count16,
                        length,
                        ts_us: 0,
                    };
                    let mut out = Vec::with_capacity(framed::DATA_HEADER_LEN + len);
                    framed::emit_data(&mut out, &header, &frame[start..start + len]);
                    out
                })
                .collect();
            // 'static: the framed ack is built once and leaked (one 28-byte allocation).
            let ack = framed::emit_ack(1, 0, AckStatus::Delivered, 0).leak();
            (d, &*ack)
        }
        Proto::Msg => (vec![SEED_MESSAGE.to_vec()], MSG_ACK),
        Proto::Tcp => unreachable!("tcp has no datagrams"),
    })
}

/// The user+system CPU time of the calling thread.
fn thread_cpu() -> Duration {
    // SAFETY: getrusage only writes the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) } != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Nearest-rank percentile of sorted values (0 when empty).
fn percentile(sorted: &[f64], p: f64) -> f64 {
    percentile_of_sorted(sorted, p).unwrap_or(0.0)
}

/// UDP: one receiver counting datagrams per sender and acking each complete frame, and
/// `senders` senders keeping `window` frames in flight.
fn run_udp(
    args: &Args,
    senders: usize,
    duration: Duration,
    datagrams: &[Vec<u8>],
    ack: &'static [u8],
) -> Result<(Vec<SenderResult>, Duration), String> {
    let (socket, _granted) = bind_udp("127.0.0.1:0".parse().unwrap(), args.recv_buffer_bytes)
        .map_err(|e| format!("bind: {e}"))?;
    socket
        .set_read_timeout(Some(RESYNC_IDLE))
        .map_err(|e| e.to_string())?;
    let to = socket.local_addr().map_err(|e| e.to_string())?;
    let per_frame = datagrams.len() as u32;
    let stop = Arc::new(AtomicBool::new(false));
    let receiver = {
        let stop = stop.clone();
        thread::spawn(move || udp_receiver(socket, per_frame, ack, &stop))
    };
    let window = if args.proto == Proto::Msg {
        1
    } else {
        args.window.max(1)
    };
    let results = if args.processes {
        sender_processes(args, to, senders, duration)
    } else {
        let barrier = Arc::new(Barrier::new(senders));
        let datagrams = Arc::new(datagrams.to_vec());
        let handles: Vec<_> = (0..senders)
            .map(|_| {
                let (barrier, datagrams) = (barrier.clone(), datagrams.clone());
                thread::spawn(move || {
                    udp_sender(to, &datagrams, window, duration, &|| {
                        barrier.wait();
                    })
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().map_err(|_| "a sender panicked".to_string())?)
            .collect()
    };
    stop.store(true, Ordering::Relaxed);
    let cpu = receiver
        .join()
        .map_err(|_| "the receiver panicked".to_string())?;
    Ok((results?, cpu))
}

fn udp_receiver(socket: UdpSocket, per_frame: u32, ack: &[u8], stop: &AtomicBool) -> Duration {
    let cpu0 = thread_cpu();
    let mut buf = vec![0u8; MAX_UDP_PAYLOAD + 1];
    // Datagrams counted per sender; a handful of senders, so a linear search.
    let mut counts: Vec<(SocketAddr, u32)> = Vec::with_capacity(16);
    while !stop.load(Ordering::Relaxed) {
        match socket.recv_from(&mut buf) {
            Ok((_, from)) => {
                let at = match counts.iter().position(|(a, _)| *a == from) {
                    Some(at) => at,
                    None => {
                        counts.push((from, 0));
                        counts.len() - 1
                    }
                };
                counts[at].1 += 1;
                if counts[at].1 == per_frame {
                    counts[at].1 = 0;
                    let _ = socket.send_to(ack, from);
                }
            }
            // Silence: every sender is waiting on an ack that will not come (a datagram
            // was lost); forget the partial counts so the next frames line up again.
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                counts.iter_mut().for_each(|c| c.1 = 0)
            }
            Err(_) => {}
        }
    }
    thread_cpu().saturating_sub(cpu0)
}

fn udp_sender(
    to: SocketAddr,
    datagrams: &[Vec<u8>],
    window: usize,
    duration: Duration,
    start: &dyn Fn(),
) -> Result<SenderResult, String> {
    let socket = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    socket
        .set_read_timeout(Some(ACK_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let mut ack = [0u8; 64];
    let mut r = SenderResult {
        rtt_us: Vec::with_capacity(1 << 20),
        ..SenderResult::default()
    };
    let mut in_flight: VecDeque<Instant> = VecDeque::with_capacity(window);
    start();
    let cpu0 = thread_cpu();
    let started = Instant::now();
    let end = started + duration;
    loop {
        let now = Instant::now();
        while in_flight.len() < window && now < end {
            let sent = Instant::now();
            for d in datagrams {
                socket.send_to(d, to).map_err(|e| format!("send: {e}"))?;
            }
            in_flight.push_back(sent);
        }
        if in_flight.is_empty() {
            break;
        }
        match socket.recv(&mut ack) {
            Ok(_) => {
                let sent = in_flight.pop_front().expect("in flight");
                r.rtt_us.push(sent.elapsed().as_secs_f64() * 1e6);
                r.frames += 1;
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                r.lost += in_flight.len() as u64;
                in_flight.clear();
            }
            Err(e) => return Err(format!("recv: {e}")),
        }
        if Instant::now() >= end && in_flight.is_empty() {
            break;
        }
    }
    r.elapsed = started.elapsed();
    r.cpu = thread_cpu().saturating_sub(cpu0);
    Ok(r)
}

/// `senders` copies of this program as sender processes aimed at `to`: started, then told
/// to go at once (a line on their stdin), then their results read from their stdout.
fn sender_processes(
    args: &Args,
    to: SocketAddr,
    senders: usize,
    duration: Duration,
) -> Result<Vec<SenderResult>, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut child_args = vec![
        "--proto".to_string(),
        format!("{:?}", args.proto).to_lowercase(),
        "--frame-bytes".into(),
        args.frame_bytes.to_string(),
        "--chunk-size".into(),
        args.chunk_size.to_string(),
        "--window".into(),
        args.window.to_string(),
        "--duration-ms".into(),
        args.duration_ms.to_string(),
        "--child-to".into(),
        to.to_string(),
    ];
    if let Some(path) = &args.jpeg {
        child_args.extend(["--jpeg".into(), path.display().to_string()]);
    }
    let mut children = Vec::new();
    let (tx, rx) = mpsc::channel::<(usize, String)>();
    let mut result = Ok(Vec::new());
    for i in 0..senders {
        let spawned = Command::new(&exe)
            .args(&child_args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) => {
                result = Err(format!("cannot start a sender process: {e}"));
                break;
            }
        };
        let stdout = child.stdout.take().expect("piped");
        let tx = tx.clone();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send((i, line));
            }
        });
        children.push(child);
    }
    if result.is_ok() {
        result = collect_senders(&mut children, &rx, duration);
    }
    for mut child in children {
        if result.is_err() {
            let _ = child.kill();
        }
        let _ = child.wait();
    }
    result
}

/// Wait (bounded) for every sender process to be ready, tell them all to go, and read
/// their results.
fn collect_senders(
    children: &mut [std::process::Child],
    rx: &mpsc::Receiver<(usize, String)>,
    duration: Duration,
) -> Result<Vec<SenderResult>, String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    for _ in 0..children.len() {
        rx.recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .map_err(|_| "a sender process did not start in time".to_string())?;
    }
    for child in children.iter_mut() {
        let stdin = child.stdin.as_mut().expect("piped");
        stdin
            .write_all(b"go\n")
            .and_then(|()| stdin.flush())
            .map_err(|e| format!("cannot start a sender process: {e}"))?;
    }
    let deadline = Instant::now() + duration + Duration::from_secs(30);
    let mut results: Vec<Option<SenderResult>> = children.iter().map(|_| None).collect();
    while results.iter().any(Option::is_none) {
        let (i, line) = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .map_err(|_| "a sender process did not finish in time".to_string())?;
        let v: serde_json::Value = serde_json::from_str(&line)
            .map_err(|e| format!("a sender process printed {line:?}: {e}"))?;
        results[i] = Some(SenderResult {
            frames: v["frames"].as_u64().unwrap_or(0),
            lost: v["lost"].as_u64().unwrap_or(0),
            elapsed: Duration::from_secs_f64(v["elapsed_s"].as_f64().unwrap_or(0.0)),
            rtt_us: serde_json::from_value(v["rtt_us"].clone()).unwrap_or_default(),
            cpu: Duration::from_secs_f64(v["cpu_s"].as_f64().unwrap_or(0.0)),
        });
    }
    Ok(results.into_iter().flatten().collect())
}

/// `--child-to`: one sender process. Says `ready`, starts on a line on stdin, prints its
/// result as one JSON line.
fn child_sender(
    args: &Args,
    to: SocketAddr,
    frame: &[u8],
    duration: Duration,
) -> Result<(), String> {
    let (datagrams, _) = datagrams(args, frame)?;
    let window = if args.proto == Proto::Msg {
        1
    } else {
        args.window.max(1)
    };
    let r = udp_sender(to, &datagrams, window, duration, &|| {
        println!("ready");
        let _ = std::io::stdout().flush();
        let _ = std::io::stdin().lines().next();
    })?;
    let out = json!({
        "frames": r.frames,
        "lost": r.lost,
        "elapsed_s": r.elapsed.as_secs_f64(),
        "cpu_s": r.cpu.as_secs_f64(),
        "rtt_us": r.rtt_us,
    });
    println!("{out}");
    Ok(())
}

/// TCP: `senders` connections each writing header + frame back to back; one receiver
/// thread per connection reads them into one buffer. Returns the frames the receivers read.
fn run_tcp(
    senders: usize,
    duration: Duration,
    frame: &[u8],
) -> Result<(Vec<SenderResult>, Duration, u64), String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let to = listener.local_addr().map_err(|e| e.to_string())?;
    let frame = Arc::new(frame.to_vec());
    let barrier = Arc::new(Barrier::new(senders));
    let handles: Vec<_> = (0..senders)
        .map(|_| {
            let (barrier, frame) = (barrier.clone(), frame.clone());
            thread::spawn(move || tcp_sender(to, &frame, duration, &barrier))
        })
        .collect();
    let mut receivers = Vec::new();
    for _ in 0..senders {
        let (conn, _) = listener.accept().map_err(|e| e.to_string())?;
        let len = frame.len();
        receivers.push(thread::spawn(move || tcp_receiver(conn, len)));
    }
    let results: Result<Vec<SenderResult>, String> = handles
        .into_iter()
        .map(|h| h.join().map_err(|_| "a sender panicked".to_string())?)
        .collect();
    let (mut frames, mut cpu) = (0, Duration::ZERO);
    for r in receivers {
        let (f, c) = r.join().map_err(|_| "a receiver panicked".to_string())?;
        frames += f;
        cpu += c;
    }
    Ok((results?, cpu, frames))
}

fn tcp_receiver(mut conn: TcpStream, len: usize) -> (u64, Duration) {
    let cpu0 = thread_cpu();
    let _ = conn.set_read_timeout(Some(ACK_TIMEOUT));
    let mut buf = vec![0u8; seed_tcp::HEADER_LEN + len];
    let mut frames = 0;
    while conn.read_exact(&mut buf).is_ok() {
        frames += 1;
    }
    (frames, thread_cpu().saturating_sub(cpu0))
}

fn tcp_sender(
    to: SocketAddr,
    frame: &[u8],
    duration: Duration,
    barrier: &Barrier,
) -> Result<SenderResult, String> {
    let mut conn = TcpStream::connect(to).map_err(|e| e.to_string())?;
    conn.set_nodelay(true).map_err(|e| e.to_string())?;
    let header = seed_tcp::emit_header(frame.len());
    let mut r = SenderResult {
        rtt_us: Vec::with_capacity(1 << 20),
        ..SenderResult::default()
    };
    barrier.wait();
    let cpu0 = thread_cpu();
    let started = Instant::now();
    while started.elapsed() < duration {
        let t0 = Instant::now();
        conn.write_all(&header)
            .and_then(|()| conn.write_all(frame))
            .map_err(|e| format!("write: {e}"))?;
        r.rtt_us.push(t0.elapsed().as_secs_f64() * 1e6);
        r.frames += 1;
    }
    // Close and wait for the receiver to have read everything, as img-client does.
    conn.shutdown(std::net::Shutdown::Write)
        .map_err(|e| e.to_string())?;
    let _ = conn.set_read_timeout(Some(ACK_TIMEOUT));
    let _ = conn.read(&mut [0u8; 16]);
    r.elapsed = started.elapsed();
    r.cpu = thread_cpu().saturating_sub(cpu0);
    Ok(r)
}
