//! `loss_sweep`: what the seed `chunked` format and udphub's `framed` format deliver through
//! a lossy link. Run it with `scripts/loss_sweep.sh` (arguments pass through).
//!
//! For each loss rate (0, 1, 5 and 20% by default, the same in both directions) and each
//! protocol, on loopback: a fresh release `hub` (OS-chosen port, `RUST_LOG=warn`, saving
//! every delivered frame with `--save-dir` into a temp dir, its exit summary read back
//! with `--json-summary`), an in-process
//! [`udphub::relay`] in front of it (loss only, fixed seed: `--seed` toward the hub,
//! `--seed + 1` back, as `udp-relay` does), and `img-client --jpeg FRAME --protocol P
//! --frames N --ack-timeout-ms 200 --json-summary` aimed at the relay. FRAME is the bench's
//! 640x480 quality-90 test pattern with noise added until it is ~66 KB.
//!
//! Per case it reports:
//! - sent, acked, given up: the client's `sent`, `acked` and `lost`;
//! - delivered: the files the hub saved, every one compared byte for byte with FRAME
//!   (any that differ are "corrupt delivered", which must be 0; the run exits 1 otherwise);
//!   the hub's own `saved` count is checked to match and to have skipped nothing;
//! - resends per frame: (datagrams the relay received from the client − sent × the
//!   datagrams of one frame's first transmission) / sent. One frame is `ceil(len/1400)`
//!   datagrams in `framed`; in `chunked` a length header plus the seed loop's
//!   `len/1024 + 1` slices (the last one empty when `len` is a multiple of 1024). The seed
//!   sender never resends, so `chunked` should show 0;
//! - RTT p50/p99 in µs from the client's summary (acked frames only).
//!
//! Why some cases overlap: a `chunked` frame that loses any of its ~67 datagrams (or its
//! ack) waits out the whole 200 ms ack timeout, so at 5% loss and up nearly every frame
//! costs 200 ms and those cases would take a minute each. They send ~67 datagrams per
//! 200 ms and are otherwise idle, so the lossy `chunked` cases run at the same time, each
//! with its own hub and relay, after the others have run one at a time; `--serial` runs
//! everything one after another (well over three minutes: those three cases alone take
//! about 30 + 60 + 60 s).
//!
//! Output: a markdown table on stdout and the same as JSON in `target/bench/loss_sweep.json`
//! (or `--out`). Every child process is waited for with a deadline and killed past it.

use clap::Parser;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};
use udphub::client::stats::ImgSummary;
use udphub::hub::source::Service;
use udphub::relay::{FaultConfig, Relay};
use udphub::shutdown::Shutdown;
use udphub::wire::{framed, seed_udp};
use udphub_testkit::frames::pattern_frame;
use udphub_testkit::{HubProcess, Running, Signal};

/// Frames delivered, given up and resent by `framed` and `chunked` through a lossy relay.
#[derive(Parser, Debug)]
struct Args {
    /// Frames each client sends.
    #[arg(long, default_value_t = 300)]
    frames: u64,
    /// Loss rates to run (probabilities, comma-separated), the same in both directions.
    #[arg(long, value_delimiter = ',', default_value = "0,0.01,0.05,0.2")]
    losses: Vec<f64>,
    /// Seed of the relay's decisions toward the hub (seed + 1 for the replies).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The client's --ack-timeout-ms.
    #[arg(long, default_value_t = 200)]
    ack_timeout_ms: u64,
    /// Run every case one after another (the lossy chunked cases otherwise overlap).
    #[arg(long)]
    serial: bool,
    /// Where the JSON goes.
    #[arg(long, default_value = "target/bench/loss_sweep.json")]
    out: PathBuf,
}

const PROTOCOLS: [&str; 2] = ["framed", "chunked"];

/// Datagrams of one frame's first transmission.
fn datagrams_per_frame(protocol: &str, len: usize) -> u64 {
    match protocol {
        "framed" => framed::chunk_count(len, framed::DEFAULT_CHUNK_SIZE) as u64,
        // the length header, then the seed loop's slices
        _ => 1 + seed_udp::seed_chunks(&vec![0; len], seed_udp::CHUNK_SIZE).count() as u64,
    }
}

fn main() {
    let args = Args::parse();
    if let Err(e) = run(&args) {
        eprintln!("loss_sweep: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Result<(), String> {
    let started = Instant::now();
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let bins = exe
        .parent()
        .and_then(Path::parent)
        .ok_or("no parent dir")?
        .to_path_buf();
    let (hub, client) = (bins.join("hub"), bins.join("img-client"));
    for p in [&hub, &client] {
        if !p.is_file() {
            return Err(format!(
                "{} is missing: build with `cargo build --release --bins --examples` \
                 (scripts/loss_sweep.sh does)",
                p.display()
            ));
        }
    }
    let dir = args.out.parent().unwrap_or(Path::new(".")).to_path_buf();
    let frames_dir = dir.join("frames");
    std::fs::create_dir_all(&frames_dir).map_err(|e| format!("{}: {e}", frames_dir.display()))?;
    // Not the bench's file name: a bench running at the same time rewrites its own.
    let frame = pattern_frame(&frames_dir, "loss-sweep-", (640, 480), 90, 66_000)?.path;
    let bytes = std::fs::read(&frame).map_err(|e| format!("{}: {e}", frame.display()))?;
    eprintln!(
        "loss_sweep: frame {} ({} bytes: {} datagrams framed, {} chunked)",
        frame.display(),
        bytes.len(),
        datagrams_per_frame("framed", bytes.len()),
        datagrams_per_frame("chunked", bytes.len())
    );

    let mut cases = Vec::new();
    for &loss in &args.losses {
        if !(0.0..=1.0).contains(&loss) {
            return Err(format!("loss {loss} is not a probability"));
        }
        for protocol in PROTOCOLS {
            cases.push(Case { loss, protocol });
        }
    }
    // The lossy chunked cases mostly wait out ack timeouts: run them together at the end.
    let overlap = |c: &Case| !args.serial && c.protocol == "chunked" && c.loss > 0.0;
    let ctx = Ctx {
        hub,
        client,
        frame,
        bytes,
        args,
    };
    let mut results: Vec<Option<Value>> = vec![None; cases.len()];
    for (i, case) in cases.iter().enumerate().filter(|(_, c)| !overlap(c)) {
        eprintln!("loss_sweep: {} at {} loss ...", case.protocol, case.loss);
        results[i] = Some(run_case(&ctx, case, false));
    }
    thread::scope(|s| {
        let handles: Vec<_> = cases
            .iter()
            .enumerate()
            .filter(|(_, c)| overlap(c))
            .map(|(i, case)| {
                eprintln!(
                    "loss_sweep: {} at {} loss (overlapping) ...",
                    case.protocol, case.loss
                );
                let ctx = &ctx;
                (i, s.spawn(move || run_case(ctx, case, true)))
            })
            .collect();
        for (i, h) in handles {
            results[i] = Some(h.join().unwrap_or_else(|_| json!({"error": "panicked"})));
        }
    });
    let results: Vec<Value> = results.into_iter().flatten().collect();

    let table = table(&results);
    println!("{table}");
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{} frames per case, {}-byte frame, --ack-timeout-ms {}, relay seed {}; {secs:.0} s in all; \
         JSON: {}",
        args.frames,
        ctx.bytes.len(),
        args.ack_timeout_ms,
        args.seed,
        args.out.display()
    );
    let doc = json!({
        "frames_per_case": args.frames,
        "frame": ctx.frame.display().to_string(),
        "frame_bytes": ctx.bytes.len(),
        "ack_timeout_ms": args.ack_timeout_ms,
        "seed": args.seed,
        "serial": args.serial,
        "seconds": secs,
        "table": table,
        "cases": results,
    });
    let text = serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?;
    std::fs::write(&args.out, text + "\n").map_err(|e| format!("{}: {e}", args.out.display()))?;

    let failed = results.iter().filter(|r| !r["error"].is_null()).count();
    let corrupt: u64 = results
        .iter()
        .filter_map(|r| r["corrupt_delivered"].as_u64())
        .sum();
    match (failed, corrupt) {
        (0, 0) => Ok(()),
        (0, c) => Err(format!("{c} delivered frame(s) differ from the frame sent")),
        (f, _) => Err(format!("{f} case(s) could not be measured (see above)")),
    }
}

struct Case {
    loss: f64,
    protocol: &'static str,
}

struct Ctx<'a> {
    hub: PathBuf,
    client: PathBuf,
    frame: PathBuf,
    bytes: Vec<u8>,
    args: &'a Args,
}

/// One case as JSON; `error` is set when it could not be measured.
fn run_case(ctx: &Ctx, case: &Case, overlapped: bool) -> Value {
    let mut v = json!({
        "loss": case.loss,
        "protocol": case.protocol,
        "overlapped": overlapped,
        "datagrams_per_frame": datagrams_per_frame(case.protocol, ctx.bytes.len()),
    });
    match measure(ctx, case) {
        Ok(m) => {
            for (k, x) in m.as_object().expect("an object") {
                v[k] = x.clone();
            }
            v["error"] = Value::Null;
        }
        Err(e) => {
            eprintln!("loss_sweep: {} at {} loss: {e}", case.protocol, case.loss);
            v["error"] = json!(e);
        }
    }
    v
}

fn measure(ctx: &Ctx, case: &Case) -> Result<Value, String> {
    let save = tempfile::Builder::new()
        .prefix("loss-sweep-")
        .tempdir()
        .map_err(|e| format!("temp dir: {e}"))?;
    let save_dir = save
        .path()
        .to_str()
        .ok_or("the temp dir's path is not UTF-8")?;
    let hub = HubProcess::start(
        &ctx.hub,
        &[
            "--no-msg",
            "--no-tcp",
            "--stats-interval-ms",
            "3600000",
            "--save-dir",
            save_dir,
            "--json-summary",
        ],
        &[("RUST_LOG", Some("warn"))],
        Duration::from_secs(20),
    )?;
    let hub_img = hub
        .ports
        .img
        .ok_or("the hub did not print its image port")?;
    let faults = |seed| FaultConfig {
        loss: case.loss,
        seed,
        ..FaultConfig::default()
    };
    let stop = Shutdown::new();
    let relay = Relay::start(
        "127.0.0.1:0".parse().expect("an address"),
        hub_img,
        faults(ctx.args.seed),
        faults(ctx.args.seed.wrapping_add(1)),
        stop.clone(),
    )
    .map_err(|e| format!("relay: {e}"))?;
    let n = ctx.args.frames;
    let client_args: Vec<String> = [
        "--jpeg",
        &ctx.frame.display().to_string(),
        "--protocol",
        case.protocol,
        "--frames",
        &n.to_string(),
        "--hub",
        &relay.local_addr().to_string(),
        "--ack-timeout-ms",
        &ctx.args.ack_timeout_ms.to_string(),
        "--status-interval-ms",
        "0",
        "--json-summary",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // At worst every frame waits out its ack timeout; start-up and slack on top.
    let deadline = Instant::now()
        + Duration::from_millis(n * (ctx.args.ack_timeout_ms + 50))
        + Duration::from_secs(20);
    let client = Running::spawn(
        Command::new(&ctx.client)
            .args(&client_args)
            .env("RUST_LOG", "warn"),
        b"",
    )
    .and_then(|c| c.wait(deadline));
    stop.trigger();
    let relayed = relay.join();
    // SIGINT, then at most 10 s for it to write out its saves and exit.
    let hub = hub.stop(Signal::Int, Duration::from_secs(10))?.summary()?;
    let client = client?;
    let c: ImgSummary = serde_json::from_str(client.stdout.trim()).map_err(|_| {
        format!(
            "img-client printed no JSON summary (exit ok: {}): {}",
            client.success(),
            client.stderr.trim()
        )
    })?;

    // Delivered: every file the hub saved, each compared with the frame sent.
    let (mut delivered, mut corrupt) = (0u64, 0u64);
    let entries = std::fs::read_dir(save.path()).map_err(|e| format!("save dir: {e}"))?;
    for entry in entries {
        let path = entry.map_err(|e| format!("save dir: {e}"))?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with('.') || !name.ends_with(".jpg") {
            continue;
        }
        delivered += 1;
        let got = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        if got != ctx.bytes {
            corrupt += 1;
        }
    }
    // The hub's own count must agree, with nothing skipped or failed on the way to disk.
    let saved = hub.saved.ok_or("the hub's summary has no saver counts")?;
    if saved.saved != delivered || saved.skipped != 0 || saved.failed != 0 {
        return Err(format!(
            "the hub saved {} frames ({} skipped, {} failed) but {delivered} files are in its \
             --save-dir:\n{}",
            saved.saved,
            saved.skipped,
            saved.failed,
            hub.text()
        ));
    }
    let img = &hub
        .service(Service::Img)
        .ok_or("the hub's summary has no image service")?
        .total;

    let sent = c.sent;
    let per_frame = datagrams_per_frame(case.protocol, ctx.bytes.len());
    let from_client = relayed.to_upstream.received;
    let resends =
        (sent > 0).then(|| (from_client as f64 - (sent * per_frame) as f64) / sent as f64);
    Ok(json!({
        "sent": sent,
        "acked": c.acked,
        "given_up": c.lost,
        "delivered": delivered,
        "corrupt_delivered": corrupt,
        "resends_per_frame": resends,
        "rtt_p50_us": c.rtt.p50_us,
        "rtt_p99_us": c.rtt.p99_us,
        "client_elapsed_s": c.elapsed_s,
        "client_late_acks": c.late_acks,
        "relay_from_client": from_client,
        "relay": {
            "to_hub": relay_json(&relayed.to_upstream),
            "to_client": relay_json(&relayed.to_client),
        },
        "hub_img": {
            "frames": img.items,
            "corrupt": img.corrupt,
            "dropped": img.dropped,
            "rejected": img.rejected,
        },
    }))
}

fn relay_json(d: &udphub::relay::DirectionStats) -> Value {
    json!({
        "received": d.received,
        "forwarded": d.forwarded,
        "dropped": d.dropped,
        "errors": d.errors,
    })
}

fn table(results: &[Value]) -> String {
    let num = |v: &Value, digits: usize| match v.as_f64() {
        Some(x) => format!("{x:.digits$}"),
        None => "-".into(),
    };
    let mut out = String::from(
        "| loss | protocol | sent | delivered | acked | given up | corrupt delivered | \
         resends/frame | RTT p50 µs | RTT p99 µs |\n\
         |---:|---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in results {
        let loss = (r["loss"].as_f64().unwrap_or(0.0) * 1e4).round() / 1e2;
        let mut cells = vec![
            format!("{loss}%"),
            r["protocol"].as_str().unwrap_or("?").into(),
        ];
        if let Some(e) = r["error"].as_str() {
            cells.push(format!("error: {}", e.lines().next().unwrap_or("")));
        } else {
            for (key, digits) in [
                ("sent", 0),
                ("delivered", 0),
                ("acked", 0),
                ("given_up", 0),
                ("corrupt_delivered", 0),
                ("resends_per_frame", 2),
                ("rtt_p50_us", 0),
                ("rtt_p99_us", 0),
            ] {
                cells.push(num(&r[key], digits));
            }
        }
        out.push_str(&format!("| {} |\n", cells.join(" | ")));
    }
    out
}
