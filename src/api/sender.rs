//! [`ImageSender`] and [`MsgSender`]: blocking senders with one result per call, over the
//! client's framed UDP sender ([`crate::client::img_sender::FramedUdpSender`]) and message
//! sender ([`crate::client::msg_sender::MsgSender`]).

use crate::wire::name::SourceName;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use crate::client::img_sender::{
    self, FrameOutcome, FramedUdpSender, ImgSender, Protocol, SenderOptions,
};
use crate::client::msg_sender::{self, check_message, MsgOutcome};
use crate::client::resolve_hub;
use crate::jpegcheck::check_structure;
use crate::shutdown::Shutdown;
use crate::wire::framed;

/// What became of one frame or message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// The hub acknowledged it (for a message: answered it as valid).
    pub acked: bool,
    /// From its first byte sent to the ack, when there was one.
    pub rtt: Option<Duration>,
    /// Chunks sent again for it (framed frames; 0 for messages).
    pub resends: u64,
    /// Still in flight: sent with a window of more than one frame, its outcome comes later
    /// (see [`ImageSender::flush`]).
    pub pending: bool,
    /// Why it was not acked, for people (`None` when acked or pending).
    pub lost: Option<String>,
}

impl Delivery {
    fn acked(rtt: Duration, resends: u64) -> Self {
        Delivery {
            acked: true,
            rtt: Some(rtt),
            resends,
            pending: false,
            lost: None,
        }
    }

    fn lost(why: String, resends: u64) -> Self {
        Delivery {
            acked: false,
            rtt: None,
            resends,
            pending: false,
            lost: Some(why),
        }
    }
}

/// Why a send could not be made at all (a frame or message that was sent but not acked is
/// a [`Delivery`] with `acked: false`, not an error).
#[derive(Debug)]
pub enum SendError {
    /// The bytes are not structurally one JPEG ([`crate::jpegcheck::check_structure`]:
    /// SOI, a frame header, a scan, EOI): the hub would refuse them, so they are not sent.
    NotJpeg {
        /// Length of the refused bytes.
        len: usize,
        /// What the check found.
        why: crate::jpegcheck::JpegError,
    },
    /// The frame is larger than the protocol can carry.
    TooLarge {
        /// Length of the refused frame.
        len: usize,
    },
    /// The value is not a message the hub accepts (not JSON, or over one datagram).
    BadMessage(String),
    /// The local socket failed.
    Io(io::Error),
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::NotJpeg { len, why } => {
                write!(f, "{len} bytes are not one JPEG ({why}): not sent")
            }
            SendError::TooLarge { len } => {
                write!(f, "a {len}-byte frame is too large for the framed protocol")
            }
            SendError::BadMessage(why) => write!(f, "not a message the hub accepts: {why}"),
            SendError::Io(e) => write!(f, "socket error: {e}"),
        }
    }
}

impl std::error::Error for SendError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SendError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<img_sender::SendError> for SendError {
    fn from(e: img_sender::SendError) -> Self {
        match e {
            img_sender::SendError::FrameTooLarge { len, .. } => SendError::TooLarge { len },
            img_sender::SendError::Io(e) => SendError::Io(e),
        }
    }
}

/// `HOST:PORT` (a name or an address) as one address, or an `InvalidInput` error.
fn resolve(hub: &str) -> io::Result<SocketAddr> {
    resolve_hub(hub).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

/// Sends JPEG frames to a hub in udphub's framed UDP format: every frame acked, missing
/// chunks resent, a frame given up after its ack timeout. Blocking; no thread of its own.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let hub = udphub::Hub::builder().img_port(0).no_msg().no_tcp().start()?;
/// # let addr = hub.img_addr().unwrap().to_string();
/// let jpeg = udphub::jpegcheck::filler_jpeg(1000, 1); // or a camera's JPEG bytes
/// let mut sender = udphub::ImageSender::connect(&addr)?; // e.g. "pc.local:9999"
/// let delivery = sender.send_jpeg(&jpeg)?;
/// assert!(delivery.acked, "{delivery:?}");
/// # hub.shutdown();
/// # Ok(())
/// # }
/// ```
pub struct ImageSender {
    sender: FramedUdpSender,
    /// Never triggered: a program stops by not calling again; waits end at the ack timeout.
    stop: Shutdown,
    hub: SocketAddr,
    name: String,
    window: usize,
}

/// The settings of an [`ImageSender`]; [`ImageSender::builder`] makes one.
#[derive(Clone, Debug)]
pub struct ImageSenderBuilder {
    hub: String,
    name: Option<String>,
    options: SenderOptions,
}

impl ImageSenderBuilder {
    /// The name the hub shows this camera as (default: this machine's host name): 1-64
    /// characters of `A-Z a-z 0-9 . _ -`, else [`ImageSenderBuilder::connect`] fails. Carried
    /// in chunk 0 of every frame.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Payload bytes per datagram (default 1400, which fits a 1500-byte MTU; at most 65000).
    pub fn chunk_size(mut self, bytes: usize) -> Self {
        self.options.chunk_size = bytes;
        self
    }

    /// Frames in flight at most (default 1: [`ImageSender::send_jpeg`] returns each frame's
    /// outcome). With more, `send_jpeg` returns once the frame is in the window.
    pub fn window(mut self, frames: usize) -> Self {
        self.options.window = frames;
        self
    }

    /// Longest a frame may take to be acked, resends included (default 1 s); past it the
    /// frame is given up.
    pub fn ack_timeout(mut self, timeout: Duration) -> Self {
        self.options.ack_timeout = timeout;
        self
    }

    /// Resolve the hub's address and open the socket. UDP has no connection: a hub that is
    /// not there shows as frames that are not acked.
    pub fn connect(self) -> io::Result<ImageSender> {
        let invalid = |msg: String| io::Error::new(io::ErrorKind::InvalidInput, msg);
        if self.options.chunk_size == 0 || self.options.chunk_size > framed::MAX_CHUNK_SIZE {
            return Err(invalid(format!(
                "chunk size must be 1..={}, got {}",
                framed::MAX_CHUNK_SIZE,
                self.options.chunk_size
            )));
        }
        if self.options.window == 0 {
            return Err(invalid("window must be at least 1 frame".into()));
        }
        if self.options.ack_timeout.is_zero() {
            return Err(invalid("ack timeout must be positive".into()));
        }
        let name = match &self.name {
            Some(n) => SourceName::parse(n).map_err(|e| invalid(format!("name {n:?}: {e}")))?,
            None => SourceName::of_this_host(),
        };
        let hub = resolve(&self.hub)?;
        let options = SenderOptions {
            name: Some(name.clone()),
            ..self.options
        };
        Ok(ImageSender {
            sender: FramedUdpSender::open(hub, &options)?,
            stop: Shutdown::new(),
            hub,
            name: name.to_string(),
            window: options.window,
        })
    }
}

impl ImageSender {
    /// A sender to `hub` (`HOST:PORT`, a host name or an address) with the default settings.
    pub fn connect(hub: &str) -> io::Result<ImageSender> {
        Self::builder(hub).connect()
    }

    /// Settings first, then [`ImageSenderBuilder::connect`].
    pub fn builder(hub: &str) -> ImageSenderBuilder {
        ImageSenderBuilder {
            hub: hub.to_owned(),
            name: None,
            options: SenderOptions::default(),
        }
    }

    /// The hub's address, as resolved.
    pub fn hub(&self) -> SocketAddr {
        self.hub
    }

    /// The name given to the builder.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The local address frames leave from (what the hub reports as the source).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.sender.local_addr()
    }

    /// Send one JPEG's bytes unchanged and (window 1) wait for its ack, at most the ack
    /// timeout. Bytes that are not structurally one JPEG are refused before anything is sent.
    pub fn send_jpeg(&mut self, jpeg: &[u8]) -> Result<Delivery, SendError> {
        if let Err(why) = check_structure(jpeg) {
            return Err(SendError::NotJpeg {
                len: jpeg.len(),
                why,
            });
        }
        let resent_before = self.sender.resent();
        let outcomes = self.sender.send_frame(jpeg, &self.stop)?;
        let resends = self.sender.resent() - resent_before;
        if self.window > 1 {
            return Ok(Delivery {
                acked: false,
                rtt: None,
                resends,
                pending: true,
                lost: None,
            });
        }
        Ok(outcomes
            .into_iter()
            .last()
            .map(|o| delivery_of(o, resends))
            .unwrap_or_else(|| Delivery::lost("no outcome".into(), resends)))
    }

    /// Wait (at most the ack timeout) for the frames still in flight; their outcomes, oldest
    /// first (none with window 1).
    pub fn flush(&mut self) -> Result<Vec<Delivery>, SendError> {
        let outcomes = self.sender.flush(&self.stop)?;
        Ok(outcomes.into_iter().map(|o| delivery_of(o, 0)).collect())
    }
}

fn delivery_of(outcome: FrameOutcome, resends: u64) -> Delivery {
    match outcome {
        FrameOutcome::Acked { rtt, .. } => Delivery::acked(rtt, resends),
        FrameOutcome::Lost(reason) => Delivery::lost(reason.to_string(), resends),
        FrameOutcome::NotSent => Delivery::lost("not sent".into(), resends),
        // (the framed sender behind ImageSender always has an ack; this is the TCP stream's)
        FrameOutcome::Written { .. } => {
            Delivery::lost("written, but the protocol has no ack".into(), resends)
        }
    }
}

impl fmt::Debug for ImageSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImageSender")
            .field("hub", &self.hub)
            .field("name", &self.name)
            .field("protocol", &Protocol::Framed)
            .field("window", &self.window)
            .finish()
    }
}

/// Sends JSON values to a hub's message port, one per datagram, each answered (or not)
/// within the reply timeout. Blocking.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let hub = udphub::Hub::builder().msg_port(0).no_img().no_tcp().start()?;
/// # let addr = hub.msg_addr().unwrap().to_string();
/// let mut sender = udphub::MsgSender::connect(&addr)?; // e.g. "pc.local:6666"
/// let delivery = sender.send(&serde_json::json!({"temp_c": 21.5}))?;
/// assert!(delivery.acked, "{delivery:?}");
/// # hub.shutdown();
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct MsgSender {
    sender: msg_sender::MsgSender,
}

/// The settings of a [`MsgSender`]; [`MsgSender::builder`] makes one.
#[derive(Clone, Debug)]
pub struct MsgSenderBuilder {
    hub: String,
    reply_timeout: Duration,
    name: Option<String>,
}

impl MsgSenderBuilder {
    /// Longest wait for the hub's reply to a message (default 1 s).
    pub fn reply_timeout(mut self, timeout: Duration) -> Self {
        self.reply_timeout = timeout;
        self
    }

    /// Speak udphub's framed messages under this name (1-64 characters of `A-Z a-z 0-9 .
    /// _ -`) instead of the seed format: each message carries the name, a run id and a
    /// sequence number, is resent while its reply is late, and the hub records it exactly
    /// once; commands from the hub come back ([`MsgSender::take_command`]).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Resolve the hub's address and open the socket.
    pub fn connect(self) -> io::Result<MsgSender> {
        if self.reply_timeout.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "reply timeout must be positive",
            ));
        }
        let protocol = match &self.name {
            None => msg_sender::MsgProtocol::Seed,
            Some(name) => msg_sender::MsgProtocol::Framed {
                name: SourceName::parse(name)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?,
                keys: None,
            },
        };
        let hub = resolve(&self.hub)?;
        Ok(MsgSender {
            sender: msg_sender::MsgSender::open_with(hub, self.reply_timeout, protocol)?,
        })
    }
}

impl MsgSender {
    /// A sender to `hub` (`HOST:PORT`) with a 1 s reply timeout.
    pub fn connect(hub: &str) -> io::Result<MsgSender> {
        Self::builder(hub).connect()
    }

    /// Settings first, then [`MsgSenderBuilder::connect`].
    pub fn builder(hub: &str) -> MsgSenderBuilder {
        MsgSenderBuilder {
            hub: hub.to_owned(),
            reply_timeout: Duration::from_secs(1),
            name: None,
        }
    }

    /// The next command the hub sent this device (framed, [`MsgSenderBuilder::name`]), in
    /// order, each once; commands arrive in the replies to [`MsgSender::send`].
    pub fn take_command(&mut self) -> Option<msg_sender::Command> {
        self.sender.take_command()
    }

    /// Send `value` as one JSON message and wait (at most the reply timeout) for the reply.
    pub fn send<T: serde::Serialize + ?Sized>(&mut self, value: &T) -> Result<Delivery, SendError> {
        let text =
            serde_json::to_string(value).map_err(|e| SendError::BadMessage(e.to_string()))?;
        self.send_text(&text)
    }

    /// Send JSON text as it is (checked with the hub's own parser first).
    pub fn send_text(&mut self, json: &str) -> Result<Delivery, SendError> {
        let text =
            check_message(json.as_bytes()).map_err(|e| SendError::BadMessage(e.to_string()))?;
        Ok(match self.sender.send(text).map_err(SendError::Io)? {
            MsgOutcome::Answered { rtt } => Delivery::acked(rtt, 0),
            MsgOutcome::Rejected { reply, .. } => Delivery::lost(reply, 0),
            MsgOutcome::NoReply => Delivery::lost("no reply within the reply timeout".into(), 0),
            MsgOutcome::SendFailed(e) => return Err(SendError::Io(e)),
        })
    }
}
