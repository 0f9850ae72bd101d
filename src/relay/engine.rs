//! The relay thread: owns the listening socket, one upstream socket per client, the two
//! fault injectors, the queue of delayed datagrams and the two bandwidth limits, and moves
//! datagrams between them (faults first, then the delay, then the link, then the socket).
//!
//! One thread serves every socket: it waits in `poll(2)` (see [`super::poll`]) for at most
//! the time to the next delayed datagram, held-back release or link departure (rounded up
//! to a millisecond, so a limited link sends in bursts of at most 1 ms at the right average
//! rate: departure times come from the link model, not from when the thread woke), and
//! never more than [`POLL_INTERVAL`], so it notices the shutdown flag in time and never spins. Sockets are
//! non-blocking; each readable one is drained in batches of [`BATCH`]. Datagrams are read
//! into one scratch buffer and copied into recycled buffers, so the steady state allocates
//! nothing (except for duplicates).

use super::fault::{Emit, FaultConfig, FaultInjector};
use super::link::Link;
use super::poll::Poller;
use super::{DirectionStats, RelayLimits, RelayStats};
use crate::hub::net::{bind_udp, is_timeout, log_recv_buffer, LogLimiter};
use crate::shutdown::{Shutdown, POLL_INTERVAL};
use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Datagrams read from one socket before looking at the others (fairness under a flood).
const BATCH: usize = 64;
/// The largest UDP payload (IPv6 jumbograms aside), so no datagram is ever truncated.
const MAX_DATAGRAM: usize = 65536;
/// Receive buffer asked for on the listening socket: a burst waits here, not in a loss
/// nobody configured.
const LISTEN_RECV_BUFFER: usize = 4 << 20;
/// Receive buffer asked for on each upstream socket.
const UPSTREAM_RECV_BUFFER: usize = 1 << 20;
/// Recycled datagram buffers kept for reuse.
const POOL_MAX: usize = 256;
/// How often idle client mappings are looked for (more often for idle limits under 2 s).
const EXPIRY_CHECK: Duration = Duration::from_secs(1);

/// One copy of a datagram on its way, and the client it belongs to.
#[derive(Clone)]
struct Packet {
    client: SocketAddr,
    data: Vec<u8>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dir {
    ToUpstream = 0,
    ToClient = 1,
}

/// A delayed copy. The heap is a max-heap, so the order is reversed: earliest `at` first,
/// and among equal times the one scheduled first.
struct Queued {
    at: Instant,
    seq: u64,
    dir: Dir,
    packet: Packet,
}

impl Ord for Queued {
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl Eq for Queued {}

/// A client mapping: the client's address and the socket that speaks for it upstream.
struct Client {
    addr: SocketAddr,
    socket: UdpSocket,
    last_active: Instant,
}

/// One direction: its fault decisions, its bandwidth limit, and what happened to the copies
/// it let through.
struct Direction {
    injector: FaultInjector<Packet>,
    link: Option<Link<Packet>>,
    forwarded: u64,
    errors: u64,
    /// Received but never fed to the injector (no client mapping could be had).
    refused: u64,
}

impl Direction {
    fn new(config: FaultConfig) -> io::Result<Self> {
        Ok(Direction {
            injector: FaultInjector::new(config)?,
            link: match config.link {
                Some(l) => Some(Link::new(l).map_err(super::FaultConfigError::Link)?),
                None => None,
            },
            forwarded: 0,
            errors: 0,
            refused: 0,
        })
    }

    fn stats(&self) -> DirectionStats {
        let c = self.injector.counts();
        DirectionStats {
            received: c.received + self.refused,
            forwarded: self.forwarded,
            dropped: c.dropped,
            duplicated: c.duplicated,
            reordered: c.reordered,
            errors: self.errors + self.refused,
            queue_drops: self.link.as_ref().map_or(0, |l| l.counts().queue_drops),
        }
    }
}

pub(super) struct Engine {
    listen: UdpSocket,
    local_addr: SocketAddr,
    upstream: SocketAddr,
    limits: RelayLimits,
    clients: Vec<Client>,
    by_addr: HashMap<SocketAddr, usize>,
    clients_opened: u64,
    dirs: [Direction; 2],
    queue: BinaryHeap<Queued>,
    seq: u64,
    pool: Vec<Vec<u8>>,
    scratch: Box<[u8]>,
    emits: Vec<Emit<Packet>>,
    poller: Poller,
    published: Arc<Mutex<RelayStats>>,
    warn_limiter: LogLimiter,
    last_expiry: Instant,
}

impl Engine {
    pub(super) fn new(
        listen: SocketAddr,
        upstream: SocketAddr,
        to_upstream: FaultConfig,
        to_client: FaultConfig,
        limits: RelayLimits,
        published: Arc<Mutex<RelayStats>>,
    ) -> io::Result<Self> {
        let (socket, granted) = bind_udp(listen, LISTEN_RECV_BUFFER)?;
        log_recv_buffer("udp-relay", LISTEN_RECV_BUFFER, granted);
        socket.set_nonblocking(true)?;
        let local_addr = socket.local_addr()?;
        if local_addr == upstream {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("the upstream {upstream} is the relay's own address"),
            ));
        }
        Ok(Engine {
            listen: socket,
            local_addr,
            upstream,
            limits,
            clients: Vec::new(),
            by_addr: HashMap::new(),
            clients_opened: 0,
            dirs: [Direction::new(to_upstream)?, Direction::new(to_client)?],
            queue: BinaryHeap::new(),
            seq: 0,
            pool: Vec::new(),
            scratch: vec![0; MAX_DATAGRAM].into_boxed_slice(),
            emits: Vec::new(),
            poller: Poller::default(),
            published,
            warn_limiter: LogLimiter::new(5),
            last_expiry: Instant::now(),
        })
    }

    pub(super) fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Relay until `shutdown` is set, then send what is still delayed or held and return
    /// the final counts.
    pub(super) fn run(mut self, shutdown: &Shutdown) -> RelayStats {
        log::info!(
            "udp-relay: {} -> {}; toward the upstream: {}; toward the clients: {}",
            self.local_addr,
            self.upstream,
            self.dirs[0].injector.config(),
            self.dirs[1].injector.config()
        );
        while !shutdown.is_triggered() {
            let timeout = self.next_timeout(Instant::now());
            self.poller.clear();
            self.poller.push(&self.listen);
            for c in &self.clients {
                self.poller.push(&c.socket);
            }
            let polled = self.clients.len();
            if let Err(e) = self.poller.wait(timeout) {
                log::error!("udp-relay: waiting on the sockets failed, stopping: {e}");
                break;
            }
            if self.poller.is_readable(0) {
                self.read_clients();
            }
            for i in 0..polled {
                if self.poller.is_readable(i + 1) {
                    self.read_upstream(i);
                }
            }
            let now = Instant::now();
            self.on_timers(now);
            self.release_due(now);
            self.release_links(now);
            let check_every = EXPIRY_CHECK.min(self.limits.client_idle_timeout / 2);
            if now.saturating_duration_since(self.last_expiry) >= check_every {
                self.last_expiry = now;
                self.expire_idle(now);
            }
            self.publish();
        }
        self.stop();
        let stats = self.stats();
        self.publish();
        stats
    }

    /// How long the next wait may last: until the next delayed copy, hold limit or link
    /// departure is due, and never longer than the shutdown poll interval.
    fn next_timeout(&self, now: Instant) -> Duration {
        let next = self
            .dirs
            .iter()
            .filter_map(|d| d.injector.next_deadline())
            .chain(
                self.dirs
                    .iter()
                    .filter_map(|d| d.link.as_ref().and_then(Link::poll_timeout)),
            )
            .chain(self.queue.peek().map(|q| q.at))
            .min();
        match next {
            Some(t) => t.saturating_duration_since(now).min(POLL_INTERVAL),
            None => POLL_INTERVAL,
        }
    }

    /// Read a batch of datagrams from clients and send them on toward the upstream.
    fn read_clients(&mut self) {
        for _ in 0..BATCH {
            let (len, from) = match self.listen.recv_from(&mut self.scratch) {
                Ok(r) => r,
                Err(e) if is_timeout(&e) => break,
                Err(e) => {
                    self.warn(format_args!("receiving from clients failed: {e}"));
                    break;
                }
            };
            let now = Instant::now();
            if self.client_index(from, now).is_none() {
                self.dirs[Dir::ToUpstream as usize].refused += 1;
                continue;
            }
            let packet = Packet {
                client: from,
                data: self.take_buffer(len),
            };
            self.feed(Dir::ToUpstream, packet, now);
        }
    }

    /// Read a batch of datagrams from client `i`'s upstream socket and send them back to it.
    fn read_upstream(&mut self, i: usize) {
        for _ in 0..BATCH {
            let len = match self.clients[i].socket.recv(&mut self.scratch) {
                Ok(n) => n,
                Err(e) if is_timeout(&e) => break,
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    // An ICMP "port unreachable" for an earlier send: collected, go on.
                    let upstream = self.upstream;
                    self.warn(format_args!(
                        "the upstream {upstream} refused a datagram (nothing listening there?)"
                    ));
                    continue;
                }
                Err(e) => {
                    let addr = self.clients[i].addr;
                    self.warn(format_args!(
                        "receiving from the upstream for {addr} failed: {e}"
                    ));
                    break;
                }
            };
            let now = Instant::now();
            let client = &mut self.clients[i];
            client.last_active = now;
            let packet = Packet {
                client: client.addr,
                data: self.take_buffer(len),
            };
            self.feed(Dir::ToClient, packet, now);
        }
    }

    /// The mapping of client `addr`, opened if new; `None` if none can be had.
    fn client_index(&mut self, addr: SocketAddr, now: Instant) -> Option<usize> {
        if let Some(&i) = self.by_addr.get(&addr) {
            self.clients[i].last_active = now;
            return Some(i);
        }
        if self.clients.len() >= self.limits.max_clients {
            let max = self.limits.max_clients;
            self.warn(format_args!(
                "refusing new client {addr}: all {max} client mappings are in use"
            ));
            return None;
        }
        match self.open_upstream_socket() {
            Ok(socket) => {
                let via = socket
                    .local_addr()
                    .map_or_else(|_| "?".to_string(), |a| a.to_string());
                log::info!(
                    "udp-relay: new client {addr}, seen upstream as {via} ({} clients)",
                    self.clients.len() + 1
                );
                self.clients.push(Client {
                    addr,
                    socket,
                    last_active: now,
                });
                self.by_addr.insert(addr, self.clients.len() - 1);
                self.clients_opened += 1;
                Some(self.clients.len() - 1)
            }
            Err(e) => {
                self.warn(format_args!(
                    "cannot open an upstream socket for client {addr}: {e}"
                ));
                None
            }
        }
    }

    fn open_upstream_socket(&self) -> io::Result<UdpSocket> {
        let ip: IpAddr = self.local_addr.ip();
        let (socket, _) = bind_udp(SocketAddr::new(ip, 0), UPSTREAM_RECV_BUFFER)?;
        socket.connect(self.upstream)?;
        socket.set_nonblocking(true)?;
        Ok(socket)
    }

    /// The first `len` bytes of the scratch buffer, in a recycled buffer.
    fn take_buffer(&mut self, len: usize) -> Vec<u8> {
        let mut data = self.pool.pop().unwrap_or_default();
        data.clear();
        data.extend_from_slice(&self.scratch[..len]);
        data
    }

    fn recycle(&mut self, data: Vec<u8>) {
        if self.pool.len() < POOL_MAX {
            self.pool.push(data);
        }
    }

    /// Run `packet` through the faults of `dir` and send or queue what comes out.
    fn feed(&mut self, dir: Dir, packet: Packet, now: Instant) {
        let mut emits = std::mem::take(&mut self.emits);
        self.dirs[dir as usize]
            .injector
            .feed(packet, now, &mut emits);
        self.dispatch(dir, &mut emits, now);
        self.emits = emits;
    }

    /// Release the held-back datagrams whose hold limit has passed.
    fn on_timers(&mut self, now: Instant) {
        let mut emits = std::mem::take(&mut self.emits);
        for dir in [Dir::ToUpstream, Dir::ToClient] {
            self.dirs[dir as usize].injector.on_timer(now, &mut emits);
            self.dispatch(dir, &mut emits, now);
        }
        self.emits = emits;
    }

    fn dispatch(&mut self, dir: Dir, emits: &mut Vec<Emit<Packet>>, now: Instant) {
        for e in emits.drain(..) {
            match e.at {
                None => self.onto_link(dir, e.datagram, now),
                Some(at) => {
                    self.seq += 1;
                    self.queue.push(Queued {
                        at,
                        seq: self.seq,
                        dir,
                        packet: e.datagram,
                    });
                }
            }
        }
    }

    /// Pass every delayed copy that is due at `now` on, earliest first.
    fn release_due(&mut self, now: Instant) {
        while self.queue.peek().is_some_and(|q| q.at <= now) {
            if let Some(q) = self.queue.pop() {
                self.onto_link(q.dir, q.packet, now);
            }
        }
    }

    /// A copy past its faults and delay reaches the bandwidth limit of `dir` at `now` (or
    /// is sent at once if there is none). A copy the full link queue refuses is counted there.
    fn onto_link(&mut self, dir: Dir, packet: Packet, now: Instant) {
        let Some(link) = self.dirs[dir as usize].link.as_mut() else {
            return self.send(dir, packet);
        };
        let len = packet.data.len();
        if let Err(dropped) = link.push(packet, len, now) {
            self.recycle(dropped.data);
        }
    }

    /// Send what has left the bandwidth limits by `now`.
    fn release_links(&mut self, now: Instant) {
        for dir in [Dir::ToUpstream, Dir::ToClient] {
            while let Some(p) = self.dirs[dir as usize]
                .link
                .as_mut()
                .and_then(|l| l.poll_departure(now))
            {
                self.send(dir, p);
            }
        }
    }

    fn send(&mut self, dir: Dir, packet: Packet) {
        let result = match dir {
            Dir::ToUpstream => match self.by_addr.get(&packet.client) {
                Some(&i) => self.clients[i].socket.send(&packet.data).map(drop),
                None => Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    "its client mapping has expired",
                )),
            },
            Dir::ToClient => self.listen.send_to(&packet.data, packet.client).map(drop),
        };
        match result {
            Ok(()) => self.dirs[dir as usize].forwarded += 1,
            Err(e) => {
                self.dirs[dir as usize].errors += 1;
                let client = packet.client;
                let toward = match dir {
                    Dir::ToUpstream => "the upstream",
                    Dir::ToClient => "the client",
                };
                self.warn(format_args!(
                    "cannot send a datagram of client {client} to {toward}: {e}"
                ));
            }
        }
        self.recycle(packet.data);
    }

    /// Close the mappings that have been idle for the limit.
    fn expire_idle(&mut self, now: Instant) {
        let idle = self.limits.client_idle_timeout;
        let mut i = 0;
        while i < self.clients.len() {
            if now.saturating_duration_since(self.clients[i].last_active) < idle {
                i += 1;
                continue;
            }
            let gone = self.clients.swap_remove(i);
            self.by_addr.remove(&gone.addr);
            if let Some(moved) = self.clients.get(i) {
                self.by_addr.insert(moved.addr, i);
            }
            log::info!(
                "udp-relay: client {} idle for {idle:?}, mapping closed ({} clients)",
                gone.addr,
                self.clients.len()
            );
        }
    }

    /// On shutdown: release what is held back and send what is delayed, at once.
    fn stop(&mut self) {
        let now = Instant::now();
        let mut emits = std::mem::take(&mut self.emits);
        for dir in [Dir::ToUpstream, Dir::ToClient] {
            self.dirs[dir as usize].injector.flush(now, &mut emits);
            self.dispatch(dir, &mut emits, now);
        }
        self.emits = emits;
        if !self.queue.is_empty() {
            log::info!(
                "udp-relay: stopping; sending {} delayed datagrams now",
                self.queue.len()
            );
        }
        while let Some(q) = self.queue.pop() {
            self.onto_link(q.dir, q.packet, now);
        }
        for dir in [Dir::ToUpstream, Dir::ToClient] {
            let Some(mut link) = self.dirs[dir as usize].link.take() else {
                continue;
            };
            for p in link.drain() {
                self.send(dir, p);
            }
            self.dirs[dir as usize].link = Some(link);
        }
    }

    fn stats(&self) -> RelayStats {
        RelayStats {
            to_upstream: self.dirs[Dir::ToUpstream as usize].stats(),
            to_client: self.dirs[Dir::ToClient as usize].stats(),
            clients: self.clients.len(),
            clients_opened: self.clients_opened,
        }
    }

    fn publish(&self) {
        *self.published.lock().unwrap_or_else(|e| e.into_inner()) = self.stats();
    }

    /// A warning, at most a few a second.
    fn warn(&mut self, message: fmt::Arguments<'_>) {
        if let Some(suppressed) = self.warn_limiter.allow(Instant::now()) {
            log::warn!("udp-relay: {message}{suppressed}");
        }
    }
}
