//! The camera client's network side: the [`ImgSender`] trait, and one implementation per
//! transport, each in its own file.
//!
//! - [`seed_udp`] ([`SeedUdpSender`]): seed 002's two UDP formats, byte for byte, one
//!   sender parameterised by the [`SeedUdpFormat`]:
//!   - [`Protocol::Chunked`]: a `struct.pack('l', len)` header datagram, then the JPEG in
//!     1024-byte datagrams sliced exactly like the seed loop (including its trailing empty
//!     datagram), then wait for `get message!!!`;
//!   - [`Protocol::Single`]: the whole JPEG in one datagram, then wait for the ack. A frame
//!     over 65507 bytes cannot be sent this way and is an error.
//! - [`framed_udp`] ([`FramedUdpSender`], [`Protocol::Framed`]): udphub's framed UDP
//!   format, a thin loop around the socket-free [`crate::proto::framed_sender`] state
//!   machine (frame ids, selective resends, a window of frames in flight).
//! - [`seed_tcp`] ([`SeedTcpSender`], [`Protocol::Tcp`]): seed 000's TCP stream, a 16-byte
//!   ASCII length and the JPEG. That protocol has no ack: a frame counts as *written*
//!   ([`FrameOutcome::Written`]) once the kernel took all of it, never as acked. Connections are made with a timeout, writes have a timeout, and a failed
//!   connection is retried with a bounded exponential [`seed_tcp::Backoff`].
//!
//! The byte formats come from [`crate::wire`]; nothing here defines one. The UDP senders
//! wait for each ack at most the ack timeout; a frame without one counts as lost and the
//! client goes on. How late acks are kept from being counted for the wrong frame, and the
//! limit of that (the seed ack carries no frame id), is described in [`super::udp_link`].
//!
//! Names: `Seed…`/`Framed…` is the format family, `…Udp…`/`…Tcp…` the transport; the trait
//! is `ImgSender` like the telemetry client's `MsgSender`. `proto::framed_sender::
//! FramedSender` is the framed protocol's state machine, which [`FramedUdpSender`] drives.

pub mod framed_udp;
pub mod seed_tcp;
pub mod seed_udp;

pub use framed_udp::FramedUdpSender;
pub use seed_tcp::SeedTcpSender;
pub use seed_udp::{SeedUdpFormat, SeedUdpSender};

use crate::wire::name::SourceName;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::proto::framed_sender::{ClockEstimate, FrameMeta, GiveUp};
use crate::shutdown::Shutdown;
use crate::wire::framed;
use crate::wire::seed_udp::HeaderWidth;

/// The wire protocol a frame goes out in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum Protocol {
    /// udphub's framed UDP format: frame id and chunk index in every datagram, selective
    /// resends of missing chunks, up to --window frames in flight.
    Framed,
    /// Seed UDP: length header datagram, 1024-byte data datagrams, ack per frame.
    Chunked,
    /// Seed UDP: the whole JPEG in one datagram (at most 65507 bytes), ack per frame.
    Single,
    /// Seed TCP stream: 16-byte ASCII length, then the JPEG; no ack.
    Tcp,
}

impl Protocol {
    /// Whether the hub confirms each frame. The seed TCP stream has no ack: its frames are
    /// counted as written (handed to the kernel), which says nothing about delivery.
    pub fn has_ack(self) -> bool {
        self != Protocol::Tcp
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Framed => "framed udp",
            Protocol::Chunked => "chunked udp",
            Protocol::Single => "single-datagram udp",
            Protocol::Tcp => "tcp stream",
        })
    }
}

/// Settings every sender takes.
#[derive(Clone, Debug)]
pub struct SenderOptions {
    /// UDP: longest wait for an ack. TCP: longest a write may stall.
    pub ack_timeout: Duration,
    /// TCP: longest a connection attempt may take.
    pub connect_timeout: Duration,
    /// TCP: the socket's send buffer (`SO_SNDBUF`; Linux doubles it), which bounds the
    /// bytes sent but not yet acked plus those not yet sent, so the kernel cannot queue
    /// seconds of video on a slow link; `None`: the kernel's autotuning (up to megabytes).
    pub tcp_send_buffer: Option<usize>,
    /// Chunked: width of the length header (8 for a 64-bit Linux/macOS seed server, 4 for
    /// one on Windows, where Python's `'l'` is 4 bytes).
    pub header_width: HeaderWidth,
    /// Framed: payload bytes per datagram.
    pub chunk_size: usize,
    /// Framed: frames in flight at most (1 = stop-and-wait).
    pub window: usize,
    /// Framed: the name the hub shows this sender as (seed formats carry none).
    pub name: Option<SourceName>,
    /// Framed: this device's key and the hub's public key (`--key`, `--hub-key`): every
    /// datagram encrypted and authenticated ([`crate::secure`]).
    pub keys: Option<DeviceKeys>,
    /// Framed: parity shards per frame (`--fec`, [`crate::proto::fec`]).
    pub fec: crate::proto::fec::FecMode,
}

/// Framed: the forward error correction in use (also as it appears in the JSON summary).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FecState {
    /// The newest frame's parity shards and data chunks.
    pub parity: u8,
    pub data: u16,
    /// Parity shards sent, and data chunks the hub said it rebuilt from them, so far.
    pub parity_sent: u64,
    pub rebuilt: u64,
}

/// A device's keys for talking to a hub that requires them.
#[derive(Clone, Debug)]
pub struct DeviceKeys {
    pub key: crate::secure::keys::PrivateKey,
    pub hub: crate::secure::keys::PublicKey,
    /// The sessions' AEAD (`--cipher`; [`Cipher::preferred`](crate::secure::cipher::Cipher::preferred) by default).
    pub cipher: crate::secure::cipher::Cipher,
}

impl Default for SenderOptions {
    fn default() -> Self {
        SenderOptions {
            ack_timeout: Duration::from_millis(1000),
            connect_timeout: Duration::from_millis(2000),
            tcp_send_buffer: Some(seed_tcp::DEFAULT_SEND_BUFFER),
            header_width: HeaderWidth::Eight,
            chunk_size: framed::DEFAULT_CHUNK_SIZE,
            window: 1,
            name: None,
            keys: None,
            fec: crate::proto::fec::FecMode::Off,
        }
    }
}

/// What became of one frame.
#[derive(Debug)]
pub enum FrameOutcome {
    /// The hub acked it; `rtt` runs from its first byte sent, `capture_to_ack` from its
    /// capture time (when known) to the ack's arrival, on this client's wall clock: an
    /// upper bound on the one-way latency capture -> hub. `bytes`, `resent` (framed:
    /// chunks sent again; 0 for the seed formats, which cannot resend) and `meta` (what the
    /// frame was sent with; default when the sender was not given it) feed
    /// [`crate::proto::adapt`].
    Acked {
        rtt: Duration,
        capture_to_ack: Option<Duration>,
        bytes: usize,
        resent: u32,
        meta: FrameMeta,
    },
    /// TCP: the kernel took all of it in `took`. The seed stream has no ack, so whether the
    /// hub received it is not known.
    Written { took: Duration },
    /// It was sent (or sending was tried) but not acked.
    Lost(LostReason),
    /// Not sent at all: `stop` was triggered before it could be.
    NotSent,
}

/// Why a frame counts as lost.
#[derive(Debug)]
pub enum LostReason {
    /// No ack within the ack timeout.
    NoAck,
    /// `stop` was triggered while its ack was awaited, and no ack came before the wait was
    /// cut short.
    Stopped,
    /// Sending failed (the frame may be partly sent).
    SendFailed(io::Error),
    /// TCP: no connection to the hub could be made.
    ConnectFailed(io::Error),
    /// Framed: given up (no ack by the deadline after bounded resends, or refused by the hub).
    GaveUp(GiveUp),
}

impl fmt::Display for LostReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LostReason::NoAck => write!(f, "no ack within the ack timeout"),
            LostReason::Stopped => write!(f, "stopped before its ack came"),
            LostReason::SendFailed(e) => write!(f, "sending failed: {e}"),
            LostReason::ConnectFailed(e) => write!(f, "cannot connect: {e}"),
            LostReason::GaveUp(GiveUp::Deadline) => {
                write!(f, "no ack within the ack timeout despite resends")
            }
            LostReason::GaveUp(GiveUp::Rejected) => {
                write!(f, "the hub refused it (too large, or not a JPEG)")
            }
            LostReason::GaveUp(GiveUp::Stale) => {
                write!(f, "the hub delivered a newer frame first")
            }
        }
    }
}

/// An error that ends the run (retrying cannot help).
#[derive(Debug)]
pub enum SendError {
    /// The frame does not fit the protocol.
    FrameTooLarge {
        len: usize,
        max: usize,
        protocol: Protocol,
    },
    /// The local socket failed.
    Io(io::Error),
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::FrameTooLarge {
                len,
                max,
                protocol: Protocol::Single,
            } => write!(
                f,
                "a {len}-byte JPEG frame does not fit in one UDP datagram (at most {max} \
                 bytes): lower --quality or --width/--height, or use --protocol chunked"
            ),
            SendError::FrameTooLarge { len, max, .. } => write!(
                f,
                "a {len}-byte JPEG frame is over the {max}-byte limit of the length header"
            ),
            SendError::Io(e) => write!(f, "socket error: {e}"),
        }
    }
}

impl std::error::Error for SendError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SendError::FrameTooLarge { .. } => None,
            SendError::Io(e) => Some(e),
        }
    }
}

impl From<io::Error> for SendError {
    fn from(e: io::Error) -> Self {
        SendError::Io(e)
    }
}

/// One frame to send: its JPEG bytes (shared, not copied, so a sender that keeps frames
/// in flight keeps this one as it is) and what is known about it (capture time, quality).
#[derive(Clone, Debug)]
pub struct CapturedFrame {
    pub jpeg: Arc<Vec<u8>>,
    pub meta: FrameMeta,
}

/// From a frame's capture (`capture_us`, wall clock µs; 0 = unknown) to `at` (an ack's
/// arrival), on this client's wall clock.
pub fn capture_to(at: std::time::Instant, capture_us: u64) -> Option<Duration> {
    if capture_us == 0 {
        return None;
    }
    let now_us = crate::proto::framed_sender::wall_us(std::time::SystemTime::now());
    let at_us = now_us.saturating_sub(at.elapsed().as_micros() as u64);
    Some(Duration::from_micros(at_us.saturating_sub(capture_us)))
}

impl CapturedFrame {
    /// The frame a seed sender sends: the seed formats have no field for a capture time, so
    /// a frame this client encoded (quality known) that has one gets it stamped into a
    /// leading comment segment ([`crate::jpegcheck::with_capture_stamp`], 40 bytes or so);
    /// bytes sent as they came (`--jpeg`, `--mjpeg`: quality 0) stay as they are.
    pub fn stamped(self) -> CapturedFrame {
        if self.meta.capture_us == 0 || self.meta.quality == 0 {
            return self;
        }
        let jpeg = crate::jpegcheck::with_capture_stamp(&self.jpeg, self.meta.capture_us);
        CapturedFrame {
            jpeg: Arc::new(jpeg),
            meta: self.meta,
        }
    }

    /// `jpeg`, captured now (the wall clock), encoded with `quality` (0 = unknown: bytes
    /// sent as they came).
    pub fn now(jpeg: Arc<Vec<u8>>, quality: u8) -> Self {
        CapturedFrame {
            jpeg,
            meta: FrameMeta::captured_now(quality),
        }
    }
}

/// Counts a sender keeps about the replies it got.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplyCounts {
    /// Acks that came after their frame's timeout (drained before a later frame).
    pub late_acks: u64,
    /// Datagrams that were not an ack from the hub.
    pub ignored: u64,
}

/// Sends JPEG frames to the hub in one protocol.
///
/// Every wait is bounded, and `stop` cuts waits short: once it is triggered, a UDP ack
/// wait (and the framed sender's wait for room in its window, and [`ImgSender::flush`])
/// ends within [`super::udp_link::STOP_POLL`], the frame it was for counting as
/// [`LostReason::Stopped`] unless its ack came first; the tcp reconnect backoff ends at
/// once (the frame is [`FrameOutcome::NotSent`]). A tcp write that stalls ends at its write
/// timeout, and [`ImgSender::finish`] takes no flag: both are bounded by the ack timeout.
pub trait ImgSender: Send {
    /// Send one JPEG frame and wait (bounded) for its ack; returns the outcomes of the frames
    /// that finished during the call: this frame's for the stop-and-wait protocols, any
    /// earlier in-flight frames' with a window.
    fn send_frame(&mut self, jpeg: &[u8], stop: &Shutdown) -> Result<Vec<FrameOutcome>, SendError>;
    /// [`ImgSender::send_frame`] for a frame the caller already holds in an `Arc`, with its
    /// [`FrameMeta`]: a sender that keeps frames in flight keeps this one without copying
    /// it, and the framed sender tells the hub its capture time and quality.
    fn send(
        &mut self,
        frame: &CapturedFrame,
        stop: &Shutdown,
    ) -> Result<Vec<FrameOutcome>, SendError> {
        self.send_frame(&frame.jpeg, stop)
    }
    /// Wait (bounded, cut short by `stop`) for the frames still in flight; their outcomes.
    /// Frames still in flight when `stop` cuts it short count as [`LostReason::Stopped`].
    fn flush(&mut self, _stop: &Shutdown) -> Result<Vec<FrameOutcome>, SendError> {
        Ok(Vec::new())
    }
    /// Late and ignored replies so far.
    fn reply_counts(&self) -> ReplyCounts;
    /// The estimate of `hub clock - this client's clock` (framed: from the hub's time in
    /// its acks); `None` when there is none.
    fn clock(&self) -> Option<ClockEstimate> {
        None
    }
    /// Whether frames go out with their capture time stamped into the JPEG
    /// ([`CapturedFrame::stamped`]): the seed formats, which have no field for it.
    fn stamps_capture_time(&self) -> bool {
        false
    }
    /// Frames in flight at most from now on (`--window auto`); only the framed sender
    /// keeps more than one, the others ignore it.
    fn set_window(&mut self, _window: usize) {}
    /// Frames sent whose outcome is not known yet (only a sender with a window has any
    /// between calls).
    fn in_flight(&self) -> usize {
        0
    }
    /// Between frames: take the replies that come until `until` (cut short by `stop` and
    /// by the first reply), so an ack is handled when it arrives, not when the next frame
    /// is sent (its round trip and the adaptation's rate samples would be late by up to a
    /// frame's interval); the outcomes of the frames that finished.
    fn idle(&mut self, _until: Instant, _stop: &Shutdown) -> Result<Vec<FrameOutcome>, SendError> {
        Ok(Vec::new())
    }
    /// Framed with `--fec` on: the parity in use; `None` for the others.
    fn fec(&self) -> Option<FecState> {
        None
    }
    /// Called once after the last frame (tcp: close the stream cleanly).
    fn finish(&mut self) {}
}

/// The sender for `protocol`, aimed at `hub`.
pub fn open_sender(
    protocol: Protocol,
    hub: SocketAddr,
    options: &SenderOptions,
) -> io::Result<Box<dyn ImgSender>> {
    Ok(match protocol {
        Protocol::Framed => Box::new(FramedUdpSender::open(hub, options)?),
        Protocol::Chunked => Box::new(SeedUdpSender::open(
            hub,
            SeedUdpFormat::Chunked(options.header_width),
            options.ack_timeout,
        )?),
        Protocol::Single => Box::new(SeedUdpSender::open(
            hub,
            SeedUdpFormat::Single,
            options.ack_timeout,
        )?),
        Protocol::Tcp => Box::new(SeedTcpSender::new(hub, options)),
    })
}

/// What the senders' tests share.
#[cfg(test)]
mod testing {
    use super::SenderOptions;
    use std::time::Duration;

    /// Longer than any test should take: a bound for waits that do not fail the test by
    /// running out.
    pub const LONG: Duration = Duration::from_secs(10);

    /// A JPEG of `len` bytes (at least [`crate::jpegcheck::FILLER_MIN_LEN`]) with filler
    /// for coded data (the senders do not look inside).
    pub fn fake_jpeg(len: usize) -> Vec<u8> {
        crate::jpegcheck::filler_jpeg(len, 0)
    }

    pub fn options(ack_ms: u64) -> SenderOptions {
        SenderOptions {
            ack_timeout: Duration::from_millis(ack_ms),
            ..SenderOptions::default()
        }
    }
}
