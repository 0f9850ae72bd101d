//! The library's front door: a few blocking types for programs that send frames and
//! messages to a hub, or embed a hub and take what it receives. Re-exported at the crate
//! root, so `udphub::ImageSender` is all a program names.
//!
//! - [`ImageSender`]: JPEG bytes to a hub in udphub's framed UDP format (acked, missing
//!   chunks resent), one call per frame: `ImageSender::connect("pc:9999")?.send_jpeg(&jpeg)?`.
//! - [`MsgSender`]: one JSON value per datagram, answered by the hub:
//!   `MsgSender::connect("pc:6666")?.send(&value)?`.
//! - [`Hub`]: the hub inside a program: [`Hub::builder`] … [`HubBuilder::start`], then
//!   [`Hub::frames`] (the newest frame per source, so a slow program never stalls
//!   reception), [`Hub::messages`] and [`Hub::shutdown`].
//!
//! Why a layer over [`crate::client`] and [`crate::hub`]: those are built for the binaries
//! (flags, status lines, counters per run); here a program gets one call per thing it wants
//! and one result per call, with every wait bounded by a timeout it can set. Everything runs
//! on std threads; there is no async runtime, and nothing here needs OpenCV or the CLI
//! crates (it builds with `--no-default-features`).
#![warn(missing_docs)]

mod embed;
mod sender;

pub use embed::{Frame, Frames, Hub, HubBuilder, Message, Messages};
pub use sender::{
    Delivery, ImageSender, ImageSenderBuilder, MsgSender, MsgSenderBuilder, SendError,
};
