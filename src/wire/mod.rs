//! Wire formats: every byte layout that crosses the network, one small module each.
//!
//! Each module has `parse` and `emit` functions and tests against literal bytes, in the
//! style of smoltcp's `wire`. Nothing here owns a socket or keeps state; the state machines
//! that use these formats live in [`crate::proto`].
//!
//! - [`seed_udp`]: the UDP image formats of seed 002 (whole JPEG in one datagram; or a
//!   `struct.pack('l', n)` length header followed by 1024-byte data datagrams) and its ack.
//! - [`seed_msg`]: the UDP JSON message format of seed 002 and its replies.
//! - [`seed_tcp`]: the TCP stream of seed 000 (16-byte ASCII length, then the JPEG).
//! - [`framed`]: udphub's own UDP image format: frame id and chunk index in every datagram,
//!   acks and nacks (missing chunk ranges), so frames survive loss and reordering.
//! - [`framed_msg`]: udphub's own message format: name, run id and sequence number in
//!   every message, and replies that say which message they answer (exactly-once logging).
//! - [`name`]: a source's name (`--name`), the one alphabet safe in every place it shows.
//!
//! The JPEG payload check (SOI/EOI and the entropy walk) is not a wire format: it is
//! [`crate::jpegcheck`].

pub mod framed;
pub mod framed_msg;
pub mod name;
pub mod seed_msg;
pub mod seed_tcp;
pub mod seed_udp;

/// The largest payload of one UDP datagram over IPv4 (65535 - 8 UDP - 20 IP header bytes).
pub const MAX_UDP_PAYLOAD: usize = 65507;

/// The little-endian integer at `at` (the caller has checked the length). Every format here
/// (and [`crate::secure::wire`]) reads its fields with these.
pub(crate) fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

pub(crate) fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

pub(crate) fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}
