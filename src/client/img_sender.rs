//! The camera client's network side: one [`FrameSender`] per wire protocol.
//!
//! - [`Protocol::Chunked`] ([`ChunkedSender`]): seed 002's chunked UDP format, byte for
//!   byte: a `struct.pack('l', len)` header datagram, then the JPEG in 1024-byte datagrams
//!   sliced exactly like the seed loop (including its trailing empty datagram), then wait
//!   for `get message!!!`.
//! - [`Protocol::Single`] ([`SingleSender`]): the whole JPEG in one datagram, then wait for
//!   the ack. A frame over 65507 bytes cannot be sent this way and is an error.
//! - [`Protocol::Tcp`] ([`TcpSender`]): seed 000's TCP stream, a 16-byte ASCII length and
//!   the JPEG. That protocol has no ack: a frame counts as acked once fully written.
//!   Connections are made with a timeout, writes have a timeout, and a failed connection
//!   is retried with a bounded exponential backoff.
//!
//! The byte formats come from [`crate::wire`]; nothing here defines one. The UDP senders
//! wait for each ack at most the ack timeout; a frame without one counts as lost and the
//! client goes on. How late acks are kept from being counted for the wrong frame, and the
//! limit of that (the seed ack carries no frame id), is described in [`super::udp_link`].
//!
//! A later protocol (`framed`) adds one more implementation of [`FrameSender`].

use std::fmt;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown as NetShutdown, SocketAddr, TcpStream};
use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use super::udp_link::{Reply, UdpLink, SEND_BATCH};
use crate::proto::framed_sender::{
    Chunk, FramedSender as ProtoSender, GiveUp, SendError as ProtoSendError, SenderConfig,
    SenderEvent,
};
use crate::shutdown::Shutdown;
use crate::wire::framed;
use crate::wire::seed_tcp;
use crate::wire::seed_udp::{self, HeaderWidth, CHUNK_SIZE, IMG_ACK};
use crate::wire::MAX_UDP_PAYLOAD;
use std::sync::Arc;

/// The wire protocol a frame goes out in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
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
    /// Chunked: width of the length header (8 for a 64-bit Linux/macOS seed server, 4 for
    /// one on Windows, where Python's `'l'` is 4 bytes).
    pub header_width: HeaderWidth,
    /// Framed: payload bytes per datagram.
    pub chunk_size: usize,
    /// Framed: frames in flight at most (1 = stop-and-wait).
    pub window: usize,
}

impl Default for SenderOptions {
    fn default() -> Self {
        SenderOptions {
            ack_timeout: Duration::from_millis(1000),
            connect_timeout: Duration::from_millis(2000),
            header_width: HeaderWidth::Eight,
            chunk_size: framed::DEFAULT_CHUNK_SIZE,
            window: 1,
        }
    }
}

/// What became of one frame.
#[derive(Debug)]
pub enum FrameOutcome {
    /// The hub acked it (tcp: it was fully written); `rtt` runs from its first byte sent.
    Acked { rtt: Duration },
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

impl std::error::Error for SendError {}

impl From<io::Error> for SendError {
    fn from(e: io::Error) -> Self {
        SendError::Io(e)
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

/// Sends frames to the hub in one protocol.
pub trait FrameSender: Send {
    /// Send one JPEG frame and wait (bounded) for its ack; returns the outcomes of the frames
    /// that finished during the call: this frame's for the stop-and-wait protocols, any
    /// earlier in-flight frames' with a window. `stop` cuts short waits that are not for an
    /// ack (tcp reconnect backoff); an ack wait always runs to its timeout.
    fn send_frame(&mut self, jpeg: &[u8], stop: &Shutdown) -> Result<Vec<FrameOutcome>, SendError>;
    /// [`FrameSender::send_frame`] for a frame the caller already holds in an `Arc`: a
    /// sender that keeps frames in flight keeps this one without copying it.
    fn send_shared(
        &mut self,
        jpeg: &Arc<Vec<u8>>,
        stop: &Shutdown,
    ) -> Result<Vec<FrameOutcome>, SendError> {
        self.send_frame(jpeg, stop)
    }
    /// Wait (bounded) for the frames still in flight; their outcomes.
    fn flush(&mut self) -> Result<Vec<FrameOutcome>, SendError> {
        Ok(Vec::new())
    }
    /// Late and ignored replies so far.
    fn reply_counts(&self) -> ReplyCounts;
    /// Called once after the last frame (tcp: close the stream cleanly).
    fn finish(&mut self) {}
    /// What the RTT samples measure, for the summary.
    fn rtt_meaning(&self) -> &'static str;
}

/// The sender for `protocol`, aimed at `hub`.
pub fn open_sender(
    protocol: Protocol,
    hub: SocketAddr,
    options: &SenderOptions,
) -> io::Result<Box<dyn FrameSender>> {
    Ok(match protocol {
        Protocol::Framed => Box::new(FramedUdpSender::open(hub, options)?),
        Protocol::Chunked => Box::new(ChunkedSender::open(hub, options)?),
        Protocol::Single => Box::new(SingleSender::open(hub, options)?),
        Protocol::Tcp => Box::new(TcpSender::new(hub, options)),
    })
}

fn is_img_ack(payload: &[u8]) -> Option<()> {
    (payload == IMG_ACK).then_some(())
}

/// Wait for the ack of a frame whose first byte went out at `started`.
fn await_ack(link: &mut UdpLink, started: Instant, timeout: Duration) -> io::Result<FrameOutcome> {
    let deadline = Instant::now() + timeout;
    Ok(match link.wait_reply(deadline, is_img_ack)? {
        Reply::Got((), at) => FrameOutcome::Acked {
            rtt: at.saturating_duration_since(started),
        },
        Reply::TimedOut => FrameOutcome::Lost(LostReason::NoAck),
    })
}

fn udp_reply_counts(link: &UdpLink, late_acks: u64) -> ReplyCounts {
    ReplyCounts {
        late_acks,
        ignored: link.ignored(),
    }
}

const UDP_RTT: &str = "first datagram sent to ack received";

/// Seed 002's chunked UDP format.
#[derive(Debug)]
pub struct ChunkedSender {
    link: UdpLink,
    options: SenderOptions,
    late_acks: u64,
}

impl ChunkedSender {
    pub fn open(hub: SocketAddr, options: &SenderOptions) -> io::Result<Self> {
        Ok(ChunkedSender {
            link: UdpLink::open(hub)?,
            options: options.clone(),
            late_acks: 0,
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.link.local_addr()
    }
}

impl FrameSender for ChunkedSender {
    fn send_frame(
        &mut self,
        jpeg: &[u8],
        _stop: &Shutdown,
    ) -> Result<Vec<FrameOutcome>, SendError> {
        let max = match self.options.header_width {
            HeaderWidth::Eight => i64::MAX as usize,
            HeaderWidth::Four => i32::MAX as usize,
        };
        if jpeg.len() > max {
            return Err(SendError::FrameTooLarge {
                len: jpeg.len(),
                max,
                protocol: Protocol::Chunked,
            });
        }
        self.late_acks += self.link.drain(|p| is_img_ack(p).is_some())?;
        let header = seed_udp::emit_length_header(jpeg.len() as i64, self.options.header_width);
        let started = Instant::now();
        let datagrams = std::iter::once(&header[..]).chain(seed_udp::seed_chunks(jpeg, CHUNK_SIZE));
        // up to SEND_BATCH datagrams per syscall; the frame stops at the first that fails
        let mut failed = None;
        self.link
            .send_gathered(datagrams.map(|d| [d, &[][..]]), |_, e| {
                failed = Some(e);
                ControlFlow::Break(())
            });
        if let Some(e) = failed {
            return Ok(vec![FrameOutcome::Lost(LostReason::SendFailed(e))]);
        }
        Ok(vec![await_ack(
            &mut self.link,
            started,
            self.options.ack_timeout,
        )?])
    }

    fn reply_counts(&self) -> ReplyCounts {
        udp_reply_counts(&self.link, self.late_acks)
    }

    fn rtt_meaning(&self) -> &'static str {
        UDP_RTT
    }
}

/// Seed 002's single-datagram UDP format.
#[derive(Debug)]
pub struct SingleSender {
    link: UdpLink,
    options: SenderOptions,
    late_acks: u64,
}

impl SingleSender {
    pub fn open(hub: SocketAddr, options: &SenderOptions) -> io::Result<Self> {
        Ok(SingleSender {
            link: UdpLink::open(hub)?,
            options: options.clone(),
            late_acks: 0,
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.link.local_addr()
    }
}

impl FrameSender for SingleSender {
    fn send_frame(
        &mut self,
        jpeg: &[u8],
        _stop: &Shutdown,
    ) -> Result<Vec<FrameOutcome>, SendError> {
        if jpeg.len() > MAX_UDP_PAYLOAD {
            return Err(SendError::FrameTooLarge {
                len: jpeg.len(),
                max: MAX_UDP_PAYLOAD,
                protocol: Protocol::Single,
            });
        }
        self.late_acks += self.link.drain(|p| is_img_ack(p).is_some())?;
        let started = Instant::now();
        if let Err(e) = self.link.send(jpeg) {
            return Ok(vec![FrameOutcome::Lost(LostReason::SendFailed(e))]);
        }
        Ok(vec![await_ack(
            &mut self.link,
            started,
            self.options.ack_timeout,
        )?])
    }

    fn reply_counts(&self) -> ReplyCounts {
        udp_reply_counts(&self.link, self.late_acks)
    }

    fn rtt_meaning(&self) -> &'static str {
        UDP_RTT
    }
}

/// udphub's framed UDP format, driving the socket-free [`proto::framed_sender`] state
/// machine: this loop only moves datagrams and passes the time in.
pub struct FramedUdpSender {
    link: UdpLink,
    proto: ProtoSender,
    /// The datagrams of one pump, sent together (kept to reuse its allocation).
    chunks: Vec<Chunk>,
    window: usize,
    chunk_size: usize,
    frame_deadline: Duration,
}

impl FramedUdpSender {
    /// A sender with a fresh random stream id, so the hub recognises a restarted client.
    pub fn open(hub: SocketAddr, options: &SenderOptions) -> io::Result<Self> {
        let config = SenderConfig {
            chunk_size: options.chunk_size,
            window: options.window,
            frame_deadline: options.ack_timeout,
            ..SenderConfig::default()
        };
        Ok(FramedUdpSender {
            link: UdpLink::open(hub)?,
            proto: ProtoSender::new(config, hub, random_stream_id(), Instant::now()),
            chunks: Vec::with_capacity(SEND_BATCH),
            window: options.window.max(1),
            chunk_size: options.chunk_size,
            frame_deadline: options.ack_timeout,
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.link.local_addr()
    }

    /// Send what the state machine has queued, wait for a reply or its next timer (at most
    /// until `until`), and collect finished frames into `out`.
    fn pump(&mut self, until: Instant, out: &mut Vec<FrameOutcome>) -> io::Result<()> {
        let Self {
            link,
            proto,
            chunks,
            ..
        } = self;
        let now = Instant::now();
        // what is queued goes out SEND_BATCH datagrams per syscall, payloads not copied
        loop {
            chunks.extend(std::iter::from_fn(|| proto.poll_chunk(now)).take(SEND_BATCH));
            if chunks.is_empty() {
                break;
            }
            link.send_gathered(
                chunks.iter().map(|c| [&c.header[..], c.payload()]),
                // a full socket buffer or an ICMP error: the resend logic covers it
                |_, e| {
                    log::debug!("framed: send failed: {e}");
                    ControlFlow::Continue(())
                },
            );
            chunks.clear();
        }
        let wake = proto.poll_timeout().map_or(until, |t| t.min(until));
        let got = link.wait_reply(wake, |p| {
            framed::is_framed(p).then(|| proto.handle_datagram(p, Instant::now()))
        })?;
        if got == Reply::TimedOut || proto.poll_timeout().is_some_and(|t| t <= Instant::now()) {
            proto.handle_timeout(Instant::now());
        }
        while let Some(event) = proto.poll_event() {
            out.push(match event {
                SenderEvent::Acked { latency, .. } => FrameOutcome::Acked { rtt: latency },
                SenderEvent::GaveUp { reason, .. } => {
                    FrameOutcome::Lost(LostReason::GaveUp(reason))
                }
            });
        }
        Ok(())
    }

    /// Pump until `done` holds; bounded by the frame deadline (plus slack for the last probe).
    fn pump_until(
        &mut self,
        out: &mut Vec<FrameOutcome>,
        done: impl Fn(&ProtoSender) -> bool,
    ) -> io::Result<()> {
        let limit = Instant::now() + self.frame_deadline * 2 + Duration::from_millis(100);
        while !done(&self.proto) && Instant::now() < limit {
            self.pump(limit, out)?;
        }
        Ok(())
    }
}

impl FrameSender for FramedUdpSender {
    fn send_frame(&mut self, jpeg: &[u8], stop: &Shutdown) -> Result<Vec<FrameOutcome>, SendError> {
        self.send_shared(&Arc::new(jpeg.to_vec()), stop)
    }

    fn send_shared(
        &mut self,
        jpeg: &Arc<Vec<u8>>,
        _stop: &Shutdown,
    ) -> Result<Vec<FrameOutcome>, SendError> {
        let mut out = Vec::new();
        self.pump_until(&mut out, ProtoSender::can_send)?;
        match self.proto.send_frame(Arc::clone(jpeg), Instant::now()) {
            Ok(_) => {}
            Err(ProtoSendError::TooLarge) => {
                return Err(SendError::FrameTooLarge {
                    len: jpeg.len(),
                    max: u16::MAX as usize * self.chunk_size,
                    protocol: Protocol::Framed,
                })
            }
            Err(ProtoSendError::Empty | ProtoSendError::WindowFull) => {
                out.push(FrameOutcome::NotSent);
                return Ok(out);
            }
        }
        if self.window == 1 {
            // stop-and-wait: this frame's outcome comes back from this call
            self.pump_until(&mut out, |p| p.in_flight() == 0)?;
        } else {
            // keep the window moving: take whatever replies are already here
            self.pump(Instant::now(), &mut out)?;
        }
        Ok(out)
    }

    fn flush(&mut self) -> Result<Vec<FrameOutcome>, SendError> {
        let mut out = Vec::new();
        self.pump_until(&mut out, |p| p.in_flight() == 0)?;
        Ok(out)
    }

    fn reply_counts(&self) -> ReplyCounts {
        udp_reply_counts(&self.link, 0)
    }

    fn rtt_meaning(&self) -> &'static str {
        UDP_RTT
    }
}

/// A stream id that differs between runs (and between clients started together).
fn random_stream_id() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    h.write_u32(std::process::id());
    h.finish() as u32
}

/// Reconnection delays: doubling from [`Backoff::FIRST`] up to [`Backoff::MAX`].
#[derive(Clone, Debug)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { next: Self::FIRST }
    }
}

impl Backoff {
    pub const FIRST: Duration = Duration::from_millis(100);
    pub const MAX: Duration = Duration::from_secs(5);

    /// The delay after one more failure.
    pub fn failed(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        d
    }

    pub fn reset(&mut self) {
        self.next = Self::FIRST;
    }
}

/// Write `head` then `body`, as one `writev` when the socket takes it all (so the 16-byte
/// header does not go out as a segment of its own).
fn write_all_two(stream: &mut TcpStream, head: &[u8], body: &[u8]) -> io::Result<()> {
    let mut parts = [io::IoSlice::new(head), io::IoSlice::new(body)];
    let mut left = &mut parts[..];
    while !left.is_empty() {
        match stream.write_vectored(left) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => io::IoSlice::advance_slices(&mut left, n),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Seed 000's TCP stream.
#[derive(Debug)]
pub struct TcpSender {
    hub: SocketAddr,
    options: SenderOptions,
    stream: Option<TcpStream>,
    backoff: Backoff,
    /// No connection attempt before this.
    next_attempt: Instant,
}

impl TcpSender {
    /// Nothing is connected until the first frame.
    pub fn new(hub: SocketAddr, options: &SenderOptions) -> Self {
        TcpSender {
            hub,
            options: options.clone(),
            stream: None,
            backoff: Backoff::default(),
            next_attempt: Instant::now(),
        }
    }

    fn connect(&mut self) -> io::Result<TcpStream> {
        let stream = TcpStream::connect_timeout(&self.hub, self.options.connect_timeout)?;
        stream.set_nodelay(true)?;
        stream.set_write_timeout(Some(self.options.ack_timeout.max(Duration::from_millis(1))))?;
        Ok(stream)
    }

    /// True if the hub has closed (or reset) the connection. The seed TCP receiver never
    /// sends anything, so readable data would only be unexpected bytes (ignored). One
    /// non-blocking receive (`MSG_DONTWAIT`), not a switch of the socket's mode and back.
    #[cfg(unix)]
    fn peer_closed(stream: &TcpStream) -> bool {
        let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 256];
        match socket2::SockRef::from(stream).recv_with_flags(&mut buf, libc::MSG_DONTWAIT) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted),
        }
    }

    /// True if the hub has closed (or reset) the connection.
    #[cfg(not(unix))]
    fn peer_closed(stream: &TcpStream) -> bool {
        if stream.set_nonblocking(true).is_err() {
            return true;
        }
        let mut buf = [0u8; 256];
        let closed = match (&*stream).read(&mut buf) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => e.kind() != ErrorKind::WouldBlock,
        };
        stream.set_nonblocking(false).is_err() || closed
    }
}

impl FrameSender for TcpSender {
    fn send_frame(&mut self, jpeg: &[u8], stop: &Shutdown) -> Result<Vec<FrameOutcome>, SendError> {
        if let Some(stream) = &self.stream {
            if Self::peer_closed(stream) {
                log::warn!("tcp: the hub closed the connection; reconnecting");
                self.stream = None;
            }
        }
        if self.stream.is_none() {
            let wait = self.next_attempt.saturating_duration_since(Instant::now());
            if !wait.is_zero() && stop.wait_timeout(wait) {
                return Ok(vec![FrameOutcome::NotSent]);
            }
            match self.connect() {
                Ok(stream) => {
                    log::info!("tcp: connected to {}", self.hub);
                    self.backoff.reset();
                    self.stream = Some(stream);
                }
                Err(e) => {
                    let delay = self.backoff.failed();
                    self.next_attempt = Instant::now() + delay;
                    return Ok(vec![FrameOutcome::Lost(LostReason::ConnectFailed(e))]);
                }
            }
        }
        let stream = self.stream.as_mut().expect("connected above");
        let started = Instant::now();
        let written = write_all_two(stream, &seed_tcp::emit_header(jpeg.len()), jpeg);
        match written {
            Ok(()) => Ok(vec![FrameOutcome::Acked {
                rtt: started.elapsed(),
            }]),
            Err(e) => {
                // Part of a frame may be on the wire: the stream is out of step, start over.
                self.stream = None;
                self.next_attempt = Instant::now();
                Ok(vec![FrameOutcome::Lost(LostReason::SendFailed(e))])
            }
        }
    }

    fn reply_counts(&self) -> ReplyCounts {
        ReplyCounts::default()
    }

    /// Close the sending side and wait (at most the ack timeout) for the hub to close its
    /// side, which it does once it has read every frame: then nothing sent is still unread.
    fn finish(&mut self) {
        let Some(mut stream) = self.stream.take() else {
            return;
        };
        if stream.shutdown(NetShutdown::Write).is_err() {
            return;
        }
        let deadline = Instant::now() + self.options.ack_timeout;
        let mut buf = [0u8; 256];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
                log::warn!("tcp: the hub did not close the connection within the ack timeout");
                return;
            }
            match stream.read(&mut buf) {
                Ok(0) => return log::debug!("tcp: the hub closed the connection"),
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) => return log::debug!("tcp: closing: {e}"),
            }
        }
    }

    fn rtt_meaning(&self) -> &'static str {
        "tcp: time to write the frame; this protocol has no ack"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, UdpSocket};
    use std::sync::mpsc;
    use std::thread;

    const LONG: Duration = Duration::from_secs(10);

    fn fake_jpeg(len: usize) -> Vec<u8> {
        let mut v: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        v[..2].copy_from_slice(&[0xFF, 0xD8]);
        let n = v.len();
        v[n - 2..].copy_from_slice(&[0xFF, 0xD9]);
        v
    }

    fn options(ack_ms: u64) -> SenderOptions {
        SenderOptions {
            ack_timeout: Duration::from_millis(ack_ms),
            ..SenderOptions::default()
        }
    }

    fn recv(sock: &UdpSocket) -> (Vec<u8>, SocketAddr) {
        let mut buf = vec![0u8; 70_000];
        let (n, from) = sock.recv_from(&mut buf).unwrap();
        buf.truncate(n);
        (buf, from)
    }

    #[test]
    fn chunked_sends_the_seed_datagrams_and_gets_the_ack() {
        let hub = UdpSocket::bind("127.0.0.1:0").unwrap();
        hub.set_read_timeout(Some(LONG)).unwrap();
        let mut sender = ChunkedSender::open(hub.local_addr().unwrap(), &options(10_000)).unwrap();
        // 2048 bytes: a multiple of 1024, so the seed loop ends with an empty datagram.
        let frame = fake_jpeg(2048);
        let server = thread::spawn(move || {
            let mut got = Vec::new();
            for _ in 0..4 {
                got.push(recv(&hub));
            }
            hub.send_to(IMG_ACK, got[0].1).unwrap();
            got.into_iter().map(|(d, _)| d).collect::<Vec<_>>()
        });
        let [outcome] =
            <[FrameOutcome; 1]>::try_from(sender.send_frame(&frame, &Shutdown::new()).unwrap())
                .unwrap();
        assert!(matches!(outcome, FrameOutcome::Acked { .. }), "{outcome:?}");
        let datagrams = server.join().unwrap();
        assert_eq!(datagrams[0], 2048i64.to_le_bytes());
        assert_eq!(datagrams[1], frame[..1024]);
        assert_eq!(datagrams[2], frame[1024..]);
        assert!(datagrams[3].is_empty());
        assert_eq!(sender.reply_counts(), ReplyCounts::default());
    }

    #[test]
    fn four_byte_header_for_windows_seed_servers() {
        let hub = UdpSocket::bind("127.0.0.1:0").unwrap();
        hub.set_read_timeout(Some(LONG)).unwrap();
        let opts = SenderOptions {
            header_width: HeaderWidth::Four,
            ..options(10_000)
        };
        let mut sender = ChunkedSender::open(hub.local_addr().unwrap(), &opts).unwrap();
        let server = thread::spawn(move || {
            let (header, from) = recv(&hub);
            let (data, _) = recv(&hub);
            hub.send_to(IMG_ACK, from).unwrap();
            (header, data.len())
        });
        let outcome = sender
            .send_frame(&fake_jpeg(100), &Shutdown::new())
            .unwrap();
        assert!(
            matches!(outcome[..], [FrameOutcome::Acked { .. }]),
            "{outcome:?}"
        );
        assert_eq!(server.join().unwrap(), (100i32.to_le_bytes().to_vec(), 100));
    }

    #[test]
    fn a_late_ack_is_not_taken_for_the_next_frames() {
        let hub = UdpSocket::bind("127.0.0.1:0").unwrap();
        hub.set_read_timeout(Some(LONG)).unwrap();
        let mut sender = SingleSender::open(hub.local_addr().unwrap(), &options(50)).unwrap();
        let stop = Shutdown::new();
        let frame = fake_jpeg(500);

        // Frame 1: the hub stays silent, so it is lost.
        let [outcome] =
            <[FrameOutcome; 1]>::try_from(sender.send_frame(&frame, &stop).unwrap()).unwrap();
        assert!(matches!(outcome, FrameOutcome::Lost(LostReason::NoAck)));
        let (_, client) = recv(&hub);
        // Its ack comes late, plus a stranger's ack: both queued before frame 2 is sent.
        hub.send_to(IMG_ACK, client).unwrap();
        UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .send_to(IMG_ACK, client)
            .unwrap();

        // Frame 2: the hub stays silent again; the queued acks must not count for it.
        let [outcome] =
            <[FrameOutcome; 1]>::try_from(sender.send_frame(&frame, &stop).unwrap()).unwrap();
        assert!(matches!(outcome, FrameOutcome::Lost(LostReason::NoAck)));
        recv(&hub);
        assert_eq!(
            sender.reply_counts(),
            ReplyCounts {
                late_acks: 1,
                ignored: 1
            }
        );
    }

    #[test]
    fn single_refuses_frames_over_one_datagram() {
        let hub = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut sender = SingleSender::open(hub.local_addr().unwrap(), &options(50)).unwrap();
        let err = sender
            .send_frame(&fake_jpeg(MAX_UDP_PAYLOAD + 1), &Shutdown::new())
            .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("65508-byte"), "{msg}");
        assert!(msg.contains("--quality"), "{msg}");
        assert!(msg.contains("--protocol chunked"), "{msg}");
    }

    #[test]
    fn tcp_writes_header_and_frame_then_closes_cleanly() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = mpsc::channel();
        let server = thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            conn.set_read_timeout(Some(LONG)).unwrap();
            let mut all = Vec::new();
            conn.read_to_end(&mut all).unwrap();
            tx.send(all).unwrap();
            // dropping conn closes the hub's side, which finish() waits for
        });
        let mut sender = TcpSender::new(addr, &options(10_000));
        let stop = Shutdown::new();
        let (a, b) = (fake_jpeg(300), fake_jpeg(70_000));
        for frame in [&a, &b] {
            let [outcome] =
                <[FrameOutcome; 1]>::try_from(sender.send_frame(frame, &stop).unwrap()).unwrap();
            assert!(matches!(outcome, FrameOutcome::Acked { .. }), "{outcome:?}");
        }
        sender.finish();
        let all = rx.recv_timeout(LONG).unwrap();
        server.join().unwrap();
        let mut want = b"300             ".to_vec();
        want.extend_from_slice(&a);
        want.extend_from_slice(b"70000           ");
        want.extend_from_slice(&b);
        assert!(all == want, "stream differs");
    }

    #[test]
    fn tcp_without_a_listener_loses_frames_and_backs_off() {
        // A port that was just free: connecting is refused.
        let addr = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let mut sender = TcpSender::new(addr, &options(200));
        let stop = Shutdown::new();
        let [outcome] =
            <[FrameOutcome; 1]>::try_from(sender.send_frame(&fake_jpeg(10), &stop).unwrap())
                .unwrap();
        assert!(
            matches!(outcome, FrameOutcome::Lost(LostReason::ConnectFailed(_))),
            "{outcome:?}"
        );
        // The next attempt waits for the backoff; a stop cuts the wait and sends nothing.
        stop.trigger();
        let [outcome] =
            <[FrameOutcome; 1]>::try_from(sender.send_frame(&fake_jpeg(10), &stop).unwrap())
                .unwrap();
        assert!(matches!(outcome, FrameOutcome::NotSent), "{outcome:?}");
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_and_resets() {
        let mut b = Backoff::default();
        let delays: Vec<u128> = (0..8).map(|_| b.failed().as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        b.reset();
        assert_eq!(b.failed(), Backoff::FIRST);
    }
}
