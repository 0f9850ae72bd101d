//! The `hub` server: binds the services, starts a thread per bound port and the consumer
//! threads, and on shutdown joins them all and produces the summary.
//!
//! - [`img_service`]: UDP image frames (the seed formats and `framed`, on one port), acked
//!   per intact frame;
//! - [`msg_service`]: UDP JSON messages, answered, optionally logged;
//! - [`tcp_service`]: the seed TCP stream, a thread per connection;
//! - [`source`]: who sent something ([`source::SourceId`]), the key every consumer shares;
//! - [`net`]: socket setup the services share (large receive buffers) and a log limiter;
//! - consumers, never blocking a receiver: [`stats`], [`saver`], [`display`] (fed through
//!   [`sinks`] and [`crate::latest`]);
//! - [`http`]: the optional web view (`--http`): a live page, MJPEG streams, snapshots,
//!   `/state` JSON and `/metrics`.

pub mod display;
pub mod http;
pub mod img_service;
pub mod msg_service;
pub mod net;
pub mod saver;
pub mod sinks;
pub mod source;
pub mod stats;
pub mod tcp_service;

use crate::proto::image_receiver::ImageConfig;
use crate::shutdown::Shutdown;
use saver::SaverThread;
use sinks::FrameSinks;
use source::Service;
use stats::Stats;
use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Everything the hub can be told (the `hub` binary maps its flags onto this).
#[derive(Clone, Debug)]
pub struct HubConfig {
    pub bind: IpAddr,
    /// `None` turns the service off; port 0 lets the OS choose.
    pub img_port: Option<u16>,
    pub msg_port: Option<u16>,
    pub tcp_port: Option<u16>,
    pub max_frame_bytes: u64,
    pub frame_timeout: Duration,
    pub max_partial_bytes: usize,
    pub recv_buffer_bytes: usize,
    pub msg_log: Option<PathBuf>,
    pub save_dir: Option<PathBuf>,
    pub save_every: u64,
    pub save_queue_bytes: usize,
    pub display: bool,
    pub tcp_max_conns: usize,
    /// TCP stream connections from one IP address at most.
    pub tcp_max_conns_per_addr: usize,
    pub tcp_idle_timeout: Duration,
    pub stats_interval: Duration,
    /// Where the HTTP view listens; `None` (the default) turns it off.
    pub http: Option<SocketAddr>,
    /// `/stream` viewers served at once; more get a 503.
    pub http_max_viewers: usize,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            bind: [127, 0, 0, 1].into(),
            img_port: Some(9999),
            msg_port: Some(6666),
            tcp_port: Some(8002),
            max_frame_bytes: 16 << 20,
            frame_timeout: Duration::from_millis(1000),
            max_partial_bytes: 64 << 20,
            recv_buffer_bytes: 8 << 20,
            msg_log: None,
            save_dir: None,
            save_every: 1,
            save_queue_bytes: 256 << 20,
            display: false,
            tcp_max_conns: 16,
            tcp_max_conns_per_addr: 4,
            tcp_idle_timeout: Duration::from_secs(30),
            stats_interval: Duration::from_secs(5),
            http: None,
            http_max_viewers: 16,
        }
    }
}

/// The addresses the services actually bound.
#[derive(Clone, Copy, Debug, Default)]
pub struct BoundAddrs {
    pub img: Option<SocketAddr>,
    pub msg: Option<SocketAddr>,
    pub tcp: Option<SocketAddr>,
    pub http: Option<SocketAddr>,
}

/// The UDP receive buffers the kernel granted (`SO_RCVBUF` as Linux reports it: twice the
/// usable size).
#[derive(Clone, Copy, Debug, Default)]
pub struct ReceiveBuffers {
    pub img: Option<usize>,
    pub msg: Option<usize>,
}

/// A started hub. Trigger its [`Shutdown`] and call [`RunningHub::wait`] to stop it.
pub struct RunningHub {
    pub bound: BoundAddrs,
    pub receive_buffers: ReceiveBuffers,
    pub stats: Arc<Stats>,
    services: Vec<Service>,
    service_threads: Vec<JoinHandle<()>>,
    saver: Option<SaverThread>,
    other_threads: Vec<JoinHandle<()>>,
}

/// What the hub did, once stopped.
#[derive(Clone, Debug)]
pub struct HubReport {
    /// The exit summary, the saver's counts included (`summary.text()` for people).
    pub summary: stats::HubSummary,
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

impl HubConfig {
    /// Check the limits fit together.
    pub fn validate(&self) -> io::Result<()> {
        if self.img_port.is_none() && self.msg_port.is_none() && self.tcp_port.is_none() {
            return Err(invalid("every service is turned off; nothing to do".into()));
        }
        if self.max_frame_bytes == 0 {
            return Err(invalid("--max-frame-bytes must be positive".into()));
        }
        if (self.max_partial_bytes as u64) < self.max_frame_bytes {
            return Err(invalid(format!(
                "--max-partial-bytes ({}) must be at least --max-frame-bytes ({})",
                self.max_partial_bytes, self.max_frame_bytes
            )));
        }
        if self.frame_timeout.is_zero() {
            return Err(invalid("--frame-timeout-ms must be positive".into()));
        }
        if self.save_every == 0 {
            return Err(invalid("--save-every must be at least 1".into()));
        }
        Ok(())
    }
}

/// Bind every enabled service and start all threads. Binding errors (port in use, bad
/// address, unwritable log or folder) are returned before any thread starts.
pub fn start(config: &HubConfig, shutdown: Shutdown) -> io::Result<RunningHub> {
    config.validate()?;
    let with_context =
        |what: String| move |e: io::Error| io::Error::new(e.kind(), format!("{what}: {e}"));
    let img = match config.img_port {
        Some(port) => {
            let addr = SocketAddr::new(config.bind, port);
            let (socket, granted) = net::bind_udp(addr, config.recv_buffer_bytes)
                .map_err(with_context(format!("img: cannot bind udp {addr}")))?;
            net::log_recv_buffer("img", config.recv_buffer_bytes, granted);
            Some((socket, granted))
        }
        None => None,
    };
    let msg = match config.msg_port {
        Some(port) => {
            let addr = SocketAddr::new(config.bind, port);
            let (socket, granted) = net::bind_udp(addr, config.recv_buffer_bytes.min(4 << 20))
                .map_err(with_context(format!("msg: cannot bind udp {addr}")))?;
            net::log_recv_buffer("msg", config.recv_buffer_bytes.min(4 << 20), granted);
            Some((socket, granted))
        }
        None => None,
    };
    let tcp = match config.tcp_port {
        Some(port) => {
            let addr = SocketAddr::new(config.bind, port);
            Some(
                TcpListener::bind(addr)
                    .map_err(with_context(format!("tcp: cannot bind tcp {addr}")))?,
            )
        }
        None => None,
    };
    let http_listener = match config.http {
        Some(addr) => {
            Some(http::bind(addr).map_err(with_context(format!("http: cannot bind tcp {addr}")))?)
        }
        None => None,
    };
    let msg_log = match &config.msg_log {
        Some(path) => Some(
            msg_service::MsgLog::open(path)
                .map_err(with_context(format!("--msg-log {}", path.display())))?,
        ),
        None => None,
    };
    let bound = BoundAddrs {
        img: img.as_ref().map(|(s, _)| s.local_addr()).transpose()?,
        msg: msg.as_ref().map(|(s, _)| s.local_addr()).transpose()?,
        tcp: tcp.as_ref().map(|s| s.local_addr()).transpose()?,
        http: http_listener.as_ref().map(|s| s.local_addr()).transpose()?,
    };
    let receive_buffers = ReceiveBuffers {
        img: img.as_ref().map(|&(_, granted)| granted),
        msg: msg.as_ref().map(|&(_, granted)| granted),
    };

    let stats = Stats::new();
    let mut sinks = FrameSinks::default();
    let mut saver_thread = None;
    if let Some(dir) = &config.save_dir {
        let (saver, thread) = saver::spawn(dir, config.save_every, config.save_queue_bytes)
            .map_err(with_context(format!("--save-dir {}", dir.display())))?;
        sinks.saver = Some(saver);
        saver_thread = Some(thread);
    }
    let frames = http_listener
        .as_ref()
        .map(|_| Arc::new(http::frames::LatestFrames::default()));
    sinks.frames = frames.clone();
    let mut other_threads = Vec::new();
    if config.display {
        if let Some((queue, handle)) = display::spawn(shutdown.clone()) {
            sinks.display = Some(queue);
            other_threads.push(handle);
        }
    }
    other_threads.push(stats::spawn_reporter(
        stats.clone(),
        config.stats_interval,
        shutdown.clone(),
    )?);

    if let (Some(listener), Some(frames)) = (http_listener, frames) {
        let view = http::HttpView::new(
            stats.clone(),
            frames,
            service_infos(&bound, &receive_buffers),
            config.http_max_viewers,
        );
        other_threads.push(http::spawn(listener, Arc::new(view), shutdown.clone())?);
    }

    let mut services = Vec::new();
    let mut service_threads = Vec::new();
    let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
        std::thread::Builder::new().name(name.into()).spawn(f)
    };
    if let Some((socket, _)) = img {
        let image = ImageConfig {
            max_frame_bytes: config.max_frame_bytes,
            frame_timeout: config.frame_timeout,
            max_partial_bytes: config.max_partial_bytes,
        };
        let (stats, sinks, shutdown) = (stats.clone(), sinks.clone(), shutdown.clone());
        service_threads.push(spawn(
            "img",
            Box::new(move || img_service::run(socket, image, stats, sinks, shutdown)),
        )?);
        services.push(Service::Img);
    }
    if let Some((socket, _)) = msg {
        let (stats, shutdown) = (stats.clone(), shutdown.clone());
        service_threads.push(spawn(
            "msg",
            Box::new(move || msg_service::run(socket, msg_log, stats, shutdown)),
        )?);
        services.push(Service::Msg);
    }
    if let Some(listener) = tcp {
        let tcp_config = tcp_service::TcpConfig {
            max_frame_bytes: config.max_frame_bytes,
            max_conns: config.tcp_max_conns,
            max_conns_per_addr: config.tcp_max_conns_per_addr,
            idle_timeout: config.tcp_idle_timeout,
        };
        let (stats, sinks, shutdown) = (stats.clone(), sinks.clone(), shutdown.clone());
        service_threads.push(spawn(
            "tcp",
            Box::new(move || tcp_service::run(listener, tcp_config, stats, sinks, shutdown)),
        )?);
        services.push(Service::Tcp);
    }
    // `sinks` is dropped here: once the service threads end, the saver's queue closes.
    drop(sinks);
    Ok(RunningHub {
        bound,
        receive_buffers,
        stats,
        services,
        service_threads,
        saver: saver_thread,
        other_threads,
    })
}

/// The bound services as the HTTP view lists them.
fn service_infos(bound: &BoundAddrs, buffers: &ReceiveBuffers) -> Vec<http::ServiceInfo> {
    [
        ("img", "udp", bound.img, buffers.img),
        ("msg", "udp", bound.msg, buffers.msg),
        ("tcp", "tcp", bound.tcp, None),
        ("http", "tcp", bound.http, None),
    ]
    .into_iter()
    .filter_map(|(name, transport, addr, receive_buffer_bytes)| {
        Some(http::ServiceInfo {
            name,
            transport,
            addr: addr?,
            receive_buffer_bytes,
        })
    })
    .collect()
}

impl RunningHub {
    /// Wait for every thread to end (they end once the shutdown flag is set), let the saver
    /// write out its queue, and return the summary.
    pub fn wait(self) -> HubReport {
        for h in self.service_threads {
            if h.join().is_err() {
                log::error!("a service thread panicked");
            }
        }
        let saved = self.saver.map(SaverThread::join);
        for h in self.other_threads {
            let _ = h.join();
        }
        let mut summary = self.stats.summary(&self.services);
        summary.saved = saved;
        HubReport { summary }
    }
}
