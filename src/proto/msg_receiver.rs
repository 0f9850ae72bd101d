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

use super::Transmit;
use crate::wire::seed_msg::{parse_message, MsgError, LOG_FAILED_REPLY, MSG_ACK};
use std::borrow::Cow;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Instant;

/// What a datagram is.
#[derive(Debug)]
pub enum Received<'a> {
    /// A valid message (its text, unchanged): record it, then call
    /// [`MsgReceiver::handle_recorded`]; its reply waits until then.
    Message(&'a str),
    /// Not a message; its error reply ([`MsgError::reply`]) is queued.
    Invalid(MsgError),
}

/// The message port's state. See the module documentation.
#[derive(Debug, Default)]
pub struct MsgReceiver {
    /// Senders of messages not yet reported recorded, oldest first.
    unrecorded: VecDeque<SocketAddr>,
    transmits: VecDeque<Transmit>,
}

impl MsgReceiver {
    pub fn new() -> Self {
        Self::default()
    }

    /// Look at one datagram from `from`, received at `now`.
    pub fn handle_datagram<'a>(
        &mut self,
        from: SocketAddr,
        datagram: &'a [u8],
        _now: Instant,
    ) -> Received<'a> {
        match parse_message(datagram) {
            Ok(text) => {
                self.unrecorded.push_back(from);
                Received::Message(text)
            }
            Err(e) => {
                self.reply(from, e.reply());
                Received::Invalid(e)
            }
        }
    }

    /// The oldest message not yet reported was recorded (`true`: it gets [`MSG_ACK`]) or
    /// could not be (it gets [`LOG_FAILED_REPLY`]: not recorded, so not acknowledged as
    /// received).
    pub fn handle_recorded(&mut self, recorded: bool) {
        let Some(from) = self.unrecorded.pop_front() else {
            debug_assert!(false, "handle_recorded without a message");
            return;
        };
        self.reply(from, if recorded { MSG_ACK } else { LOG_FAILED_REPLY });
    }

    /// The next reply to send, oldest first.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The message port has no timers: a reply never waits for time, only for
    /// [`MsgReceiver::handle_recorded`].
    pub fn poll_timeout(&self) -> Option<Instant> {
        None
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
        assert!(matches!(got, Received::Message("[0, 0, 0, 1]")));
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
            Received::Message(_)
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
    fn invalid_datagrams_get_their_short_error_reply_at_once() {
        let mut r = MsgReceiver::new();
        let now = Instant::now();
        assert!(matches!(
            r.handle_datagram(addr(2), &[b'[', 0xFF, b']'], now),
            Received::Invalid(MsgError::NotUtf8 { valid_up_to: 1 })
        ));
        assert!(matches!(
            r.handle_datagram(addr(3), b"[0, 0,", now),
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
}
