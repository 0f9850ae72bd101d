//! Seed 002's UDP message format: one JSON value per datagram, UTF-8 (`json.dumps(data).encode()`).
//!
//! The receiver answers a valid message with [`MSG_ACK`]. Ours also answers an unusable
//! datagram with a short error reply (never longer than [`MAX_ERROR_REPLY`] bytes, so a
//! forged source address cannot turn the hub into an amplifier), and a valid message it
//! could not record with [`LOG_FAILED_REPLY`]; a seed client simply prints either like any
//! other reply.

use serde::de::IgnoredAny;
use std::fmt;

/// The seed server's reply to every message: `"get the msg"`.
pub const MSG_ACK: &[u8] = b"get the msg";

/// The reply when a valid message could not be recorded (written to the hub's message
/// log): not recorded, so not acknowledged as received.
pub const LOG_FAILED_REPLY: &[u8] = b"error: the hub could not record the message";

/// No error reply is longer than this.
pub const MAX_ERROR_REPLY: usize = 64;

/// Why a datagram is not a message.
#[derive(Debug)]
pub enum MsgError {
    /// Not valid UTF-8; `valid_up_to` bytes were.
    NotUtf8 { valid_up_to: usize },
    /// UTF-8, but not exactly one JSON value.
    NotJson(serde_json::Error),
}

impl MsgError {
    /// The short reply sent back for this error (at most [`MAX_ERROR_REPLY`] bytes).
    pub fn reply(&self) -> &'static [u8] {
        match self {
            MsgError::NotUtf8 { .. } => b"error: message is not valid UTF-8",
            MsgError::NotJson(_) => b"error: message is not valid JSON",
        }
    }
}

impl fmt::Display for MsgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MsgError::NotUtf8 { valid_up_to } => {
                write!(f, "not valid UTF-8 after byte {valid_up_to}")
            }
            MsgError::NotJson(e) => write!(f, "not valid JSON: {e}"),
        }
    }
}

impl std::error::Error for MsgError {}

/// Check that a datagram is one UTF-8 JSON value and return its text, unchanged.
///
/// The text is kept as sent rather than re-serialised, so nothing is lost (numbers beyond
/// f64 precision, key order, formatting).
pub fn parse_message(datagram: &[u8]) -> Result<&str, MsgError> {
    let text = std::str::from_utf8(datagram).map_err(|e| MsgError::NotUtf8 {
        valid_up_to: e.valid_up_to(),
    })?;
    serde_json::from_str::<IgnoredAny>(text).map_err(MsgError::NotJson)?;
    Ok(text)
}

/// The JSON text on one line: in valid JSON, CR and LF can only be whitespace between tokens
/// (inside strings they must be escaped), so replacing them with spaces keeps the value.
pub fn single_line(json_text: &str) -> std::borrow::Cow<'_, str> {
    if json_text.contains(['\n', '\r']) {
        json_text.replace(['\n', '\r'], " ").into()
    } else {
        json_text.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_seed_message() {
        // json.dumps([0,0,0,1]).encode()
        let seed = b"[0, 0, 0, 1]";
        assert_eq!(parse_message(seed).unwrap(), "[0, 0, 0, 1]");
        assert_eq!(MSG_ACK, "get the msg".as_bytes());
    }

    #[test]
    fn keeps_big_numbers_exactly() {
        let text = b"[123456789012345678901234567890, 0.1000000000000000055511151231257827]";
        assert_eq!(parse_message(text).unwrap().as_bytes(), text);
    }

    #[test]
    fn rejects_non_utf8_and_non_json_with_short_replies() {
        let e = parse_message(&[b'[', 0xFF, b']']).unwrap_err();
        assert!(matches!(e, MsgError::NotUtf8 { valid_up_to: 1 }));
        assert!(e.reply().len() <= MAX_ERROR_REPLY);
        assert!(LOG_FAILED_REPLY.starts_with(b"error: "));
        assert!(LOG_FAILED_REPLY.len() <= MAX_ERROR_REPLY);
        for bad in [&b"[0, 0,"[..], b"", b"[1] [2]", b"hello"] {
            let e = parse_message(bad).unwrap_err();
            assert!(matches!(e, MsgError::NotJson(_)), "{bad:?}");
            assert!(e.reply().starts_with(b"error: "));
            assert!(e.reply().len() <= MAX_ERROR_REPLY);
        }
    }

    #[test]
    fn single_line_keeps_the_value() {
        let text = "[1,\r\n 2,\n{\"a\": \"x\\ny\"}]";
        let line = single_line(text);
        assert!(!line.contains('\n') && !line.contains('\r'));
        let a: serde_json::Value = serde_json::from_str(text).unwrap();
        let b: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(a, b);
    }
}
