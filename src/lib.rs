//! udphub: move camera frames and telemetry from small devices to a PC over a local network.
//!
//! The crate is laid out by what a piece of code is for:
//! - [`wire`]: every byte format on the network (the seed formats and ours), each with
//!   `parse` and `emit` and tests against literal bytes. No sockets, no state.
//! - [`jpegcheck`]: the JPEG payload check: SOI/EOI, and a walk of the markers and the
//!   Huffman-coded data without decoding pixels. The seed chunked format has no checksum,
//!   so this walk is what rejects a frame whose datagrams were swapped, lost or duplicated.
//! - [`proto`]: the protocol state machines (reassembly, timeouts). They own no socket and
//!   no clock: feed them datagrams and the time, they say what to send and what completed.
//! - [`hub`]: the `hub` server: one thin socket thread per service, and the consumers
//!   (statistics, saving, display, the HTTP view) that are fed without ever blocking those
//!   threads.
//! - [`client`]: `img-client` and `msg-client`: the senders, one per protocol, and the
//!   capture and send threads around them.
//! - [`relay`]: `udp-relay`, the lossy relay for testing links: a socket-free fault injector
//!   and its socket loop.
//! - [`media`]: everything OpenCV (capture, JPEG encode/decode, windows); only with the
//!   `opencv` feature (on by default).
//! - [`latest`]: the one "latest frame wins" mailbox (the client's capture-to-send handoff,
//!   the hub's display queue and its HTTP view's frames).
//! - [`shutdown`]: the one flag every loop checks.
//! - [`api`]: the library's front door, re-exported at the crate root: [`ImageSender`],
//!   [`MsgSender`] and [`Hub`].
//!
//! # Cargo features
//! - `opencv` (default): [`media`], the camera client's run loop and `hub --display`.
//! - `cli` (default): the binaries (flag parsing, logging, Ctrl-C).
//!
//! `cargo build --no-default-features` builds the rest: the wire formats, the protocol
//! state machines, the senders of JPEG bytes, the MJPEG splitter and the embeddable hub.

pub mod api;
pub mod client;
pub mod hub;
pub mod jpegcheck;
pub mod latest;
#[cfg(feature = "opencv")]
pub mod media;
pub mod mqtt;
pub mod proto;
pub mod relay;
pub mod secure;
pub mod shutdown;
pub mod wire;

pub use api::{
    Delivery, Frame, Hub, HubBuilder, ImageSender, ImageSenderBuilder, Message, MsgSender,
    SendError,
};
