//! The socket-free state machines of [`crate::secure`] (time passed in, in the style of
//! quinn-proto): [`Initiator`] on a device, [`Responder`] in the hub. They turn plaintexts
//! into datagrams and datagrams into plaintexts; the caller owns the socket and the clock.
//!
//! - An [`Initiator`] starts a handshake at once ([`Initiator::poll_transmit`] gives the
//!   initiation), resends a fresh one every 250 ms doubling to 2 s until the hub answers, and
//!   once established seals with [`Initiator::seal`]. If it keeps sealing for
//!   [`REHANDSHAKE_AFTER`] and nothing authenticated comes back (the hub restarted and drops
//!   the datagrams of a session it forgot), it handshakes again by itself, still sealing with
//!   the old session until the new one is up; so does a session [`REKEY_AFTER_TIME`] old or
//!   near counter exhaustion. Neither side uses a session [`REJECT_AFTER_TIME`] old.
//! - A [`Responder`] answers an initiation from an authorized key with a response smaller than
//!   the initiation, and opens transport datagrams of its sessions. Everything else is
//!   [`Outcome::Refused`] with a [`Reason`], and the caller sends nothing back.
//!
//! The silence rule assumes the hub answers now and then (the framed protocol acks every
//! frame): a device whose hub never answers costs one handshake per [`REHANDSHAKE_AFTER`]
//! of sending, and loses nothing (it seals with the old session until the new one is up).
//!
//! Every resend is a fresh initiation (new ephemeral key, newer timestamp): the responder
//! refuses an initiation not newer than the last one it took from that key, so resending the
//! same bytes after a lost response would be refused.
//!
//! The clear header fields are bound to the handshake: the initiation's header is the Noise
//! prologue (with [`PROLOGUE`]), and the response's encrypted payload repeats the
//! responder's index, so a bit flipped anywhere in either message is refused. A transport
//! datagram's counter is the AEAD nonce and its index picks the keys, so flipping either
//! fails authentication too.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use snow::{HandshakeState, StatelessTransportState};

use super::authorized::AuthorizedKeys;
use super::cipher::Cipher;
use super::keys::{PrivateKey, PublicKey};
use super::replay::{ReplayWindow, MAX_COUNTER};
use super::wire::{self, Packet};
use crate::wire::name::SourceName;

/// Bound into every handshake (domain separation from any other Noise use of these keys).
pub const PROLOGUE: &[u8] = b"udphub secure v1";
/// An initiator that sealed for this long without anything authenticated coming back
/// handshakes again.
pub const REHANDSHAKE_AFTER: Duration = Duration::from_secs(1);
/// First resend of an unanswered initiation; then doubling to [`RESEND_MAX`].
pub const RESEND_FIRST: Duration = Duration::from_millis(250);
pub const RESEND_MAX: Duration = Duration::from_secs(2);
/// A session that has sent this many datagrams handshakes again (as WireGuard's
/// REJECT_AFTER_MESSAGES); sealing stops at [`MAX_COUNTER`].
pub const REKEY_AFTER_MESSAGES: u64 = u64::MAX - (1 << 13);
/// A session this old handshakes again when it next seals (WireGuard's REKEY_AFTER_TIME):
/// new ephemeral keys every two minutes, so a key stolen later opens little recorded traffic.
pub const REKEY_AFTER_TIME: Duration = Duration::from_secs(120);
/// Neither side uses a session this old (WireGuard's REJECT_AFTER_TIME).
pub const REJECT_AFTER_TIME: Duration = Duration::from_secs(180);
/// The responder keeps at most this many sessions (oldest replaced ones go first).
pub const MAX_SESSIONS: usize = 4096;
/// A session replaced by a newer handshake from the same key still opens datagrams for this
/// long (those sent before the device switched).
pub const OVERLAP: Duration = Duration::from_secs(5);

/// The size of the responder's encrypted payload in the response: its own index.
const RESPONSE_PAYLOAD_LEN: usize = 4;

/// Why a datagram was refused (silently: the caller sends nothing and counts it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Reason {
    /// Not a secure datagram, or one of the wrong length.
    #[error("malformed")]
    Malformed,
    /// A handshake from a key that is not in the authorized-keys file.
    #[error("unknown key")]
    UnknownKey,
    /// A handshake message that did not decrypt or verify.
    #[error("bad handshake")]
    BadHandshake,
    /// An initiation not newer than the last one accepted from its key (a replay).
    #[error("replayed initiation")]
    ReplayedInit,
    /// A datagram for a session this side does not have (expired, revoked, restarted).
    #[error("unknown session")]
    UnknownSession,
    /// A transport counter already delivered, or too old for the window.
    #[error("replayed")]
    Replayed,
    /// A transport datagram that did not authenticate.
    #[error("tampered")]
    Tampered,
    /// A kind this side never receives (an initiation at a device, a response at the hub).
    #[error("unexpected kind")]
    Unexpected,
}

/// What [`Initiator::handle_datagram`] returns on refusal.
pub type SecureError = Reason;

impl Reason {
    pub const ALL: [Reason; 8] = [
        Reason::Malformed,
        Reason::UnknownKey,
        Reason::BadHandshake,
        Reason::ReplayedInit,
        Reason::UnknownSession,
        Reason::Replayed,
        Reason::Tampered,
        Reason::Unexpected,
    ];

    /// A short label for counters and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Malformed => "malformed",
            Reason::UnknownKey => "unknown_key",
            Reason::BadHandshake => "bad_handshake",
            Reason::ReplayedInit => "replayed_init",
            Reason::UnknownSession => "unknown_session",
            Reason::Replayed => "replayed",
            Reason::Tampered => "tampered",
            Reason::Unexpected => "unexpected",
        }
    }
}

/// A random index (not a secret: it is on the wire; random so that it says nothing about
/// how many sessions there were). `RandomState` is seeded from the OS per instance.
fn random_index() -> u32 {
    let mut h = RandomState::new().build_hasher();
    h.write_u64(0x5eed);
    h.finish() as u32
}

/// One established session's keys, counters and replay window.
struct Transport {
    local: u32,
    remote: u32,
    state: StatelessTransportState,
    send_counter: u64,
    replay: ReplayWindow,
    /// When the handshake completed.
    established: Instant,
}

impl Transport {
    fn seal(&mut self, plaintext: &[u8]) -> Option<Vec<u8>> {
        if self.send_counter > MAX_COUNTER || plaintext.len() > wire::MAX_PLAINTEXT {
            return None;
        }
        let counter = self.send_counter;
        let mut out = Vec::with_capacity(plaintext.len() + wire::TRANSPORT_OVERHEAD);
        out.extend_from_slice(&wire::transport_header(self.remote, counter));
        out.resize(plaintext.len() + wire::TRANSPORT_OVERHEAD, 0);
        let n = self
            .state
            .write_message(counter, plaintext, &mut out[wire::TRANSPORT_HEADER_LEN..])
            .ok()?;
        debug_assert_eq!(n, plaintext.len() + wire::TAG_LEN);
        self.send_counter += 1;
        Some(out)
    }

    fn open(&mut self, counter: u64, ciphertext: &[u8]) -> Result<Vec<u8>, Reason> {
        if !self.replay.check(counter) {
            return Err(Reason::Replayed);
        }
        let mut plain = vec![0u8; ciphertext.len()];
        let n = self
            .state
            .read_message(counter, ciphertext, &mut plain)
            .map_err(|_| Reason::Tampered)?;
        plain.truncate(n);
        self.replay.update(counter);
        Ok(plain)
    }
}

/// The TAI64N label of a wall-clock time: 8 bytes of seconds + 2^62, 4 of nanoseconds, both
/// big-endian, so later times compare greater byte by byte.
fn tai64n(t: SystemTime) -> [u8; wire::TIMESTAMP_LEN] {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let mut out = [0u8; wire::TIMESTAMP_LEN];
    out[..8].copy_from_slice(&((1u64 << 62) + d.as_secs()).to_be_bytes());
    out[8..].copy_from_slice(&d.subsec_nanos().to_be_bytes());
    out
}

/// A handshake in flight.
struct Pending {
    hs: HandshakeState,
    local: u32,
    datagram: Vec<u8>,
    /// When to send (again).
    next_send: Instant,
    /// The wait after the next send.
    backoff: Duration,
}

/// A device's side: one session with the hub.
pub struct Initiator {
    my_private: PrivateKey,
    hub_public: PublicKey,
    cipher: Cipher,
    wall_base: SystemTime,
    instant_base: Instant,
    last_timestamp: [u8; wire::TIMESTAMP_LEN],
    pending: Option<Pending>,
    current: Option<Transport>,
    /// The session before the current one: opens the hub's replies still in flight.
    previous: Option<Transport>,
    /// The first seal since something authenticated came back.
    unanswered_since: Option<Instant>,
    handshakes_started: u64,
}

impl fmt::Debug for Initiator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Initiator")
            .field("hub", &self.hub_public)
            .field("cipher", &self.cipher)
            .field("established", &self.is_established())
            .field("handshaking", &self.pending.is_some())
            .finish()
    }
}

impl Initiator {
    /// Start a session with the hub whose static public key is `hub_public`, with this
    /// CPU's [`Cipher::preferred`]; the first initiation is due at once (see
    /// [`Initiator::poll_transmit`]). The handshake timestamps come from the wall clock read
    /// now, advanced by `now`.
    pub fn new(my_private: PrivateKey, hub_public: PublicKey, now: Instant) -> Initiator {
        Initiator::with_cipher(my_private, hub_public, Cipher::preferred(), now)
    }

    /// [`Initiator::new`] with the given AEAD.
    pub fn with_cipher(
        my_private: PrivateKey,
        hub_public: PublicKey,
        cipher: Cipher,
        now: Instant,
    ) -> Initiator {
        Initiator::with_wall_clock(my_private, hub_public, cipher, now, SystemTime::now())
    }

    /// [`Initiator::with_cipher`] with the wall-clock time that `now` stands for (tests).
    pub fn with_wall_clock(
        my_private: PrivateKey,
        hub_public: PublicKey,
        cipher: Cipher,
        now: Instant,
        wall_now: SystemTime,
    ) -> Initiator {
        let mut i = Initiator {
            my_private,
            hub_public,
            cipher,
            wall_base: wall_now,
            instant_base: now,
            last_timestamp: [0; wire::TIMESTAMP_LEN],
            pending: None,
            current: None,
            previous: None,
            unanswered_since: None,
            handshakes_started: 0,
        };
        i.start_handshake(now);
        i
    }

    pub fn is_established(&self) -> bool {
        self.current.is_some()
    }

    /// The AEAD of this initiator's sessions.
    pub fn cipher(&self) -> Cipher {
        self.cipher
    }

    /// Handshakes started so far (the first, resends, rehandshakes).
    pub fn handshakes_started(&self) -> u64 {
        self.handshakes_started
    }

    fn timestamp(&mut self, now: Instant) -> [u8; wire::TIMESTAMP_LEN] {
        let wall = self.wall_base + now.saturating_duration_since(self.instant_base);
        let mut ts = tai64n(wall);
        if ts <= self.last_timestamp {
            // Two initiations in one clock tick: one nanosecond later than the last.
            let mut n = u128::from_be_bytes({
                let mut b = [0u8; 16];
                b[4..].copy_from_slice(&self.last_timestamp);
                b
            });
            n += 1;
            ts.copy_from_slice(&n.to_be_bytes()[4..]);
        }
        self.last_timestamp = ts;
        ts
    }

    /// Build a fresh initiation, due at `now`.
    fn start_handshake(&mut self, now: Instant) {
        let local = random_index();
        let prologue = prologue(local, self.cipher);
        let mut hs = snow::Builder::new(self.cipher.noise_params())
            .local_private_key(self.my_private.as_bytes())
            .remote_public_key(self.hub_public.as_bytes())
            .prologue(&prologue)
            .build_initiator()
            .expect("IK initiator with both keys");
        let ts = self.timestamp(now);
        let mut noise = [0u8; wire::INIT_NOISE_LEN];
        let n = hs
            .write_message(&ts, &mut noise)
            .expect("an IK message 1 fits its buffer");
        debug_assert_eq!(n, wire::INIT_NOISE_LEN);
        self.pending = Some(Pending {
            hs,
            local,
            datagram: wire::emit_init(local, self.cipher, &noise),
            next_send: now,
            backoff: RESEND_FIRST,
        });
        self.handshakes_started += 1;
    }

    /// The initiation to send now, if one is due (at start, after a resend timeout, or
    /// when a rehandshake began). Call after [`Initiator::handle_datagram`],
    /// [`Initiator::seal`] and at [`Initiator::poll_timeout`].
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Vec<u8>> {
        let p = self.pending.as_mut()?;
        if now < p.next_send {
            return None;
        }
        if p.datagram.is_empty() {
            // Already sent once and timed out: a fresh initiation (the responder refuses the
            // same one twice).
            let backoff = (p.backoff * 2).min(RESEND_MAX);
            self.start_handshake(now);
            let p = self.pending.as_mut().expect("just started");
            p.backoff = backoff;
        }
        let p = self.pending.as_mut().expect("pending");
        p.next_send = now + p.backoff;
        Some(std::mem::take(&mut p.datagram))
    }

    /// When [`Initiator::poll_transmit`] will next have something (a resend), if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.pending.as_ref().map(|p| p.next_send)
    }

    /// A datagram from the hub: a handshake response (`Ok(None)`, now established) or a
    /// transport datagram (`Ok(Some(plaintext))`).
    pub fn handle_datagram(
        &mut self,
        bytes: &[u8],
        now: Instant,
    ) -> Result<Option<Vec<u8>>, SecureError> {
        match wire::parse(bytes).map_err(|_| Reason::Malformed)? {
            Packet::Init { .. } => Err(Reason::Unexpected),
            Packet::Response {
                sender,
                receiver,
                noise,
            } => {
                let p = self
                    .pending
                    .as_mut()
                    .filter(|p| p.local == receiver)
                    .ok_or(Reason::UnknownSession)?;
                let mut payload = [0u8; 64];
                let n =
                    p.hs.read_message(noise, &mut payload)
                        .map_err(|_| Reason::BadHandshake)?;
                if n != RESPONSE_PAYLOAD_LEN || payload[..4] != sender.to_le_bytes() {
                    return Err(Reason::BadHandshake);
                }
                let p = self.pending.take().expect("checked above");
                let state =
                    p.hs.into_stateless_transport_mode()
                        .map_err(|_| Reason::BadHandshake)?;
                self.previous = self.current.take();
                self.current = Some(Transport {
                    local: p.local,
                    remote: sender,
                    state,
                    send_counter: 0,
                    replay: ReplayWindow::new(),
                    established: now,
                });
                self.unanswered_since = None;
                Ok(None)
            }
            Packet::Transport {
                receiver,
                counter,
                ciphertext,
            } => {
                let t = [self.current.as_mut(), self.previous.as_mut()]
                    .into_iter()
                    .flatten()
                    .find(|t| t.local == receiver)
                    .ok_or(Reason::UnknownSession)?;
                let plain = t.open(counter, ciphertext)?;
                self.unanswered_since = None;
                Ok(Some(plain))
            }
        }
    }

    /// Encrypt `plaintext` (at most [`wire::MAX_PLAINTEXT`] bytes) into one transport
    /// datagram for the hub; `None` before the first handshake completed (or past the last
    /// counter). May start a rehandshake: call [`Initiator::poll_transmit`] after it.
    pub fn seal(&mut self, plaintext: &[u8], now: Instant) -> Option<Vec<u8>> {
        let t = self.current.as_mut()?;
        let age = now.saturating_duration_since(t.established);
        if age >= REJECT_AFTER_TIME {
            // Too old to use (the hub refuses it too); a rehandshake is under way.
            self.current = None;
            if self.pending.is_none() {
                self.start_handshake(now);
            }
            return None;
        }
        let out = t.seal(plaintext);
        let rekey = t.send_counter >= REKEY_AFTER_MESSAGES || age >= REKEY_AFTER_TIME;
        let since = *self.unanswered_since.get_or_insert(now);
        let silent = now.saturating_duration_since(since) >= REHANDSHAKE_AFTER;
        if (silent || rekey) && self.pending.is_none() {
            self.start_handshake(now);
        }
        out
    }

    #[cfg(test)]
    fn set_send_counter(&mut self, c: u64) {
        self.current.as_mut().unwrap().send_counter = c;
    }
}

/// The prologue of a handshake: [`PROLOGUE`], then the initiation's clear header (its kind,
/// so its cipher, and its index).
fn prologue(sender: u32, cipher: Cipher) -> Vec<u8> {
    let mut p = PROLOGUE.to_vec();
    p.extend_from_slice(&wire::init_header(sender, cipher));
    p
}

/// A session at the responder, as the caller names it: valid until that session ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(u32);

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}", self.0)
    }
}

/// What the responder made of a datagram.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A transport datagram of `session`, from the device the authorized-keys file calls
    /// `name`.
    Opened {
        session: SessionId,
        name: SourceName,
        plaintext: Vec<u8>,
    },
    /// A handshake response: send it to the address the initiation came from. (Never
    /// larger than that initiation.)
    Reply(Vec<u8>),
    /// Send nothing; count the reason.
    Refused(Reason),
}

/// The responder's handshake counts. Each initiation read costs two X25519 operations,
/// each completed one two more.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Handshakes {
    /// Initiations that reached the key exchange (well-formed ones).
    pub attempted: u64,
    /// Answered: a new session.
    pub completed: u64,
}

impl Handshakes {
    /// X25519 operations spent on handshakes (an upper bound: a bad initiation may fail after
    /// the first).
    pub fn dh_operations(&self) -> u64 {
        2 * self.attempted + 2 * self.completed
    }
}

struct Session {
    key: PublicKey,
    name: SourceName,
    transport: Transport,
    created: Instant,
    /// When a newer handshake from the same key replaced this one.
    replaced_at: Option<Instant>,
}

/// Per authorized key: its sessions and the newest initiation timestamp taken.
#[derive(Default)]
struct Peer {
    current: Option<u32>,
    previous: Option<u32>,
    newest: [u8; wire::TIMESTAMP_LEN],
}

/// The hub's side: sessions with every device.
pub struct Responder {
    my_private: PrivateKey,
    keys: Arc<AuthorizedKeys>,
    sessions: HashMap<u32, Session>,
    peers: HashMap<PublicKey, Peer>,
    handshakes: Handshakes,
    max_sessions: usize,
}

impl fmt::Debug for Responder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Responder")
            .field("keys", &self.keys.len())
            .field("sessions", &self.sessions.len())
            .field("handshakes", &self.handshakes)
            .finish()
    }
}

impl Responder {
    pub fn new(my_private: PrivateKey, keys: Arc<AuthorizedKeys>) -> Responder {
        Responder::with_max_sessions(my_private, keys, MAX_SESSIONS)
    }

    /// [`Responder::new`] holding at most `max_sessions` (at least 1) sessions: past that a
    /// new handshake drops a replaced session first, else the oldest.
    pub fn with_max_sessions(
        my_private: PrivateKey,
        keys: Arc<AuthorizedKeys>,
        max_sessions: usize,
    ) -> Responder {
        Responder {
            my_private,
            keys,
            sessions: HashMap::new(),
            peers: HashMap::new(),
            handshakes: Handshakes::default(),
            max_sessions: max_sessions.max(1),
        }
    }

    /// New authorized keys (after a reload): sessions of keys no longer there end at once
    /// (their next datagram is [`Reason::UnknownSession`]); a key whose name changed keeps
    /// its session under the new name.
    pub fn set_keys(&mut self, keys: Arc<AuthorizedKeys>) {
        self.sessions.retain(|_, s| match keys.name_of(&s.key) {
            Some(name) => {
                s.name = name.clone();
                true
            }
            None => false,
        });
        let sessions = &self.sessions;
        for peer in self.peers.values_mut() {
            peer.current = peer.current.filter(|i| sessions.contains_key(i));
            peer.previous = peer.previous.filter(|i| sessions.contains_key(i));
        }
        self.keys = keys;
    }

    pub fn keys(&self) -> &Arc<AuthorizedKeys> {
        &self.keys
    }

    pub fn handshakes(&self) -> Handshakes {
        self.handshakes
    }

    /// Sessions held (at most [`MAX_SESSIONS`], or the number given).
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// The name of a session's device.
    pub fn name_of(&self, session: SessionId) -> Option<&SourceName> {
        self.sessions.get(&session.0).map(|s| &s.name)
    }

    /// One datagram from `from` (the address is not used to find sessions, so a device may
    /// roam; it is for the caller's logging and rate limits).
    pub fn handle_datagram(&mut self, from: SocketAddr, bytes: &[u8], now: Instant) -> Outcome {
        let _ = from;
        let packet = match wire::parse(bytes) {
            Ok(p) => p,
            Err(_) => return Outcome::Refused(Reason::Malformed),
        };
        let result = match packet {
            Packet::Init {
                sender,
                cipher,
                noise,
            } => self.handle_init(sender, cipher, noise, now),
            Packet::Response { .. } => Err(Reason::Unexpected),
            Packet::Transport {
                receiver,
                counter,
                ciphertext,
            } => self.handle_transport(receiver, counter, ciphertext, now),
        };
        result.unwrap_or_else(Outcome::Refused)
    }

    fn handle_init(
        &mut self,
        sender: u32,
        cipher: Cipher,
        noise: &[u8],
        now: Instant,
    ) -> Result<Outcome, Reason> {
        self.handshakes.attempted += 1;
        let prologue = prologue(sender, cipher);
        let mut hs = snow::Builder::new(cipher.noise_params())
            .local_private_key(self.my_private.as_bytes())
            .prologue(&prologue)
            .build_responder()
            .expect("IK responder with its key");
        let mut payload = [0u8; 64];
        let n = hs
            .read_message(noise, &mut payload)
            .map_err(|_| Reason::BadHandshake)?;
        if n != wire::TIMESTAMP_LEN {
            return Err(Reason::BadHandshake);
        }
        let mut ts = [0u8; wire::TIMESTAMP_LEN];
        ts.copy_from_slice(&payload[..n]);
        let key = hs
            .get_remote_static()
            .and_then(PublicKey::from_slice)
            .ok_or(Reason::BadHandshake)?;
        let name = self.keys.name_of(&key).ok_or(Reason::UnknownKey)?.clone();
        if self.peers.get(&key).is_some_and(|p| ts <= p.newest) {
            return Err(Reason::ReplayedInit);
        }
        let local = loop {
            let i = random_index();
            if !self.sessions.contains_key(&i) {
                break i;
            }
        };
        let mut reply = [0u8; wire::RESPONSE_NOISE_LEN];
        let n = hs
            .write_message(&local.to_le_bytes(), &mut reply)
            .map_err(|_| Reason::BadHandshake)?;
        debug_assert_eq!(n, wire::RESPONSE_NOISE_LEN);
        let state = hs
            .into_stateless_transport_mode()
            .map_err(|_| Reason::BadHandshake)?;

        let peer = self.peers.entry(key).or_default();
        peer.newest = ts;
        if let Some(old) = peer.previous.take() {
            self.sessions.remove(&old);
        }
        if let Some(cur) = peer.current.take() {
            if let Some(s) = self.sessions.get_mut(&cur) {
                s.replaced_at = Some(now);
                peer.previous = Some(cur);
            }
        }
        peer.current = Some(local);
        while self.sessions.len() >= self.max_sessions {
            self.evict_one();
        }
        self.sessions.insert(
            local,
            Session {
                key,
                name,
                transport: Transport {
                    local,
                    remote: sender,
                    state,
                    send_counter: 0,
                    replay: ReplayWindow::new(),
                    established: now,
                },
                created: now,
                replaced_at: None,
            },
        );
        self.handshakes.completed += 1;
        Ok(Outcome::Reply(wire::emit_response(local, sender, &reply)))
    }

    /// Make room: a replaced session if there is one, else the oldest.
    fn evict_one(&mut self) {
        let victim = self
            .sessions
            .iter()
            .min_by_key(|(_, s)| (s.replaced_at.is_none(), s.replaced_at.unwrap_or(s.created)))
            .map(|(&i, s)| (i, s.key));
        if let Some((i, key)) = victim {
            self.sessions.remove(&i);
            if let Some(p) = self.peers.get_mut(&key) {
                p.current = p.current.filter(|&c| c != i);
                p.previous = p.previous.filter(|&c| c != i);
            }
        }
    }

    fn handle_transport(
        &mut self,
        receiver: u32,
        counter: u64,
        ciphertext: &[u8],
        now: Instant,
    ) -> Result<Outcome, Reason> {
        let s = self
            .sessions
            .get_mut(&receiver)
            .ok_or(Reason::UnknownSession)?;
        let expired = s
            .replaced_at
            .is_some_and(|t| now.saturating_duration_since(t) > OVERLAP)
            || now.saturating_duration_since(s.created) >= REJECT_AFTER_TIME;
        if expired {
            let key = s.key;
            self.sessions.remove(&receiver);
            if let Some(p) = self.peers.get_mut(&key) {
                p.current = p.current.filter(|&c| c != receiver);
                p.previous = p.previous.filter(|&c| c != receiver);
            }
            return Err(Reason::UnknownSession);
        }
        let plaintext = s.transport.open(counter, ciphertext)?;
        Ok(Outcome::Opened {
            session: SessionId(receiver),
            name: s.name.clone(),
            plaintext,
        })
    }

    /// Encrypt a reply (an ack, a nack) to the device of `session`; `None` if the session
    /// is gone (or past its last counter).
    pub fn seal(&mut self, session: SessionId, plaintext: &[u8]) -> Option<Vec<u8>> {
        self.sessions.get_mut(&session.0)?.transport.seal(plaintext)
    }
}

#[cfg(test)]
mod tests;
