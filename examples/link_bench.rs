//! `link_bench`: live video over a narrow, lossy link (issue 13). Run it with
//! `scripts/link_bench.sh` (arguments pass through).
//!
//! **The link.** As root: two network namespaces of the bench's own (`uhlb<pid>s`, the
//! camera, 10.77.0.1, and `uhlb<pid>h`, the hub, 10.77.0.2) joined by a veth pair, with the
//! kernel's token-bucket filter on the camera's side as the bottleneck (`tc qdisc … tbf rate
//! R burst 32kb latency 500ms`: a home access point's deep queue). The kernel has no
//! `netem`, so delay and loss come from `udp-relay` inside the hub's namespace (`--delay-ms`
//! each way, `--loss` both ways), in front of the hub's image port; the TCP senders go
//! straight to the hub (the relay carries UDP only), over the veth's own round trip (well
//! under 0.1 ms), and run only in the cases without loss. Without root (or with `--link
//! relay`) the relay is the link itself (`--rate-mbit R --queue-bytes` 500 ms of it, both
//! directions) on loopback, and the TCP rows and the rate step are left out, since a relay
//! cannot carry TCP nor change its rate.
//!
//! **The scene.** 640x480 at 30 fps, JPEG quality 90, with noise: about 66.7 kB a frame,
//! 16 Mbit/s. img-client draws it live (`--pattern --noise`), so adaptation can re-encode;
//! the Python seed senders (`scripts/link_bench_sender.py`, the blocking loops the seed
//! tutorials describe, with the udphub package's seed formats) send the same scene as one
//! ready JPEG.
//!
//! **Latency** is measured from the stamps, not from the hub's own estimate: each frame's
//! capture time (the framed header's capture time; for seed formats a JPEG comment
//! `udphub-capture-us=…`) against its arrival time, both read from the hub's `--frame-log`
//! (the namespaces share one wall clock). The hub's own estimate (`latency_ms`, corrected
//! by its clock-offset estimate) is checked against it: the `est. err` column is the p99 of
//! |estimate − stamps|. Frames captured in the first `--warmup-s` seconds are not counted.
//!
//! **Corrupt** counts delivered frames that do not decode: the hub saves every 5th delivered
//! frame (`--save-dir`) and each is decoded with OpenCV after the run. It must be 0: the run
//! exits 1 otherwise.
//!
//! Output: a markdown table on stdout and the same as JSON in `target/bench/link.json` (or
//! `--out`). Every child process is waited for with a deadline and killed past it, and the
//! namespaces are deleted at the end (also after a failure).

use clap::Parser;
use serde::Deserialize;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc::RecvTimeoutError;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use udphub::client::stats::{percentile_of_sorted, ImgSummary};
use udphub_testkit::frames::pattern_frame;
use udphub_testkit::process::{describe_command, lines};
use udphub_testkit::{HubProcess, Running, Signal};

/// Live video through a narrow link: delivered fps, latency from the stamps, bytes per
/// frame, frames given up and corrupt, per link case and sender.
#[derive(Parser, Debug)]
struct Args {
    /// `tbf` (network namespaces, needs root), `relay` (udp-relay's rate limit on loopback)
    /// or `auto` (tbf when it can be set up, else relay).
    #[arg(long, default_value = "auto")]
    link: String,
    /// Seconds each sender runs per case (the rate-step case runs 16 s whatever this is).
    #[arg(long, default_value_t = 8.0)]
    seconds: f64,
    /// Frames captured in the first this-many seconds are not counted.
    #[arg(long, default_value_t = 2.0)]
    warmup_s: f64,
    /// Only these cases (comma-separated names as in the table, e.g. `8M-2ms-0%,step`).
    #[arg(long, value_delimiter = ',')]
    cases: Vec<String>,
    /// Only these senders (comma-separated: adaptive, adaptive-nofec, fixed, py-chunked,
    /// py-tcp, img-tcp).
    #[arg(long, value_delimiter = ',')]
    senders: Vec<String>,
    /// One short case (8 Mbit/s, 2 ms) with the adaptive and the seed chunked sender: the
    /// smoke run scripts/test.sh makes.
    #[arg(long)]
    quick: bool,
    /// img-client's `--noise` for the 66.7 kB-at-q90 scene.
    #[arg(long, default_value_t = 18)]
    noise: u32,
    /// Where the JSON goes.
    #[arg(long, default_value = "target/bench/link.json")]
    out: PathBuf,
    /// Keep each run's hub frame log and the sender's output (status lines) in this folder,
    /// as `CASE-SENDER.frames.jsonl` and `CASE-SENDER.sender.log`.
    #[arg(long)]
    keep_logs: Option<PathBuf>,
}

/// The rate-step case: the link's rate over time (seconds from the sender's start, Mbit/s).
const STEPS: [(f64, f64); 3] = [(0.0, 50.0), (6.0, 3.0), (11.0, 50.0)];
const STEP_SECONDS: f64 = 16.0;

#[derive(Clone, Debug)]
struct Case {
    name: String,
    rate_mbit: f64,
    /// Round trip the relay adds (half each way).
    rtt_ms: u64,
    loss: f64,
    /// The rate-step case.
    step: bool,
}

impl Case {
    fn new(rate_mbit: f64, rtt_ms: u64, loss: f64) -> Case {
        Case {
            name: format!("{rate_mbit}M-{rtt_ms}ms-{}%", loss * 100.0),
            rate_mbit,
            rtt_ms,
            loss,
            step: false,
        }
    }
}

fn all_cases() -> Vec<Case> {
    let mut cases = vec![
        Case::new(50.0, 2, 0.0),
        Case::new(8.0, 2, 0.0),
        Case::new(3.0, 2, 0.0),
        Case::new(8.0, 2, 0.02),
        Case::new(8.0, 40, 0.0),
        Case::new(8.0, 40, 0.02),
        Case::new(3.0, 40, 0.02),
    ];
    cases.push(Case {
        name: "step".into(),
        rate_mbit: STEPS[0].1,
        rtt_ms: 2,
        loss: 0.0,
        step: true,
    });
    cases
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sender {
    /// img-client, framed, adaptation on and `--fec auto` (its defaults).
    Adaptive,
    /// The same with `--fec off`: what the parity buys (only in the cases with loss).
    AdaptiveNoFec,
    /// img-client, framed, `--adapt off` at quality 90.
    Fixed,
    /// The Python seed chunked sender (stop-and-wait).
    PyChunked,
    /// The Python seed TCP sender (blocking sendall).
    PyTcp,
    /// `img-client --protocol tcp` (bounded send buffer, frames skipped upstream).
    ImgTcp,
}

const SENDERS: [Sender; 6] = [
    Sender::Adaptive,
    Sender::AdaptiveNoFec,
    Sender::Fixed,
    Sender::PyChunked,
    Sender::PyTcp,
    Sender::ImgTcp,
];

impl Sender {
    fn name(self) -> &'static str {
        match self {
            Sender::Adaptive => "adaptive",
            Sender::AdaptiveNoFec => "adaptive-nofec",
            Sender::Fixed => "fixed",
            Sender::PyChunked => "py-chunked",
            Sender::PyTcp => "py-tcp",
            Sender::ImgTcp => "img-tcp",
        }
    }

    fn is_tcp(self) -> bool {
        matches!(self, Sender::PyTcp | Sender::ImgTcp)
    }
}

/// The bench's two namespaces and their veth pair; deleted on drop.
struct Netns {
    camera: String,
    hub: String,
    camera_dev: String,
}

const CAMERA_ADDR: &str = "10.77.0.1";
const HUB_ADDR: &str = "10.77.0.2";

impl Netns {
    fn create() -> Result<Netns, String> {
        let id = std::process::id();
        let ns = Netns {
            camera: format!("uhlb{id}s"),
            hub: format!("uhlb{id}h"),
            camera_dev: format!("uhlb{id}a"),
        };
        let hub_dev = format!("uhlb{id}b");
        ip(&["netns", "add", &ns.camera])?;
        // from here on, a failure deletes what was made (drop)
        ip(&["netns", "add", &ns.hub])?;
        ip(&[
            "link",
            "add",
            &ns.camera_dev,
            "type",
            "veth",
            "peer",
            "name",
            &hub_dev,
        ])?;
        ip(&["link", "set", &ns.camera_dev, "netns", &ns.camera])?;
        ip(&["link", "set", &hub_dev, "netns", &ns.hub])?;
        for (space, dev, addr) in [
            (&ns.camera, &ns.camera_dev, CAMERA_ADDR),
            (&ns.hub, &hub_dev, HUB_ADDR),
        ] {
            ip(&[
                "-n",
                space,
                "addr",
                "add",
                &format!("{addr}/30"),
                "dev",
                dev,
            ])?;
            ip(&["-n", space, "link", "set", dev, "up"])?;
            ip(&["-n", space, "link", "set", "lo", "up"])?;
        }
        Ok(ns)
    }

    /// The camera side's bottleneck: `tbf rate R burst 32kb latency 500ms`.
    fn set_rate(&self, mbit: f64) -> Result<(), String> {
        let rate = format!("{}kbit", (mbit * 1000.0).round());
        let args = [
            "-n",
            &self.camera,
            "qdisc",
            "replace",
            "dev",
            &self.camera_dev,
            "root",
            "tbf",
            "rate",
            &rate,
            "burst",
            "32kb",
            "latency",
            "500ms",
        ];
        run_tool("tc", &args)
    }

    fn exec(&self, ns: &str, program: &Path) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns]).arg(program);
        cmd
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for ns in [&self.camera, &self.hub] {
            let _ = ip(&["netns", "del", ns]);
        }
    }
}

fn ip(args: &[&str]) -> Result<(), String> {
    run_tool("ip", args)
}

fn run_tool(tool: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(tool)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{tool}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{tool} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The link the cases run on.
enum Link {
    Tbf(Netns),
    Relay,
}

impl Link {
    fn name(&self) -> &'static str {
        match self {
            Link::Tbf(_) => "tbf",
            Link::Relay => "relay",
        }
    }

    fn hub_addr(&self) -> &'static str {
        match self {
            Link::Tbf(_) => HUB_ADDR,
            Link::Relay => "127.0.0.1",
        }
    }

    /// `program` in the hub's namespace (or here).
    fn on_hub(&self, program: &Path) -> Command {
        match self {
            Link::Tbf(ns) => ns.exec(&ns.hub, program),
            Link::Relay => Command::new(program),
        }
    }

    /// `program` in the camera's namespace (or here).
    fn on_camera(&self, program: &Path) -> Command {
        match self {
            Link::Tbf(ns) => ns.exec(&ns.camera, program),
            Link::Relay => Command::new(program),
        }
    }
}

struct Ctx {
    hub: PathBuf,
    client: PathBuf,
    relay: PathBuf,
    python: PathBuf,
    py_sender: PathBuf,
    frame: PathBuf,
    args: Args,
}

fn main() {
    let args = Args::parse();
    if let Err(e) = run(args) {
        eprintln!("link_bench: {e}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<(), String> {
    let started = Instant::now();
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let bins = exe
        .parent()
        .and_then(Path::parent)
        .ok_or("no parent dir")?
        .to_path_buf();
    let root = std::env::current_dir().map_err(|e| e.to_string())?;
    let ctx_paths = (
        bins.join("hub"),
        bins.join("img-client"),
        bins.join("udp-relay"),
        root.join("target/pyvenv/bin/python"),
        root.join("scripts/link_bench_sender.py"),
    );
    for p in [
        &ctx_paths.0,
        &ctx_paths.1,
        &ctx_paths.2,
        &ctx_paths.3,
        &ctx_paths.4,
    ] {
        if !p.is_file() {
            return Err(format!(
                "{} is missing: run scripts/link_bench.sh (it builds the binaries and the \
                 Python venv)",
                p.display()
            ));
        }
    }
    let link = match args.link.as_str() {
        "relay" => Link::Relay,
        "tbf" => Link::Tbf(Netns::create()?),
        "auto" => match Netns::create() {
            Ok(ns) => Link::Tbf(ns),
            Err(why) => {
                eprintln!(
                    "link_bench: no network namespaces ({why}); the link is udp-relay's \
                     rate limit on loopback, without the TCP rows and the rate step"
                );
                Link::Relay
            }
        },
        other => return Err(format!("--link {other:?}: tbf, relay or auto")),
    };
    let dir = args.out.parent().unwrap_or(Path::new(".")).to_path_buf();
    let frames_dir = dir.join("frames");
    std::fs::create_dir_all(&frames_dir).map_err(|e| format!("{}: {e}", frames_dir.display()))?;
    let frame = pattern_frame(&frames_dir, "link-bench-", (640, 480), 90, 66_700)?.path;

    let mut cases = all_cases();
    let mut senders = SENDERS.to_vec();
    if args.quick {
        cases.retain(|c| c.name == "8M-2ms-0%");
        senders = vec![Sender::Adaptive, Sender::PyChunked];
    }
    if !args.cases.is_empty() {
        cases.retain(|c| args.cases.contains(&c.name));
    }
    if !args.senders.is_empty() {
        senders.retain(|s| args.senders.iter().any(|n| n == s.name()));
    }
    if matches!(link, Link::Relay) {
        cases.retain(|c| !c.step);
    }
    if cases.is_empty() || senders.is_empty() {
        return Err("no case or no sender left to run".into());
    }
    let ctx = Ctx {
        hub: ctx_paths.0,
        client: ctx_paths.1,
        relay: ctx_paths.2,
        python: ctx_paths.3,
        py_sender: ctx_paths.4,
        frame,
        args,
    };

    let mut results = Vec::new();
    for case in &cases {
        for &sender in &senders {
            if sender.is_tcp() && (case.loss > 0.0 || matches!(link, Link::Relay)) {
                continue;
            }
            // parity is sent only on loss: without loss the row would repeat `adaptive`
            if sender == Sender::AdaptiveNoFec && case.loss == 0.0 {
                continue;
            }
            eprintln!("link_bench: {} {} ...", case.name, sender.name());
            let mut v = json!({"case": case.name, "sender": sender.name(), "link": link.name()});
            match measure(&ctx, &link, case, sender) {
                Ok(m) => {
                    for (k, x) in m.as_object().expect("an object") {
                        v[k] = x.clone();
                    }
                    v["error"] = Value::Null;
                }
                Err(e) => {
                    eprintln!("link_bench: {} {}: {e}", case.name, sender.name());
                    v["error"] = json!(e);
                }
            }
            results.push(v);
        }
    }

    let table = table(&results);
    println!("{table}");
    let secs = started.elapsed().as_secs_f64();
    println!(
        "link {}, {} s per run ({} s warm-up not counted), {secs:.0} s in all; JSON: {}",
        link.name(),
        ctx.args.seconds,
        ctx.args.warmup_s,
        ctx.args.out.display()
    );
    let doc = json!({
        "link": link.name(),
        "seconds": ctx.args.seconds,
        "warmup_s": ctx.args.warmup_s,
        "frame": ctx.frame.display().to_string(),
        "steps": STEPS.iter().map(|(t, r)| json!({"at_s": t, "rate_mbit": r})).collect::<Vec<_>>(),
        "elapsed_s": secs,
        "table": table,
        "runs": results,
    });
    let text = serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?;
    std::fs::write(&ctx.args.out, text + "\n")
        .map_err(|e| format!("{}: {e}", ctx.args.out.display()))?;

    let failed = results.iter().filter(|r| !r["error"].is_null()).count();
    let corrupt: u64 = results.iter().filter_map(|r| r["corrupt"].as_u64()).sum();
    match (failed, corrupt) {
        (0, 0) => Ok(()),
        (0, c) => Err(format!("{c} delivered frame(s) did not decode")),
        (f, _) => Err(format!("{f} run(s) could not be measured (see above)")),
    }
}

/// One line of the hub's `--frame-log`.
#[derive(Debug, Deserialize)]
struct FrameLine {
    arrival_us: u64,
    bytes: u64,
    capture_us: Option<u64>,
    latency_ms: Option<f64>,
    quality: Option<u32>,
}

fn wall_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros() as u64
}

/// A child that says it is ready on stdout (`udp-relay`), killed on drop.
struct Daemon {
    child: std::process::Child,
}

impl Daemon {
    /// Start `cmd` and wait for its `<prefix>: ready` line; returns the address on its
    /// `listening on udp ADDR` line.
    fn start(mut cmd: Command, within: Duration) -> Result<(Daemon, SocketAddr), String> {
        let shown = describe_command(&cmd);
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("{shown}: {e}"))?;
        let lines = lines(child.stdout.take().expect("piped"));
        let daemon = Daemon { child };
        let deadline = Instant::now() + within;
        let mut addr = None;
        loop {
            match lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) if line.ends_with(": ready") => break,
                Ok(line) => {
                    if let Some(rest) = line.split("listening on udp ").nth(1) {
                        let a = rest.split_whitespace().next().unwrap_or("");
                        addr = a.parse().ok();
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    return Err(format!("{shown}: not ready within {within:?}"))
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(format!("{shown}: exited before it was ready"))
                }
            }
        }
        let addr = addr.ok_or_else(|| format!("{shown}: no `listening on udp` line"))?;
        Ok((daemon, addr))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn measure(ctx: &Ctx, link: &Link, case: &Case, sender: Sender) -> Result<Value, String> {
    let work = tempfile::Builder::new()
        .prefix("link-bench-")
        .tempdir()
        .map_err(|e| format!("temp dir: {e}"))?;
    let save_dir = work.path().join("saved");
    std::fs::create_dir(&save_dir).map_err(|e| format!("{}: {e}", save_dir.display()))?;
    let frame_log = work.path().join("frames.jsonl");
    let (save_s, log_s) = (
        save_dir.to_str().ok_or("temp path not UTF-8")?,
        frame_log.to_str().ok_or("temp path not UTF-8")?,
    );
    let mut hub_cmd = link.on_hub(&ctx.hub);
    hub_cmd.env("RUST_LOG", "warn");
    let hub = HubProcess::start_command(
        hub_cmd,
        &[
            "--bind",
            link.hub_addr(),
            "--no-msg",
            "--frame-log",
            log_s,
            "--save-dir",
            save_s,
            "--save-every",
            "5",
            "--json-summary",
        ],
        Duration::from_secs(10),
    )?;
    let ports = hub.ports;
    let (img, tcp) = (
        ports.img.ok_or("the hub has no image port")?,
        ports.tcp.ok_or("the hub has no tcp port")?,
    );
    if let Link::Tbf(ns) = link {
        ns.set_rate(case.rate_mbit)?;
    }
    // The relay: delay and loss (tbf), or the whole link (relay mode).
    let relay = if sender.is_tcp() {
        None
    } else {
        let mut cmd = link.on_hub(&ctx.relay);
        cmd.args(["--listen", &format!("{}:0", link.hub_addr())])
            .args(["--upstream", &img.to_string()])
            .args(["--delay-ms", &(case.rtt_ms / 2).to_string()])
            .args(["--loss", &case.loss.to_string()]);
        if matches!(link, Link::Relay) {
            // 500 ms of the link, as tbf's latency 500ms
            let queue = ((case.rate_mbit * 1e6 / 8.0 * 0.5) as u64).max(1500);
            cmd.args(["--rate-mbit", &case.rate_mbit.to_string()])
                .args(["--queue-bytes", &queue.to_string()]);
        }
        Some(Daemon::start(cmd, Duration::from_secs(10))?)
    };
    let target = match (&relay, sender.is_tcp()) {
        (Some((_, addr)), false) => *addr,
        _ => tcp,
    };
    let seconds = if case.step {
        STEP_SECONDS
    } else {
        ctx.args.seconds
    };

    let mut cmd = match sender {
        Sender::Adaptive | Sender::AdaptiveNoFec | Sender::Fixed | Sender::ImgTcp => {
            let mut cmd = link.on_camera(&ctx.client);
            cmd.env("RUST_LOG", "warn")
                .args(["--pattern", "--noise", &ctx.args.noise.to_string()])
                .args(["--width", "640", "--height", "480", "--quality", "90"])
                .args(["--fps", "30", "--hub", &target.to_string()])
                .arg("--json-summary");
            match sender {
                Sender::Adaptive => cmd.args(["--protocol", "framed"]),
                Sender::AdaptiveNoFec => cmd.args(["--protocol", "framed", "--fec", "off"]),
                Sender::Fixed => cmd.args(["--protocol", "framed", "--adapt", "off"]),
                _ => cmd.args(["--protocol", "tcp"]),
            };
            cmd
        }
        Sender::PyChunked | Sender::PyTcp => {
            let mut cmd = link.on_camera(&ctx.python);
            cmd.arg(&ctx.py_sender)
                .args(["--hub", &target.to_string()])
                .args(["--jpeg", ctx.frame.to_str().ok_or("frame path not UTF-8")?])
                .args(["--fps", "30", "--seconds", &seconds.to_string()])
                .args([
                    "--protocol",
                    if sender == Sender::PyTcp {
                        "tcp"
                    } else {
                        "chunked"
                    },
                ]);
            cmd
        }
    };
    let start_us = wall_us();
    let t0 = Instant::now();
    let running = Running::spawn(&mut cmd, b"")?;
    // The rate steps, then the end of the run.
    let mut step_at_us = Vec::new();
    if case.step {
        for &(at, rate) in &STEPS[1..] {
            sleep_until(t0 + Duration::from_secs_f64(at));
            if let Link::Tbf(ns) = link {
                ns.set_rate(rate)?;
            }
            step_at_us.push(wall_us());
        }
    }
    sleep_until(t0 + Duration::from_secs_f64(seconds));
    if !matches!(sender, Sender::PyChunked | Sender::PyTcp) {
        // SAFETY: kill(2) on a child this process started and has not reaped.
        unsafe { libc::kill(running.pid() as libc::pid_t, libc::SIGINT) };
    }
    let done = running.wait(Instant::now() + Duration::from_secs(15))?;
    let end_us = wall_us();
    if !done.success() {
        return Err(format!("the sender failed: {}", done.describe()));
    }
    drop(relay);
    let stopped = hub.stop(Signal::Int, Duration::from_secs(10))?;
    let summary = stopped.summary()?;

    let (given_up, quality_summary) = match sender {
        Sender::PyChunked | Sender::PyTcp => {
            let v: Value = serde_json::from_str(done.stdout.trim())
                .map_err(|e| format!("the Python sender's summary: {e}: {}", done.stdout))?;
            (v["lost"].as_u64().unwrap_or(0), Value::Null)
        }
        _ => {
            let line = done
                .stdout
                .lines()
                .rev()
                .find(|l| l.trim_start().starts_with('{'))
                .ok_or_else(|| format!("no JSON summary from img-client: {}", done.stdout))?;
            let s: ImgSummary = serde_json::from_str(line)
                .map_err(|e| format!("img-client's JSON summary: {e}: {line}"))?;
            let raw: Value = serde_json::from_str(line).unwrap_or(Value::Null);
            (s.lost, raw.get("encoding").cloned().unwrap_or(Value::Null))
        }
    };

    if let Some(dir) = &ctx.args.keep_logs {
        let stem = dir.join(format!(
            "{}-{}",
            case.name.replace('%', "pct"),
            sender.name()
        ));
        let keep = |ext: &str, bytes: &[u8]| {
            let path = stem.with_extension(ext);
            std::fs::create_dir_all(dir)
                .and_then(|()| std::fs::write(&path, bytes))
                .map_err(|e| format!("{}: {e}", path.display()))
        };
        keep(
            "sender.log",
            format!("{}\n{}", done.stderr, done.stdout).as_bytes(),
        )?;
        std::fs::copy(&frame_log, stem.with_extension("frames.jsonl"))
            .map_err(|e| format!("keeping {}: {e}", frame_log.display()))?;
    }
    // The frame log, counted from the end of the warm-up.
    let text =
        std::fs::read_to_string(&frame_log).map_err(|e| format!("{}: {e}", frame_log.display()))?;
    let mut frames = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let f: FrameLine =
            serde_json::from_str(line).map_err(|e| format!("frame log line {line:?}: {e}"))?;
        frames.push(f);
    }
    let from_us = start_us + (ctx.args.warmup_s * 1e6) as u64;
    let counted: Vec<&FrameLine> = frames
        .iter()
        .filter(|f| f.capture_us.is_some_and(|c| c >= from_us))
        .collect();
    let unstamped = frames.iter().filter(|f| f.capture_us.is_none()).count();
    let window_s = (end_us.saturating_sub(from_us)) as f64 / 1e6;
    let stamp_latency = |f: &FrameLine| {
        f.arrival_us
            .saturating_sub(f.capture_us.unwrap_or(f.arrival_us)) as f64
            / 1000.0
    };
    let mut lat: Vec<f64> = counted.iter().map(|f| stamp_latency(f)).collect();
    lat.sort_by(f64::total_cmp);
    let mut est_err: Vec<f64> = counted
        .iter()
        .filter_map(|f| f.latency_ms.map(|est| (est - stamp_latency(f)).abs()))
        .collect();
    est_err.sort_by(f64::total_cmp);
    let mean_bytes = if counted.is_empty() {
        0.0
    } else {
        counted.iter().map(|f| f.bytes as f64).sum::<f64>() / counted.len() as f64
    };
    let qualities: Vec<u32> = counted.iter().filter_map(|f| f.quality).collect();
    let corrupt_detected: u64 = summary.services.iter().map(|s| s.total.corrupt).sum();
    let (decoded, corrupt) = decode_saved(&save_dir)?;

    let mut v = json!({
        "seconds": seconds,
        "delivered": counted.len(),
        "fps": counted.len() as f64 / window_s.max(1e-9),
        "latency_ms": {
            "p50": percentile_of_sorted(&lat, 50.0),
            "p99": percentile_of_sorted(&lat, 99.0),
            "max": lat.last(),
        },
        "estimate_err_ms_p99": percentile_of_sorted(&est_err, 99.0),
        "estimated_frames": est_err.len(),
        "mean_bytes": mean_bytes,
        "quality_mean": if qualities.is_empty() { Value::Null } else {
            json!(qualities.iter().map(|&q| f64::from(q)).sum::<f64>() / qualities.len() as f64)
        },
        "given_up": given_up,
        "unstamped_frames": unstamped,
        "corrupt_detected_by_hub": corrupt_detected,
        "saved_frames_decoded": decoded,
        "corrupt": corrupt,
        "sender_encoding": quality_summary,
    });
    if case.step {
        v["step"] = step_figures(&frames, &step_at_us);
    }
    Ok(v)
}

fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        thread::sleep(t - now);
    }
}

/// The rate step's figures: after the step down, when the p99 of each 250 ms of captures
/// is back under 150 ms for good; after the step up, when a frame of full quality (the
/// best quality and at least 80% of the mean size seen before the step down) arrives.
fn step_figures(frames: &[FrameLine], steps: &[u64]) -> Value {
    let [down, up] = steps else {
        return json!({"error": "the steps were not both made"});
    };
    const BIN_US: u64 = 250_000;
    let mut last_bad_end = *down;
    let mut t = *down;
    while t < *up {
        let mut lat: Vec<f64> = frames
            .iter()
            .filter_map(|f| {
                let c = f.capture_us?;
                (c >= t && c < t + BIN_US).then(|| f.arrival_us.saturating_sub(c) as f64 / 1e3)
            })
            .collect();
        lat.sort_by(f64::total_cmp);
        let p99 = percentile_of_sorted(&lat, 99.0);
        if p99.is_none_or(|p| p > 150.0) {
            last_bad_end = t + BIN_US;
        }
        t += BIN_US;
    }
    let before: Vec<&FrameLine> = frames
        .iter()
        .filter(|f| f.capture_us.is_some_and(|c| c < *down))
        .collect();
    let best_q = before.iter().filter_map(|f| f.quality).max();
    let mean_before =
        before.iter().map(|f| f.bytes as f64).sum::<f64>() / before.len().max(1) as f64;
    let full_again = frames
        .iter()
        .filter(|f| f.capture_us.is_some_and(|c| c >= *up))
        .find(|f| f.quality >= best_q && f.bytes as f64 >= 0.8 * mean_before)
        .and_then(|f| f.capture_us);
    json!({
        "p99_under_150ms_after_down_s": (last_bad_end - down) as f64 / 1e6,
        "full_quality_after_up_s": full_again.map(|c| (c - up) as f64 / 1e6),
        "quality_before": best_q,
        "mean_bytes_before": mean_before,
    })
}

/// Decode every saved frame: (decoded, failed).
fn decode_saved(dir: &Path) -> Result<(u64, u64), String> {
    let (mut ok, mut bad) = (0, 0);
    for entry in std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))? {
        let path = entry.map_err(|e| e.to_string())?.path();
        let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        match udphub::media::jpeg::decode(&bytes) {
            Ok(_) => ok += 1,
            Err(_) => bad += 1,
        }
    }
    Ok((ok, bad))
}

fn table(results: &[Value]) -> String {
    let mut out = String::from(
        "| case | sender | fps | latency p50 | p99 | max | est. err p99 | bytes/frame | quality | given up | corrupt |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let ms = |v: &Value| v.as_f64().map_or("-".into(), |x| format!("{x:.0} ms"));
    for r in results {
        if !r["error"].is_null() {
            out += &format!(
                "| {} | {} | error: {} |\n",
                r["case"].as_str().unwrap_or(""),
                r["sender"].as_str().unwrap_or(""),
                r["error"].as_str().unwrap_or("")
            );
            continue;
        }
        out += &format!(
            "| {} | {} | {:.1} | {} | {} | {} | {} | {:.0} | {} | {} | {} |\n",
            r["case"].as_str().unwrap_or(""),
            r["sender"].as_str().unwrap_or(""),
            r["fps"].as_f64().unwrap_or(0.0),
            ms(&r["latency_ms"]["p50"]),
            ms(&r["latency_ms"]["p99"]),
            ms(&r["latency_ms"]["max"]),
            r["estimate_err_ms_p99"]
                .as_f64()
                .map_or("-".into(), |x| format!("{x:.1} ms")),
            r["mean_bytes"].as_f64().unwrap_or(0.0),
            r["quality_mean"]
                .as_f64()
                .map_or("-".into(), |x| format!("{x:.0}")),
            r["given_up"],
            r["corrupt"],
        );
        let secs = |v: &Value| v.as_f64().map_or("never".into(), |x| format!("{x:.2} s"));
        if let Some(step) = r.get("step") {
            out += &format!(
                "| ↳ step | p99 < 150 ms {} after 50→3; full quality {} after 3→50 | | | | | | | | | |\n",
                secs(&step["p99_under_150ms_after_down_s"]),
                secs(&step["full_quality_after_up_s"])
            );
        }
    }
    out
}
