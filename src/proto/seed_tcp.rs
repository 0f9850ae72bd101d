//! The decoder of seed 000's TCP stream ([`crate::wire::seed_tcp`]): per connection, a
//! 16-byte ASCII length, then that many JPEG bytes, repeated until the peer closes.
//!
//! No socket, no clock: the connection's thread feeds it the bytes it reads and the time
//! (mini-redis's `parse_frame`, with quinn-proto's `poll_event`/`poll_timeout`), so every
//! rule of the stream is reached by a unit test:
//! - a header that is not a number, is zero, or claims more than `max_frame_bytes` ends the
//!   connection ([`TcpEvent::BadHeader`]): there is no way to find the next frame after it;
//! - a frame that is not a complete JPEG is reported ([`TcpEvent::Corrupt`]) and skipped:
//!   the length prefix keeps the stream in sync;
//! - the peer closing, no bytes for `idle_timeout`, or the hub giving up on the connection
//!   end it ([`TcpEvent::Ended`], which says where in the stream it ended);
//! - memory grows only as bytes arrive, never on a header's claim alone: the frame buffer
//!   starts at 64 KiB at most and at most doubles what has been read.
//!
//! Reading straight into the frame: [`SeedTcpDecoder::read_into`] lends out where the next
//! bytes go (the rest of the header, or the frame buffer with capacity reserved), the
//! caller reads from its socket into it and reports the count to
//! [`SeedTcpDecoder::handle_read`]; the frame's bytes are not zeroed first, so the one copy
//! out of the socket is the only pass over them. [`SeedTcpDecoder::handle_bytes`] feeds
//! bytes already in hand through the same path.

use super::Outcome;
use crate::wire::jpeg::is_complete_jpeg;
use crate::wire::seed_tcp::{parse_header, HeaderError, HEADER_LEN};
use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

/// The first allocation of a frame buffer at most; it then at most doubles.
const FIRST_ALLOCATION: usize = 64 * 1024;

/// Limits of one connection.
#[derive(Clone, Debug)]
pub struct SeedTcpConfig {
    /// Largest frame a header may announce.
    pub max_frame_bytes: u64,
    /// A connection with no bytes for this long is ended.
    pub idle_timeout: Duration,
}

/// Where in the stream a connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Position {
    /// Between two frames: nothing was lost.
    BetweenFrames,
    /// `got` of the 16 header bytes had arrived.
    InHeader { got: usize },
    /// `got` of a frame's `expected` bytes had arrived: that frame is lost.
    InFrame { got: usize, expected: usize },
}

/// Why a connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndReason {
    /// The peer closed its side.
    PeerClosed,
    /// No bytes for this long (the configured idle timeout).
    Idle(Duration),
    /// The hub gave the connection up ([`SeedTcpDecoder::handle_abort`]: a read error, or
    /// the hub stopping).
    Aborted,
}

/// What the decoder has to report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TcpEvent {
    /// An intact frame.
    Frame(Vec<u8>),
    /// A frame of `len` bytes that is not a complete JPEG; skipped, the stream goes on.
    Corrupt { len: usize },
    /// A header that is not a length, a length of 0, or one above the limit
    /// ([`HeaderError::TooLarge`]); the connection has ended.
    BadHeader(HeaderError),
    /// The connection has ended; the last event of a decoder.
    Ended { reason: EndReason, at: Position },
}

impl TcpEvent {
    /// What this event counts as in the statistics, if anything: a frame lost mid-way
    /// counts as dropped, an end between frames or inside a header counts nothing.
    pub fn outcome(&self) -> Option<Outcome> {
        match self {
            TcpEvent::Frame(_) => Some(Outcome::Frame),
            TcpEvent::Corrupt { .. } => Some(Outcome::Corrupt),
            TcpEvent::BadHeader(_) => Some(Outcome::Rejected),
            TcpEvent::Ended {
                at: Position::InFrame { .. },
                ..
            } => Some(Outcome::Dropped),
            TcpEvent::Ended { .. } => None,
        }
    }
}

impl fmt::Display for TcpEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TcpEvent::Frame(jpeg) => write!(f, "frame of {} bytes", jpeg.len()),
            TcpEvent::Corrupt { len } => {
                write!(f, "a {len}-byte frame is not a complete JPEG; skipped")
            }
            TcpEvent::BadHeader(e) => e.fmt(f),
            TcpEvent::Ended { reason, at } => {
                match reason {
                    EndReason::PeerClosed => f.write_str("peer closed")?,
                    EndReason::Idle(t) => write!(f, "no data for {t:?}")?,
                    EndReason::Aborted => f.write_str("connection given up")?,
                }
                match at {
                    Position::BetweenFrames => Ok(()),
                    Position::InHeader { got } => {
                        write!(f, " after {got} of {HEADER_LEN} header bytes")
                    }
                    Position::InFrame { got, expected } => {
                        write!(f, " mid-frame after {got} of {expected} bytes")
                    }
                }
            }
        }
    }
}

/// Where the next bytes read from the connection go (see [`SeedTcpDecoder::read_into`]).
pub enum ReadInto<'a> {
    /// The rest of the length header: read at most this many bytes into it.
    Header(&'a mut [u8]),
    /// The frame: append at most `max` bytes to `buf`, whose spare capacity holds at least
    /// `max` bytes (so appending never reallocates; the spare bytes need not be zeroed).
    Frame { buf: &'a mut Vec<u8>, max: usize },
}

enum State {
    Header { bytes: [u8; HEADER_LEN], got: usize },
    Frame { buf: Vec<u8>, expected: usize },
    Ended,
}

/// One connection's decoder. See the module documentation.
pub struct SeedTcpDecoder {
    config: SeedTcpConfig,
    state: State,
    last_data: Instant,
    frames: u64,
    events: VecDeque<TcpEvent>,
}

impl SeedTcpDecoder {
    /// A decoder for a connection accepted at `now`.
    pub fn new(config: SeedTcpConfig, now: Instant) -> Self {
        SeedTcpDecoder {
            config,
            state: State::Header {
                bytes: [0; HEADER_LEN],
                got: 0,
            },
            last_data: now,
            frames: 0,
            events: VecDeque::new(),
        }
    }

    /// Intact frames so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Whether the connection has ended (its [`TcpEvent::Ended`] or
    /// [`TcpEvent::BadHeader`] is queued or was taken): nothing more is read.
    pub fn is_ended(&self) -> bool {
        matches!(self.state, State::Ended)
    }

    /// Where the next bytes go; `None` once the connection has ended. Report what was
    /// read into it with [`SeedTcpDecoder::handle_read`].
    pub fn read_into(&mut self) -> Option<ReadInto<'_>> {
        match &mut self.state {
            State::Header { bytes, got } => Some(ReadInto::Header(&mut bytes[*got..])),
            State::Frame { buf, expected } => {
                let remaining = *expected - buf.len();
                if buf.len() == buf.capacity() {
                    // grow only as bytes arrive: at most doubling what has been read
                    buf.reserve_exact(remaining.min(buf.len().max(FIRST_ALLOCATION)));
                }
                let max = remaining.min(buf.capacity() - buf.len());
                Some(ReadInto::Frame { buf, max })
            }
            State::Ended => None,
        }
    }

    /// `n` bytes were read into what [`SeedTcpDecoder::read_into`] lent out, at `now`
    /// (for a frame, `n` is what the buffer grew by); `n == 0` means the peer closed.
    pub fn handle_read(&mut self, n: usize, now: Instant) {
        if n == 0 {
            return self.end(EndReason::PeerClosed);
        }
        self.last_data = now;
        match &mut self.state {
            State::Header { bytes, got } => {
                *got += n;
                debug_assert!(*got <= HEADER_LEN, "read past the header");
                *got = (*got).min(HEADER_LEN);
                if *got < HEADER_LEN {
                    return;
                }
                match parse_header(bytes, self.config.max_frame_bytes) {
                    Ok(len) => {
                        self.state = State::Frame {
                            buf: Vec::new(),
                            expected: len as usize,
                        }
                    }
                    Err(e) => {
                        self.state = State::Ended;
                        self.events.push_back(TcpEvent::BadHeader(e));
                    }
                }
            }
            State::Frame { buf, expected } => {
                debug_assert!(buf.len() <= *expected, "read past the frame");
                if buf.len() < *expected {
                    return;
                }
                let jpeg = std::mem::take(buf);
                self.state = State::Header {
                    bytes: [0; HEADER_LEN],
                    got: 0,
                };
                if is_complete_jpeg(&jpeg) {
                    self.frames += 1;
                    self.events.push_back(TcpEvent::Frame(jpeg));
                } else {
                    self.events.push_back(TcpEvent::Corrupt { len: jpeg.len() });
                }
            }
            State::Ended => {}
        }
    }

    /// Feed bytes already in hand, received at `now`, through the same path as
    /// [`SeedTcpDecoder::read_into`]. Bytes after the connection ended are ignored.
    pub fn handle_bytes(&mut self, mut data: &[u8], now: Instant) {
        while !data.is_empty() {
            let n = match self.read_into() {
                None => return,
                Some(ReadInto::Header(rest)) => {
                    let n = rest.len().min(data.len());
                    rest[..n].copy_from_slice(&data[..n]);
                    n
                }
                Some(ReadInto::Frame { buf, max }) => {
                    let n = max.min(data.len());
                    buf.extend_from_slice(&data[..n]);
                    n
                }
            };
            data = &data[n..];
            self.handle_read(n, now);
        }
    }

    /// The peer closed its side.
    pub fn handle_peer_closed(&mut self) {
        self.end(EndReason::PeerClosed);
    }

    /// The hub gives the connection up (a read error, or shutdown).
    pub fn handle_abort(&mut self) {
        self.end(EndReason::Aborted);
    }

    /// When [`SeedTcpDecoder::handle_timeout`] should next be called: when the idle
    /// timeout runs out. `None` once the connection has ended.
    pub fn poll_timeout(&self) -> Option<Instant> {
        (!self.is_ended()).then(|| self.last_data + self.config.idle_timeout)
    }

    /// End the connection if it has had no bytes for `idle_timeout` as of `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.poll_timeout().is_some_and(|t| now >= t) {
            self.end(EndReason::Idle(self.config.idle_timeout));
        }
    }

    /// The next thing to report, oldest first.
    pub fn poll_event(&mut self) -> Option<TcpEvent> {
        self.events.pop_front()
    }

    fn end(&mut self, reason: EndReason) {
        let at = match &self.state {
            State::Ended => return,
            State::Header { got: 0, .. } => Position::BetweenFrames,
            State::Header { got, .. } => Position::InHeader { got: *got },
            State::Frame { buf, expected } => Position::InFrame {
                got: buf.len(),
                expected: *expected,
            },
        };
        self.state = State::Ended;
        self.events.push_back(TcpEvent::Ended { reason, at });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: u64 = 1 << 20;
    const IDLE: Duration = Duration::from_secs(5);

    fn decoder(now: Instant) -> SeedTcpDecoder {
        SeedTcpDecoder::new(
            SeedTcpConfig {
                max_frame_bytes: MAX,
                idle_timeout: IDLE,
            },
            now,
        )
    }

    /// A "JPEG" the SOI/EOI check accepts: FF D8, filler, FF D9.
    fn jpeg(len: usize) -> Vec<u8> {
        let mut j = vec![0x5A; len];
        j[..2].copy_from_slice(&[0xFF, 0xD8]);
        j[len - 2..].copy_from_slice(&[0xFF, 0xD9]);
        j
    }

    fn events(d: &mut SeedTcpDecoder) -> Vec<TcpEvent> {
        std::iter::from_fn(|| d.poll_event()).collect()
    }

    #[test]
    fn frames_in_one_write_and_split_at_every_byte() {
        let t0 = Instant::now();
        let mut stream = b"6               ".to_vec();
        stream.extend_from_slice(&[0xFF, 0xD8, 1, 2, 0xFF, 0xD9]);
        stream.extend_from_slice(b"   4            \xFF\xD8\xFF\xD9");
        let mut d = decoder(t0);
        d.handle_bytes(&stream, t0);
        let want = vec![
            TcpEvent::Frame(vec![0xFF, 0xD8, 1, 2, 0xFF, 0xD9]),
            TcpEvent::Frame(vec![0xFF, 0xD8, 0xFF, 0xD9]),
        ];
        assert_eq!(events(&mut d), want);
        assert_eq!(d.frames(), 2);
        let mut d = decoder(t0);
        for b in &stream {
            d.handle_bytes(std::slice::from_ref(b), t0);
        }
        assert_eq!(events(&mut d), want);
        d.handle_peer_closed();
        assert_eq!(
            events(&mut d),
            vec![TcpEvent::Ended {
                reason: EndReason::PeerClosed,
                at: Position::BetweenFrames
            }]
        );
        assert!(d.is_ended() && d.read_into().is_none() && d.poll_timeout().is_none());
    }

    #[test]
    fn a_frame_that_is_not_a_jpeg_is_corrupt_and_the_stream_goes_on() {
        let t0 = Instant::now();
        let mut d = decoder(t0);
        d.handle_bytes(b"4               \x00\xD8\xFF\xD9", t0);
        d.handle_bytes(b"4               \xFF\xD8\xFF\x00", t0);
        d.handle_bytes(b"4               \xFF\xD8\xFF\xD9", t0);
        let got = events(&mut d);
        assert_eq!(
            got,
            vec![
                TcpEvent::Corrupt { len: 4 },
                TcpEvent::Corrupt { len: 4 },
                TcpEvent::Frame(vec![0xFF, 0xD8, 0xFF, 0xD9]),
            ]
        );
        assert_eq!(got[0].outcome(), Some(Outcome::Corrupt));
        assert_eq!(got[2].outcome(), Some(Outcome::Frame));
        assert_eq!(d.frames(), 1);
        assert!(!d.is_ended());
    }

    #[test]
    fn a_bad_header_ends_the_connection_and_later_bytes_are_ignored() {
        let t0 = Instant::now();
        for (header, want) in [
            (
                &b"hello world!!!!!"[..],
                HeaderError::NotANumber("hello world!!!!!".into()),
            ),
            (b"0               ", HeaderError::Zero),
        ] {
            let mut d = decoder(t0);
            let mut stream = header.to_vec();
            stream.extend_from_slice(b"4               \xFF\xD8\xFF\xD9");
            d.handle_bytes(&stream, t0);
            let got = events(&mut d);
            assert_eq!(got, vec![TcpEvent::BadHeader(want)]);
            assert_eq!(got[0].outcome(), Some(Outcome::Rejected));
            assert!(d.is_ended() && d.frames() == 0);
            d.handle_peer_closed();
            assert!(events(&mut d).is_empty(), "one end only");
        }
    }

    #[test]
    fn an_oversized_length_ends_the_connection_before_any_allocation() {
        let t0 = Instant::now();
        let mut d = decoder(t0);
        d.handle_bytes(b"1048577         ", t0);
        assert_eq!(
            events(&mut d),
            vec![TcpEvent::BadHeader(HeaderError::TooLarge {
                claimed: 1_048_577,
                max: MAX
            })]
        );
        assert!(d.is_ended());
        // exactly the limit is fine
        let mut d = decoder(t0);
        d.handle_bytes(b"1048576         ", t0);
        assert!(events(&mut d).is_empty() && !d.is_ended());
    }

    #[test]
    fn peer_closing_mid_frame_or_mid_header_says_where() {
        let t0 = Instant::now();
        let mut d = decoder(t0);
        d.handle_bytes(b"10              \xFF\xD8\x01", t0);
        d.handle_read(0, t0);
        let got = events(&mut d);
        assert_eq!(
            got,
            vec![TcpEvent::Ended {
                reason: EndReason::PeerClosed,
                at: Position::InFrame {
                    got: 3,
                    expected: 10
                }
            }]
        );
        assert_eq!(got[0].outcome(), Some(Outcome::Dropped));
        assert_eq!(
            got[0].to_string(),
            "peer closed mid-frame after 3 of 10 bytes"
        );
        let mut d = decoder(t0);
        d.handle_bytes(b"10  ", t0);
        d.handle_peer_closed();
        let got = events(&mut d);
        assert_eq!(
            got,
            vec![TcpEvent::Ended {
                reason: EndReason::PeerClosed,
                at: Position::InHeader { got: 4 }
            }]
        );
        assert_eq!(got[0].outcome(), None, "no frame was under way");
    }

    #[test]
    fn idle_timeout_counts_from_the_last_bytes() {
        let t0 = Instant::now();
        let mut d = decoder(t0);
        assert_eq!(d.poll_timeout(), Some(t0 + IDLE));
        let t1 = t0 + Duration::from_secs(3);
        d.handle_bytes(b"4               \xFF", t1);
        assert_eq!(d.poll_timeout(), Some(t1 + IDLE), "bytes push it back");
        d.handle_timeout(t1 + IDLE - Duration::from_millis(1));
        assert!(events(&mut d).is_empty() && !d.is_ended(), "not yet");
        d.handle_timeout(t1 + IDLE);
        assert_eq!(
            events(&mut d),
            vec![TcpEvent::Ended {
                reason: EndReason::Idle(IDLE),
                at: Position::InFrame {
                    got: 1,
                    expected: 4
                }
            }]
        );
        assert_eq!(d.poll_timeout(), None);
    }

    #[test]
    fn abort_between_frames_loses_nothing() {
        let t0 = Instant::now();
        let mut d = decoder(t0);
        d.handle_bytes(b"4               \xFF\xD8\xFF\xD9", t0);
        d.handle_abort();
        let got = events(&mut d);
        assert_eq!(
            got[1],
            TcpEvent::Ended {
                reason: EndReason::Aborted,
                at: Position::BetweenFrames
            }
        );
        assert_eq!(got[1].outcome(), None);
    }

    /// The lending path the service uses: the buffer grows with what has arrived (64 KiB,
    /// then at most doubling), never to the header's claim at once.
    #[test]
    fn the_frame_buffer_grows_as_bytes_arrive() {
        let t0 = Instant::now();
        let mut d = decoder(t0);
        d.handle_bytes(b"1048576         ", t0);
        let frame = jpeg(1 << 20);
        let mut fed = 0;
        let mut capacities = Vec::new();
        while fed < frame.len() {
            let Some(ReadInto::Frame { buf, max }) = d.read_into() else {
                panic!("expected the frame buffer");
            };
            assert!(max > 0 && buf.capacity() - buf.len() >= max);
            assert!(buf.capacity() <= (buf.len() * 2).max(FIRST_ALLOCATION));
            capacities.push(buf.capacity());
            let n = max.min(10_000);
            buf.extend_from_slice(&frame[fed..fed + n]);
            fed += n;
            d.handle_read(n, t0);
        }
        assert_eq!(capacities[0], FIRST_ALLOCATION);
        assert_eq!(events(&mut d), vec![TcpEvent::Frame(frame)]);
        assert!(matches!(d.read_into(), Some(ReadInto::Header(h)) if h.len() == HEADER_LEN));
    }
}
