//! The `hub` server: binds the services, starts a thread per bound port and the consumer
//! threads, and on shutdown joins them all and produces the summary.
//!
//! - [`img_service`]: UDP image frames (the seed formats and `framed`, on one port), acked
//!   per intact frame;
//! - [`msg_service`]: UDP JSON messages, answered, optionally logged ([`msg_log`]: rotated
//!   by size);
//! - [`tcp_service`]: the seed TCP stream, a thread per connection;
//! - [`source`]: who sent something ([`source::SourceId`]), the key every consumer shares;
//! - [`net`]: socket setup the services share (large receive buffers) and a log limiter;
//! - consumers, never blocking a receiver: [`stats`], [`saver`], [`display`] (fed through
//!   [`sinks`] and [`crate::latest`]); the saver keeps its folder within a cap
//!   ([`save_dir`]);
//! - taps for a program that embeds the hub ([`crate::api::Hub`]): [`FrameTap`] (newest
//!   frame per source) and [`MessageTap`] (a bounded queue of messages);
//! - [`http`]: the optional web view (`--http`): a live page, MJPEG streams, snapshots,
//!   `/state` JSON and `/metrics`.
//! - [`command_inbox`]: commands from the HTTP and MQTT threads to the message service
//!   (issue 15), and their results back, through bounded channels.
//! - [`error`]: [`HubError`], why the hub could not start.

pub mod command_inbox;
pub mod display;
pub mod error;
pub mod frame_log;
pub mod http;
pub mod img_service;
pub mod latency;
pub mod msg_log;
pub mod msg_service;
pub mod net;
pub mod reload;
pub mod save_dir;
pub mod saver;
pub mod sinks;
pub mod source;
pub mod stats;
pub mod tcp_service;

pub use error::{ConfigError, HubError};

use crate::latest::LatestByKey;
use crate::proto::image_receiver::ImageConfig;
use crate::proto::secure_gate::SecurityConfig;
use crate::secure::authorized::KeyFile;
use crate::shutdown::Shutdown;
use saver::SaverThread;
use sinks::FrameSinks;
use source::{Service, SourceId};
use stats::Stats;
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

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
    /// `--msg-log` rotates past this many bytes (at least [`msg_log::MIN_MAX_BYTES`]).
    pub msg_log_max_bytes: u64,
    /// Rotated message logs kept (`FILE.1` … `FILE.N`).
    pub msg_log_keep: u32,
    /// `--frame-log`: one JSON line per delivered frame ([`frame_log`]).
    pub frame_log: Option<PathBuf>,
    /// `--frame-log` rotates past this many bytes (at least [`msg_log::MIN_MAX_BYTES`]).
    pub frame_log_max_bytes: u64,
    /// Rotated frame logs kept.
    pub frame_log_keep: u32,
    /// The message budget all senders share, bytes per second, and each one's burst.
    pub msg_budget_bytes_per_s: u64,
    pub msg_budget_burst_bytes: u64,
    pub save_dir: Option<PathBuf>,
    pub save_every: u64,
    pub save_queue_bytes: usize,
    /// `--save-dir` holds at most this many bytes of frames (oldest deleted first).
    pub save_max_bytes: u64,
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
    /// HTTP connections from one IP address at most; more get a 503.
    pub http_max_conns_per_addr: usize,
    /// Keys required (`--key`, `--authorized-keys`, `--allow-plain`); `None`: none.
    pub security: Option<SecuritySettings>,
    /// A command not taken by its device within this long expires (`--command-ttl`).
    pub command_ttl: Duration,
}

/// Where the hub's keys are, and who may still send without one.
#[derive(Clone, Debug)]
pub struct SecuritySettings {
    /// The hub's own private key (`--key`).
    pub key: PathBuf,
    /// One `<public key> <name>` per device (`--authorized-keys`), reloaded when it
    /// changes (looked at every second) and on SIGHUP.
    pub authorized_keys: PathBuf,
    /// Address ranges whose unauthenticated datagrams and connections are still taken.
    pub allow_plain: Vec<crate::secure::cidr::Cidr>,
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
            msg_log_max_bytes: 64 << 20,
            msg_log_keep: 4,
            frame_log: None,
            frame_log_max_bytes: 64 << 20,
            frame_log_keep: 4,
            msg_budget_bytes_per_s: crate::proto::msg_receiver::DEFAULT_BUDGET_BYTES_PER_S,
            msg_budget_burst_bytes: crate::proto::msg_receiver::DEFAULT_BUDGET_BURST_BYTES,
            save_dir: None,
            save_every: 1,
            save_queue_bytes: 256 << 20,
            save_max_bytes: 1 << 30,
            display: false,
            tcp_max_conns: 16,
            tcp_max_conns_per_addr: 4,
            tcp_idle_timeout: Duration::from_secs(30),
            stats_interval: Duration::from_secs(5),
            http: None,
            http_max_viewers: 16,
            http_max_conns_per_addr: 8,
            security: None,
            command_ttl: crate::proto::commands::DEFAULT_TTL,
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
    /// Where commands for the message service's devices go (with the message service).
    pub commands: Option<Arc<command_inbox::CommandInbox>>,
    services: Vec<Service>,
    service_threads: Vec<JoinHandle<()>>,
    saver: Option<SaverThread>,
    /// The `--frame-log` writer: joined after the services, so it writes out their frames.
    frame_log: Option<JoinHandle<()>>,
    other_threads: Vec<JoinHandle<()>>,
}

/// What the hub did, once stopped.
#[derive(Clone, Debug)]
pub struct HubReport {
    /// The exit summary, the saver's counts included (`summary.text()` for people).
    pub summary: stats::HubSummary,
}

impl HubConfig {
    /// Check the limits fit together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.img_port.is_none() && self.msg_port.is_none() && self.tcp_port.is_none() {
            return Err(ConfigError::NoService);
        }
        if self.max_frame_bytes == 0 {
            return Err(ConfigError::MaxFrameBytes);
        }
        if (self.max_partial_bytes as u64) < self.max_frame_bytes {
            return Err(ConfigError::PartialBelowFrame {
                partial: self.max_partial_bytes,
                frame: self.max_frame_bytes,
            });
        }
        if self.frame_timeout.is_zero() {
            return Err(ConfigError::FrameTimeout);
        }
        if self.save_every == 0 {
            return Err(ConfigError::SaveEvery);
        }
        if self.msg_log_max_bytes < msg_log::MIN_MAX_BYTES {
            return Err(ConfigError::MsgLogMaxBytes(msg_log::MIN_MAX_BYTES));
        }
        if self.frame_log_max_bytes < msg_log::MIN_MAX_BYTES {
            return Err(ConfigError::FrameLogMaxBytes(msg_log::MIN_MAX_BYTES));
        }
        if self.msg_budget_bytes_per_s == 0 {
            return Err(ConfigError::MsgBudget);
        }
        if self.save_max_bytes == 0 {
            return Err(ConfigError::SaveMaxBytes);
        }
        Ok(())
    }
}

/// Bind every enabled service and start all threads. Binding errors (port in use, bad
/// address, unwritable log or folder) are returned before any thread starts.
pub fn start(config: &HubConfig, shutdown: Shutdown) -> Result<RunningHub, HubError> {
    start_with_taps(config, Taps::default(), shutdown)
}

/// What a program embedding the hub takes frames and messages from, fed without ever
/// blocking a receiver.
#[derive(Clone, Default)]
pub struct Taps {
    /// The newest intact frame per source.
    pub frames: Option<Arc<FrameTap>>,
    /// Recorded messages, oldest dropped when the program falls behind.
    pub messages: Option<Arc<MessageTap>>,
}

/// The newest frame per source, for one consumer that takes them all.
pub type FrameTap = LatestByKey<SourceId, TappedFrame>;

/// A frame as a tap holds it.
#[derive(Clone, Debug)]
pub struct TappedFrame {
    /// 1-based, per source (the same number as the saved file's).
    pub seq: u64,
    /// The name the source is shown as, if it gave one.
    pub name: Option<Arc<str>>,
    pub jpeg: Arc<Vec<u8>>,
    /// When the hub had the whole frame.
    pub received: SystemTime,
}

/// A message as a tap holds it.
#[derive(Clone, Debug)]
pub struct TappedMessage {
    pub from: SocketAddr,
    /// The name the sender is shown as (framed messages), if any.
    pub name: Option<Arc<str>>,
    /// The JSON text as it came.
    pub json: String,
    pub received: SystemTime,
}

/// A bounded queue of messages with one consumer: when it is full, the oldest message is
/// dropped (and counted), so a program that falls behind never stalls the message service
/// nor grows the hub's memory.
pub struct MessageTap {
    queue: Mutex<VecDeque<TappedMessage>>,
    ready: Condvar,
    capacity: usize,
    dropped: AtomicU64,
}

impl MessageTap {
    /// A queue of at most `capacity` messages (at least 1).
    pub fn new(capacity: usize) -> Self {
        MessageTap {
            queue: Mutex::new(VecDeque::new()),
            ready: Condvar::new(),
            capacity: capacity.max(1),
            dropped: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<TappedMessage>> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queue a message; never waits (beyond a lock held for a push or pop).
    pub fn offer(&self, from: SocketAddr, name: Option<Arc<str>>, json: &str) {
        let message = TappedMessage {
            from,
            name,
            json: json.to_owned(),
            received: SystemTime::now(),
        };
        let (dropped, was_empty) = {
            let mut q = self.lock();
            let was_empty = q.is_empty();
            let dropped = (q.len() >= self.capacity).then(|| q.pop_front());
            q.push_back(message);
            (dropped, was_empty)
        };
        if dropped.is_some() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        // The one consumer waits only on an empty queue, and takes until it is empty again:
        // only the first message after that needs to wake it (a notify is a futex syscall,
        // and this runs on the message service's receive thread).
        if was_empty {
            self.ready.notify_one();
        }
    }

    /// The oldest queued message, waiting at most `timeout` for one.
    pub fn take(&self, timeout: Duration) -> Option<TappedMessage> {
        let q = self.lock();
        let (mut q, _) = self
            .ready
            .wait_timeout_while(q, timeout, |q| q.is_empty())
            .unwrap_or_else(|e| e.into_inner());
        q.pop_front()
    }

    /// Messages dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Messages the HTTP view's plots may fall behind by (the oldest are dropped past it).
const HISTORY_TAP_MESSAGES: usize = 1024;

/// [`start`], with `taps` fed every intact frame and recorded message.
pub fn start_with_taps(
    config: &HubConfig,
    taps: Taps,
    shutdown: Shutdown,
) -> Result<RunningHub, HubError> {
    config.validate()?;
    let bind_error = |service, transport, addr| {
        move |source| HubError::Bind {
            service,
            transport,
            addr,
            source,
        }
    };
    let local_addr = |service| move |source| HubError::LocalAddr { service, source };
    let spawn_error = |thread| move |source| HubError::Spawn { thread, source };
    let img = match config.img_port {
        Some(port) => {
            let addr = SocketAddr::new(config.bind, port);
            let (socket, granted) = net::bind_udp(addr, config.recv_buffer_bytes)
                .map_err(bind_error("img", "udp", addr))?;
            net::log_recv_buffer("img", config.recv_buffer_bytes, granted);
            Some((socket, granted))
        }
        None => None,
    };
    let msg = match config.msg_port {
        Some(port) => {
            let addr = SocketAddr::new(config.bind, port);
            let (socket, granted) = net::bind_udp(addr, config.recv_buffer_bytes.min(4 << 20))
                .map_err(bind_error("msg", "udp", addr))?;
            net::log_recv_buffer("msg", config.recv_buffer_bytes.min(4 << 20), granted);
            Some((socket, granted))
        }
        None => None,
    };
    let tcp = match config.tcp_port {
        Some(port) => {
            let addr = SocketAddr::new(config.bind, port);
            Some(TcpListener::bind(addr).map_err(bind_error("tcp", "tcp", addr))?)
        }
        None => None,
    };
    let http_listener = match config.http {
        Some(addr) => Some(http::bind(addr).map_err(bind_error("http", "tcp", addr))?),
        None => None,
    };
    let msg_log = match &config.msg_log {
        Some(path) => Some(
            msg_log::MsgLog::open(path, config.msg_log_max_bytes, config.msg_log_keep).map_err(
                |source| HubError::MsgLog {
                    path: path.clone(),
                    source,
                },
            )?,
        ),
        None => None,
    };
    let frame_log = match &config.frame_log {
        Some(path) => Some(
            msg_log::LineLog::open(path, config.frame_log_max_bytes, config.frame_log_keep)
                .map_err(|source| HubError::FrameLog {
                    path: path.clone(),
                    source,
                })?,
        ),
        None => None,
    };
    let bound = BoundAddrs {
        img: img
            .as_ref()
            .map(|(s, _)| s.local_addr())
            .transpose()
            .map_err(local_addr("img"))?,
        msg: msg
            .as_ref()
            .map(|(s, _)| s.local_addr())
            .transpose()
            .map_err(local_addr("msg"))?,
        tcp: tcp
            .as_ref()
            .map(|s| s.local_addr())
            .transpose()
            .map_err(local_addr("tcp"))?,
        http: http_listener
            .as_ref()
            .map(|s| s.local_addr())
            .transpose()
            .map_err(local_addr("http"))?,
    };
    let receive_buffers = ReceiveBuffers {
        img: img.as_ref().map(|&(_, granted)| granted),
        msg: msg.as_ref().map(|&(_, granted)| granted),
    };

    let stats = Stats::new();
    let mut sinks = FrameSinks::default();
    let mut saver_thread = None;
    if let Some(dir) = &config.save_dir {
        let (saver, thread) = saver::spawn(
            dir,
            config.save_every,
            config.save_queue_bytes,
            config.save_max_bytes,
        )
        .map_err(|source| HubError::SaveDir {
            path: dir.clone(),
            source,
        })?;
        sinks.saver = Some(saver);
        saver_thread = Some(thread);
    }
    let frames = http_listener
        .as_ref()
        .map(|_| Arc::new(http::frames::LatestFrames::default()));
    sinks.frames = frames.clone();
    sinks.tap = taps.frames;
    let mut frame_log_thread = None;
    if let Some(log) = frame_log {
        let (handle, thread) =
            frame_log::spawn(log, shutdown.clone()).map_err(spawn_error("frame-log"))?;
        sinks.frame_log = Some(handle);
        frame_log_thread = Some(thread);
    }
    let mut other_threads = Vec::new();
    if config.display {
        if let Some((queue, handle)) = display::spawn(shutdown.clone()) {
            sinks.display = Some(queue);
            other_threads.push(handle);
        }
    }
    other_threads.push(
        stats::spawn_reporter(stats.clone(), config.stats_interval, shutdown.clone())
            .map_err(spawn_error("stats"))?,
    );

    let (commands, command_port) = match msg {
        Some(_) => {
            let (inbox, port) = command_inbox::CommandInbox::new(config.command_ttl);
            (Some(inbox), Some(port))
        }
        None => (None, None),
    };
    // The page's plots of message fields take the messages from a tap of their own.
    let history_messages = (http_listener.is_some() && msg.is_some())
        .then(|| Arc::new(MessageTap::new(HISTORY_TAP_MESSAGES)));
    if let (Some(listener), Some(frames)) = (http_listener, frames) {
        let view = http::HttpView::new(
            stats.clone(),
            frames,
            service_infos(&bound, &receive_buffers),
            config.http_max_viewers,
            config.http_max_conns_per_addr,
        )
        .with_commands(commands.clone());
        let view = match &history_messages {
            Some(tap) => view.with_message_history(Arc::clone(tap)),
            None => view,
        };
        other_threads.push(
            http::spawn(listener, Arc::new(view), shutdown.clone()).map_err(spawn_error("http"))?,
        );
    }

    let mut security = match &config.security {
        None => None,
        Some(s) => Some(load_security(s, true)?),
    };
    let allow_plain = security
        .as_ref()
        .map(|(sec, _): &(SecurityConfig, KeyFile)| sec.allow_plain.clone());

    let mut services = Vec::new();
    let mut service_threads = Vec::new();
    let spawn = |name: &'static str, f: Box<dyn FnOnce() + Send>| {
        std::thread::Builder::new()
            .name(name.into())
            .spawn(f)
            .map_err(spawn_error(name))
    };
    if let Some((socket, _)) = img {
        let image = ImageConfig {
            max_frame_bytes: config.max_frame_bytes,
            frame_timeout: config.frame_timeout,
            max_partial_bytes: config.max_partial_bytes,
        };
        let (stats, sinks, shutdown) = (stats.clone(), sinks.clone(), shutdown.clone());
        let security = security.take();
        service_threads.push(spawn(
            "img",
            Box::new(move || img_service::run(socket, image, security, stats, sinks, shutdown)),
        )?);
        services.push(Service::Img);
    }
    if let Some((socket, _)) = msg {
        let (stats, shutdown) = (stats.clone(), shutdown.clone());
        let tap: Vec<Arc<MessageTap>> = taps.messages.into_iter().chain(history_messages).collect();
        let mut receiver = crate::proto::msg_receiver::MsgReceiver::with_budget(
            config.msg_budget_bytes_per_s,
            config.msg_budget_burst_bytes,
        )
        .with_command_ttl(config.command_ttl);
        if let Some(ranges) = &allow_plain {
            receiver = receiver.only_from(ranges.clone());
        }
        // the message port's gate: its own sessions and its own view of the key file
        let security = match &config.security {
            None => None,
            Some(s) => Some(load_security(s, false)?),
        };
        service_threads.push(spawn(
            "msg",
            Box::new(move || {
                msg_service::run(
                    socket,
                    receiver,
                    security,
                    msg_log,
                    (tap, command_port),
                    stats,
                    shutdown,
                )
            }),
        )?);
        services.push(Service::Msg);
    }
    if let Some(listener) = tcp {
        let tcp_config = tcp_service::TcpConfig {
            max_frame_bytes: config.max_frame_bytes,
            max_conns: config.tcp_max_conns,
            max_conns_per_addr: config.tcp_max_conns_per_addr,
            idle_timeout: config.tcp_idle_timeout,
            only_from: allow_plain.clone(),
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
        commands,
        services,
        service_threads,
        saver: saver_thread,
        frame_log: frame_log_thread,
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
        if let Some(h) = self.frame_log {
            let _ = h.join();
        }
        for h in self.other_threads {
            let _ = h.join();
        }
        let mut summary = self.stats.summary(&self.services);
        summary.saved = saved;
        HubReport { summary }
    }
}

/// Read `--key` and `--authorized-keys` (errors name the file and what is wrong); `say`:
/// log what was loaded (once, for the first service).
fn load_security(s: &SecuritySettings, say: bool) -> Result<(SecurityConfig, KeyFile), HubError> {
    let loaded = crate::secure::keys::read_private_key(&s.key)?;
    let key_file = KeyFile::load(&s.authorized_keys)?;
    let config = SecurityConfig {
        key: loaded.key.clone(),
        keys: key_file.keys().clone(),
        allow_plain: s.allow_plain.clone(),
    };
    if !say {
        return Ok((config, key_file));
    }
    if loaded.too_open {
        log::warn!(
            "--key {}: readable by others than its owner (chmod 600 it)",
            s.key.display()
        );
    }
    log::info!(
        "keys: the hub's public key is {}; {} devices in {}; unauthenticated datagrams {}",
        loaded.key.public_key(),
        key_file.keys().len(),
        s.authorized_keys.display(),
        if s.allow_plain.is_empty() {
            "refused".to_string()
        } else {
            let ranges: Vec<String> = s.allow_plain.iter().map(ToString::to_string).collect();
            format!("taken from {} only", ranges.join(", "))
        }
    );
    Ok((config, key_file))
}
