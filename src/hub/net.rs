//! Socket setup shared by the services: binding UDP with a large receive buffer (socket2,
//! because std cannot set SO_RCVBUF), a log limiter so a flood of bad datagrams or of
//! connections cannot flood the log ([`LogLimiter`], and [`SharedLogLimiter`] for the
//! per-connection threads), the connection table of the TCP services ([`ConnTable`]) and
//! the thread that wakes their blocking `accept` at shutdown ([`spawn_accept_waker`]).
//!
//! The connection policy, the same for the TCP stream port and the HTTP view: at most
//! `max_total` connections, and at most `max_per_addr` from one IP address; a connection
//! past the per-address limit is refused at once. When the table is full, a new connection
//! takes the place of the *unproven* connection that has been waiting longest (HTTP: one
//! waiting for a request head; TCP: one that has not delivered a frame yet), which is cut;
//! only when every place is held by a connection that is doing its work is the new one
//! refused. So connections that send nothing, or a byte now and then, can delay a
//! legitimate client by no more than one round of their own, and a camera that delivers
//! frames is never cut for a newcomer.

use socket2::{Domain, Protocol, Socket, Type};
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::shutdown::Shutdown;

/// Bind a UDP socket on `addr`, ask for a `recv_buffer` byte receive buffer, and return it
/// with the size the kernel actually granted (Linux reports twice the usable size, and caps
/// the request at `net.core.rmem_max` for unprivileged processes).
pub fn bind_udp(addr: SocketAddr, recv_buffer: usize) -> io::Result<(UdpSocket, usize)> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if recv_buffer > 0 {
        if let Err(e) = socket.set_recv_buffer_size(recv_buffer) {
            log::warn!("cannot set the receive buffer of {addr} to {recv_buffer} bytes: {e}");
        }
    }
    socket.bind(&addr.into())?;
    let granted = socket.recv_buffer_size().unwrap_or(0);
    Ok((socket.into(), granted))
}

/// Say in the log what receive buffer a service got, and whether the system capped it.
pub fn log_recv_buffer(service: &str, asked: usize, granted: usize) {
    // Linux doubles the value for bookkeeping, so "granted" of at least the request is full.
    if asked > 0 && granted < asked {
        log::warn!(
            "{service}: receive buffer is {granted} bytes, asked for {asked}: the system maximum \
             caps it (raise it with: sysctl -w net.core.rmem_max={asked})"
        );
    } else {
        log::info!("{service}: receive buffer {granted} bytes");
    }
}

/// True for the errors a read timeout produces.
pub fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

/// Lets through at most `per_interval` log lines per interval (a second unless told) and
/// counts the rest; the next line let through carries the count ([`Suppressed`]).
pub struct LogLimiter {
    per_interval: u32,
    interval: Duration,
    window_start: Option<Instant>,
    in_window: u32,
    suppressed: u64,
}

impl LogLimiter {
    /// At most `per_second` lines a second.
    pub fn new(per_second: u32) -> Self {
        Self::per(per_second, Duration::from_secs(1))
    }

    /// At most `lines` lines per `interval`.
    pub fn per(lines: u32, interval: Duration) -> Self {
        LogLimiter {
            per_interval: lines,
            interval,
            window_start: None,
            in_window: 0,
            suppressed: 0,
        }
    }

    /// Whether to log now; if so, a note of how many lines were suppressed since the last
    /// one allowed (displays as nothing when none were).
    pub fn allow(&mut self, now: Instant) -> Option<Suppressed> {
        let new_window = self
            .window_start
            .is_none_or(|s| now.saturating_duration_since(s) >= self.interval);
        if new_window {
            self.window_start = Some(now);
            self.in_window = 0;
        }
        if self.in_window < self.per_interval {
            self.in_window += 1;
            Some(Suppressed(std::mem::take(&mut self.suppressed)))
        } else {
            self.suppressed += 1;
            None
        }
    }

    /// Lines suppressed since the last one let through.
    pub fn pending(&self) -> u64 {
        self.suppressed
    }
}

/// A [`LogLimiter`] the threads of one service share (one per connection): one budget of
/// lines for all of them, so a thousand connections get no more log than one.
pub struct SharedLogLimiter(Mutex<LogLimiter>);

impl SharedLogLimiter {
    /// At most `per_second` lines a second over all the threads.
    pub fn new(per_second: u32) -> Self {
        SharedLogLimiter(Mutex::new(LogLimiter::new(per_second)))
    }

    /// [`LogLimiter::allow`] now.
    pub fn allow(&self) -> Option<Suppressed> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .allow(Instant::now())
    }
}

/// How many log lines were held back; displays as ` (N similar lines suppressed)`, or as
/// nothing when N is 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Suppressed(pub u64);

impl std::fmt::Display for Suppressed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            0 => Ok(()),
            n => write!(f, " ({n} similar lines suppressed)"),
        }
    }
}

/// `accept()` cannot time out: this thread waits for `shutdown`, then connects once to the
/// listener bound to `local` so that its accept loop wakes and sees the flag. Join it after
/// the loop ends.
pub fn spawn_accept_waker(
    service: &str,
    local: SocketAddr,
    shutdown: Shutdown,
) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("{service}-waker"))
        .spawn(move || {
            while !shutdown.wait_timeout(Duration::from_secs(3600)) {}
            let _ = TcpStream::connect_timeout(&reachable(local), Duration::from_secs(1));
        })
}

/// Where to connect to reach a listener bound to `local` (an unspecified address is
/// reached through loopback).
fn reachable(local: SocketAddr) -> SocketAddr {
    let mut a = local;
    if a.ip().is_unspecified() {
        a.set_ip(match a {
            SocketAddr::V4(_) => [127, 0, 0, 1].into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    a
}

/// Why [`ConnTable::admit`] turned a connection away.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// `max_per_addr` connections from this address are open already.
    PerAddress { max: usize },
    /// `max_total` connections are open and every one is doing its work.
    Full { max: usize },
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::PerAddress { max } => {
                write!(f, "{max} connections from this address are open already")
            }
            Refused::Full { max } => {
                write!(f, "{max} connections are open already, all of them busy")
            }
        }
    }
}

struct Entry {
    ip: IpAddr,
    /// A handle to cut the connection (evicted, or the hub stopping).
    stream: TcpStream,
    /// Since when it may be evicted; `None` while it is doing its work.
    evictable_since: Option<Instant>,
    evicted: Arc<AtomicBool>,
}

/// The open connections of one TCP service; see the module documentation for the policy.
/// Each admitted connection holds a [`ConnSlot`], which gives its place back when dropped.
pub struct ConnTable {
    max_total: usize,
    max_per_addr: usize,
    inner: Mutex<TableInner>,
}

#[derive(Default)]
struct TableInner {
    next_id: u64,
    entries: HashMap<u64, Entry>,
}

impl ConnTable {
    pub fn new(max_total: usize, max_per_addr: usize) -> Arc<ConnTable> {
        Arc::new(ConnTable {
            max_total: max_total.max(1),
            max_per_addr: max_per_addr.max(1),
            inner: Mutex::new(TableInner::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TableInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Connections open now.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether no connection is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Give `stream`, accepted from `peer` at `now`, a place: it starts evictable (it has
    /// proven nothing yet). When the table is full the unproven connection evictable the
    /// longest is cut to make room (and reported back, for the log).
    pub fn admit(
        self: &Arc<Self>,
        stream: &TcpStream,
        peer: SocketAddr,
        now: Instant,
    ) -> Result<(ConnSlot, Option<SocketAddr>), Refused> {
        let ip = peer.ip();
        let handle = stream.try_clone().map_err(|_| Refused::Full {
            max: self.max_total,
        })?;
        let mut inner = self.lock();
        let from_ip = inner.entries.values().filter(|e| e.ip == ip).count();
        if from_ip >= self.max_per_addr {
            return Err(Refused::PerAddress {
                max: self.max_per_addr,
            });
        }
        let mut evicted_peer = None;
        if inner.entries.len() >= self.max_total {
            let victim = inner
                .entries
                .iter()
                .filter_map(|(id, e)| e.evictable_since.map(|t| (t, *id)))
                .min();
            let Some((_, id)) = victim else {
                return Err(Refused::Full {
                    max: self.max_total,
                });
            };
            let e = inner
                .entries
                .remove(&id)
                .expect("the victim is in the table");
            e.evicted.store(true, Ordering::Release);
            evicted_peer = e.stream.peer_addr().ok();
            let _ = e.stream.shutdown(std::net::Shutdown::Both);
        }
        inner.next_id += 1;
        let id = inner.next_id;
        let evicted = Arc::new(AtomicBool::new(false));
        inner.entries.insert(
            id,
            Entry {
                ip,
                stream: handle,
                evictable_since: Some(now),
                evicted: evicted.clone(),
            },
        );
        Ok((
            ConnSlot {
                table: self.clone(),
                id,
                evicted,
            },
            evicted_peer,
        ))
    }

    /// Cut every connection (shutdown: it ends even a write blocked on a stalled peer).
    pub fn shutdown_all(&self) {
        for e in self.lock().entries.values() {
            let _ = e.stream.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// One connection's place in a [`ConnTable`]; dropping it frees the place.
pub struct ConnSlot {
    table: Arc<ConnTable>,
    id: u64,
    evicted: Arc<AtomicBool>,
}

impl ConnSlot {
    /// Whether a newcomer may take this place (`true`: the connection is unproven, or
    /// idle), from `now` on; `false` while it is doing its work.
    pub fn set_evictable(&self, evictable: bool, now: Instant) {
        if let Some(e) = self.table.lock().entries.get_mut(&self.id) {
            match (evictable, e.evictable_since) {
                (true, None) => e.evictable_since = Some(now),
                (false, Some(_)) => e.evictable_since = None,
                _ => {}
            }
        }
    }

    /// Whether the connection was cut to make room for a newcomer.
    pub fn was_evicted(&self) -> bool {
        self.evicted.load(Ordering::Acquire)
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.table.lock().entries.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limiter_allows_a_burst_per_second_and_counts_the_rest() {
        let mut l = LogLimiter::new(2);
        let t0 = Instant::now();
        assert_eq!(l.allow(t0), Some(Suppressed(0)));
        assert_eq!(l.allow(t0), Some(Suppressed(0)));
        assert_eq!(l.allow(t0), None);
        assert_eq!(l.allow(t0 + Duration::from_millis(500)), None);
        let note = l.allow(t0 + Duration::from_secs(1)).unwrap();
        assert_eq!(note.to_string(), " (2 similar lines suppressed)");
        assert_eq!(Suppressed(0).to_string(), "");
    }

    #[test]
    fn limiter_over_a_longer_interval_and_shared() {
        let mut l = LogLimiter::per(1, Duration::from_secs(5));
        let t0 = Instant::now();
        assert!(l.allow(t0).is_some());
        assert!(l.allow(t0 + Duration::from_secs(4)).is_none());
        assert_eq!(l.pending(), 1);
        assert_eq!(l.allow(t0 + Duration::from_secs(5)), Some(Suppressed(1)));
        let shared = SharedLogLimiter::new(3);
        let allowed = (0..1000).filter(|_| shared.allow().is_some()).count();
        // 1000 calls take far less than a second here; at most two windows' worth.
        assert!((3..=6).contains(&allowed), "{allowed}");
    }

    /// A connected pair on loopback: (client side, hub side, the client's address as the
    /// hub sees it), the client bound to `from`.
    fn pair(listener: &std::net::TcpListener, from: [u8; 4]) -> (TcpStream, TcpStream, SocketAddr) {
        let client = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        client.bind(&SocketAddr::from((from, 0)).into()).unwrap();
        client
            .connect(&listener.local_addr().unwrap().into())
            .unwrap();
        let (hub_side, peer) = listener.accept().unwrap();
        (client.into(), hub_side, peer)
    }

    #[test]
    fn table_limits_per_address_evicts_the_longest_unproven_and_keeps_the_busy() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let table = ConnTable::new(3, 2);
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let (_c1, h1, p1) = pair(&listener, [127, 0, 0, 11]);
        let (s1, none) = table.admit(&h1, p1, at(0)).unwrap();
        assert_eq!(none, None);
        let (_c2, h2, p2) = pair(&listener, [127, 0, 0, 11]);
        let (s2, _) = table.admit(&h2, p2, at(1)).unwrap();
        // a third from the same address is refused, whatever room there is
        let (_c3, h3, p3) = pair(&listener, [127, 0, 0, 11]);
        assert_eq!(
            table.admit(&h3, p3, at(2)).err(),
            Some(Refused::PerAddress { max: 2 })
        );
        let (mut c4, h4, p4) = pair(&listener, [127, 0, 0, 12]);
        let (s4, _) = table.admit(&h4, p4, at(3)).unwrap();
        assert_eq!(table.len(), 3);
        // s1 proves itself; the table is full: a newcomer evicts s2, the oldest unproven
        s1.set_evictable(false, at(4));
        let (_c5, h5, p5) = pair(&listener, [127, 0, 0, 13]);
        let (s5, evicted) = table.admit(&h5, p5, at(5)).unwrap();
        assert_eq!(evicted, Some(p2));
        assert!(s2.was_evicted() && !s1.was_evicted() && !s4.was_evicted());
        assert_eq!(table.len(), 3);
        drop(s2); // its thread ends; the place was already given away
        assert_eq!(table.len(), 3);
        // all busy: refused
        s4.set_evictable(false, at(6));
        s5.set_evictable(false, at(6));
        let (_c6, h6, p6) = pair(&listener, [127, 0, 0, 14]);
        assert_eq!(
            table.admit(&h6, p6, at(7)).err(),
            Some(Refused::Full { max: 3 })
        );
        drop(s5);
        assert_eq!(table.len(), 2);
        // shutdown cuts the open ones: the client reads the end, not a timeout
        table.shutdown_all();
        c4.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut b = [0u8; 1];
        assert!(matches!(std::io::Read::read(&mut c4, &mut b), Ok(0)));
        drop((h1, h4));
    }

    #[test]
    fn binds_port_zero_on_loopback() {
        let (s, granted) = bind_udp("127.0.0.1:0".parse().unwrap(), 1 << 20).unwrap();
        assert_ne!(s.local_addr().unwrap().port(), 0);
        assert!(granted > 0);
    }
}
