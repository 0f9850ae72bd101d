//! udphub's own "framed" image format: every datagram says which frame and which chunk it
//! carries, so frames survive loss, duplication and reordering, and the receiver can ask for
//! exactly the chunks it is missing.
//!
//! All integers little-endian. Every datagram starts with the same 16-byte prefix:
//!
//! ```text
//! magic   4s  b"UHFR"
//! version B   1
//! kind    B   0 = data, 1 = ack, 2 = nack
//! flags   H   data: bit 0 = POLL (answer now), bit 1 = NAMED (a name follows the header),
//!             bit 2 = CAPTURED (capture time and clock offset follow the name),
//!             bit 3 = CLOCK (put the hub's clock into the ack),
//!             bit 4 = PARITY (a parity shard, not a data chunk),
//!             bits 8-15 = m, the frame's parity shard count (0 = none);
//!             ack: bit 0 = HUB_TIME (the hub's clock follows); every other bit: 0
//! stream  I   random per sender run: a restarted sender is a new stream
//! frame   I   frame id, +1 per frame (wraps)
//! ```
//!
//! - **data** (sender → hub), Python `struct` format [`DATA_STRUCT`] (32 bytes), then the
//!   chunk's payload: `index H, count H, length I, ts_us Q` — the chunk index, the frame's
//!   chunk count, the frame's total length in bytes, and the sender's clock in µs. Every
//!   chunk but the last carries `ceil(length / count)` bytes. With [`NAMED`] set, the header
//!   is followed by the sender's name (`name_len B`, then that many bytes of
//!   [`crate::wire::name`]'s alphabet) before the payload: senders set it on chunk 0 of every
//!   frame, so the hub knows a stream's name with its first frame (a frame is never
//!   delivered without its chunk 0) and one lost datagram cannot leave it nameless. The hub
//!   answers (ack if the frame is complete, else a nack) when it gets the frame's last
//!   datagram (the last parity shard, `index == m - 1`, when `m > 0`; else the last chunk,
//!   `index == count - 1`) or a datagram flagged [`POLL`], and acks at once, whatever the
//!   datagram, when a frame completes; a sender flags the last datagram of each batch
//!   (the first sending and each batch of resends), so every recovery round costs one round
//!   trip, not a timeout. Other data is not answered.
//!
//!   Forward error correction: a frame may carry `m` (1..=255) Reed-Solomon parity shards
//!   after its `count` data chunks (`count` at most [`MAX_PARITY_DATA`]), any `count` of
//!   the `count + m` rebuilding it (Leopard-RS over GF(2^16), the `reed-solomon-simd`
//!   crate's code). Every datagram of such a frame, data or parity, has `m` in the high
//!   byte of `flags`; a **parity** datagram is flagged [`PARITY`], its `index` is the shard
//!   number `j` in `0..m` (`count`, `length` and `ts_us` as for data), it is never
//!   [`NAMED`] or [`CAPTURED`], and its payload is [`PARITY_STRUCT`] (`check Q`: the first
//!   8 bytes, little-endian, of the BLAKE2s-256 hash of the frame's bytes, so a rebuilt
//!   frame is checked before it is delivered) followed by the shard: [`shard_len`] bytes,
//!   the data chunk size rounded up to even (the codec's shards are of even size; the
//!   data chunks are zero-padded to it for the encoding only, never on the wire). Resends
//!   are data chunks only. A hub that predates parity ignores the high byte and rejects the
//!   parity datagrams (their size does not fit a data chunk): the frame then needs its
//!   data chunks, as before.
//!
//!   With [`CAPTURED`] set (senders set it on chunk 0 only, like [`NAMED`]), the header (and
//!   the name) is followed by [`CAPTURED_STRUCT`] (24 bytes) before the payload:
//!   `capture_us Q, offset_us q, offset_err_us I, quality B, 3 pad`: when the frame was
//!   captured (the sender's wall clock, µs since the Unix epoch), the sender's estimate of
//!   `hub clock - sender clock` in µs ([`NO_OFFSET`] = `i64::MIN`: no estimate yet) and its
//!   uncertainty in µs, and the JPEG quality the sender chose (0 = unknown). A frame from a
//!   sender that predates this flag has no capture time: the flag tells them apart (the
//!   hub reports its latency as "none"). [`CLOCK`] asks the hub for its clock in the ack.
//! - **ack** (hub → sender), [`ACK_STRUCT`] (28 bytes): `status B, rebuilt H, 1 pad, ts_us Q`
//!   echoing the data's timestamp; `rebuilt` is how many of the frame's data chunks the hub
//!   rebuilt from parity (0 without parity; senders that predate it read it as padding: it
//!   tells a sender the loss that its parity hid). Status 0 = delivered, 1 = rejected (do not resend), 2 = stale (a newer
//!   frame of the stream was delivered first; do not resend). With [`HUB_TIME`] set (only in
//!   answer to a datagram flagged [`CLOCK`] or [`CAPTURED`] and at least [`TIMED_ACK_LEN`]
//!   bytes long, so an ack never outweighs what it answers), `hub_us Q` follows (36 bytes):
//!   the hub's wall clock, µs since the Unix epoch, when it sent the ack. Parsers that read
//!   the first 28 bytes of an ack of at least 28 (older Rust and Python senders) are not
//!   disturbed by it. The sender estimates the clock offset from these as NTP does
//!   ([`crate::proto::framed_sender`]).
//! - **nack** (hub → sender), [`NACK_STRUCT`] (20 bytes) + `n` ranges of `start H, len H`:
//!   `received H, n H` — the chunks the hub has, and the missing chunk ranges to resend.

use super::name::{self, SourceName};
use super::{u16_at, u32_at, u64_at};
use std::fmt;
use std::ops::Deref;

/// First four bytes of every framed datagram.
pub const MAGIC: [u8; 4] = *b"UHFR";
/// The version this module speaks.
pub const VERSION: u8 = 1;
/// Length of the prefix shared by every kind.
pub const PREFIX_LEN: usize = 16;
/// Length of a data datagram's header.
pub const DATA_HEADER_LEN: usize = 32;
/// Length of an ack.
pub const ACK_LEN: usize = 28;
/// Length of a nack before its ranges.
pub const NACK_HEADER_LEN: usize = 20;
/// Ranges in one nack, at most (keeps a nack under 1500 bytes).
pub const MAX_NACK_RANGES: usize = 256;
/// Default payload per data datagram: fits a 1500-byte Ethernet/Wi-Fi MTU with IP and UDP.
pub const DEFAULT_CHUNK_SIZE: usize = 1400;
/// The largest payload per data datagram (65507 minus the header, rounded down).
pub const MAX_CHUNK_SIZE: usize = 65_000;

/// Data flag: the sender asks for an answer to this datagram (a nack of what is still
/// missing, or the ack).
pub const POLL: u16 = 1;

/// Data flag: the sender's name follows the header (`name_len B` + the name).
pub const NAMED: u16 = 2;
/// Data flag: [`CAPTURED_STRUCT`] (capture time, clock offset, quality) follows the header
/// and the name.
pub const CAPTURED: u16 = 4;
/// Data flag: the sender asks for the hub's clock in the ack that answers this datagram.
pub const CLOCK: u16 = 8;
/// Data flag: a parity shard of the frame (see the module documentation), not a data chunk.
pub const PARITY: u16 = 16;
/// Length of the check that starts a [`PARITY`] datagram's payload.
pub const PARITY_CHECK_LEN: usize = 8;
/// Python `struct` format of the check before a parity shard.
pub const PARITY_STRUCT: &str = "<Q";
/// A frame with parity has at most this many data chunks (what the codec supports with up
/// to 255 parity shards).
pub const MAX_PARITY_DATA: u16 = 32_768;
/// Length of the [`CAPTURED`] extension.
pub const CAPTURED_LEN: usize = 24;
/// Python `struct` format of the [`CAPTURED`] extension.
pub const CAPTURED_STRUCT: &str = "<QqIB3x";
/// `offset_us` when the sender has no estimate of the clock offset.
pub const NO_OFFSET: i64 = i64::MIN;
/// Ack flag: `hub_us Q` (the hub's wall clock) follows the ack.
pub const HUB_TIME: u16 = 1;
/// Length of an ack flagged [`HUB_TIME`].
pub const TIMED_ACK_LEN: usize = ACK_LEN + 8;
/// The longest data header: the fixed part, the name's length byte, the longest name and
/// the [`CAPTURED`] extension.
pub const MAX_DATA_HEADER_LEN: usize = DATA_HEADER_LEN + 1 + name::MAX_LEN + CAPTURED_LEN;

/// Python `struct` format of a data datagram's header.
pub const DATA_STRUCT: &str = "<4sBBHIIHHIQ";
/// Python `struct` format of an ack.
pub const ACK_STRUCT: &str = "<4sBBHIIBHxQ";
/// Python `struct` format of a nack's fixed part (then `n` times `<HH`).
pub const NACK_STRUCT: &str = "<4sBBHIIHH";

const KIND_DATA: u8 = 0;
const KIND_ACK: u8 = 1;
const KIND_NACK: u8 = 2;

/// What the hub says about a frame in an ack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AckStatus {
    Delivered = 0,
    Rejected = 1,
    Stale = 2,
}

/// The header of a data datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataHeader {
    /// [`POLL`] or 0; unknown bits are ignored.
    pub flags: u16,
    pub stream: u32,
    pub frame: u32,
    pub index: u16,
    pub count: u16,
    pub length: u32,
    pub ts_us: u64,
}

impl DataHeader {
    /// The frame's parity shard count `m` (the high byte of `flags`; 0 = no parity).
    pub fn parity_count(&self) -> u8 {
        (self.flags >> 8) as u8
    }

    /// `flags` with the parity count set to `m`.
    pub fn with_parity_count(self, m: u8) -> DataHeader {
        DataHeader {
            flags: (self.flags & 0xFF) | (u16::from(m) << 8),
            ..self
        }
    }
}

/// What a [`CAPTURED`] chunk says about its frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Captured {
    /// The sender's wall clock when the frame was captured, µs since the Unix epoch.
    pub capture_us: u64,
    /// The sender's estimate of `hub clock - sender clock`, µs ([`NO_OFFSET`]: none).
    pub offset_us: i64,
    /// The estimate's uncertainty, µs.
    pub offset_err_us: u32,
    /// The JPEG quality the sender chose (0 = unknown).
    pub quality: u8,
}

impl Captured {
    /// The offset estimate and its uncertainty, if the sender has one.
    pub fn offset(&self) -> Option<(i64, u32)> {
        (self.offset_us != NO_OFFSET).then_some((self.offset_us, self.offset_err_us))
    }
}

/// A parsed framed datagram; `Data` borrows its name and payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Packet<'a> {
    Data {
        header: DataHeader,
        /// The sender's name, when the datagram is flagged [`NAMED`] (checked against the
        /// name alphabet).
        name: Option<&'a str>,
        /// The capture extension, when the datagram is flagged [`CAPTURED`].
        captured: Option<Captured>,
        payload: &'a [u8],
    },
    /// A [`PARITY`] datagram: shard `header.index` of the frame's `header.parity_count()`.
    Parity {
        header: DataHeader,
        /// The frame's check ([`frame_check`]).
        check: u64,
        /// The shard, [`shard_len`] bytes.
        shard: &'a [u8],
    },
    Ack {
        stream: u32,
        frame: u32,
        status: AckStatus,
        ts_us: u64,
        /// The hub's wall clock (µs since the Unix epoch) when the ack is flagged [`HUB_TIME`].
        hub_us: Option<u64>,
        /// Data chunks of the frame the hub rebuilt from parity (0 without, and from hubs
        /// that predate parity: the field was padding).
        rebuilt: u16,
    },
    Nack {
        stream: u32,
        frame: u32,
        received: u16,
        missing: Vec<(u16, u16)>,
    },
}

/// Why bytes that start like a framed datagram are not one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    TooShort(usize),
    BadMagic,
    UnknownVersion(u8),
    UnknownKind(u8),
    UnknownStatus(u8),
    /// Index not below count, a zero count, or a payload size that cannot fit the frame.
    Inconsistent,
    /// A [`NAMED`] datagram whose name is cut short or not a valid name.
    BadName,
    /// A [`CAPTURED`] datagram too short for the extension, or an ack flagged
    /// [`HUB_TIME`] without the time.
    BadExtension,
    /// A [`PARITY`] datagram without a parity count, with a shard number not below it, also
    /// flagged [`NAMED`] or [`CAPTURED`], or (parity or data) a parity count on a frame of
    /// more than [`MAX_PARITY_DATA`] chunks.
    BadParity,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::TooShort(n) => write!(f, "{n} bytes is too short for a framed datagram"),
            ParseError::BadMagic => write!(f, "not a framed datagram (magic)"),
            ParseError::UnknownVersion(v) => write!(f, "framed version {v} is not spoken here"),
            ParseError::UnknownKind(k) => write!(f, "unknown framed kind {k}"),
            ParseError::UnknownStatus(s) => write!(f, "unknown ack status {s}"),
            ParseError::Inconsistent => write!(f, "chunk index, count, length and size disagree"),
            ParseError::BadName => write!(f, "the sender's name is cut short or not a valid name"),
            ParseError::BadExtension => write!(f, "a flagged extension is cut short"),
            ParseError::BadParity => write!(f, "a parity shard's count or number is not valid"),
        }
    }
}

impl std::error::Error for ParseError {}

/// True when `datagram` starts with the framed magic (cheap test used to dispatch).
pub fn is_framed(datagram: &[u8]) -> bool {
    datagram.len() >= PREFIX_LEN && datagram[..4] == MAGIC
}

/// The payload size of every chunk but the last, for a frame of `length` bytes in `count`.
pub fn chunk_len(length: u32, count: u16) -> usize {
    (length as usize).div_ceil(count.max(1) as usize)
}

/// The payload size of chunk `index`.
pub fn payload_len(length: u32, count: u16, index: u16) -> usize {
    let c = chunk_len(length, count);
    let start = c * index as usize;
    (length as usize).saturating_sub(start).min(c)
}

/// The size of a parity shard of a frame of `length` bytes in `count` chunks: the data
/// chunk size rounded up to even.
pub fn shard_len(length: u32, count: u16) -> usize {
    chunk_len(length, count).next_multiple_of(2)
}

/// The check a parity datagram carries: the first 8 bytes (little-endian) of the BLAKE2s-256
/// hash of the frame's bytes. A rebuilt frame whose check differs is not delivered.
pub fn frame_check(frame: &[u8]) -> u64 {
    use blake2::Digest;
    let hash = blake2::Blake2s256::digest(frame);
    u64::from_le_bytes(hash[..8].try_into().expect("32 bytes"))
}

/// Chunk count for a frame of `length` bytes with `chunk_size`-byte chunks (at least 1).
pub fn chunk_count(length: usize, chunk_size: usize) -> usize {
    length.div_ceil(chunk_size).max(1)
}

/// Parse any framed datagram, checking a data chunk's payload is the size its header implies.
pub fn parse(b: &[u8]) -> Result<Packet<'_>, ParseError> {
    if b.len() < PREFIX_LEN {
        return Err(ParseError::TooShort(b.len()));
    }
    if b[..4] != MAGIC {
        return Err(ParseError::BadMagic);
    }
    if b[4] != VERSION {
        return Err(ParseError::UnknownVersion(b[4]));
    }
    let (stream, frame) = (u32_at(b, 8), u32_at(b, 12));
    match b[5] {
        KIND_DATA => {
            if b.len() < DATA_HEADER_LEN {
                return Err(ParseError::TooShort(b.len()));
            }
            let h = DataHeader {
                flags: u16_at(b, 6),
                stream,
                frame,
                index: u16_at(b, 16),
                count: u16_at(b, 18),
                length: u32_at(b, 20),
                ts_us: u64_at(b, 24),
            };
            let m = h.parity_count();
            if m > 0 && h.count > MAX_PARITY_DATA {
                return Err(ParseError::BadParity);
            }
            let frame_ok = h.count > 0
                && h.length > 0
                && chunk_len(h.length, h.count) <= MAX_CHUNK_SIZE
                && chunk_len(h.length, h.count) * (h.count as usize - 1) < h.length as usize;
            if h.flags & PARITY != 0 {
                if m == 0 || h.index >= u16::from(m) || h.flags & (NAMED | CAPTURED) != 0 {
                    return Err(ParseError::BadParity);
                }
                let rest = &b[DATA_HEADER_LEN..];
                if !frame_ok || rest.len() != PARITY_CHECK_LEN + shard_len(h.length, h.count) {
                    return Err(ParseError::Inconsistent);
                }
                return Ok(Packet::Parity {
                    header: h,
                    check: u64_at(rest, 0),
                    shard: &rest[PARITY_CHECK_LEN..],
                });
            }
            let (name, rest) = if h.flags & NAMED == 0 {
                (None, &b[DATA_HEADER_LEN..])
            } else {
                let len = *b.get(DATA_HEADER_LEN).ok_or(ParseError::BadName)? as usize;
                let start = DATA_HEADER_LEN + 1;
                let bytes = b.get(start..start + len).ok_or(ParseError::BadName)?;
                let name = std::str::from_utf8(bytes).map_err(|_| ParseError::BadName)?;
                name::check(name).map_err(|_| ParseError::BadName)?;
                (Some(name), &b[start + len..])
            };
            let (captured, payload) = if h.flags & CAPTURED == 0 {
                (None, rest)
            } else {
                if rest.len() < CAPTURED_LEN {
                    return Err(ParseError::BadExtension);
                }
                let c = Captured {
                    capture_us: u64_at(rest, 0),
                    offset_us: u64_at(rest, 8) as i64,
                    offset_err_us: u32_at(rest, 16),
                    quality: rest[20],
                };
                (Some(c), &rest[CAPTURED_LEN..])
            };
            let consistent = frame_ok
                && h.index < h.count
                && payload.len() == payload_len(h.length, h.count, h.index);
            if !consistent {
                return Err(ParseError::Inconsistent);
            }
            Ok(Packet::Data {
                header: h,
                name,
                captured,
                payload,
            })
        }
        KIND_ACK => {
            if b.len() < ACK_LEN {
                return Err(ParseError::TooShort(b.len()));
            }
            let status = match b[16] {
                0 => AckStatus::Delivered,
                1 => AckStatus::Rejected,
                2 => AckStatus::Stale,
                s => return Err(ParseError::UnknownStatus(s)),
            };
            let hub_us = if u16_at(b, 6) & HUB_TIME == 0 {
                None
            } else if b.len() < TIMED_ACK_LEN {
                return Err(ParseError::BadExtension);
            } else {
                Some(u64_at(b, ACK_LEN))
            };
            Ok(Packet::Ack {
                stream,
                frame,
                status,
                ts_us: u64_at(b, 20),
                hub_us,
                rebuilt: u16_at(b, 17),
            })
        }
        KIND_NACK => {
            if b.len() < NACK_HEADER_LEN {
                return Err(ParseError::TooShort(b.len()));
            }
            let (received, n) = (u16_at(b, 16), u16_at(b, 18) as usize);
            if n > MAX_NACK_RANGES || b.len() < NACK_HEADER_LEN + 4 * n {
                return Err(ParseError::Inconsistent);
            }
            let missing = (0..n)
                .map(|i| {
                    let at = NACK_HEADER_LEN + 4 * i;
                    (u16_at(b, at), u16_at(b, at + 2))
                })
                .collect();
            Ok(Packet::Nack {
                stream,
                frame,
                received,
                missing,
            })
        }
        k => Err(ParseError::UnknownKind(k)),
    }
}

fn emit_prefix(out: &mut Vec<u8>, kind: u8, flags: u16, stream: u32, frame: u32) {
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&[VERSION, kind]);
    out.extend_from_slice(&flags.to_le_bytes());
    out.extend_from_slice(&stream.to_le_bytes());
    out.extend_from_slice(&frame.to_le_bytes());
}

/// Append a data datagram (header, then `payload`) to `out`, without a name.
pub fn emit_data(out: &mut Vec<u8>, h: &DataHeader, payload: &[u8]) {
    emit_named_data(out, h, None, payload);
}

/// Append a data datagram to `out`: the header, `name` if there is one (flagged
/// [`NAMED`]), then `payload`.
pub fn emit_named_data(
    out: &mut Vec<u8>,
    h: &DataHeader,
    name: Option<&SourceName>,
    payload: &[u8],
) {
    out.extend_from_slice(&data_header(h, name, None));
    out.extend_from_slice(payload);
}

/// A data datagram's header (with the name, if any): the bytes before the payload.
#[derive(Clone, Copy, Debug)]
pub struct DataHeaderBytes {
    bytes: [u8; MAX_DATA_HEADER_LEN],
    len: u8,
}

impl Deref for DataHeaderBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
}

/// A data datagram's header alone: the datagram is this followed by the payload (a sender
/// can hand both to the kernel as two parts, without copying the payload next to it). With
/// a `name`, the [`NAMED`] flag is set and the name follows the fixed header; without one,
/// the flag is cleared. The same for `captured` and [`CAPTURED`] (after the name).
pub fn data_header(
    h: &DataHeader,
    name: Option<&SourceName>,
    captured: Option<&Captured>,
) -> DataHeaderBytes {
    let mut out = DataHeaderBytes {
        bytes: [0u8; MAX_DATA_HEADER_LEN],
        len: DATA_HEADER_LEN as u8,
    };
    let mut flags = match name {
        Some(_) => h.flags | NAMED,
        None => h.flags & !NAMED,
    };
    flags = match captured {
        Some(_) => flags | CAPTURED,
        None => flags & !CAPTURED,
    };
    flags &= !PARITY;
    write_fixed_header(&mut out.bytes, h, flags);
    let b = &mut out.bytes;
    if let Some(name) = name {
        let n = name.as_str().as_bytes();
        b[DATA_HEADER_LEN] = n.len() as u8;
        b[DATA_HEADER_LEN + 1..DATA_HEADER_LEN + 1 + n.len()].copy_from_slice(n);
        out.len = (DATA_HEADER_LEN + 1 + n.len()) as u8;
    }
    if let Some(c) = captured {
        let at = out.len as usize;
        b[at..at + 8].copy_from_slice(&c.capture_us.to_le_bytes());
        b[at + 8..at + 16].copy_from_slice(&c.offset_us.to_le_bytes());
        b[at + 16..at + 20].copy_from_slice(&c.offset_err_us.to_le_bytes());
        b[at + 20] = c.quality; // then 3 bytes of padding, zero
        out.len = (at + CAPTURED_LEN) as u8;
    }
    out
}

fn write_fixed_header(b: &mut [u8], h: &DataHeader, flags: u16) {
    b[..4].copy_from_slice(&MAGIC);
    b[4..6].copy_from_slice(&[VERSION, KIND_DATA]);
    b[6..8].copy_from_slice(&flags.to_le_bytes());
    b[8..12].copy_from_slice(&h.stream.to_le_bytes());
    b[12..16].copy_from_slice(&h.frame.to_le_bytes());
    b[16..18].copy_from_slice(&h.index.to_le_bytes());
    b[18..20].copy_from_slice(&h.count.to_le_bytes());
    b[20..24].copy_from_slice(&h.length.to_le_bytes());
    b[24..32].copy_from_slice(&h.ts_us.to_le_bytes());
}

/// A parity datagram's header (flagged [`PARITY`], never [`NAMED`] or [`CAPTURED`];
/// `h.index` is the shard number, the parity count in `h.flags`' high byte): the datagram
/// is this, the check ([`PARITY_STRUCT`]), then the shard.
pub fn parity_header(h: &DataHeader) -> DataHeaderBytes {
    let mut out = DataHeaderBytes {
        bytes: [0u8; MAX_DATA_HEADER_LEN],
        len: DATA_HEADER_LEN as u8,
    };
    write_fixed_header(&mut out.bytes, h, (h.flags | PARITY) & !(NAMED | CAPTURED));
    out
}

/// Append a parity datagram (header, check, shard) to `out`.
pub fn emit_parity(out: &mut Vec<u8>, h: &DataHeader, check: u64, shard: &[u8]) {
    out.extend_from_slice(&parity_header(h));
    out.extend_from_slice(&check.to_le_bytes());
    out.extend_from_slice(shard);
}

/// An ack datagram.
pub fn emit_ack(stream: u32, frame: u32, status: AckStatus, ts_us: u64) -> Vec<u8> {
    emit_timed_ack(stream, frame, status, ts_us, None)
}

/// An ack datagram, with the hub's wall clock (flagged [`HUB_TIME`]) when `hub_us` is given.
pub fn emit_timed_ack(
    stream: u32,
    frame: u32,
    status: AckStatus,
    ts_us: u64,
    hub_us: Option<u64>,
) -> Vec<u8> {
    emit_rebuilt_ack(stream, frame, status, ts_us, hub_us, 0)
}

/// [`emit_timed_ack`] saying that `rebuilt` data chunks were rebuilt from parity.
pub fn emit_rebuilt_ack(
    stream: u32,
    frame: u32,
    status: AckStatus,
    ts_us: u64,
    hub_us: Option<u64>,
    rebuilt: u16,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(TIMED_ACK_LEN);
    let flags = if hub_us.is_some() { HUB_TIME } else { 0 };
    emit_prefix(&mut out, KIND_ACK, flags, stream, frame);
    out.push(status as u8);
    out.extend_from_slice(&rebuilt.to_le_bytes());
    out.push(0);
    out.extend_from_slice(&ts_us.to_le_bytes());
    if let Some(hub_us) = hub_us {
        out.extend_from_slice(&hub_us.to_le_bytes());
    }
    out
}

/// A nack datagram listing at most [`MAX_NACK_RANGES`] missing ranges.
pub fn emit_nack(stream: u32, frame: u32, received: u16, missing: &[(u16, u16)]) -> Vec<u8> {
    let missing = &missing[..missing.len().min(MAX_NACK_RANGES)];
    let mut out = Vec::with_capacity(NACK_HEADER_LEN + 4 * missing.len());
    emit_prefix(&mut out, KIND_NACK, 0, stream, frame);
    out.extend_from_slice(&received.to_le_bytes());
    out.extend_from_slice(&(missing.len() as u16).to_le_bytes());
    for (start, len) in missing {
        out.extend_from_slice(&start.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_header_literal_bytes() {
        // struct.pack('<4sBBHIIHHIQ', b'UHFR', 1, 0, 0, 0x01020304, 7, 2, 3, 3000, 5) + payload
        let h = DataHeader {
            flags: 0,
            stream: 0x0102_0304,
            frame: 7,
            index: 2,
            count: 3,
            length: 3000,
            ts_us: 5,
        };
        let mut b = Vec::new();
        emit_data(&mut b, &h, &[0xAA; 1000]);
        assert_eq!(
            b[..DATA_HEADER_LEN],
            [
                b'U', b'H', b'F', b'R', 1, 0, 0, 0, 4, 3, 2, 1, 7, 0, 0, 0, 2, 0, 3, 0, 0xB8, 0x0B,
                0, 0, 5, 0, 0, 0, 0, 0, 0, 0
            ]
        );
        assert_eq!(
            parse(&b),
            Ok(Packet::Data {
                header: h,
                name: None,
                captured: None,
                payload: &[0xAA; 1000][..]
            })
        );
        // the same with POLL: struct.pack(..., b'UHFR', 1, 0, 1, ...)
        let polled = DataHeader { flags: POLL, ..h };
        let mut b = Vec::new();
        emit_data(&mut b, &polled, &[0xAA; 1000]);
        assert_eq!(b[4..8], [1, 0, 1, 0]);
        assert_eq!(
            parse(&b),
            Ok(Packet::Data {
                header: polled,
                name: None,
                captured: None,
                payload: &[0xAA; 1000][..]
            })
        );
    }

    #[test]
    fn named_data_literal_bytes() {
        // struct.pack('<4sBBHIIHHIQB', b'UHFR', 1, 0, 2, 1, 0, 0, 1, 3, 0, 3) + b'cam' + payload
        let h = DataHeader {
            flags: 0,
            stream: 1,
            frame: 0,
            index: 0,
            count: 1,
            length: 3,
            ts_us: 0,
        };
        let name = SourceName::parse("cam").unwrap();
        let mut b = Vec::new();
        emit_named_data(&mut b, &h, Some(&name), &[7, 8, 9]);
        assert_eq!(b[6..8], [2, 0], "NAMED");
        assert_eq!(b[DATA_HEADER_LEN..], [3, b'c', b'a', b'm', 7, 8, 9]);
        let named = DataHeader { flags: NAMED, ..h };
        assert_eq!(
            parse(&b),
            Ok(Packet::Data {
                header: named,
                name: Some("cam"),
                captured: None,
                payload: &[7, 8, 9][..]
            })
        );
        // cut short, too long for what follows, or outside the alphabet
        assert_eq!(parse(&b[..DATA_HEADER_LEN]), Err(ParseError::BadName));
        let mut long = b.clone();
        long[DATA_HEADER_LEN] = 200;
        assert_eq!(parse(&long), Err(ParseError::BadName));
        let mut bad = b.clone();
        bad[DATA_HEADER_LEN + 1] = b'/';
        assert_eq!(parse(&bad), Err(ParseError::BadName));
        // the flag without a name is cleared on emit
        let mut b = Vec::new();
        emit_data(&mut b, &named, &[7, 8, 9]);
        assert_eq!(b[6..8], [0, 0]);
    }

    #[test]
    fn ack_and_nack_literal_bytes() {
        let a = emit_ack(9, 8, AckStatus::Delivered, 0x1122);
        assert_eq!(
            a,
            [
                b'U', b'H', b'F', b'R', 1, 1, 0, 0, 9, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0x22, 0x11,
                0, 0, 0, 0, 0, 0
            ]
        );
        assert_eq!(
            parse(&a),
            Ok(Packet::Ack {
                stream: 9,
                frame: 8,
                status: AckStatus::Delivered,
                ts_us: 0x1122,
                hub_us: None,
                rebuilt: 0
            })
        );
        let n = emit_nack(9, 8, 40, &[(3, 2), (10, 1)]);
        assert_eq!(
            n,
            [
                b'U', b'H', b'F', b'R', 1, 2, 0, 0, 9, 0, 0, 0, 8, 0, 0, 0, 40, 0, 2, 0, 3, 0, 2,
                0, 10, 0, 1, 0
            ]
        );
        assert_eq!(
            parse(&n),
            Ok(Packet::Nack {
                stream: 9,
                frame: 8,
                received: 40,
                missing: vec![(3, 2), (10, 1)]
            })
        );
    }

    #[test]
    fn captured_data_literal_bytes() {
        // struct.pack('<4sBBHIIHHIQB', b'UHFR', 1, 0, 2|4|8, 1, 0, 0, 1, 3, 7, 3) + b'cam'
        //   + struct.pack('<QqIB3x', 0x0102030405060708, -5, 300, 90) + payload
        let h = DataHeader {
            flags: CLOCK,
            stream: 1,
            frame: 0,
            index: 0,
            count: 1,
            length: 3,
            ts_us: 7,
        };
        let c = Captured {
            capture_us: 0x0102_0304_0506_0708,
            offset_us: -5,
            offset_err_us: 300,
            quality: 90,
        };
        let name = SourceName::parse("cam").unwrap();
        let header = data_header(&h, Some(&name), Some(&c));
        let mut b = header.to_vec();
        b.extend_from_slice(&[7, 8, 9]);
        assert_eq!(b[6..8], [14, 0], "NAMED | CAPTURED | CLOCK");
        assert_eq!(
            b[DATA_HEADER_LEN..],
            [
                3, b'c', b'a', b'm', // the name
                8, 7, 6, 5, 4, 3, 2, 1, // capture_us
                0xFB, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, // offset_us = -5
                0x2C, 1, 0, 0, // offset_err_us = 300
                90, 0, 0, 0, // quality, pad
                7, 8, 9 // payload
            ]
        );
        let flagged = DataHeader {
            flags: NAMED | CAPTURED | CLOCK,
            ..h
        };
        assert_eq!(
            parse(&b),
            Ok(Packet::Data {
                header: flagged,
                name: Some("cam"),
                captured: Some(c),
                payload: &[7, 8, 9][..]
            })
        );
        assert_eq!(c.offset(), Some((-5, 300)));
        // without a name, and without an estimate (offset_us = i64::MIN)
        let none = Captured {
            offset_us: NO_OFFSET,
            offset_err_us: 0,
            ..c
        };
        let mut b = data_header(&h, None, Some(&none)).to_vec();
        b.extend_from_slice(&[7, 8, 9]);
        assert_eq!(b[6..8], [12, 0], "CAPTURED | CLOCK");
        assert_eq!(
            b[DATA_HEADER_LEN + 8..DATA_HEADER_LEN + 16],
            [0, 0, 0, 0, 0, 0, 0, 0x80]
        );
        match parse(&b) {
            Ok(Packet::Data {
                captured: Some(got),
                name: None,
                payload,
                ..
            }) => {
                assert_eq!(got, none);
                assert_eq!(got.offset(), None);
                assert_eq!(payload, [7, 8, 9]);
            }
            other => panic!("{other:?}"),
        }
        // the flag without the extension's bytes
        assert_eq!(
            parse(&b[..DATA_HEADER_LEN + 10]),
            Err(ParseError::BadExtension)
        );
        // the flags without a name or an extension are cleared on emit (CLOCK stays)
        assert_eq!(data_header(&flagged, None, None)[6..8], [8, 0]);
    }

    #[test]
    fn timed_ack_literal_bytes_and_old_parsers() {
        // struct.pack('<4sBBHIIB3xQQ', b'UHFR', 1, 1, 1, 9, 8, 0, 0x1122, 0x0A0B0C0D)
        let a = emit_timed_ack(9, 8, AckStatus::Delivered, 0x1122, Some(0x0A0B_0C0D));
        assert_eq!(
            a,
            [
                b'U', b'H', b'F', b'R', 1, 1, 1, 0, 9, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0x22, 0x11,
                0, 0, 0, 0, 0, 0, 0x0D, 0x0C, 0x0B, 0x0A, 0, 0, 0, 0
            ]
        );
        assert_eq!(a.len(), TIMED_ACK_LEN);
        assert_eq!(
            parse(&a),
            Ok(Packet::Ack {
                stream: 9,
                frame: 8,
                status: AckStatus::Delivered,
                ts_us: 0x1122,
                hub_us: Some(0x0A0B_0C0D),
                rebuilt: 0
            })
        );
        // An old parser (Rust: len >= ACK_LEN, status at 16, ts_us at 20, flags ignored;
        // Python: ACK.unpack_from, which reads the first 28 bytes) sees the plain ack.
        let plain = emit_ack(9, 8, AckStatus::Delivered, 0x1122);
        assert_eq!(a[..6], plain[..6]);
        assert_eq!(a[8..ACK_LEN], plain[8..]);
        // the flag without the time
        assert_eq!(parse(&a[..ACK_LEN]), Err(ParseError::BadExtension));
        assert_eq!(
            emit_timed_ack(9, 8, AckStatus::Stale, 1, None),
            emit_ack(9, 8, AckStatus::Stale, 1)
        );
    }

    #[test]
    fn chunk_sizes() {
        assert_eq!(chunk_count(3000, 1400), 3);
        assert_eq!(chunk_len(3000, 3), 1000);
        assert_eq!(payload_len(3000, 3, 2), 1000);
        assert_eq!(chunk_count(2801, 1400), 3);
        assert_eq!(chunk_len(2801, 3), 934);
        assert_eq!(payload_len(2801, 3, 2), 2801 - 2 * 934);
        assert_eq!(chunk_count(0, 1400), 1);
    }

    #[test]
    fn rejects_inconsistent_chunks_and_foreign_bytes() {
        let h = DataHeader {
            flags: 0,
            stream: 1,
            frame: 1,
            index: 0,
            count: 3,
            length: 3000,
            ts_us: 0,
        };
        let mut b = Vec::new();
        emit_data(&mut b, &h, &[0; 999]); // one byte short
        assert_eq!(parse(&b), Err(ParseError::Inconsistent));
        let mut b = Vec::new();
        emit_data(&mut b, &DataHeader { index: 3, ..h }, &[0; 1000]);
        assert_eq!(parse(&b), Err(ParseError::Inconsistent));
        let mut b = Vec::new();
        emit_data(&mut b, &DataHeader { count: 0, ..h }, &[]);
        assert_eq!(parse(&b), Err(ParseError::Inconsistent));
        // more chunks than the length needs (the last would be empty)
        let mut b = Vec::new();
        emit_data(&mut b, &DataHeader { length: 2, ..h }, &[0]);
        assert_eq!(parse(&b), Err(ParseError::Inconsistent));
        assert_eq!(
            parse(&[0xFF, 0xD8, 0xFF, 0xD9]),
            Err(ParseError::TooShort(4))
        );
        assert!(!is_framed(&[0xFF; 40]));
        let mut bad_version = emit_ack(1, 1, AckStatus::Stale, 0);
        bad_version[4] = 9;
        assert_eq!(parse(&bad_version), Err(ParseError::UnknownVersion(9)));
    }

    #[test]
    fn parity_literal_bytes() {
        // struct.pack('<4sBBHIIHHIQ', b'UHFR', 1, 0, 16 | (3 << 8), 1, 7, 2, 3, 2999, 5)
        //   + struct.pack('<Q', 0x1122334455667788) + shard (1000 bytes: 2999 / 3 = 999.67
        //   rounds up to 1000, already even)
        let h = DataHeader {
            flags: 3 << 8,
            stream: 1,
            frame: 7,
            index: 2,
            count: 3,
            length: 2999,
            ts_us: 5,
        };
        assert_eq!(shard_len(2999, 3), 1000);
        let mut b = Vec::new();
        emit_parity(&mut b, &h, 0x1122_3344_5566_7788, &[0xCC; 1000]);
        assert_eq!(
            b[..DATA_HEADER_LEN + PARITY_CHECK_LEN],
            [
                b'U', b'H', b'F', b'R', 1, 0, 16, 3, 1, 0, 0, 0, 7, 0, 0, 0, 2, 0, 3, 0, 0xB7,
                0x0B, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11
            ]
        );
        assert_eq!(b.len(), DATA_HEADER_LEN + PARITY_CHECK_LEN + 1000);
        let flagged = DataHeader {
            flags: PARITY | 3 << 8,
            ..h
        };
        assert_eq!(flagged.parity_count(), 3);
        assert_eq!(
            parse(&b),
            Ok(Packet::Parity {
                header: flagged,
                check: 0x1122_3344_5566_7788,
                shard: &[0xCC; 1000][..]
            })
        );
        // an odd chunk size rounds up: 2801 bytes in 3 chunks of 934, shards of 934; in 2
        // chunks of 1401, shards of 1402
        assert_eq!(shard_len(2801, 3), 934);
        assert_eq!(shard_len(2801, 2), 1402);
        // a data chunk of the same frame carries m in the high byte of flags, as before else
        let data = DataHeader { index: 0, ..h };
        let mut d = data_header(&data, None, None).to_vec();
        d.extend_from_slice(&[0xAA; 1000]);
        assert_eq!(d[6..8], [0, 3]);
        match parse(&d) {
            Ok(Packet::Data { header, .. }) => assert_eq!(header.parity_count(), 3),
            other => panic!("{other:?}"),
        }
        // the PARITY flag never leaks onto a data chunk's header
        assert_eq!(data_header(&flagged, None, None)[6..8], [0, 3]);
        // the codec takes every shape the wire allows
        assert!(reed_solomon_simd::ReedSolomonEncoder::supports(1, 255));
        assert!(reed_solomon_simd::ReedSolomonEncoder::supports(
            MAX_PARITY_DATA as usize,
            255
        ));
    }

    #[test]
    fn parity_rejections() {
        let h = DataHeader {
            flags: 2 << 8,
            stream: 1,
            frame: 7,
            index: 1,
            count: 3,
            length: 3000,
            ts_us: 5,
        };
        let shard = [0u8; 1000];
        let emit = |h: &DataHeader, shard: &[u8]| {
            let mut b = Vec::new();
            emit_parity(&mut b, h, 9, shard);
            b
        };
        assert!(matches!(
            parse(&emit(&h, &shard)),
            Ok(Packet::Parity { .. })
        ));
        // shard number not below m
        let b = emit(&DataHeader { index: 2, ..h }, &shard);
        assert_eq!(parse(&b), Err(ParseError::BadParity));
        // parity without a parity count
        let b = emit(&h.with_parity_count(0), &shard);
        assert_eq!(b[6..8], [PARITY as u8, 0]);
        assert_eq!(parse(&b), Err(ParseError::BadParity));
        // parity flagged NAMED or CAPTURED
        for extra in [NAMED, CAPTURED] {
            let mut b = emit(&h, &shard);
            b[6] |= extra as u8;
            assert_eq!(parse(&b), Err(ParseError::BadParity));
        }
        // a shard of the wrong size, or cut short before the check
        assert_eq!(
            parse(&emit(&h, &shard[..999])),
            Err(ParseError::Inconsistent)
        );
        assert_eq!(
            parse(&emit(&h, &[0u8; 1002])),
            Err(ParseError::Inconsistent)
        );
        assert_eq!(
            parse(&emit(&h, &[])[..DATA_HEADER_LEN + 4]),
            Err(ParseError::Inconsistent)
        );
        // an impossible frame (count 0, or more chunks than bytes)
        assert_eq!(
            parse(&emit(&DataHeader { count: 0, ..h }, &[])),
            Err(ParseError::Inconsistent)
        );
        assert_eq!(
            parse(&emit(&DataHeader { length: 2, ..h }, &[0; 2])),
            Err(ParseError::Inconsistent)
        );
        // a parity count on a frame of more data chunks than the codec takes (parity or data)
        let big = DataHeader {
            index: 0,
            count: MAX_PARITY_DATA + 1,
            length: u32::from(MAX_PARITY_DATA) + 1,
            ..h
        };
        assert_eq!(parse(&emit(&big, &[0; 2])), Err(ParseError::BadParity));
        let mut d = Vec::new();
        emit_data(&mut d, &big, &[0; 1]);
        assert_eq!(parse(&d), Err(ParseError::BadParity));
        let mut d = Vec::new();
        emit_data(&mut d, &big.with_parity_count(0), &[0; 1]);
        assert!(
            matches!(parse(&d), Ok(Packet::Data { .. })),
            "no parity: as before"
        );
    }

    #[test]
    fn rebuilt_ack_literal_bytes() {
        // struct.pack('<4sBBHIIBHxQ', b'UHFR', 1, 1, 0, 9, 8, 0, 0x0102, 0x1122)
        let a = emit_rebuilt_ack(9, 8, AckStatus::Delivered, 0x1122, None, 0x0102);
        assert_eq!(
            a,
            [
                b'U', b'H', b'F', b'R', 1, 1, 0, 0, 9, 0, 0, 0, 8, 0, 0, 0, 0, 2, 1, 0, 0x22, 0x11,
                0, 0, 0, 0, 0, 0
            ]
        );
        assert!(matches!(
            parse(&a),
            Ok(Packet::Ack {
                status: AckStatus::Delivered,
                ts_us: 0x1122,
                rebuilt: 0x0102,
                ..
            })
        ));
        assert!(matches!(
            parse(&emit_ack(9, 8, AckStatus::Delivered, 1)),
            Ok(Packet::Ack { rebuilt: 0, .. })
        ));
    }

    #[test]
    fn frame_check_is_blake2s_truncated() {
        // BLAKE2s-256("abc") = 508c5e8c327c14e2e1a72ba34eeb452f37458b209ed63a294d999b4c86675982
        assert_eq!(frame_check(b"abc"), 0xe2147c328c5e8c50);
    }
}
