//! `bench`: how close the real `hub` + `img-client`/`msg-client` come to what the kernel
//! allows on this machine, case by case, on loopback. Run it with `scripts/bench.sh`
//! (`--quick` for a short smoke run).
//!
//! Why it is built this way: absolute rates depend on the machine, so every case runs twice
//! back to back in the same run, and the ratio is what is judged:
//! - the real path: a fresh release `hub` (OS-chosen ports, `RUST_LOG=warn` so logging is
//!   not measured) and the clients as a user runs them, `img-client --jpeg FRAME` (a
//!   pre-encoded frame, so JPEG encoding is not measured) or `msg-client --interval-ms 0`,
//!   each printing a `--json-summary`;
//! - the raw limit: `examples/raw_limit.rs`, a minimal sender and receiver sending the same
//!   datagrams with the same ack pattern and no parsing, reassembly or copies.
//!
//! Keys (issue 12): the `-keys` cases run the framed case they are named after with
//! `hub --key --authorized-keys` and `img-client --key --hub-key` (each client its own key,
//! made by `udphub-keygen` in a temporary directory the bench makes, every one in the
//! authorized-keys file), and in the same round, back to back, the plain framed run without
//! keys (the order alternating between rounds). Their target is against that plain run:
//! throughput >= 0.9 of plain, hub CPU per frame <= 1.3x plain (the best round of each).
//!
//! Per case it reports the rate (frames or messages per second; with several clients the
//! aggregate: total acked over the span from the earliest client's first frame to the last
//! client's end, each client's span taken from its own clock, so process start-up is not
//! counted), MB/s (rate x frame size, 10^6 bytes), RTT p50/p99 in µs (with several clients:
//! the median of their p50s and the largest p99), CPU seconds per 1000 frames of the hub
//! (its user+sys time from `/proc/<pid>/stat` before and after; raw: the receiver thread's)
//! and of the clients (from `wait4`, less the start-up cost of `--version`; raw: the sender
//! threads'), kernel receive drops (`RcvbufErrors` of `/proc/net/snmp` before and after:
//! system-wide, so nothing else should run), the ratio real/raw and whether the targets are
//! met. The live-encoding case compares `img-client --pattern` with the pattern source +
//! resize + JPEG encoder alone, in this process.
//!
//! A full run does two rounds per case (raw, real, raw, real) and keeps the best round of
//! each side, so that a burst of load from another process in one round does not decide a
//! ratio; every round's rate is in the JSON, with the load average before and after.
//!
//! Frames: the 640x480 test pattern at quality 90 with uniform noise added (as a camera
//! sensor's) until the JPEG is ~66 KB (the plain pattern is only ~22 KB, a third of a camera
//! frame); the 1280x960 pattern at quality 95, noise added until ~150 KB; for 1 MB and 4 MB, OpenCV's uniform noise (which JPEG cannot compress, so it
//! stays a valid JPEG `FF D8`…`FF D9` of that size) at quality 100, its size found by
//! scaling the image until the file is within 5% of the target.
//!
//! Output: a table on stdout and the same as JSON in `target/bench/bench.json` (or `--out`).
//! Every child process is waited for with a deadline and killed past it. The exit status is
//! 0 whether or not targets are met (speed is reported, not asserted); 1 when a case could
//! not be measured at all (a client failed or timed out).

use clap::Parser;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};
use udphub::client::stats::{ImgSummary, MsgSummary, SamplesSummary};
use udphub::media::{jpeg, resize_to, FrameSource, MediaError, PatternSource};
use udphub_testkit::frames::{noise_frame, pattern_frame, Frame};
use udphub_testkit::{Finished, HubProcess, Ports, Running, Signal};

/// The `-keys` cases' targets against the plain framed run of the same rounds.
const KEYS_MIN_THROUGHPUT: f64 = 0.9;
const KEYS_MAX_HUB_CPU: f64 = 1.3;

/// Benchmark the hub and clients against the raw kernel limit on loopback.
#[derive(Parser, Debug)]
struct Args {
    /// A short run (under 30 s): fewer frames per case.
    #[arg(long)]
    quick: bool,
    /// Where the JSON goes.
    #[arg(long, default_value = "target/bench/bench.json")]
    out: PathBuf,
    /// Run only the cases whose name contains one of these (comma-separated).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
}

/// How long each side of a case runs.
#[derive(Clone, Copy)]
struct Timing {
    /// The raw limit runs this long.
    raw: Duration,
    /// The real run is sized to take about this long at the raw limit's rate.
    real: Duration,
    /// Frames per real client at least.
    min_frames: u64,
    /// A client process running longer than this is killed and the case fails.
    deadline: Duration,
    /// Raw + real rounds per case; the best of each side counts.
    rounds: usize,
}

const FULL: Timing = Timing {
    raw: Duration::from_millis(1000),
    real: Duration::from_millis(1000),
    min_frames: 30,
    deadline: Duration::from_secs(40),
    rounds: 2,
};
const QUICK: Timing = Timing {
    raw: Duration::from_millis(250),
    real: Duration::from_millis(300),
    min_frames: 5,
    deadline: Duration::from_secs(15),
    rounds: 1,
};

/// The seed message (`json.dumps([0,0,0,1])`), 12 bytes.
const MESSAGE: &str = "[0, 0, 0, 1]";

/// The binaries the bench runs, next to its own executable.
struct Bins {
    hub: PathBuf,
    img_client: PathBuf,
    msg_client: PathBuf,
    keygen: PathBuf,
    raw_limit: PathBuf,
    /// CPU time `img-client` and `msg-client` take to start and exit (`--version`), taken
    /// off their CPU figures: loading OpenCV's libraries costs `img-client` ~0.2 s.
    img_startup: Duration,
    msg_startup: Duration,
}

impl Bins {
    fn find() -> Result<Bins, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let examples = exe.parent().ok_or("no parent dir")?.to_path_buf();
        let bins = examples.parent().ok_or("no parent dir")?.to_path_buf();
        let b = Bins {
            hub: bins.join("hub"),
            img_client: bins.join("img-client"),
            msg_client: bins.join("msg-client"),
            keygen: bins.join("udphub-keygen"),
            raw_limit: examples.join("raw_limit"),
            img_startup: Duration::ZERO,
            msg_startup: Duration::ZERO,
        };
        for p in [
            &b.hub,
            &b.img_client,
            &b.msg_client,
            &b.keygen,
            &b.raw_limit,
        ] {
            if !p.is_file() {
                return Err(format!(
                    "{} is missing: build with `cargo build --release --bins --examples` \
                     (scripts/bench.sh does)",
                    p.display()
                ));
            }
        }
        Ok(Bins {
            img_startup: startup_cpu(&b.img_client),
            msg_startup: startup_cpu(&b.msg_client),
            ..b
        })
    }
}

/// The least CPU time of three `program --version` runs.
fn startup_cpu(program: &Path) -> Duration {
    (0..3)
        .filter_map(|_| {
            let p = spawn(program, &["--version".to_string()]).ok()?;
            p.wait(Instant::now() + Duration::from_secs(10)).ok()
        })
        .map(|f| f.cpu)
        .min()
        .unwrap_or_default()
}

/// What a case sends.
#[derive(Clone)]
enum Kind {
    Img {
        proto: &'static str,
        chunk: u32,
        window: u32,
        frame: Frame,
        clients: usize,
        /// With keys (framed only): the hub and each client keyed, beside the plain run.
        keys: bool,
    },
    Msg {
        clients: usize,
    },
    /// `img-client --pattern` against the encoder alone.
    Live,
}

/// Which targets apply.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Target {
    /// One client: rate >= 0.8 of raw, RTT p99 <= 2x raw.
    Single,
    /// One client, big frames: as Single, and no kernel receive drops.
    Big,
    /// Eight clients: aggregate >= 0.8 of raw with eight senders, slowest/fastest >= 0.8.
    Multi,
    /// Live encoding: fps >= 0.9 of the encoder alone.
    Live,
    /// With keys: throughput >= 0.9 of the plain framed run, hub CPU per frame <= 1.3x.
    Keys,
}

impl Target {
    fn describe(self) -> &'static str {
        match self {
            Target::Single => "ratio >= 0.8, rtt p99 <= 2x raw",
            Target::Big => "ratio >= 0.8, rtt p99 <= 2x raw, 0 receive drops",
            Target::Multi => "aggregate ratio >= 0.8, slowest/fastest >= 0.8",
            Target::Live => "fps >= 0.9 of the encoder alone",
            Target::Keys => "throughput >= 0.9x plain framed, hub cpu/frame <= 1.3x plain",
        }
    }
}

struct Case {
    name: String,
    kind: Kind,
    target: Target,
    /// Also run by `--quick`.
    quick: bool,
}

impl Case {
    fn keyed(&self) -> bool {
        matches!(self.kind, Kind::Img { keys: true, .. })
    }

    fn clients(&self) -> usize {
        match self.kind {
            Kind::Img { clients, .. } | Kind::Msg { clients } => clients,
            Kind::Live => 1,
        }
    }
}

/// One round of a case: the real run, the raw limit and, for a `-keys` case, the plain
/// framed run beside it.
struct Round {
    real: Measure,
    raw: Measure,
    plain: Option<Measure>,
}

/// The keys of the `-keys` cases, in a temporary directory removed at the end: the hub's,
/// one per client, and the authorized-keys file naming every client's.
struct BenchKeys {
    _dir: tempfile::TempDir,
    hub_key: PathBuf,
    hub_public: String,
    authorized: PathBuf,
    devices: Vec<PathBuf>,
}

impl BenchKeys {
    fn make(keygen: &Path, devices: usize) -> Result<BenchKeys, String> {
        let dir = tempfile::Builder::new()
            .prefix("udphub-bench-keys-")
            .tempdir()
            .map_err(|e| format!("a temporary directory for the keys: {e}"))?;
        let make = |file: &Path| -> Result<String, String> {
            let f = spawn(keygen, &[file.display().to_string()])?
                .wait(Instant::now() + Duration::from_secs(10))?;
            let public = f.stdout.trim().to_string();
            if !f.success() || public.is_empty() {
                return Err(format!(
                    "udphub-keygen {}: {}",
                    file.display(),
                    f.stderr.trim()
                ));
            }
            Ok(public)
        };
        let hub_key = dir.path().join("hub.key");
        let hub_public = make(&hub_key)?;
        let mut lines = String::from("# the bench's cameras, one key each\n");
        let mut paths = Vec::new();
        for i in 0..devices {
            let path = dir.path().join(format!("cam{i}.key"));
            lines.push_str(&format!("{} bench-cam{i}\n", make(&path)?));
            paths.push(path);
        }
        let authorized = dir.path().join("authorized_keys");
        std::fs::write(&authorized, lines).map_err(|e| format!("{}: {e}", authorized.display()))?;
        Ok(BenchKeys {
            _dir: dir,
            hub_key,
            hub_public,
            authorized,
            devices: paths,
        })
    }

    fn hub_args(&self) -> Vec<String> {
        vec![
            "--key".into(),
            self.hub_key.display().to_string(),
            "--authorized-keys".into(),
            self.authorized.display().to_string(),
        ]
    }

    /// Client `i`'s `--key FILE --hub-key PUBLIC`.
    fn client_args(&self, i: usize) -> Vec<String> {
        vec![
            "--key".into(),
            self.devices[i].display().to_string(),
            "--hub-key".into(),
            self.hub_public.clone(),
        ]
    }
}

/// One side's figures.
#[derive(Clone, Debug, Default)]
struct Measure {
    rate: f64,
    mbps: f64,
    rtt_p50_us: Option<f64>,
    rtt_p99_us: Option<f64>,
    hub_cpu_s_per_1000: Option<f64>,
    /// The clients' CPU (raw: the sender threads'), start-up included.
    client_cpu_s_per_1000: Option<f64>,
    rcvbuf_errors: u64,
    frames: u64,
    lost: u64,
    slowest_over_fastest: Option<f64>,
    per_client: Vec<f64>,
    error: Option<String>,
}

impl Measure {
    fn failed(error: String) -> Measure {
        Measure {
            error: Some(error),
            ..Measure::default()
        }
    }

    fn to_json(&self) -> Value {
        json!({
            "rate": self.rate,
            "fps": self.rate,
            "mbps": self.mbps,
            "rtt_p50_us": self.rtt_p50_us,
            "rtt_p99_us": self.rtt_p99_us,
            "hub_cpu_s_per_1000": self.hub_cpu_s_per_1000,
            "client_cpu_s_per_1000": self.client_cpu_s_per_1000,
            "rcvbuf_errors": self.rcvbuf_errors,
            "frames": self.frames,
            "lost": self.lost,
            "slowest_over_fastest": self.slowest_over_fastest,
            "per_client": self.per_client,
            "error": self.error,
        })
    }
}

fn main() {
    let args = Args::parse();
    if let Err(e) = run(&args) {
        eprintln!("bench: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Result<(), String> {
    let started = Instant::now();
    let timing = if args.quick { QUICK } else { FULL };
    let cpus = thread::available_parallelism().map_or(1, |n| n.get());
    let load_before = loadavg();
    if load_before > cpus as f64 * 0.5 {
        eprintln!(
            "bench: note: the machine is busy (load average {load_before:.2} on {cpus} CPUs): \
             rates and ratios will be noisy"
        );
    }
    let bins = Bins::find()?;
    eprintln!(
        "bench: start-up CPU (taken off the client CPU figures): img-client {:.3} s, \
         msg-client {:.3} s",
        bins.img_startup.as_secs_f64(),
        bins.msg_startup.as_secs_f64()
    );
    let dir = args
        .out
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let frames_dir = dir.join("frames");
    std::fs::create_dir_all(&frames_dir).map_err(|e| format!("{}: {e}", frames_dir.display()))?;
    eprintln!(
        "bench: encoding the test frames into {}",
        frames_dir.display()
    );
    let [f66, f150, f1m, f4m] = bench_frames(&frames_dir)?;
    for f in [&f66, &f150, &f1m, &f4m] {
        eprintln!("bench:   {} ({} bytes)", f.path.display(), f.bytes);
    }

    let cases = cases(&f66, &f150, &f1m, &f4m)
        .into_iter()
        .filter(|c| args.only.is_empty() || args.only.iter().any(|o| c.name.contains(o)))
        .filter(|c| c.quick || !args.quick)
        .collect::<Vec<_>>();
    let keys = match cases.iter().filter(|c| c.keyed()).map(Case::clients).max() {
        Some(devices) => Some(BenchKeys::make(&bins.keygen, devices)?),
        None => None,
    };
    let mut results = Vec::new();
    for case in &cases {
        eprintln!("bench: {} ...", case.name);
        // Rounds, raw and real back to back in each; the best round of each side counts,
        // so a burst of load from elsewhere in one round does not decide the ratio.
        let rounds: Vec<Round> = (0..timing.rounds)
            .map(|i| run_case(&bins, keys.as_ref(), case, timing, i))
            .collect();
        let result = judge(case, &rounds);
        eprintln!("bench:   {}", row(&result));
        if case.keyed() {
            eprintln!("bench:   {}", keys_row(&result));
        }
        results.push(result);
    }

    println!();
    println!("{}", header());
    for r in &results {
        println!("{}", row(r));
    }
    if results.iter().any(|r| !r["vs_plain"].is_null()) {
        println!();
        println!("{}", keys_header());
        for r in results.iter().filter(|r| !r["vs_plain"].is_null()) {
            println!("{}", keys_row(r));
        }
    }
    // The last datagram to the ack (issue 10): seed chunked through a paced link, the
    // walk running as the datagrams come.
    let ack_delays: Vec<Value> = if args.only.is_empty() || args.only.iter().any(|o| o == "ack") {
        [
            (&f66, 50.0, if args.quick { 20 } else { 200 }),
            (&f4m, 200.0, if args.quick { 2 } else { 10 }),
        ]
        .into_iter()
        .map(|(frame, rate, n)| {
            eprintln!(
                "bench: ack delay, {} bytes at {rate} Mbit/s ...",
                frame.bytes
            );
            paced_ack_delay(&bins, frame, rate, n).unwrap_or_else(|e| json!({"error": e}))
        })
        .collect()
    } else {
        Vec::new()
    };
    if !ack_delays.is_empty() {
        println!("\nSeed chunked through a paced link: from the datagram that completes a frame to its ack (target <= 100 us)");
        println!("| frame | link | frames | p50 | p99 | max |\n|---:|---:|---:|---:|---:|---:|");
        for d in &ack_delays {
            let us = |v: &Value| v.as_f64().map_or("-".into(), |x| format!("{x:.0} us"));
            println!(
                "| {} B | {} Mbit/s | {} | {} | {} | {} |",
                d["frame_bytes"],
                d["rate_mbit"],
                d["ack_delay"]["count"],
                us(&d["ack_delay"]["p50_us"]),
                us(&d["ack_delay"]["p99_us"]),
                us(&d["ack_delay"]["max_us"])
            );
        }
    }
    let met = results.iter().filter(|r| r["met"] == true).count();
    println!(
        "\n{met} of {} cases meet their targets; {:.0} s in all; JSON: {}",
        results.len(),
        started.elapsed().as_secs_f64(),
        args.out.display()
    );
    let doc = json!({
        "quick": args.quick,
        "cpus": cpus,
        "client_startup_cpu_s": {
            "img_client": bins.img_startup.as_secs_f64(),
            "msg_client": bins.msg_startup.as_secs_f64(),
        },
        "load_average_before": load_before,
        "load_average_after": loadavg(),
        "seconds": started.elapsed().as_secs_f64(),
        "cases": results,
        "ack_delay": ack_delays,
    });
    let text = serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?;
    std::fs::write(&args.out, text + "\n").map_err(|e| format!("{}: {e}", args.out.display()))?;
    // Missed targets are results, not failures; a case that could not run at all is one.
    let broken = results
        .iter()
        .filter(|r| {
            ["real", "raw", "plain"]
                .iter()
                .any(|side| !r[side].is_null() && !r[side]["error"].is_null())
        })
        .count();
    if broken > 0 {
        return Err(format!(
            "{broken} case(s) could not be measured (see above)"
        ));
    }
    Ok(())
}

fn cases(f66: &Frame, f150: &Frame, f1m: &Frame, f4m: &Frame) -> Vec<Case> {
    let img = |name: &str, proto, chunk, window, frame: &Frame, clients, target| Case {
        name: name.into(),
        kind: Kind::Img {
            proto,
            chunk,
            window,
            frame: frame.clone(),
            clients,
            keys: false,
        },
        target,
        quick: true,
    };
    // The framed case `name` with keys, beside its plain run: `<name>-keys`.
    let keyed = |name: &str, chunk, frame: &Frame, clients, quick| Case {
        name: format!("{name}-keys"),
        kind: Kind::Img {
            proto: "framed",
            chunk,
            window: 1,
            frame: frame.clone(),
            clients,
            keys: true,
        },
        target: Target::Keys,
        quick,
    };
    let mut v = vec![
        img("chunked", "chunked", 1024, 1, f66, 1, Target::Single),
        img("framed-1400-w1", "framed", 1400, 1, f66, 1, Target::Single),
        img("framed-1400-w4", "framed", 1400, 4, f66, 1, Target::Single),
        img(
            "framed-65000-w1",
            "framed",
            65000,
            1,
            f66,
            1,
            Target::Single,
        ),
        img(
            "framed-65000-w4",
            "framed",
            65000,
            4,
            f66,
            1,
            Target::Single,
        ),
        // the seed TCP stream has no ack: its rate is of frames written (handed to the kernel)
        img("tcp-written", "tcp", 1400, 1, f66, 1, Target::Single),
    ];
    for (size, frame) in [("150k", f150), ("1m", f1m), ("4m", f4m)] {
        v.push(img(
            &format!("chunked-{size}"),
            "chunked",
            1024,
            1,
            frame,
            1,
            Target::Big,
        ));
        v.push(img(
            &format!("framed-{size}"),
            "framed",
            1400,
            1,
            frame,
            1,
            Target::Big,
        ));
    }
    v.push(img("framed-x8", "framed", 1400, 1, f66, 8, Target::Multi));
    // With keys (issue 12); --quick runs only the first, as a smoke run of the keyed path.
    v.push(keyed("framed-1400-w1", 1400, f66, 1, true));
    v.push(keyed("framed-65000-w1", 65000, f66, 1, false));
    v.push(keyed("framed-x8", 1400, f66, 8, false));
    v.push(Case {
        name: "msg".into(),
        kind: Kind::Msg { clients: 1 },
        target: Target::Single,
        quick: true,
    });
    v.push(Case {
        name: "msg-x8".into(),
        kind: Kind::Msg { clients: 8 },
        target: Target::Multi,
        quick: true,
    });
    v.push(Case {
        name: "live-pattern".into(),
        kind: Kind::Live,
        target: Target::Live,
        quick: true,
    });
    v
}

// ---------------------------------------------------------------------------------------
// Frames
// ---------------------------------------------------------------------------------------

/// [`pattern_frame`] and [`noise_frame`] under the bench's own names in `dir`.
fn bench_frames(dir: &Path) -> Result<[Frame; 4], String> {
    Ok([
        pattern_frame(dir, "pattern-", (640, 480), 90, 66_000)?,
        pattern_frame(dir, "pattern-", (1280, 960), 95, 150_000)?,
        noise_frame(dir, "", 1_000_000)?,
        noise_frame(dir, "", 4_000_000)?,
    ])
}

// ---------------------------------------------------------------------------------------
// System counters
// ---------------------------------------------------------------------------------------

/// The 1-minute load average (0 where it cannot be read).
fn loadavg() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

/// `RcvbufErrors` of the `Udp:` lines of /proc/net/snmp (0 where it cannot be read).
fn rcvbuf_errors() -> u64 {
    let text = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
    let udp: Vec<&str> = text.lines().filter(|l| l.starts_with("Udp:")).collect();
    if udp.len() < 2 {
        return 0;
    }
    let names = udp[0].split_whitespace();
    let values = udp[1].split_whitespace();
    names
        .zip(values)
        .find(|(n, _)| *n == "RcvbufErrors")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

/// User + system CPU time of process `pid` (fields 14 and 15 of /proc/PID/stat).
fn process_cpu(pid: u32) -> Option<Duration> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    let after = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // `after` starts at field 3, so fields 14 and 15 are at 11 and 12.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as f64 } else { 100.0 };
    Some(Duration::from_secs_f64(ticks as f64 / hz))
}

// ---------------------------------------------------------------------------------------
// Child processes
// ---------------------------------------------------------------------------------------

/// Start `program args` (`RUST_LOG=warn`, so logging is not measured) with its output
/// collected.
/// `img-client --protocol chunked` sends `frames` of `frame` through an in-process relay
/// limited to `rate_mbit` (so the datagrams reach the hub spaced as on a link of that
/// rate, and the hub walks each frame as it comes); the hub's own measurement of the time
/// from the datagram completing each frame to its ack, read from its JSON summary.
fn paced_ack_delay(
    bins: &Bins,
    frame: &Frame,
    rate_mbit: f64,
    frames: u64,
) -> Result<Value, String> {
    use udphub::relay::{link::LinkConfig, FaultConfig, Relay};
    let hub = start_hub(&bins.hub, &["--json-summary".to_string()])?;
    let img = hub.ports.img.ok_or("no image port")?;
    let stop = udphub::shutdown::Shutdown::new();
    let mut link = LinkConfig::new(rate_mbit);
    link.queue_bytes = 8 << 20; // the client sends a frame at once: the link spaces it
    let relay = Relay::start(
        "127.0.0.1:0".parse().expect("an address"),
        img,
        FaultConfig {
            link: Some(link),
            ..FaultConfig::default()
        },
        FaultConfig::default(),
        stop.clone(),
    )
    .map_err(|e| format!("relay: {e}"))?;
    let args: Vec<String> = [
        "--jpeg",
        &frame.path.display().to_string(),
        "--protocol",
        "chunked",
        "--hub",
        &relay.local_addr().to_string(),
        "--frames",
        &frames.to_string(),
        "--ack-timeout-ms",
        "5000",
        "--json-summary",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    let run = spawn(&bins.img_client, &args)?.wait(Instant::now() + Duration::from_secs(120))?;
    stop.trigger();
    relay.join();
    let stopped = hub.stop(Signal::Int, Duration::from_secs(10))?;
    if !run.success() {
        return Err(format!("img-client failed: {}", run.describe()));
    }
    let summary = stopped.summary()?;
    let img = summary
        .service(udphub::hub::source::Service::Img)
        .ok_or("no image service in the summary")?;
    Ok(json!({
        "frame_bytes": frame.bytes,
        "rate_mbit": rate_mbit,
        "delivered": img.total.items,
        "ack_delay": img.ack_delay,
    }))
}

fn spawn(program: &Path, args: &[String]) -> Result<Running, String> {
    Running::spawn(
        Command::new(program).args(args).env("RUST_LOG", "warn"),
        b"",
    )
}

/// A fresh hub on OS-chosen loopback ports with every service.
fn start_hub(bin: &Path, extra: &[String]) -> Result<HubProcess, String> {
    let mut args = vec!["--stats-interval-ms", "3600000"];
    args.extend(extra.iter().map(String::as_str));
    let hub = HubProcess::start(
        bin,
        &args,
        &[("RUST_LOG", Some("warn"))],
        Duration::from_secs(20),
    )?;
    match hub.ports {
        Ports {
            img: Some(_),
            msg: Some(_),
            tcp: Some(_),
            ..
        } => Ok(hub),
        _ => Err("the hub did not list all three services".into()),
    }
}

// ---------------------------------------------------------------------------------------
// Running a case
// ---------------------------------------------------------------------------------------

/// Round `round` of `case`: the raw limit, then the real run (and for a `-keys` case the
/// plain run beside it: plain first in even rounds, keyed first in odd ones).
fn run_case(bins: &Bins, keys: Option<&BenchKeys>, case: &Case, t: Timing, round: usize) -> Round {
    let (real, raw, plain) = match &case.kind {
        Kind::Img {
            proto,
            chunk,
            window,
            frame,
            clients,
            keys: keyed,
        } => {
            let raw = raw_limit(
                bins,
                &[
                    "--proto",
                    proto,
                    "--jpeg",
                    &frame.path.display().to_string(),
                    "--chunk-size",
                    &chunk.to_string(),
                    "--window",
                    &window.to_string(),
                    "--senders",
                    &clients.to_string(),
                ],
                frame.bytes,
                t,
            );
            let n = frames_for(&raw, *clients, t);
            let mut args = vec![
                "--jpeg".to_string(),
                frame.path.display().to_string(),
                "--protocol".into(),
                proto.to_string(),
                "--chunk-size".into(),
                chunk.min(&65000).to_string(),
                "--window".into(),
                window.to_string(),
            ];
            args.extend(["--frames".into(), n.to_string()]);
            let run = |keys| {
                real_clients(
                    bins,
                    Client::Img(proto),
                    args.clone(),
                    *clients,
                    frame.bytes,
                    t,
                    keys,
                )
            };
            match (keyed, keys) {
                (false, _) => (run(None), raw, None),
                (true, None) => unreachable!("run() makes the keys when a case needs them"),
                (true, Some(k)) if round % 2 == 0 => {
                    let plain = run(None);
                    (run(Some(k)), raw, Some(plain))
                }
                (true, Some(k)) => {
                    let real = run(Some(k));
                    (real, raw, Some(run(None)))
                }
            }
        }
        Kind::Msg { clients } => {
            let raw = raw_limit(
                bins,
                &["--proto", "msg", "--senders", &clients.to_string()],
                MESSAGE.len(),
                t,
            );
            let n = frames_for(&raw, *clients, t);
            let args = vec![
                "--data".to_string(),
                MESSAGE.into(),
                "--interval-ms".into(),
                "0".into(),
                "--count".into(),
                n.to_string(),
            ];
            let real = real_clients(bins, Client::Msg, args, *clients, MESSAGE.len(), t, None);
            (real, raw, None)
        }
        Kind::Live => {
            let raw = encoder_alone(t.raw);
            let n = frames_for(&raw, 1, t);
            let args = vec!["--pattern".to_string(), "--frames".into(), n.to_string()];
            let bytes = (raw.mbps * 1e6 / raw.rate.max(1e-9)) as usize;
            let real = real_clients(bins, Client::Img("framed"), args, 1, bytes, t, None);
            (real, raw, None)
        }
    };
    Round { real, raw, plain }
}

/// The round with the highest rate (a failed round only when all failed).
fn best(rounds: &[Measure]) -> Measure {
    rounds
        .iter()
        .max_by(|a, b| {
            (a.error.is_none(), a.rate)
                .partial_cmp(&(b.error.is_none(), b.rate))
                .unwrap_or(std::cmp::Ordering::Equal)
        })
        .cloned()
        .unwrap_or_default()
}

/// Frames (or messages) per real client: about `t.real` at the raw limit's per-sender rate.
/// Several clients run three times as long, so that their staggered start-up (loading
/// `img-client`'s libraries takes ~0.3 s) is a small part of the run.
fn frames_for(raw: &Measure, clients: usize, t: Timing) -> u64 {
    let per_client = raw.rate / clients as f64;
    let secs = t.real.as_secs_f64() * if clients > 1 { 3.0 } else { 1.0 };
    ((per_client * secs) as u64).clamp(t.min_frames, 500_000)
}

/// Run `raw_limit` with `args` for `t.raw`; several senders run as processes of their own,
/// as the real clients do.
fn raw_limit(bins: &Bins, args: &[&str], frame_bytes: usize, t: Timing) -> Measure {
    let mut args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    args.extend(["--duration-ms".into(), t.raw.as_millis().to_string()]);
    let several = args.windows(2).any(|w| w[0] == "--senders" && w[1] != "1");
    if several {
        args.push("--processes".into());
    }
    let drops0 = rcvbuf_errors();
    let finished =
        spawn(&bins.raw_limit, &args).and_then(|p| p.wait(Instant::now() + t.raw + t.deadline));
    let drops = rcvbuf_errors().saturating_sub(drops0);
    let f = match finished {
        Ok(f) if f.success() => f,
        Ok(f) => return Measure::failed(format!("raw_limit failed: {}", f.stderr.trim())),
        Err(e) => return Measure::failed(e),
    };
    let v: Value = match serde_json::from_str(f.stdout.trim()) {
        Ok(v) => v,
        Err(e) => return Measure::failed(format!("raw_limit output is not JSON: {e}")),
    };
    let num = |k: &str| v[k].as_f64().unwrap_or(0.0);
    let frames = num("frames");
    Measure {
        rate: num("fps"),
        mbps: num("fps") * frame_bytes as f64 / 1e6,
        // several senders: summarised as the real clients are
        rtt_p50_us: v[if several {
            "median_sender_p50_us"
        } else {
            "rtt_p50_us"
        }]
        .as_f64(),
        rtt_p99_us: v[if several {
            "max_sender_p99_us"
        } else {
            "rtt_p99_us"
        }]
        .as_f64(),
        hub_cpu_s_per_1000: (frames > 0.0).then(|| num("receiver_cpu_s") / frames * 1000.0),
        client_cpu_s_per_1000: (frames > 0.0).then(|| num("sender_cpu_s") / frames * 1000.0),
        rcvbuf_errors: drops,
        frames: frames as u64,
        lost: num("lost") as u64,
        slowest_over_fastest: v["slowest_over_fastest"].as_f64(),
        per_client: v["per_sender_fps"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_f64).collect())
            .unwrap_or_default(),
        error: None,
    }
}

/// Pattern frames drawn, resized and encoded at 640x480 quality 90 for `d`: what
/// `img-client --pattern`'s capture thread does, without the network.
fn encoder_alone(d: Duration) -> Measure {
    let mut source = PatternSource::new(640, 480);
    let (mut frames, mut bytes) = (0u64, 0usize);
    let started = Instant::now();
    while started.elapsed() < d {
        let encoded = source
            .next_frame()
            .and_then(|f| f.ok_or(MediaError::InvalidInput("the pattern ended".into())))
            .and_then(|f| resize_to(&f, 640, 480))
            .and_then(|f| jpeg::encode(&f, 90));
        match encoded {
            Ok(jpeg) => bytes += jpeg.len(),
            Err(e) => return Measure::failed(format!("encoding: {e}")),
        }
        frames += 1;
    }
    let rate = frames as f64 / started.elapsed().as_secs_f64();
    Measure {
        rate,
        mbps: rate * (bytes as f64 / frames.max(1) as f64) / 1e6,
        frames,
        ..Measure::default()
    }
}

/// One client's run, from its JSON summary (acked: answered, for `msg-client`).
struct ClientRun {
    acked: u64,
    /// Frames acked (messages answered) per second.
    rate: f64,
    lost: u64,
    rtt: SamplesSummary,
    elapsed_s: f64,
}

#[derive(Clone, Copy)]
enum Client {
    /// `img-client` with this `--protocol`.
    Img(&'static str),
    Msg,
}

/// Start a hub, run `clients` copies of the client with `args` at once, and measure. With
/// `keys`, the hub has `--key --authorized-keys` and client `i` its own `--key --hub-key`.
fn real_clients(
    bins: &Bins,
    client: Client,
    mut args: Vec<String>,
    clients: usize,
    frame_bytes: usize,
    t: Timing,
    keys: Option<&BenchKeys>,
) -> Measure {
    let hub_args = keys.map(BenchKeys::hub_args).unwrap_or_default();
    let hub = match start_hub(&bins.hub, &hub_args) {
        Ok(h) => h,
        Err(e) => return Measure::failed(e),
    };
    let (program, addr) = match client {
        Client::Img("tcp") => (&bins.img_client, hub.ports.tcp),
        Client::Img(_) => (&bins.img_client, hub.ports.img),
        Client::Msg => (&bins.msg_client, hub.ports.msg),
    };
    let addr = addr.expect("start_hub checked every service");
    args.extend([
        "--hub".into(),
        addr.to_string(),
        "--status-interval-ms".into(),
        "0".into(),
        "--json-summary".into(),
    ]);
    let drops0 = rcvbuf_errors();
    let cpu0 = process_cpu(hub.pid());
    let procs: Result<Vec<Running>, String> = (0..clients)
        .map(|i| match keys {
            Some(k) => spawn(program, &[args.clone(), k.client_args(i)].concat()),
            None => spawn(program, &args),
        })
        .collect();
    let deadline = Instant::now() + t.deadline;
    let finished: Result<Vec<Finished>, String> =
        procs.and_then(|ps| ps.into_iter().map(|p| p.wait(deadline)).collect());
    let cpu1 = process_cpu(hub.pid());
    let drops = rcvbuf_errors().saturating_sub(drops0);
    // Measured; the hub's exit is not part of it (a hub slow to stop is killed).
    let _ = hub.stop(Signal::Int, Duration::from_secs(5));
    let finished = match finished {
        Ok(f) => f,
        Err(e) => return Measure::failed(e),
    };

    // Per client, from its JSON summary.
    let mut per = Vec::new();
    for f in &finished {
        let no_summary = |_| {
            format!(
                "a client printed no JSON summary (ok: {}): {}",
                f.success(),
                f.stderr.trim()
            )
        };
        let stdout = f.stdout.trim();
        let summary = match client {
            Client::Img(_) => serde_json::from_str::<ImgSummary>(stdout).map(|s| ClientRun {
                // tcp has no ack: `written` (the other is 0), as the case name says
                acked: s.acked + s.written,
                rate: s.fps_acked + s.fps_written,
                lost: s.lost,
                rtt: s.rtt,
                elapsed_s: s.elapsed_s,
            }),
            Client::Msg => serde_json::from_str::<MsgSummary>(stdout).map(|s| ClientRun {
                acked: s.answered,
                rate: s.msgs_per_s,
                lost: s.lost,
                rtt: s.rtt,
                elapsed_s: s.elapsed_s,
            }),
        };
        let run = match summary.map_err(no_summary) {
            Ok(run) => run,
            Err(e) => return Measure::failed(e),
        };
        let elapsed = Duration::from_secs_f64(run.elapsed_s);
        let started = f.ended.checked_sub(elapsed).unwrap_or(f.ended);
        per.push((run, started, f.ended));
    }
    let acked: u64 = per.iter().map(|p| p.0.acked).sum();
    let startup = match client {
        Client::Img(_) => bins.img_startup,
        Client::Msg => bins.msg_startup,
    };
    let client_cpu: f64 = finished
        .iter()
        .map(|f| f.cpu.saturating_sub(startup).as_secs_f64())
        .sum();
    let lost: u64 = per.iter().map(|p| p.0.lost).sum();
    let rate = if clients == 1 {
        per[0].0.rate
    } else {
        let first = per.iter().map(|p| p.1).min().expect("clients");
        let last = per.iter().map(|p| p.2).max().expect("clients");
        acked as f64 / last.duration_since(first).as_secs_f64().max(1e-9)
    };
    let rates: Vec<f64> = per.iter().map(|p| p.0.rate).collect();
    let fastest = rates.iter().copied().fold(0.0, f64::max);
    let slowest = rates.iter().copied().fold(f64::INFINITY, f64::min);
    let mut p50s: Vec<f64> = per.iter().filter_map(|p| p.0.rtt.p50_us).collect();
    p50s.sort_by(f64::total_cmp);
    let p99 = per.iter().filter_map(|p| p.0.rtt.p99_us).reduce(f64::max);
    let cpu = match (cpu0, cpu1) {
        (Some(a), Some(b)) if acked > 0 => {
            Some(b.saturating_sub(a).as_secs_f64() / acked as f64 * 1000.0)
        }
        _ => None,
    };
    Measure {
        rate,
        mbps: rate * frame_bytes as f64 / 1e6,
        rtt_p50_us: p50s.get(p50s.len() / 2).copied(),
        rtt_p99_us: p99,
        hub_cpu_s_per_1000: cpu,
        client_cpu_s_per_1000: (acked > 0).then(|| client_cpu / acked as f64 * 1000.0),
        rcvbuf_errors: drops,
        frames: acked,
        lost,
        slowest_over_fastest: (fastest > 0.0).then_some(slowest / fastest),
        per_client: rates,
        error: None,
    }
}

// ---------------------------------------------------------------------------------------
// Judging and reporting
// ---------------------------------------------------------------------------------------

fn judge(case: &Case, rounds: &[Round]) -> Value {
    let reals: Vec<Measure> = rounds.iter().map(|r| r.real.clone()).collect();
    let raws: Vec<Measure> = rounds.iter().map(|r| r.raw.clone()).collect();
    let plains: Vec<Measure> = rounds.iter().filter_map(|r| r.plain.clone()).collect();
    let (real, raw) = (&best(&reals), &best(&raws));
    let plain = (!plains.is_empty()).then(|| best(&plains));
    // A keyed run against the plain run of the same rounds.
    let vs_plain = plain.as_ref().map(|p| {
        let throughput = (p.rate > 0.0).then(|| real.rate / p.rate);
        let hub_cpu = match (real.hub_cpu_s_per_1000, p.hub_cpu_s_per_1000) {
            (Some(k), Some(p)) if p > 0.0 => Some(k / p),
            _ => None,
        };
        let client_cpu = match (real.client_cpu_s_per_1000, p.client_cpu_s_per_1000) {
            (Some(k), Some(p)) if p > 0.0 => Some(k / p),
            _ => None,
        };
        (throughput, hub_cpu, client_cpu)
    });
    let ratio = (raw.rate > 0.0).then(|| real.rate / raw.rate);
    let p99_ratio = match (real.rtt_p99_us, raw.rtt_p99_us) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    };
    let failed = real.error.is_some() || raw.error.is_some();
    let at_least = |v: Option<f64>, min: f64| v.is_some_and(|v| v >= min);
    let met = !failed
        && match case.target {
            Target::Single => at_least(ratio, 0.8) && p99_ratio.is_some_and(|r| r <= 2.0),
            Target::Big => {
                at_least(ratio, 0.8)
                    && p99_ratio.is_some_and(|r| r <= 2.0)
                    && real.rcvbuf_errors == 0
            }
            Target::Multi => at_least(ratio, 0.8) && at_least(real.slowest_over_fastest, 0.8),
            Target::Live => at_least(ratio, 0.9),
            Target::Keys => {
                plain.as_ref().is_some_and(|p| p.error.is_none())
                    && vs_plain.is_some_and(|(throughput, hub_cpu, _)| {
                        at_least(throughput, KEYS_MIN_THROUGHPUT)
                            && hub_cpu.is_some_and(|c| c <= KEYS_MAX_HUB_CPU)
                    })
            }
        };
    let unit = match case.kind {
        Kind::Msg { .. } => "msg/s",
        _ => "fps",
    };
    let raw_label = match case.kind {
        Kind::Live => "the pattern source + JPEG encoder alone, no network",
        _ => "raw_limit: the same datagrams, no parsing/reassembly/copies",
    };
    json!({
        "name": case.name,
        "unit": unit,
        "real": real.to_json(),
        "raw": raw.to_json(),
        "rounds": {
            "real": reals.iter().map(|m| m.rate).collect::<Vec<_>>(),
            "raw": raws.iter().map(|m| m.rate).collect::<Vec<_>>(),
            "plain": (!plains.is_empty()).then(|| plains.iter().map(|m| m.rate).collect::<Vec<_>>()),
        },
        "keys": case.keyed(),
        "plain": plain.as_ref().map(Measure::to_json),
        "vs_plain": vs_plain.map(|(throughput, hub_cpu, client_cpu)| json!({
            "throughput_ratio": throughput,
            "hub_cpu_per_frame_ratio": hub_cpu,
            "client_cpu_per_frame_ratio": client_cpu,
        })),
        "raw_is": raw_label,
        "ratio": ratio,
        "rtt_p99_ratio": p99_ratio,
        "target": case.target.describe(),
        "met": met,
    })
}

const COLUMNS: [(&str, usize); 14] = [
    ("case", 20),
    ("unit", 5),
    ("real", 8),
    ("raw", 8),
    ("ratio", 5),
    ("MB/s", 6),
    ("rtt p50/p99", 13),
    ("raw p50/p99", 13),
    ("p99x", 4),
    ("hub cpu/1k", 11),
    ("cli cpu/1k", 11),
    ("drops", 5),
    ("slow/fast", 9),
    ("met", 3),
];

fn line(cells: &[String]) -> String {
    let mut out = String::new();
    for (i, (cell, (_, width))) in cells.iter().zip(COLUMNS).enumerate() {
        if i == 0 {
            out.push_str(&format!("{cell:<width$}"));
        } else {
            out.push_str(&format!(" {cell:>width$}"));
        }
    }
    out
}

fn header() -> String {
    let mut out = line(&COLUMNS.map(|(name, _)| name.to_string()));
    out.push_str(
        "\n(real/raw pairs; rates per second; rtt in µs; cpu in s per 1000 frames: hub = hub \
         process or raw receiver, cli = client processes or raw senders)",
    );
    out
}

fn row(r: &Value) -> String {
    let f = |v: &Value, digits: usize| match v.as_f64() {
        Some(x) => format!("{x:.digits$}"),
        None => "-".into(),
    };
    let pair = |key: &str, digits: usize| {
        format!(
            "{}/{}",
            f(&r["real"][key], digits),
            f(&r["raw"][key], digits)
        )
    };
    let rtt = |m: &Value| format!("{}/{}", f(&m["rtt_p50_us"], 0), f(&m["rtt_p99_us"], 0));
    let (real, raw) = (&r["real"], &r["raw"]);
    let mut out = line(&[
        r["name"].as_str().unwrap_or("?").to_string(),
        r["unit"].as_str().unwrap_or("?").to_string(),
        f(&real["rate"], 0),
        f(&raw["rate"], 0),
        f(&r["ratio"], 2),
        f(&real["mbps"], 1),
        rtt(real),
        rtt(raw),
        f(&r["rtt_p99_ratio"], 1),
        pair("hub_cpu_s_per_1000", 3),
        pair("client_cpu_s_per_1000", 3),
        pair("rcvbuf_errors", 0),
        pair("slowest_over_fastest", 2),
        if r["met"] == true { "yes" } else { "NO" }.to_string(),
    ]);
    for side in ["real", "raw"] {
        if let Some(e) = r[side]["error"].as_str() {
            out.push_str(&format!(" [{side}: {e}]"));
        }
    }
    out
}

const KEYS_COLUMNS: [(&str, usize); 9] = [
    ("case (keys vs plain)", 20),
    ("unit", 5),
    ("keys", 8),
    ("plain", 8),
    ("ratio", 5),
    ("hub cpu/1k k/p", 14),
    ("hub x", 5),
    ("cli cpu/1k k/p", 14),
    ("met", 3),
];

fn keys_line(cells: &[String]) -> String {
    let mut out = String::new();
    for (i, (cell, (_, width))) in cells.iter().zip(KEYS_COLUMNS).enumerate() {
        if i == 0 {
            out.push_str(&format!("{cell:<width$}"));
        } else {
            out.push_str(&format!(" {cell:>width$}"));
        }
    }
    out
}

fn keys_header() -> String {
    let mut out = keys_line(&KEYS_COLUMNS.map(|(name, _)| name.to_string()));
    out.push_str(&format!(
        "\n(the -keys cases against the plain framed run of the same rounds; target: ratio >= \
         {KEYS_MIN_THROUGHPUT}, hub x (hub cpu per frame, keys/plain) <= {KEYS_MAX_HUB_CPU})"
    ));
    out
}

/// A `-keys` case: its rate and CPU against the plain run's.
fn keys_row(r: &Value) -> String {
    let f = |v: &Value, digits: usize| match v.as_f64() {
        Some(x) => format!("{x:.digits$}"),
        None => "-".into(),
    };
    let (keyed, plain, vs) = (&r["real"], &r["plain"], &r["vs_plain"]);
    let pair = |key: &str| format!("{}/{}", f(&keyed[key], 3), f(&plain[key], 3));
    let mut out = keys_line(&[
        r["name"].as_str().unwrap_or("?").to_string(),
        r["unit"].as_str().unwrap_or("?").to_string(),
        f(&keyed["rate"], 0),
        f(&plain["rate"], 0),
        f(&vs["throughput_ratio"], 2),
        pair("hub_cpu_s_per_1000"),
        f(&vs["hub_cpu_per_frame_ratio"], 2),
        pair("client_cpu_s_per_1000"),
        if r["met"] == true { "yes" } else { "NO" }.to_string(),
    ]);
    if let Some(e) = plain["error"].as_str() {
        out.push_str(&format!(" [plain: {e}]"));
    }
    out
}
