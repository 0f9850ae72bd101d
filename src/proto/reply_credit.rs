//! Anti-amplification: never answer an address with more bytes than it sent us.
//!
//! A UDP source address is only a claim: a datagram can carry a victim's address, and a
//! reply bigger than the request turns the hub into an amplifier aimed at the victim. QUIC's
//! rule (RFC 9000, section 8) is the anchor: before an address is validated, send it at most
//! a fixed multiple of what it sent. Here that multiple is 1 ([`UNVALIDATED_FACTOR`]): the
//! hub's replies to an address never add up to more bytes than the datagrams it got from
//! it. An address is validated once a frame from it has completed (a whole frame's bytes
//! came from it, and the frame passed its check); the framed protocol has no token a
//! sender must echo, so even then the replies stay within [`VALIDATED_FACTOR`] of what came
//! in. A legitimate sender's replies are a few percent of its data (one 28-byte ack, and
//! now and then a nack of at most 1044 bytes, per frame of 1400-byte chunks), far below
//! either bound.
//!
//! A [`ReplyCredit`] per sender address is byte accounting, no rate, kept where the
//! receiver keeps that sender's state (so it is bounded with it). Beside it one rate for
//! all unvalidated addresses together, [`UnvalidatedReplies`]: every reply is a `sendto`,
//! as costly for the hub as a receive, so a flood from thousands of new addresses (each
//! within its own credit) would otherwise double the hub's per-datagram work and crowd out
//! validated senders; together they get [`UNVALIDATED_REPLY_BYTES_PER_S`].

use crate::proto::budget::TokenBucket;
use std::time::Instant;

/// Reply bytes per byte received, before the address is validated.
pub const UNVALIDATED_FACTOR: u64 = 1;
/// Reply bytes per byte received, once it is.
pub const VALIDATED_FACTOR: u64 = 3;

/// Reply bytes per second to all unvalidated addresses together: about 2,000 acks or
/// short nacks a second, far more than the first frames of legitimate new senders need.
pub const UNVALIDATED_REPLY_BYTES_PER_S: u64 = 64 * 1024;
/// What unvalidated addresses may be sent at once, in a burst.
pub const UNVALIDATED_REPLY_BURST: u64 = 16 * 1024;

/// The one reply rate shared by every address not validated yet. Validated addresses never
/// pay it.
#[derive(Clone, Debug, Default)]
pub struct UnvalidatedReplies {
    /// Made full at the first reply (so no clock is read here).
    bucket: Option<TokenBucket>,
    refused: u64,
}

impl UnvalidatedReplies {
    /// Whether a reply of `bytes` to an address (`validated` or not) may go at `now`.
    pub fn allow(&mut self, bytes: usize, validated: bool, now: Instant) -> bool {
        if validated {
            return true;
        }
        let ok = self
            .bucket
            .get_or_insert_with(|| TokenBucket::new(UNVALIDATED_REPLY_BURST, now))
            .try_take(bytes as u64, UNVALIDATED_REPLY_BYTES_PER_S, now);
        self.refused += u64::from(!ok);
        ok
    }

    /// Replies to unvalidated addresses not sent because the shared rate was used up.
    pub fn refused(&self) -> u64 {
        self.refused
    }
}

/// Bytes received from one address and bytes sent back to it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplyCredit {
    received: u64,
    sent: u64,
}

impl ReplyCredit {
    /// A datagram of `bytes` came from the address.
    pub fn on_received(&mut self, bytes: usize) {
        self.received = self.received.saturating_add(bytes as u64);
    }

    /// Bytes that may still be sent to the address.
    pub fn available(&self, validated: bool) -> usize {
        let factor = if validated {
            VALIDATED_FACTOR
        } else {
            UNVALIDATED_FACTOR
        };
        let allowed = self.received.saturating_mul(factor);
        usize::try_from(allowed.saturating_sub(self.sent)).unwrap_or(usize::MAX)
    }

    /// Spend `bytes` if they fit; false (and nothing spent) if not.
    pub fn try_spend(&mut self, bytes: usize, validated: bool) -> bool {
        if bytes > self.available(validated) {
            return false;
        }
        self.sent += bytes as u64;
        true
    }

    pub fn sent(&self) -> u64 {
        self.sent
    }

    pub fn received(&self) -> u64 {
        self.received
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn unvalidated_addresses_share_one_reply_rate() {
        let t0 = Instant::now();
        let mut gate = UnvalidatedReplies::default();
        let sent = (0..10_000).filter(|_| gate.allow(32, false, t0)).count();
        assert_eq!(
            sent as u64,
            UNVALIDATED_REPLY_BURST / 32,
            "the burst, then nothing"
        );
        assert!(gate.allow(1044, true, t0), "validated addresses never wait");
        let t1 = t0 + Duration::from_secs(1);
        let sent = (0..10_000).filter(|_| gate.allow(32, false, t1)).count();
        assert_eq!(
            sent as u64,
            UNVALIDATED_REPLY_BURST / 32,
            "refilled up to the burst"
        );
        assert_eq!(gate.refused(), 2 * (10_000 - UNVALIDATED_REPLY_BURST / 32));
    }

    #[test]
    fn replies_never_exceed_what_came_until_validated() {
        let mut c = ReplyCredit::default();
        assert!(!c.try_spend(1, false), "nothing came yet");
        c.on_received(33);
        assert_eq!(c.available(false), 33);
        assert!(!c.try_spend(34, false));
        assert!(c.try_spend(28, false));
        assert!(!c.try_spend(6, false));
        assert!(c.try_spend(5, false));
        assert_eq!((c.sent(), c.received()), (33, 33));
        assert_eq!(c.available(true), 66, "validated: three times what came");
    }
}
