//! `abuse_bench`: the attack benchmark of issue 11. What one hostile peer on the same
//! network costs the legitimate traffic of a hub, attack by attack. Run it with
//! `scripts/abuse_bench.sh` (`--quick` for a short smoke run).
//!
//! Every case, the no-attack baseline first, runs for a fixed time (10 s, `--quick` 2 s)
//! against a fresh release `hub` (OS-chosen loopback ports, default log level so its stderr
//! is what a user would see, `--msg-log` and `--save-dir` into a temp dir of the case's own,
//! `--http`, `--json-summary`). Every case runs the same hub flags so the baseline is the
//! same configuration. Beside it, the legitimate clients, each printing `--json-summary`:
//! - `img-client --pattern --fps 30` (framed): legit fps = acked / its elapsed time;
//! - `msg-client --interval-ms 10`: legit msgs/s = answered / its elapsed time;
//! - `img-client --pattern --fps 10 --protocol tcp`: the seed TCP stream has no ack, so its
//!   delivered fps is the hub's own count of TCP frames (its exit summary) over the case time;
//! - an HTTP poller in this process: `GET /state` every 100 ms on a fresh connection
//!   (1 s timeouts), counting 200s.
//!
//! The attacker runs in this process on threads of its own, from sockets bound to
//! 127.0.0.2..127.0.0.50 where the case needs many sources, and stops at the case end.
//! Its datagrams are built with the library's own emitters (`udphub::wire`). Cases: framed
//! datagrams claiming 16 MiB frames (first chunk; last chunk) from 2000 sockets, seed 8-byte
//! headers claiming 16 MiB plus three 1024-byte chunks from 2000 sockets, 65,000-byte valid
//! JSON to the message port, 5-byte "JPEGs" `FF D8 00 FF D9` from one socket, 200 HTTP
//! slowloris connections (one byte a second), 100 TCP stream connections that send a
//! 16-byte header and then nothing, framed POLL datagrams for a pending frame with every
//! other chunk missing, and 2000 sources sending one small frame each.
//!
//! Columns: the legitimate rates and their ratio to the baseline of the same invocation;
//! hub CPU seconds (`/proc/<pid>/stat` utime+stime, before the clients start and after they
//! stop); hub max RSS (`VmHWM` of `/proc/<pid>/status` at the end); bytes on disk in the
//! temp dir at the end and the bytes the hub wrote (`wchar` of `/proc/<pid>/io`, stderr
//! and stdout included); reply bytes per attack byte for the UDP attacks (every attacker
//! socket's replies read back); the hub's stderr bytes. A row is marked when the attacker
//! itself is CPU-bound: its threads' CPU (`/proc/thread-self/stat` at each thread's end)
//! over the attack's wall time above 0.8 of a core: on a 2-core machine it then competes
//! with the hub for CPU and the row partly measures that.
//!
//! Output: a markdown table on stdout and JSON in `target/bench/abuse.json` (or `--out`).
//! Every wait is bounded: sockets have timeouts, child processes deadlines (killed past
//! them), the attack threads check a stop flag at least every 100 ms. Exit status 1 only
//! when a case could not be measured.

use clap::Parser;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};
use udphub::client::stats::{ImgSummary, MsgSummary};
use udphub::hub::source::Service;
use udphub::wire::{framed, seed_tcp, seed_udp};
use udphub_testkit::{HubProcess, Ports, Running, Signal};

/// Attack the hub case by case while legitimate clients run beside it.
#[derive(Parser, Debug)]
struct Args {
    /// A short smoke run: 2 s per case.
    #[arg(long)]
    quick: bool,
    /// Seconds per case (default 10, or 2 with --quick).
    #[arg(long)]
    secs: Option<f64>,
    /// Run only the cases whose name contains one of these (comma-separated); the
    /// baseline always runs.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Pace the UDP floods to this many datagrams per second (10x the 2,000/s of the
    /// issue's measurements); 0: as fast as one attacker thread sends, a volumetric flood
    /// that measures the capacity of one UDP socket and core as much as the hub's policy.
    #[arg(long, default_value_t = 20_000.0)]
    pps: f64,
    /// Where the JSON goes.
    #[arg(long, default_value = "target/bench/abuse.json")]
    out: PathBuf,
}

/// The cases, in order; `none` is the baseline.
const CASES: &[(&str, &str)] = &[
    ("none", "no attack (baseline)"),
    (
        "framed-16mib",
        "framed: 16 MiB frame claims, chunk 0, 2000 sockets",
    ),
    (
        "framed-16mib-last",
        "framed: 16 MiB frame claims, last chunk, 2000 sockets",
    ),
    (
        "seed-16mib",
        "seed: 8-byte header 16 MiB + 3 x 1024 B, 2000 sockets",
    ),
    ("msg-65k", "65,000-byte valid JSON to the message port"),
    ("tiny-jpeg", "5-byte JPEGs FF D8 00 FF D9, one socket"),
    ("slowloris", "200 HTTP connections, 1 byte/s"),
    (
        "tcp-hold",
        "100 TCP connections: 16-byte header, then nothing",
    ),
    (
        "poll",
        "framed POLL for a pending frame (256 ranges missing)",
    ),
    ("many-sources", "2000 sources, one frame each"),
];

/// Sockets of the many-source attacks, and the addresses they are bound to.
const MANY: usize = 2000;
const FIRST_HOST: u8 = 2;
const LAST_HOST: u8 = 50;
const CLAIM: u32 = 16 * 1024 * 1024;
/// Chunks of a claimed 16 MiB framed frame: 1024 payload bytes each.
const CLAIM_CHUNKS: u16 = 16384;

fn main() {
    let args = Args::parse();
    if let Err(e) = run(&args) {
        eprintln!("abuse_bench: {e}");
        std::process::exit(1);
    }
}

struct Bins {
    hub: PathBuf,
    img_client: PathBuf,
    msg_client: PathBuf,
}

fn bins() -> Result<Bins, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or("no parent dir")?
        .to_path_buf();
    let b = Bins {
        hub: dir.join("hub"),
        img_client: dir.join("img-client"),
        msg_client: dir.join("msg-client"),
    };
    for p in [&b.hub, &b.img_client, &b.msg_client] {
        if !p.is_file() {
            return Err(format!(
                "{} is missing: build with `cargo build --release --bins --examples` \
                 (scripts/abuse_bench.sh does)",
                p.display()
            ));
        }
    }
    Ok(b)
}

fn run(args: &Args) -> Result<(), String> {
    let started = Instant::now();
    let bins = bins()?;
    let secs = args.secs.unwrap_or(if args.quick { 2.0 } else { 10.0 });
    if !(0.5..=600.0).contains(&secs) {
        return Err(format!("--secs {secs} is out of 0.5..600"));
    }
    let span = Duration::from_secs_f64(secs);
    // One small valid frame for the many-sources case (the hub checks frames are JPEGs).
    let small_jpeg = udphub::media::testjpeg::noisy_pattern_jpeg(160, 120, 80, 4000)
        .map_err(|e| format!("encoding the small frame: {e}"))?;

    let mut results = Vec::new();
    for &(name, what) in CASES {
        let wanted = name == "none"
            || args.only.is_empty()
            || args.only.iter().any(|o| name.contains(o.as_str()));
        if !wanted {
            continue;
        }
        eprintln!("abuse_bench: {name}: {what} ({secs} s) ...");
        let mut v = json!({"case": name, "what": what, "secs": secs});
        match measure(
            &bins,
            name,
            span,
            &small_jpeg,
            (args.pps > 0.0).then_some(args.pps),
        ) {
            Ok(m) => {
                for (k, x) in m.as_object().expect("an object") {
                    v[k] = x.clone();
                }
                v["error"] = Value::Null;
            }
            Err(e) => {
                eprintln!("abuse_bench: {name}: {e}");
                v["error"] = json!(e);
            }
        }
        results.push(v);
    }
    add_ratios(&mut results);

    let table = table(&results);
    println!("{table}");
    let total = started.elapsed().as_secs_f64();
    println!(
        "{secs} s per case, {} cases, {total:.0} s in all; JSON: {}",
        results.len(),
        args.out.display()
    );
    let doc = json!({
        "secs_per_case": secs,
        "quick": args.quick,
        "pps": args.pps,
        "seconds": total,
        "loadavg": std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim(),
        "table": table,
        "cases": results,
    });
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let text = serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?;
    std::fs::write(&args.out, text + "\n").map_err(|e| format!("{}: {e}", args.out.display()))?;
    let failed = results.iter().filter(|r| !r["error"].is_null()).count();
    if failed > 0 {
        return Err(format!(
            "{failed} case(s) could not be measured (see above)"
        ));
    }
    Ok(())
}

/// Each legitimate rate as a ratio to the baseline's.
fn add_ratios(results: &mut [Value]) {
    let Some(base) = results.iter().find(|r| r["case"] == "none").cloned() else {
        return;
    };
    for r in results.iter_mut() {
        for key in [
            "legit_fps",
            "legit_msgs_per_s",
            "legit_tcp_fps",
            "http_ok_per_s",
        ] {
            let ratio = match (r[key].as_f64(), base[key].as_f64()) {
                (Some(x), Some(b)) if b > 0.0 => json!(x / b),
                _ => Value::Null,
            };
            r[format!("{key}_ratio")] = ratio;
        }
    }
}

/// One case: a fresh hub, the legitimate clients, the attack, and the hub's costs.
fn measure(
    bins: &Bins,
    case: &str,
    span: Duration,
    small_jpeg: &[u8],
    pace: Option<f64>,
) -> Result<Value, String> {
    let tmp = tempfile::Builder::new()
        .prefix("abuse-bench-")
        .tempdir()
        .map_err(|e| format!("temp dir: {e}"))?;
    let save_dir = tmp.path().join("save");
    std::fs::create_dir(&save_dir).map_err(|e| format!("{}: {e}", save_dir.display()))?;
    let msg_log = tmp.path().join("msg.log");
    let (save_dir, msg_log) = (
        save_dir.to_str().ok_or("temp path is not UTF-8")?,
        msg_log.to_str().ok_or("temp path is not UTF-8")?,
    );
    let hub = HubProcess::start(
        &bins.hub,
        &[
            "--http",
            "127.0.0.1:0",
            "--msg-log",
            msg_log,
            "--save-dir",
            save_dir,
            "--json-summary",
        ],
        &[],
        Duration::from_secs(20),
    )?;
    let ports = hub.ports;
    let (img, msg, tcp, http) = (
        ports.img.ok_or("no image port")?,
        ports.msg.ok_or("no message port")?,
        ports.tcp.ok_or("no tcp port")?,
        ports.http.ok_or("no http port")?,
    );
    let pid = hub.pid();
    let cpu_before = proc_cpu(&format!("/proc/{pid}/stat"))?;
    let wchar_before = proc_io_wchar(pid);

    let quiet = |c: &mut Command| {
        c.env("RUST_LOG", "warn");
    };
    let mut framed_cmd = Command::new(&bins.img_client);
    framed_cmd.args(["--pattern", "--fps", "30", "--protocol", "framed", "--hub"]);
    framed_cmd.args([
        img.to_string().as_str(),
        "--status-interval-ms",
        "0",
        "--json-summary",
    ]);
    quiet(&mut framed_cmd);
    let mut tcp_cmd = Command::new(&bins.img_client);
    tcp_cmd.args(["--pattern", "--fps", "10", "--protocol", "tcp", "--hub"]);
    tcp_cmd.args([
        tcp.to_string().as_str(),
        "--status-interval-ms",
        "0",
        "--json-summary",
    ]);
    quiet(&mut tcp_cmd);
    let mut msg_cmd = Command::new(&bins.msg_client);
    msg_cmd.args(["--interval-ms", "10", "--hub"]);
    msg_cmd.args([
        msg.to_string().as_str(),
        "--status-interval-ms",
        "0",
        "--json-summary",
    ]);
    quiet(&mut msg_cmd);
    let framed_client = Running::spawn(&mut framed_cmd, b"")?;
    let tcp_client = Running::spawn(&mut tcp_cmd, b"")?;
    let msg_client = Running::spawn(&mut msg_cmd, b"")?;

    let stop = AtomicBool::new(false);
    let t0 = Instant::now();
    let (attack, http_polls) = thread::scope(|s| {
        let poller = s.spawn(|| poll_state(http, &stop));
        let attacker = s.spawn(|| attack(case, ports, &stop, span, small_jpeg, pace));
        // The case's fixed time; the attack threads return soon after the flag is set.
        thread::sleep(span);
        stop.store(true, Ordering::SeqCst);
        (
            attacker
                .join()
                .unwrap_or_else(|_| Err("the attacker panicked".into())),
            poller.join().unwrap_or((0, 0)),
        )
    });
    let attack_wall = t0.elapsed();

    let deadline = Instant::now() + Duration::from_secs(10);
    let mut finished = Vec::new();
    for c in [framed_client, tcp_client, msg_client] {
        // SAFETY: kill(2) on a child this process started and has not reaped.
        unsafe { libc::kill(c.pid() as libc::pid_t, libc::SIGINT) };
        finished.push(c);
    }
    let mut outs = Vec::new();
    for c in finished {
        outs.push(c.wait(deadline));
    }
    let cpu_after = proc_cpu(&format!("/proc/{pid}/stat"))?;
    let wchar_after = proc_io_wchar(pid);
    let rss_max_kb = vm_hwm_kb(pid);
    let stopped = hub.stop(Signal::Int, Duration::from_secs(10))?;
    let summary = stopped.summary()?;
    let attack = attack?;
    let [framed_out, tcp_out, msg_out]: [_; 3] = outs.try_into().expect("three clients");
    let (framed_out, tcp_out, msg_out) = (framed_out?, tcp_out?, msg_out?);
    let f: ImgSummary = serde_json::from_str(framed_out.stdout.trim()).map_err(|e| {
        format!(
            "img-client (framed) summary: {e}: {}",
            framed_out.describe()
        )
    })?;
    let t: ImgSummary = serde_json::from_str(tcp_out.stdout.trim())
        .map_err(|e| format!("img-client (tcp) summary: {e}: {}", tcp_out.describe()))?;
    let m: MsgSummary = serde_json::from_str(msg_out.stdout.trim())
        .map_err(|e| format!("msg-client summary: {e}: {}", msg_out.describe()))?;
    let tcp_frames = summary
        .service(Service::Tcp)
        .map(|s| s.total.items)
        .unwrap_or(0);
    let rate = |n: u64, secs: f64| (secs > 0.0).then(|| n as f64 / secs);
    let wall = attack_wall.as_secs_f64();
    let attacker_cores = attack.cpu_s / wall;
    Ok(json!({
        "legit_fps": rate(f.acked, f.elapsed_s),
        "legit_frames": {"sent": f.sent, "acked": f.acked, "lost": f.lost, "elapsed_s": f.elapsed_s},
        "legit_msgs_per_s": rate(m.answered, m.elapsed_s),
        "legit_msgs": {"sent": m.sent, "answered": m.answered, "rejected": m.rejected, "lost": m.lost, "elapsed_s": m.elapsed_s},
        "legit_tcp_fps": rate(tcp_frames, t.elapsed_s),
        "legit_tcp": {"written": t.written, "hub_delivered_tcp": tcp_frames, "elapsed_s": t.elapsed_s},
        "http_ok": http_polls.0,
        "http_polls": http_polls.1,
        "http_ok_per_s": rate(http_polls.0, wall),
        "hub_cpu_s": cpu_after - cpu_before,
        "hub_rss_max_kb": rss_max_kb,
        "disk_bytes_end": dir_bytes(tmp.path()),
        "hub_wchar_bytes": match (wchar_before, wchar_after) {
            (Some(a), Some(b)) => json!(b.saturating_sub(a)),
            _ => Value::Null,
        },
        "hub_stderr_bytes": stopped.stderr.len(),
        "hub_stderr_lines": stopped.stderr.lines().count(),
        "hub_saved": summary.saved.as_ref().map(|s| json!({"saved": s.saved, "skipped": s.skipped, "failed": s.failed})),
        "attack_bytes": attack.sent_bytes,
        "attack_sends": attack.sends,
        "attack_send_errors": attack.send_errors,
        "attack_reconnects": attack.reconnects,
        "reply_bytes": attack.reply_bytes,
        "amplification": attack.expects_replies.then(|| {
            if attack.sent_bytes > 0 { attack.reply_bytes as f64 / attack.sent_bytes as f64 } else { 0.0 }
        }),
        "attacker_cpu_s": attack.cpu_s,
        "attacker_cores": attacker_cores,
        "attacker_cpu_bound": attacker_cores > 0.8,
        "attack_wall_s": wall,
    }))
}

/// What the attacker did.
#[derive(Default)]
struct Attack {
    sends: u64,
    sent_bytes: u64,
    send_errors: u64,
    reply_bytes: u64,
    reconnects: u64,
    /// Its threads' CPU seconds.
    cpu_s: f64,
    /// A UDP attack whose replies are read back (amplification is reported).
    expects_replies: bool,
}

fn attack(
    case: &str,
    ports: Ports,
    stop: &AtomicBool,
    span: Duration,
    small_jpeg: &[u8],
    pace: Option<f64>,
) -> Result<Attack, String> {
    let flat = pace.map(|pps| (pps, u64::MAX));
    let img = ports.img.ok_or("no image port")?;
    match case {
        "none" => Ok(Attack::default()),
        "framed-16mib" | "framed-16mib-last" => {
            let index = if case == "framed-16mib" {
                0
            } else {
                CLAIM_CHUNKS - 1
            };
            let socks = many_udp(MANY)?;
            let payload = vec![0u8; framed::payload_len(CLAIM, CLAIM_CHUNKS, index)];
            Ok(flood(&socks, img, stop, flat, |k, out| {
                let h = framed::DataHeader {
                    flags: 0,
                    stream: 0x5eed_0000 + (k % MANY as u64) as u32,
                    frame: (k / MANY as u64) as u32,
                    index,
                    count: CLAIM_CHUNKS,
                    length: CLAIM,
                    ts_us: 0,
                };
                framed::emit_data(out, &h, &payload);
                (k % MANY as u64) as usize
            }))
        }
        "seed-16mib" => {
            let socks = many_udp(MANY)?;
            let header = seed_udp::emit_length_header(CLAIM as i64, seed_udp::HeaderWidth::Eight)
                .map_err(|e| format!("seed header: {e:?}"))?;
            let chunk = vec![0x55u8; seed_udp::CHUNK_SIZE];
            Ok(flood(&socks, img, stop, flat, |k, out| {
                // Per socket: the header, then three chunks, then the next socket.
                out.extend_from_slice(if k % 4 == 0 { &header } else { &chunk });
                ((k / 4) % MANY as u64) as usize
            }))
        }
        "msg-65k" => {
            let msg = ports.msg.ok_or("no message port")?;
            let socks = vec![udp_on(IpAddr::V4(Ipv4Addr::LOCALHOST))?];
            let head = br#"{"pad":""#;
            let tail = br#""}"#;
            let mut json = head.to_vec();
            json.resize(65_000 - tail.len(), b'x');
            json.extend_from_slice(tail);
            debug_assert!(serde_json::from_slice::<Value>(&json).is_ok());
            Ok(flood(&socks, msg, stop, flat, |_, out| {
                out.extend_from_slice(&json);
                0
            }))
        }
        "tiny-jpeg" => {
            let socks = vec![udp_on(IpAddr::V4(Ipv4Addr::LOCALHOST))?];
            Ok(flood(&socks, img, stop, flat, |_, out| {
                out.extend_from_slice(&[0xFF, 0xD8, 0x00, 0xFF, 0xD9]);
                0
            }))
        }
        "poll" => {
            let socks = vec![udp_on(IpAddr::V4(Ipv4Addr::LOCALHOST))?];
            // 512 one-byte chunks; the even ones are sent (without POLL) first, so 256
            // ranges stay missing; then every datagram re-sends an even chunk with POLL.
            const COUNT: u16 = 512;
            Ok(flood(&socks, img, stop, flat, |k, out| {
                let even = (k % (COUNT as u64 / 2)) as u16 * 2;
                let h = framed::DataHeader {
                    flags: if k < COUNT as u64 / 2 {
                        0
                    } else {
                        framed::POLL
                    },
                    stream: 0x9011_0001,
                    frame: 1,
                    index: even,
                    count: COUNT,
                    length: COUNT as u32,
                    ts_us: 0,
                };
                framed::emit_data(out, &h, &[0xAB]);
                0
            }))
        }
        "many-sources" => {
            let socks = many_udp(MANY)?;
            let count = framed::chunk_count(small_jpeg.len(), framed::DEFAULT_CHUNK_SIZE);
            let chunks: Vec<&[u8]> = small_jpeg.chunks(framed::DEFAULT_CHUNK_SIZE).collect();
            debug_assert_eq!(chunks.len(), count);
            let total = (MANY * count) as u64;
            // Spread over the first half of the case so the stats lines see them.
            let rate = total as f64 / (span.as_secs_f64() / 2.0);
            Ok(flood(&socks, img, stop, Some((rate, total)), |k, out| {
                let (sock, index) = ((k / count as u64) as usize, (k % count as u64) as u16);
                let h = framed::DataHeader {
                    flags: 0,
                    stream: 0x0a11_0000 + sock as u32,
                    frame: 1,
                    index,
                    count: count as u16,
                    length: small_jpeg.len() as u32,
                    ts_us: 0,
                };
                framed::emit_data(out, &h, chunks[index as usize]);
                sock
            }))
        }
        "slowloris" => {
            let http = ports.http.ok_or("no http port")?;
            Ok(hold_tcp(
                http,
                200,
                b"GET /state HTTP/1.1\r\nHost: x\r\n\r\n",
                1,
                stop,
            ))
        }
        "tcp-hold" => {
            let tcp = ports.tcp.ok_or("no tcp port")?;
            let header = seed_tcp::emit_header(100_000);
            Ok(hold_tcp(tcp, 100, &header, header.len(), stop))
        }
        other => Err(format!("unknown case {other}")),
    }
}

/// The i-th of the many source addresses (127.0.0.2..127.0.0.50, round robin).
fn source_ip(i: usize) -> IpAddr {
    let hosts = (LAST_HOST - FIRST_HOST + 1) as usize;
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, FIRST_HOST + (i % hosts) as u8))
}

fn udp_on(ip: IpAddr) -> Result<UdpSocket, String> {
    let s = UdpSocket::bind(SocketAddr::new(ip, 0)).map_err(|e| format!("bind {ip}: {e}"))?;
    s.set_nonblocking(true)
        .map_err(|e| format!("nonblocking: {e}"))?;
    Ok(s)
}

fn many_udp(n: usize) -> Result<Vec<UdpSocket>, String> {
    (0..n).map(|i| udp_on(source_ip(i))).collect()
}

/// Send `make(k)`'s datagram from `socks[returned index]` to `to` for k = 0, 1, ... until
/// `stop` (or `limit` = (datagrams per second, total) runs out), reading every socket's
/// replies back now and then. Single-threaded: the datagrams go out as fast as one core
/// sends them, unless paced.
fn flood(
    socks: &[UdpSocket],
    to: SocketAddr,
    stop: &AtomicBool,
    limit: Option<(f64, u64)>,
    mut make: impl FnMut(u64, &mut Vec<u8>) -> usize,
) -> Attack {
    let mut a = Attack {
        expects_replies: true,
        ..Attack::default()
    };
    let started = Instant::now();
    let mut out = Vec::with_capacity(65_536);
    let mut buf = vec![0u8; 65_536];
    // Each socket's replies are read back every few datagrams it sent.
    let sweep_every = (socks.len() as u64 * 8).max(32);
    let mut drain = |a: &mut Attack| {
        for s in socks {
            while let Ok(n) = s.recv(&mut buf) {
                a.reply_bytes += n as u64;
            }
        }
    };
    let mut k = 0u64;
    while !stop.load(Ordering::Relaxed) {
        if let Some((rate, total)) = limit {
            if k >= total {
                thread::sleep(Duration::from_millis(20));
                drain(&mut a);
                continue;
            }
            let due = started + Duration::from_secs_f64(k as f64 / rate);
            let now = Instant::now();
            if due > now {
                thread::sleep((due - now).min(Duration::from_millis(50)));
                continue;
            }
        }
        out.clear();
        let i = make(k, &mut out);
        match socks[i].send_to(&out, to) {
            Ok(n) => {
                a.sends += 1;
                a.sent_bytes += n as u64;
            }
            Err(_) => a.send_errors += 1,
        }
        k += 1;
        if k % sweep_every == 0 {
            drain(&mut a);
        }
    }
    // The replies still on their way.
    thread::sleep(Duration::from_millis(50));
    drain(&mut a);
    a.cpu_s = thread_cpu();
    a
}

/// Keep `n` TCP connections (from the many source addresses) open to `to`: each sends
/// `opening`, `per_tick` bytes a second, and is opened again when the hub closes it.
fn hold_tcp(
    to: SocketAddr,
    n: usize,
    opening: &[u8],
    per_tick: usize,
    stop: &AtomicBool,
) -> Attack {
    let mut a = Attack::default();
    let connect = |i: usize| -> Option<TcpStream> {
        let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).ok()?;
        sock.bind(&SocketAddr::new(source_ip(i), 0).into()).ok()?;
        sock.connect_timeout(&to.into(), Duration::from_millis(200))
            .ok()?;
        let s: TcpStream = sock.into();
        s.set_nonblocking(true).ok()?;
        Some(s)
    };
    let reconnects = AtomicU64::new(0);
    let mut conns: Vec<(Option<TcpStream>, usize)> = (0..n)
        .map(|i| (connect(i), 0))
        .take_while(|_| !stop.load(Ordering::Relaxed))
        .collect();
    let mut buf = [0u8; 4096];
    let mut next_tick = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        if Instant::now() < next_tick {
            thread::sleep(Duration::from_millis(20));
            continue;
        }
        next_tick += Duration::from_secs(1);
        for (i, (conn, written)) in conns.iter_mut().enumerate() {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let mut alive = conn.is_some();
            if let Some(s) = conn.as_mut() {
                // What the hub answered (a 503, say), and whether it closed.
                loop {
                    match s.read(&mut buf) {
                        Ok(0) => {
                            alive = false;
                            break;
                        }
                        Ok(n) => a.reply_bytes += n as u64,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        Err(_) => {
                            alive = false;
                            break;
                        }
                    }
                }
                if alive && *written < opening.len() {
                    let end = (*written + per_tick).min(opening.len());
                    match s.write(&opening[*written..end]) {
                        Ok(w) => {
                            *written += w;
                            a.sends += 1;
                            a.sent_bytes += w as u64;
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(_) => alive = false,
                    }
                }
            }
            if !alive {
                *conn = connect(i);
                *written = 0;
                reconnects.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    a.reconnects = reconnects.load(Ordering::Relaxed);
    a.cpu_s = thread_cpu();
    a
}

/// `GET /state` every 100 ms on a fresh connection until `stop`: (200s, requests).
fn poll_state(http: SocketAddr, stop: &AtomicBool) -> (u64, u64) {
    let (mut ok, mut polls) = (0, 0);
    let timeout = Duration::from_secs(1);
    while !stop.load(Ordering::Relaxed) {
        let next = Instant::now() + Duration::from_millis(100);
        polls += 1;
        let got = (|| -> std::io::Result<bool> {
            let mut s = TcpStream::connect_timeout(&http, timeout)?;
            s.set_read_timeout(Some(timeout))?;
            s.set_write_timeout(Some(timeout))?;
            s.write_all(b"GET /state HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")?;
            let mut head = [0u8; 12];
            s.read_exact(&mut head)?;
            Ok(&head[..] == b"HTTP/1.1 200")
        })();
        if let Ok(true) = got {
            ok += 1;
        }
        let now = Instant::now();
        if next > now {
            thread::sleep(next - now);
        }
    }
    (ok, polls)
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// utime + stime of a `/proc/.../stat` file, in seconds.
fn proc_cpu(path: &str) -> Result<f64, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    // The command name may hold spaces: the fields start after its closing parenthesis.
    let rest = text.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
    // Fields 14 and 15 of stat(5); `rest` starts at field 3.
    Ok((field(11) + field(12)) / clock_ticks())
}

/// This thread's CPU seconds so far.
fn thread_cpu() -> f64 {
    proc_cpu("/proc/thread-self/stat").unwrap_or(0.0)
}

fn vm_hwm_kb(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn proc_io_wchar(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    let line = text.lines().find(|l| l.starts_with("wchar:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Bytes of every file under `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

fn table(results: &[Value]) -> String {
    let num = |v: &Value, digits: usize| match v.as_f64() {
        Some(x) => format!("{x:.digits$}"),
        None => "-".into(),
    };
    let with_ratio = |r: &Value, key: &str, digits: usize| {
        let ratio = &r[format!("{key}_ratio")];
        match ratio.as_f64() {
            Some(x) => format!("{} ({x:.2}×)", num(&r[key], digits)),
            None => num(&r[key], digits),
        }
    };
    let mb = |v: &Value| match v.as_f64() {
        Some(x) => format!("{:.1}", x / 1e6),
        None => "-".into(),
    };
    let mut out = String::from(
        "| attack | legit fps (× none) | legit msgs/s (× none) | legit tcp fps (× none) | \
         /state 200s | hub CPU s | hub max RSS MB | disk MB at end | hub wrote MB | \
         reply/attack bytes | attack MB sent | hub stderr KB | attacker CPU-bound |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n",
    );
    for r in results {
        let mut cells = vec![r["case"].as_str().unwrap_or("?").to_string()];
        if let Some(e) = r["error"].as_str() {
            cells.push(format!("error: {}", e.lines().next().unwrap_or("")));
        } else {
            cells.push(with_ratio(r, "legit_fps", 1));
            cells.push(with_ratio(r, "legit_msgs_per_s", 0));
            cells.push(with_ratio(r, "legit_tcp_fps", 1));
            cells.push(format!(
                "{}/{}",
                r["http_ok"].as_u64().unwrap_or(0),
                r["http_polls"].as_u64().unwrap_or(0)
            ));
            cells.push(num(&r["hub_cpu_s"], 2));
            cells.push(match r["hub_rss_max_kb"].as_f64() {
                Some(kb) => format!("{:.0}", kb / 1024.0),
                None => "-".into(),
            });
            cells.push(mb(&r["disk_bytes_end"]));
            cells.push(mb(&r["hub_wchar_bytes"]));
            cells.push(match r["amplification"].as_f64() {
                Some(x) => format!("{x:.3}"),
                None => "-".into(),
            });
            cells.push(mb(&r["attack_bytes"]));
            cells.push(match r["hub_stderr_bytes"].as_f64() {
                Some(x) => format!("{:.1}", x / 1e3),
                None => "-".into(),
            });
            cells.push(if r["attacker_cpu_bound"].as_bool() == Some(true) {
                format!(
                    "**yes** ({:.2} cores)",
                    r["attacker_cores"].as_f64().unwrap_or(0.0)
                )
            } else {
                format!("no ({:.2})", r["attacker_cores"].as_f64().unwrap_or(0.0))
            });
        }
        out.push_str(&format!("| {} |\n", cells.join(" | ")));
    }
    out
}
