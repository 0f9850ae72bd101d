//! [`Hub`]: the hub inside a program. It is the same hub as the `hub` binary
//! ([`crate::hub::start_with_taps`]), with two taps the program reads: the newest frame per
//! source ([`Hub::frames`], latest wins, so a slow program skips frames rather than stalling
//! reception or growing memory) and a bounded queue of messages ([`Hub::messages`], the
//! oldest dropped when full).

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::hub::source::SourceId;
use crate::hub::{self, FrameTap, HubConfig, HubReport, MessageTap, RunningHub, Taps};
use crate::shutdown::{Shutdown, POLL_INTERVAL};

/// Messages the tap holds for the program at most, by default.
const DEFAULT_MESSAGE_QUEUE: usize = 1024;

/// One intact frame the hub received.
#[derive(Clone, Debug)]
pub struct Frame {
    /// Who sent it (service and address).
    pub source: SourceId,
    /// The name the sender gave (framed senders; `NAME#2` for a second source claiming it),
    /// `None` for the seed formats.
    pub name: Option<String>,
    /// 1-based, per source; a gap means frames the program did not take in time were
    /// replaced by newer ones (or were lost on the way).
    pub seq: u64,
    /// The JPEG bytes as sent.
    pub jpeg: Arc<Vec<u8>>,
    /// When the camera took it. Not yet on the wire: always `None` for now.
    pub captured: Option<SystemTime>,
    /// When the hub had the whole frame.
    pub received: SystemTime,
}

/// One message the hub received and answered.
#[derive(Clone, Debug)]
pub struct Message {
    /// The sender's address.
    pub source: SocketAddr,
    /// The name the sender gave (framed messages, `msg-client --name`), as shown.
    pub name: Option<String>,
    /// The JSON text as it came (valid JSON: the hub checked it).
    pub json: String,
    /// When the hub received it.
    pub received: SystemTime,
}

impl Message {
    /// The message parsed into any type serde can make (`serde_json::Value` for any).
    pub fn parse<T: serde::de::DeserializeOwned>(&self) -> serde_json::Result<T> {
        serde_json::from_str(&self.json)
    }
}

/// How to start a [`Hub`]; [`Hub::builder`] makes one with the `hub` binary's defaults
/// (every service on 127.0.0.1: images on UDP 9999, messages on UDP 6666, the TCP stream
/// on 8002).
#[derive(Clone, Debug)]
pub struct HubBuilder {
    config: HubConfig,
    keep_frames: bool,
    keep_messages: bool,
    message_queue: usize,
    shutdown: Option<Shutdown>,
}

impl HubBuilder {
    /// Bind every service on `ip` (`0.0.0.0` to accept from the LAN).
    pub fn bind(mut self, ip: IpAddr) -> Self {
        self.config.bind = ip;
        self
    }
    /// The UDP image port (0: the OS chooses; see [`Hub::img_addr`]).
    pub fn img_port(mut self, port: u16) -> Self {
        self.config.img_port = Some(port);
        self
    }
    /// The UDP message port (0: the OS chooses).
    pub fn msg_port(mut self, port: u16) -> Self {
        self.config.msg_port = Some(port);
        self
    }
    /// The TCP stream port (0: the OS chooses).
    pub fn tcp_port(mut self, port: u16) -> Self {
        self.config.tcp_port = Some(port);
        self
    }
    /// Turn the UDP image service off.
    pub fn no_img(mut self) -> Self {
        self.config.img_port = None;
        self
    }
    /// Turn the UDP message service off.
    pub fn no_msg(mut self) -> Self {
        self.config.msg_port = None;
        self
    }
    /// Turn the TCP stream service off.
    pub fn no_tcp(mut self) -> Self {
        self.config.tcp_port = None;
        self
    }
    /// Serve the web view on `addr` (as `hub --http`).
    pub fn http(mut self, addr: SocketAddr) -> Self {
        self.config.http = Some(addr);
        self
    }
    /// Also save every intact frame into `dir` (as `hub --save-dir`).
    pub fn save_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.config.save_dir = Some(dir.into());
        self
    }
    /// Every other setting, as the `hub` binary's flags set them. Replaces what the
    /// methods above set.
    pub fn config(mut self, config: HubConfig) -> Self {
        self.config = config;
        self
    }
    /// Keep the newest frame per source for [`Hub::frames`] (default true). The `hub`
    /// binary turns this off: it reads no frames.
    pub fn keep_frames(mut self, keep: bool) -> Self {
        self.keep_frames = keep;
        self
    }
    /// Queue messages for [`Hub::messages`] (default true, at most 1024 waiting).
    pub fn keep_messages(mut self, keep: bool) -> Self {
        self.keep_messages = keep;
        self
    }
    /// Messages waiting for the program at most; past it the oldest is dropped.
    pub fn message_queue(mut self, messages: usize) -> Self {
        self.message_queue = messages.max(1);
        self
    }
    /// Stop when `flag` is triggered (e.g. one with a Ctrl-C handler installed), as well as
    /// on [`Hub::shutdown`].
    pub fn shutdown_flag(mut self, flag: Shutdown) -> Self {
        self.shutdown = Some(flag);
        self
    }

    /// Bind every enabled service and start the hub's threads. Binding errors (a port in
    /// use, a bad address, an unwritable folder) come back here, before any thread starts.
    pub fn start(self) -> Result<Hub, hub::HubError> {
        let taps = Taps {
            frames: self.keep_frames.then(|| Arc::new(FrameTap::default())),
            messages: self
                .keep_messages
                .then(|| Arc::new(MessageTap::new(self.message_queue))),
        };
        let shutdown = self.shutdown.unwrap_or_default();
        let running = hub::start_with_taps(&self.config, taps.clone(), shutdown.clone())?;
        Ok(Hub {
            running: Some(running),
            shutdown,
            taps,
        })
    }
}

/// A running hub inside this program. Dropping it without [`Hub::shutdown`] stops it too
/// (its threads end within a poll interval), without waiting for them.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// let hub = udphub::Hub::builder().img_port(0).msg_port(0).no_tcp().start()?;
/// let mut frames = hub.frames();
/// # let mut cam = udphub::ImageSender::connect(&hub.img_addr().unwrap().to_string())?;
/// # cam.send_jpeg(&udphub::jpegcheck::filler_jpeg(100, 1))?;
/// if let Some(frame) = frames.recv_timeout(Duration::from_secs(5)) {
///     println!("{} frame {}: {} bytes", frame.source, frame.seq, frame.jpeg.len());
/// #   assert_eq!(frame.jpeg.len(), 100);
/// }
/// let report = hub.shutdown();
/// print!("{}", report.summary.text());
/// # Ok(())
/// # }
/// ```
pub struct Hub {
    /// `None` only once [`Hub::shutdown`] or [`Hub::wait`] took it.
    running: Option<RunningHub>,
    shutdown: Shutdown,
    taps: Taps,
}

impl Hub {
    /// Settings first, then [`HubBuilder::start`].
    pub fn builder() -> HubBuilder {
        HubBuilder {
            config: HubConfig::default(),
            keep_frames: true,
            keep_messages: true,
            message_queue: DEFAULT_MESSAGE_QUEUE,
            shutdown: None,
        }
    }

    /// The UDP image service's address, if it runs.
    pub fn img_addr(&self) -> Option<SocketAddr> {
        self.running().bound.img
    }
    /// The UDP message service's address, if it runs.
    pub fn msg_addr(&self) -> Option<SocketAddr> {
        self.running().bound.msg
    }
    /// The TCP stream service's address, if it runs.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.running().bound.tcp
    }
    /// The web view's address, if it runs.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.running().bound.http
    }
    /// Every bound address and granted receive buffer (what the `hub` binary prints).
    pub fn running(&self) -> &RunningHub {
        self.running
            .as_ref()
            .expect("present until shutdown or wait")
    }

    /// The flag that stops this hub (trigger it from any thread; [`Hub::wait`] then returns).
    pub fn shutdown_flag(&self) -> Shutdown {
        self.shutdown.clone()
    }

    /// The frames, newest per source. Take them from one [`Frames`] at a time: two would
    /// split them between each other. Empty at once when built with `keep_frames(false)`.
    pub fn frames(&self) -> Frames {
        Frames {
            tap: self.taps.frames.clone(),
            ready: VecDeque::new(),
            shutdown: self.shutdown.clone(),
        }
    }

    /// The messages, oldest first. Take them from one [`Messages`] at a time.
    pub fn messages(&self) -> Messages {
        Messages {
            tap: self.taps.messages.clone(),
            shutdown: self.shutdown.clone(),
        }
    }

    /// Messages dropped because the program did not take them in time.
    pub fn messages_dropped(&self) -> u64 {
        self.taps.messages.as_ref().map_or(0, |t| t.dropped())
    }

    /// Stop the hub, wait for its threads (each ends within a poll interval; the saver
    /// writes out what it queued) and return its summary.
    pub fn shutdown(self) -> HubReport {
        self.shutdown.trigger();
        self.wait()
    }

    /// Run until the shutdown flag is triggered (by [`HubBuilder::shutdown_flag`]'s owner,
    /// a Ctrl-C handler, or another thread), then as [`Hub::shutdown`].
    pub fn wait(mut self) -> HubReport {
        self.running
            .take()
            .expect("present until shutdown or wait")
            .wait()
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        if self.running.is_some() {
            self.shutdown.trigger();
        }
    }
}

/// The hub's frames as they come, newest per source; an [`Iterator`] that ends when the hub
/// stops, and [`Frames::recv_timeout`] for a bounded wait.
pub struct Frames {
    tap: Option<Arc<FrameTap>>,
    /// Frames taken from the tap together, handed out one by one (oldest seq first).
    ready: VecDeque<Frame>,
    shutdown: Shutdown,
}

impl Frames {
    /// The next frame, waiting at most `timeout`; `None` when none came in time (or the hub
    /// stopped, or frames are not kept).
    pub fn recv_timeout(&mut self, timeout: Duration) -> Option<Frame> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(frame) = self.ready.pop_front() {
                return Some(frame);
            }
            let tap = self.tap.as_ref()?;
            let now = Instant::now();
            if now >= deadline || self.shutdown.is_triggered() {
                return None;
            }
            let wait = (deadline - now).min(POLL_INTERVAL);
            let mut taken: Vec<Frame> = tap
                .take_all(wait)
                .into_iter()
                .map(|(source, f)| Frame {
                    source,
                    name: f.name.as_deref().map(str::to_owned),
                    seq: f.seq,
                    jpeg: f.jpeg,
                    captured: None,
                    received: f.received,
                })
                .collect();
            taken.sort_by_key(|f| f.received);
            self.ready.extend(taken);
        }
    }
}

impl Iterator for Frames {
    type Item = Frame;

    /// The next frame; `None` once the hub stops (or when frames are not kept).
    fn next(&mut self) -> Option<Frame> {
        loop {
            if let Some(frame) = self.recv_timeout(POLL_INTERVAL) {
                return Some(frame);
            }
            if self.tap.is_none() || self.shutdown.is_triggered() {
                return None;
            }
        }
    }
}

/// The hub's messages, oldest first; an [`Iterator`] that ends when the hub stops, and
/// [`Messages::recv_timeout`] for a bounded wait.
pub struct Messages {
    tap: Option<Arc<MessageTap>>,
    shutdown: Shutdown,
}

impl Messages {
    /// The next message, waiting at most `timeout`.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Option<Message> {
        let deadline = Instant::now() + timeout;
        let tap = self.tap.as_ref()?;
        loop {
            let now = Instant::now();
            let wait = deadline.saturating_duration_since(now).min(POLL_INTERVAL);
            if let Some(m) = tap.take(wait) {
                return Some(Message {
                    source: m.from,
                    name: m.name.as_deref().map(str::to_owned),
                    json: m.json,
                    received: m.received,
                });
            }
            if Instant::now() >= deadline || self.shutdown.is_triggered() {
                return None;
            }
        }
    }
}

impl Iterator for Messages {
    type Item = Message;

    /// The next message; `None` once the hub stops (or when messages are not kept).
    fn next(&mut self) -> Option<Message> {
        loop {
            if let Some(m) = self.recv_timeout(POLL_INTERVAL) {
                return Some(m);
            }
            if self.tap.is_none() || self.shutdown.is_triggered() {
                return None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::{Hub, ImageSender, MsgSender, SendError};
    use std::time::Duration;

    const LONG: Duration = Duration::from_secs(20);

    fn fake_jpeg(len: usize, seed: u8) -> Vec<u8> {
        crate::jpegcheck::filler_jpeg(len, u64::from(seed))
    }

    #[test]
    fn frames_and_messages_sent_through_the_api_reach_the_embedded_hub() {
        let hub = Hub::builder()
            .img_port(0)
            .msg_port(0)
            .no_tcp()
            .start()
            .unwrap();
        let mut cam = ImageSender::builder(&hub.img_addr().unwrap().to_string())
            .name("cam-1")
            .chunk_size(1000)
            .ack_timeout(LONG)
            .connect()
            .unwrap();
        assert_eq!(cam.name(), "cam-1");
        let jpeg = fake_jpeg(5000, 7);
        let d = cam.send_jpeg(&jpeg).unwrap();
        assert!(d.acked && !d.pending && d.lost.is_none(), "{d:?}");
        assert!(d.rtt.is_some());
        let frame = hub.frames().recv_timeout(LONG).expect("a frame");
        assert_eq!(*frame.jpeg, jpeg);
        assert_eq!(frame.seq, 1);
        assert_eq!(
            frame.name.as_deref(),
            Some("cam-1"),
            "the name came on the wire"
        );
        assert_eq!(frame.source.addr.port(), cam.local_addr().unwrap().port());

        let mut msg = MsgSender::connect(&hub.msg_addr().unwrap().to_string()).unwrap();
        let d = msg.send(&serde_json::json!({"n": 1})).unwrap();
        assert!(d.acked, "{d:?}");
        let m = hub.messages().recv_timeout(LONG).expect("a message");
        assert_eq!(m.parse::<serde_json::Value>().unwrap()["n"], 1);
        let text = hub.shutdown().summary.text();
        assert!(text.contains("images (udp): 1 frames"), "{text}");
        assert!(text.contains("messages (udp): 1 messages"), "{text}");
    }

    #[test]
    fn a_framed_api_sender_takes_the_commands_the_hub_sends_it() {
        use std::io::{Read, Write};
        let hub = Hub::builder()
            .msg_port(0)
            .no_img()
            .no_tcp()
            .http("127.0.0.1:0".parse().unwrap())
            .start()
            .unwrap();
        let addr = hub.msg_addr().unwrap().to_string();
        let bad = MsgSender::builder(&addr).name("no spaces").connect();
        assert_eq!(bad.unwrap_err().kind(), std::io::ErrorKind::InvalidInput);
        let mut msg = MsgSender::builder(&addr).name("arm-9").connect().unwrap();
        assert!(msg.send(&serde_json::json!({"hello": 1})).unwrap().acked);

        let body = r#"{"grip":true}"#;
        let mut http = std::net::TcpStream::connect(hub.http_addr().unwrap()).unwrap();
        http.set_read_timeout(Some(LONG)).unwrap();
        write!(
            http,
            "POST /api/sources/arm-9/command HTTP/1.1\r\nHost: hub\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut answer = String::new();
        http.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");

        let mut got = Vec::new();
        for i in 0..50 {
            // a bounded number of messages; the command rides a reply
            assert!(msg.send(&serde_json::json!({"i": i})).unwrap().acked);
            got.extend(std::iter::from_fn(|| msg.take_command()));
            if !got.is_empty() {
                break;
            }
        }
        for i in 0..5 {
            msg.send(&serde_json::json!({"after": i})).unwrap();
            got.extend(std::iter::from_fn(|| msg.take_command()));
        }
        assert_eq!(got.len(), 1, "once: {got:?}");
        assert_eq!(got[0].json, body);
        hub.shutdown();
    }

    #[test]
    fn a_slow_program_gets_the_newest_frame_per_source() {
        let hub = Hub::builder()
            .img_port(0)
            .no_msg()
            .no_tcp()
            .start()
            .unwrap();
        let mut cam = ImageSender::builder(&hub.img_addr().unwrap().to_string())
            .ack_timeout(LONG)
            .connect()
            .unwrap();
        for i in 0..5u8 {
            assert!(cam.send_jpeg(&fake_jpeg(300, i)).unwrap().acked);
        }
        let mut frames = hub.frames();
        let frame = frames.recv_timeout(LONG).expect("a frame");
        assert_eq!(
            (frame.seq, *frame.jpeg == fake_jpeg(300, 4)),
            (5, true),
            "only the newest is kept"
        );
        assert!(frames.recv_timeout(Duration::ZERO).is_none());
        hub.shutdown();
    }

    #[test]
    fn bad_input_is_refused_with_a_clear_error_before_sending() {
        let mut cam = ImageSender::connect("127.0.0.1:9").unwrap();
        let err = cam.send_jpeg(b"not a jpeg").unwrap_err();
        assert!(matches!(err, SendError::NotJpeg { len: 10, .. }), "{err}");
        assert!(err.to_string().contains("FF D8"), "{err}");
        // SOI, a byte, EOI: shaped like a JPEG, but no image
        let err = cam.send_jpeg(&[0xFF, 0xD8, 0x00, 0xFF, 0xD9]).unwrap_err();
        assert!(err.to_string().contains("not one JPEG"), "{err}");
        let err = ImageSender::connect("no-port-here").unwrap_err();
        assert!(err.to_string().contains("HOST:PORT"), "{err}");
        let err = ImageSender::builder("127.0.0.1:9")
            .window(0)
            .connect()
            .unwrap_err();
        assert!(err.to_string().contains("window"), "{err}");
        let mut msg = MsgSender::connect("127.0.0.1:9").unwrap();
        let err = msg.send_text("{not json").unwrap_err();
        assert!(matches!(err, SendError::BadMessage(_)), "{err}");
    }

    #[test]
    fn a_hub_that_is_not_there_gives_an_unacked_delivery_within_the_timeout() {
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut cam = ImageSender::builder(&silent.local_addr().unwrap().to_string())
            .ack_timeout(Duration::from_millis(200))
            .connect()
            .unwrap();
        let d = cam.send_jpeg(&fake_jpeg(3000, 1)).unwrap();
        assert!(!d.acked && d.lost.is_some(), "{d:?}");
    }
}
