//! The image port with keys (`hub --key --authorized-keys`): encrypted framed datagrams
//! from authorized devices, silence for everyone else.
//!
//! Secure datagrams ([`crate::secure::wire`], magic `UHS`) go to the
//! [`Responder`](crate::secure::session::Responder): a handshake initiation from an authorized key is answered (a response
//! smaller than the initiation), a transport datagram that authenticates gives back the
//! plain framed datagram inside, which a framed receiver of its own reassembles. A frame it
//! delivers carries the name the authorized-keys file gives the device's key, whatever name
//! the plaintext claims: a device cannot take another's name. The receiver's acks and
//! nacks are sealed in the device's session before they go back.
//!
//! Unauthenticated datagrams (plain framed, every seed format) are refused, silently (no
//! reply), except from the `--allow-plain` ranges. Every refusal is reported as an event
//! so the service can count it.
//!
//! The keys part is a [`SecureGate`] ([`super::secure_gate`]: the responder, the device
//! addresses' sessions, the initiation rate), as at the message port.
//!
//! No socket, no clock: the time is passed in.

use super::framed_receiver::{FramedConfig, FramedEvent, FramedReceiver};
use super::secure_gate::{Opened, Refusal, SecureGate, SecurityConfig};
use super::Transmit;
use crate::secure::authorized::AuthorizedKeys;
use crate::wire::framed;
use std::borrow::Cow;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

/// The secure side of the image port. See the module documentation.
pub struct SecureImage {
    gate: SecureGate,
    framed: FramedReceiver,
    transmits: VecDeque<Transmit>,
    refused: VecDeque<(SocketAddr, Refusal)>,
}

impl SecureImage {
    pub fn new(security: SecurityConfig, framed: FramedConfig) -> Self {
        SecureImage {
            gate: SecureGate::new(security),
            framed: FramedReceiver::new(framed),
            transmits: VecDeque::new(),
            refused: VecDeque::new(),
        }
    }

    /// New authorized keys (a reload): a removed key's sessions end at once.
    pub fn set_keys(&mut self, keys: Arc<AuthorizedKeys>) {
        self.gate.set_keys(keys);
    }

    /// Whether an unauthenticated datagram from `from` may be looked at.
    pub fn allows_plain(&self, from: SocketAddr) -> bool {
        self.gate.allows_plain(from)
    }

    /// Whether `data` is a secure datagram (for this side to take).
    pub fn is_secure(data: &[u8]) -> bool {
        SecureGate::is_secure(data)
    }

    /// Count an unauthenticated datagram refused.
    pub fn refuse_plain(&mut self, from: SocketAddr) {
        self.refused.push_back((from, Refusal::Plain));
    }

    /// One secure datagram from `from`.
    pub fn handle_datagram(&mut self, from: SocketAddr, data: &[u8], now: Instant) {
        match self.gate.open(from, data, now) {
            Opened::Reply(response) => self.transmits.push_back(Transmit {
                to: from,
                payload: Cow::Owned(response),
            }),
            Opened::Refused(reason) => self.refused.push_back((from, reason)),
            Opened::Plaintext { plaintext, .. } => {
                if !framed::is_framed(&plaintext) {
                    return self.refused.push_back((from, Refusal::NotFramed));
                }
                self.framed.handle_datagram(from, &plaintext, now);
                self.seal_replies();
            }
        }
    }

    /// The framed receiver's replies, sealed in the session of the address they go to
    /// (one whose session ended gets none).
    fn seal_replies(&mut self) {
        while let Some(t) = self.framed.poll_transmit() {
            if let Some(sealed) = self.gate.seal(t.to, &t.payload) {
                self.transmits.push_back(Transmit {
                    to: t.to,
                    payload: Cow::Owned(sealed),
                });
            }
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.framed.poll_timeout()
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.framed.handle_timeout(now);
        self.seal_replies();
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next refusal, to count.
    pub fn poll_refused(&mut self) -> Option<(SocketAddr, Refusal)> {
        self.refused.pop_front()
    }

    /// The next framed event, a delivered frame named by its device's key.
    pub fn poll_event(&mut self) -> Option<FramedEvent> {
        let mut event = self.framed.poll_event()?;
        if let FramedEvent::Frame { from, name, .. } = &mut event {
            *name = self.gate.name_at(*from).cloned();
        }
        Some(event)
    }

    /// Frames rebuilt from parity by the framed receiver inside.
    pub fn rebuilt(&self) -> super::framed_receiver::Rebuilt {
        self.framed.rebuilt()
    }

    pub fn partial_bytes(&self) -> usize {
        self.framed.partial_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jpegcheck::filler_jpeg;
    use crate::proto::framed_sender::{FrameMeta, FramedSender, SenderConfig, SenderEvent};
    use crate::proto::image_receiver::{ImageConfig, ImageEvent, ImageReceiver};
    use crate::proto::secure_gate::INITIATION_BURST;
    use crate::secure::cipher::Cipher;
    use crate::secure::keys::PrivateKey;
    use crate::secure::keys::{generate, PublicKey};
    use crate::secure::session::Initiator;
    use crate::wire::name::SourceName;
    use std::collections::HashMap;
    use std::time::Duration;

    const HUB: &str = "127.0.0.1:9999";
    const CAMERA: &str = "127.0.0.1:40000";

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn keys_for(entries: &[(&PublicKey, &str)]) -> Arc<AuthorizedKeys> {
        let by_key: HashMap<PublicKey, SourceName> = entries
            .iter()
            .map(|(k, n)| (**k, SourceName::parse(n).unwrap()))
            .collect();
        Arc::new(AuthorizedKeys { by_key })
    }

    /// A device: a framed sender whose datagrams go through its initiator.
    struct Device {
        at: SocketAddr,
        sender: FramedSender,
        secure: Initiator,
    }

    impl Device {
        fn new(at: &str, key: PrivateKey, hub: PublicKey, claim: &str, now: Instant) -> Device {
            let config = SenderConfig {
                name: Some(SourceName::parse(claim).unwrap()),
                ..SenderConfig::default()
            };
            Device {
                at: addr(at),
                sender: FramedSender::new(config, addr(HUB), 7, now),
                secure: Initiator::new(key, hub, now),
            }
        }

        /// Everything the device would send now: handshakes, then sealed chunks.
        fn outgoing(&mut self, now: Instant) -> Vec<Vec<u8>> {
            let mut out = Vec::new();
            out.extend(self.secure.poll_transmit(now));
            if self.secure.is_established() {
                while let Some(c) = self.sender.poll_chunk(now) {
                    let plain = [&c.header[..], c.payload()].concat();
                    out.extend(self.secure.seal(&plain, now));
                }
                out.extend(self.secure.poll_transmit(now));
            }
            out
        }

        fn incoming(&mut self, datagram: &[u8], now: Instant) {
            if let Ok(Some(plain)) = self.secure.handle_datagram(datagram, now) {
                self.sender.handle_datagram(&plain, now);
            }
        }
    }

    /// Run device <-> hub exchanges until quiet (bounded); the hub's events.
    fn exchange(dev: &mut Device, hub: &mut ImageReceiver, now: Instant) -> Vec<ImageEvent> {
        let mut events = Vec::new();
        for _ in 0..20 {
            let out = dev.outgoing(now);
            let mut back = Vec::new();
            for d in &out {
                hub.handle_datagram(dev.at, d, now);
                while let Some(t) = hub.poll_transmit() {
                    assert!(t.payload.len() <= d.len(), "no amplification");
                    back.push(t.payload.into_owned());
                }
            }
            events.extend(std::iter::from_fn(|| hub.poll_event()));
            for b in &back {
                dev.incoming(b, now);
            }
            if out.is_empty() && back.is_empty() {
                break;
            }
        }
        events
    }

    fn delivered(events: &[ImageEvent]) -> Vec<Option<String>> {
        events
            .iter()
            .filter_map(|e| match e {
                ImageEvent::Framed(FramedEvent::Frame { name, .. })
                | ImageEvent::Secure(FramedEvent::Frame { name, .. }) => {
                    Some(name.as_ref().map(|n| n.to_string()))
                }
                _ => None,
            })
            .collect()
    }

    fn refusals(events: &[ImageEvent]) -> Vec<&'static str> {
        events
            .iter()
            .filter_map(|e| match e {
                ImageEvent::Refused { reason, .. } => Some(reason.as_str()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn an_authorized_device_delivers_under_its_file_name_and_nothing_else_gets_in() {
        let now = Instant::now();
        let (hub_key, hub_public) = generate().unwrap();
        let (cam_key, cam_public) = generate().unwrap();
        let (door_key, door_public) = generate().unwrap();
        let keys = keys_for(&[(&cam_public, "garden"), (&door_public, "door")]);
        let mut hub = ImageReceiver::with_security(
            ImageConfig::default(),
            SecurityConfig {
                key: hub_key,
                keys: keys.clone(),
                allow_plain: vec!["10.0.0.0/8".parse().unwrap()],
            },
        );
        // the garden camera claims to be "door" in its plaintext: the file's name wins
        let mut cam = Device::new(CAMERA, cam_key, hub_public, "door", now);
        let jpeg = filler_jpeg(5000, 1);
        cam.sender
            .send_frame(Arc::new(jpeg.clone()), FrameMeta::default(), now)
            .unwrap();
        let events = exchange(&mut cam, &mut hub, now);
        assert_eq!(delivered(&events), [Some("garden".to_string())]);
        assert!(matches!(
            cam.sender.poll_event(),
            Some(SenderEvent::Acked { .. })
        ));

        // a forged plain framed datagram with the camera's address and stream id: refused
        let mut forger = FramedSender::new(SenderConfig::default(), addr(HUB), 7, now);
        forger
            .send_frame(Arc::new(filler_jpeg(500, 9)), FrameMeta::default(), now)
            .unwrap();
        let forged = forger.poll_transmit(now).unwrap();
        hub.handle_datagram(addr(CAMERA), &forged.payload, now);
        assert!(hub.poll_transmit().is_none(), "silence");
        let events: Vec<_> = std::iter::from_fn(|| hub.poll_event()).collect();
        assert_eq!(refusals(&events), ["unauthenticated"]);
        // ... but from a trusted range it is taken, as before
        hub.handle_datagram(addr("10.1.2.3:5000"), &forged.payload, now);
        let events: Vec<_> = std::iter::from_fn(|| hub.poll_event()).collect();
        assert_eq!(delivered(&events), [None], "a plain sender has no name");
        let ack = hub.poll_transmit().expect("the trusted sender's ack");
        assert_eq!(ack.to, addr("10.1.2.3:5000"));

        // the next genuine frame, replayed and tampered with on the way
        cam.sender
            .send_frame(Arc::new(jpeg.clone()), FrameMeta::default(), now)
            .unwrap();
        let out = cam.outgoing(now);
        assert_eq!(out.len(), 4, "5000 bytes in 1400-byte chunks");
        let mut flipped = out[1].clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        hub.handle_datagram(cam.at, &flipped, now);
        for d in &out {
            hub.handle_datagram(cam.at, d, now);
        }
        hub.handle_datagram(cam.at, &out[0], now + Duration::from_secs(5));
        let events: Vec<_> = std::iter::from_fn(|| hub.poll_event()).collect();
        assert_eq!(delivered(&events), [Some("garden".to_string())], "once");
        assert_eq!(refusals(&events), ["tampered", "replayed"]);
        let acks: Vec<Transmit> = std::iter::from_fn(|| hub.poll_transmit()).collect();
        assert!(
            !acks.is_empty() && acks.iter().all(|t| t.to == cam.at),
            "sealed to the camera"
        );

        // an unknown key: no answer at all
        let (stranger, _) = generate().unwrap();
        let mut s = Device::new("127.0.0.1:40001", stranger, hub_public, "garden", now);
        for d in s.outgoing(now) {
            hub.handle_datagram(s.at, &d, now);
            assert!(
                hub.poll_transmit().is_none(),
                "silence toward an unknown key"
            );
        }
        let events: Vec<_> = std::iter::from_fn(|| hub.poll_event()).collect();
        assert_eq!(refusals(&events), ["unknown_key"]);

        // the door device is revoked: its session's next datagram is refused
        let mut door = Device::new("127.0.0.1:40002", door_key, hub_public, "door", now);
        door.sender
            .send_frame(Arc::new(jpeg.clone()), FrameMeta::default(), now)
            .unwrap();
        assert_eq!(
            delivered(&exchange(&mut door, &mut hub, now)),
            [Some("door".into())]
        );
        hub.set_keys(keys_for(&[(&cam_public, "garden")]));
        door.sender
            .send_frame(Arc::new(jpeg), FrameMeta::default(), now)
            .unwrap();
        let events = exchange(&mut door, &mut hub, now);
        assert!(delivered(&events).is_empty());
        assert!(
            refusals(&events).contains(&"unknown_session"),
            "{:?}",
            refusals(&events)
        );
    }

    #[test]
    fn a_gate_seals_replies_to_devices_and_passes_plain_ones_through() {
        let now = Instant::now();
        let (hub_key, hub_public) = generate().unwrap();
        let (dev_key, dev_public) = generate().unwrap();
        let mut gate = SecureGate::new(SecurityConfig {
            key: hub_key,
            keys: keys_for(&[(&dev_public, "rover")]),
            allow_plain: vec!["10.0.0.0/8".parse().unwrap()],
        });
        let mut dev = Initiator::new(dev_key, hub_public, now);
        let init = dev.poll_transmit(now).unwrap();
        let Opened::Reply(response) = gate.open(addr(CAMERA), &init, now) else {
            panic!("the handshake is answered")
        };
        assert!(dev.handle_datagram(&response, now).unwrap().is_none());
        let sealed = dev.seal(b"hello", now).unwrap();
        match gate.open(addr(CAMERA), &sealed, now) {
            Opened::Plaintext { name, plaintext } => {
                assert_eq!((name.as_str(), &plaintext[..]), ("rover", &b"hello"[..]))
            }
            other => panic!("{other:?}"),
        }
        let reply = |to: &str| Transmit {
            to: addr(to),
            payload: Cow::Borrowed(&b"answer"[..]),
        };
        // the device's reply goes sealed, and opens at the device
        let out = gate.seal_reply(reply(CAMERA)).unwrap();
        assert_ne!(&out.payload[..], b"answer");
        assert_eq!(
            dev.handle_datagram(&out.payload, now).unwrap().unwrap(),
            b"answer"
        );
        // a plain sender's reply goes as it is
        let plain = gate.seal_reply(reply("10.1.2.3:5000")).unwrap();
        assert_eq!(&plain.payload[..], b"answer");
        // once the device's key is gone its session cannot seal: no reply, never in clear
        gate.set_keys(keys_for(&[]));
        assert!(gate.seal_reply(reply(CAMERA)).is_none());
    }

    #[test]
    fn initiations_past_a_sources_share_are_dropped_before_any_cryptography() {
        let now = Instant::now();
        let (hub_key, hub_public) = generate().unwrap();
        let (dev_key, dev_public) = generate().unwrap();
        for cipher in Cipher::ALL {
            let mut hub = SecureImage::new(
                SecurityConfig {
                    key: hub_key.clone(),
                    keys: keys_for(&[(&dev_public, "cam")]),
                    allow_plain: Vec::new(),
                },
                FramedConfig::default(),
            );
            let mut dev = Initiator::with_cipher(dev_key.clone(), hub_public, cipher, now);
            let init = dev.poll_transmit(now).unwrap();
            for _ in 0..100 {
                hub.handle_datagram(addr(CAMERA), &init, now);
            }
            let refused: Vec<_> = std::iter::from_fn(|| hub.poll_refused()).collect();
            let rate = refused
                .iter()
                .filter(|(_, r)| *r == Refusal::HandshakeRate)
                .count();
            assert_eq!(rate as u64, 100 - INITIATION_BURST, "{cipher}");
            assert_eq!(
                hub.gate.handshakes().attempted,
                INITIATION_BURST,
                "{cipher}"
            );
        }
    }

    /// Parity shards are sealed like any datagram: with two sealed data chunks lost, the
    /// hub rebuilds the frame from the sealed shards, and acks it through the session.
    #[test]
    fn sealed_parity_rebuilds_lost_chunks() {
        let now = Instant::now();
        let (hub_key, hub_public) = generate().unwrap();
        let (cam_key, cam_public) = generate().unwrap();
        let mut hub = ImageReceiver::with_security(
            ImageConfig::default(),
            SecurityConfig {
                key: hub_key,
                keys: keys_for(&[(&cam_public, "garden")]),
                allow_plain: vec![],
            },
        );
        let mut cam = Device::new(CAMERA, cam_key, hub_public, "garden", now);
        cam.sender.set_fec(crate::proto::fec::FecMode::Percent(20));
        // the handshake first, with nothing to send
        assert!(exchange(&mut cam, &mut hub, now).is_empty());
        assert!(cam.secure.is_established());
        let jpeg = filler_jpeg(20_000, 2);
        cam.sender
            .send_frame(Arc::new(jpeg.clone()), FrameMeta::default(), now)
            .unwrap();
        assert_eq!(cam.sender.parity_in_use(), (3, 15));
        let out = cam.outgoing(now);
        assert_eq!(out.len(), 18, "15 chunks and 3 shards, each sealed");
        let mut back = Vec::new();
        for (i, d) in out.iter().enumerate() {
            if i == 2 || i == 9 {
                continue;
            }
            hub.handle_datagram(cam.at, d, now);
            back.extend(std::iter::from_fn(|| hub.poll_transmit()).map(|t| t.payload.into_owned()));
        }
        let events: Vec<_> = std::iter::from_fn(|| hub.poll_event()).collect();
        assert_eq!(delivered(&events), [Some("garden".to_string())]);
        assert_eq!(hub.rebuilt().frames, 1);
        assert_eq!(hub.rebuilt().chunks, 2);
        for b in &back {
            cam.incoming(b, now);
        }
        assert!(matches!(
            cam.sender.poll_event(),
            Some(SenderEvent::Acked { resent: 0, .. })
        ));
        assert_eq!(cam.sender.rebuilt(), 2);
    }
}
