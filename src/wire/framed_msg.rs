//! udphub's own message format, beside the seed's (which keeps working unchanged): every
//! message carries the sender's name, a random id of the sender's run and a sequence
//! number, and every reply says which message it answers and what became of it. So a
//! sender can resend a message whose reply was lost, and the hub can record each message
//! exactly once however often it arrives (see [`crate::proto::msg_receiver`]).
//!
//! All integers little-endian.
//!
//! ```text
//! message (sender -> hub), Python struct '<4sBBHIQB' (21 bytes), then the name, then the JSON
//!   magic    4s  b"UHFM"
//!   version  B   1
//!   kind     B   0 = message
//!   flags    H   0, or 1 = COMMANDS: the sender takes commands (below); 2 = PAD (with
//!                COMMANDS only): padding follows the ack
//!   run      I   random per sender run
//!   seq      Q   1, 2, 3, ... per run; a resend carries the same number
//!   name_len B   then name_len bytes of the sender's name (A-Z a-z 0-9 . _ -, 1..64)
//!   ack      Q   with COMMANDS only, after the name ('<Q'): the id of the newest command
//!                the sender received (0: none yet); the hub stops repeating it
//!   pad      H   with PAD only ('<H'): then that many bytes of padding, ignored
//!   the rest     the JSON value, UTF-8, exactly as the seed format carries it
//!
//! reply (hub -> sender), Python struct '<4sBBBxIQ' (20 bytes: never longer than a message)
//!   magic    4s  b"UHFM"
//!   version  B   1
//!   kind     B   1 = reply
//!   status   B   0 = recorded, 1 = recorded before (a duplicate: not recorded again),
//!                2 = invalid (not one JSON value: do not resend),
//!                3 = not recorded (the hub's log failed, or the sender is over its
//!                    budget: resend later)
//!   flags    B   0, or 1 = COMMAND, or 2 = WAITING (only to a message with COMMANDS)
//!   run      I   and seq Q: the message answered
//!
//! reply with a command, Python struct '<4sBBBBIQQ' (28 bytes), then the command's JSON
//!   the 20 bytes above with flags 1, then
//!   id       Q   the command's id (increasing: the hub's start time in µs plus a counter)
//!   the rest     the command, one JSON value, UTF-8
//!
//! reply saying a command waits, Python struct '<4sBBBBIQI' (24 bytes)
//!   the 20 bytes above with flags 2, then
//!   need     I   the length a message must have for the reply with the command to fit
//! ```
//!
//! Commands (issue 15): a hub repeats a command in every reply to its device until a
//! message acks its id (or the command expires), since a reply can be lost; a device runs
//! each id at most once. A reply with a command is sent to an address that has not
//! authenticated only when it is no longer than the message it answers (the hub is no
//! amplifier); otherwise the reply says WAITING and how long a message must be, and the
//! sender pads its next message (PAD) to that length. A reply without a command is byte for byte the plain one, and a message
//! without COMMANDS never gets a command, so older senders are unaffected.

use super::name::{self, SourceName};
use super::{u32_at, u64_at};
use std::fmt;

pub const MAGIC: [u8; 4] = *b"UHFM";
pub const VERSION: u8 = 1;
/// Length of a message's fixed header (before the name).
pub const MESSAGE_HEADER_LEN: usize = 21;
/// Length of a reply.
pub const REPLY_LEN: usize = 20;
/// Python `struct` format of a message's fixed header.
pub const MESSAGE_STRUCT: &str = "<4sBBHIQB";
/// Python `struct` format of a reply.
pub const REPLY_STRUCT: &str = "<4sBBBxIQ";
/// Python `struct` format of a reply with a command (then the command's JSON).
pub const COMMAND_REPLY_STRUCT: &str = "<4sBBBBIQQ";
/// Length of a reply with a command, before the command's JSON.
pub const COMMAND_REPLY_HEADER_LEN: usize = 28;
/// Message flag: the sender takes commands, and an `ack` field follows its name.
pub const FLAG_COMMANDS: u16 = 1;
/// Reply flag: a command (id and JSON) follows.
pub const REPLY_FLAG_COMMAND: u8 = 1;
/// Message flag (with [`FLAG_COMMANDS`]): a pad length and padding follow the ack.
pub const FLAG_PAD: u16 = 2;
/// Reply flag: a command waits that needs a message of `need` bytes.
pub const REPLY_FLAG_WAITING: u8 = 2;
/// Length of a reply saying a command waits.
pub const WAITING_REPLY_LEN: usize = 24;
/// The shortest message with [`FLAG_COMMANDS`]: a reply saying a command waits fits it.
pub const MIN_COMMANDS_MESSAGE_LEN: usize = MESSAGE_HEADER_LEN + 1 + 8 + 1;

const KIND_MESSAGE: u8 = 0;
const KIND_REPLY: u8 = 1;

// Field offsets.
const VERSION_AT: usize = 4;
const KIND_AT: usize = 5;
const RUN_AT: usize = 8;
const SEQ_AT: usize = 12;
const NAME_LEN_AT: usize = 20;
const STATUS_AT: usize = 6;
const MSG_FLAGS_AT: usize = 6;
const REPLY_FLAGS_AT: usize = 7;
const COMMAND_ID_AT: usize = 20;

/// What the hub says about a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Recorded = 0,
    Duplicate = 1,
    Invalid = 2,
    NotRecorded = 3,
}

/// A parsed message; borrows the datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Message<'a> {
    pub run: u32,
    pub seq: u64,
    pub name: &'a str,
    /// With [`FLAG_COMMANDS`]: the sender takes commands, and acks this id (0: none yet).
    pub ack: Option<u64>,
    /// The JSON bytes, not yet checked (the seed parser does that).
    pub json: &'a [u8],
}

/// A parsed reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reply {
    pub status: Status,
    pub run: u32,
    pub seq: u64,
}

/// Why bytes that start with the magic are not a framed message or reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("{0} bytes is too short for a framed message")]
    TooShort(usize),
    #[error("not a framed message (magic)")]
    BadMagic,
    #[error("framed message version {0} is not spoken here")]
    UnknownVersion(u8),
    #[error("unknown framed message kind {0}")]
    UnknownKind(u8),
    #[error("unknown reply status {0}")]
    UnknownStatus(u8),
    #[error("the sender's name is cut short or not a valid name")]
    BadName,
}

/// True when `datagram` starts with this format's magic.
pub fn is_framed_msg(datagram: &[u8]) -> bool {
    datagram.len() >= 4 && datagram[..4] == MAGIC
}

/// The kind of a datagram with this format's magic and version.
fn kind(b: &[u8]) -> Result<u8, ParseError> {
    if b.len() <= KIND_AT {
        return Err(ParseError::TooShort(b.len()));
    }
    if b[..4] != MAGIC {
        return Err(ParseError::BadMagic);
    }
    if b[VERSION_AT] != VERSION {
        return Err(ParseError::UnknownVersion(b[VERSION_AT]));
    }
    Ok(b[KIND_AT])
}

/// Parse a message (hub side).
pub fn parse_message(b: &[u8]) -> Result<Message<'_>, ParseError> {
    match kind(b)? {
        KIND_MESSAGE => {}
        k => return Err(ParseError::UnknownKind(k)),
    }
    if b.len() < MESSAGE_HEADER_LEN {
        return Err(ParseError::TooShort(b.len()));
    }
    let len = b[NAME_LEN_AT] as usize;
    let bytes = b
        .get(MESSAGE_HEADER_LEN..MESSAGE_HEADER_LEN + len)
        .ok_or(ParseError::BadName)?;
    let name = std::str::from_utf8(bytes).map_err(|_| ParseError::BadName)?;
    name::check(name).map_err(|_| ParseError::BadName)?;
    let mut rest = MESSAGE_HEADER_LEN + len;
    let flags = u16::from_le_bytes([b[MSG_FLAGS_AT], b[MSG_FLAGS_AT + 1]]);
    let ack = if flags & FLAG_COMMANDS != 0 {
        if b.len() < rest + 8 {
            return Err(ParseError::TooShort(b.len()));
        }
        rest += 8;
        Some(u64_at(b, rest - 8))
    } else {
        None
    };
    if ack.is_some() && flags & FLAG_PAD != 0 {
        let pad = b.get(rest..rest + 2).ok_or(ParseError::TooShort(b.len()))?;
        rest += 2 + u16::from_le_bytes([pad[0], pad[1]]) as usize;
        if b.len() < rest {
            return Err(ParseError::TooShort(b.len()));
        }
    }
    Ok(Message {
        run: u32_at(b, RUN_AT),
        seq: u64_at(b, SEQ_AT),
        name,
        ack,
        json: &b[rest..],
    })
}

/// The length a message must have for a waiting command to fit its reply, when the reply
/// says so (WAITING).
pub fn parse_waiting(b: &[u8]) -> Option<usize> {
    if b.len() < WAITING_REPLY_LEN || b[REPLY_FLAGS_AT] & REPLY_FLAG_WAITING == 0 {
        return None;
    }
    Some(u32_at(b, COMMAND_ID_AT) as usize)
}

/// A reply datagram saying a command waits that needs a message of `need` bytes.
pub fn emit_waiting_reply(status: Status, run: u32, seq: u64, need: usize) -> Vec<u8> {
    let mut out = emit_reply(status, run, seq);
    out[REPLY_FLAGS_AT] = REPLY_FLAG_WAITING;
    out.extend_from_slice(&(need.min(u32::MAX as usize) as u32).to_le_bytes());
    out
}

/// The command a reply carries (its id and JSON bytes), if any; `None` for a plain reply
/// or one cut short.
pub fn parse_command(b: &[u8]) -> Option<(u64, &[u8])> {
    if b.len() < COMMAND_REPLY_HEADER_LEN || b[REPLY_FLAGS_AT] & REPLY_FLAG_COMMAND == 0 {
        return None;
    }
    Some((u64_at(b, COMMAND_ID_AT), &b[COMMAND_REPLY_HEADER_LEN..]))
}

/// Parse a reply (sender side).
pub fn parse_reply(b: &[u8]) -> Result<Reply, ParseError> {
    match kind(b)? {
        KIND_REPLY => {}
        k => return Err(ParseError::UnknownKind(k)),
    }
    if b.len() < REPLY_LEN {
        return Err(ParseError::TooShort(b.len()));
    }
    let status = match b[STATUS_AT] {
        0 => Status::Recorded,
        1 => Status::Duplicate,
        2 => Status::Invalid,
        3 => Status::NotRecorded,
        s => return Err(ParseError::UnknownStatus(s)),
    };
    Ok(Reply {
        status,
        run: u32_at(b, RUN_AT),
        seq: u64_at(b, SEQ_AT),
    })
}

/// A message datagram.
pub fn emit_message(run: u32, seq: u64, name: &SourceName, json: &[u8]) -> Vec<u8> {
    emit_message_acking(run, seq, name, None, json)
}

/// A message datagram; with `ack` (`Some(id)`, 0 for none yet) it says the sender takes
/// commands ([`FLAG_COMMANDS`]) and acks command `id`.
pub fn emit_message_acking(
    run: u32,
    seq: u64,
    name: &SourceName,
    ack: Option<u64>,
    json: &[u8],
) -> Vec<u8> {
    emit_message_padded(run, seq, name, ack, 0, json)
}

/// [`emit_message_acking`], padded (PAD) to at least `len` bytes when `ack` is given and
/// the message is shorter (at most 65,535 bytes of padding).
pub fn emit_message_padded(
    run: u32,
    seq: u64,
    name: &SourceName,
    ack: Option<u64>,
    len: usize,
    json: &[u8],
) -> Vec<u8> {
    let n = name.as_str().as_bytes();
    let natural = MESSAGE_HEADER_LEN + n.len() + if ack.is_some() { 8 } else { 0 } + json.len();
    let pad = (ack.is_some() && len > natural)
        .then(|| (len - natural).saturating_sub(2).min(u16::MAX as usize));
    let mut out = Vec::with_capacity(natural.max(len) + 2);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&[VERSION, KIND_MESSAGE]);
    let flags = match (ack, pad) {
        (None, _) => 0,
        (Some(_), None) => FLAG_COMMANDS,
        (Some(_), Some(_)) => FLAG_COMMANDS | FLAG_PAD,
    };
    out.extend_from_slice(&flags.to_le_bytes());
    out.extend_from_slice(&run.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.push(n.len() as u8);
    out.extend_from_slice(n);
    if let Some(ack) = ack {
        out.extend_from_slice(&ack.to_le_bytes());
    }
    if let Some(pad) = pad {
        out.extend_from_slice(&(pad as u16).to_le_bytes());
        out.resize(out.len() + pad, 0);
    }
    out.extend_from_slice(json);
    out
}

/// A reply datagram carrying command `id` (its `json`).
pub fn emit_reply_with_command(
    status: Status,
    run: u32,
    seq: u64,
    id: u64,
    json: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(COMMAND_REPLY_HEADER_LEN + json.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&[VERSION, KIND_REPLY, status as u8, REPLY_FLAG_COMMAND]);
    out.extend_from_slice(&run.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(json);
    out
}

/// A reply datagram.
pub fn emit_reply(status: Status, run: u32, seq: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(REPLY_LEN);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&[VERSION, KIND_REPLY, status as u8, 0]);
    out.extend_from_slice(&run.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out
}

/// The length of the shortest message: a reply is never longer.
pub const MIN_MESSAGE_LEN: usize = MESSAGE_HEADER_LEN + 1 + 1;

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Recorded => "recorded",
            Status::Duplicate => "recorded before",
            Status::Invalid => "invalid",
            Status::NotRecorded => "not recorded",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_literal_bytes() {
        // struct.pack('<4sBBHIQB', b'UHFM', 1, 0, 0, 0x01020304, 5, 2) + b'pi' + b'[1]'
        let name = SourceName::parse("pi").unwrap();
        let m = emit_message(0x0102_0304, 5, &name, b"[1]");
        assert_eq!(
            m,
            [
                b'U', b'H', b'F', b'M', 1, 0, 0, 0, 4, 3, 2, 1, 5, 0, 0, 0, 0, 0, 0, 0, 2, b'p',
                b'i', b'[', b'1', b']'
            ]
        );
        assert_eq!(
            parse_message(&m),
            Ok(Message {
                run: 0x0102_0304,
                seq: 5,
                name: "pi",
                ack: None,
                json: b"[1]"
            })
        );
        assert_eq!(parse_message(&m[..22]), Err(ParseError::BadName));
        assert_eq!(parse_message(&m[..10]), Err(ParseError::TooShort(10)));
        let mut bad = m.clone();
        bad[21] = b'/';
        assert_eq!(parse_message(&bad), Err(ParseError::BadName));
        let mut bad = m.clone();
        bad[4] = 2;
        assert_eq!(parse_message(&bad), Err(ParseError::UnknownVersion(2)));
        assert_eq!(
            parse_message(&emit_reply(Status::Recorded, 1, 1)),
            Err(ParseError::UnknownKind(1))
        );
    }

    #[test]
    fn reply_literal_bytes() {
        // struct.pack('<4sBBBxIQ', b'UHFM', 1, 1, 1, 7, 9)
        let r = emit_reply(Status::Duplicate, 7, 9);
        assert_eq!(
            r,
            [b'U', b'H', b'F', b'M', 1, 1, 1, 0, 7, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(r.len(), REPLY_LEN);
        let shortest = emit_message(7, 9, &SourceName::parse("a").unwrap(), b"1");
        assert_eq!(shortest.len(), MIN_MESSAGE_LEN);
        assert!(
            r.len() < shortest.len(),
            "a reply is never longer than a message"
        );
        assert_eq!(
            parse_reply(&r),
            Ok(Reply {
                status: Status::Duplicate,
                run: 7,
                seq: 9
            })
        );
        let mut bad = r.clone();
        bad[6] = 9;
        assert_eq!(parse_reply(&bad), Err(ParseError::UnknownStatus(9)));
    }

    #[test]
    fn command_ack_and_command_reply_literal_bytes() {
        // struct.pack('<4sBBHIQB', b'UHFM', 1, 0, 1, 7, 2, 2) + b'pi' + struct.pack('<Q', 5) + b'1'
        let name = SourceName::parse("pi").unwrap();
        let m = emit_message_acking(7, 2, &name, Some(5), b"1");
        assert_eq!(
            m,
            [
                b'U', b'H', b'F', b'M', 1, 0, 1, 0, 7, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 2, b'p',
                b'i', 5, 0, 0, 0, 0, 0, 0, 0, b'1'
            ]
        );
        let got = parse_message(&m).unwrap();
        assert_eq!((got.ack, got.json, got.name), (Some(5), &b"1"[..], "pi"));
        assert_eq!(
            parse_message(&m[..28]),
            Err(ParseError::TooShort(28)),
            "COMMANDS without its ack field"
        );
        // the old format still parses, with no ack
        assert_eq!(
            parse_message(&emit_message(7, 2, &name, b"1")).unwrap().ack,
            None
        );
        // struct.pack('<4sBBBBIQQ', b'UHFM', 1, 1, 0, 1, 7, 2, 0x0102) + b'{}'
        let r = emit_reply_with_command(Status::Recorded, 7, 2, 0x0102, b"{}");
        assert_eq!(
            r,
            [
                b'U', b'H', b'F', b'M', 1, 1, 0, 1, 7, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 2, 1, 0, 0,
                0, 0, 0, 0, b'{', b'}'
            ]
        );
        assert_eq!(r.len(), COMMAND_REPLY_HEADER_LEN + 2);
        assert_eq!(
            parse_reply(&r),
            Ok(Reply {
                status: Status::Recorded,
                run: 7,
                seq: 2
            }),
            "the reply part reads as before"
        );
        assert_eq!(parse_command(&r), Some((0x0102, &b"{}"[..])));
        assert_eq!(parse_command(&emit_reply(Status::Recorded, 7, 2)), None);
        assert_eq!(parse_command(&r[..27]), None);
    }

    #[test]
    fn waiting_reply_and_padded_message_literal_bytes() {
        // struct.pack('<4sBBBBIQI', b'UHFM', 1, 1, 0, 2, 7, 2, 300)
        let r = emit_waiting_reply(Status::Recorded, 7, 2, 300);
        assert_eq!(
            r,
            [b'U', b'H', b'F', b'M', 1, 1, 0, 2, 7, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 44, 1, 0, 0]
        );
        assert_eq!(r.len(), WAITING_REPLY_LEN);
        assert_eq!(parse_waiting(&r), Some(300));
        assert_eq!(
            parse_command(&r),
            None,
            "a waiting reply carries no command"
        );
        assert_eq!(parse_reply(&r).unwrap().seq, 2);
        assert_eq!(parse_waiting(&emit_reply(Status::Recorded, 7, 2)), None);
        let name = SourceName::parse("a").unwrap();
        assert!(emit_message_acking(7, 2, &name, Some(0), b"1").len() >= MIN_COMMANDS_MESSAGE_LEN);
        const { assert!(WAITING_REPLY_LEN <= MIN_COMMANDS_MESSAGE_LEN) };
        // struct.pack('<4sBBHIQB', b'UHFM', 1, 0, 3, 7, 2, 1) + b'a' + struct.pack('<QH', 5, 4)
        //   + bytes(4) + b'1'
        let m = emit_message_padded(7, 2, &name, Some(5), 37, b"1");
        assert_eq!(
            m,
            [
                b'U', b'H', b'F', b'M', 1, 0, 3, 0, 7, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 1, b'a', 5,
                0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 0, 0, b'1'
            ]
        );
        assert_eq!(m.len(), 37, "padded to exactly the length asked for");
        let got = parse_message(&m).unwrap();
        assert_eq!((got.ack, got.json), (Some(5), &b"1"[..]));
        assert_eq!(parse_message(&m[..35]), Err(ParseError::TooShort(35)));
        // already long enough: no padding
        let plain = emit_message_padded(7, 2, &name, Some(5), 10, b"1");
        assert_eq!(plain, emit_message_acking(7, 2, &name, Some(5), b"1"));
    }
}
