//! Seed 000's TCP stream as a sender: [`SeedTcpSender`] writes a 16-byte ASCII length and
//! the JPEG for each frame ([`crate::wire::seed_tcp`]). The protocol has no ack, so a frame
//! counts as written ([`FrameOutcome::Written`]) once the kernel took all of it, with the
//! time the write took; never as acked.
//!
//! Never a backlog: the kernel may hold at most [`DEFAULT_SEND_BUFFER`] (or
//! `--tcp-send-buffer`) of a stream's bytes, sent-but-unacked ones included, and a write
//! returns only once fewer than [`NOTSENT_LOWAT`] of them are still unsent (Linux's
//! `TCP_NOTSENT_LOWAT`), and (Linux, where the kernel has it) the connection uses BBR
//! congestion control, which keeps about the path's bandwidth-delay product in flight
//! rather than filling the bottleneck's queue. So a frame's write takes as long as the link needs to carry it,
//! and the frames the camera makes meanwhile replace each other upstream (latest frame
//! wins, counted as skipped) instead of queueing seconds of video in the kernel, where a
//! blocking `sendall` with the default, autotuned buffer (up to 4 MB) puts them.
//!
//! Nothing waits unbounded: a connection attempt has the connect timeout, a write that makes
//! no progress for the ack timeout fails (the stream, out of step, is dropped and made again),
//! a failed connection is retried after a [`Backoff`] that `stop` cuts short, and a stalled
//! write also ends within [`STOP_POLL`] of `stop`.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown as NetShutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use super::{FrameOutcome, ImgSender, LostReason, ReplyCounts, SendError, SenderOptions};
use crate::client::udp_link::STOP_POLL;
use crate::shutdown::Shutdown;
use crate::wire::seed_tcp;

/// The send buffer asked for by default (`SO_SNDBUF`; Linux doubles it: 128 KiB of sent and
/// unsent bytes, 130 ms at 8 Mbit/s, ample for a LAN's bandwidth-delay product).
pub const DEFAULT_SEND_BUFFER: usize = 64 * 1024;

/// A write returns once fewer than this many of the stream's bytes are still unsent.
pub const NOTSENT_LOWAT: u32 = 16 * 1024;

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

/// Why a frame's write did not complete.
enum WriteFailed {
    Io(io::Error),
    /// `stop` was set while the socket took nothing.
    Stopped,
}

/// Write `head` then `body`, as one `writev` when the socket takes it all (so the 16-byte
/// header does not go out as a segment of its own). The socket's write timeout is a slice
/// of at most [`STOP_POLL`] (see [`SeedTcpSender::connect`]): when a slice passes with
/// nothing taken, the write ends if `stop` is set, or fails with the socket's error once
/// nothing was taken for `stall_limit` (checked at slice ends, so up to one slice later).
fn write_all_two(
    stream: &mut TcpStream,
    head: &[u8],
    body: &[u8],
    stall_limit: Duration,
    stop: &Shutdown,
) -> Result<(), WriteFailed> {
    let mut parts = [io::IoSlice::new(head), io::IoSlice::new(body)];
    let mut left = &mut parts[..];
    let mut progress_at = Instant::now();
    while !left.is_empty() {
        match stream.write_vectored(left) {
            Ok(0) => return Err(WriteFailed::Io(ErrorKind::WriteZero.into())),
            Ok(n) => {
                io::IoSlice::advance_slices(&mut left, n);
                progress_at = Instant::now();
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if stop.is_triggered() {
                    return Err(WriteFailed::Stopped);
                }
                if progress_at.elapsed() >= stall_limit {
                    return Err(WriteFailed::Io(e));
                }
            }
            Err(e) => return Err(WriteFailed::Io(e)),
        }
    }
    Ok(())
}

/// Bound what the kernel queues for `stream`: its send buffer, when given, and (Linux) the
/// unsent bytes a write leaves behind.
fn bound_queue(stream: &TcpStream, send_buffer: Option<usize>) -> io::Result<()> {
    let sock = socket2::SockRef::from(stream);
    if let Some(bytes) = send_buffer {
        sock.set_send_buffer_size(bytes)?;
    }
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let lowat: libc::c_int = NOTSENT_LOWAT as libc::c_int;
        // SAFETY: a valid socket, and a pointer to a c_int of the size given.
        let rc = unsafe {
            libc::setsockopt(
                stream.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_NOTSENT_LOWAT,
                (&lowat as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // BBR paces at the bottleneck's rate and keeps about its bandwidth-delay product in
        // flight, where the default (cubic, loss-based) fills a deep access-point queue
        // (up to the send buffer) before it backs off: the difference between a frame's
        // time on the link and that plus a buffer's worth. Where the kernel has no BBR (or
        // does not let this user pick it) the default stays.
        const CONGESTION: &[u8] = b"bbr";
        // SAFETY: a valid socket, and a pointer to CONGESTION.len() bytes.
        let rc = unsafe {
            libc::setsockopt(
                stream.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_CONGESTION,
                CONGESTION.as_ptr().cast(),
                CONGESTION.len() as libc::socklen_t,
            )
        };
        if rc != 0 {
            log::debug!(
                "tcp: congestion control bbr not available ({}); the kernel's default stays",
                io::Error::last_os_error()
            );
        }
    }
    Ok(())
}

/// Seed 000's TCP stream.
#[derive(Debug)]
pub struct SeedTcpSender {
    hub: SocketAddr,
    options: SenderOptions,
    stream: Option<TcpStream>,
    backoff: Backoff,
    /// No connection attempt before this.
    next_attempt: Instant,
}

impl SeedTcpSender {
    /// Nothing is connected until the first frame.
    pub fn new(hub: SocketAddr, options: &SenderOptions) -> Self {
        SeedTcpSender {
            hub,
            options: options.clone(),
            stream: None,
            backoff: Backoff::default(),
            next_attempt: Instant::now(),
        }
    }

    /// Connect (bounded by the connect timeout); writes get a timeout of one slice.
    fn connect(&mut self) -> io::Result<TcpStream> {
        let stream = TcpStream::connect_timeout(&self.hub, self.options.connect_timeout)?;
        stream.set_nodelay(true)?;
        bound_queue(&stream, self.options.tcp_send_buffer)?;
        // a slice of the stall limit (the ack timeout), so a stalled write sees `stop`
        let slice = self.options.ack_timeout.min(STOP_POLL);
        stream.set_write_timeout(Some(slice.max(Duration::from_millis(1))))?;
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

impl ImgSender for SeedTcpSender {
    fn stamps_capture_time(&self) -> bool {
        true
    }

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
        let header = seed_tcp::emit_header(jpeg.len());
        let written = write_all_two(stream, &header, jpeg, self.options.ack_timeout, stop);
        let reason = match written {
            Ok(()) => {
                return Ok(vec![FrameOutcome::Written {
                    took: started.elapsed(),
                }])
            }
            Err(WriteFailed::Io(e)) => LostReason::SendFailed(e),
            Err(WriteFailed::Stopped) => LostReason::Stopped,
        };
        // Part of a frame may be on the wire: the stream is out of step, start over.
        self.stream = None;
        self.next_attempt = Instant::now();
        Ok(vec![FrameOutcome::Lost(reason)])
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
}

#[cfg(test)]
mod tests {
    use super::super::testing::{fake_jpeg, options, LONG};
    use super::*;
    use std::net::TcpListener;
    use std::sync::mpsc;
    use std::thread;

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
        let mut sender = SeedTcpSender::new(addr, &options(10_000));
        let stop = Shutdown::new();
        let (a, b) = (fake_jpeg(300), fake_jpeg(70_000));
        for frame in [&a, &b] {
            let [outcome] =
                <[FrameOutcome; 1]>::try_from(sender.send_frame(frame, &stop).unwrap()).unwrap();
            assert!(
                matches!(outcome, FrameOutcome::Written { .. }),
                "{outcome:?}"
            );
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
        let mut sender = SeedTcpSender::new(addr, &options(200));
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

    #[test]
    fn a_stop_ends_a_stalled_write() {
        // A hub that accepts and never reads: a frame far over the socket buffers stalls.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let hub = thread::spawn(move || listener.accept().map(|(conn, _)| conn));
        // An hour-long stall limit: only the stop can end the write.
        let mut sender = SeedTcpSender::new(addr, &options(3_600_000));
        let stop = Shutdown::new();
        stop.trigger();
        let [outcome] =
            <[FrameOutcome; 1]>::try_from(sender.send_frame(&fake_jpeg(64 << 20), &stop).unwrap())
                .unwrap();
        assert!(
            matches!(outcome, FrameOutcome::Lost(LostReason::Stopped)),
            "{outcome:?}"
        );
        drop(hub.join().unwrap());
    }
}
