//! The secure datagram formats (handshake initiation and response, transport), in the style
//! of [`crate::wire`]: named offsets, `parse` and `emit`, tests against literal bytes. What
//! is inside the Noise messages is snow's; this module only frames them.
//!
//! All integers little-endian (as [`crate::wire::framed`]). Every datagram starts with
//! `magic 3s b"UHS", kind B`; the magic differs from the framed one (`UHFR`) in its third
//! byte, and the kind doubles as the version (a new version takes new kinds), so the prefix
//! costs 4 bytes and the transport overhead stays at 32.
//!
//! | kind | Python `struct` | total | what |
//! |---|---|---|---|
//! | 1 init (device → hub) | [`INIT_STRUCT`] | [`INIT_LEN`] = 116 | `sender I`, Noise IK message 1 (108 bytes: ephemeral key, encrypted static key, encrypted 12-byte TAI64N timestamp) of `Noise_IK_25519_ChaChaPoly_BLAKE2s` |
//! | 4 init, AES-GCM | as kind 1 | 116 | the same, of `Noise_IK_25519_AESGCM_BLAKE2s`: the session's AEAD is AES-256-GCM ([`Cipher`]) |
//! | 2 response (hub → device) | [`RESPONSE_STRUCT`] | [`RESPONSE_LEN`] = 64 | `sender I, receiver I`, Noise IK message 2 (52 bytes: ephemeral key, encrypted payload = `sender` again, so the clear index is authenticated) |
//! | 3 transport (both ways) | [`TRANSPORT_STRUCT`] + ciphertext | 16 + plaintext + 16 | `receiver I, counter Q`, then the session's AEAD (ChaCha20-Poly1305 or AES-256-GCM, as its initiation's kind said) of the plaintext under nonce `counter` |
//!
//! `sender`/`receiver` are session indices each side picks at random for itself (WireGuard's
//! indices): a datagram names the receiver's index, so the receiver finds the session
//! without trying keys. Init and response have fixed lengths (anything else is malformed):
//! the response is smaller than the init it answers, so the hub never amplifies.

use super::cipher::Cipher;
use crate::wire::{u32_at, u64_at};

/// First bytes of every secure datagram.
pub const MAGIC: [u8; 3] = *b"UHS";
/// Bytes before a kind's own fields.
pub const PREFIX_LEN: usize = 4;

/// The Noise IK message 1 with [`TIMESTAMP_LEN`] bytes of payload: 32 + (32 + 16) + (12 + 16).
pub const INIT_NOISE_LEN: usize = 108;
/// The Noise IK message 2 with the responder's index as its payload: 32 + (4 + 16).
pub const RESPONSE_NOISE_LEN: usize = 52;
/// The initiation's payload: a TAI64N timestamp.
pub const TIMESTAMP_LEN: usize = 12;
/// The AEAD tag.
pub const TAG_LEN: usize = 16;

pub const INIT_LEN: usize = PREFIX_LEN + 4 + INIT_NOISE_LEN;
pub const RESPONSE_LEN: usize = PREFIX_LEN + 8 + RESPONSE_NOISE_LEN;
pub const TRANSPORT_HEADER_LEN: usize = PREFIX_LEN + 12;
/// Bytes a transport datagram adds to its plaintext.
pub const TRANSPORT_OVERHEAD: usize = TRANSPORT_HEADER_LEN + TAG_LEN;
/// The largest plaintext of one transport datagram (Noise messages are at most 65535 bytes).
pub const MAX_PLAINTEXT: usize = 65535 - TAG_LEN;

/// Python `struct` formats.
pub const INIT_STRUCT: &str = "<3sBI108s";
pub const RESPONSE_STRUCT: &str = "<3sBII52s";
pub const TRANSPORT_STRUCT: &str = "<3sBIQ";

const KIND_INIT: u8 = 1;
const KIND_RESPONSE: u8 = 2;
const KIND_TRANSPORT: u8 = 3;
const KIND_INIT_AES_GCM: u8 = 4;

/// The kind of an initiation for `cipher`.
pub fn init_kind(cipher: Cipher) -> u8 {
    match cipher {
        Cipher::ChaChaPoly => KIND_INIT,
        Cipher::AesGcm => KIND_INIT_AES_GCM,
    }
}

// Offsets.
const KIND: usize = 3;
const INIT_SENDER: usize = 4;
const INIT_NOISE: usize = 8;
const RESP_SENDER: usize = 4;
const RESP_RECEIVER: usize = 8;
const RESP_NOISE: usize = 12;
const TR_RECEIVER: usize = 4;
const TR_COUNTER: usize = 8;
const TR_CIPHERTEXT: usize = 16;

/// A parsed secure datagram, borrowing its Noise bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Packet<'a> {
    Init {
        sender: u32,
        cipher: Cipher,
        noise: &'a [u8],
    },
    Response {
        sender: u32,
        receiver: u32,
        noise: &'a [u8],
    },
    Transport {
        receiver: u32,
        counter: u64,
        ciphertext: &'a [u8],
    },
}

/// Why bytes are not a secure datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("{0} bytes is too short for a secure datagram")]
    TooShort(usize),
    #[error("not a secure datagram (magic)")]
    BadMagic,
    #[error("unknown secure datagram kind {0}")]
    UnknownKind(u8),
    #[error("a secure datagram of kind {kind} cannot be {len} bytes long")]
    BadLength { kind: u8, len: usize },
}

/// Does this datagram start like a secure one? (For dispatch beside the other formats.)
pub fn is_secure(datagram: &[u8]) -> bool {
    datagram.len() >= PREFIX_LEN && datagram[..3] == MAGIC
}

/// Is this datagram (one that [`is_secure`]) an initiation, of either cipher? (For rate
/// limits before any cryptography.)
pub fn is_init(datagram: &[u8]) -> bool {
    is_secure(datagram) && matches!(datagram[KIND], KIND_INIT | KIND_INIT_AES_GCM)
}

/// Parse one datagram.
pub fn parse(b: &[u8]) -> Result<Packet<'_>, ParseError> {
    if b.len() < PREFIX_LEN {
        return Err(ParseError::TooShort(b.len()));
    }
    if b[..3] != MAGIC {
        return Err(ParseError::BadMagic);
    }
    let kind = b[KIND];
    let bad_len = ParseError::BadLength { kind, len: b.len() };
    match kind {
        KIND_INIT | KIND_INIT_AES_GCM => {
            if b.len() != INIT_LEN {
                return Err(bad_len);
            }
            Ok(Packet::Init {
                sender: u32_at(b, INIT_SENDER),
                cipher: if kind == KIND_INIT {
                    Cipher::ChaChaPoly
                } else {
                    Cipher::AesGcm
                },
                noise: &b[INIT_NOISE..],
            })
        }
        KIND_RESPONSE => {
            if b.len() != RESPONSE_LEN {
                return Err(bad_len);
            }
            Ok(Packet::Response {
                sender: u32_at(b, RESP_SENDER),
                receiver: u32_at(b, RESP_RECEIVER),
                noise: &b[RESP_NOISE..],
            })
        }
        KIND_TRANSPORT => {
            if b.len() < TRANSPORT_OVERHEAD
                || b.len() > TRANSPORT_HEADER_LEN + MAX_PLAINTEXT + TAG_LEN
            {
                return Err(bad_len);
            }
            Ok(Packet::Transport {
                receiver: u32_at(b, TR_RECEIVER),
                counter: u64_at(b, TR_COUNTER),
                ciphertext: &b[TR_CIPHERTEXT..],
            })
        }
        k => Err(ParseError::UnknownKind(k)),
    }
}

/// The 8 bytes before an initiation's Noise message (also bound into the handshake as the
/// prologue's end).
pub fn init_header(sender: u32, cipher: Cipher) -> [u8; INIT_NOISE] {
    let mut h = [0u8; INIT_NOISE];
    h[..3].copy_from_slice(&MAGIC);
    h[KIND] = init_kind(cipher);
    h[INIT_SENDER..INIT_NOISE].copy_from_slice(&sender.to_le_bytes());
    h
}

/// An initiation datagram. `noise` must be [`INIT_NOISE_LEN`] bytes.
pub fn emit_init(sender: u32, cipher: Cipher, noise: &[u8]) -> Vec<u8> {
    assert_eq!(noise.len(), INIT_NOISE_LEN);
    let mut out = Vec::with_capacity(INIT_LEN);
    out.extend_from_slice(&init_header(sender, cipher));
    out.extend_from_slice(noise);
    out
}

/// A response datagram. `noise` must be [`RESPONSE_NOISE_LEN`] bytes.
pub fn emit_response(sender: u32, receiver: u32, noise: &[u8]) -> Vec<u8> {
    assert_eq!(noise.len(), RESPONSE_NOISE_LEN);
    let mut out = Vec::with_capacity(RESPONSE_LEN);
    out.extend_from_slice(&MAGIC);
    out.push(KIND_RESPONSE);
    out.extend_from_slice(&sender.to_le_bytes());
    out.extend_from_slice(&receiver.to_le_bytes());
    out.extend_from_slice(noise);
    out
}

/// The header of a transport datagram; the ciphertext follows it.
pub fn transport_header(receiver: u32, counter: u64) -> [u8; TRANSPORT_HEADER_LEN] {
    let mut h = [0u8; TRANSPORT_HEADER_LEN];
    h[..3].copy_from_slice(&MAGIC);
    h[KIND] = KIND_TRANSPORT;
    h[TR_RECEIVER..TR_COUNTER].copy_from_slice(&receiver.to_le_bytes());
    h[TR_COUNTER..TR_CIPHERTEXT].copy_from_slice(&counter.to_le_bytes());
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(INIT_LEN, 116);
        assert_eq!(RESPONSE_LEN, 64);
        assert_eq!(TRANSPORT_OVERHEAD, 32);
        const { assert!(RESPONSE_LEN < INIT_LEN) };
    }

    #[test]
    fn init_literal_bytes() {
        let noise = [0xAB; INIT_NOISE_LEN];
        let b = emit_init(0x0403_0201, Cipher::ChaChaPoly, &noise);
        assert_eq!(&b[..8], b"UHS\x01\x01\x02\x03\x04");
        assert_eq!(b.len(), INIT_LEN);
        assert_eq!(
            parse(&b).unwrap(),
            Packet::Init {
                sender: 0x0403_0201,
                cipher: Cipher::ChaChaPoly,
                noise: &noise
            }
        );
        let aes = emit_init(0x0403_0201, Cipher::AesGcm, &noise);
        assert_eq!(&aes[..8], b"UHS\x04\x01\x02\x03\x04");
        assert_eq!(
            parse(&aes).unwrap(),
            Packet::Init {
                sender: 0x0403_0201,
                cipher: Cipher::AesGcm,
                noise: &noise
            }
        );
        assert_eq!(
            parse(&b[..INIT_LEN - 1]),
            Err(ParseError::BadLength {
                kind: 1,
                len: INIT_LEN - 1
            })
        );
        let mut long = b.clone();
        long.push(0);
        assert!(matches!(parse(&long), Err(ParseError::BadLength { .. })));
    }

    #[test]
    fn response_literal_bytes() {
        let noise = [7u8; RESPONSE_NOISE_LEN];
        let b = emit_response(1, 0xFFFF_FFFE, &noise);
        assert_eq!(&b[..12], b"UHS\x02\x01\x00\x00\x00\xFE\xFF\xFF\xFF");
        assert_eq!(
            parse(&b).unwrap(),
            Packet::Response {
                sender: 1,
                receiver: 0xFFFF_FFFE,
                noise: &noise
            }
        );
    }

    #[test]
    fn transport_literal_bytes() {
        let mut b = transport_header(0x11223344, 0x0102_0304_0506_0708).to_vec();
        assert_eq!(
            b,
            b"UHS\x03\x44\x33\x22\x11\x08\x07\x06\x05\x04\x03\x02\x01".to_vec()
        );
        // The shortest: an empty plaintext's tag.
        assert!(matches!(
            parse(&b),
            Err(ParseError::BadLength { kind: 3, len: 16 })
        ));
        b.extend_from_slice(&[9; TAG_LEN]);
        assert_eq!(
            parse(&b).unwrap(),
            Packet::Transport {
                receiver: 0x11223344,
                counter: 0x0102_0304_0506_0708,
                ciphertext: &[9; TAG_LEN]
            }
        );
    }

    #[test]
    fn not_secure() {
        assert_eq!(parse(b""), Err(ParseError::TooShort(0)));
        assert_eq!(parse(b"UHS"), Err(ParseError::TooShort(3)));
        assert_eq!(parse(b"UHFR\x01\x00"), Err(ParseError::BadMagic));
        assert_eq!(parse(b"UHS\x00"), Err(ParseError::UnknownKind(0)));
        assert_eq!(parse(b"UHS\x05rest"), Err(ParseError::UnknownKind(5)));
        assert!(matches!(
            parse(b"UHS\x04rest"),
            Err(ParseError::BadLength { kind: 4, len: 8 })
        ));
        assert!(is_secure(b"UHS\x03"));
        assert!(is_init(b"UHS\x01") && is_init(b"UHS\x04"));
        assert!(!is_init(b"UHS\x02") && !is_init(b"UHS\x03") && !is_init(b"UHFR\x01"));
        assert!(!is_secure(b"UHFR"));
        assert!(!is_secure(b"UHS"));
    }
}
