//! One port's keys ([`SecureGate`]), shared by the image port ([`super::secure_image`]) and
//! the message port (`hub::msg_service`), each with a gate of its own: the [`Responder`],
//! the session each device address last spoke in (to seal the port's replies in it), the
//! `--allow-plain` ranges, and the per-address initiation rate.
//!
//! Handshakes cost the hub X25519 operations, so initiations are rate-limited per source
//! address: [`INITIATIONS_PER_S`] shared by the addresses sending them, each at most
//! [`INITIATION_BURST`] at once; one past its share is dropped before any cryptography.
//!
//! No socket, no clock: the time is passed in.

use super::budget::SharedBudget;
use super::Transmit;
use crate::secure::authorized::AuthorizedKeys;
use crate::secure::cidr::Cidr;
use crate::secure::keys::PrivateKey;
use crate::secure::session::{Outcome, Reason, Responder, SessionId};
use crate::secure::wire as secure_wire;
use std::borrow::Cow;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

/// Handshake initiations per second, shared by every source address sending them.
pub const INITIATIONS_PER_S: u64 = 200;
/// Initiations one source address may send at once.
pub const INITIATION_BURST: u64 = 10;
/// Device addresses remembered with their session, at most (for sealing replies).
const MAX_ADDRESSES: usize = 8192;

/// What the hub needs to require keys.
#[derive(Clone)]
pub struct SecurityConfig {
    /// The hub's own private key (`--key`).
    pub key: PrivateKey,
    /// The devices allowed (`--authorized-keys`).
    pub keys: Arc<AuthorizedKeys>,
    /// Ranges whose unauthenticated datagrams are still accepted (`--allow-plain`).
    pub allow_plain: Vec<Cidr>,
}

/// Why a datagram was dropped without a reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The responder refused a secure datagram.
    Secure(Reason),
    /// An initiation past its source's share of the handshake rate.
    HandshakeRate,
    /// An unauthenticated datagram from outside `--allow-plain`.
    Plain,
    /// Authenticated, but the plaintext inside is not a framed data datagram.
    NotFramed,
}

impl Refusal {
    /// A short label for counters and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Secure(r) => r.as_str(),
            Refusal::HandshakeRate => "handshake_rate",
            Refusal::Plain => "unauthenticated",
            Refusal::NotFramed => "not_framed_inside",
        }
    }
}

/// What [`SecureGate::open`] made of a secure datagram.
#[derive(Debug)]
pub enum Opened {
    /// Authenticated: the plaintext, from the device the authorized-keys file calls `name`.
    Plaintext {
        name: crate::wire::name::SourceName,
        plaintext: Vec<u8>,
    },
    /// A handshake answer to send back to the address the datagram came from.
    Reply(Vec<u8>),
    /// Send nothing; count it.
    Refused(Refusal),
}

/// One port's keys: the [`Responder`], the session each device address last spoke in (to
/// seal replies), and the per-address initiation rate. Shared by the image and message
/// ports, each with a gate of its own.
pub struct SecureGate {
    responder: Responder,
    sessions: HashMap<SocketAddr, SessionId>,
    allow_plain: Vec<Cidr>,
    initiations: SharedBudget<IpAddr>,
}

impl SecureGate {
    pub fn new(security: SecurityConfig) -> Self {
        SecureGate {
            responder: Responder::new(security.key, security.keys),
            sessions: HashMap::new(),
            allow_plain: security.allow_plain,
            initiations: SharedBudget::new(INITIATIONS_PER_S, INITIATION_BURST),
        }
    }

    /// Whether `data` is a secure datagram (for a gate to open).
    pub fn is_secure(data: &[u8]) -> bool {
        secure_wire::is_secure(data)
    }

    /// Whether an unauthenticated datagram from `from` may be looked at.
    pub fn allows_plain(&self, from: SocketAddr) -> bool {
        self.allow_plain.iter().any(|c| c.contains(from.ip()))
    }

    /// New authorized keys (a reload): a removed key's sessions end at once.
    pub fn set_keys(&mut self, keys: Arc<AuthorizedKeys>) {
        self.responder.set_keys(keys);
    }

    /// One secure datagram from `from`.
    pub fn open(&mut self, from: SocketAddr, data: &[u8], now: Instant) -> Opened {
        if crate::secure::wire::is_init(data) && !self.initiations.try_take(&from.ip(), 1, now) {
            return Opened::Refused(Refusal::HandshakeRate);
        }
        match self.responder.handle_datagram(from, data, now) {
            Outcome::Reply(response) => Opened::Reply(response),
            Outcome::Refused(reason) => Opened::Refused(Refusal::Secure(reason)),
            Outcome::Opened {
                session,
                name,
                plaintext,
            } => {
                if self.sessions.get(&from) != Some(&session) {
                    if self.sessions.len() >= MAX_ADDRESSES && !self.sessions.contains_key(&from) {
                        self.sessions.clear();
                    }
                    self.sessions.insert(from, session);
                }
                Opened::Plaintext { name, plaintext }
            }
        }
    }

    /// A reply of the port's own receiver, as it must go: sealed for an address with a
    /// session, unchanged for one without (a plain sender from `--allow-plain`), and `None`
    /// when the session cannot seal (it ended): a device's reply never goes out in clear.
    pub fn seal_reply(&mut self, t: Transmit) -> Option<Transmit> {
        if !self.sessions.contains_key(&t.to) {
            return Some(t);
        }
        let sealed = self.seal(t.to, &t.payload)?;
        Some(Transmit {
            to: t.to,
            payload: Cow::Owned(sealed),
        })
    }

    /// `payload` sealed in the session `to` last spoke in; `None` without one.
    pub fn seal(&mut self, to: SocketAddr, payload: &[u8]) -> Option<Vec<u8>> {
        let session = *self.sessions.get(&to)?;
        self.responder.seal(session, payload)
    }

    /// The name the file gives the device that last spoke from `from`.
    pub fn name_at(&self, from: SocketAddr) -> Option<&crate::wire::name::SourceName> {
        self.responder.name_of(*self.sessions.get(&from)?)
    }

    /// The responder's handshake counts.
    pub fn handshakes(&self) -> crate::secure::session::Handshakes {
        self.responder.handshakes()
    }
}
