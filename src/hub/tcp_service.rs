//! The TCP stream service (seed 000): per connection, a 16-byte ASCII length, then that many
//! JPEG bytes, repeated until the peer closes.
//!
//! A thread per connection, at most `max_conns` at once. A bad header, an oversized length,
//! a peer closing mid-frame or going quiet for `idle_timeout` ends that connection (with a
//! log line), never the service. Bytes are allocated as they arrive, never on a header's
//! claim alone, and read straight into the frame's buffer (not zeroed first). A frame that is not a complete JPEG is counted corrupt and skipped: the
//! length prefix keeps the stream in sync.

use super::sinks::FrameSinks;
use super::source::{Service, SourceId};
use super::stats::Stats;
use crate::shutdown::{Shutdown, POLL_INTERVAL};
use crate::wire::jpeg::is_complete_jpeg;
use crate::wire::seed_tcp::{parse_header, HEADER_LEN};
use std::io::{self, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Limits of the TCP service.
#[derive(Clone, Debug)]
pub struct TcpConfig {
    pub max_frame_bytes: u64,
    pub max_conns: usize,
    /// A connection with no bytes for this long is closed.
    pub idle_timeout: Duration,
}

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
    // accept() cannot time out; a tiny thread wakes it with a connection at shutdown
    let waker = {
        let shutdown = shutdown.clone();
        std::thread::Builder::new()
            .name("tcp-waker".into())
            .spawn(move || {
                while !shutdown.wait_timeout(Duration::from_secs(3600)) {}
                let _ = TcpStream::connect_timeout(&wake_address(local), Duration::from_secs(1));
            })
    };
    let active = Arc::new(AtomicUsize::new(0));
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
        if active.load(Relaxed) >= config.max_conns {
            log::warn!(
                "tcp: refusing {peer}: {} connections already open (--tcp-max-conns)",
                config.max_conns
            );
            continue;
        }
        active.fetch_add(1, Relaxed);
        let (config, stats, sinks, shutdown, active) = (
            config.clone(),
            stats.clone(),
            sinks.clone(),
            shutdown.clone(),
            active.clone(),
        );
        let spawned = std::thread::Builder::new()
            .name(format!("tcp {peer}"))
            .spawn(move || {
                log::info!("tcp: {peer} connected");
                match serve(stream, peer, &config, &stats, &sinks, &shutdown) {
                    Ok(frames) => log::info!("tcp: {peer} closed after {frames} frames"),
                    Err(e) => log::warn!("tcp: {peer}: {e}; connection closed"),
                }
                active.fetch_sub(1, Relaxed);
            });
        match spawned {
            Ok(h) => conns.push(h),
            Err(e) => log::error!("tcp: cannot start a thread for {peer}: {e}"),
        }
    }
    for h in conns {
        let _ = h.join();
    }
    if let Ok(w) = waker {
        let _ = w.join();
    }
    log::debug!("tcp: stopped");
}

/// Where to connect to reach a listener bound to `local` (an unspecified address is
/// reached through loopback).
fn wake_address(local: SocketAddr) -> SocketAddr {
    let mut a = local;
    if a.ip().is_unspecified() {
        a.set_ip(match a {
            SocketAddr::V4(_) => [127, 0, 0, 1].into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    a
}

/// Why a read stopped.
enum ReadEnd {
    /// The peer closed before the first byte.
    Closed,
    Error(io::Error),
}

/// Read exactly `total` bytes, `read(stream, filled)` taking the next ones after the
/// `filled` already read, checking shutdown and the idle timeout between reads.
fn read_full(
    stream: &mut TcpStream,
    total: usize,
    mut read: impl FnMut(&mut TcpStream, usize) -> io::Result<usize>,
    config: &TcpConfig,
    shutdown: &Shutdown,
) -> Result<(), ReadEnd> {
    let mut filled = 0;
    let mut last_data = Instant::now();
    while filled < total {
        if shutdown.is_triggered() {
            return Err(ReadEnd::Error(io::Error::other("hub shutting down")));
        }
        match read(stream, filled) {
            Ok(0) if filled == 0 => return Err(ReadEnd::Closed),
            Ok(0) => {
                return Err(ReadEnd::Error(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("peer closed after {filled} of {total} bytes"),
                )))
            }
            Ok(n) => {
                filled += n;
                last_data = Instant::now();
            }
            Err(e) if super::net::is_timeout(&e) => {
                if last_data.elapsed() >= config.idle_timeout {
                    return Err(ReadEnd::Error(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "no data for {:?} (after {filled} of {total} bytes)",
                            config.idle_timeout
                        ),
                    )));
                }
            }
            Err(e) => return Err(ReadEnd::Error(e)),
        }
    }
    Ok(())
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

/// Serve one connection; returns the number of intact frames.
fn serve(
    mut stream: TcpStream,
    peer: SocketAddr,
    config: &TcpConfig,
    stats: &Stats,
    sinks: &FrameSinks,
    shutdown: &Shutdown,
) -> io::Result<u64> {
    stream.set_read_timeout(Some(POLL_INTERVAL))?;
    stream.set_nodelay(true)?;
    let source = SourceId {
        service: Service::Tcp,
        addr: peer,
    };
    let counters = stats.source(source);
    let mut frames = 0;
    loop {
        let mut header = [0u8; HEADER_LEN];
        let read_header = |s: &mut TcpStream, filled: usize| s.read(&mut header[filled..]);
        match read_full(&mut stream, HEADER_LEN, read_header, config, shutdown) {
            Ok(()) => {}
            Err(ReadEnd::Closed) => return Ok(frames),
            Err(ReadEnd::Error(e)) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("reading a frame header: {e}"),
                ))
            }
        }
        let len = parse_header(&header, config.max_frame_bytes).map_err(|e| {
            counters.rejected.fetch_add(1, Relaxed);
            io::Error::new(io::ErrorKind::InvalidData, e.to_string())
        })? as usize;
        let mut jpeg = Vec::new();
        while jpeg.len() < len {
            // grow only as bytes arrive: at most doubling what has been read
            let step = (len - jpeg.len()).min(jpeg.len().max(64 * 1024));
            let start = jpeg.len();
            jpeg.reserve_exact(step);
            let read_jpeg =
                |s: &mut TcpStream, filled: usize| read_appending(s, &mut jpeg, step - filled);
            match read_full(&mut stream, step, read_jpeg, config, shutdown) {
                Ok(()) => {}
                Err(ReadEnd::Closed) => {
                    counters.dropped.fetch_add(1, Relaxed);
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("peer closed mid-frame after {start} of {len} bytes"),
                    ));
                }
                Err(ReadEnd::Error(e)) => {
                    counters.dropped.fetch_add(1, Relaxed);
                    return Err(io::Error::new(
                        e.kind(),
                        format!("mid-frame ({start}+ of {len} bytes): {e}"),
                    ));
                }
            }
        }
        if is_complete_jpeg(&jpeg) {
            frames += 1;
            let seq = stats.record_item(&counters, len);
            sinks.deliver(source, seq, jpeg);
        } else {
            counters.corrupt.fetch_add(1, Relaxed);
            log::warn!("tcp: {peer}: a {len}-byte frame is not a complete JPEG; skipped");
        }
    }
}
