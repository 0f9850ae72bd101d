//! The TCP stream service (seed 000): per connection, a 16-byte ASCII length, then that many
//! JPEG bytes, repeated until the peer closes.
//!
//! A thread per connection, at most `max_conns` at once and `max_conns_per_addr` from one
//! IP address ([`ConnTable`]: past the per-address limit a connection is closed at once;
//! when every place is taken, a newcomer takes the place of the longest-open connection
//! that has not delivered a frame yet, and only when all of them have is it closed). Each
//! connection is a thin loop around the socket-free decoder [`crate::proto::seed_tcp`],
//! which holds every rule of the stream (the header, buffer growth, the JPEG check, what is
//! counted, the idle timeout, the header deadline and the minimum rate of a frame): the
//! loop lends the decoder's buffer to the socket's read (the frame's bytes are not zeroed
//! first), passes the time in, and acts on its events. A bad header, an oversized length, a
//! peer closing mid-frame, going quiet or too slow ends that connection (with a log line,
//! rate-limited over all connections), never the service. A frame that is not a complete
//! JPEG is counted corrupt and skipped: the length prefix keeps the stream in sync.

use super::net::{is_timeout, spawn_accept_waker, ConnSlot, ConnTable, SharedLogLimiter};
use super::sinks::{Arrival, FrameSinks};
use super::source::{Service, SourceId};
use super::stats::{Counters, Stats};
use crate::proto::framed_receiver::FrameTiming;
use crate::proto::secure_gate::Refusal;
use crate::proto::seed_tcp::{
    EndReason, Position, ReadInto, SeedTcpConfig, SeedTcpDecoder, TcpEvent,
};
use crate::proto::Outcome;
use crate::shutdown::{wait_until, ReadTimeout, Shutdown, POLL_INTERVAL};
use std::io::{self, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Limits of the TCP service.
#[derive(Clone, Debug)]
pub struct TcpConfig {
    pub max_frame_bytes: u64,
    pub max_conns: usize,
    /// Connections from one IP address at most (below `max_conns`).
    pub max_conns_per_addr: usize,
    /// A connection with no bytes for this long is closed.
    pub idle_timeout: Duration,
    /// With keys required: the only ranges whose connections are taken (`--allow-plain`;
    /// the seed stream has no keys).
    pub only_from: Option<Vec<crate::secure::cidr::Cidr>>,
}

/// Log lines per second of the TCP service, over all its connections.
const LOG_LINES_PER_SECOND: u32 = 10;

/// Accept connections on `listener` until shutdown; joins its connection threads before it
/// returns.
pub fn run(
    listener: TcpListener,
    config: TcpConfig,
    stats: Arc<Stats>,
    sinks: FrameSinks,
    shutdown: Shutdown,
) {
    let local = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => return log::error!("tcp: no local address: {e}"),
    };
    let waker = spawn_accept_waker("tcp", local, shutdown.clone());
    let table = ConnTable::new(config.max_conns, config.max_conns_per_addr);
    let log = Arc::new(SharedLogLimiter::new(LOG_LINES_PER_SECOND));
    let mut conns: Vec<JoinHandle<()>> = Vec::new();
    while !shutdown.is_triggered() {
        let (stream, peer) = match listener.accept() {
            Ok(c) => c,
            Err(e) => {
                log::warn!("tcp: accept failed: {e}");
                shutdown.wait_timeout(POLL_INTERVAL);
                continue;
            }
        };
        if shutdown.is_triggered() {
            break;
        }
        conns.retain(|h| !h.is_finished());
        if let Some(ranges) = &config.only_from {
            if !ranges.iter().any(|c| c.contains(peer.ip())) {
                stats.count_refused(Service::Tcp, Refusal::Plain.as_str());
                if let Some(s) = log.allow() {
                    log::debug!(
                        "tcp: refusing {peer}: keys are required and it is not in --allow-plain{s}"
                    );
                }
                continue; // dropping the stream closes it
            }
        }
        let slot = match table.admit(&stream, peer, Instant::now()) {
            Ok((slot, evicted)) => {
                // (the limiter is asked only when there is a line to log)
                if let Some((old, s)) = evicted.and_then(|old| Some((old, log.allow()?))) {
                    log::warn!(
                        "tcp: {old} cut to make room for {peer}: it had delivered no frame{s}"
                    );
                }
                slot
            }
            Err(why) => {
                if let Some(s) = log.allow() {
                    log::warn!(
                        "tcp: refusing {peer}: {why} (--tcp-max-conns {}, --tcp-max-conns-per-addr {}){s}",
                        config.max_conns,
                        config.max_conns_per_addr
                    );
                }
                continue; // dropping the stream closes it
            }
        };
        let (config, stats, sinks, shutdown, log) = (
            config.clone(),
            stats.clone(),
            sinks.clone(),
            shutdown.clone(),
            log.clone(),
        );
        let spawned = std::thread::Builder::new()
            .name(format!("tcp {peer}"))
            .spawn(move || {
                if let Some(s) = log.allow() {
                    log::info!("tcp: {peer} connected{s}");
                }
                let conn = Conn {
                    peer,
                    slot: &slot,
                    log: &log,
                };
                if let Err(e) = serve(stream, &conn, &config, &stats, &sinks, &shutdown) {
                    if let Some(s) = log.allow() {
                        log::warn!("tcp: {peer}: {e}; connection closed{s}");
                    }
                }
                drop(slot);
            });
        match spawned {
            Ok(h) => conns.push(h),
            Err(e) => log::error!("tcp: cannot start a thread for {peer}: {e}"),
        }
    }
    // cut every connection: a thread waits at most one read timeout anyway
    table.shutdown_all();
    for h in conns {
        let _ = h.join();
    }
    if let Ok(w) = waker {
        let _ = w.join();
    }
    log::debug!("tcp: stopped");
}

/// Append up to `max` bytes read from `stream` to `buf`, into its spare capacity (which the
/// caller reserved): the bytes are not zeroed first, so the one copy out of the socket is
/// the only pass over them. Returns how many were read (0: the peer closed).
#[cfg(unix)]
fn read_appending(stream: &TcpStream, buf: &mut Vec<u8>, max: usize) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    let spare = buf.spare_capacity_mut();
    let want = max.min(spare.len());
    // SAFETY: the kernel writes at most `want` bytes at the start of the spare capacity,
    // allocated and not otherwise borrowed; `set_len` then covers exactly the bytes it wrote.
    let got = unsafe { libc::recv(stream.as_raw_fd(), spare.as_mut_ptr().cast(), want, 0) };
    if got < 0 {
        return Err(io::Error::last_os_error());
    }
    let got = got as usize;
    unsafe { buf.set_len(buf.len() + got) };
    Ok(got)
}

/// Append up to `max` bytes read from `stream` to `buf`.
#[cfg(not(unix))]
fn read_appending(mut stream: &TcpStream, buf: &mut Vec<u8>, max: usize) -> io::Result<usize> {
    let start = buf.len();
    buf.resize(start + max, 0);
    let got = stream.read(&mut buf[start..]);
    buf.truncate(start + *got.as_ref().unwrap_or(&0));
    got
}

/// Read from `stream` into what the decoder lent out.
fn read_into(mut stream: &TcpStream, into: ReadInto<'_>) -> io::Result<usize> {
    match into {
        ReadInto::Header(rest) => stream.read(rest),
        ReadInto::Frame { buf, max } => read_appending(stream, buf, max),
    }
}

/// One connection as its thread sees it.
struct Conn<'a> {
    peer: SocketAddr,
    /// Its place in the service's table: evictable until its first frame.
    slot: &'a ConnSlot,
    log: &'a SharedLogLimiter,
}

/// Serve one connection until it ends; the decoder's events say how (an error here is the
/// socket's setup failing).
fn serve(
    stream: TcpStream,
    conn: &Conn<'_>,
    config: &TcpConfig,
    stats: &Stats,
    sinks: &FrameSinks,
    shutdown: &Shutdown,
) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let source = SourceId {
        service: Service::Tcp,
        addr: conn.peer,
    };
    let counters = stats.source(source);
    let decoder_config = SeedTcpConfig::with_defaults(config.max_frame_bytes, config.idle_timeout);
    let mut decoder = SeedTcpDecoder::new(decoder_config, Instant::now());
    let mut read_timeout = ReadTimeout::new();
    // why the hub gave the connection up, for the log line of its end
    let mut abort_cause = None;
    while !decoder.is_ended() {
        let wait = wait_until(decoder.poll_timeout(), Instant::now());
        read_timeout.set(wait, |t| stream.set_read_timeout(t))?;
        if shutdown.is_triggered() {
            abort_cause = Some(AbortCause::ShuttingDown);
            decoder.handle_abort();
        } else if let Some(into) = decoder.read_into() {
            match read_into(&stream, into) {
                Ok(_) if conn.slot.was_evicted() => {
                    abort_cause = Some(AbortCause::Evicted);
                    decoder.handle_abort();
                }
                Ok(n) => decoder.handle_read(n, Instant::now()),
                Err(e) if is_timeout(&e) => decoder.handle_timeout(Instant::now()),
                Err(e) => {
                    abort_cause = Some(AbortCause::Read(e));
                    decoder.handle_abort();
                }
            }
        }
        while let Some(event) = decoder.poll_event() {
            let frames = decoder.frames();
            if frames == 1 {
                // it delivers: no newcomer may take its place
                conn.slot.set_evictable(false, Instant::now());
            }
            on_event(event, conn, &counters, stats, sinks, frames, &abort_cause);
        }
    }
    Ok(())
}

/// Why the hub gave a connection up (for the log line of its end).
#[derive(Debug, thiserror::Error)]
enum AbortCause {
    #[error("hub shutting down")]
    ShuttingDown,
    #[error("cut to make room for a new connection: no frame delivered yet")]
    Evicted,
    #[error(transparent)]
    Read(io::Error),
}

/// Count, deliver and log what the decoder reported.
fn on_event(
    event: TcpEvent,
    conn: &Conn<'_>,
    counters: &Counters,
    stats: &Stats,
    sinks: &FrameSinks,
    frames: u64,
    abort_cause: &Option<AbortCause>,
) {
    let peer = conn.peer;
    let source = SourceId {
        service: Service::Tcp,
        addr: peer,
    };
    let counter = match event.outcome() {
        Some(Outcome::Frame) => {
            if let TcpEvent::Frame(jpeg) = event {
                let arrival_us = crate::proto::framed_sender::wall_us(std::time::SystemTime::now());
                let stamp = crate::jpegcheck::capture_stamp(&jpeg);
                let timing = FrameTiming::stamped(arrival_us, stamp);
                stats.record_timing(counters, &timing);
                let seq = stats.record_item(counters, jpeg.len());
                let arrival = Arrival { frame: seq, timing };
                sinks.deliver(source, None, seq, arrival, jpeg);
            }
            return;
        }
        Some(Outcome::Corrupt) => Some(&counters.corrupt),
        Some(Outcome::Dropped) => Some(&counters.dropped),
        Some(Outcome::Rejected) => Some(&counters.rejected),
        None => None,
    };
    if let Some(c) = counter {
        c.fetch_add(1, Relaxed);
    }
    let Some(s) = conn.log.allow() else {
        return;
    };
    match (&event, abort_cause) {
        (TcpEvent::Corrupt { .. }, _) => log::warn!("tcp: {peer}: {event}{s}"),
        (
            TcpEvent::Ended {
                reason: EndReason::PeerClosed,
                at: Position::BetweenFrames,
            },
            _,
        ) => log::info!("tcp: {peer} closed after {frames} frames{s}"),
        (
            TcpEvent::Ended {
                reason: EndReason::Aborted,
                ..
            },
            Some(cause),
        ) => log::warn!("tcp: {peer}: {event} ({cause}); connection closed{s}"),
        _ => log::warn!("tcp: {peer}: {event}; connection closed{s}"),
    }
}
