//! Protocol state machines: no sockets, no clock of their own.
//!
//! Each is fed what arrived (`handle_datagram`, or `handle_bytes` for the TCP stream) and
//! the current time, and answers in the style of quinn-proto: `poll_transmit` gives what to
//! send as a [`Transmit`] (the one shape, for the hub's receivers and the client's sender
//! alike), `poll_event` what was completed, and `poll_timeout` when to call
//! `handle_timeout` next (`None`: no timer running). So unit tests drive loss,
//! duplication, reordering and timeouts through them without a socket or a sleep, and the
//! socket loops in [`crate::hub`] only move bytes in and out, blocking until the earlier of
//! `poll_timeout` and the shutdown poll interval.
//!
//! - [`image_receiver`]: the image port, the seed UDP formats ([`seed_reassembly`]) and the
//!   framed one ([`framed_receiver`]) on one socket;
//! - [`framed_sender`]: the client's side of the framed format, and [`fec`]: how many
//!   parity shards it adds per frame (issue 13);
//! - [`adapt`]: the camera client's choice of quality, size, frame rate and window from
//!   the acks (issue 13);
//! - [`seed_tcp`]: the seed TCP stream, one decoder per connection (nothing is sent back);
//! - [`msg_receiver`]: the message port's replies, and log before ack, within a budget;
//! - [`memory`], [`reply_credit`]: what the image receivers charge per source: partial-frame
//!   memory (fair shares) and reply bytes (no amplification).
//! - [`budget`]: a token bucket, and one rate shared fairly by the sources using it.
//! - [`commands`]: commands waiting per source for a reply to carry them to the device.

pub mod adapt;
pub mod budget;
pub mod commands;
pub mod fec;
pub mod framed_receiver;
pub mod framed_sender;
pub mod image_receiver;
pub mod memory;
pub mod msg_receiver;
pub mod reply_credit;
pub mod secure_gate;
pub mod secure_image;
pub mod seed_reassembly;
pub mod seed_tcp;

use std::borrow::Cow;
use std::net::SocketAddr;

/// A datagram the state machine wants sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    pub to: SocketAddr,
    pub payload: Cow<'static, [u8]>,
}

/// What an event counts as in the hub's statistics (one counter per kind).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// An intact frame or message.
    Frame,
    /// Complete, but not valid (not a JPEG, chunks out of place).
    Corrupt,
    /// Given up part-way (lost datagrams, a timeout, a connection ended mid-frame).
    Dropped,
    /// Not used at all (a bad header, stray data).
    Rejected,
}

#[cfg(test)]
mod framed_tests;
