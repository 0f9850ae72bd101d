//! Socket setup shared by the services: binding UDP with a large receive buffer (socket2,
//! because std cannot set SO_RCVBUF), and a log limiter so a flood of bad datagrams cannot
//! flood the log.

use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

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

/// Lets through at most `per_second` log lines a second and counts the rest.
pub struct LogLimiter {
    per_second: u32,
    window_start: Option<Instant>,
    in_window: u32,
    suppressed: u64,
}

impl LogLimiter {
    pub fn new(per_second: u32) -> Self {
        LogLimiter {
            per_second,
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
            .is_none_or(|s| now.saturating_duration_since(s) >= Duration::from_secs(1));
        if new_window {
            self.window_start = Some(now);
            self.in_window = 0;
        }
        if self.in_window < self.per_second {
            self.in_window += 1;
            Some(Suppressed(std::mem::take(&mut self.suppressed)))
        } else {
            self.suppressed += 1;
            None
        }
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
    fn binds_port_zero_on_loopback() {
        let (s, granted) = bind_udp("127.0.0.1:0".parse().unwrap(), 1 << 20).unwrap();
        assert_ne!(s.local_addr().unwrap().port(), 0);
        assert!(granted > 0);
    }
}
