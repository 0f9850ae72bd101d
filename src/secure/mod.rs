//! Per-device keys and encrypted, authenticated, replay-proof datagrams (issue 12), with no
//! socket and no clock of its own: the hub's receiver and the senders feed it bytes and the
//! time, and it says what to send and what was delivered.
//!
//! # Design
//! The construction is WireGuard's, and none of the cryptography is ours: [`snow`] (a
//! well-kept implementation of the Noise framework; with its `ring-accelerated` feature the
//! AEAD and hashes come from `ring`, X25519 from its pure-Rust resolver) does the key
//! exchange, the AEAD and the hashing.
//!
//! - **Keys.** Every device and the hub have an X25519 key pair ([`keys`]); a key is written
//!   as standard base64 of its 32 bytes (44 characters), as WireGuard writes its keys. The hub
//!   has an authorized-keys file ([`authorized`]): one `<public key> <name>` per device, and
//!   that file, not the device, gives a device its name.
//! - **Handshake.** `Noise_IK_25519_AESGCM_BLAKE2s` or `Noise_IK_25519_ChaChaPoly_BLAKE2s`
//!   (the device's choice, [`cipher`]), one round trip: the device (the
//!   initiator) knows the hub's static public key; its first message carries its own static
//!   key, encrypted, and a 12-byte TAI64N timestamp. The hub answers only an initiation from
//!   an authorized key whose timestamp is newer than the newest it saw from that key (so a
//!   recorded initiation replayed later is refused), and its answer is smaller than the
//!   initiation (no amplification). Formats: [`wire`]; state machines: [`session`].
//! - **Transport.** Every datagram after the handshake is AES-256-GCM or ChaCha20-Poly1305 under the
//!   session's keys, with an explicit 64-bit counter in the datagram used as the nonce
//!   (`snow::StatelessTransportState`): datagrams may be lost or reordered and each still
//!   decrypts on its own. Overhead: 32 bytes (16 header + 16 tag).
//! - **Replay.** A sliding window of [`replay::WINDOW`] counters per session and direction
//!   (RFC 6479, [`replay`]), updated only after a datagram authenticated: a replayed or
//!   duplicated datagram is refused because its counter was seen, one older than the window is
//!   refused because it cannot be told from a replay, and a reordered one within the window is
//!   delivered once. A forged counter cannot move the window: it does not authenticate.
//! - **Silence.** Nothing that fails (bad format, unknown key, replay, tampering, unknown
//!   session) gets an answer; the caller counts the [`session::Reason`].
//! - **Restarts.** A hub that restarted has forgotten the sessions and silently drops their
//!   datagrams; a device that hears nothing authenticated back for
//!   [`session::REHANDSHAKE_AFTER`] while it keeps sending handshakes again by itself.
//!
//! # What is protected, what is not
//! - Protected: the content of every datagram after the handshake (confidentiality and
//!   integrity), who sent it (only the holder of an authorized private key can open a
//!   session, and the file's name for that key is the one used), and delivery at most once
//!   per session (replay window). A device's static key is encrypted in the handshake; the
//!   session keys are ephemeral and replaced every two minutes
//!   ([`session::REKEY_AFTER_TIME`]), so a key stolen later does not open recorded traffic.
//! - Not protected: traffic analysis (who talks to the hub, when, how much: datagram sizes
//!   and timing are visible; the hub's address and the session indices are in clear), denial
//!   of service by dropping or flooding datagrams, and a stolen device key (its holder *is*
//!   that device until the key is removed from the authorized-keys file; removal ends its
//!   sessions at once). A stolen hub key lets its holder impersonate the hub to devices and
//!   read new sessions.
//! - Cost bound: every initiation that parses costs the hub up to four X25519 operations
//!   before it knows the key is unknown or the handshake bad (two to read it, two more to
//!   answer); [`session::Responder::handshakes`] counts them. WireGuard's cookie MACs are not
//!   done here: a per-source rate limit on initiations is the caller's.
//! - Clocks: the initiation timestamp comes from the device's wall clock. A device whose
//!   clock goes back (a Pi without a real-time clock, booted before NTP) is refused until its
//!   clock passes the newest initiation the hub saw from it, or the hub restarts (the hub keeps
//!   those timestamps in memory only). WireGuard has the same rule.
//!
//! # Use
//! ```
//! use std::sync::Arc;
//! use std::time::Instant;
//! use udphub::secure::authorized::AuthorizedKeys;
//! use udphub::secure::keys::generate;
//! use udphub::secure::session::{Initiator, Outcome, Responder};
//!
//! let (hub_key, hub_public) = generate().unwrap();
//! let (device_key, device_public) = generate().unwrap();
//! let keys = AuthorizedKeys::parse(&format!("{device_public} cam-1\n")).unwrap();
//! let mut hub = Responder::new(hub_key, Arc::new(keys));
//! let now = Instant::now();
//! let mut device = Initiator::new(device_key, hub_public, now);
//! let from = "127.0.0.1:5000".parse().unwrap();
//!
//! // Device: send what poll_transmit gives (the initiation), and again at poll_timeout.
//! let init = device.poll_transmit(now).unwrap();
//! // Hub: answer a Reply to its sender, send nothing for a Refused.
//! let Outcome::Reply(response) = hub.handle_datagram(from, &init, now) else { panic!() };
//! device.handle_datagram(&response, now).unwrap();
//!
//! // Device: seal each plain datagram (then poll_transmit: a rehandshake may be due).
//! let datagram = device.seal(b"a plain framed datagram", now).unwrap();
//! let Outcome::Opened { session, name, plaintext } = hub.handle_datagram(from, &datagram, now)
//! else { panic!() };
//! assert_eq!((name.as_str(), &plaintext[..]), ("cam-1", &b"a plain framed datagram"[..]));
//! // Hub: replies (acks, nacks) go back sealed in the same session.
//! let ack = hub.seal(session, b"ack").unwrap();
//! assert_eq!(device.handle_datagram(&ack, now).unwrap().unwrap(), b"ack");
//! ```

pub mod authorized;
pub mod cidr;
pub mod cipher;
pub mod keys;
pub mod replay;
pub mod session;
pub mod wire;
