//! The hub's side of seed 002's message port ([`crate::wire::seed_msg`]): which reply each
//! datagram gets, and that a message is acknowledged only once it is recorded.
//!
//! No socket, no clock, no file: [`MsgReceiver::handle_datagram`] says what a datagram is
//! (a message to record, or not a message, whose error reply is queued at once). A message
//! gets no reply until the caller reports, through [`MsgReceiver::handle_recorded`], whether
//! it was recorded (appended to `--msg-log`, or at once when there is no log): then
//! [`MSG_ACK`], or [`LOG_FAILED_REPLY`] (a message that was answered `get the msg` is never
//! lost). Replies come out of [`MsgReceiver::poll_transmit`] in the order they were
//! decided; messages are reported recorded in the order they came in.
//!
//! The message text is lent out of the datagram, not copied: the receiving thread does no
//! allocation per message.
//!
//! **udphub's framed messages** ([`crate::wire::framed_msg`]) arrive on the same port (told
//! apart by their magic) and are recorded **exactly once**: per sender run (its name and
//! run id) the receiver keeps the highest sequence number recorded. A message numbered at
//! or below it is a duplicate (a resend whose reply was lost, or a copy the network made):
//! it is answered [`Status::Duplicate`] at once and not recorded again. A higher one is
//! recorded, then answered [`Status::Recorded`] (or [`Status::NotRecorded`], leaving the
//! number where it was, so the sender's resend is recorded later). A sender that waits for
//! each reply before the next message (msg-client does) so gets every message into the log
//! once and in order; a message it gave up on leaves a gap, never a reordering. At most
//! [`MAX_RUNS`] runs are remembered (the oldest forgotten first).
//!
//! Two rules keep one peer from costing the others (issue 11):
//! - **A budget per source.** Every datagram is charged, before it is parsed, its length
//!   plus [`LOG_LINE_OVERHEAD`] (about what its log line costs) against a
//!   [`SharedBudget`] keyed by the sender's IP address: one total rate
//!   (`--msg-budget-bytes-per-s`) shared equally by the addresses sending, each with a
//!   burst (`--msg-budget-burst-bytes`). An over-budget datagram is not parsed and not
//!   recorded ([`Received::OverBudget`]); it is answered [`LOG_FAILED_REPLY`] (it was not
//!   recorded, which is what that reply says), under the rule below.
//! - **No amplification.** A reply other than the answer to a recorded-or-not valid message
//!   (the seed's `get the msg`, or [`LOG_FAILED_REPLY`], fixed by the seed's reply
//!   semantics) is sent only if it is no longer than the datagram it answers; otherwise
//!   none is sent. So junk, and over-budget floods, from a forged address never make the
//!   hub send more bytes than it got.
//!
//! **Commands down** (issue 15): the receiver holds the [`Commands`] waiting per source
//! name. A framed message with the COMMANDS flag acks the newest command its sender
//! received, and every reply to it carries that source's oldest waiting command, if the
//! reply stays no longer than the message it answers (an authenticated sender, a
//! validated peer, gets it whatever its length); otherwise the reply says a command waits
//! and how long a message must be for it (24 bytes, shorter than any message that takes
//! commands), and the sender pads its next message to that length. [`MsgReceiver::poll_timeout`]
//! is the next expiry.

use super::budget::SharedBudget;
use super::commands::{CommandResult, Commands};
use super::Transmit;
use crate::secure::cidr::Cidr;
use crate::wire::framed_msg::{self, Status};
use crate::wire::name::SourceName;
use crate::wire::seed_msg::{parse_message, MsgError, LOG_FAILED_REPLY, MSG_ACK};
use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

/// What a message costs beyond its own bytes, charged to its sender's budget: about the
/// log line's `{"ts": …, "from": …, "msg": }` around it. It also makes the budget a rate
/// of messages, not only of bytes.
pub const LOG_LINE_OVERHEAD: u64 = 64;

/// The message budget's defaults: 8 MiB/s shared by all senders, 1 MiB at once each.
pub const DEFAULT_BUDGET_BYTES_PER_S: u64 = 8 << 20;
pub const DEFAULT_BUDGET_BURST_BYTES: u64 = 1 << 20;

/// Sender runs whose highest recorded sequence number is remembered, at most.
pub const MAX_RUNS: usize = 4096;

/// What a datagram is.
#[derive(Debug)]
pub enum Received<'a> {
    /// A valid message (its text, unchanged; `name`: the sender's, for a framed message):
    /// record it, then call [`MsgReceiver::handle_recorded`]; its reply waits until then.
    Message {
        text: &'a str,
        name: Option<&'a str>,
    },
    /// Has the framed message magic but is not a framed message: no reply (the sender is
    /// not known to be ours, and may be forged).
    BadFramed(framed_msg::ParseError),
    /// A framed message recorded before: answered at once, not to be recorded again.
    Duplicate { name: &'a str, seq: u64 },
    /// Not a message; its error reply ([`MsgError::reply`]) is queued if it is no longer
    /// than the datagram.
    Invalid(MsgError),
    /// From outside the ranges allowed when the hub requires keys ([`MsgReceiver::only_from`]):
    /// not looked at, no reply.
    Refused,
    /// Past its sender's budget: not looked at, not to be recorded; [`LOG_FAILED_REPLY`] is
    /// queued if it is no longer than the datagram.
    OverBudget,
}

/// A message waiting to be reported recorded: how to answer it.
#[derive(Debug)]
enum Pending {
    Seed,
    Framed {
        name: String,
        run: u32,
        seq: u64,
        commands: Option<Room>,
    },
}

/// How long a reply to a sender that takes commands may be: at most the message's
/// length (`Some`), or any (an authenticated sender).
type Room = Option<usize>;

/// The message port's state. See the module documentation.
#[derive(Debug)]
pub struct MsgReceiver {
    /// Messages not yet reported recorded, oldest first.
    unrecorded: VecDeque<(SocketAddr, Pending)>,
    /// Per framed sender run (run id, then name: looked up without allocating): the highest
    /// sequence number recorded.
    recorded: HashMap<u32, HashMap<String, u64>>,
    /// The runs in `recorded`, oldest first (to forget past [`MAX_RUNS`]).
    runs: VecDeque<(u32, String)>,
    transmits: VecDeque<Transmit>,
    budget: SharedBudget<IpAddr>,
    withheld: u64,
    /// With keys required: the only ranges whose (unauthenticated) messages are taken.
    only_from: Option<Vec<Cidr>>,
    commands: Commands,
    /// Replies that could not carry a waiting command: it was longer than the message.
    commands_too_long: u64,
}

impl Default for MsgReceiver {
    fn default() -> Self {
        Self::with_budget(DEFAULT_BUDGET_BYTES_PER_S, DEFAULT_BUDGET_BURST_BYTES)
    }
}

impl MsgReceiver {
    /// A receiver with the default budget.
    pub fn new() -> Self {
        Self::default()
    }

    /// A receiver whose senders share `bytes_per_s`, each spending at most `burst_bytes` at
    /// once (a burst below one largest datagram plus [`LOG_LINE_OVERHEAD`] would refuse
    /// the largest messages forever, so it is raised to that).
    pub fn with_budget(bytes_per_s: u64, burst_bytes: u64) -> Self {
        let min_burst = crate::wire::MAX_UDP_PAYLOAD as u64 + LOG_LINE_OVERHEAD;
        MsgReceiver {
            unrecorded: VecDeque::new(),
            recorded: HashMap::new(),
            runs: VecDeque::new(),
            transmits: VecDeque::new(),
            budget: SharedBudget::new(bytes_per_s, burst_bytes.max(min_burst)),
            withheld: 0,
            only_from: None,
            commands: Commands::default(),
            commands_too_long: 0,
        }
    }

    /// Take messages only from `ranges` (the hub requires keys, and messages have none yet:
    /// `--allow-plain`); anything else is refused silently.
    pub fn only_from(mut self, ranges: Vec<Cidr>) -> Self {
        self.only_from = Some(ranges);
        self
    }

    /// Replies not sent because they would have been longer than what they answered.
    pub fn withheld_replies(&self) -> u64 {
        self.withheld
    }

    /// Commands expire this long after they were submitted (default
    /// [`super::commands::DEFAULT_TTL`]).
    pub fn with_command_ttl(mut self, ttl: std::time::Duration) -> Self {
        self.commands = Commands::new(ttl);
        self
    }

    /// The commands waiting (to submit one, or read the counts).
    pub fn commands(&mut self) -> &mut Commands {
        &mut self.commands
    }

    /// The next command result (delivered, expired, rejected), oldest first.
    pub fn poll_command_event(&mut self) -> Option<CommandResult> {
        self.commands.poll_event()
    }

    /// Replies that went without a waiting command because it would have made them longer
    /// than the message they answered.
    pub fn commands_too_long(&self) -> u64 {
        self.commands_too_long
    }

    /// Look at one datagram from `from`, received at `now`.
    pub fn handle_datagram<'a>(
        &mut self,
        from: SocketAddr,
        datagram: &'a [u8],
        now: Instant,
    ) -> Received<'a> {
        if let Some(ranges) = &self.only_from {
            if !ranges.iter().any(|c| c.contains(from.ip())) {
                return Received::Refused;
            }
        }
        let cost = datagram.len() as u64 + LOG_LINE_OVERHEAD;
        let framed = framed_msg::is_framed_msg(datagram);
        if !self.budget.try_take(&from.ip(), cost, now) {
            match framed_msg::parse_message(datagram) {
                Ok(m) => self.reply_framed(from, Status::NotRecorded, m.run, m.seq, None),
                Err(_) if framed => {}
                Err(_) => self.reply_within(from, LOG_FAILED_REPLY, datagram.len()),
            }
            return Received::OverBudget;
        }
        if framed {
            return self.handle_framed(from, datagram);
        }
        match parse_message(datagram) {
            Ok(text) => {
                self.unrecorded.push_back((from, Pending::Seed));
                Received::Message { text, name: None }
            }
            Err(e) => {
                self.reply_within(from, e.reply(), datagram.len());
                Received::Invalid(e)
            }
        }
    }

    /// The oldest message not yet reported was recorded (`true`: it gets [`MSG_ACK`]) or
    /// could not be (it gets [`LOG_FAILED_REPLY`]: not recorded, so not acknowledged as
    /// received).
    pub fn handle_recorded(&mut self, recorded: bool) {
        let Some((from, pending)) = self.unrecorded.pop_front() else {
            debug_assert!(false, "handle_recorded without a message");
            return;
        };
        match pending {
            Pending::Seed => self.reply(from, if recorded { MSG_ACK } else { LOG_FAILED_REPLY }),
            Pending::Framed {
                name,
                run,
                seq,
                commands,
            } => {
                let commands = commands.map(|room| (name.as_str(), room));
                if !recorded {
                    return self.reply_framed(from, Status::NotRecorded, run, seq, commands);
                }
                match self.recorded.get_mut(&run).and_then(|n| n.get_mut(&name)) {
                    Some(last) => *last = (*last).max(seq),
                    None => {
                        if self.runs.len() >= MAX_RUNS {
                            if let Some((old_run, old_name)) = self.runs.pop_front() {
                                if let Some(names) = self.recorded.get_mut(&old_run) {
                                    names.remove(&old_name);
                                    if names.is_empty() {
                                        self.recorded.remove(&old_run);
                                    }
                                }
                            }
                        }
                        self.runs.push_back((run, name.clone()));
                        self.recorded
                            .entry(run)
                            .or_default()
                            .insert(name.clone(), seq);
                    }
                }
                self.reply_framed(from, Status::Recorded, run, seq, commands);
            }
        }
    }

    /// The plaintext of a secure datagram from `from`, which authenticated as the device the
    /// authorized-keys file calls `name`: a framed message, taken whatever the ranges, and
    /// recorded under `name` whatever it claims. Charged to the budget like any other.
    pub fn handle_authenticated<'a>(
        &mut self,
        from: SocketAddr,
        plaintext: &'a [u8],
        name: &'a SourceName,
        now: Instant,
    ) -> Received<'a> {
        let cost = plaintext.len() as u64 + LOG_LINE_OVERHEAD;
        if !self.budget.try_take(&from.ip(), cost, now) {
            if let Ok(m) = framed_msg::parse_message(plaintext) {
                self.reply_framed(from, Status::NotRecorded, m.run, m.seq, None);
            }
            return Received::OverBudget;
        }
        self.handle_framed_as(from, plaintext, Some(name.as_str()))
    }

    /// A datagram with the framed message magic (within its sender's budget).
    fn handle_framed<'a>(&mut self, from: SocketAddr, datagram: &'a [u8]) -> Received<'a> {
        self.handle_framed_as(from, datagram, None)
    }

    /// A framed message, named `as_name` when it authenticated (else by its own claim).
    fn handle_framed_as<'a>(
        &mut self,
        from: SocketAddr,
        datagram: &'a [u8],
        as_name: Option<&'a str>,
    ) -> Received<'a> {
        let mut m = match framed_msg::parse_message(datagram) {
            Ok(m) => m,
            // not even a message to answer (a reply is 20 bytes; what came may be fewer)
            Err(e) => return Received::BadFramed(e),
        };
        if let Some(name) = as_name {
            m.name = name;
        }
        // a sender that takes commands: its ack first (a duplicate's ack counts too); its
        // replies may carry a command, within the message's length unless authenticated
        let commands = m.ack.map(|ack| {
            self.commands.handle_ack(m.name, ack);
            (m.name, as_name.is_none().then_some(datagram.len()))
        });
        let seen = self
            .recorded
            .get(&m.run)
            .and_then(|n| n.get(m.name))
            .copied();
        if seen.is_some_and(|last| m.seq <= last) {
            self.reply_framed(from, Status::Duplicate, m.run, m.seq, commands);
            return Received::Duplicate {
                name: m.name,
                seq: m.seq,
            };
        }
        match parse_message(m.json) {
            Ok(text) => {
                let pending = Pending::Framed {
                    name: m.name.to_owned(),
                    run: m.run,
                    seq: m.seq,
                    commands: commands.map(|(_, room)| room),
                };
                self.unrecorded.push_back((from, pending));
                Received::Message {
                    text,
                    name: Some(m.name),
                }
            }
            Err(e) => {
                self.reply_framed(from, Status::Invalid, m.run, m.seq, commands);
                Received::Invalid(e)
            }
        }
    }

    /// A framed reply: 20 bytes, never longer than the message it answers (21 and more);
    /// to a sender that takes commands (`commands`: its name and the reply's room), with
    /// its oldest waiting command when that fits the room.
    fn reply_framed(
        &mut self,
        to: SocketAddr,
        status: Status,
        run: u32,
        seq: u64,
        commands: Option<(&str, Room)>,
    ) {
        let mut payload = None;
        if let Some((name, room)) = commands {
            if let Some((id, json)) = self.commands.next_for(name) {
                let len = framed_msg::COMMAND_REPLY_HEADER_LEN + json.len();
                if room.is_none_or(|room| len <= room) {
                    payload = Some(framed_msg::emit_reply_with_command(
                        status,
                        run,
                        seq,
                        id,
                        json.as_bytes(),
                    ));
                    self.commands.mark_sent(name, id);
                } else {
                    self.commands_too_long += 1;
                    payload = Some(framed_msg::emit_waiting_reply(status, run, seq, len));
                }
            }
        }
        let payload = payload.unwrap_or_else(|| framed_msg::emit_reply(status, run, seq));
        self.transmits.push_back(Transmit {
            to,
            payload: Cow::Owned(payload),
        });
    }

    /// The next reply to send, oldest first.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next command expiry (a reply never waits for time, only for
    /// [`MsgReceiver::handle_recorded`]).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.commands.poll_timeout()
    }

    /// Expire the commands past their TTL at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.commands.handle_timeout(now);
    }

    /// Queue `payload` only if it is no longer than the `received` bytes it answers.
    fn reply_within(&mut self, to: SocketAddr, payload: &'static [u8], received: usize) {
        if payload.len() <= received {
            self.reply(to, payload);
        } else {
            self.withheld += 1;
        }
    }

    fn reply(&mut self, to: SocketAddr, payload: &'static [u8]) {
        self.transmits.push_back(Transmit {
            to,
            payload: Cow::Borrowed(payload),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::seed_msg::MAX_ERROR_REPLY;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn replies(r: &mut MsgReceiver) -> Vec<(SocketAddr, Vec<u8>)> {
        std::iter::from_fn(|| r.poll_transmit())
            .map(|t| (t.to, t.payload.into_owned()))
            .collect()
    }

    #[test]
    fn a_message_is_acked_only_once_recorded() {
        let mut r = MsgReceiver::new();
        let now = Instant::now();
        // json.dumps([0,0,0,1]).encode(), as the seed client sends it
        let got = r.handle_datagram(addr(1), b"[0, 0, 0, 1]", now);
        assert!(matches!(
            got,
            Received::Message {
                text: "[0, 0, 0, 1]",
                name: None
            }
        ));
        assert!(replies(&mut r).is_empty(), "no ack before it is recorded");
        r.handle_recorded(true);
        assert_eq!(replies(&mut r), vec![(addr(1), b"get the msg".to_vec())]);
        assert_eq!(r.poll_timeout(), None);
    }

    #[test]
    fn a_message_that_could_not_be_recorded_gets_the_log_failed_reply() {
        let mut r = MsgReceiver::new();
        let now = Instant::now();
        assert!(matches!(
            r.handle_datagram(addr(1), b"{\"a\": 1}", now),
            Received::Message { .. }
        ));
        r.handle_recorded(false);
        assert_eq!(
            replies(&mut r),
            vec![(
                addr(1),
                b"error: the hub could not record the message".to_vec()
            )]
        );
    }

    #[test]
    fn framed_messages_are_recorded_exactly_once_however_often_they_come() {
        use crate::wire::framed_msg::{emit_message, parse_reply, Reply, Status};
        use crate::wire::name::SourceName;
        let mut r = MsgReceiver::new();
        let now = Instant::now();
        let pi = SourceName::parse("pi").unwrap();
        let status = |r: &mut MsgReceiver| -> Vec<(Status, u64)> {
            replies(r)
                .iter()
                .map(|(_, b)| {
                    assert!(b.len() <= 20, "a reply is never longer than a message");
                    let Reply { status, seq, .. } = parse_reply(b).unwrap();
                    (status, seq)
                })
                .collect()
        };
        let m1 = emit_message(7, 1, &pi, b"[1]");
        match r.handle_datagram(addr(1), &m1, now) {
            Received::Message { text, name } => assert_eq!((text, name), ("[1]", Some("pi"))),
            other => panic!("{other:?}"),
        }
        assert!(status(&mut r).is_empty(), "no reply before it is recorded");
        r.handle_recorded(true);
        assert_eq!(status(&mut r), [(Status::Recorded, 1)]);
        // the reply was lost: the resend, and a copy from another address (the sender
        // roamed), are answered at once and not recorded again
        for from in [addr(1), addr(2)] {
            assert!(matches!(
                r.handle_datagram(from, &m1, now),
                Received::Duplicate { name: "pi", seq: 1 }
            ));
        }
        assert_eq!(
            status(&mut r),
            [(Status::Duplicate, 1), (Status::Duplicate, 1)]
        );
        // a message the log could not take keeps its number free for the resend
        let m2 = emit_message(7, 2, &pi, b"[2]");
        assert!(matches!(
            r.handle_datagram(addr(1), &m2, now),
            Received::Message { .. }
        ));
        r.handle_recorded(false);
        assert_eq!(status(&mut r), [(Status::NotRecorded, 2)]);
        assert!(matches!(
            r.handle_datagram(addr(1), &m2, now),
            Received::Message { .. }
        ));
        r.handle_recorded(true);
        assert_eq!(status(&mut r), [(Status::Recorded, 2)]);
        // a late copy of 1 after 2 is a duplicate; a new run of the same name starts anew
        assert!(matches!(
            r.handle_datagram(addr(1), &m1, now),
            Received::Duplicate { .. }
        ));
        let restarted = emit_message(8, 1, &pi, b"[1]");
        assert!(matches!(
            r.handle_datagram(addr(1), &restarted, now),
            Received::Message { .. }
        ));
        r.handle_recorded(true);
        assert_eq!(
            status(&mut r),
            [(Status::Duplicate, 1), (Status::Recorded, 1)]
        );
        // not JSON: answered invalid; junk with the magic: no reply at all
        let bad = emit_message(7, 3, &pi, b"{nope");
        assert!(matches!(
            r.handle_datagram(addr(1), &bad, now),
            Received::Invalid(_)
        ));
        assert_eq!(status(&mut r), [(Status::Invalid, 3)]);
        assert!(matches!(
            r.handle_datagram(addr(1), b"UHFM\x01\x00", now),
            Received::BadFramed(_)
        ));
        assert!(replies(&mut r).is_empty());
    }

    #[test]
    fn invalid_datagrams_get_their_short_error_reply_at_once() {
        let mut r = MsgReceiver::new();
        let now = Instant::now();
        // padded to 64 bytes: a reply is never longer than the datagram it answers
        let mut not_utf8 = vec![b'[', 0xFF, b']'];
        not_utf8.resize(64, b' ');
        let mut not_json = b"[0, 0,".to_vec();
        not_json.resize(64, b' ');
        assert!(matches!(
            r.handle_datagram(addr(2), &not_utf8, now),
            Received::Invalid(MsgError::NotUtf8 { valid_up_to: 1 })
        ));
        assert!(matches!(
            r.handle_datagram(addr(3), &not_json, now),
            Received::Invalid(MsgError::NotJson(_))
        ));
        let got = replies(&mut r);
        assert_eq!(
            got,
            vec![
                (addr(2), b"error: message is not valid UTF-8".to_vec()),
                (addr(3), b"error: message is not valid JSON".to_vec()),
            ]
        );
        assert!(got.iter().all(|(_, p)| p.len() <= MAX_ERROR_REPLY));
    }

    #[test]
    fn replies_keep_the_order_of_the_datagrams() {
        let mut r = MsgReceiver::new();
        let now = Instant::now();
        r.handle_datagram(addr(1), b"[1]", now);
        r.handle_datagram(addr(2), b"[2]", now);
        r.handle_recorded(true);
        r.handle_recorded(false);
        assert_eq!(
            replies(&mut r),
            vec![
                (addr(1), MSG_ACK.to_vec()),
                (addr(2), LOG_FAILED_REPLY.to_vec())
            ]
        );
    }

    #[test]
    fn junk_shorter_than_its_error_reply_gets_no_reply() {
        let mut r = MsgReceiver::new();
        let now = Instant::now();
        for junk in [&b""[..], b"[0, 0,", b"\xFF\xFE", b"hello hub"] {
            assert!(matches!(
                r.handle_datagram(addr(4), junk, now),
                Received::Invalid(_)
            ));
        }
        assert!(replies(&mut r).is_empty());
        assert_eq!(r.withheld_replies(), 4);
        // exactly as long as its reply: answered
        let reply = b"error: message is not valid JSON";
        let mut junk = b"nope".to_vec();
        junk.resize(reply.len(), b' ');
        r.handle_datagram(addr(4), &junk, now);
        assert_eq!(replies(&mut r), vec![(addr(4), reply.to_vec())]);
        // a valid message's answer is the seed's, whatever its length
        r.handle_datagram(addr(4), b"1", now);
        r.handle_recorded(true);
        assert_eq!(replies(&mut r), vec![(addr(4), MSG_ACK.to_vec())]);
    }

    #[test]
    fn a_flooding_address_is_cut_to_its_share_and_others_keep_being_heard() {
        // 1 MB/s shared, 65,000-byte messages from 127.0.0.2 every ms, a small one from
        // 127.0.0.1 every 10 ms, for 2 simulated seconds
        let mut r = MsgReceiver::with_budget(1_000_000, 0);
        let t0 = Instant::now();
        let mut big = b"[".to_vec();
        big.resize(64_999, b' ');
        big.push(b']');
        let flooder = SocketAddr::from(([127, 0, 0, 2], 5000));
        let (mut flood_in, mut flood_out, mut quiet) = (0u64, 0u64, 0u64);
        for ms in 0..2000u32 {
            let now = t0 + std::time::Duration::from_millis(ms.into());
            match r.handle_datagram(flooder, &big, now) {
                Received::Message { .. } => {
                    flood_in += 1;
                    r.handle_recorded(true);
                }
                Received::OverBudget => flood_out += 1,
                other => panic!("{other:?}"),
            }
            if ms % 10 == 0 {
                assert!(
                    matches!(
                        r.handle_datagram(addr(1), b"[0, 0, 0, 1]", now),
                        Received::Message { .. }
                    ),
                    "the quiet sender refused at {ms} ms"
                );
                r.handle_recorded(true);
                quiet += 1;
            }
        }
        assert_eq!(quiet, 200);
        // half of 1 MB/s for 2 s plus one burst (raised to one largest datagram)
        assert!(
            flood_in * 65_064 <= 1_000_000 + 65_571,
            "{flood_in} recorded"
        );
        assert_eq!(flood_in + flood_out, 2000);
        let got = replies(&mut r);
        let acks = got.iter().filter(|(_, p)| p == MSG_ACK).count() as u64;
        let failed = got.iter().filter(|(_, p)| p == LOG_FAILED_REPLY).count() as u64;
        assert_eq!(acks, flood_in + quiet);
        assert_eq!(failed, flood_out, "over budget: answered as not recorded");
        assert!(got
            .iter()
            .filter(|(to, _)| *to == flooder)
            .all(|(_, p)| p.len() <= big.len()));
    }

    #[test]
    fn replies_carry_commands_until_acked_and_never_outgrow_an_unvalidated_message() {
        use crate::proto::commands::CommandStatus;
        use crate::wire::framed_msg::{
            emit_message, emit_message_acking, emit_message_padded, parse_command, parse_reply,
            parse_waiting,
        };
        use crate::wire::name::SourceName;
        let t0 = Instant::now();
        let mut r = MsgReceiver::new().with_command_ttl(std::time::Duration::from_secs(1));
        let pi = SourceName::parse("pi").unwrap();
        let cmd = r#"{"led":"on"}"#;
        r.commands().submit(41, "pi", cmd, t0);
        assert_eq!(
            r.poll_timeout(),
            Some(t0 + std::time::Duration::from_secs(1))
        );
        // an old-format message never gets a command
        r.handle_datagram(addr(1), &emit_message(7, 1, &pi, b"[1]"), t0);
        r.handle_recorded(true);
        let got = replies(&mut r);
        assert_eq!(got[0].1.len(), 20);
        // a message that takes commands but is shorter than the reply with it: the reply
        // says how long a message must be, and is no longer than the message
        let short = emit_message_acking(7, 2, &pi, Some(0), b"[2]");
        assert!(short.len() < 28 + cmd.len());
        r.handle_datagram(addr(1), &short, t0);
        r.handle_recorded(true);
        let got = replies(&mut r);
        assert_eq!(parse_command(&got[0].1), None);
        assert_eq!(parse_waiting(&got[0].1), Some(28 + cmd.len()));
        assert!(got[0].1.len() <= short.len());
        assert_eq!(r.commands_too_long(), 1);
        // padded to that: the command rides the reply, exactly as long as the message
        let padded = emit_message_padded(8, 1, &pi, Some(0), 28 + cmd.len(), b"[5]");
        r.handle_datagram(addr(1), &padded, t0);
        r.handle_recorded(true);
        let got = replies(&mut r);
        assert_eq!(parse_command(&got[0].1), Some((41, cmd.as_bytes())));
        assert_eq!(got[0].1.len(), padded.len());
        // a long enough one: the command rides its reply, no longer than the message
        let long = emit_message_acking(7, 3, &pi, Some(0), br#"{"t": 21.5, "pad": "........"}"#);
        r.handle_datagram(addr(1), &long, t0);
        r.handle_recorded(true);
        let got = replies(&mut r);
        assert!(got[0].1.len() <= long.len());
        assert_eq!(parse_command(&got[0].1), Some((41, cmd.as_bytes())));
        assert_eq!(parse_reply(&got[0].1).unwrap().seq, 3);
        // the reply was lost: the resend (a duplicate) carries it again
        r.handle_datagram(addr(1), &long, t0);
        assert_eq!(
            parse_command(&replies(&mut r)[0].1),
            Some((41, cmd.as_bytes()))
        );
        assert!(r.poll_command_event().is_none());
        // the next message acks it: delivered, and no command in its reply
        let next = emit_message_acking(7, 4, &pi, Some(41), br#"{"t": 21.5, "pad": "........"}"#);
        r.handle_datagram(addr(1), &next, t0);
        r.handle_recorded(true);
        assert_eq!(parse_command(&replies(&mut r)[0].1), None);
        let e = r.poll_command_event().unwrap();
        assert_eq!(
            (e.id, e.source.as_str(), e.status),
            (41, "pi", CommandStatus::Delivered)
        );
        // a command for a device that never sends expires at the TTL
        r.commands().submit(42, "ghost", "1", t0);
        r.handle_timeout(t0 + std::time::Duration::from_secs(1));
        let e = r.poll_command_event().unwrap();
        assert_eq!((e.id, e.status), (42, CommandStatus::Expired));
        assert_eq!(r.poll_timeout(), None);
    }
}
