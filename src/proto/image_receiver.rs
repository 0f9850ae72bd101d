//! Everything the image port accepts, on one socket: the seed formats
//! ([`super::seed_reassembly`]) and the framed format ([`super::framed_receiver`]), told
//! apart by a datagram's first bytes (the framed magic `UHFR`; a seed datagram is a 4- or
//! 8-byte header, a JPEG starting `FF D8`, or data of a frame in progress from its sender,
//! which keeps going to the seed reassembler). With keys ([`ImageReceiver::with_security`])
//! secure datagrams go to [`super::secure_image`], and unauthenticated ones are refused
//! except from the trusted ranges.

use super::framed_receiver::{FrameTiming, FramedConfig, FramedEvent, FramedReceiver};
use super::secure_gate::{Refusal, SecurityConfig};
use super::secure_image::SecureImage;
use super::seed_reassembly::{SeedConfig, SeedEvent, SeedReassembler};
pub use super::Outcome;
use super::Transmit;
use crate::wire::framed;
use crate::wire::name::SourceName;
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Limits shared by both formats.
#[derive(Clone, Debug)]
pub struct ImageConfig {
    pub max_frame_bytes: u64,
    pub frame_timeout: Duration,
    /// Partial-frame memory, for each format.
    pub max_partial_bytes: usize,
}

impl Default for ImageConfig {
    fn default() -> Self {
        ImageConfig {
            max_frame_bytes: 16 << 20,
            frame_timeout: Duration::from_millis(1000),
            max_partial_bytes: 64 << 20,
        }
    }
}

/// What happened, in either format.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageEvent {
    Seed(SeedEvent),
    Framed(FramedEvent),
    /// An event of the keyed side ([`super::secure_image`]): its frames are named by the
    /// authorized-keys file, an authenticated name.
    Secure(FramedEvent),
    /// A datagram dropped without a reply (keys required: see [`super::secure_image`]).
    Refused {
        from: SocketAddr,
        reason: Refusal,
    },
}

/// A frame delivered by either format ([`ImageEvent::into_frame`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivered {
    pub from: SocketAddr,
    pub name: Option<SourceName>,
    /// The name is the authorized-keys file's, not a claim.
    pub authenticated: bool,
    pub jpeg: Vec<u8>,
    /// The framed frame id (seed formats have none).
    pub frame: Option<u32>,
    /// Arrival, capture time (framed: [`crate::wire::framed::CAPTURED`]; seed: the JPEG's
    /// stamp, [`crate::jpegcheck::capture_stamp`]) and latency.
    pub timing: FrameTiming,
}

impl ImageEvent {
    pub fn from(&self) -> SocketAddr {
        match self {
            ImageEvent::Refused { from, .. } => *from,
            ImageEvent::Seed(
                SeedEvent::Frame { from, .. }
                | SeedEvent::Corrupt { from, .. }
                | SeedEvent::Dropped { from, .. }
                | SeedEvent::Rejected { from, .. },
            ) => *from,
            ImageEvent::Framed(e) | ImageEvent::Secure(e) => match e {
                FramedEvent::Frame { from, .. }
                | FramedEvent::Corrupt { from, .. }
                | FramedEvent::Dropped { from, .. }
                | FramedEvent::Rejected { from, .. } => *from,
            },
        }
    }

    pub fn outcome(&self) -> Outcome {
        let framed = |e: &FramedEvent| match e {
            FramedEvent::Frame { .. } => Outcome::Frame,
            FramedEvent::Corrupt { .. } => Outcome::Corrupt,
            FramedEvent::Dropped { .. } => Outcome::Dropped,
            FramedEvent::Rejected { .. } => Outcome::Rejected,
        };
        match self {
            ImageEvent::Framed(e) | ImageEvent::Secure(e) => framed(e),
            ImageEvent::Seed(SeedEvent::Frame { .. }) => Outcome::Frame,
            ImageEvent::Seed(SeedEvent::Corrupt { .. }) => Outcome::Corrupt,
            ImageEvent::Seed(SeedEvent::Dropped { .. }) => Outcome::Dropped,
            ImageEvent::Seed(SeedEvent::Rejected { .. }) | ImageEvent::Refused { .. } => {
                Outcome::Rejected
            }
        }
    }

    /// A delivered frame: its sender, its name (framed senders that give one), whether
    /// that name is authenticated (the keys file's), the JPEG, and its timing. A framed
    /// frame's arrival is the receiver's; a seed frame arrived at `seed_arrival_us` (the
    /// hub's wall clock, µs since the Unix epoch) and its capture time is its stamp.
    pub fn into_frame(self, seed_arrival_us: u64) -> Option<Delivered> {
        let (from, name, jpeg, authenticated, frame, timing) = match self {
            ImageEvent::Seed(SeedEvent::Frame { from, jpeg }) => {
                let stamp = crate::jpegcheck::capture_stamp(&jpeg);
                let timing = FrameTiming::stamped(seed_arrival_us, stamp);
                (from, None, jpeg, false, None, timing)
            }
            ImageEvent::Framed(FramedEvent::Frame {
                from,
                name,
                jpeg,
                frame,
                timing,
                ..
            }) => (from, name, jpeg, false, Some(frame), timing),
            ImageEvent::Secure(FramedEvent::Frame {
                from,
                name,
                jpeg,
                frame,
                timing,
                ..
            }) => (from, name, jpeg, true, Some(frame), timing),
            _ => return None,
        };
        Some(Delivered {
            from,
            name,
            authenticated,
            jpeg,
            frame,
            timing,
        })
    }

    /// Events that happen on every lost seed header (stray data) are too many to log at
    /// warning level.
    /// Refusals of unauthenticated datagrams, too (a flood of them must not fill the log).
    pub fn is_noise(&self) -> bool {
        matches!(
            self,
            ImageEvent::Seed(SeedEvent::Rejected {
                reason: super::seed_reassembly::Rejection::Stray { .. },
                ..
            }) | ImageEvent::Refused { .. }
        )
    }
}

impl fmt::Display for ImageEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageEvent::Seed(e) => e.fmt(f),
            ImageEvent::Framed(e) | ImageEvent::Secure(e) => e.fmt(f),
            ImageEvent::Refused { from, reason } => {
                write!(f, "refused a datagram from {from}: {}", reason.as_str())
            }
        }
    }
}

/// Both receivers behind one `handle_datagram`.
pub struct ImageReceiver {
    seed: SeedReassembler,
    framed: FramedReceiver,
    secure: Option<SecureImage>,
}

impl ImageReceiver {
    pub fn new(config: ImageConfig) -> Self {
        ImageReceiver {
            seed: SeedReassembler::new(SeedConfig {
                max_frame_bytes: config.max_frame_bytes,
                frame_timeout: config.frame_timeout,
                max_partial_bytes: config.max_partial_bytes,
                ..SeedConfig::default()
            }),
            framed: FramedReceiver::new(framed_config(&config)),
            secure: None,
        }
    }

    /// A receiver that requires keys: see [`super::secure_image`].
    pub fn with_security(config: ImageConfig, security: SecurityConfig) -> Self {
        ImageReceiver {
            secure: Some(SecureImage::new(security, framed_config(&config))),
            ..ImageReceiver::new(config)
        }
    }

    /// New authorized keys (after a reload); nothing without keys.
    pub fn set_keys(&mut self, keys: std::sync::Arc<crate::secure::authorized::AuthorizedKeys>) {
        if let Some(s) = &mut self.secure {
            s.set_keys(keys);
        }
    }

    pub fn handle_datagram(&mut self, from: SocketAddr, data: &[u8], now: Instant) {
        if let Some(secure) = &mut self.secure {
            if SecureImage::is_secure(data) {
                return secure.handle_datagram(from, data, now);
            }
            if !secure.allows_plain(from) {
                return secure.refuse_plain(from);
            }
        }
        if framed::is_framed(data) && !self.seed.has_partial(from) {
            self.framed.handle_datagram(from, data, now);
        } else {
            self.seed.handle_datagram(from, data, now);
        }
    }

    /// Framed frames rebuilt from parity (plain and, with keys, sealed).
    pub fn rebuilt(&self) -> super::framed_receiver::Rebuilt {
        let secure = self.secure.as_ref().map(SecureImage::rebuilt);
        self.framed.rebuilt() + secure.unwrap_or_default()
    }

    /// When [`ImageReceiver::handle_timeout`] should next be called: the earlier of the
    /// two formats' timers.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.seed.poll_timeout(),
            self.framed.poll_timeout(),
            self.secure.as_ref().and_then(SecureImage::poll_timeout),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.seed.handle_timeout(now);
        self.framed.handle_timeout(now);
        if let Some(s) = &mut self.secure {
            s.handle_timeout(now);
        }
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.seed
            .poll_transmit()
            .or_else(|| self.framed.poll_transmit())
            .or_else(|| self.secure.as_mut()?.poll_transmit())
    }

    pub fn poll_event(&mut self) -> Option<ImageEvent> {
        self.seed
            .poll_event()
            .map(ImageEvent::Seed)
            .or_else(|| self.framed.poll_event().map(ImageEvent::Framed))
            .or_else(|| {
                let s = self.secure.as_mut()?;
                s.poll_event().map(ImageEvent::Secure).or_else(|| {
                    s.poll_refused()
                        .map(|(from, reason)| ImageEvent::Refused { from, reason })
                })
            })
    }

    /// Bytes held by partial frames of both formats.
    pub fn partial_bytes(&self) -> usize {
        self.seed.partial_bytes()
            + self.framed.partial_bytes()
            + self.secure.as_ref().map_or(0, SecureImage::partial_bytes)
    }
}

fn framed_config(config: &ImageConfig) -> FramedConfig {
    FramedConfig {
        max_frame_bytes: config.max_frame_bytes,
        frame_timeout: config.frame_timeout,
        max_partial_bytes: config.max_partial_bytes,
        ..FramedConfig::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::framed::{emit_data, DataHeader};
    use crate::wire::seed_udp::{emit_length_header, seed_chunks, HeaderWidth, IMG_ACK};

    /// Chunk 0 of `count` of a 3000-byte framed frame.
    fn first_framed_chunk(count: u16, payload: &[u8]) -> Vec<u8> {
        let h = DataHeader {
            flags: 0,
            stream: 5,
            frame: 0,
            index: 0,
            count,
            length: 3000,
            ts_us: 9,
        };
        let mut chunk = Vec::new();
        emit_data(&mut chunk, &h, payload);
        chunk
    }

    #[test]
    fn both_formats_on_one_port() {
        let mut r = ImageReceiver::new(ImageConfig::default());
        let now = Instant::now();
        let jpeg = crate::media::testjpeg::jpeg_of_len(3000, 1).unwrap();
        let seed_sender: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let framed_sender: SocketAddr = "127.0.0.1:2".parse().unwrap();
        r.handle_datagram(
            seed_sender,
            &emit_length_header(3000, HeaderWidth::Eight).unwrap(),
            now,
        );
        r.handle_datagram(framed_sender, &first_framed_chunk(1, &jpeg), now);
        for c in seed_chunks(&jpeg, 1024) {
            r.handle_datagram(seed_sender, c, now);
        }
        let mut frames = Vec::new();
        while let Some(e) = r.poll_event() {
            assert_eq!(e.outcome(), Outcome::Frame);
            let d = e.into_frame(0).unwrap();
            assert!(d.name.is_none() && !d.authenticated);
            frames.push((d.from, d.jpeg));
        }
        frames.sort();
        assert_eq!(
            frames,
            vec![(seed_sender, jpeg.clone()), (framed_sender, jpeg)]
        );
        let acks: Vec<Transmit> = std::iter::from_fn(|| r.poll_transmit()).collect();
        assert_eq!(acks.len(), 2);
        assert!(acks
            .iter()
            .any(|t| t.to == seed_sender && &*t.payload == IMG_ACK));
        assert!(acks
            .iter()
            .any(|t| t.to == framed_sender && framed::is_framed(&t.payload)));
    }

    #[test]
    fn poll_timeout_is_the_earlier_of_both_formats() {
        let mut r = ImageReceiver::new(ImageConfig::default());
        let t0 = Instant::now();
        assert_eq!(r.poll_timeout(), None);
        let jpeg = crate::media::testjpeg::jpeg_of_len(3000, 1).unwrap();
        let chunk = first_framed_chunk(2, &jpeg[..1500]);
        r.handle_datagram("127.0.0.1:2".parse().unwrap(), &chunk, t0);
        let t1 = t0 + Duration::from_millis(300);
        let header = emit_length_header(3000, HeaderWidth::Eight).unwrap();
        r.handle_datagram("127.0.0.1:1".parse().unwrap(), &header, t1);
        assert_eq!(r.poll_timeout(), Some(t0 + Duration::from_millis(1000)));
        r.handle_timeout(t0 + Duration::from_millis(1000));
        assert_eq!(r.poll_timeout(), Some(t1 + Duration::from_millis(1000)));
    }
}

/// Issue 11's seed attack through the whole image port: 8-byte headers claiming 16 MiB,
/// each followed by three 1024-byte chunks, from 2000 sockets across 127.0.0.0/8, between
/// the datagrams of a seed chunked camera.
#[cfg(test)]
mod abuse_tests {
    use super::*;
    use crate::wire::seed_udp::{emit_length_header, seed_chunks, HeaderWidth, IMG_ACK};

    fn attacker(i: usize) -> SocketAddr {
        let host = i % 2000;
        SocketAddr::from((
            [127, 1 + (host / 50) as u8, 0, 1 + (host % 50) as u8],
            10_000 + (i / 2000) as u16,
        ))
    }

    fn seed_datagrams(f: &[u8]) -> Vec<Vec<u8>> {
        let mut d = vec![emit_length_header(f.len() as i64, HeaderWidth::Eight).unwrap()];
        d.extend(seed_chunks(f, 1024).map(<[u8]>::to_vec));
        d
    }

    /// The flood holds what it sent (at most twice, for buffer growth, plus the per-frame
    /// overhead), never its 16 MiB claims; a camera that has delivered a frame keeps
    /// completing every frame, though the flood outnumbers the partial-frame count limit.
    #[test]
    fn seed_header_claims_from_2000_sockets_cost_what_came_and_the_camera_keeps_going() {
        let mut r = ImageReceiver::new(ImageConfig::default());
        let mut t = Instant::now();
        let camera: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let f = crate::media::testjpeg::jpeg_of_len(66_000, 1).unwrap();
        let header = emit_length_header(16 << 20, HeaderWidth::Eight).unwrap();
        let junk = [0x5Au8; 1024];
        let (mut n, mut frames, mut acks) = (0usize, 0, 0);
        for frame in 0..20 {
            for d in seed_datagrams(&f) {
                t += Duration::from_micros(10);
                r.handle_datagram(camera, &d, t);
                if frame == 0 {
                    continue; // the camera's first frame before the flood
                }
                for _ in 0..5 {
                    let a = attacker(n);
                    r.handle_datagram(a, &header, t);
                    for _ in 0..3 {
                        r.handle_datagram(a, &junk, t);
                    }
                    n += 1;
                    let one = r.seed.partial_bytes_of(a);
                    assert!(one <= 2 * 3 * 1024 + 256, "{one} bytes for 3 KiB sent");
                }
            }
            while let Some(e) = r.poll_event() {
                if let ImageEvent::Seed(SeedEvent::Frame { from, .. }) = e {
                    assert_eq!(from, camera);
                    frames += 1;
                }
            }
            while let Some(tr) = r.poll_transmit() {
                assert_eq!((tr.to, &*tr.payload), (camera, IMG_ACK));
                acks += 1;
            }
            assert!(r.partial_bytes() <= 1024 * (4096 + 256) + 2 * 66_000 + 256);
        }
        assert!(n > 2000, "{n} attacking sockets");
        assert_eq!((frames, acks), (20, 20));
    }

    /// A single-datagram "JPEG" shorter than the 14-byte ack is not answered with the ack
    /// (no amplification); a real one is.
    #[test]
    fn a_seed_ack_is_never_longer_than_the_frame_it_answers() {
        let mut r = ImageReceiver::new(ImageConfig::default());
        let now = Instant::now();
        let from: SocketAddr = "127.0.0.1:1".parse().unwrap();
        r.handle_datagram(from, &[0xFF, 0xD8, 0x00, 0xFF, 0xD9], now);
        let replies: usize = std::iter::from_fn(|| r.poll_transmit())
            .map(|t| t.payload.len())
            .sum();
        assert!(replies <= 5, "{replies} bytes back for 5");
        let jpeg = crate::media::testjpeg::jpeg_of_len(3000, 1).unwrap();
        r.handle_datagram(from, &jpeg, now);
        assert_eq!(r.poll_transmit().map(|t| t.payload), Some(IMG_ACK.into()));
    }
}
