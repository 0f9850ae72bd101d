//! Protocol state machines: no sockets, no clock of their own.
//!
//! Feed them datagrams and the current time; they return what to send back and what was
//! completed, through `poll_transmit` and `poll_event`, in the style of quinn-proto. Unit
//! tests drive loss, duplication, reordering and timeouts through them without a socket or
//! a sleep; the socket threads in [`crate::hub`] only move bytes in and out.

pub mod framed_receiver;
pub mod framed_sender;
pub mod image_receiver;
pub mod msg_receiver;
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
