//! udphub: move camera frames and telemetry from small devices to a PC over a local network.
//!
//! The crate is laid out by what a piece of code is for:
//! - [`wire`]: every byte format on the network (the seed formats and ours), each with
//!   `parse` and `emit` and tests against literal bytes. No sockets, no state.
//! - [`proto`]: the protocol state machines (reassembly, timeouts). They own no socket and
//!   no clock: feed them datagrams and the time, they say what to send and what completed.
//! - [`hub`]: the `hub` server: one thin socket thread per service, and the consumers
//!   (statistics, saving, display, the HTTP view) that are fed without ever blocking those
//!   threads.
//! - [`client`]: `img-client` and `msg-client`: the senders, one per protocol, and the
//!   capture and send threads around them.
//! - [`relay`]: `udp-relay`, the lossy relay for testing links: a socket-free fault injector
//!   and its socket loop.
//! - [`media`]: everything OpenCV (capture, JPEG encode/decode, windows).
//! - [`latest`]: the one "latest frame wins" mailbox (the client's capture-to-send handoff,
//!   the hub's display queue and its HTTP view's frames).
//! - [`shutdown`]: the one flag every loop checks.

pub mod client;
pub mod hub;
pub mod latest;
pub mod media;
pub mod proto;
pub mod relay;
pub mod shutdown;
pub mod wire;
