//! The UDP socket a client talks to the hub through: send datagrams, then wait a bounded
//! time for the reply.
//!
//! The seed protocols' replies (`get message!!!`, `get the msg`) carry no id, so a reply
//! cannot say which request it answers. Two rules keep a client from miscounting:
//! - only datagrams from the hub's address whose payload the caller recognises count as
//!   replies; anything else (another sender, another payload) is counted as ignored;
//! - before each request, replies already queued (late replies to earlier, timed-out
//!   requests, or duplicated ones) are drained without waiting, so they are not taken for
//!   the next reply. The receive that takes a reply also takes whatever is queued right
//!   behind it (one `recvmmsg` on Linux), and when it found the queue empty less than
//!   [`DRAIN_FRESH`] ago, the drain needs no syscall of its own.
//!
//! The limit that remains: a late reply that arrives *after* that drain, while the next
//! request is in flight, is indistinguishable from that request's reply and is counted as
//! its reply. That takes a reply later than the whole timeout, so with a timeout well above
//! the round-trip time it is rare; the protocols with a frame id exist to remove it.
//!
//! A wait can be cut short: [`UdpLink::wait_reply_or_stop`] blocks at most [`STOP_POLL`]
//! per receive and looks at a [`Shutdown`] flag between receives, so it ends within that
//! long of the flag being set (a reply already on its way still gets that one receive).
//!
//! The socket is not `connect`ed: the seed server answers from whatever address it bound,
//! and the source check here is explicit, so ignored datagrams can be counted.
//!
//! Syscalls are the cost on a fast link (the benchmark, `examples/bench.rs`, showed 3 extra
//! per message over the bare send+receive), so: the drain is one non-blocking receive
//! (`MSG_DONTWAIT`, not a switch of the socket's mode and back), the read timeout is
//! set only when the one already set does not fit the wait (see [`TIMEOUT_SLACK`]), the
//! drain is skipped right after a receive that emptied the queue, and a run of datagrams goes out through [`UdpLink::send_gathered`]: on Linux one `sendmmsg`
//! per [`SEND_BATCH`] datagrams, each gathered from a header and a payload where they lie
//! (no copy into a datagram buffer).

use std::io::{self, ErrorKind};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use crate::shutdown::{Shutdown, POLL_INTERVAL};

/// Room for any reply; longer datagrams are truncated by the kernel and then simply do not
/// match a reply.
const REPLY_BUF: usize = 2048;

/// How much longer than the time left the read timeout already set may be and still be
/// kept: a wait may end this much after its deadline. (The kernel counts the timeout in
/// scheduler ticks of 1 to 10 ms anyway.) A timeout shorter than half the time left is
/// replaced too, so a long wait does not wake up over and over.
pub const TIMEOUT_SLACK: Duration = Duration::from_millis(1);

/// The longest one receive of [`UdpLink::wait_reply_or_stop`] blocks before the stop flag is
/// looked at again: the project's poll interval.
pub const STOP_POLL: Duration = POLL_INTERVAL;

/// Datagrams handed to the kernel per `sendmmsg` call, at most.
pub const SEND_BATCH: usize = 64;

/// Datagrams taken per receive while waiting for a reply, at most (Linux): the reply, and
/// what is queued right behind it (a duplicate, more acks of a window), in one syscall.
/// Fewer than this means the receive left the queue empty.
const RECV_BATCH: usize = 8;

/// A drain within this long of a receive that left the queue empty is skipped: a datagram
/// that came in since is as likely to come just after a drain, which no drain catches
/// either. (Between a reply and the next request of a client that sends as fast as it can
/// there are a few microseconds; a client that waits between requests drains.)
pub const DRAIN_FRESH: Duration = Duration::from_micros(100);

/// A client-side UDP socket aimed at one hub address.
#[derive(Debug)]
pub struct UdpLink {
    socket: UdpSocket,
    hub: SocketAddr,
    /// `hub` as the OS's socket address, for `sendmmsg`.
    #[cfg(target_os = "linux")]
    hub_raw: socket2::SockAddr,
    /// Room for [`RECV_BATCH`] datagrams of [`REPLY_BUF`] bytes.
    buf: Vec<u8>,
    ignored: u64,
    /// Recognised replies taken after the one a wait returned, in the same receive: late
    /// or duplicated replies (for a protocol with one reply per request), counted as late
    /// by the next drain.
    extra_replies: u64,
    /// When a receive last found the queue empty (Linux; `None` elsewhere or after a wait
    /// that timed out, when late replies are likeliest).
    emptied_at: Option<Instant>,
    /// The socket's read timeout as last set (`None`: not set yet).
    read_timeout: Option<Duration>,
}

/// What an awaited reply turned out to be.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply<T> {
    /// A recognised reply from the hub, and when it was received.
    Got(T, Instant),
    /// None before the deadline.
    TimedOut,
}

impl UdpLink {
    /// A socket on an OS-chosen port of the hub's address family.
    pub fn open(hub: SocketAddr) -> io::Result<UdpLink> {
        let local: SocketAddr = match hub {
            SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let socket = UdpSocket::bind(local)?;
        Ok(UdpLink {
            socket,
            hub,
            #[cfg(target_os = "linux")]
            hub_raw: socket2::SockAddr::from(hub),
            buf: vec![0; REPLY_BUF * RECV_BATCH],
            ignored: 0,
            extra_replies: 0,
            emptied_at: None,
            read_timeout: None,
        })
    }

    pub fn hub(&self) -> SocketAddr {
        self.hub
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Datagrams received so far that were not a recognised reply from the hub.
    pub fn ignored(&self) -> u64 {
        self.ignored
    }

    /// Send one datagram to the hub.
    pub fn send(&self, payload: &[u8]) -> io::Result<()> {
        let n = self.socket.send_to(payload, self.hub)?;
        if n != payload.len() {
            return Err(io::Error::new(
                ErrorKind::WriteZero,
                format!("sent {n} of {} bytes", payload.len()),
            ));
        }
        Ok(())
    }

    /// Send datagrams to the hub, each made of two parts sent as one datagram (a header and
    /// a payload that need not lie next to each other). A datagram that cannot be sent (a
    /// full socket buffer, an ICMP error reported late) is passed to `on_error` with its
    /// index; on `Continue` it is skipped and the rest still go, on `Break` nothing more is
    /// sent. On Linux: one `sendmmsg` per [`SEND_BATCH`].
    pub fn send_gathered<'a>(
        &self,
        datagrams: impl IntoIterator<Item = [&'a [u8]; 2]>,
        mut on_error: impl FnMut(usize, io::Error) -> ControlFlow<()>,
    ) {
        #[cfg(target_os = "linux")]
        {
            let mut datagrams = datagrams.into_iter().peekable();
            let mut first = 0;
            while datagrams.peek().is_some() {
                let batch = datagrams.by_ref().take(SEND_BATCH);
                let base = first;
                match self.sendmmsg(batch, |i, e| on_error(base + i, e)) {
                    ControlFlow::Continue(n) => first += n,
                    ControlFlow::Break(()) => return,
                }
            }
        }
        #[cfg(not(target_os = "linux"))]
        {
            let mut buf = Vec::new();
            for (i, [head, payload]) in datagrams.into_iter().enumerate() {
                buf.clear();
                buf.extend_from_slice(head);
                buf.extend_from_slice(payload);
                if let Err(e) = self.send(&buf) {
                    if on_error(i, e).is_break() {
                        return;
                    }
                }
            }
        }
    }

    /// Send up to [`SEND_BATCH`] datagrams with `sendmmsg`; returns how many were taken, or
    /// `Break` when `on_error` said to stop.
    #[cfg(target_os = "linux")]
    fn sendmmsg<'a>(
        &self,
        datagrams: impl Iterator<Item = [&'a [u8]; 2]>,
        mut on_error: impl FnMut(usize, io::Error) -> ControlFlow<()>,
    ) -> ControlFlow<(), usize> {
        use std::os::fd::AsRawFd;
        // SAFETY (zeroed): iovec and mmsghdr are plain C structs; all-zero is a valid value
        // (null pointers, zero lengths).
        let mut iov: [[libc::iovec; 2]; SEND_BATCH] = unsafe { std::mem::zeroed() };
        let mut msgs: [libc::mmsghdr; SEND_BATCH] = unsafe { std::mem::zeroed() };
        let mut n = 0;
        for (parts, (iov, msg)) in datagrams.zip(iov.iter_mut().zip(msgs.iter_mut())) {
            for (part, v) in parts.iter().zip(iov.iter_mut()) {
                v.iov_base = part.as_ptr() as *mut libc::c_void;
                v.iov_len = part.len();
            }
            msg.msg_hdr.msg_name = self.hub_raw.as_ptr() as *mut libc::c_void;
            msg.msg_hdr.msg_namelen = self.hub_raw.len();
            msg.msg_hdr.msg_iov = iov.as_mut_ptr();
            msg.msg_hdr.msg_iovlen = 2;
            n += 1;
        }
        let mut done = 0;
        while done < n {
            // SAFETY: `msgs[done..n]` point at `iov` entries, the parts' bytes and `hub_raw`,
            // all alive and unmoved for this call; the kernel only reads them (and writes
            // each `msg_len`).
            let sent = unsafe {
                libc::sendmmsg(
                    self.socket.as_raw_fd(),
                    msgs[done..n].as_mut_ptr(),
                    (n - done) as libc::c_uint,
                    0,
                )
            };
            if sent > 0 {
                done += sent as usize;
                continue;
            }
            let e = if sent < 0 {
                io::Error::last_os_error()
            } else {
                io::Error::new(ErrorKind::WriteZero, "sendmmsg sent nothing")
            };
            if e.kind() == ErrorKind::Interrupted {
                continue;
            }
            // the datagram at `done` failed: report it, then go on with the next or stop
            on_error(done, e)?;
            done += 1;
        }
        ControlFlow::Continue(n)
    }

    /// Take every datagram already queued, without waiting. Returns how many were replies
    /// from the hub that `is_reply` recognises (late replies, with those a wait took after
    /// its reply); the rest count as ignored. No syscall within [`DRAIN_FRESH`] of a
    /// receive that left the queue empty.
    pub fn drain(&mut self, mut is_reply: impl FnMut(&[u8]) -> bool) -> io::Result<u64> {
        let mut late = std::mem::take(&mut self.extra_replies);
        if self.emptied_at.is_some_and(|t| t.elapsed() < DRAIN_FRESH) {
            return Ok(late);
        }
        loop {
            match self.recv_now() {
                Ok((n, from)) => {
                    if from == self.hub && is_reply(&self.buf[..n]) {
                        late += 1;
                    } else {
                        self.ignored += 1;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    self.emptied_at = Some(Instant::now());
                    return Ok(late);
                }
                // ICMP errors from earlier sends (some systems report them here): not a reply.
                Err(e) if is_transient(&e) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Receive a datagram already queued, or fail with `WouldBlock`: one syscall.
    #[cfg(unix)]
    fn recv_now(&mut self) -> io::Result<(usize, SocketAddr)> {
        let socket = socket2::SockRef::from(&self.socket);
        // SAFETY: `MaybeUninit<u8>` has the layout of `u8`, and the kernel only writes
        // received (initialised) bytes into the buffer.
        let buf = unsafe {
            &mut *(&mut self.buf[..REPLY_BUF] as *mut [u8] as *mut [std::mem::MaybeUninit<u8>])
        };
        let (n, from) = socket.recv_from_with_flags(buf, libc::MSG_DONTWAIT)?;
        let from = from
            .as_socket()
            .ok_or_else(|| io::Error::other("a datagram from a non-IP address"))?;
        Ok((n, from))
    }

    /// Receive a datagram already queued, or fail with `WouldBlock`.
    #[cfg(not(unix))]
    fn recv_now(&mut self) -> io::Result<(usize, SocketAddr)> {
        self.socket.set_nonblocking(true)?;
        let result = self.socket.recv_from(&mut self.buf[..REPLY_BUF]);
        self.socket.set_nonblocking(false)?;
        result
    }

    /// Make a blocking receive return within about `left` (see [`TIMEOUT_SLACK`]).
    fn arm_read_timeout(&mut self, left: Duration) -> io::Result<()> {
        let fits = self
            .read_timeout
            .is_some_and(|t| t <= left + TIMEOUT_SLACK && t >= left / 2);
        if !fits {
            self.socket.set_read_timeout(Some(left))?;
            self.read_timeout = Some(left);
        }
        Ok(())
    }

    /// Wait until `deadline` (at most [`TIMEOUT_SLACK`] past it) for a datagram from the hub
    /// that `classify` recognises (returns `Some`). Everything else received meanwhile is
    /// counted as ignored. Datagrams taken in the same receive after the reply are passed to
    /// `classify` too (so a window's further acks are handled); those it recognises are
    /// kept for the next [`UdpLink::drain`] to count as late.
    pub fn wait_reply<T>(
        &mut self,
        deadline: Instant,
        classify: impl FnMut(&[u8]) -> Option<T>,
    ) -> io::Result<Reply<T>> {
        Ok(self
            .wait(deadline, None, classify)?
            .unwrap_or(Reply::TimedOut))
    }

    /// [`UdpLink::wait_reply`], cut short by `stop`: each receive blocks at most
    /// [`STOP_POLL`], and after the first the flag is looked at before each next one, so the
    /// wait ends within [`STOP_POLL`] of the flag being set. `Ok(None)`: stopped before a
    /// reply came. (The first receive always happens, so a reply already on its way when
    /// the wait starts with the flag set is still taken.)
    pub fn wait_reply_or_stop<T>(
        &mut self,
        deadline: Instant,
        stop: &Shutdown,
        classify: impl FnMut(&[u8]) -> Option<T>,
    ) -> io::Result<Option<Reply<T>>> {
        self.wait(deadline, Some(stop), classify)
    }

    /// The wait of both: `None` only when `stop` was set.
    fn wait<T>(
        &mut self,
        deadline: Instant,
        stop: Option<&Shutdown>,
        mut classify: impl FnMut(&[u8]) -> Option<T>,
    ) -> io::Result<Option<Reply<T>>> {
        let mut meta = [(0usize, self.hub); RECV_BATCH];
        let mut first = true;
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Ok(Some(Reply::TimedOut));
            }
            if !first && stop.is_some_and(Shutdown::is_triggered) {
                return Ok(None);
            }
            first = false;
            // A zero read timeout means "block forever" to the OS; never ask for that.
            let mut left = (deadline - now).max(Duration::from_millis(1));
            if stop.is_some() {
                left = left.min(STOP_POLL);
            }
            self.arm_read_timeout(left)?;
            match self.recv_batch(&mut meta) {
                Ok(k) => {
                    let at = Instant::now();
                    if k < RECV_BATCH && cfg!(target_os = "linux") {
                        self.emptied_at = Some(at);
                    }
                    let mut got = None;
                    for (i, &(n, from)) in meta[..k].iter().enumerate() {
                        let payload = &self.buf[i * REPLY_BUF..i * REPLY_BUF + n];
                        match (from == self.hub).then(|| classify(payload)).flatten() {
                            Some(reply) if got.is_none() => got = Some(reply),
                            Some(_) => self.extra_replies += 1,
                            None => self.ignored += 1,
                        }
                    }
                    if let Some(reply) = got {
                        return Ok(Some(Reply::Got(reply, at)));
                    }
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    self.emptied_at = None;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted || is_transient(&e) => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Block (up to the read timeout) for a datagram; take it and, on Linux, up to
    /// [`RECV_BATCH`] - 1 more already queued behind it, in one `recvmmsg`. Datagram `i` is
    /// `buf[i * REPLY_BUF..][..meta[i].0]` from `meta[i].1`. Returns how many were taken.
    #[cfg(target_os = "linux")]
    fn recv_batch(&mut self, meta: &mut [(usize, SocketAddr); RECV_BATCH]) -> io::Result<usize> {
        use std::mem::MaybeUninit;
        use std::os::fd::AsRawFd;
        // SAFETY (zeroed): iovec and mmsghdr are plain C structs for which all-zero is a
        // valid value. The addresses are left uninitialised for the kernel to write.
        let mut iov: [libc::iovec; RECV_BATCH] = unsafe { std::mem::zeroed() };
        let mut names = [MaybeUninit::<libc::sockaddr_storage>::uninit(); RECV_BATCH];
        let mut msgs: [libc::mmsghdr; RECV_BATCH] = unsafe { std::mem::zeroed() };
        let slots = self.buf.chunks_exact_mut(REPLY_BUF);
        for (((slot, v), name), msg) in slots.zip(&mut iov).zip(&mut names).zip(&mut msgs) {
            v.iov_base = slot.as_mut_ptr() as *mut libc::c_void;
            v.iov_len = slot.len();
            msg.msg_hdr.msg_name = name.as_mut_ptr() as *mut libc::c_void;
            msg.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as u32;
            msg.msg_hdr.msg_iov = v;
            msg.msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: every mmsghdr points at its own iovec, name and a REPLY_BUF-byte slot of
        // `buf`, all alive and unmoved for the call; the kernel writes at most that much.
        // MSG_WAITFORONE: block for the first datagram only.
        let k = unsafe {
            libc::recvmmsg(
                self.socket.as_raw_fd(),
                msgs.as_mut_ptr(),
                RECV_BATCH as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if k < 0 {
            return Err(io::Error::last_os_error());
        }
        let k = k as usize;
        for ((m, msg), name) in meta.iter_mut().zip(&msgs).zip(&names).take(k) {
            // SAFETY: the kernel wrote the sender's address (`msg_namelen` bytes) into `name`
            // for each of the `k` datagrams received; a UDP socket's peer is an IP address,
            // which fits and initialises the part `as_socket` reads.
            let addr =
                unsafe { socket2::SockAddr::new(name.assume_init_read(), msg.msg_hdr.msg_namelen) };
            let from = addr
                .as_socket()
                .ok_or_else(|| io::Error::other("a datagram from a non-IP address"))?;
            *m = ((msg.msg_len as usize).min(REPLY_BUF), from);
        }
        Ok(k)
    }

    /// Block (up to the read timeout) for one datagram.
    #[cfg(not(target_os = "linux"))]
    fn recv_batch(&mut self, meta: &mut [(usize, SocketAddr); RECV_BATCH]) -> io::Result<usize> {
        meta[0] = self.socket.recv_from(&mut self.buf[..REPLY_BUF])?;
        Ok(1)
    }
}

/// Errors a later receive can report for an earlier send (ICMP unreachable and the like):
/// they say nothing about the reply being waited for.
fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::ConnectionRefused | ErrorKind::ConnectionReset | ErrorKind::Interrupted
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server() -> UdpSocket {
        UdpSocket::bind("127.0.0.1:0").unwrap()
    }

    fn is_ack(p: &[u8]) -> Option<()> {
        (p == b"ack").then_some(())
    }

    /// A hub socket, a link to it that has sent one request, and the link's address as the
    /// hub saw it (where replies go).
    fn requested() -> (UdpSocket, UdpLink, SocketAddr) {
        let hub = server();
        let link = UdpLink::open(hub.local_addr().unwrap()).unwrap();
        link.send(b"request").unwrap();
        let mut buf = [0u8; 64];
        let (_, client) = hub.recv_from(&mut buf).unwrap();
        (hub, link, client)
    }

    #[test]
    fn gets_the_reply_and_ignores_foreign_datagrams() {
        let hub = server();
        let mut link = UdpLink::open(hub.local_addr().unwrap()).unwrap();
        let me = link.local_addr().unwrap();
        let me = SocketAddr::from(([127, 0, 0, 1], me.port()));
        // Queued before the wait: an ack from a stranger, and a non-ack from the hub.
        server().send_to(b"ack", me).unwrap();
        hub.send_to(b"something else", me).unwrap();
        hub.send_to(b"ack", me).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        assert!(matches!(
            link.wait_reply(deadline, is_ack).unwrap(),
            Reply::Got((), _)
        ));
        assert_eq!(link.ignored(), 2);
    }

    #[test]
    fn times_out_at_the_deadline() {
        let hub = server();
        let mut link = UdpLink::open(hub.local_addr().unwrap()).unwrap();
        let deadline = Instant::now() + Duration::from_millis(20);
        assert_eq!(link.wait_reply(deadline, is_ack).unwrap(), Reply::TimedOut);
        assert!(Instant::now() >= deadline);
        // A deadline already past returns at once.
        assert_eq!(
            link.wait_reply(Instant::now(), is_ack).unwrap(),
            Reply::TimedOut
        );
    }

    #[test]
    fn a_stop_ends_the_wait_long_before_its_deadline() {
        let hub = server();
        let mut link = UdpLink::open(hub.local_addr().unwrap()).unwrap();
        let stop = Shutdown::new();
        let trigger = {
            let stop = stop.clone();
            std::thread::spawn(move || stop.trigger())
        };
        // An hour-long wait: only the stop can end it before the test harness gives up.
        let deadline = Instant::now() + Duration::from_secs(3600);
        assert_eq!(
            link.wait_reply_or_stop(deadline, &stop, is_ack).unwrap(),
            None
        );
        trigger.join().unwrap();
    }

    #[test]
    fn a_reply_already_queued_is_taken_even_when_stopped() {
        let (hub, mut link, client) = requested();
        hub.send_to(b"ack", client).unwrap();
        let stop = Shutdown::new();
        stop.trigger();
        let deadline = Instant::now() + Duration::from_secs(5);
        assert!(matches!(
            link.wait_reply_or_stop(deadline, &stop, is_ack).unwrap(),
            Some(Reply::Got((), _))
        ));
    }

    #[test]
    fn the_read_timeout_is_set_only_when_it_does_not_fit() {
        let hub = server();
        let mut link = UdpLink::open(hub.local_addr().unwrap()).unwrap();
        let ms = Duration::from_millis;
        link.arm_read_timeout(ms(100)).unwrap();
        assert_eq!(link.read_timeout, Some(ms(100)));
        // a little less time left: within the slack, kept
        link.arm_read_timeout(ms(100) - Duration::from_micros(300))
            .unwrap();
        assert_eq!(link.read_timeout, Some(ms(100)));
        // much less left: it would overshoot the deadline, so it is set again
        link.arm_read_timeout(ms(10)).unwrap();
        assert_eq!(link.read_timeout, Some(ms(10)));
        // much more left: it would wake too often, so it is set again
        link.arm_read_timeout(ms(50)).unwrap();
        assert_eq!(link.read_timeout, Some(ms(50)));
        // what the socket has: the kernel rounds it up to whole scheduler ticks
        let set = link.socket.read_timeout().unwrap().unwrap();
        assert!(set >= ms(50) && set <= ms(60), "{set:?}");
    }

    #[test]
    fn gathered_datagrams_arrive_whole_and_in_order_across_batches() {
        let hub = server();
        hub.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let link = UdpLink::open(hub.local_addr().unwrap()).unwrap();
        let n = SEND_BATCH * 2 + 3;
        let heads: Vec<[u8; 4]> = (0..n as u32).map(u32::to_le_bytes).collect();
        let payload: Vec<u8> = (0..=255).collect();
        let parts = heads
            .iter()
            .enumerate()
            .map(|(i, h)| [&h[..], &payload[..i % 200]]);
        let mut errors = 0;
        link.send_gathered(parts, |_, _| {
            errors += 1;
            ControlFlow::Continue(())
        });
        assert_eq!(errors, 0);
        let mut buf = [0u8; 512];
        for i in 0..n {
            let (len, _) = hub.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..4], &(i as u32).to_le_bytes());
            assert_eq!(&buf[4..len], &payload[..i % 200]);
        }
    }

    #[test]
    fn a_duplicate_taken_with_the_reply_is_counted_late_by_the_next_drain() {
        let (hub, mut link, client) = requested();
        hub.send_to(b"ack", client).unwrap();
        hub.send_to(b"ack", client).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        assert!(matches!(
            link.wait_reply(deadline, is_ack).unwrap(),
            Reply::Got((), _)
        ));
        assert_eq!(link.drain(|p| is_ack(p).is_some()).unwrap(), 1);
        assert_eq!(link.drain(|p| is_ack(p).is_some()).unwrap(), 0);
        assert_eq!(link.ignored(), 0);
    }

    #[test]
    fn after_a_timed_out_wait_the_drain_looks_at_the_socket() {
        let (hub, mut link, client) = requested();
        let deadline = Instant::now() + Duration::from_millis(5);
        assert_eq!(link.wait_reply(deadline, is_ack).unwrap(), Reply::TimedOut);
        // the reply comes late, right after the wait gave up
        hub.send_to(b"ack", client).unwrap();
        assert_eq!(link.drain(|p| is_ack(p).is_some()).unwrap(), 1);
    }

    #[test]
    fn drain_counts_late_replies_without_waiting() {
        let (hub, mut link, client) = requested();
        hub.send_to(b"ack", client).unwrap();
        hub.send_to(b"ack", client).unwrap();
        hub.send_to(b"noise", client).unwrap();
        // On loopback, send_to has queued them on the client socket before it returns.
        assert_eq!(link.drain(|p| is_ack(p).is_some()).unwrap(), 2);
        assert_eq!(link.ignored(), 1);
        assert_eq!(link.drain(|p| is_ack(p).is_some()).unwrap(), 0);
        // The socket is blocking again: a wait still waits (and times out).
        let deadline = Instant::now() + Duration::from_millis(10);
        assert_eq!(link.wait_reply(deadline, is_ack).unwrap(), Reply::TimedOut);
    }
}
