//! Seed 002's UDP image formats as a sender: one [`SeedUdpSender`] for both, the
//! [`SeedUdpFormat`] says which datagrams a frame becomes (`chunked`: a length header and
//! 1024-byte slices; `single`: the whole JPEG). Everything after that is the same: drain
//! late acks, send, wait (bounded, cut short by `stop`) for `get message!!!`.
//!
//! The seed ack carries no frame id, so the wait and the drain before it follow the rules of
//! [`crate::client::udp_link`]. The byte rules (header width, slicing) are
//! [`crate::wire::seed_udp`]'s.

use std::io;
use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use super::{
    capture_to, CapturedFrame, FrameOutcome, ImgSender, LostReason, Protocol, ReplyCounts,
    SendError,
};
use crate::client::udp_link::{Reply, UdpLink};
use crate::shutdown::Shutdown;
use crate::wire::seed_udp::{emit_length_header, seed_chunks, HeaderWidth, CHUNK_SIZE, IMG_ACK};
use crate::wire::MAX_UDP_PAYLOAD;

/// Which of the seed's two UDP formats a [`SeedUdpSender`] speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeedUdpFormat {
    /// A `struct.pack('l', len)` header of this width, then [`CHUNK_SIZE`]-byte datagrams.
    Chunked(HeaderWidth),
    /// The whole JPEG in one datagram (at most [`MAX_UDP_PAYLOAD`] bytes).
    Single,
}

impl SeedUdpFormat {
    fn protocol(self) -> Protocol {
        match self {
            SeedUdpFormat::Chunked(_) => Protocol::Chunked,
            SeedUdpFormat::Single => Protocol::Single,
        }
    }
}

/// Seed 002's UDP image sender, in either format.
#[derive(Debug)]
pub struct SeedUdpSender {
    link: UdpLink,
    format: SeedUdpFormat,
    ack_timeout: Duration,
    late_acks: u64,
}

fn is_img_ack(payload: &[u8]) -> Option<()> {
    (payload == IMG_ACK).then_some(())
}

impl SeedUdpSender {
    pub fn open(hub: SocketAddr, format: SeedUdpFormat, ack_timeout: Duration) -> io::Result<Self> {
        Ok(SeedUdpSender {
            link: UdpLink::open(hub)?,
            format,
            ack_timeout,
            late_acks: 0,
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.link.local_addr()
    }

    /// The length header a `chunked` frame of `len` bytes starts with (`None` for `single`),
    /// or the error for a frame the format cannot carry.
    fn header(&self, len: usize) -> Result<Option<Vec<u8>>, SendError> {
        let too_large = |max: usize| SendError::FrameTooLarge {
            len,
            max,
            protocol: self.format.protocol(),
        };
        match self.format {
            SeedUdpFormat::Single if len > MAX_UDP_PAYLOAD => Err(too_large(MAX_UDP_PAYLOAD)),
            SeedUdpFormat::Single => Ok(None),
            // a slice is at most isize::MAX bytes, which an i64 holds; emit refuses only a
            // length over the header's width (HeaderError::DoesNotFit)
            SeedUdpFormat::Chunked(width) => emit_length_header(len as i64, width)
                .map(Some)
                .map_err(|_| too_large(usize::try_from(width.max_len()).unwrap_or(usize::MAX))),
        }
    }
}

impl ImgSender for SeedUdpSender {
    fn send_frame(&mut self, jpeg: &[u8], stop: &Shutdown) -> Result<Vec<FrameOutcome>, SendError> {
        self.send_bytes(jpeg, 0, stop)
    }

    /// `frame` as it is (the caller stamps it: [`ImgSender::stamps_capture_time`]); its
    /// capture time gives the ack's capture-to-ack time.
    fn send(
        &mut self,
        frame: &CapturedFrame,
        stop: &Shutdown,
    ) -> Result<Vec<FrameOutcome>, SendError> {
        self.send_bytes(&frame.jpeg, frame.meta.capture_us, stop)
    }

    fn stamps_capture_time(&self) -> bool {
        true
    }

    fn reply_counts(&self) -> ReplyCounts {
        ReplyCounts {
            late_acks: self.late_acks,
            ignored: self.link.ignored(),
        }
    }
}

impl SeedUdpSender {
    /// Send `jpeg`, captured at `capture_us` (0 = unknown), and wait for its ack.
    fn send_bytes(
        &mut self,
        jpeg: &[u8],
        capture_us: u64,
        stop: &Shutdown,
    ) -> Result<Vec<FrameOutcome>, SendError> {
        let header = self.header(jpeg.len())?;
        self.late_acks += self.link.drain(|p| is_img_ack(p).is_some())?;
        let started = Instant::now();
        let sent = match &header {
            Some(header) => {
                // up to SEND_BATCH datagrams per syscall; the frame stops at the first that fails
                let datagrams = std::iter::once(&header[..]).chain(seed_chunks(jpeg, CHUNK_SIZE));
                let mut failed = None;
                self.link
                    .send_gathered(datagrams.map(|d| [d, &[][..]]), |_, e| {
                        failed = Some(e);
                        ControlFlow::Break(())
                    });
                failed.map_or(Ok(()), Err)
            }
            None => self.link.send(jpeg),
        };
        if let Err(e) = sent {
            return Ok(vec![FrameOutcome::Lost(LostReason::SendFailed(e))]);
        }
        let deadline = Instant::now() + self.ack_timeout;
        let outcome = match self.link.wait_reply_or_stop(deadline, stop, is_img_ack)? {
            Some(Reply::Got((), at)) => FrameOutcome::Acked {
                rtt: at.saturating_duration_since(started),
                capture_to_ack: capture_to(at, capture_us),
                bytes: jpeg.len(),
                resent: 0,
                meta: Default::default(),
            },
            Some(Reply::TimedOut) => FrameOutcome::Lost(LostReason::NoAck),
            None => FrameOutcome::Lost(LostReason::Stopped),
        };
        Ok(vec![outcome])
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{fake_jpeg, LONG};
    use super::*;
    use std::net::UdpSocket;
    use std::thread;

    fn recv(sock: &UdpSocket) -> (Vec<u8>, SocketAddr) {
        let mut buf = vec![0u8; 70_000];
        let (n, from) = sock.recv_from(&mut buf).unwrap();
        buf.truncate(n);
        (buf, from)
    }

    fn open(hub: &UdpSocket, format: SeedUdpFormat, ack_ms: u64) -> SeedUdpSender {
        let ack_timeout = Duration::from_millis(ack_ms);
        SeedUdpSender::open(hub.local_addr().unwrap(), format, ack_timeout).unwrap()
    }

    const CHUNKED: SeedUdpFormat = SeedUdpFormat::Chunked(HeaderWidth::Eight);

    #[test]
    fn chunked_sends_the_seed_datagrams_and_gets_the_ack() {
        let hub = UdpSocket::bind("127.0.0.1:0").unwrap();
        hub.set_read_timeout(Some(LONG)).unwrap();
        let mut sender = open(&hub, CHUNKED, 10_000);
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
        let mut sender = open(&hub, SeedUdpFormat::Chunked(HeaderWidth::Four), 10_000);
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
        let mut sender = open(&hub, SeedUdpFormat::Single, 50);
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
        let mut sender = open(&hub, SeedUdpFormat::Single, 50);
        let err = sender
            .send_frame(&fake_jpeg(MAX_UDP_PAYLOAD + 1), &Shutdown::new())
            .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("65508-byte"), "{msg}");
        assert!(msg.contains("--quality"), "{msg}");
        assert!(msg.contains("--protocol chunked"), "{msg}");
    }

    #[test]
    fn a_stop_cuts_the_ack_wait_short_and_the_frame_counts_as_stopped() {
        for format in [CHUNKED, SeedUdpFormat::Single] {
            let hub = UdpSocket::bind("127.0.0.1:0").unwrap();
            hub.set_read_timeout(Some(LONG)).unwrap();
            // An hour-long ack timeout against a silent hub: only the stop can end the wait.
            let mut sender = open(&hub, format, 3_600_000);
            let stop = Shutdown::new();
            let trigger = {
                let stop = stop.clone();
                // the frame's first datagram has arrived: its ack is being waited for
                thread::spawn(move || {
                    recv(&hub);
                    stop.trigger();
                })
            };
            let [outcome] =
                <[FrameOutcome; 1]>::try_from(sender.send_frame(&fake_jpeg(500), &stop).unwrap())
                    .unwrap();
            assert!(
                matches!(outcome, FrameOutcome::Lost(LostReason::Stopped)),
                "{format:?}: {outcome:?}"
            );
            trigger.join().unwrap();
        }
    }
}
