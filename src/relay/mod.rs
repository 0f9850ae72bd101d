//! The lossy UDP relay: put it between a UDP client and the hub to see how a protocol
//! behaves on a bad Wi-Fi link. It drops, duplicates, reorders and delays datagrams with a
//! seeded generator, independently in each direction (the `udp-relay` binary and the
//! integration tests drive it).
//!
//! - [`fault`]: the fault decisions, socket-free and clock-free so they are tested exactly;
//! - [`link`]: the optional bandwidth limit after the faults (rate and bottleneck queue),
//!   socket-free and clock-free too;
//! - [`rng`]: the seeded generator behind them (same seed, same decisions);
//! - `engine`: the one relay thread (sockets, client mappings, the delay queue);
//! - `poll`: waiting on all of the relay's sockets at once.
//!
//! Addressing works like a NAT: clients send to one listening socket; for each distinct
//! client address the relay opens its own upstream socket (same IP as the listening socket,
//! port 0, connected to the upstream), so the server sees one distinct source per client,
//! and what the server sends to that socket goes back to that client from the listening
//! socket. At most [`RelayLimits::max_clients`] mappings exist; one idle (nothing either
//! way) for [`RelayLimits::client_idle_timeout`] is closed. A new client arriving while the
//! table is full is refused (its datagrams count as `errors`) rather than taking over a
//! live client's mapping.

mod engine;
pub mod fault;
pub mod link;
mod poll;
pub mod rng;

pub use fault::{Emit, FaultConfig, FaultConfigError, FaultCounts, FaultInjector};
pub use link::{Link, LinkConfig, LinkConfigError, LinkCounts};

use crate::shutdown::Shutdown;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// What happened to the datagrams of one direction.
///
/// Once the relay has stopped,
/// `received + duplicated == forwarded + dropped + queue_drops + errors`
/// (while it runs, the difference is what is still delayed, held or queued for the link).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DirectionStats {
    /// Datagrams read from the sending side.
    pub received: u64,
    /// Copies sent on (duplicates included).
    pub forwarded: u64,
    /// Datagrams dropped on purpose (the `loss` fault).
    pub dropped: u64,
    /// Extra copies made (the `duplicate` fault).
    pub duplicated: u64,
    /// Datagrams held back to be sent after a later one (the `reorder` fault).
    pub reordered: u64,
    /// Copies that could not be relayed: no free client mapping, or a send that failed.
    pub errors: u64,
    /// Copies dropped at the tail of a full bandwidth-limit queue ([`FaultConfig::link`]),
    /// apart from the random `dropped`.
    pub queue_drops: u64,
}

impl fmt::Display for DirectionStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "received {}, forwarded {}, dropped {}, duplicated {}, reordered {}, errors {}, \
             queue drops {}",
            self.received,
            self.forwarded,
            self.dropped,
            self.duplicated,
            self.reordered,
            self.errors,
            self.queue_drops
        )
    }
}

/// Both directions, and the client mappings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RelayStats {
    /// Client to upstream.
    pub to_upstream: DirectionStats,
    /// Upstream back to the clients.
    pub to_client: DirectionStats,
    /// Client mappings open now.
    pub clients: usize,
    /// Client mappings opened since the start.
    pub clients_opened: u64,
}

/// Bounds on the client mappings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RelayLimits {
    /// Most client mappings (each one is an upstream socket) open at once.
    pub max_clients: usize,
    /// A mapping with no datagram either way for this long is closed.
    pub client_idle_timeout: Duration,
}

impl Default for RelayLimits {
    fn default() -> Self {
        RelayLimits {
            max_clients: 256,
            client_idle_timeout: Duration::from_secs(60),
        }
    }
}

/// Starts relays; see the [module documentation](self).
pub struct Relay;

impl Relay {
    /// Bind `listen` (port 0 lets the OS choose) and relay every client's datagrams to
    /// `upstream` and back, with `to_upstream` faults on the way there and `to_client` faults
    /// on the way back, in one thread that stops within [`crate::shutdown::POLL_INTERVAL`]
    /// of `shutdown` being triggered. Default [`RelayLimits`].
    pub fn start(
        listen: SocketAddr,
        upstream: SocketAddr,
        to_upstream: FaultConfig,
        to_client: FaultConfig,
        shutdown: Shutdown,
    ) -> io::Result<RelayHandle> {
        Self::start_with_limits(
            listen,
            upstream,
            to_upstream,
            to_client,
            RelayLimits::default(),
            shutdown,
        )
    }

    /// [`start`](Self::start) with explicit bounds on the client mappings.
    pub fn start_with_limits(
        listen: SocketAddr,
        upstream: SocketAddr,
        to_upstream: FaultConfig,
        to_client: FaultConfig,
        limits: RelayLimits,
        shutdown: Shutdown,
    ) -> io::Result<RelayHandle> {
        let invalid = |msg: String| io::Error::new(io::ErrorKind::InvalidInput, msg);
        to_upstream
            .validate()
            .map_err(|e| invalid(format!("faults toward the upstream: {e}")))?;
        to_client
            .validate()
            .map_err(|e| invalid(format!("faults toward the clients: {e}")))?;
        if listen.is_ipv4() != upstream.is_ipv4() {
            return Err(invalid(format!(
                "listen address {listen} and upstream {upstream} must be both IPv4 or both IPv6"
            )));
        }
        if limits.max_clients == 0 {
            return Err(invalid("max_clients must be at least 1".into()));
        }
        let published = Arc::new(Mutex::new(RelayStats::default()));
        let engine = engine::Engine::new(
            listen,
            upstream,
            to_upstream,
            to_client,
            limits,
            Arc::clone(&published),
        )?;
        let local_addr = engine.local_addr();
        let thread = std::thread::Builder::new()
            .name("udp-relay".into())
            .spawn(move || engine.run(&shutdown))?;
        Ok(RelayHandle {
            local_addr,
            upstream,
            published,
            thread: Some(thread),
        })
    }
}

/// A running relay.
pub struct RelayHandle {
    local_addr: SocketAddr,
    upstream: SocketAddr,
    published: Arc<Mutex<RelayStats>>,
    thread: Option<JoinHandle<RelayStats>>,
}

impl RelayHandle {
    /// The address clients send to (with the port the OS chose, if asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The server the datagrams go to.
    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// The counts so far (updated every time the relay thread wakes, so at most one
    /// poll interval old).
    pub fn stats(&self) -> RelayStats {
        *self.published.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// True once the relay thread has ended: after the shutdown flag was set, or early if
    /// waiting on its sockets failed (logged as an error).
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Wait for the relay thread to end (it ends once the shutdown flag is set; datagrams
    /// still delayed or held are sent at once when it stops) and return the final counts.
    pub fn join(mut self) -> RelayStats {
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(stats)) => stats,
            Some(Err(_)) => {
                log::error!("the udp-relay thread panicked");
                self.stats()
            }
            None => self.stats(),
        }
    }
}
