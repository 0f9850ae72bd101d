//! Waiting, with a timeout, until any of several UDP sockets has a datagram.
//!
//! The relay owns one listening socket plus one upstream socket per client, and serves them
//! all from one thread, so it needs `poll(2)`; std has no readiness API, hence `libc` (already
//! built for `socket2` and `ctrlc`). On other platforms a fallback sleeps at most 1 ms and
//! reports every socket as maybe readable (the sockets are non-blocking, so a read that finds
//! nothing costs one failed system call).

use std::io;
use std::net::UdpSocket;
use std::time::Duration;

/// A reusable set of sockets to wait on; socket `i` is the `i`-th [`push`](Self::push)ed
/// since the last [`clear`](Self::clear).
#[derive(Default)]
pub struct Poller {
    #[cfg(unix)]
    fds: Vec<libc::pollfd>,
    #[cfg(not(unix))]
    len: usize,
}

#[cfg(unix)]
impl Poller {
    pub fn clear(&mut self) {
        self.fds.clear();
    }

    pub fn push(&mut self, socket: &UdpSocket) {
        use std::os::fd::AsRawFd;
        self.fds.push(libc::pollfd {
            fd: socket.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        });
    }

    /// Wait until a socket is readable or `timeout` (rounded up to whole milliseconds) has
    /// passed. A signal arriving counts as the timeout.
    pub fn wait(&mut self, timeout: Duration) -> io::Result<()> {
        let mut ms = timeout.as_millis();
        if timeout > Duration::from_millis(ms as u64) {
            ms += 1;
        }
        let ms = ms.min(i32::MAX as u128) as libc::c_int;
        // SAFETY: `fds` is a valid, initialised array of `fds.len()` pollfd structs that lives
        // across the call; poll writes only their `revents` fields.
        let n = unsafe { libc::poll(self.fds.as_mut_ptr(), self.fds.len() as libc::nfds_t, ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                self.fds.iter_mut().for_each(|p| p.revents = 0);
                return Ok(());
            }
            return Err(e);
        }
        Ok(())
    }

    /// Whether socket `i` has something to read (a datagram, or an error to collect) after the
    /// last [`wait`](Self::wait).
    pub fn is_readable(&self, i: usize) -> bool {
        self.fds
            .get(i)
            .is_some_and(|p| p.revents & (libc::POLLIN | libc::POLLERR | libc::POLLHUP) != 0)
    }
}

#[cfg(not(unix))]
impl Poller {
    pub fn clear(&mut self) {
        self.len = 0;
    }

    pub fn push(&mut self, _socket: &UdpSocket) {
        self.len += 1;
    }

    pub fn wait(&mut self, timeout: Duration) -> io::Result<()> {
        std::thread::sleep(timeout.min(Duration::from_millis(1)));
        Ok(())
    }

    pub fn is_readable(&self, i: usize) -> bool {
        i < self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_the_socket_that_has_a_datagram() {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut p = Poller::default();
        p.push(&a);
        p.push(&b);
        a.send_to(b"x", b.local_addr().unwrap()).unwrap();
        p.wait(Duration::from_secs(5)).unwrap();
        assert!(p.is_readable(1));
        if cfg!(unix) {
            assert!(!p.is_readable(0));
        }
        assert!(!p.is_readable(2));
    }

    #[test]
    fn times_out_when_nothing_arrives() {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut p = Poller::default();
        p.push(&a);
        p.wait(Duration::from_micros(1500)).unwrap();
        if cfg!(unix) {
            assert!(!p.is_readable(0));
        }
    }
}
