//! `hub --http ADDR`: a small web view of the running hub, off by default.
//!
//! - `/`: one self-contained page (inline CSS and JS, no build step) that shows every image
//!   source live, with its counters, and the message channel; it polls `/state` every second;
//! - `/stream/<source>`: MJPEG (`multipart/x-mixed-replace`) of the received JPEG bytes;
//! - `/snapshot/<source>.jpg`: the newest frame;
//! - `/state` (JSON) and `/metrics` (Prometheus text): the hub's counters;
//! - `POST /api/sources/<source>/command`: a command (one JSON value, at most
//!   [`crate::proto::commands::MAX_COMMAND_BYTES`]) for the framed message sender named
//!   `<source>`, answered 202 `{"id": N}` (issue 15).
//!
//! Threads, no runtime: one accept thread and one thread per connection, at most
//! `max_viewers` plus [`MAX_OTHER_CONNS`] connections, and at most `max_conns_per_addr` from
//! one IP address, kept in a [`ConnTable`] (the policy is in [`crate::hub::net`]): a
//! connection that has not yet sent a whole request head (or sits idle between kept-alive
//! requests) gives its place to a newcomer when the table is full, and a request head must
//! be complete within 5 s (`conn::HEAD_TIMEOUT`) of the connection's accept (later ones: of
//! their first byte). So slow or silent connections, however many and from however many
//! addresses, cannot keep a legitimate request out; a connection turned away gets a 503,
//! and every refusal or eviction log line is rate-limited. Nothing here can slow a receiver: frames reach the view through [`frames`] ("latest
//! frame wins"), counters are read from the lock-free statistics. On shutdown every
//! connection socket is shut down, which ends even a write blocked on a stalled viewer, and
//! all threads are joined.
//!
//! - `/api/history` (JSON): the last minutes of every source, which the page plots
//!   ([`history`]: fed once a second by a thread of the view's own, and by the messages it
//!   takes from a tap of its own);
//!
//! - [`frames`]: the newest frame per source;
//! - `conn`: reading a request head (bounded), writing responses;
//! - `routes`: what each path serves;
//! - `report`: the `/state` and `/metrics` contents.

mod conn;
pub mod frames;
pub mod history;
mod report;
mod routes;

pub use report::ServiceInfo;

use crate::hub::net::{spawn_accept_waker, ConnSlot, ConnTable, Refused, SharedLogLimiter};
use crate::hub::source::{Service, SourceId};
use crate::hub::stats::Stats;
use crate::hub::MessageTap;
use crate::shutdown::{Shutdown, POLL_INTERVAL};
use frames::LatestFrames;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Connections served at once besides the streaming viewers (page loads, `/state` polls,
/// snapshots, scrapes, idle kept-alive connections).
pub const MAX_OTHER_CONNS: usize = 32;

/// Log lines per second of the HTTP view, over all its connections.
const LOG_LINES_PER_SECOND: u32 = 10;

/// What the HTTP view reads, shared by its threads.
pub struct HttpView {
    stats: Arc<Stats>,
    frames: Arc<LatestFrames>,
    services: Vec<ServiceInfo>,
    max_viewers: usize,
    max_conns_per_addr: usize,
    viewers: AtomicUsize,
    rates: Mutex<report::Rates>,
    commands: Option<Arc<crate::hub::command_inbox::CommandInbox>>,
    history: Mutex<history::History>,
    /// Recorded messages, for the plots of their numeric fields.
    history_messages: Option<Arc<MessageTap>>,
}

impl HttpView {
    /// `services`: every service with its bound address (and receive buffer), the HTTP one
    /// included.
    pub fn new(
        stats: Arc<Stats>,
        frames: Arc<LatestFrames>,
        services: Vec<ServiceInfo>,
        max_viewers: usize,
        max_conns_per_addr: usize,
    ) -> Self {
        HttpView {
            stats,
            frames,
            services,
            max_viewers,
            max_conns_per_addr,
            viewers: AtomicUsize::new(0),
            rates: Mutex::new(report::Rates::default()),
            commands: None,
            history: Mutex::new(history::History::new()),
            history_messages: None,
        }
    }

    /// Plot the numeric fields of the messages `tap` is fed.
    pub fn with_message_history(mut self, tap: Arc<MessageTap>) -> Self {
        self.history_messages = Some(tap);
        self
    }

    fn history(&self) -> std::sync::MutexGuard<'_, history::History> {
        self.history.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `/api/history`.
    fn history_state(&self) -> history::HistoryState {
        self.history().state(self.stats.uptime().as_secs_f64())
    }

    /// Take `POST /api/sources/<source>/command` into `inbox` (none: answered 503).
    pub fn with_commands(
        mut self,
        inbox: Option<Arc<crate::hub::command_inbox::CommandInbox>>,
    ) -> Self {
        self.commands = inbox;
        self
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
    let history = {
        let (view, shutdown) = (Arc::clone(&view), shutdown.clone());
        std::thread::Builder::new()
            .name("http-history".into())
            .spawn(move || history_loop(&view, &shutdown))?
    };
    std::thread::Builder::new()
        .name("http".into())
        .spawn(move || {
            accept_loop(listener, view, shutdown);
            let _ = history.join();
        })
}

/// Messages parsed for the plots per second at most (the tap drops the oldest beyond its
/// capacity; this bounds the CPU the plots may take under a flood).
const HISTORY_MESSAGES_PER_S: u32 = 1000;

/// Feed the history: every image source's counters once a second, and the messages of the
/// view's tap as they come (at most [`HISTORY_MESSAGES_PER_S`]).
fn history_loop(view: &HttpView, shutdown: &Shutdown) {
    let mut next = Instant::now();
    while !shutdown.is_triggered() {
        let mut parsed = 0;
        loop {
            let now = Instant::now();
            if now >= next || shutdown.is_triggered() {
                break;
            }
            let wait = (next - now).min(POLL_INTERVAL);
            let message = match &view.history_messages {
                Some(tap) if parsed < HISTORY_MESSAGES_PER_S => tap.take(wait),
                _ => {
                    shutdown.wait_timeout(wait);
                    None
                }
            };
            if let Some(m) = message {
                parsed += 1;
                let id = SourceId {
                    service: Service::Msg,
                    addr: m.from,
                }
                .slug();
                let now_s = view.stats.uptime().as_secs_f64();
                view.history().record_message(&id, now_s, &m.json);
            }
        }
        next += Duration::from_secs(1);
        let now_s = view.stats.uptime().as_secs_f64();
        let snapshot = view.stats.snapshot();
        let latencies = view.stats.latencies(true);
        let mut history = view.history();
        for (id, s) in &snapshot {
            if id.service == Service::Msg {
                continue;
            }
            let latency = latencies.get(id).map(|(l, _)| l);
            let reading = history::ImageReading {
                frames: s.items,
                bytes: s.bytes,
                latency_p50_ms: latency.and_then(|l| l.p50),
                latency_p99_ms: latency.and_then(|l| l.p99),
                quality: latency.and_then(|l| l.quality),
            };
            history.record_image(&id.slug(), now_s, reading);
        }
        history.forget_old(now_s);
    }
}

fn accept_loop(listener: TcpListener, view: Arc<HttpView>, shutdown: Shutdown) {
    let local = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => return log::error!("http: no local address: {e}"),
    };
    let waker = spawn_accept_waker("http", local, shutdown.clone());
    let max_conns = view.max_viewers + MAX_OTHER_CONNS;
    let table = ConnTable::new(max_conns, view.max_conns_per_addr);
    let log = Arc::new(SharedLogLimiter::new(LOG_LINES_PER_SECOND));
    let mut threads: Vec<JoinHandle<()>> = Vec::new();
    while !shutdown.is_triggered() {
        let (stream, peer) = match listener.accept() {
            Ok(c) => c,
            Err(e) => {
                // e.g. out of file descriptors: wait a little rather than spin or give up
                if let Some(s) = log.allow() {
                    log::warn!("http: accept failed: {e}{s}");
                }
                shutdown.wait_timeout(POLL_INTERVAL);
                continue;
            }
        };
        if shutdown.is_triggered() {
            break;
        }
        threads.retain(|h| !h.is_finished());
        let slot = match table.admit(&stream, peer, Instant::now()) {
            Ok((slot, evicted)) => {
                // (the limiter is asked only when there is a line to log)
                if let Some((old, s)) = evicted.and_then(|old| Some((old, log.allow()?))) {
                    log::warn!(
                        "http: {old} cut to make room for {peer}: it had not sent a whole \
                         request head{s}"
                    );
                }
                slot
            }
            Err(why) => {
                if let Some(s) = log.allow() {
                    log::warn!(
                        "http: refusing {peer}: {why} (--http-max-viewers {} + {MAX_OTHER_CONNS}, \
                         --http-max-conns-per-addr {}){s}",
                        view.max_viewers,
                        view.max_conns_per_addr
                    );
                }
                refuse(stream, why);
                continue;
            }
        };
        let (view, shutdown) = (view.clone(), shutdown.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("http {peer}"))
            .spawn(move || serve(stream, peer, &slot, &view, &shutdown));
        match spawned {
            Ok(h) => threads.push(h),
            Err(e) => log::error!("http: cannot start a thread for {peer}: {e}"),
        }
    }
    // unblock every connection (a viewer may be inside a write to a stalled client)
    table.shutdown_all();
    for h in threads {
        let _ = h.join();
    }
    if let Ok(w) = waker {
        let _ = w.join();
    }
    log::debug!("http: stopped");
}

/// Answer a connection turned away with a 503, without reading its request (the write is
/// bounded: a peer that reads nothing costs the accept loop at most 0.2 s).
fn refuse(mut stream: TcpStream, why: Refused) {
    let _ = stream.set_write_timeout(Some(Duration::from_millis(200)));
    let _ = conn::respond_error(
        &mut stream,
        503,
        &format!("the hub's web view is refusing this connection: {why}; try again"),
        &[("Retry-After", "1")],
        false,
        false,
    );
}

/// Serve the requests of one connection until it closes. While it waits for a request head
/// its place in the table may go to a newcomer (`slot` evictable); while a request is
/// served, it may not.
fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    slot: &ConnSlot,
    view: &HttpView,
    shutdown: &Shutdown,
) {
    let mut conn = match conn::Connection::new(stream, POLL_INTERVAL) {
        Ok(c) => c,
        Err(e) => return log::debug!("http: {peer}: {e}"),
    };
    loop {
        slot.set_evictable(true, Instant::now());
        let request = match conn.read_request(shutdown) {
            Ok(r) => r,
            Err(conn::ReadError::Closed) => return,
            Err(conn::ReadError::Respond(status)) => {
                log::debug!("http: {peer}: bad request, answered {status}");
                let detail = match status {
                    408 => format!(
                        "the request head did not arrive within {} s",
                        conn::HEAD_TIMEOUT.as_secs()
                    ),
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
        slot.set_evictable(false, Instant::now());
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
