//! `hub --http ADDR`: a small web view of the running hub, off by default.
//!
//! - `/`: one self-contained page (inline CSS and JS, no build step) that shows every image
//!   source live, with its counters, and the message channel; it polls `/state` every second;
//! - `/stream/<source>`: MJPEG (`multipart/x-mixed-replace`) of the received JPEG bytes;
//! - `/snapshot/<source>.jpg`: the newest frame;
//! - `/state` (JSON) and `/metrics` (Prometheus text): the hub's counters.
//!
//! Threads, no runtime: one accept thread and one thread per connection, at most
//! `max_viewers` streaming plus [`MAX_OTHER_CONNS`] others; past that a connection gets a
//! 503. Nothing here can slow a receiver: frames reach the view through [`frames`] ("latest
//! frame wins"), counters are read from the lock-free statistics. On shutdown every
//! connection socket is shut down, which ends even a write blocked on a stalled viewer, and
//! all threads are joined.
//!
//! - [`frames`]: the newest frame per source;
//! - `conn`: reading a request head (bounded), writing responses;
//! - `routes`: what each path serves;
//! - `report`: the `/state` and `/metrics` contents.

mod conn;
pub mod frames;
mod report;
mod routes;

pub use report::ServiceInfo;

use crate::hub::stats::Stats;
use crate::shutdown::{Shutdown, POLL_INTERVAL};
use frames::LatestFrames;
use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Connections served at once besides the streaming viewers (page loads, `/state` polls,
/// snapshots, scrapes, idle kept-alive connections).
pub const MAX_OTHER_CONNS: usize = 32;

/// What the HTTP view reads, shared by its threads.
pub struct HttpView {
    stats: Arc<Stats>,
    frames: Arc<LatestFrames>,
    services: Vec<ServiceInfo>,
    max_viewers: usize,
    viewers: AtomicUsize,
    rates: Mutex<report::Rates>,
}

impl HttpView {
    /// `services`: every service with its bound address (and receive buffer), the HTTP one
    /// included.
    pub fn new(
        stats: Arc<Stats>,
        frames: Arc<LatestFrames>,
        services: Vec<ServiceInfo>,
        max_viewers: usize,
    ) -> Self {
        HttpView {
            stats,
            frames,
            services,
            max_viewers,
            viewers: AtomicUsize::new(0),
            rates: Mutex::new(report::Rates::default()),
        }
    }

    /// A place among the streaming viewers, if one is free.
    fn viewer_permit(&self) -> Option<ViewerPermit<'_>> {
        self.viewers
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max_viewers).then_some(n + 1)
            })
            .ok()
            .map(|_| ViewerPermit(&self.viewers))
    }

    /// The hub's state now.
    fn state(&self) -> report::State {
        let http = report::HttpState {
            viewers: self.viewers.load(Ordering::Acquire),
            max_viewers: self.max_viewers,
        };
        let mut rates = self.rates.lock().unwrap_or_else(|e| e.into_inner());
        report::build(&self.stats, &self.frames, &self.services, http, &mut rates)
    }
}

/// Holds one of the `max_viewers` places; gives it back when dropped.
struct ViewerPermit<'a>(&'a AtomicUsize);

impl Drop for ViewerPermit<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Bind the HTTP listener (done before any thread starts, so a busy port is an error of
/// `hub::start`).
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    TcpListener::bind(addr)
}

/// Serve `view` on `listener` until shutdown; the thread joins its connection threads
/// before it ends.
pub fn spawn(
    listener: TcpListener,
    view: Arc<HttpView>,
    shutdown: Shutdown,
) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("http".into())
        .spawn(move || accept_loop(listener, view, shutdown))
}

/// The connections being served, so shutdown can cut them.
#[derive(Default)]
struct OpenConns {
    next_id: u64,
    streams: HashMap<u64, TcpStream>,
}

fn accept_loop(listener: TcpListener, view: Arc<HttpView>, shutdown: Shutdown) {
    let local = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => return log::error!("http: no local address: {e}"),
    };
    // accept() cannot time out; a tiny thread wakes it with a connection at shutdown
    let waker = {
        let shutdown = shutdown.clone();
        std::thread::Builder::new()
            .name("http-waker".into())
            .spawn(move || {
                while !shutdown.wait_timeout(Duration::from_secs(3600)) {}
                let _ = TcpStream::connect_timeout(&reachable(local), Duration::from_secs(1));
            })
    };
    let max_conns = view.max_viewers + MAX_OTHER_CONNS;
    let open = Arc::new(Mutex::new(OpenConns::default()));
    let mut threads: Vec<JoinHandle<()>> = Vec::new();
    while !shutdown.is_triggered() {
        let (stream, peer) = match listener.accept() {
            Ok(c) => c,
            Err(e) => {
                // e.g. out of file descriptors: wait a little rather than spin or give up
                log::warn!("http: accept failed: {e}");
                shutdown.wait_timeout(POLL_INTERVAL);
                continue;
            }
        };
        if shutdown.is_triggered() {
            break;
        }
        threads.retain(|h| !h.is_finished());
        if threads.len() >= max_conns {
            log::warn!("http: refusing {peer}: {max_conns} connections already open");
            refuse(stream, max_conns);
            continue;
        }
        let id = {
            let mut open = open.lock().unwrap_or_else(|e| e.into_inner());
            let Ok(clone) = stream.try_clone() else {
                continue;
            };
            open.next_id += 1;
            let id = open.next_id;
            open.streams.insert(id, clone);
            id
        };
        let (view, shutdown, open) = (view.clone(), shutdown.clone(), open.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("http {peer}"))
            .spawn(move || {
                serve(stream, peer, &view, &shutdown);
                open.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .streams
                    .remove(&id);
            });
        match spawned {
            Ok(h) => threads.push(h),
            Err(e) => log::error!("http: cannot start a thread for {peer}: {e}"),
        }
    }
    // unblock every connection (a viewer may be inside a write to a stalled client)
    for s in open
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .streams
        .values()
    {
        let _ = s.shutdown(std::net::Shutdown::Both);
    }
    for h in threads {
        let _ = h.join();
    }
    if let Ok(w) = waker {
        let _ = w.join();
    }
    log::debug!("http: stopped");
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

/// Answer a connection past the limit with a 503, without reading its request.
fn refuse(mut stream: TcpStream, max_conns: usize) {
    let _ = stream.set_write_timeout(Some(Duration::from_millis(200)));
    let _ = conn::respond_error(
        &mut stream,
        503,
        &format!("the hub's web view is serving {max_conns} connections already; try again"),
        &[("Retry-After", "1")],
        false,
        false,
    );
}

/// Serve the requests of one connection until it closes.
fn serve(stream: TcpStream, peer: SocketAddr, view: &HttpView, shutdown: &Shutdown) {
    let mut conn = match conn::Connection::new(stream, POLL_INTERVAL) {
        Ok(c) => c,
        Err(e) => return log::debug!("http: {peer}: {e}"),
    };
    loop {
        let request = match conn.read_request(shutdown) {
            Ok(r) => r,
            Err(conn::ReadError::Closed) => return,
            Err(conn::ReadError::Respond(status)) => {
                log::debug!("http: {peer}: bad request, answered {status}");
                let detail = match status {
                    408 => "the request head did not arrive in time".to_string(),
                    431 => format!(
                        "the request head is over {} bytes or has too many headers",
                        conn::MAX_HEAD_BYTES
                    ),
                    505 => "only HTTP/1.0 and HTTP/1.1 are served".to_string(),
                    _ => "not an HTTP/1.x request".to_string(),
                };
                let _ = conn::respond_error(&mut conn.writer(), status, &detail, &[], false, false);
                return conn.linger_close();
            }
        };
        log::debug!("http: {peer}: {} {}", request.method, request.target);
        match routes::handle(&mut conn, &request, view, shutdown) {
            Ok(true) if request.keep_alive => continue,
            // a request with a body (never read) or a refused method: its bytes may follow
            Ok(_) if request.has_body => return conn.linger_close(),
            Ok(_) => return,
            Err(e) => return log::debug!("http: {peer}: {e}"),
        }
    }
}
