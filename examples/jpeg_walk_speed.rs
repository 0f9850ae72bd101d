//! `jpeg_walk_speed`: how long `udphub::jpegcheck::validate` (the entropy walk the hub
//! runs on every chunked seed frame before acking it) takes per frame, in release mode.
//!
//! Why: the walk adds straight to the per-frame latency of the stop-and-wait seed protocol,
//! so its speed is measured on the frames `scripts/bench.sh` sends (encoded here the same
//! way as in `examples/bench.rs`), plus the plain 640x480 test pattern:
//! `cargo run --release --example jpeg_walk_speed`, or with JPEG files as arguments.
//! Each frame is validated alone many times, each run timed on its own, interleaved with
//! the same number of runs of libjpeg-turbo's entropy decode of the same bytes
//! (`jpeg_read_coefficients`: Huffman decoding only, no IDCT; `udphub_testkit::libjpeg`);
//! the minimum and the median (robust to other processes taking the CPU on a shared
//! machine) of each are printed in µs per frame, with the ratio of the minimums
//! (walk / libjpeg: below 1 the walk is the cheaper). `--save DIR` writes the frames, so that a profiler
//! (`valgrind --tool=callgrind --toggle-collect='*validate*'`) can be run on the files
//! with `--runs 1` without counting the encoding; `--walk-only` runs only the walk
//! (`--runs` times, once by default) and `--only NAME` only the frames whose name has NAME.
//!
//! A second table times the walk as a seed chunked frame's datagrams come
//! ([`IncrementalCheck`], fed the frame 1024 bytes at a time as the hub is): what it costs
//! in all while the datagrams come, and what is left to do when the last one arrives (the
//! part that delays the ack), beside the whole walk.

use clap::Parser;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use udphub::jpegcheck::{validate, IncrementalCheck};
use udphub::media::testjpeg::{noise_jpeg, noisy_pattern_jpeg};
use udphub::media::{jpeg, FrameSource, PatternSource};

#[derive(Parser, Debug)]
struct Args {
    /// JPEG files to measure instead of the built-in frames.
    files: Vec<PathBuf>,
    /// Runs per frame (default: about 100 MB of JPEG per frame, 25..=2000 runs).
    #[arg(long)]
    runs: Option<usize>,
    /// Write the built-in frames into this directory.
    #[arg(long)]
    save: Option<PathBuf>,
    /// Measure only the frames whose name contains this (e.g. `noise-q100-1m`).
    #[arg(long)]
    only: Option<String>,
    /// Run only the walk (no libjpeg-turbo, no incremental table): for a profiler, e.g.
    /// `valgrind --tool=callgrind --toggle-collect='*validate*'` with `--runs 1`.
    #[arg(long)]
    walk_only: bool,
}

fn main() -> Result<(), String> {
    let args = Args::parse();
    let frames: Vec<(String, Vec<u8>)> = if args.files.is_empty() {
        builtin_frames()?
    } else {
        args.files
            .iter()
            .map(|p| {
                let bytes = std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()))?;
                Ok((p.display().to_string(), bytes))
            })
            .collect::<Result<_, String>>()?
    };
    let frames: Vec<_> = frames
        .into_iter()
        .filter(|(name, _)| {
            args.only
                .as_ref()
                .is_none_or(|only| name.contains(only.as_str()))
        })
        .collect();
    if let Some(dir) = &args.save {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        for (name, bytes) in &frames {
            let path = dir.join(format!("{name}.jpg"));
            std::fs::write(&path, bytes).map_err(|e| format!("{}: {e}", path.display()))?;
        }
    }
    println!(
        "{:<28} {:>8}  {:>21}  {:>21}  {:>6}  runs",
        "frame", "bytes", "walk µs min/median", "libjpeg µs min/median", "ratio"
    );
    let mut incremental_rows = Vec::new();
    for (name, bytes) in &frames {
        validate(bytes).map_err(|e| format!("{name}: {e}"))?;
        if args.walk_only {
            let runs = args.runs.unwrap_or(1);
            for _ in 0..runs {
                std::hint::black_box(validate(std::hint::black_box(bytes)).ok());
            }
            println!("{name:<28} {:>8}  walked {runs} times", bytes.len());
            continue;
        }
        udphub_testkit::libjpeg::read_coefficients(bytes).map_err(|e| format!("{name}: {e}"))?;
        let runs = args
            .runs
            .unwrap_or((100_000_000 / bytes.len().max(1)).clamp(25, 2000));
        // Interleaved, so that whatever else the machine does falls on both alike.
        let mut walk = Vec::with_capacity(runs);
        let mut libjpeg = Vec::with_capacity(runs);
        for _ in 0..runs {
            walk.push(time(|| {
                std::hint::black_box(validate(std::hint::black_box(bytes)).ok());
            }));
            libjpeg.push(time(|| {
                std::hint::black_box(
                    udphub_testkit::libjpeg::read_coefficients(std::hint::black_box(bytes)).ok(),
                );
            }));
        }
        // The walk as 1024-byte datagrams come: ahead (all but the last), then the rest.
        let (mut ahead, mut last) = (Vec::with_capacity(runs), Vec::with_capacity(runs));
        for _ in 0..runs {
            let mut check = IncrementalCheck::new();
            ahead.push(time(|| {
                let mut n = 0;
                while n + 1024 < bytes.len() {
                    n += 1024;
                    check.advance(std::hint::black_box(&bytes[..n]));
                }
            }));
            last.push(time(|| {
                std::hint::black_box(check.finish(std::hint::black_box(bytes)).ok());
            }));
        }
        incremental_rows.push((
            name.clone(),
            bytes.len(),
            min_median(&mut ahead).0,
            min_median(&mut last).0,
        ));
        let (walk_min, walk_median) = min_median(&mut walk);
        let (lib_min, lib_median) = min_median(&mut libjpeg);
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        println!(
            "{name:<28} {:>8}  {:>10.1} {:>10.1}  {:>10.1} {:>10.1}  {:>6.2}  {runs}  ({:.0} MB/s walk)",
            bytes.len(),
            us(walk_min),
            us(walk_median),
            us(lib_min),
            us(lib_median),
            walk_min.as_secs_f64() / lib_min.as_secs_f64(),
            bytes.len() as f64 / walk_min.as_secs_f64() / 1e6,
        );
        incremental_rows.last_mut().expect("pushed").0 = format!("{name}|{:.1}", us(walk_min));
    }
    println!(
        "\nas 1024-byte datagrams come (IncrementalCheck, minimum µs per frame):\n{:<28} {:>8}  {:>10}  {:>14}  {:>16}  {:>10}",
        "frame", "bytes", "whole walk", "while coming", "at the last one", "in all"
    );
    for (tagged, len, ahead, last) in incremental_rows {
        let (name, whole) = tagged.split_once('|').expect("tagged");
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        println!(
            "{name:<28} {len:>8}  {whole:>10}  {:>14.1}  {:>16.1}  {:>10.1}",
            us(ahead),
            us(last),
            us(ahead) + us(last)
        );
    }
    Ok(())
}

/// How long `f` takes once.
fn time(f: impl FnOnce()) -> Duration {
    let t = Instant::now();
    f();
    t.elapsed()
}

/// The minimum and the median of `times`.
fn min_median(times: &mut [Duration]) -> (Duration, Duration) {
    times.sort();
    (times[0], times[times.len() / 2])
}

/// The frames of `scripts/bench.sh` (as `examples/bench.rs` encodes them) and the plain
/// 640x480 pattern.
fn builtin_frames() -> Result<Vec<(String, Vec<u8>)>, String> {
    let plain = PatternSource::new(640, 480)
        .next_frame()
        .map_err(|e| e.to_string())?
        .ok_or("the pattern ended")?;
    Ok(vec![
        (
            "pattern-640x480-q90".to_string(),
            jpeg::encode(&plain, 90).map_err(|e| e.to_string())?,
        ),
        (
            "pattern-640x480-q90-noise".to_string(),
            noisy_pattern_jpeg(640, 480, 90, 66_000).map_err(|e| e.to_string())?,
        ),
        (
            "pattern-1280x960-q95-noise".to_string(),
            noisy_pattern_jpeg(1280, 960, 95, 150_000).map_err(|e| e.to_string())?,
        ),
        ("noise-q100-1m".to_string(), noise(1_000_000)?),
        ("noise-q100-4m".to_string(), noise(4_000_000)?),
    ])
}

/// [`noise_jpeg`]'s bytes.
fn noise(target: usize) -> Result<Vec<u8>, String> {
    Ok(noise_jpeg(target).map_err(|e| e.to_string())?.0)
}
