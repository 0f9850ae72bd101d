//! The telemetry client's request/reply step: send one JSON message in one datagram and
//! wait a bounded time for the hub's reply, in one of two formats ([`MsgProtocol`]).
//!
//! - **Framed** ([`crate::wire::framed_msg`], the default): the message carries the
//!   sender's name, a run id and a sequence number, and the reply names the message it
//!   answers, so a reply is never taken for another message's. A message whose reply does
//!   not come within a resend timeout (twice the smoothed round trip, 1 ms to 250 ms, 50 ms
//!   before the first reply) is sent again with the same number, until a reply or the reply
//!   timeout; the hub records it once however often it arrives.
//! - **Seed** (002's `udp_client_2.py` format, for a seed server): the hub answers `get the
//!   msg` ([`MSG_ACK`]) to a valid message and a short `error: ...` to one it cannot use.
//!   Those replies carry no message id; how late replies are kept from being taken for the
//!   next message's, and the limit of that, is described in [`super::udp_link`]. No resend:
//!   a seed server would record a resent message twice.
//!
//! Commands down (issue 15): a framed sender says it takes commands (the COMMANDS flag)
//! and acks in every message the newest command id it received. A reply may carry a
//! command; one with an id above every id taken before is queued for
//! [`MsgSender::take_command`], a repeat (the hub resends until acked) is not, so each
//! command is handed out at most once. A reply saying a command waits that does not fit
//! (the hub never answers an unauthenticated sender with more bytes than it sent) makes
//! the next message padded to the length it names.
//!
//! Messages are checked here before sending ([`check_message`]), with
//! the same parser the hub uses, so a message that leaves is one the hub accepts.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::udp_link::{Reply, UdpLink};
use crate::secure::session::Initiator;
use crate::wire::framed_msg::{self, Status};
use crate::wire::name::SourceName;
use crate::wire::seed_msg::{parse_message, MsgError, MSG_ACK};
use crate::wire::MAX_UDP_PAYLOAD;

/// The seed server reads messages with `recvfrom(1024)`: longer ones are cut there.
pub const SEED_MSG_LIMIT: usize = 1024;

/// Why a text cannot be sent as one message.
#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    /// It does not fit in one UDP datagram.
    #[error("{len} bytes is over the {MAX_UDP_PAYLOAD}-byte limit of one UDP datagram")]
    TooLong { len: usize },
    /// The hub's parser refuses it (not UTF-8, or not exactly one JSON value).
    #[error(transparent)]
    Invalid(#[from] MsgError),
}

/// Check that `text` is one message: one UTF-8 JSON value that fits a datagram.
/// Returns it unchanged (it is sent as given, not re-serialised).
pub fn check_message(text: &[u8]) -> Result<&str, MessageError> {
    if text.len() > MAX_UDP_PAYLOAD {
        return Err(MessageError::TooLong { len: text.len() });
    }
    Ok(parse_message(text)?)
}

/// One line of `--stdin`, classified.
#[derive(Debug)]
pub enum Line<'a> {
    /// Empty or only whitespace: skipped silently.
    Blank,
    /// A valid message (the line without its line ending).
    Message(&'a str),
    /// Not a message; why.
    Invalid(MessageError),
}

/// Classify one line read from stdin (with or without its `\n` / `\r\n`).
pub fn check_line(line: &[u8]) -> Line<'_> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.iter().all(u8::is_ascii_whitespace) {
        return Line::Blank;
    }
    match check_message(line) {
        Ok(text) => Line::Message(text),
        Err(e) => Line::Invalid(e),
    }
}

/// What became of one message.
#[derive(Debug)]
pub enum MsgOutcome {
    /// The hub answered `get the msg`.
    Answered { rtt: Duration },
    /// The hub answered with an error reply (its text).
    Rejected { reply: String, rtt: Duration },
    /// No reply within the reply timeout.
    NoReply,
    /// Sending failed.
    SendFailed(io::Error),
}

impl fmt::Display for MsgOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MsgOutcome::Answered { .. } => write!(f, "answered"),
            MsgOutcome::Rejected { reply, .. } => write!(f, "rejected: {reply}"),
            MsgOutcome::NoReply => write!(f, "no reply within the reply timeout"),
            MsgOutcome::SendFailed(e) => write!(f, "sending failed: {e}"),
        }
    }
}

enum HubReply {
    Ack,
    Error(String),
}

fn classify(payload: &[u8]) -> Option<HubReply> {
    if payload == MSG_ACK {
        Some(HubReply::Ack)
    } else if payload.starts_with(b"error: ") {
        Some(HubReply::Error(
            String::from_utf8_lossy(payload).into_owned(),
        ))
    } else {
        None
    }
}

/// Which message format a [`MsgSender`] speaks.
#[derive(Clone, Debug)]
pub enum MsgProtocol {
    /// udphub's framed messages, with this sender's name (and, for a hub that requires
    /// keys, this device's keys: every datagram encrypted and authenticated).
    Framed {
        name: SourceName,
        keys: Option<super::img_sender::DeviceKeys>,
    },
    /// Seed 002's format (no name, no resend).
    Seed,
}

/// Resend timeout bounds, and the first one (before any round trip was measured).
const MIN_RESEND: Duration = Duration::from_millis(1);
const MAX_RESEND: Duration = Duration::from_millis(250);
const FIRST_RESEND: Duration = Duration::from_millis(50);

/// A framed sender's run: its name, run id, next sequence number and round-trip estimate.
#[derive(Debug)]
struct FramedRun {
    name: SourceName,
    run: u32,
    next_seq: u64,
    srtt: Option<Duration>,
    /// The newest command id received (0: none), acked in every message.
    ack: u64,
    /// The hub said a command waits that needs a message this long: the next is padded.
    pad_to: usize,
}

/// Commands received and not yet taken ([`MsgSender::take_command`]), at most.
pub const MAX_QUEUED_COMMANDS: usize = 64;

/// A command from the hub (issue 15), for the device to run once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Command {
    pub id: u64,
    /// One JSON value, as the hub got it.
    pub json: String,
}

impl FramedRun {
    fn resend_after(&self) -> Duration {
        self.srtt
            .map_or(FIRST_RESEND, |s| (2 * s).clamp(MIN_RESEND, MAX_RESEND))
    }

    fn sample(&mut self, rtt: Duration) {
        self.srtt = Some(match self.srtt {
            None => rtt,
            Some(s) => (s * 7 + rtt) / 8,
        });
    }
}

/// Sends messages to the hub and waits for each reply.
#[derive(Debug)]
pub struct MsgSender {
    link: UdpLink,
    reply_timeout: Duration,
    late_replies: u64,
    framed: Option<FramedRun>,
    /// With keys: the session with the hub.
    secure: Option<Initiator>,
    resent: u64,
    /// Commands received and not yet taken.
    commands: std::collections::VecDeque<Command>,
}

impl MsgSender {
    /// A seed-format sender (see [`MsgSender::open_with`]).
    pub fn open(hub: SocketAddr, reply_timeout: Duration) -> io::Result<Self> {
        Self::open_with(hub, reply_timeout, MsgProtocol::Seed)
    }

    /// A sender of `protocol`'s messages to `hub`; each message waits at most
    /// `reply_timeout` for its reply (resends included).
    pub fn open_with(
        hub: SocketAddr,
        reply_timeout: Duration,
        protocol: MsgProtocol,
    ) -> io::Result<Self> {
        let secure = match &protocol {
            MsgProtocol::Framed { keys: Some(k), .. } => Some(Initiator::with_cipher(
                k.key.clone(),
                k.hub,
                k.cipher,
                Instant::now(),
            )),
            _ => None,
        };
        Ok(MsgSender {
            link: UdpLink::open(hub)?,
            reply_timeout,
            late_replies: 0,
            secure,
            framed: match protocol {
                MsgProtocol::Framed { name, .. } => Some(FramedRun {
                    name,
                    run: super::random_run_id(),
                    next_seq: 1,
                    srtt: None,
                    ack: 0,
                    pad_to: 0,
                }),
                MsgProtocol::Seed => None,
            },
            resent: 0,
            commands: std::collections::VecDeque::new(),
        })
    }

    /// The next command the hub sent (framed only), oldest first; each at most once.
    pub fn take_command(&mut self) -> Option<Command> {
        self.commands.pop_front()
    }

    /// Messages sent again because their reply did not come in time (framed only).
    pub fn resent(&self) -> u64 {
        self.resent
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.link.local_addr()
    }

    /// Replies that came after their message's timeout.
    pub fn late_replies(&self) -> u64 {
        self.late_replies
    }

    /// Datagrams that were not a reply from the hub.
    pub fn ignored(&self) -> u64 {
        self.link.ignored()
    }

    /// Send `message` (already checked with [`check_message`]) and wait for its reply.
    /// `Err` only when the local socket fails.
    pub fn send(&mut self, message: &str) -> io::Result<MsgOutcome> {
        if self.framed.is_some() {
            return self.send_framed(message);
        }
        self.late_replies += self.link.drain(|p| classify(p).is_some())?;
        let started = Instant::now();
        if let Err(e) = self.link.send(message.as_bytes()) {
            return Ok(MsgOutcome::SendFailed(e));
        }
        let deadline = Instant::now() + self.reply_timeout;
        Ok(match self.link.wait_reply(deadline, classify)? {
            Reply::Got(HubReply::Ack, at) => MsgOutcome::Answered {
                rtt: at.saturating_duration_since(started),
            },
            Reply::Got(HubReply::Error(reply), at) => MsgOutcome::Rejected {
                reply,
                rtt: at.saturating_duration_since(started),
            },
            Reply::TimedOut => MsgOutcome::NoReply,
        })
    }

    /// With keys and no session yet (or a rehandshake due): send the initiation and wait
    /// for the answer, resending as the initiator says, until `deadline`. `false`: no session.
    fn handshake(&mut self, deadline: Instant) -> io::Result<bool> {
        let Some(secure) = &mut self.secure else {
            return Ok(true);
        };
        while !secure.is_established() {
            if let Some(init) = secure.poll_transmit(Instant::now()) {
                let _ = self.link.send(&init);
            }
            let wake = secure.poll_timeout().map_or(deadline, |t| t.min(deadline));
            let reply = self.link.wait_reply(wake, |p| {
                match secure.handle_datagram(p, Instant::now()) {
                    Ok(None) => Some(()),
                    _ => None,
                }
            })?;
            if matches!(reply, Reply::TimedOut) && Instant::now() >= deadline {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The framed exchange: send, resend on the resend timeout, until the reply to this
    /// very message (run and number) or the reply timeout.
    fn send_framed(&mut self, message: &str) -> io::Result<MsgOutcome> {
        let Some(run) = self.framed.as_mut() else {
            unreachable!("called for framed senders only")
        };
        let (id, seq) = (run.run, run.next_seq);
        run.next_seq += 1;
        let pad_to = std::mem::take(&mut run.pad_to).min(MAX_UDP_PAYLOAD);
        let datagram = framed_msg::emit_message_padded(
            id,
            seq,
            &run.name,
            Some(run.ack),
            pad_to,
            message.as_bytes(),
        );
        // replies to earlier messages (their resends were answered too) are late, not ours
        let is_reply = |p: &[u8]| framed_msg::parse_reply(p).is_ok() || is_secure(p);
        self.late_replies += self.link.drain(is_reply)?;
        let started = Instant::now();
        let deadline = started + self.reply_timeout;
        if !self.handshake(deadline)? {
            return Ok(MsgOutcome::NoReply);
        }
        let sent_at = Instant::now();
        let mut resends = 0u64;
        loop {
            let sealed;
            let out = match &mut self.secure {
                None => &datagram,
                Some(secure) => {
                    let Some(s) = secure.seal(&datagram, Instant::now()) else {
                        return Ok(MsgOutcome::NoReply);
                    };
                    // sealing may have started a rehandshake (the hub was silent)
                    if let Some(init) = secure.poll_transmit(Instant::now()) {
                        let _ = self.link.send(&init);
                    }
                    sealed = s;
                    &sealed
                }
            };
            if let Err(e) = self.link.send(out) {
                return Ok(MsgOutcome::SendFailed(e));
            }
            let resend_at = (Instant::now()
                + self
                    .framed
                    .as_ref()
                    .map_or(FIRST_RESEND, FramedRun::resend_after))
            .min(deadline);
            let secure = &mut self.secure;
            let got = self.link.wait_reply(resend_at, |p| {
                let opened;
                let plain = match secure {
                    None => p,
                    Some(secure) => match secure.handle_datagram(p, Instant::now()) {
                        Ok(Some(plain)) => {
                            opened = plain;
                            &opened
                        }
                        _ => return None,
                    },
                };
                match framed_msg::parse_reply(plain) {
                    Ok(r) if r.run == id && r.seq == seq => Some((
                        r.status,
                        framed_msg::parse_command(plain).map(|(id, j)| (id, j.to_vec())),
                        framed_msg::parse_waiting(plain),
                    )),
                    _ => None,
                }
            })?;
            match got {
                Reply::Got((status, command, waiting), at) => {
                    if let Some((cid, json)) = command {
                        self.take_in(cid, json);
                    }
                    if let (Some(need), Some(run)) = (waiting, self.framed.as_mut()) {
                        run.pad_to = need;
                    }
                    // Karn: after a resend, which send the reply answers is unknown
                    if let Some(run) = self.framed.as_mut().filter(|_| resends == 0) {
                        run.sample(at.saturating_duration_since(sent_at));
                    }
                    let rtt = at.saturating_duration_since(started);
                    return Ok(match status {
                        Status::Recorded | Status::Duplicate => MsgOutcome::Answered { rtt },
                        Status::Invalid | Status::NotRecorded => MsgOutcome::Rejected {
                            reply: status.to_string(),
                            rtt,
                        },
                    });
                }
                Reply::TimedOut if Instant::now() >= deadline => return Ok(MsgOutcome::NoReply),
                Reply::TimedOut => {
                    resends += 1;
                    self.resent += 1;
                }
            }
        }
    }
}

impl MsgSender {
    /// A command that came in a reply: queued if it is new (its id above every one
    /// before), and acked from the next message on.
    fn take_in(&mut self, id: u64, json: Vec<u8>) {
        let Some(run) = self.framed.as_mut().filter(|r| id > r.ack) else {
            return;
        };
        run.ack = id;
        if self.commands.len() >= MAX_QUEUED_COMMANDS {
            // not taken by the program: the oldest goes (a bounded queue, whoever sends)
            log::warn!(
                "commands not taken: dropping the oldest (at most {MAX_QUEUED_COMMANDS} kept)"
            );
            self.commands.pop_front();
        }
        match String::from_utf8(json) {
            Ok(json) => self.commands.push_back(Command { id, json }),
            Err(_) => log::warn!("command {id} from the hub is not UTF-8: not run"),
        }
    }
}

/// A secure datagram (a reply of a hub that requires keys).
fn is_secure(p: &[u8]) -> bool {
    crate::secure::wire::is_secure(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::thread;

    #[test]
    fn lines_are_classified() {
        // `Line` is not `PartialEq` (a JSON error inside is not): match instead.
        let cases: [(&[u8], Option<&str>); 6] = [
            (b"[0, 0, 0, 1]\n", Some("[0, 0, 0, 1]")),
            (b"{\"a\": 1}\r\n", Some("{\"a\": 1}")),
            (b"42", Some("42")),
            (b"\n", None),
            (b"  \t\r\n", None),
            (b"", None),
        ];
        for (line, want) in cases {
            match (check_line(line), want) {
                (Line::Message(got), Some(want)) => assert_eq!(got, want),
                (Line::Blank, None) => {}
                (got, want) => panic!("{line:?}: got {got:?}, want {want:?}"),
            }
        }
        for bad in [&b"{bad\n"[..], b"[1,", b"hello", b"[1] [2]", b"[\xFF]"] {
            assert!(matches!(check_line(bad), Line::Invalid(_)), "{bad:?}");
        }
        let Line::Invalid(why) = check_line(b"[\xFF]") else {
            unreachable!()
        };
        assert!(matches!(
            why,
            MessageError::Invalid(MsgError::NotUtf8 { .. })
        ));
        assert!(why.to_string().contains("UTF-8"), "{why}");
    }

    #[test]
    fn messages_must_fit_a_datagram() {
        let big = format!("\"{}\"", "x".repeat(MAX_UDP_PAYLOAD));
        let err = check_message(big.as_bytes()).unwrap_err();
        assert!(matches!(err, MessageError::TooLong { .. }), "{err:?}");
        assert!(err.to_string().contains("65507"), "{err}");
        assert_eq!(check_message(b"[0,0,0,1]").unwrap(), "[0,0,0,1]");
    }

    #[test]
    fn answered_rejected_and_unanswered() {
        let hub = UdpSocket::bind("127.0.0.1:0").unwrap();
        hub.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let addr = hub.local_addr().unwrap();
        let server = thread::spawn(move || {
            let mut buf = [0u8; 2048];
            let mut got = Vec::new();
            for reply in [
                Some(&b"not a reply"[..]),
                Some(b"get the msg"),
                Some(b"error: message is not valid JSON"),
                None,
            ] {
                let (n, from) = hub.recv_from(&mut buf).unwrap();
                got.push(String::from_utf8(buf[..n].to_vec()).unwrap());
                if let Some(reply) = reply {
                    hub.send_to(reply, from).unwrap();
                }
                if reply == Some(b"not a reply") {
                    hub.send_to(MSG_ACK, from).unwrap();
                }
            }
            got
        });
        let mut sender = MsgSender::open(addr, Duration::from_secs(10)).unwrap();
        assert!(matches!(
            sender.send("[1]").unwrap(),
            MsgOutcome::Answered { .. }
        ));
        assert!(matches!(
            sender.send("[2]").unwrap(),
            MsgOutcome::Answered { .. }
        ));
        match sender.send("[3]").unwrap() {
            MsgOutcome::Rejected { reply, .. } => {
                assert_eq!(reply, "error: message is not valid JSON")
            }
            other => panic!("{other:?}"),
        }
        sender.reply_timeout = Duration::from_millis(50);
        assert!(matches!(sender.send("[4]").unwrap(), MsgOutcome::NoReply));
        assert_eq!(server.join().unwrap(), ["[1]", "[2]", "[3]", "[4]"]);
        assert_eq!(sender.ignored(), 1);
        assert_eq!(sender.late_replies(), 0);
    }

    #[test]
    fn a_command_in_replies_is_taken_once_and_acked_in_the_next_message() {
        let hub = UdpSocket::bind("127.0.0.1:0").unwrap();
        hub.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let addr = hub.local_addr().unwrap();
        let server = thread::spawn(move || {
            let mut buf = [0u8; 2048];
            let mut acks = Vec::new();
            for _ in 0..3 {
                let (n, from) = hub.recv_from(&mut buf).unwrap();
                let m = framed_msg::parse_message(&buf[..n]).unwrap();
                acks.push(m.ack);
                // the hub repeats command 9 until a message acks it
                let reply = if m.ack == Some(9) {
                    framed_msg::emit_reply(Status::Recorded, m.run, m.seq)
                } else {
                    framed_msg::emit_reply_with_command(
                        Status::Recorded,
                        m.run,
                        m.seq,
                        9,
                        b"[\"go\"]",
                    )
                };
                hub.send_to(&reply, from).unwrap();
            }
            acks
        });
        let protocol = MsgProtocol::Framed {
            name: SourceName::parse("pi").unwrap(),
            keys: None,
        };
        let mut sender = MsgSender::open_with(addr, Duration::from_secs(10), protocol).unwrap();
        let mut taken = Vec::new();
        for _ in 0..3 {
            assert!(matches!(
                sender.send("[1]").unwrap(),
                MsgOutcome::Answered { .. }
            ));
            taken.extend(std::iter::from_fn(|| sender.take_command()));
        }
        assert_eq!(
            taken,
            [Command {
                id: 9,
                json: "[\"go\"]".into()
            }]
        );
        assert_eq!(server.join().unwrap(), [Some(0), Some(9), Some(9)]);
    }
}
