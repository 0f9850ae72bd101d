//! `img-client`: the camera side (e.g. a Raspberry Pi). Captures frames from a camera, a
//! video file, images or a test pattern and encodes them as JPEG, or reads ready JPEG
//! frames from an MJPEG stream (`--mjpeg -`, e.g. piped from `rpicam-vid`; this source needs
//! no OpenCV), and streams them to the hub, waiting (bounded) for each ack.
//!
//! This file only maps flags onto [`udphub::client::img::ImgClientConfig`] and prints the
//! result; the work is in [`udphub::client::img`].

use clap::{ArgGroup, Parser};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use udphub::client::cli_args::{parse_name, KeyArgs};
use udphub::client::img::{self, AdaptOptions, ImgClientConfig, SourceSpec};
use udphub::client::img_sender::{Protocol, SenderOptions};
use udphub::client::stats::{json_line, ImgSummary};
use udphub::client::{resolve_hub, ClientError};
use udphub::proto::adapt::WindowMode;
use udphub::shutdown::Shutdown;
use udphub::wire::name::SourceName;
use udphub::wire::seed_udp::HeaderWidth;

/// Stream camera frames (or a video, images, a test pattern) to the hub as JPEG.
///
/// Prints a status line every second on stderr and a summary on stdout when it ends (after
/// --frames frames, at the end of a --video, or on Ctrl-C). Exits non-zero when no frame at
/// all was acked (--protocol tcp, which has no ack: written). Logging: RUST_LOG (info by
/// default).
#[derive(Parser, Debug)]
#[command(version, about, long_about)]
#[command(group(ArgGroup::new("source").args(["camera", "video", "image", "pattern", "jpeg", "mjpeg"])))]
struct Args {
    /// Capture from camera N. This is the default source (camera 0); a camera that cannot
    /// be opened is an error (try --pattern or --video).
    #[arg(long, value_name = "N")]
    camera: Option<i32>,
    /// Send every frame of this video file once, then stop.
    #[arg(long, value_name = "FILE")]
    video: Option<PathBuf>,
    /// Send this image, or every image (jpg/jpeg/png/bmp) of this folder, looped.
    #[arg(long, value_name = "PATH")]
    image: Option<PathBuf>,
    /// Send a synthetic test pattern (frame number and clock drawn in); needs no camera.
    #[arg(long)]
    pattern: bool,
    /// --pattern: add fresh uniform noise of this amplitude (0-255) to every frame, as a
    /// camera sensor would, so the JPEG's size depends on quality and size as a camera's
    /// does. 18 makes the 640x480 pattern about 67 kB a frame at quality 90 (the issue-13
    /// benchmark scene); 0, the default, is the plain pattern (about 22 kB).
    #[arg(
        long,
        default_value_t = 0,
        value_name = "AMPLITUDE",
        requires = "pattern"
    )]
    noise: u8,
    /// Send this JPEG file's bytes as they are (no decode, no re-encode), every frame the
    /// same, looped; --width/--height/--quality do not apply. For measuring the network
    /// path without the encoder.
    #[arg(long, value_name = "FILE", conflicts_with = "show")]
    jpeg: Option<PathBuf>,
    /// Send the JPEG frames of this MJPEG stream (concatenated JPEGs, as `rpicam-vid --codec
    /// mjpeg -o -` or `ffmpeg -f mjpeg -` write them) as they arrive, without decoding; "-"
    /// reads stdin. Bytes between frames are skipped and a cut-short frame is dropped, both
    /// counted in the summary. Stops at the end of the stream. Needs no OpenCV.
    #[arg(long, value_name = "PATH|-", conflicts_with_all = ["show", "fps"])]
    mjpeg: Option<PathBuf>,
    /// Width every frame is resized to before encoding.
    #[arg(long, default_value_t = 640, value_parser = clap::value_parser!(i32).range(1..))]
    width: i32,
    /// Height every frame is resized to before encoding.
    #[arg(long, default_value_t = 480, value_parser = clap::value_parser!(i32).range(1..))]
    height: i32,
    /// JPEG quality, 0 (smallest) to 100 (best).
    #[arg(long, default_value_t = 90, value_parser = clap::value_parser!(i32).range(0..=100))]
    quality: i32,
    /// Send at most this many frames per second (default: as fast as acks allow).
    #[arg(long, value_name = "FPS")]
    fps: Option<f64>,
    /// Stop after sending N frames.
    #[arg(long, value_name = "N")]
    frames: Option<u64>,
    /// The hub's address. For --protocol tcp give the hub's TCP port (its --tcp-port).
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:9999")]
    hub: String,
    /// Wire format: framed (udphub's own: survives loss, resends only missing chunks),
    /// chunked (the seed's, for a seed server), single (one datagram per frame), tcp.
    #[arg(long, value_enum, default_value_t = Protocol::Framed)]
    protocol: Protocol,
    /// framed: payload bytes per datagram (1400 fits a 1500-byte Ethernet/Wi-Fi MTU; up to
    /// 65000 on loopback).
    #[arg(long, default_value_t = 1400, value_name = "BYTES",
          value_parser = clap::value_parser!(u32).range(1..=65_000))]
    chunk_size: u32,
    /// framed: frames in flight at most: auto (the default) chooses it from the link, about
    /// its bandwidth-delay product over the frame size (the expected time from send to ack
    /// times the frame rate), 1 to 8, starting at 1; N (1-64) fixes it (1 = wait for each
    /// ack, as the seed does).
    #[arg(long, default_value = "auto", value_name = "N|auto", value_parser = parse_window)]
    window: WindowMode,
    /// framed: forward error correction, Reed-Solomon parity chunks after each frame's
    /// data chunks so the hub rebuilds lost ones without a round trip: auto (the default)
    /// sends none while the hub reports no loss, and enough for the loss it reports
    /// (about mean + 2 deviations + 1); N (0-100) fixes it at N parity chunks per 100 data
    /// chunks (rounded up); off (or 0) sends none.
    #[arg(long, default_value = "auto", value_name = "auto|off|N")]
    fec: udphub::proto::fec::FecMode,
    /// Adapt to the link: on (the default) chooses JPEG quality first (from --quality down
    /// to 30 in steps of 10), then size (3/4, then 1/2 of --width/--height), then, for a
    /// live source (camera, pattern), the frame rate (captures skipped, latest frame wins),
    /// from the delivery rate and the queueing delay the acks show, to keep latency under
    /// --max-latency-ms and the stream within what the link carries; it climbs back when
    /// the link frees up. A video or images adapt quality and size and are still sent frame
    /// for frame. --jpeg/--mjpeg bytes are sent as they are and --protocol tcp has no ack:
    /// nothing to adapt there. off: every frame at --quality, --width x --height.
    #[arg(long, default_value = "on", value_name = "on|off", value_parser = parse_on_off,
          action = clap::ArgAction::Set)]
    adapt: bool,
    /// --adapt on: the latency (capture to ack) to keep under. Without --fps the
    /// controller plans for 30 frames a second.
    #[arg(long, default_value_t = 100, value_name = "MS",
          value_parser = clap::value_parser!(u64).range(1..))]
    max_latency_ms: u64,
    /// Longest wait for a frame's ack (udp), or for a stalled write (tcp); a frame without
    /// an ack by then counts as lost and the next one is sent.
    #[arg(long, default_value_t = 1000, value_name = "MS")]
    ack_timeout_ms: u64,
    /// tcp: longest a connection attempt may take (failed attempts are retried with a
    /// backoff doubling from 0.1 s to 5 s).
    #[arg(long, default_value_t = 2000, value_name = "MS")]
    connect_timeout_ms: u64,
    /// tcp: the socket's send buffer in bytes (Linux doubles it), which bounds what the
    /// kernel queues, sent-but-unacked bytes included, so a slow link never holds seconds of
    /// video: frames made while one is being written replace each other (skipped). 0: the
    /// kernel's autotuning (up to megabytes: a blocking `sendall`'s backlog).
    #[arg(long, default_value_t = udphub::client::img_sender::seed_tcp::DEFAULT_SEND_BUFFER, value_name = "BYTES")]
    tcp_send_buffer: usize,
    /// chunked: size of the length header: 8 (Python's struct 'l' on 64-bit Linux/macOS,
    /// the default) or 4 (on Windows).
    #[arg(long, default_value_t = 8, value_name = "4|8", value_parser = parse_header_bytes)]
    header_bytes: usize,
    /// framed: the name the hub shows this camera as (in /state, /metrics, the page, saved
    /// file names, the stats and the summary): 1-64 characters of A-Z a-z 0-9 . _ -
    /// (default: this machine's host name). The seed formats carry no name.
    #[arg(long, value_name = "NAME", value_parser = parse_name)]
    name: Option<SourceName>,
    #[command(flatten)]
    keys: KeyArgs,
    /// Preview the frames in a local window (only when a display is available).
    #[arg(long)]
    show: bool,
    /// How often the status line is printed on stderr; 0 turns it off.
    #[arg(long, default_value_t = 1000, value_name = "MS")]
    status_interval_ms: u64,
    /// Print the summary as one JSON object on stdout (for scripts, e.g. the benchmark)
    /// instead of the text; times in microseconds, `null` where there is no value.
    #[arg(long)]
    json_summary: bool,
}

fn parse_window(s: &str) -> Result<WindowMode, String> {
    if s == "auto" {
        return Ok(WindowMode::Auto);
    }
    match s.parse::<usize>() {
        Ok(n @ 1..=64) => Ok(WindowMode::Fixed(n)),
        _ => Err("must be auto or a number of frames from 1 to 64".into()),
    }
}

fn parse_on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err("must be on or off".into()),
    }
}

fn parse_header_bytes(s: &str) -> Result<usize, String> {
    match s {
        "4" => Ok(4),
        "8" => Ok(8),
        _ => Err("must be 4 or 8".into()),
    }
}

impl Args {
    fn config(&self) -> Result<ImgClientConfig, ClientError> {
        let source = if let Some(path) = &self.mjpeg {
            SourceSpec::Mjpeg(path.clone())
        } else if let Some(path) = &self.jpeg {
            SourceSpec::Jpeg(path.clone())
        } else if let Some(path) = &self.video {
            SourceSpec::Video(path.clone())
        } else if let Some(path) = &self.image {
            SourceSpec::Image(path.clone())
        } else if self.pattern {
            SourceSpec::Pattern
        } else {
            SourceSpec::Camera(self.camera.unwrap_or(0))
        };
        Ok(ImgClientConfig {
            source,
            width: self.width,
            height: self.height,
            quality: self.quality,
            noise: self.noise,
            fps: self.fps,
            frames: self.frames,
            hub: resolve_hub(&self.hub)?,
            protocol: self.protocol,
            sender: SenderOptions {
                ack_timeout: Duration::from_millis(self.ack_timeout_ms),
                connect_timeout: Duration::from_millis(self.connect_timeout_ms.max(1)),
                tcp_send_buffer: (self.tcp_send_buffer > 0).then_some(self.tcp_send_buffer),
                header_width: if self.header_bytes == 4 {
                    HeaderWidth::Four
                } else {
                    HeaderWidth::Eight
                },
                chunk_size: self.chunk_size as usize,
                window: match self.window {
                    WindowMode::Fixed(n) => n,
                    WindowMode::Auto => 1,
                },
                name: Some(self.name.clone().unwrap_or_else(SourceName::of_this_host)),
                keys: self
                    .keys
                    .device_keys(self.protocol == Protocol::Framed, "img-client")?,
                fec: self.fec,
            },
            show: self.show,
            status_interval: (self.status_interval_ms > 0)
                .then(|| Duration::from_millis(self.status_interval_ms)),
            adapt: AdaptOptions {
                adapt: self.adapt,
                max_latency: Duration::from_millis(self.max_latency_ms),
                window: self.window,
            },
        })
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let config = match args.config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("img-client: {e}");
            return ExitCode::from(2);
        }
    };
    let shutdown = Shutdown::new();
    if let Err(e) = shutdown.install_signal_handler() {
        eprintln!("img-client: cannot install the Ctrl-C handler: {e}");
        return ExitCode::from(2);
    }
    let report = match img::run(&config, &shutdown) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("img-client: {e}");
            return ExitCode::from(2);
        }
    };
    if args.json_summary {
        let error = report.error.as_ref().map(ToString::to_string);
        println!(
            "{}",
            json_line(&ImgSummary::of(&report.stats, report.elapsed, error))
        );
    } else {
        print!("{}", report.summary);
    }
    if let Some(e) = &report.error {
        eprintln!("img-client: error: {e}");
    }
    if report.success() {
        return ExitCode::SUCCESS;
    }
    if report.stats.counts.acked + report.stats.counts.written == 0 {
        let word = if config.protocol.has_ack() {
            "acked"
        } else {
            "written"
        };
        eprintln!(
            "img-client: no frame was {word}: is the hub running at {}? (for --protocol tcp, \
             --hub must name its TCP port)",
            config.hub
        );
    }
    ExitCode::FAILURE
}
