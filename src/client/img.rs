//! The camera client's run: capture, resize and encode on one thread, send on another,
//! status lines every second, and the summary at the end.
//!
//! The two threads overlap (frame N+1 is encoded while frame N is on the network) and meet
//! at a one-slot [`Handoff`]: live sources (camera, pattern) hand over "latest frame wins",
//! so a slow network never makes the picture lag (replaced frames are counted as skipped);
//! file sources (video, images, a JPEG file) use backpressure, so a video is sent frame for
//! frame. A `--jpeg` file is neither decoded nor re-encoded: its bytes are read once and the
//! same buffer (shared, not copied) is sent for every frame; without `--fps` no capture
//! thread runs at all (waking one per frame would be all it did). So what is measured with
//! it is the network path alone (the benchmark, `examples/bench.rs`, relies on that).
//!
//! An `--mjpeg` stream (stdin, a file or a FIFO: what `rpicam-vid --codec mjpeg -o -`
//! writes) is split into frames by [`super::mjpeg`] on the capture thread and each frame's
//! bytes are sent unchanged; from stdin or a FIFO it is a live source (latest frame wins:
//! the pipe is always drained, so the camera never stalls and the picture never lags),
//! from a regular file every frame is sent. Without the `opencv` feature only `--jpeg` and
//! `--mjpeg` exist: the other sources are an error that says so.
//!
//! Adaptation ([`crate::proto::adapt`], `--adapt on`, the default): the send thread feeds
//! every frame's ack (or give-up) to a shared [`Controller`] and sets the framed sender's
//! window from it (`--window auto`); the capture thread encodes each frame at the
//! controller's quality and size and, for a live source, skips captures to honour its
//! frame rate (latest wins: never a queue at the sender). A video or images adapt quality
//! and size but are still sent frame for frame; `--jpeg`/`--mjpeg` bytes cannot be
//! re-encoded and the tcp stream has no ack, so neither adapts (the window still can).
//!
//! The run ends when `--frames` frames were sent, when a video ends, on a fatal error, or
//! when the caller's [`Shutdown`] is triggered (Ctrl-C). A frame whose ack is being waited
//! for at that moment gets at most two more poll slices ([`super::udp_link::STOP_POLL`]: one
//! in its send, one in the flush of a framed window) for it, and counts as lost (stopped) if
//! none comes, so every sent frame is counted as acked (tcp: written) or lost. The caller's flag is never
//! triggered from here: the run has its own stop flag, which the caller's flag (and the end
//! of sending, and ESC in the preview) sets.

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use super::error::{ClientError, ImgConfigError};
use super::handoff::{Handoff, Mode, Take};
use super::img_sender::{
    open_sender, CapturedFrame, FrameOutcome, ImgSender, LostReason, Protocol, SenderOptions,
};
use super::mjpeg::{MjpegReader, SplitCounts, DEFAULT_MAX_FRAME_BYTES};
use super::stats::{
    img_status_line, img_summary, spawn_status_printer, ImgStats, RateMeter, SharedImgStats,
};
use crate::hub::net::LogLimiter;
use crate::jpegcheck::is_complete_jpeg;
#[cfg(feature = "opencv")]
use crate::media::{self, jpeg, FrameSource};
use crate::proto::adapt::{self, AdaptConfig, Controller, WindowMode};
use crate::proto::framed_sender::GiveUp;
use crate::shutdown::{Shutdown, POLL_INTERVAL};

/// Where frames come from.
#[derive(Clone, Debug, PartialEq)]
pub enum SourceSpec {
    /// A camera by index.
    Camera(i32),
    /// A video file, sent once from start to end.
    Video(PathBuf),
    /// An image file or a folder of images, looped.
    Image(PathBuf),
    /// The synthetic test pattern.
    Pattern,
    /// A JPEG file sent as it is (no decode, no re-encode), the same bytes every frame.
    Jpeg(PathBuf),
    /// A concatenated MJPEG stream (`-`: stdin, or a file or FIFO path), each frame's bytes
    /// sent as they are.
    Mjpeg(PathBuf),
}

impl SourceSpec {
    /// Live sources produce frames in real time whether or not they are sent.
    /// So are MJPEG streams from stdin or a FIFO (a camera writing into a pipe); an MJPEG
    /// regular file is sent frame for frame.
    pub fn is_live(&self) -> bool {
        match self {
            SourceSpec::Camera(_) | SourceSpec::Pattern => true,
            SourceSpec::Mjpeg(path) => {
                is_stdin(path) || !std::fs::metadata(path).is_ok_and(|m| m.is_file())
            }
            _ => false,
        }
    }

    /// What the source is called in an error of a build without OpenCV.
    #[cfg(not(feature = "opencv"))]
    fn needs_opencv(&self) -> Option<&'static str> {
        match self {
            SourceSpec::Camera(_) => Some("a camera (the default source)"),
            SourceSpec::Video(_) => Some("--video"),
            SourceSpec::Image(_) => Some("--image"),
            SourceSpec::Pattern => Some("--pattern"),
            SourceSpec::Jpeg(_) | SourceSpec::Mjpeg(_) => None,
        }
    }

    /// Open the source; a camera that cannot be opened is an error that suggests
    /// `--pattern` and `--video` (never a silent switch to fake frames). A
    /// [`SourceSpec::Jpeg`] or [`SourceSpec::Mjpeg`] yields no pixels (it is sent as it
    /// is): use [`read_jpeg`] or [`open_mjpeg`]. `noise`: the amplitude of the noise added
    /// to every frame of the test pattern ([`media::PatternSource::with_noise`]); other
    /// sources ignore it.
    #[cfg(feature = "opencv")]
    pub fn open(&self, width: i32, height: i32, noise: u8) -> media::Result<Box<dyn FrameSource>> {
        Ok(match self {
            SourceSpec::Jpeg(path) | SourceSpec::Mjpeg(path) => {
                return Err(media::MediaError::InvalidInput(format!(
                    "{} is sent as it is, not decoded into frames",
                    path.display()
                )))
            }
            SourceSpec::Camera(index) => {
                Box::new(media::CameraSource::open(*index, width, height)?)
            }
            SourceSpec::Video(path) => Box::new(media::VideoFileSource::open(path)?),
            SourceSpec::Image(path) => Box::new(media::ImageSource::open(path)?),
            SourceSpec::Pattern => {
                Box::new(media::PatternSource::new(width, height).with_noise(noise))
            }
        })
    }
}

/// Everything `img-client` can be told.
#[derive(Clone, Debug)]
pub struct ImgClientConfig {
    pub source: SourceSpec,
    /// Every frame is resized to exactly this size before encoding.
    pub width: i32,
    pub height: i32,
    /// JPEG quality, 0..=100.
    pub quality: i32,
    /// `--pattern`: amplitude of the fresh noise added to every frame (0: the plain pattern).
    pub noise: u8,
    /// At most this many frames per second (`None`: as fast as acks allow).
    pub fps: Option<f64>,
    /// Stop after sending this many frames.
    pub frames: Option<u64>,
    pub hub: SocketAddr,
    pub protocol: Protocol,
    pub sender: SenderOptions,
    /// Preview the frames in a window (when a display is available).
    pub show: bool,
    /// How often to print a status line on stderr (`None`: never).
    pub status_interval: Option<Duration>,
    /// `--adapt`, `--max-latency-ms`, `--window`.
    pub adapt: AdaptOptions,
}

/// How `img-client` adapts to the link ([`crate::proto::adapt`]).
#[derive(Clone, Debug)]
pub struct AdaptOptions {
    /// `--adapt on`: the controller chooses quality, size and (live sources) frame rate.
    /// Applies to re-encoded sources (camera, pattern, images, video) over the protocols
    /// with an ack; `--jpeg`/`--mjpeg` bytes and the tcp stream are sent as they are.
    pub adapt: bool,
    /// The latency (capture to ack) the controller keeps under.
    pub max_latency: Duration,
    /// framed: `--window auto` (chosen from the round trip) or fixed
    /// ([`SenderOptions::window`] is ignored when auto).
    pub window: WindowMode,
}

impl Default for AdaptOptions {
    fn default() -> Self {
        AdaptOptions {
            adapt: true,
            max_latency: Duration::from_millis(100),
            window: WindowMode::Auto,
        }
    }
}

/// The frame rate the controller plans for when no `--fps` is given (a camera's).
pub const DEFAULT_ADAPT_FPS: f64 = 30.0;

type SharedController = Arc<Mutex<Controller>>;

/// What a run did.
#[derive(Debug)]
pub struct ImgReport {
    /// The summary text (for stdout).
    pub summary: String,
    pub stats: ImgStats,
    /// How long the run took (from the first frame on), the time the rates are over.
    pub elapsed: Duration,
    /// The error that ended the run early, if any.
    pub error: Option<ClientError>,
}

impl ImgReport {
    /// A run succeeds when nothing failed and at least one frame was acked (over the seed
    /// TCP stream, which has no ack: written).
    pub fn success(&self) -> bool {
        self.error.is_none() && self.stats.counts.acked + self.stats.counts.written > 0
    }
}

impl ImgClientConfig {
    pub fn validate(&self) -> Result<(), ImgConfigError> {
        if self.width <= 0 || self.height <= 0 {
            return Err(ImgConfigError::Size {
                width: self.width,
                height: self.height,
            });
        }
        if !(0..=100).contains(&self.quality) {
            return Err(ImgConfigError::Quality(self.quality));
        }
        if let Some(fps) = self.fps {
            if !(fps.is_finite() && fps > 0.0) {
                return Err(ImgConfigError::Fps(fps));
            }
        }
        if self.sender.ack_timeout.is_zero() {
            return Err(ImgConfigError::AckTimeout);
        }
        if self.adapt.max_latency.is_zero() {
            return Err(ImgConfigError::MaxLatency);
        }
        if self.show && matches!(self.source, SourceSpec::Jpeg(_)) {
            return Err(ImgConfigError::ShowJpeg);
        }
        if matches!(self.source, SourceSpec::Mjpeg(_)) {
            if self.show {
                return Err(ImgConfigError::ShowMjpeg);
            }
            if self.fps.is_some() {
                return Err(ImgConfigError::FpsMjpeg);
            }
        }
        Ok(())
    }
}

/// Read a `--jpeg` file: it must be a complete JPEG (`FF D8` … `FF D9`, the hub's rule),
/// or the hub would refuse every frame.
pub fn read_jpeg(path: &Path) -> Result<Vec<u8>, ClientError> {
    let bytes = std::fs::read(path).map_err(|source| ClientError::ReadJpeg {
        path: path.to_owned(),
        source,
    })?;
    if !is_complete_jpeg(&bytes) {
        return Err(ClientError::NotJpeg {
            path: path.to_owned(),
        });
    }
    Ok(bytes)
}

/// Whether an `--mjpeg` path names stdin (`-`).
fn is_stdin(path: &Path) -> bool {
    path.as_os_str() == "-"
}

/// An `--mjpeg` stream: `-` is stdin. Reads wake at least every [`POLL_INTERVAL`] to look
/// at `stop` (on Unix), so a camera pipe that goes quiet never keeps a run from ending.
pub fn open_mjpeg(path: &Path, stop: &Shutdown) -> Result<MjpegReader<MjpegInput>, ClientError> {
    let input: Box<dyn ReadFd> = if is_stdin(path) {
        Box::new(std::io::stdin())
    } else {
        Box::new(
            std::fs::File::open(path).map_err(|source| ClientError::ReadMjpeg {
                path: path.to_owned(),
                source,
            })?,
        )
    };
    Ok(MjpegReader::new(
        MjpegInput {
            input,
            stop: stop.clone(),
        },
        DEFAULT_MAX_FRAME_BYTES,
    ))
}

/// A readable byte stream with a file descriptor to wait on.
#[cfg(unix)]
pub trait ReadFd: Read + std::os::fd::AsRawFd + Send {}
#[cfg(unix)]
impl<T: Read + std::os::fd::AsRawFd + Send> ReadFd for T {}
/// A readable byte stream.
#[cfg(not(unix))]
pub trait ReadFd: Read + Send {}
#[cfg(not(unix))]
impl<T: Read + Send> ReadFd for T {}

/// The bytes of an `--mjpeg` stream, read so that a set `stop` ends a read that is
/// waiting (an [`std::io::ErrorKind::Interrupted`]-free error of kind `Other`, "stopped").
pub struct MjpegInput {
    input: Box<dyn ReadFd>,
    stop: Shutdown,
}

impl Read for MjpegInput {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        #[cfg(unix)]
        loop {
            if self.stop.is_triggered() {
                return Err(std::io::Error::other("stopped"));
            }
            let mut fd = libc::pollfd {
                fd: self.input.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let wait_ms = POLL_INTERVAL.as_millis().clamp(1, 1000) as libc::c_int;
            // SAFETY: one valid pollfd for the duration of the call.
            let ready = unsafe { libc::poll(&mut fd, 1, wait_ms) };
            if ready > 0 {
                break;
            }
            if ready < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
        self.input.read(buf)
    }
}

/// Where the capture thread's JPEG frames come from.
enum Producer {
    /// Frames read from a source, resized and encoded.
    #[cfg(feature = "opencv")]
    Encode(Box<dyn FrameSource>),
    /// The same JPEG bytes every frame (`--jpeg`), shared rather than copied.
    Fixed(Arc<Vec<u8>>),
    /// Frames split from an `--mjpeg` stream, sent as they are.
    Mjpeg(Box<MjpegReader<MjpegInput>>),
}

/// The stats or the controller, also after a thread panicked holding it.
fn lock<T>(shared: &Mutex<T>) -> MutexGuard<'_, T> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

/// Run the camera client until it is done or `shutdown` is triggered. Errors before the
/// first frame (bad settings, a source or socket that cannot be opened) are returned as
/// `Err`; an error during the run ends it and is reported in [`ImgReport::error`].
pub fn run(config: &ImgClientConfig, shutdown: &Shutdown) -> Result<ImgReport, ClientError> {
    config.validate()?;
    let stop = Shutdown::new();
    let producer = match &config.source {
        SourceSpec::Jpeg(path) => Producer::Fixed(Arc::new(read_jpeg(path)?)),
        SourceSpec::Mjpeg(path) => Producer::Mjpeg(Box::new(open_mjpeg(path, &stop)?)),
        #[cfg(feature = "opencv")]
        other => Producer::Encode(other.open(config.width, config.height, config.noise)?),
        #[cfg(not(feature = "opencv"))]
        other => {
            return Err(ClientError::NeedsOpenCv {
                what: other.needs_opencv().unwrap_or("this source"),
            })
        }
    };
    let sender = open_sender(config.protocol, config.hub, &config.sender).map_err(|source| {
        ClientError::OpenSocket {
            hub: config.hub,
            source,
        }
    })?;
    let what = match &producer {
        #[cfg(feature = "opencv")]
        Producer::Encode(source) => format!(
            "{} -> {} over {}, {}x{} JPEG quality {}",
            source.describe(),
            config.hub,
            config.protocol,
            config.width,
            config.height,
            config.quality
        ),
        Producer::Fixed(jpeg) => format!(
            "JPEG file {} ({} bytes, sent as it is) -> {} over {}",
            match &config.source {
                SourceSpec::Jpeg(path) => path.display().to_string(),
                _ => String::new(),
            },
            jpeg.len(),
            config.hub,
            config.protocol
        ),
        Producer::Mjpeg(_) => format!(
            "MJPEG stream {} (frames sent as they are) -> {} over {}",
            match &config.source {
                SourceSpec::Mjpeg(path) if is_stdin(path) => "from stdin".to_string(),
                SourceSpec::Mjpeg(path) => path.display().to_string(),
                _ => String::new(),
            },
            config.hub,
            config.protocol
        ),
    };
    log::info!("sending {what}");
    let has_ack = config.protocol.has_ack();

    let stats: SharedImgStats = Arc::new(Mutex::new(ImgStats::default()));
    let mode = if config.source.is_live() {
        Mode::LatestWins
    } else {
        Mode::Backpressure
    };
    let handoff: Handoff<CapturedFrame> = Handoff::new(mode);
    // The controller: it chooses the encoding of re-encoded sources over a protocol with
    // an ack (--adapt on), and the framed window (--window auto).
    #[cfg(feature = "opencv")]
    let re_encoded = matches!(producer, Producer::Encode(_));
    #[cfg(not(feature = "opencv"))]
    let re_encoded = false;
    let adapting = config.adapt.adapt && re_encoded && has_ack;
    let window = match config.protocol {
        Protocol::Framed => config.adapt.window,
        _ => WindowMode::Fixed(1),
    };
    let controller: Option<SharedController> =
        (adapting || window == WindowMode::Auto).then(|| {
            Arc::new(Mutex::new(Controller::new(
                AdaptConfig {
                    max_latency: config.adapt.max_latency,
                    max_fps: config.fps.unwrap_or(DEFAULT_ADAPT_FPS),
                    quality: config.quality,
                    adapt: adapting,
                    window,
                },
                Instant::now(),
            )))
        });
    {
        let mut s = lock(&stats);
        s.encoding.adapt = adapting;
        s.encoding.window = (window == WindowMode::Auto).then_some(1);
    }
    if config.adapt.adapt && !adapting {
        log::info!(
            "--adapt: {} are sent as they are (no quality or size to choose)",
            if !has_ack {
                "frames over the tcp stream (no ack to learn the link from)"
            } else {
                "--jpeg/--mjpeg frames"
            }
        );
    }
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let started = Instant::now();

    // An unpaced --jpeg needs no capture thread: the send thread takes the same bytes again.
    let (input, producer) = match producer {
        Producer::Fixed(jpeg) if config.fps.is_none() => (Input::Repeat(jpeg), None),
        producer => (Input::Handoff(handoff.clone()), Some(producer)),
    };
    let capture = producer.map(|producer| {
        let job = CaptureJob {
            width: config.width,
            height: config.height,
            quality: config.quality,
            fps: config.fps,
            show: config.show,
            adapt: controller.clone().filter(|_| adapting),
            // a live source skips captures to honour the controller's frame rate; a video
            // or images are sent frame for frame (quality and size adapt, the rate does not)
            adapt_fps: config.source.is_live(),
            mjpeg_path: match &config.source {
                SourceSpec::Mjpeg(path) => Some(path.clone()),
                _ => None,
            },
        };
        let (out, stats, stop, done) = (
            handoff.clone(),
            stats.clone(),
            stop.clone(),
            done_tx.clone(),
        );
        thread::Builder::new()
            .name("capture".into())
            .spawn(move || {
                let result = capture_loop(producer, &job, &out, &stats, &stop);
                out.close();
                let _ = done.send(());
                result
            })
            .map_err(|source| ClientError::Spawn {
                what: "capture thread",
                source,
            })
    });
    let capture = capture.transpose()?;
    let send = {
        let (stats, send_stop, frames) = (stats.clone(), stop.clone(), config.frames);
        let controller = controller.clone();
        let spawned = thread::Builder::new().name("send".into()).spawn(move || {
            let result = send_loop(
                sender,
                frames,
                &input,
                &stats,
                controller.as_ref(),
                &send_stop,
            );
            let _ = done_tx.send(());
            result
        });
        match spawned {
            Ok(h) => h,
            Err(e) => {
                stop.trigger();
                if let Some(capture) = capture {
                    let _ = capture.join();
                }
                return Err(ClientError::Spawn {
                    what: "send thread",
                    source: e,
                });
            }
        }
    };
    let status = config.status_interval.and_then(|interval| {
        let (stats, stop) = (stats.clone(), stop.clone());
        let mut meter = RateMeter::new(Instant::now());
        spawn_status_printer(interval, stop, move || {
            let s = lock(&stats);
            let fps = meter.rate(Instant::now(), s.counts.sent);
            img_status_line(&s.counts, has_ack, fps, s.rtt.percentile(50.0)) + &s.encoding.status()
        })
        .map_err(|e| log::warn!("no status lines: {e}"))
        .ok()
    });

    // Wait for the sender to finish, passing Ctrl-C on to the run's own stop flag.
    while !send.is_finished() {
        if shutdown.is_triggered() {
            stop.trigger();
        }
        let _ = done_rx.recv_timeout(POLL_INTERVAL);
    }
    stop.trigger();
    let send_result = send.join().unwrap_or(Err(ClientError::Panicked {
        what: "send thread",
    }));
    let capture_result = capture.map_or(Ok(None), |c| {
        c.join().unwrap_or(Err(ClientError::Panicked {
            what: "capture thread",
        }))
    });
    let (capture_result, split) = match capture_result {
        Ok(split) => (Ok(()), split),
        Err(e) => (Err(e), None),
    };
    if let Some(status) = status {
        let _ = status.join();
    }
    let elapsed = started.elapsed();
    let stats = lock(&stats).clone();
    let mut summary = img_summary(&what, &stats, elapsed, has_ack);
    if let Some(split) = split {
        summary.push_str(&mjpeg_summary_line(&split));
    }
    Ok(ImgReport {
        summary,
        stats,
        elapsed,
        error: send_result.err().or(capture_result.err()),
    })
}

/// Where the send thread takes its frames from.
enum Input {
    /// From the capture thread.
    Handoff(Handoff<CapturedFrame>),
    /// The `--jpeg` bytes again for every frame (unpaced): no capture thread to wake up for
    /// every frame, which is all it would do.
    Repeat(Arc<Vec<u8>>),
}

impl Input {
    fn take(&self) -> Take<CapturedFrame> {
        self.take_within(POLL_INTERVAL)
    }

    /// A frame, waiting at most `timeout` for one.
    fn take_within(&self, timeout: Duration) -> Take<CapturedFrame> {
        match self {
            Input::Handoff(handoff) => handoff.take(timeout),
            // taken now: that is its capture time
            Input::Repeat(jpeg) => Take::Item(CapturedFrame::now(Arc::clone(jpeg), 0)),
        }
    }

    fn hang_up(&self) {
        if let Input::Handoff(handoff) = self {
            handoff.hang_up();
        }
    }

    fn skipped(&self) -> u64 {
        match self {
            Input::Handoff(handoff) => handoff.skipped(),
            Input::Repeat(_) => 0,
        }
    }
}

/// The summary's line about an `--mjpeg` stream: what was read and what was skipped.
fn mjpeg_summary_line(split: &SplitCounts) -> String {
    format!(
        "mjpeg input: {} frames read, {} bytes between frames skipped, {} cut-short or \
         oversized frames dropped\n",
        split.frames, split.garbage_bytes, split.dropped_frames
    )
}

/// The capture thread's settings.
struct CaptureJob {
    width: i32,
    height: i32,
    quality: i32,
    fps: Option<f64>,
    show: bool,
    /// `--adapt on`: the controller whose quality and size frames are encoded with.
    adapt: Option<SharedController>,
    /// Skip captures to honour the controller's frame rate (live sources).
    adapt_fps: bool,
    /// The `--mjpeg` path, for its read errors.
    mjpeg_path: Option<PathBuf>,
}

/// Read, resize, encode and hand over frames (or hand over the `--jpeg` bytes again, or the
/// frames of an `--mjpeg` stream) until the source ends, the sender hangs up or `stop` is
/// set. Returns what the MJPEG splitter counted, for an `--mjpeg` stream.
fn capture_loop(
    mut producer: Producer,
    job: &CaptureJob,
    out: &Handoff<CapturedFrame>,
    stats: &SharedImgStats,
    stop: &Shutdown,
) -> Result<Option<SplitCounts>, ClientError> {
    #[cfg(not(feature = "opencv"))]
    let _ = (job.width, job.height, job.quality, job.show, stats);
    #[cfg(feature = "opencv")]
    let mut preview = if job.show { open_preview() } else { None };
    let mut due = Instant::now();
    while !stop.is_triggered() && !out.is_hung_up() {
        // the controller's frame rate, when it went below the planned one (latest wins:
        // captures are skipped, never queued)
        let target = job.adapt.as_ref().map(|c| lock(c).target());
        let adapted_fps = target
            .filter(|t| job.adapt_fps && t.fps < job.fps.unwrap_or(DEFAULT_ADAPT_FPS))
            .map(|t| t.fps);
        let period = [job.fps, adapted_fps]
            .into_iter()
            .flatten()
            .reduce(f64::min)
            .map(|fps| Duration::from_secs_f64(1.0 / fps));
        if let Some(period) = period {
            let now = Instant::now();
            if now < due && stop.wait_timeout(due - now) {
                break;
            }
            // Never catch up with a burst after a slow frame.
            due = (due + period).max(Instant::now());
        }
        // The capture time is taken when the source returned the frame; the quality is the
        // encoder's (0 for bytes sent as they came).
        let frame = match &mut producer {
            #[cfg(feature = "opencv")]
            Producer::Encode(source) => {
                let frame = match source.next_frame() {
                    Ok(Some(frame)) => frame,
                    Ok(None) => {
                        log::info!("{} ended", source.describe());
                        break;
                    }
                    Err(e) => return Err(e.into()),
                };
                let (width, height, quality) = match target {
                    Some(t) => {
                        let (w, h) = t.scale.apply(job.width, job.height);
                        (w, h, t.quality)
                    }
                    None => (job.width, job.height, job.quality),
                };
                // libjpeg takes quality 0 as 1; 0 here means "not encoded by us"
                let meta = crate::proto::framed_sender::FrameMeta::captured_now(
                    quality.clamp(1, 100) as u8,
                );
                let frame = media::into_size(frame, width, height)?;
                let t0 = Instant::now();
                let jpeg = jpeg::encode(&frame, quality)?;
                if let (Some(c), Some(t)) = (&job.adapt, target) {
                    lock(c).on_encoded(t.level, jpeg.len());
                }
                {
                    let mut s = lock(stats);
                    s.encode.record(t0.elapsed());
                    let fps = target.filter(|_| job.adapt_fps).map(|t| t.fps);
                    s.encoding.record(quality, width, height, fps);
                }
                if let Some(window) = &mut preview {
                    if show_preview(window, &frame) {
                        log::info!("ESC pressed in the preview window; stopping");
                        stop.trigger();
                    }
                }
                CapturedFrame {
                    jpeg: Arc::new(jpeg),
                    meta,
                }
            }
            Producer::Fixed(jpeg) => CapturedFrame::now(Arc::clone(jpeg), 0),
            Producer::Mjpeg(reader) => match reader.next_frame() {
                Ok(Some(frame)) => CapturedFrame::now(Arc::new(frame), 0),
                Ok(None) => {
                    log::info!("the MJPEG stream ended");
                    break;
                }
                Err(_) if stop.is_triggered() => break,
                Err(source) => {
                    return Err(ClientError::ReadMjpeg {
                        path: job.mjpeg_path.clone().unwrap_or_default(),
                        source,
                    })
                }
            },
        };
        if !out.put(frame, stop) {
            break;
        }
    }
    Ok(match producer {
        Producer::Mjpeg(reader) => Some(reader.counts()),
        _ => None,
    })
}

#[cfg(feature = "opencv")]
/// The preview window, or `None` (said once on stderr) when there is no display.
fn open_preview() -> Option<media::Window> {
    if !media::display_available() {
        eprintln!(
            "img-client: --show: no display (neither DISPLAY nor WAYLAND_DISPLAY is set); \
             going on without a preview"
        );
        return None;
    }
    match media::Window::open("img-client") {
        Ok(w) => Some(w),
        Err(e) => {
            eprintln!("img-client: --show: cannot open a window ({e}); going on without a preview");
            None
        }
    }
}

#[cfg(feature = "opencv")]
/// Show `frame`; true when ESC was pressed (the seed client's way to quit).
fn show_preview(window: &mut media::Window, frame: &media::Mat) -> bool {
    if let Err(e) = window.show(frame) {
        log::debug!("preview: {e}");
    }
    matches!(media::pump_events(1), Ok(Some(27)))
}

/// The longest wait on the socket between two looks at the handoff while frames are in
/// flight: what a captured frame may wait for the sender then, at most.
const IDLE_SLICE: Duration = Duration::from_millis(2);

/// Send frames from `input` until it closes, `frames` were sent, `stop` is set, or a fatal
/// error. Hangs up `input` when done so the capture thread stops too.
fn send_loop(
    mut sender: Box<dyn ImgSender>,
    frames: Option<u64>,
    input: &Input,
    stats: &SharedImgStats,
    controller: Option<&SharedController>,
    stop: &Shutdown,
) -> Result<(), ClientError> {
    let mut limiter = LogLimiter::new(5);
    let mut sent = 0u64;
    let result = loop {
        if stop.is_triggered() || frames.is_some_and(|n| sent >= n) {
            break Ok(());
        }
        // With frames in flight, replies are taken as they come while the next frame is
        // awaited, so their times are true: the handoff is looked at between waits on the
        // socket of at most IDLE_SLICE (a frame waits that long at most).
        let busy = sender.in_flight() > 0;
        let taken = match busy {
            true => input.take_within(Duration::ZERO),
            false => input.take(),
        };
        let frame = match taken {
            Take::Item(frame) => frame,
            Take::Empty if busy => {
                let outcomes = match sender.idle(Instant::now() + IDLE_SLICE, stop) {
                    Ok(outcomes) => outcomes,
                    Err(e) => break Err(e.into()),
                };
                if let Some(c) = controller {
                    sender.set_window(feed(c, &outcomes));
                }
                record(&mut lock(stats), outcomes, &mut limiter);
                continue;
            }
            Take::Empty => continue,
            Take::Closed => break Ok(()),
        };
        let frame = match sender.stamps_capture_time() {
            true => frame.stamped(),
            false => frame,
        };
        let outcomes = match sender.send(&frame, stop) {
            Ok(outcomes) => outcomes,
            Err(e) => break Err(e.into()),
        };
        let window = controller.map(|c| feed(c, &outcomes));
        if let Some(window) = window {
            sender.set_window(window);
        }
        let fec = sender.fec();
        if let (Some(c), Some(f)) = (controller, fec) {
            // the budget is for the JPEG and its parity
            let overhead = f64::from(f.parity) / f64::from(f.data.max(1));
            lock(c).set_parity_overhead(overhead);
        }
        let mut s = lock(stats);
        if let Some(window) = window.filter(|_| s.encoding.window.is_some()) {
            s.encoding.window = Some(window);
        }
        s.encoding.fec = fec.or(s.encoding.fec);
        let not_sent = record(&mut s, outcomes, &mut limiter);
        if not_sent {
            continue;
        }
        sent += 1;
        s.counts.sent = sent;
        s.counts.bytes += frame.jpeg.len() as u64;
        let replies = sender.reply_counts();
        s.counts.late_acks = replies.late_acks;
        s.counts.ignored = replies.ignored;
        s.counts.skipped = input.skipped();
        s.clock = sender.clock().or(s.clock);
    };
    input.hang_up();
    let in_flight = sender.flush(stop);
    sender.finish();
    let mut s = lock(stats);
    let result = match in_flight {
        Ok(outcomes) => {
            record(&mut s, outcomes, &mut limiter);
            result
        }
        Err(e) => result.and(Err(e.into())),
    };
    let replies = sender.reply_counts();
    s.counts.late_acks = replies.late_acks;
    s.counts.ignored = replies.ignored;
    s.counts.skipped = input.skipped();
    s.clock = sender.clock().or(s.clock);
    s.encoding.fec = sender.fec().or(s.encoding.fec);
    result
}

/// Tell the controller what became of the frames that finished; the window it chooses.
fn feed(controller: &SharedController, outcomes: &[FrameOutcome]) -> usize {
    let mut c = lock(controller);
    let now = Instant::now();
    for outcome in outcomes {
        match outcome {
            FrameOutcome::Acked {
                rtt,
                capture_to_ack,
                bytes,
                resent,
                ..
            } => c.on_acked(
                adapt::Acked {
                    bytes: *bytes,
                    send_to_ack: *rtt,
                    capture_to_ack: *capture_to_ack,
                    resent: *resent,
                },
                now,
            ),
            // no ack despite the resends (a stale or refused frame says nothing of the link)
            FrameOutcome::Lost(LostReason::NoAck | LostReason::GaveUp(GiveUp::Deadline)) => {
                c.on_gave_up(now)
            }
            _ => {}
        }
    }
    c.target().window
}

/// Count finished frames; true if the frame just offered was not sent at all.
fn record(s: &mut ImgStats, outcomes: Vec<FrameOutcome>, limiter: &mut LogLimiter) -> bool {
    let mut not_sent = false;
    for outcome in outcomes {
        match outcome {
            FrameOutcome::Acked {
                rtt,
                capture_to_ack,
                ..
            } => {
                s.counts.acked += 1;
                s.rtt.record(rtt);
                if let Some(d) = capture_to_ack {
                    s.capture_to_ack.record(d);
                }
            }
            FrameOutcome::Written { took } => {
                s.counts.written += 1;
                s.rtt.record(took);
            }
            FrameOutcome::Lost(reason) => {
                s.counts.lost += 1;
                if let Some(suppressed) = limiter.allow(Instant::now()) {
                    log::warn!("a frame was lost: {reason}{suppressed}");
                }
            }
            FrameOutcome::NotSent => not_sent = true,
        }
    }
    not_sent
}

#[cfg(all(test, feature = "opencv"))]
mod tests {
    use super::*;
    use crate::wire::seed_udp::IMG_ACK;
    use std::net::UdpSocket;

    fn config(hub: SocketAddr, frames: u64) -> ImgClientConfig {
        ImgClientConfig {
            source: SourceSpec::Pattern,
            width: 64,
            height: 48,
            quality: 80,
            noise: 0,
            fps: None,
            frames: Some(frames),
            hub,
            protocol: Protocol::Single,
            sender: SenderOptions {
                ack_timeout: Duration::from_secs(10),
                ..SenderOptions::default()
            },
            show: false,
            status_interval: None,
            adapt: AdaptOptions::default(),
        }
    }

    #[test]
    fn sends_the_requested_frames_to_an_acking_server() {
        let hub = UdpSocket::bind("127.0.0.1:0").unwrap();
        hub.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let addr = hub.local_addr().unwrap();
        let server = thread::spawn(move || {
            let mut buf = vec![0u8; 70_000];
            let mut sizes = Vec::new();
            for _ in 0..5 {
                let (n, from) = hub.recv_from(&mut buf).unwrap();
                assert_eq!(jpeg::decoded_size(&buf[..n]).unwrap(), (64, 48));
                sizes.push(n as u64);
                hub.send_to(IMG_ACK, from).unwrap();
            }
            sizes
        });
        let report = run(&config(addr, 5), &Shutdown::new()).unwrap();
        let sizes = server.join().unwrap();
        assert!(report.success(), "{}", report.summary);
        let c = report.stats.counts;
        assert_eq!((c.sent, c.acked, c.lost), (5, 5, 0));
        assert_eq!(c.bytes, sizes.iter().sum::<u64>());
        assert_eq!(report.stats.rtt.count(), 5);
        assert!(report.stats.encode.count() >= 5);
        assert!(report.summary.contains("frames: sent 5, acked 5, lost 0"));
    }

    #[test]
    fn bad_settings_are_refused_before_sending() {
        let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let mut c = config(addr, 1);
        c.quality = 101;
        let err = run(&c, &Shutdown::new()).unwrap_err();
        assert!(
            matches!(err, ClientError::Config(ImgConfigError::Quality(101))),
            "{err:?}"
        );
        assert!(err.to_string().contains("--quality"), "{err}");
        let mut c = config(addr, 1);
        c.width = 0;
        let err = run(&c, &Shutdown::new()).unwrap_err();
        assert!(err.to_string().contains("--width"), "{err}");
        let mut c = config(addr, 1);
        c.fps = Some(0.0);
        let err = run(&c, &Shutdown::new()).unwrap_err();
        assert!(err.to_string().contains("--fps"), "{err}");
        let mut c = config(addr, 1);
        c.source = SourceSpec::Video("/nonexistent/video.avi".into());
        let err = run(&c, &Shutdown::new()).unwrap_err();
        assert!(matches!(err, ClientError::Media(_)), "{err:?}");
        assert!(err.to_string().contains("/nonexistent/video.avi"), "{err}");
    }

    #[test]
    fn a_triggered_shutdown_ends_the_run_with_a_summary() {
        let hub = UdpSocket::bind("127.0.0.1:0").unwrap();
        let shutdown = Shutdown::new();
        shutdown.trigger();
        let mut c = config(hub.local_addr().unwrap(), 1_000_000);
        c.sender.ack_timeout = Duration::from_millis(50);
        let report = run(&c, &shutdown).unwrap();
        assert!(report.error.is_none());
        assert!(!report.success(), "nothing was acked");
        assert!(report.summary.contains("frames: sent"));
    }
}
