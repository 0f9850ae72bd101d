//! The HTTP/1.1 plumbing of `hub --http`: read one request head from a connection, bounded
//! in size and in time, parse it with `httparse`, and write responses.
//!
//! Why not a whole server crate: the HTTP view must answer an oversized header with 431,
//! time out a client that trickles its request, give a streaming viewer a write timeout, and
//! cut every connection at shutdown. tiny_http 0.12 does none of these (it reads header
//! lines without a limit and sets no socket timeout). So parsing, the part that is easy to
//! get wrong, is `httparse`'s, and the little that is left is here, on std sockets.

use crate::shutdown::Shutdown;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// The largest request head (request line and headers) accepted; larger gets 431.
pub const MAX_HEAD_BYTES: usize = 8 * 1024;
/// Headers accepted in one request; more gets 431.
const MAX_HEADERS: usize = 64;
/// A connection's first request head must be complete within this of the accept, a later
/// one within this of its first byte; otherwise 408.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// A kept-alive connection with no new request for this long is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(15);
/// A response, or one frame of a stream, that the client has not taken within this long
/// ends the connection: a viewer that stops reading is dropped.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// The parts of a request the hub looks at.
#[derive(Debug)]
pub struct Request {
    pub method: String,
    /// The request target as sent (path and query).
    pub target: String,
    /// Whether the connection may carry another request after the response.
    pub keep_alive: bool,
    /// Whether a body was announced (read only by [`Connection::read_body`]).
    pub has_body: bool,
    /// The `Content-Length`, if one was given and is a number.
    pub content_length: Option<usize>,
}

impl Request {
    /// The path, without the query.
    pub fn path(&self) -> &str {
        self.target.split(['?', '#']).next().unwrap_or("")
    }
}

/// Why no request could be read.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadError {
    /// The peer closed, went idle, or the hub is stopping: close without a word.
    Closed,
    /// A broken request: answer with this status, then close.
    Respond(u16),
}

/// One client connection: the socket and the bytes read past the last request head.
pub struct Connection {
    pub stream: TcpStream,
    buf: Vec<u8>,
    /// When the connection was accepted: the first head's deadline runs from here.
    accepted: Instant,
    /// Request heads read so far.
    requests: u64,
}

impl Connection {
    /// Wrap an accepted socket. `poll` is its read timeout: how often a wait for bytes
    /// looks at the shutdown flag.
    pub fn new(stream: TcpStream, poll: Duration) -> io::Result<Self> {
        stream.set_read_timeout(Some(poll))?;
        stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
        stream.set_nodelay(true)?;
        Ok(Connection {
            stream,
            buf: Vec::with_capacity(1024),
            accepted: Instant::now(),
            requests: 0,
        })
    }

    /// A writer for one response (or one stream part) that must be taken by the client
    /// within [`WRITE_TIMEOUT`].
    pub fn writer(&self) -> Timed<'_> {
        Timed {
            stream: &self.stream,
            deadline: Instant::now() + WRITE_TIMEOUT,
        }
    }

    /// Read the next request head. A request body is never read: a request that announces
    /// one is answered and its connection closed. The first head must be complete within
    /// [`HEAD_TIMEOUT`] of the accept (a connection that sends nothing, or a byte now and
    /// then, gets a 408 then); a kept-alive connection may then wait [`IDLE_TIMEOUT`] for
    /// its next request, whose head has [`HEAD_TIMEOUT`] from its first byte.
    pub fn read_request(&mut self, shutdown: &Shutdown) -> Result<Request, ReadError> {
        let waiting_since = Instant::now();
        let mut head_started = if self.requests == 0 {
            Some(self.accepted)
        } else {
            (!self.buf.is_empty()).then_some(waiting_since)
        };
        let mut chunk = [0u8; 4096];
        loop {
            if !self.buf.is_empty() {
                if let Some((request, len)) = parse(&self.buf)? {
                    self.buf.drain(..len);
                    self.requests += 1;
                    return Ok(request);
                }
            }
            if self.buf.len() > MAX_HEAD_BYTES {
                return Err(ReadError::Respond(431));
            }
            if shutdown.is_triggered() {
                return Err(ReadError::Closed);
            }
            match head_started {
                Some(t) if t.elapsed() >= HEAD_TIMEOUT => return Err(ReadError::Respond(408)),
                None if waiting_since.elapsed() >= IDLE_TIMEOUT => return Err(ReadError::Closed),
                _ => {}
            }
            // read at most one byte past the limit, so an oversized head is seen as such
            let room = (MAX_HEAD_BYTES + 1 - self.buf.len()).min(chunk.len());
            match self.stream.read(&mut chunk[..room]) {
                Ok(0) => return Err(ReadError::Closed),
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    head_started.get_or_insert_with(Instant::now);
                }
                Err(e) if crate::hub::net::is_timeout(&e) => {}
                Err(_) => return Err(ReadError::Closed),
            }
        }
    }

    /// Read a request body of `len` bytes (the caller bounds `len`), within
    /// [`HEAD_TIMEOUT`]; `None` if the client closes or is too slow.
    pub fn read_body(&mut self, len: usize, shutdown: &Shutdown) -> Option<Vec<u8>> {
        let deadline = Instant::now() + HEAD_TIMEOUT;
        let mut chunk = [0u8; 4096];
        while self.buf.len() < len {
            if shutdown.is_triggered() || Instant::now() >= deadline {
                return None;
            }
            let room = (len - self.buf.len()).min(chunk.len());
            match self.stream.read(&mut chunk[..room]) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if crate::hub::net::is_timeout(&e) => {}
                Err(_) => return None,
            }
        }
        Some(self.buf.drain(..len).collect())
    }

    /// Close after an error response without losing it: stop writing, then read and
    /// discard what the client still sends (at most a second, at most 1 MiB). Closing a
    /// socket with unread input makes the kernel reset the connection, and the reset can
    /// destroy the response before the client reads it (e.g. a 431 to a client still
    /// sending its oversized headers).
    pub fn linger_close(mut self) {
        let _ = self.stream.flush();
        let _ = self.stream.shutdown(std::net::Shutdown::Write);
        let deadline = Instant::now() + Duration::from_secs(1);
        let mut scratch = [0u8; 8192];
        let mut discarded = 0;
        while Instant::now() < deadline && discarded < (1 << 20) {
            match self.stream.read(&mut scratch) {
                Ok(0) => return,
                Ok(n) => discarded += n,
                Err(e) if crate::hub::net::is_timeout(&e) => {}
                Err(_) => return,
            }
        }
    }

    /// True once the peer has closed (or reset) the connection; waits at most the socket's
    /// read timeout. Bytes the peer sent meanwhile are discarded (a viewer sends nothing
    /// after its request).
    pub fn peer_closed(&mut self) -> bool {
        let mut scratch = [0u8; 512];
        match self.stream.read(&mut scratch) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => !crate::hub::net::is_timeout(&e),
        }
    }
}

/// Writes to a socket that must be done by a deadline. Each write waits at most the time
/// left (a socket write timeout alone restarts with every bit of progress, so a client that
/// reads a trickle could hold a viewer's thread for ever).
pub struct Timed<'a> {
    stream: &'a TcpStream,
    deadline: Instant,
}

impl Write for Timed<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the client did not take the data within {WRITE_TIMEOUT:?}"),
            ));
        }
        self.stream.set_write_timeout(Some(left))?;
        (&*self.stream).write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Parse a complete request head at the start of `buf`: the request and the head's length,
/// `None` while it is incomplete.
fn parse(buf: &[u8]) -> Result<Option<(Request, usize)>, ReadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(ReadError::Respond(431)),
        Err(httparse::Error::Version) => return Err(ReadError::Respond(505)),
        Err(_) => return Err(ReadError::Respond(400)),
    };
    let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(ReadError::Respond(400));
    };
    let has = |name: &str, token: &str| {
        req.headers.iter().any(|h| {
            h.name.eq_ignore_ascii_case(name)
                && String::from_utf8_lossy(h.value)
                    .split(',')
                    .any(|v| v.trim().eq_ignore_ascii_case(token))
        })
    };
    let has_body = req.headers.iter().any(|h| {
        h.name.eq_ignore_ascii_case("transfer-encoding")
            || (h.name.eq_ignore_ascii_case("content-length") && h.value.trim_ascii() != b"0")
    });
    let content_length = req
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok());
    let keep_alive = !has_body
        && if minor >= 1 {
            !has("connection", "close")
        } else {
            has("connection", "keep-alive")
        };
    if !target.starts_with('/') {
        return Err(ReadError::Respond(400));
    }
    Ok(Some((
        Request {
            method: method.to_string(),
            target: target.to_string(),
            keep_alive,
            has_body,
            content_length,
        },
        len,
    )))
}

/// The reason phrase of the statuses the hub sends.
pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

/// Write a complete response: status line, `Content-Length`, `Connection`, no caching, the
/// `headers` given, then `body` (left out for a HEAD request, its length still announced).
pub fn respond(
    stream: &mut impl Write,
    status: u16,
    headers: &[(&str, &str)],
    body: &[u8],
    head_only: bool,
    keep_alive: bool,
) -> io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Length: {}\r\nConnection: {}\r\nCache-Control: no-store\r\n",
        reason(status),
        body.len(),
        if keep_alive { "keep-alive" } else { "close" }
    );
    for (name, value) in headers {
        head.push_str(name);
        head.push_str(": ");
        head.push_str(value);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    if !head_only {
        stream.write_all(body)?;
    }
    stream.flush()
}

/// A short plain-text error response, `"<status> <reason>: <detail>\n"`.
pub fn respond_error(
    stream: &mut impl Write,
    status: u16,
    detail: &str,
    extra: &[(&str, &str)],
    head_only: bool,
    keep_alive: bool,
) -> io::Result<()> {
    let body = format!("{status} {}: {detail}\n", reason(status));
    let mut headers = vec![("Content-Type", "text/plain; charset=utf-8")];
    headers.extend_from_slice(extra);
    respond(
        stream,
        status,
        &headers,
        body.as_bytes(),
        head_only,
        keep_alive,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> Result<Option<(Request, usize)>, ReadError> {
        parse(text.as_bytes())
    }

    #[test]
    fn parses_a_request_and_its_keep_alive() {
        let (r, len) = parsed("GET /state?x=1 HTTP/1.1\r\nHost: a\r\n\r\nGET /")
            .unwrap()
            .unwrap();
        assert_eq!(
            (r.method.as_str(), r.path(), r.keep_alive),
            ("GET", "/state", true)
        );
        assert_eq!(len, "GET /state?x=1 HTTP/1.1\r\nHost: a\r\n\r\n".len());
        let (r, _) = parsed("GET / HTTP/1.1\r\nConnection: Close\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!r.keep_alive);
        let (r, _) = parsed("GET / HTTP/1.0\r\n\r\n").unwrap().unwrap();
        assert!(!r.keep_alive);
        let (r, _) = parsed("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(r.keep_alive);
        let (r, _) = parsed("POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc")
            .unwrap()
            .unwrap();
        assert!(
            !r.keep_alive,
            "a body is never read, so the connection closes"
        );
    }

    #[test]
    fn incomplete_and_broken_heads() {
        assert!(parsed("GET / HTTP/1.1\r\nHost: a\r\n").unwrap().is_none());
        assert_eq!(
            parsed("nonsense\r\n\r\n").unwrap_err(),
            ReadError::Respond(400)
        );
        assert_eq!(
            parsed("GET / HTTP/2.0\r\n\r\n").unwrap_err(),
            ReadError::Respond(505)
        );
        assert_eq!(
            parsed("GET http://x/ HTTP/1.1\r\n\r\n").unwrap_err(),
            ReadError::Respond(400)
        );
        let many: String = (0..100).map(|i| format!("X-{i}: 1\r\n")).collect();
        assert_eq!(
            parsed(&format!("GET / HTTP/1.1\r\n{many}\r\n")).unwrap_err(),
            ReadError::Respond(431)
        );
    }

    #[test]
    fn responses_announce_length_and_leave_the_body_out_for_head() {
        let mut out = Vec::new();
        respond(
            &mut out,
            200,
            &[("Content-Type", "text/plain")],
            b"hi",
            true,
            false,
        )
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(text.contains("Content-Length: 2\r\n") && text.contains("Connection: close\r\n"));
        assert!(text.ends_with("\r\n\r\n"), "no body for HEAD: {text:?}");
    }
}
