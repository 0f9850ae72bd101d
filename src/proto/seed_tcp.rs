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
//! - a slow peer cannot hold the connection: a header must be complete within
//!   `header_timeout` (of the connection's start for the first one, of its first byte for
//!   the others), and once a header is in, its frame must keep a minimum rate:
//!   `frame_grace` after the header, the frame must hold `min_frame_rate` bytes for every
//!   second since (so a header and then nothing ends at the grace, one byte now and then
//!   soon after). Between frames only the idle timeout applies: a camera may pause;
//! - every deadline is reported by [`SeedTcpDecoder::poll_timeout`] and acted on in
//!   [`SeedTcpDecoder::handle_timeout`], with the time passed in;
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
use crate::jpegcheck::check_structure;
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
    /// A header must be complete this long after the connection started (the first) or
    /// after its first byte (the others).
    pub header_timeout: Duration,
    /// How long after its header a frame may go before the minimum rate applies.
    pub frame_grace: Duration,
    /// Bytes per second a frame must keep after the grace (0: no minimum).
    pub min_frame_rate: u64,
}

impl SeedTcpConfig {
    /// The hub's defaults for the deadlines (5 s for a header, 2 s of grace, then 8 KiB/s:
    /// a camera on a weak link sends far faster, a stalled one is cut within seconds).
    pub fn with_defaults(max_frame_bytes: u64, idle_timeout: Duration) -> Self {
        SeedTcpConfig {
            max_frame_bytes,
            idle_timeout,
            header_timeout: Duration::from_secs(5),
            frame_grace: Duration::from_secs(2),
            min_frame_rate: 8 * 1024,
        }
    }
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
    /// A header was not complete within this long (the header timeout).
    HeaderTimeout(Duration),
    /// A frame fell below this many bytes per second after its grace period.
    TooSlow { min_rate: u64 },
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
                    EndReason::HeaderTimeout(t) => {
                        write!(f, "the length header was not complete within {t:?}")?
                    }
                    EndReason::TooSlow { min_rate } => {
                        write!(f, "the frame came slower than {min_rate} bytes/s")?
                    }
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
    /// `started`: when the header's deadline began (the connection's start for the first
    /// header, its first byte for the others; `None` before that byte).
    Header {
        bytes: [u8; HEADER_LEN],
        got: usize,
        started: Option<Instant>,
    },
    /// `header_at`: when its header was complete, where the minimum rate counts from.
    Frame {
        buf: Vec<u8>,
        expected: usize,
        header_at: Instant,
    },
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
                started: Some(now),
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
            State::Header { bytes, got, .. } => Some(ReadInto::Header(&mut bytes[*got..])),
            State::Frame { buf, expected, .. } => {
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
            State::Header {
                bytes,
                got,
                started,
            } => {
                started.get_or_insert(now);
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
                            header_at: now,
                        }
                    }
                    Err(e) => {
                        self.state = State::Ended;
                        self.events.push_back(TcpEvent::BadHeader(e));
                    }
                }
            }
            State::Frame { buf, expected, .. } => {
                debug_assert!(buf.len() <= *expected, "read past the frame");
                if buf.len() < *expected {
                    return;
                }
                let jpeg = std::mem::take(buf);
                self.state = State::Header {
                    bytes: [0; HEADER_LEN],
                    got: 0,
                    started: None,
                };
                if check_structure(&jpeg).is_ok() {
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

    /// When [`SeedTcpDecoder::handle_timeout`] should next be called: the earliest of the
    /// idle timeout and the header's or frame's deadline. `None` once the connection has
    /// ended.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_deadline().map(|(t, _)| t)
    }

    /// End the connection if, as of `now`, it has had no bytes for `idle_timeout`, its
    /// header is late, or its frame has fallen below the minimum rate (whichever came
    /// first names the reason).
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some((t, reason)) = self.next_deadline() {
            if now >= t {
                self.end(reason);
            }
        }
    }

    /// The earliest deadline and the reason the connection ends at it.
    fn next_deadline(&self) -> Option<(Instant, EndReason)> {
        let c = &self.config;
        let idle = (
            self.last_data + c.idle_timeout,
            EndReason::Idle(c.idle_timeout),
        );
        let progress = match &self.state {
            State::Ended => return None,
            State::Header {
                started: Some(t), ..
            } => Some((
                *t + c.header_timeout,
                EndReason::HeaderTimeout(c.header_timeout),
            )),
            State::Frame { buf, header_at, .. } if c.min_frame_rate > 0 => {
                // the time by which the bytes in hand are too few for the minimum rate
                let earned_ns = buf.len() as u128 * 1_000_000_000 / u128::from(c.min_frame_rate);
                let earned = Duration::from_nanos(u64::try_from(earned_ns).unwrap_or(u64::MAX));
                let reason = EndReason::TooSlow {
                    min_rate: c.min_frame_rate,
                };
                Some((*header_at + c.frame_grace + earned, reason))
            }
            _ => None,
        };
        Some(match progress {
            Some(p) if p.0 < idle.0 => p,
            _ => idle,
        })
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
            State::Frame { buf, expected, .. } => Position::InFrame {
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
    use crate::jpegcheck::FILLER_MIN_LEN;

    const MAX: u64 = 1 << 20;
    const IDLE: Duration = Duration::from_secs(5);

    fn decoder(now: Instant) -> SeedTcpDecoder {
        SeedTcpDecoder::new(
            SeedTcpConfig {
                max_frame_bytes: MAX,
                idle_timeout: IDLE,
                // out of the way of the tests of the other rules
                header_timeout: IDLE * 10,
                frame_grace: IDLE * 10,
                min_frame_rate: 0,
            },
            now,
        )
    }

    const HEADER_TIMEOUT: Duration = Duration::from_secs(2);
    const GRACE: Duration = Duration::from_secs(1);
    const RATE: u64 = 1000;

    fn strict(now: Instant) -> SeedTcpDecoder {
        SeedTcpDecoder::new(
            SeedTcpConfig {
                max_frame_bytes: MAX,
                idle_timeout: IDLE,
                header_timeout: HEADER_TIMEOUT,
                frame_grace: GRACE,
                min_frame_rate: RATE,
            },
            now,
        )
    }

    /// A JPEG the structure check accepts, with filler for coded data.
    fn jpeg(len: usize) -> Vec<u8> {
        crate::jpegcheck::filler_jpeg(len, 0x5A)
    }

    /// The seed's 16-byte ASCII header (the length, left-aligned, space-padded), then `jpeg`.
    fn with_header(jpeg: &[u8]) -> Vec<u8> {
        let mut v = format!("{:<16}", jpeg.len()).into_bytes();
        v.extend_from_slice(jpeg);
        v
    }

    fn events(d: &mut SeedTcpDecoder) -> Vec<TcpEvent> {
        std::iter::from_fn(|| d.poll_event()).collect()
    }

    #[test]
    fn frames_in_one_write_and_split_at_every_byte() {
        let t0 = Instant::now();
        let (a, b) = (jpeg(40), jpeg(FILLER_MIN_LEN));
        let mut stream = with_header(&a);
        // the seed's header may have spaces before the number too
        stream.extend_from_slice(b"   27           ");
        stream.extend_from_slice(&b);
        let mut d = decoder(t0);
        d.handle_bytes(&stream, t0);
        let want = vec![TcpEvent::Frame(a), TcpEvent::Frame(b)];
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
        // SOI and EOI around nothing, or around a byte: no frame header, no scan
        d.handle_bytes(b"4               \xFF\xD8\xFF\xD9", t0);
        d.handle_bytes(b"5               \xFF\xD8\x00\xFF\xD9", t0);
        d.handle_bytes(&with_header(&jpeg(30)), t0);
        let got = events(&mut d);
        assert_eq!(
            got,
            vec![
                TcpEvent::Corrupt { len: 4 },
                TcpEvent::Corrupt { len: 4 },
                TcpEvent::Corrupt { len: 4 },
                TcpEvent::Corrupt { len: 5 },
                TcpEvent::Frame(jpeg(30)),
            ]
        );
        assert_eq!(got[0].outcome(), Some(Outcome::Corrupt));
        assert_eq!(got[4].outcome(), Some(Outcome::Frame));
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
            stream.extend_from_slice(&with_header(&jpeg(30)));
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

    /// A header and then nothing: the frame's deadline is the grace, well before the idle
    /// timeout; the connection ends mid-frame, counted dropped.
    #[test]
    fn a_header_and_then_nothing_ends_at_the_grace() {
        let t0 = Instant::now();
        let mut d = strict(t0);
        d.handle_bytes(b"1000            ", t0);
        assert_eq!(d.poll_timeout(), Some(t0 + GRACE));
        d.handle_timeout(t0 + GRACE - Duration::from_millis(1));
        assert!(!d.is_ended(), "not yet");
        d.handle_timeout(t0 + GRACE);
        let got = events(&mut d);
        assert_eq!(
            got,
            vec![TcpEvent::Ended {
                reason: EndReason::TooSlow { min_rate: RATE },
                at: Position::InFrame {
                    got: 0,
                    expected: 1000
                }
            }]
        );
        assert_eq!(got[0].outcome(), Some(Outcome::Dropped));
        assert_eq!(
            got[0].to_string(),
            "the frame came slower than 1000 bytes/s mid-frame after 0 of 1000 bytes"
        );
    }

    /// Each byte earns 1/RATE s past the grace: a trickle below the rate is cut, a frame at
    /// the rate goes through, and after it the next header has its own deadline.
    #[test]
    fn a_frame_must_keep_the_minimum_rate_after_the_grace() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        // a trickle: 100 bytes at the grace, then one byte a second
        let mut d = strict(t0);
        d.handle_bytes(b"1000            ", t0);
        d.handle_bytes(&[0xFF; 100], t0 + ms(900));
        assert_eq!(d.poll_timeout(), Some(t0 + GRACE + ms(100)));
        d.handle_bytes(&[0xD8], t0 + ms(1050));
        assert_eq!(
            d.poll_timeout(),
            Some(t0 + GRACE + ms(101)),
            "one byte, 1 ms"
        );
        d.handle_timeout(t0 + GRACE + ms(101));
        assert!(matches!(
            events(&mut d)[..],
            [TcpEvent::Ended {
                reason: EndReason::TooSlow { .. },
                at: Position::InFrame { got: 101, .. }
            }]
        ));
        // just at the rate: 1000 bytes over GRACE + 1 s, each 100-byte step 1 ms early
        let mut d = strict(t0);
        d.handle_bytes(b"1000            ", t0);
        let frame = jpeg(1000);
        for (i, part) in frame.chunks(100).enumerate() {
            let at = t0 + GRACE + ms(100 * i as u64) - ms(1);
            d.handle_timeout(at);
            assert!(!d.is_ended(), "cut at step {i}");
            d.handle_bytes(part, at);
        }
        assert_eq!(events(&mut d), vec![TcpEvent::Frame(frame)]);
        // between frames only the idle timeout applies
        let done = t0 + GRACE + ms(899);
        assert_eq!(d.poll_timeout(), Some(done + IDLE));
    }

    /// The first header must be complete within the header timeout of the connection's
    /// start (a peer that connects and trickles is cut); a later one within the header
    /// timeout of its first byte.
    #[test]
    fn a_header_must_be_complete_in_time() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut d = strict(t0);
        d.handle_bytes(b"4", t0 + ms(1500));
        assert_eq!(
            d.poll_timeout(),
            Some(t0 + HEADER_TIMEOUT),
            "from the start"
        );
        d.handle_bytes(b"  ", t0 + HEADER_TIMEOUT - ms(1));
        d.handle_timeout(t0 + HEADER_TIMEOUT);
        let got = events(&mut d);
        assert_eq!(
            got,
            vec![TcpEvent::Ended {
                reason: EndReason::HeaderTimeout(HEADER_TIMEOUT),
                at: Position::InHeader { got: 3 }
            }]
        );
        assert_eq!(got[0].outcome(), None, "no frame was under way");
        // the second header: from its first byte, not from the end of the first frame
        let mut d = strict(t0);
        d.handle_bytes(&with_header(&jpeg(30)), t0);
        assert!(matches!(events(&mut d)[..], [TcpEvent::Frame(_)]));
        assert_eq!(d.poll_timeout(), Some(t0 + IDLE), "a pause between frames");
        let t1 = t0 + ms(4000);
        d.handle_bytes(b"4  ", t1);
        assert_eq!(d.poll_timeout(), Some(t1 + HEADER_TIMEOUT));
        d.handle_bytes(b"             ", t1 + HEADER_TIMEOUT - ms(1));
        d.handle_timeout(t1 + HEADER_TIMEOUT);
        assert!(!d.is_ended(), "complete in time");
        assert_eq!(d.poll_timeout(), Some(t1 + HEADER_TIMEOUT - ms(1) + GRACE));
    }

    #[test]
    fn abort_between_frames_loses_nothing() {
        let t0 = Instant::now();
        let mut d = decoder(t0);
        d.handle_bytes(&with_header(&jpeg(30)), t0);
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
