//! udphub's framed UDP format as a sender: [`FramedUdpSender`] drives the socket-free
//! [`framed_sender::FramedSender`] state machine, and this loop only moves datagrams and
//! passes the time in (sends what the machine queued, waits for a reply or its next timer,
//! hands replies and timeouts back, turns its events into [`FrameOutcome`]s).
//!
//! Every rule about the bytes, resends and giving up lives in [`crate::proto::framed_sender`];
//! what is decided here is only how long to wait and when `stop` ends a wait.
//!
//! With keys ([`super::SenderOptions::keys`]) every datagram goes through a
//! [`crate::secure::session::Initiator`]: the handshake first (chunks wait in the state
//! machine meanwhile, their deadlines running), then each chunk sealed on its own, and
//! replies opened before the state machine sees them. A hub that restarted is noticed by
//! the initiator (nothing authenticated back for a second) and the handshake redone.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{
    CapturedFrame, FecState, FrameOutcome, ImgSender, LostReason, Protocol, ReplyCounts, SendError,
};
use crate::client::udp_link::{Reply, UdpLink, SEND_BATCH};
use crate::proto::framed_sender::{self, Chunk, SenderConfig, SenderEvent};
use crate::secure::session::Initiator;
use crate::shutdown::Shutdown;
use crate::wire::framed;

/// Without keys: what is queued goes out SEND_BATCH datagrams per syscall, the payloads not
/// copied (`chunks` is kept between calls to reuse its allocation).
fn send_plain(
    link: &UdpLink,
    proto: &mut framed_sender::FramedSender,
    chunks: &mut Vec<Chunk>,
    now: Instant,
) {
    loop {
        chunks.extend(std::iter::from_fn(|| proto.poll_chunk(now)).take(SEND_BATCH));
        if chunks.is_empty() {
            return;
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
}

/// With keys: the initiator's handshake datagrams, then (once established) every queued
/// chunk sealed on its own, SEND_BATCH sealed datagrams per syscall as without keys. A send
/// error is left to the resend logic, as without keys.
fn send_sealed(
    link: &UdpLink,
    proto: &mut framed_sender::FramedSender,
    secure: &mut Initiator,
    now: Instant,
) {
    let send = |d: &[u8]| {
        if let Err(e) = link.send(d) {
            log::debug!("framed: send failed: {e}");
        }
    };
    if let Some(init) = secure.poll_transmit(now) {
        send(&init);
    }
    if !secure.is_established() {
        return;
    }
    let mut plain = Vec::new();
    let mut sealed: Vec<Vec<u8>> = Vec::with_capacity(SEND_BATCH);
    loop {
        while sealed.len() < SEND_BATCH {
            let Some(c) = proto.poll_chunk(now) else {
                break;
            };
            plain.clear();
            plain.extend_from_slice(&c.header);
            plain.extend_from_slice(c.payload());
            sealed.extend(secure.seal(&plain, now));
        }
        if sealed.is_empty() {
            break;
        }
        link.send_gathered(sealed.iter().map(|d| [&d[..], &[][..]]), |_, e| {
            log::debug!("framed: send failed: {e}");
            ControlFlow::Continue(())
        });
        sealed.clear();
    }
    // sealing may have started a rehandshake (nothing authenticated back for a while)
    if let Some(init) = secure.poll_transmit(now) {
        send(&init);
    }
}

/// udphub's framed UDP format over a [`UdpLink`].
pub struct FramedUdpSender {
    link: UdpLink,
    proto: framed_sender::FramedSender,
    /// With keys: the session with the hub.
    secure: Option<Initiator>,
    /// The datagrams of one pump, sent together (kept to reuse its allocation).
    chunks: Vec<Chunk>,
    window: usize,
    chunk_size: usize,
    frame_deadline: Duration,
    /// A stop cut a flush short and the frames in flight were counted as stopped: nothing
    /// more is sent or reported.
    stopped: bool,
    /// Chunks sent again, over every finished frame.
    resent: u64,
    /// The bytes of each frame in flight with its parity shards, by frame id (for
    /// [`FrameOutcome::Acked`]: what the link carried for it).
    sizes: HashMap<u32, usize>,
}

impl FramedUdpSender {
    /// A sender with a fresh random stream id, so the hub recognises a restarted client.
    pub fn open(hub: SocketAddr, options: &super::SenderOptions) -> io::Result<Self> {
        let config = SenderConfig {
            chunk_size: options.chunk_size,
            window: options.window,
            frame_deadline: options.ack_timeout,
            name: options.name.clone(),
            fec: options.fec,
            ..SenderConfig::default()
        };
        Ok(FramedUdpSender {
            link: UdpLink::open(hub)?,
            secure: options
                .keys
                .as_ref()
                .map(|k| Initiator::with_cipher(k.key.clone(), k.hub, k.cipher, Instant::now())),
            proto: framed_sender::FramedSender::new(
                config,
                hub,
                crate::client::random_run_id(),
                Instant::now(),
            ),
            chunks: Vec::with_capacity(SEND_BATCH),
            window: options.window.max(1),
            chunk_size: options.chunk_size,
            frame_deadline: options.ack_timeout,
            stopped: false,
            resent: 0,
            sizes: HashMap::new(),
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.link.local_addr()
    }

    /// Chunks sent again so far, counted when their frame finished (acked or given up).
    pub fn resent(&self) -> u64 {
        self.resent
    }

    /// Send what the state machine has queued, wait for a reply or its next timer (at most
    /// until `until`, cut short by `stop`), and collect finished frames into `out`.
    fn pump(
        &mut self,
        until: Instant,
        stop: &Shutdown,
        out: &mut Vec<FrameOutcome>,
    ) -> io::Result<()> {
        let Self {
            link,
            proto,
            chunks,
            resent: resent_total,
            secure,
            sizes,
            ..
        } = self;
        let now = Instant::now();
        match secure {
            Some(secure) => send_sealed(link, proto, secure, now),
            None => send_plain(link, proto, chunks, now),
        }
        let wake = [
            proto.poll_timeout(),
            secure.as_ref().and_then(Initiator::poll_timeout),
        ]
        .into_iter()
        .flatten()
        .fold(until, Instant::min);
        let got = link.wait_reply_or_stop(wake, stop, |p| match secure {
            None => framed::is_framed(p).then(|| proto.handle_datagram(p, Instant::now())),
            Some(secure) => match secure.handle_datagram(p, Instant::now()) {
                Ok(Some(plain)) => {
                    framed::is_framed(&plain).then(|| proto.handle_datagram(&plain, Instant::now()))
                }
                // the handshake is done: wake up to send what waited for it
                Ok(None) => Some(()),
                Err(_) => None,
            },
        })?;
        if got == Some(Reply::TimedOut) || proto.poll_timeout().is_some_and(|t| t <= Instant::now())
        {
            proto.handle_timeout(Instant::now());
        }
        while let Some(event) = proto.poll_event() {
            let (SenderEvent::Acked { resent, .. } | SenderEvent::GaveUp { resent, .. }) = event;
            *resent_total += u64::from(resent);
            out.push(match event {
                SenderEvent::Acked {
                    frame,
                    latency,
                    resent,
                    meta,
                } => FrameOutcome::Acked {
                    rtt: latency,
                    capture_to_ack: super::capture_to(Instant::now(), meta.capture_us),
                    bytes: sizes.remove(&frame).unwrap_or(0),
                    resent,
                    meta,
                },
                SenderEvent::GaveUp { frame, reason, .. } => {
                    sizes.remove(&frame);
                    FrameOutcome::Lost(LostReason::GaveUp(reason))
                }
            });
        }
        Ok(())
    }

    /// Pump at least once, then until `done` holds or `stop` is set; bounded by the frame
    /// deadline (plus slack for the last probe).
    fn pump_until(
        &mut self,
        out: &mut Vec<FrameOutcome>,
        stop: &Shutdown,
        done: impl Fn(&framed_sender::FramedSender) -> bool,
    ) -> io::Result<()> {
        let limit = Instant::now() + self.frame_deadline * 2 + Duration::from_millis(100);
        while !done(&self.proto) && Instant::now() < limit {
            self.pump(limit, stop, out)?;
            if stop.is_triggered() {
                break;
            }
        }
        Ok(())
    }
}

impl ImgSender for FramedUdpSender {
    fn send_frame(&mut self, jpeg: &[u8], stop: &Shutdown) -> Result<Vec<FrameOutcome>, SendError> {
        self.send(&CapturedFrame::now(Arc::new(jpeg.to_vec()), 0), stop)
    }

    fn send(
        &mut self,
        frame: &CapturedFrame,
        stop: &Shutdown,
    ) -> Result<Vec<FrameOutcome>, SendError> {
        let jpeg = &frame.jpeg;
        let mut out = Vec::new();
        if self.stopped {
            out.push(FrameOutcome::NotSent);
            return Ok(out);
        }
        self.pump_until(&mut out, stop, framed_sender::FramedSender::can_send)?;
        match self
            .proto
            .send_frame(Arc::clone(jpeg), frame.meta, Instant::now())
        {
            Ok(id) => {
                let (m, k) = self.proto.parity_in_use();
                let shard = framed::shard_len(jpeg.len() as u32, k) + framed::PARITY_CHECK_LEN;
                self.sizes.insert(id, jpeg.len() + usize::from(m) * shard);
            }
            Err(framed_sender::SendError::TooLarge) => {
                return Err(SendError::FrameTooLarge {
                    len: jpeg.len(),
                    max: u16::MAX as usize * self.chunk_size,
                    protocol: Protocol::Framed,
                })
            }
            Err(framed_sender::SendError::Empty | framed_sender::SendError::WindowFull) => {
                out.push(FrameOutcome::NotSent);
                return Ok(out);
            }
        }
        if self.window == 1 {
            // stop-and-wait: this frame's outcome comes back from this call (or, when `stop`
            // cut the wait short, from the flush)
            self.pump_until(&mut out, stop, |p| p.in_flight() == 0)?;
        } else {
            // keep the window moving: take whatever replies are already here
            self.pump(Instant::now(), stop, &mut out)?;
        }
        Ok(out)
    }

    fn flush(&mut self, stop: &Shutdown) -> Result<Vec<FrameOutcome>, SendError> {
        let mut out = Vec::new();
        if self.stopped {
            return Ok(out);
        }
        self.pump_until(&mut out, stop, |p| p.in_flight() == 0)?;
        if stop.is_triggered() {
            self.stopped = true;
            let in_flight = self.proto.in_flight();
            out.extend((0..in_flight).map(|_| FrameOutcome::Lost(LostReason::Stopped)));
        }
        Ok(out)
    }

    fn set_window(&mut self, window: usize) {
        self.window = window.max(1);
        self.proto.set_window(self.window);
    }

    fn in_flight(&self) -> usize {
        if self.stopped {
            0
        } else {
            self.proto.in_flight()
        }
    }

    fn idle(&mut self, until: Instant, stop: &Shutdown) -> Result<Vec<FrameOutcome>, SendError> {
        let mut out = Vec::new();
        if ImgSender::in_flight(self) > 0 {
            self.pump(until, stop, &mut out)?;
        }
        Ok(out)
    }

    fn reply_counts(&self) -> ReplyCounts {
        ReplyCounts {
            late_acks: 0,
            ignored: self.link.ignored(),
        }
    }

    fn fec(&self) -> Option<FecState> {
        let (parity, data) = self.proto.parity_in_use();
        (self.proto.fec() != crate::proto::fec::FecMode::Off).then(|| FecState {
            parity,
            data,
            parity_sent: self.proto.parity_sent(),
            rebuilt: self.proto.rebuilt(),
        })
    }

    fn clock(&self) -> Option<framed_sender::ClockEstimate> {
        self.proto.clock_estimate(Instant::now())
    }
}

/// A stream id that differs between runs (and between clients started together).
#[cfg(test)]
mod tests {
    use super::super::testing::{fake_jpeg, options, LONG};
    use super::*;
    use std::net::UdpSocket;
    use std::thread;

    #[test]
    fn a_stop_cuts_the_wait_short_and_the_flush_counts_the_frame_as_stopped() {
        let hub = UdpSocket::bind("127.0.0.1:0").unwrap();
        hub.set_read_timeout(Some(LONG)).unwrap();
        // An hour-long frame deadline against a silent hub: only the stop can end the wait.
        let mut sender =
            FramedUdpSender::open(hub.local_addr().unwrap(), &options(3_600_000)).unwrap();
        let stop = Shutdown::new();
        let trigger = {
            let stop = stop.clone();
            // the frame's first chunk has arrived: its ack is being waited for
            thread::spawn(move || {
                let mut buf = vec![0u8; 70_000];
                hub.recv_from(&mut buf).unwrap();
                stop.trigger();
            })
        };
        let sent = sender.send_frame(&fake_jpeg(5000), &stop).unwrap();
        assert!(sent.is_empty(), "{sent:?}");
        trigger.join().unwrap();
        let flushed = sender.flush(&stop).unwrap();
        assert!(
            matches!(flushed[..], [FrameOutcome::Lost(LostReason::Stopped)]),
            "{flushed:?}"
        );
        // the sender is done: nothing more goes out or is counted twice
        assert!(sender.flush(&stop).unwrap().is_empty());
        assert!(matches!(
            sender.send_frame(&fake_jpeg(10), &stop).unwrap()[..],
            [FrameOutcome::NotSent]
        ));
    }
}
