//! `mqtt_bench`: the MQTT benchmark of issue 15. Telemetry end to end through the hub
//! (`msg-client --stdin` → `hub --mqtt` → a private Mosquitto → `mosquitto_sub`) beside
//! Mosquitto's own path (`mosquitto_pub -l` → the same broker → `mosquitto_sub`), in the same
//! run, and the hub's receive rate with `--mqtt` on against off. Run it with
//! `scripts/mqtt_bench.sh` (`--quick` for a short smoke run).
//!
//! Both end-to-end paths are fed the same way: this process writes one JSON line per message,
//! `{"seq":N,"t_us":T}` with `T` the wall clock (µs) when the line is written, into the
//! publisher's stdin, and reads `mosquitto_sub`'s stdout, stamping each line's arrival: the
//! latency is arrival − `t_us` (one clock, one machine). Each path runs twice:
//! - **rate**: `--messages` lines written as fast as the path carries them, at most
//!   [`WINDOW`] (100) on their way at once (more, and a burst overflows the broker's queue for
//!   a slow subscriber: the run would measure drops); the rate is the messages that arrived
//!   over the time from the first write to the last arrival;
//! - **latency**: `--latency-messages` lines paced at `--latency-rate` a second (well below
//!   either path's rate, so the figures are the path's own, not its queue's); p50/p99/max.
//!
//! Both publish with QoS 1 and the subscriber subscribes with QoS 1; `mosquitto_pub` keeps up
//! to 20 messages in flight (its default `-M`), `msg-client` one (it waits for each reply:
//! its framed messages are logged exactly once), and the hub's MQTT client up to 100. Every
//! message is checked to arrive exactly once (by its `seq`).
//!
//! The receive-rate rows run `msg-client --data ... --interval-ms 0 --count N` against a
//! hub without and with `--mqtt` (alternating which goes first, best of `--rounds`), as
//! messages answered per second (the client's `--json-summary`).
//!
//! Goals (issue 15): hub path rate ≥ 0.8 of Mosquitto's, p99 ≤ 2× Mosquitto's p99, receive
//! rate with `--mqtt` ≥ 0.9 of without. Output: a table on stdout, JSON in
//! `target/bench/mqtt.json` (or `--out`). Every wait is bounded; children are killed on drop.

use clap::Parser;
use serde_json::json;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use udphub::client::stats::{percentile_of_sorted, MsgSummary};
use udphub_testkit::broker::Mosquitto;
use udphub_testkit::{HubProcess, Signal};

#[derive(Parser, Debug)]
struct Args {
    /// A short smoke run (fewer messages, one round).
    #[arg(long)]
    quick: bool,
    /// Messages of each rate run.
    #[arg(long, default_value_t = 20_000)]
    messages: u64,
    /// Messages of each latency run.
    #[arg(long, default_value_t = 2_000)]
    latency_messages: u64,
    /// Their pace, messages a second.
    #[arg(long, default_value_t = 500)]
    latency_rate: u64,
    /// Rounds of the receive-rate comparison (best of).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    #[arg(long, default_value = "target/bench/mqtt.json")]
    out: PathBuf,
}

/// The programs, next to this example (`target/release/examples/` → `target/release/`).
struct Bins {
    hub: PathBuf,
    msg_client: PathBuf,
}

fn bins() -> Bins {
    let exe = std::env::current_exe().expect("the example's own path");
    let dir = exe
        .parent()
        .and_then(|p| p.parent())
        .expect("target/<profile>/examples");
    Bins {
        hub: dir.join("hub"),
        msg_client: dir.join("msg-client"),
    }
}

fn wall_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros() as u64
}

/// A child killed and reaped on drop.
struct Kid(Child);

impl Drop for Kid {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `mosquitto_sub` on `topic`, its lines (with their arrival wall clock, µs) on a channel.
struct Subscriber {
    _kid: Kid,
    lines: Receiver<(u64, String)>,
}

impl Subscriber {
    /// Start it and wait (at most 10 s) until it is subscribed: probe messages are
    /// published to the topic until one arrives.
    fn start(broker: &Mosquitto, topic: &str) -> Result<Subscriber, String> {
        let port = broker.port().to_string();
        let mut child = Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &port, "-q", "1", "-t", topic])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start mosquitto_sub: {e}"))?;
        let out = child.stdout.take().expect("piped");
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send((wall_us(), line)).is_err() {
                    break;
                }
            }
        });
        let sub = Subscriber {
            _kid: Kid(child),
            lines,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let _ = Command::new("mosquitto_pub")
                .args(["-h", "127.0.0.1", "-p", &port, "-q", "1", "-t", topic])
                .args(["-m", r#"{"probe":true}"#])
                .status();
            match sub.lines.recv_timeout(Duration::from_millis(200)) {
                Ok(_) => {
                    // drain the other probes
                    while sub.lines.recv_timeout(Duration::from_millis(100)).is_ok() {}
                    return Ok(sub);
                }
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => return Err("mosquitto_sub exited".into()),
            }
        }
        Err(format!(
            "mosquitto_sub did not see a probe on {topic} within 10 s"
        ))
    }
}

/// Lines written but not yet seen by the subscriber, at most, in either path (below both
/// Mosquitto's per-client queue of 1000 and the hub's MQTT client queue of 1024).
const WINDOW: u64 = 100;

/// What one end-to-end run saw.
#[derive(Debug, Default, Clone, serde::Serialize)]
struct Run {
    sent: u64,
    arrived: u64,
    duplicates: u64,
    rate: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

/// Write `n` lines into `stdin` (paced at `per_s` when given), then read the subscriber's
/// lines until all arrived or 10 s passed without one.
fn measure(mut stdin: ChildStdin, sub: &Subscriber, n: u64, per_s: Option<u64>) -> Run {
    // Warm up: the publisher is connected (and the hub knows the sender) once a first line
    // came through; the measured lines start after it.
    let warm = writeln!(stdin, r#"{{"warmup":true}}"#).is_ok()
        && sub.lines.recv_timeout(Duration::from_secs(10)).is_ok();
    if !warm {
        return Run::default();
    }
    let arrived_shared = Arc::new(AtomicU64::new(0));
    let in_flight = Arc::clone(&arrived_shared);
    let writer = thread::spawn(move || {
        let start = Instant::now();
        let first = wall_us();
        for seq in 0..n {
            // at most WINDOW lines between the write and the subscriber (flat out, a burst
            // would overflow the broker's queue for a slow subscriber and measure its drops)
            let stalled = Instant::now() + Duration::from_secs(10);
            while seq >= in_flight.load(Ordering::Relaxed) + WINDOW {
                if Instant::now() > stalled {
                    return (first, seq);
                }
                thread::sleep(Duration::from_micros(20)); // a bounded poll of the window
            }
            if let Some(r) = per_s {
                let due = start + Duration::from_secs_f64(seq as f64 / r.max(1) as f64);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    thread::sleep(wait); // pacing the load, not waiting for a condition
                }
            }
            if writeln!(stdin, r#"{{"seq":{seq},"t_us":{}}}"#, wall_us()).is_err() {
                return (first, seq);
            }
        }
        (first, n) // dropping stdin ends the publisher's input
    });
    let mut seen = vec![false; n as usize];
    let (mut arrived, mut duplicates, mut last) = (0u64, 0u64, 0u64);
    let mut lat_us = Vec::with_capacity(n as usize);
    while arrived < n {
        let Ok((at, line)) = sub.lines.recv_timeout(Duration::from_secs(10)) else {
            break;
        };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        let (Some(seq), Some(t)) = (v["seq"].as_u64(), v["t_us"].as_u64()) else {
            continue;
        };
        match seen.get_mut(seq as usize) {
            Some(s) if !*s => {
                *s = true;
                arrived += 1;
                arrived_shared.store(arrived, Ordering::Relaxed);
                last = at;
                lat_us.push(at.saturating_sub(t));
            }
            _ => duplicates += 1,
        }
    }
    let (first, sent) = writer.join().unwrap_or((0, 0));
    lat_us.sort_unstable();
    let ms = |p: f64| percentile_of_sorted(&lat_us, p).unwrap_or(0) as f64 / 1000.0;
    Run {
        sent,
        arrived,
        duplicates,
        rate: arrived as f64 / (last.saturating_sub(first).max(1) as f64 / 1e6),
        p50_ms: ms(50.0),
        p99_ms: ms(99.0),
        max_ms: lat_us.last().copied().unwrap_or(0) as f64 / 1000.0,
    }
}

/// A publisher reading lines on stdin: Mosquitto's own, or msg-client into a hub.
enum Path<'a> {
    Mosquitto,
    Hub(&'a HubProcess),
}

const MOSQUITTO_TOPIC: &str = "bench/telemetry";

fn run_path(
    bins: &Bins,
    broker: &Mosquitto,
    path: &Path,
    n: u64,
    per_s: Option<u64>,
) -> Result<Run, String> {
    // a name of the run's own: two live senders of one name would be told apart as NAME#2
    let name = format!("bench-{}", if per_s.is_some() { "latency" } else { "rate" });
    let topic = match path {
        Path::Mosquitto => MOSQUITTO_TOPIC.to_string(),
        Path::Hub(_) => format!("udphub/{name}/telemetry"),
    };
    let sub = Subscriber::start(broker, &topic)?;
    let mut cmd = match path {
        Path::Mosquitto => {
            let mut c = Command::new("mosquitto_pub");
            c.args(["-h", "127.0.0.1", "-p", &broker.port().to_string()])
                .args(["-q", "1", "-t", &topic, "-l"]);
            c
        }
        Path::Hub(hub) => {
            let mut c = Command::new(&bins.msg_client);
            c.args(["--hub", &hub.ports.msg.expect("msg port").to_string()])
                .args(["--stdin", "--name", &name, "--interval-ms", "0"])
                .args(["--status-interval-ms", "0"]);
            c
        }
    };
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start the publisher: {e}"))?;
    let stdin = child.stdin.take().expect("piped");
    let kid = Kid(child);
    let run = measure(stdin, &sub, n, per_s);
    drop(kid);
    Ok(run)
}

/// msg-client flat out against a hub with `hub_args`: messages answered per second.
fn receive_rate(bins: &Bins, hub_args: &[&str], n: u64) -> Result<f64, String> {
    let hub = HubProcess::start(&bins.hub, hub_args, &[], Duration::from_secs(10))?;
    let out = Command::new(&bins.msg_client)
        .args(["--hub", &hub.ports.msg.expect("msg port").to_string()])
        .args([
            "--data",
            r#"{"battery":87.5,"temp":21.25}"#,
            "--name",
            "rate",
        ])
        .args(["--interval-ms", "0", "--count", &n.to_string()])
        .args(["--status-interval-ms", "0", "--json-summary"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("msg-client: {e}"))?;
    let _ = hub.stop(Signal::Int, Duration::from_secs(5));
    let summary: MsgSummary = serde_json::from_slice(&out.stdout).map_err(|e| {
        format!(
            "msg-client printed no summary ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    Ok(summary.msgs_per_s)
}

fn main() {
    let mut args = Args::parse();
    if args.quick {
        args.messages = args.messages.min(2_000);
        args.latency_messages = args.latency_messages.min(300);
        args.rounds = 1;
    }
    if let Err(e) = run(&args) {
        eprintln!("mqtt_bench: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Result<(), String> {
    let bins = bins();
    let broker = Mosquitto::start()?;
    let url = broker.url();
    let hub = HubProcess::start(
        &bins.hub,
        &["--mqtt", &url, "--mqtt-jpeg-fps", "0", "--json-summary"],
        &[],
        Duration::from_secs(10),
    )?;
    let hub_path = Path::Hub(&hub);

    eprintln!("mqtt_bench: rate runs ({} messages each)", args.messages);
    let mosq_rate = run_path(&bins, &broker, &Path::Mosquitto, args.messages, None)?;
    let hub_rate = run_path(&bins, &broker, &hub_path, args.messages, None)?;
    eprintln!(
        "mqtt_bench: latency runs ({} messages at {}/s)",
        args.latency_messages, args.latency_rate
    );
    let mosq_lat = run_path(
        &bins,
        &broker,
        &Path::Mosquitto,
        args.latency_messages,
        Some(args.latency_rate),
    )?;
    let hub_lat = run_path(
        &bins,
        &broker,
        &hub_path,
        args.latency_messages,
        Some(args.latency_rate),
    )?;
    let stopped = hub.stop(Signal::Int, Duration::from_secs(5))?;
    let dropped = stopped
        .summary()
        .ok()
        .and_then(|s| s.mqtt.map(|m| m.dropped))
        .unwrap_or(0);

    eprintln!("mqtt_bench: receive rate with and without --mqtt");
    let (mut off, mut on) = (0f64, 0f64);
    for round in 0..args.rounds {
        let with = ["--mqtt", url.as_str(), "--mqtt-jpeg-fps", "0"];
        let order: [&[&str]; 2] = if round % 2 == 0 {
            [&[], &with]
        } else {
            [&with, &[]]
        };
        for hub_args in order {
            let r = receive_rate(&bins, hub_args, args.messages)?;
            if hub_args.is_empty() {
                off = off.max(r);
            } else {
                on = on.max(r);
            }
        }
    }

    let rate_ratio = hub_rate.rate / mosq_rate.rate.max(1e-9);
    let p99_ratio = hub_lat.p99_ms / mosq_lat.p99_ms.max(1e-9);
    let receive_ratio = on / off.max(1e-9);
    let yes = |b: bool| if b { "yes" } else { "NO" };
    let exact = |r: &Run| r.arrived == r.sent && r.duplicates == 0;
    println!(
        "{:<34} {:>10} {:>9} {:>9} {:>9} {:>9} {:>6}",
        "path", "msgs/s", "p50 ms", "p99 ms", "max ms", "arrived", "once"
    );
    for (name, rate, lat) in [
        ("mosquitto_pub -> mosquitto_sub", &mosq_rate, &mosq_lat),
        ("msg-client -> hub -> mosquitto_sub", &hub_rate, &hub_lat),
    ] {
        println!(
            "{name:<34} {:>10.0} {:>9.2} {:>9.2} {:>9.2} {:>9} {:>6}",
            rate.rate,
            lat.p50_ms,
            lat.p99_ms,
            lat.max_ms,
            format!("{}/{}", rate.arrived + lat.arrived, rate.sent + lat.sent),
            yes(exact(rate) && exact(lat)),
        );
    }
    println!(
        "hub/mosquitto: rate {rate_ratio:.2} (goal >= 0.8: {}), p99 {p99_ratio:.2}x (goal <= 2: {})",
        yes(rate_ratio >= 0.8),
        yes(p99_ratio <= 2.0)
    );
    println!(
        "hub receive rate: {off:.0} msgs/s without --mqtt, {on:.0} with: {receive_ratio:.2} (goal >= 0.9: {}); publications the hub dropped: {dropped}",
        yes(receive_ratio >= 0.9)
    );

    let report = json!({
        "messages": args.messages,
        "latency_messages": args.latency_messages,
        "latency_rate": args.latency_rate,
        "mosquitto": {"rate": mosq_rate, "latency": mosq_lat},
        "hub": {"rate": hub_rate, "latency": hub_lat, "mqtt_dropped": dropped},
        "receive_rate": {"without_mqtt": off, "with_mqtt": on, "ratio": receive_ratio},
        "ratios": {"rate": rate_ratio, "p99": p99_ratio},
        "met": {
            "rate": rate_ratio >= 0.8,
            "p99": p99_ratio <= 2.0,
            "receive_rate": receive_ratio >= 0.9,
            "exactly_once": exact(&hub_rate) && exact(&hub_lat),
        },
    });
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    std::fs::write(&args.out, format!("{report:#}\n"))
        .map_err(|e| format!("{}: {e}", args.out.display()))?;
    println!("JSON: {}", args.out.display());
    if !(exact(&hub_rate) && exact(&hub_lat)) {
        return Err("the hub path lost or duplicated messages".into());
    }
    Ok(())
}
