//! Protocol state machines: no sockets, no clock of their own.
//!
//! Feed them datagrams and the current time; they return what to send back and what was
//! completed, through `poll_transmit` and `poll_event`, in the style of quinn-proto. Unit
//! tests drive loss, duplication, reordering and timeouts through them without a socket or
//! a sleep; the socket threads in [`crate::hub`] only move bytes in and out.

pub mod framed_receiver;
pub mod framed_sender;
pub mod image_receiver;
pub mod seed_reassembly;

use std::borrow::Cow;
use std::net::SocketAddr;

/// A datagram the state machine wants sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    pub to: SocketAddr,
    pub payload: Cow<'static, [u8]>,
}

#[cfg(test)]
mod framed_tests;
