//! What the hub publishes to an MQTT broker, and when: a state machine with no socket and
//! no clock of its own. The bridge ([`super::bridge`]) feeds it what the hub received and
//! the time, and sends what [`Publisher::poll_publish`] hands out; every rule about topics,
//! payloads, QoS and retained flags lives here, where a unit test reaches it.
//!
//! Topics, under a prefix (`udphub` by default) and a source's name (its slug today,
//! `udp-192.168.1.20-50000`):
//! - `PREFIX/<source>/telemetry`: every message, the JSON exactly as received, QoS 1; the
//!   envelope (hub id, arrival time in µs since the Unix epoch, the source's message
//!   sequence number from 1) in MQTT 5 user properties `hub`, `received_us`, `seq`;
//! - `PREFIX/<source>/frame`: one JSON event per frame the bridge saw (`{"seq", "bytes",
//!   "received_us", "hub"}`), QoS 0;
//! - `PREFIX/<source>/jpeg`: the JPEG bytes, at most `jpeg_fps` per source, retained, so a
//!   new subscriber sees the latest picture at once;
//! - `PREFIX/<source>/state`: retained `{"state": "live"|"quiet", "hub", "frames",
//!   "messages"}`, published when a source appears, goes quiet (nothing for
//!   [`QUIET_AFTER`]) or comes back;
//! - `PREFIX/hub/<id>/status`: retained `online` on every (re)connection, and `offline` as
//!   the connection's last will ([`Publisher::last_will`]) and on a clean stop;
//! - commands down (issue 15): the hub subscribes to `PREFIX/+/command` (a payload is one
//!   JSON value for the framed sender of that name; [`Publisher::command_source`]) and
//!   publishes each command's outcome to `PREFIX/<source>/command/result`, QoS 1, not
//!   retained: `{"id", "source", "status": "delivered"|"expired"|"rejected", "reason"?,
//!   "hub"}` ([`Publisher::handle_command_result`]). With several hubs on one broker,
//!   every hub hears every command: a hub takes one only for a source whose retained
//!   `state` names it, or that no hub's state names (then each such hub tries, and an
//!   absent device gets one `expired` per hub, each saying which); the hub learns the
//!   states by subscribing to `PREFIX/+/state` ([`Publisher::handle_state_seen`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A source with nothing new for this long is published as quiet.
pub const QUIET_AFTER: Duration = Duration::from_secs(3);

/// Delivery guarantee of one publication (the MQTT QoS levels the hub uses).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Qos {
    /// QoS 0: sent once, may be lost.
    AtMostOnce,
    /// QoS 1: resent until the broker acks it (a duplicate is possible).
    AtLeastOnce,
}

/// The payload: owned text, or a frame's bytes shared with the hub (not copied).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Payload {
    Text(String),
    Jpeg(Arc<Vec<u8>>),
}

impl Payload {
    /// The bytes to send.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Payload::Text(t) => t.as_bytes(),
            Payload::Jpeg(j) => j,
        }
    }
}

/// One publication for the broker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Publish {
    pub topic: String,
    pub qos: Qos,
    pub retain: bool,
    pub payload: Payload,
    /// MQTT 5 user properties (name, value).
    pub properties: Vec<(String, String)>,
}

/// What kind of publication a counter is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Telemetry,
    Frame,
    Jpeg,
    State,
    Status,
    CommandResult,
}

impl Kind {
    /// The kind of a topic this publisher made (by its last level).
    pub fn of_topic(topic: &str) -> Kind {
        match topic.rsplit('/').next() {
            Some("telemetry") => Kind::Telemetry,
            Some("frame") => Kind::Frame,
            Some("jpeg") => Kind::Jpeg,
            Some("state") => Kind::State,
            Some("result") => Kind::CommandResult,
            _ => Kind::Status,
        }
    }
}

/// Settings of a [`Publisher`].
#[derive(Clone, Debug)]
pub struct PublisherConfig {
    /// First topic level (`udphub`).
    pub prefix: String,
    /// This hub's id in topics and payloads (the host name by default).
    pub hub_id: String,
    /// Retained JPEGs per source per second at most; 0 publishes none.
    pub jpeg_fps: f64,
}

#[derive(Debug)]
struct Source {
    frames: u64,
    messages: u64,
    last_seen: Instant,
    live: bool,
    last_jpeg: Option<Instant>,
}

/// What a publication on a subscription was ([`Publisher::handle_incoming`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Incoming {
    /// A command for this source, to take.
    Command(String),
    /// A command for a source another hub has: not this hub's.
    ForAnotherHub(String),
    /// A state (remembered), or nothing of ours.
    Other,
}

/// The MQTT side of the hub as a state machine; see the [module docs](self).
#[derive(Debug)]
pub struct Publisher {
    config: PublisherConfig,
    sources: HashMap<String, Source>,
    out: std::collections::VecDeque<Publish>,
    /// Which hub each source's retained state names (from the broker), at most
    /// [`MAX_OWNERS`] sources.
    owners: HashMap<String, String>,
}

/// Sources whose owning hub is remembered, at most.
pub const MAX_OWNERS: usize = 65_536;

impl Publisher {
    pub fn new(config: PublisherConfig) -> Self {
        Publisher {
            config,
            sources: HashMap::new(),
            out: Default::default(),
            owners: HashMap::new(),
        }
    }

    /// `PREFIX/hub/<id>/status`.
    pub fn status_topic(&self) -> String {
        format!("{}/hub/{}/status", self.config.prefix, self.config.hub_id)
    }

    /// The subscription that brings commands: `PREFIX/+/command`.
    pub fn command_filter(&self) -> String {
        format!("{}/+/command", self.config.prefix)
    }

    /// The source a command publication on `topic` is for (`PREFIX/<source>/command`,
    /// `<source>` a sender's name), if it is one.
    pub fn command_source<'a>(&self, topic: &'a str) -> Option<&'a str> {
        let source = topic
            .strip_prefix(self.config.prefix.as_str())?
            .strip_prefix('/')?
            .strip_suffix("/command")?;
        crate::wire::name::check(source).ok()?;
        Some(source)
    }

    /// The subscription that tells which hub has which source: `PREFIX/+/state`.
    pub fn state_filter(&self) -> String {
        format!("{}/+/state", self.config.prefix)
    }

    /// A state publication seen on the broker (any hub's, this one's too): remember which
    /// hub it names.
    pub fn handle_state_seen(&mut self, topic: &str, payload: &[u8]) {
        let Some(source) = topic
            .strip_prefix(self.config.prefix.as_str())
            .and_then(|t| t.strip_prefix('/'))
            .and_then(|t| t.strip_suffix("/state"))
            .filter(|s| !s.contains('/'))
        else {
            return;
        };
        let hub = serde_json::from_slice::<serde_json::Value>(payload)
            .ok()
            .and_then(|v| v["hub"].as_str().map(str::to_owned));
        match hub {
            Some(hub) if self.owners.len() < MAX_OWNERS || self.owners.contains_key(source) => {
                self.owners.insert(source.to_owned(), hub);
            }
            Some(_) => {}
            // an emptied retained state: nobody has it
            None => {
                self.owners.remove(source);
            }
        }
    }

    /// Whether this hub takes a command for `source`: its state names this hub, or none.
    pub fn takes_command(&self, source: &str) -> bool {
        self.owners
            .get(source)
            .is_none_or(|hub| *hub == self.config.hub_id)
    }

    /// A publication on one of the subscriptions ([`Publisher::state_filter`],
    /// [`Publisher::command_filter`]): a state is remembered; a command is for this hub
    /// ([`Incoming::Command`]) unless another hub has its source.
    pub fn handle_incoming(&mut self, topic: &str, payload: &[u8]) -> Incoming {
        if let Some(source) = self.command_source(topic) {
            return if self.takes_command(source) {
                Incoming::Command(source.to_owned())
            } else {
                Incoming::ForAnotherHub(source.to_owned())
            };
        }
        self.handle_state_seen(topic, payload);
        Incoming::Other
    }

    /// The outcome of a command: `PREFIX/<source>/command/result`, QoS 1.
    pub fn handle_command_result(&mut self, result: &crate::proto::commands::CommandResult) {
        let mut payload = serde_json::to_value(result).unwrap_or_default();
        payload["hub"] = self.config.hub_id.clone().into();
        self.out.push_back(Publish {
            topic: self.topic(&result.source, "command/result"),
            qos: Qos::AtLeastOnce,
            retain: false,
            payload: Payload::Text(payload.to_string()),
            properties: Vec::new(),
        });
    }

    /// The connection's last will: `offline`, retained, published by the broker when the
    /// hub's connection dies without a goodbye.
    pub fn last_will(&self) -> Publish {
        self.status("offline")
    }

    fn status(&self, text: &str) -> Publish {
        Publish {
            topic: self.status_topic(),
            qos: Qos::AtLeastOnce,
            retain: true,
            payload: Payload::Text(text.into()),
            properties: Vec::new(),
        }
    }

    fn topic(&self, source: &str, leaf: &str) -> String {
        format!("{}/{source}/{leaf}", self.config.prefix)
    }

    /// A connection to the broker was made (the first or after a loss): `online`, and every
    /// source's state again (a broker restarted without persistence has lost them).
    pub fn handle_connected(&mut self) {
        self.out.push_back(self.status("online"));
        let mut names: Vec<String> = self.sources.keys().cloned().collect();
        names.sort();
        for name in names {
            self.push_state(&name);
        }
    }

    /// The hub is stopping: `offline`, said rather than left to the will.
    pub fn handle_stopping(&mut self) {
        self.out.push_back(self.status("offline"));
    }

    fn source(&mut self, name: &str, now: Instant) -> (&mut Source, bool) {
        let mut fresh = false;
        let s = self.sources.entry(name.to_owned()).or_insert_with(|| {
            fresh = true;
            Source {
                frames: 0,
                messages: 0,
                last_seen: now,
                live: false,
                last_jpeg: None,
            }
        });
        s.last_seen = now;
        let came_back = !s.live;
        s.live = true;
        (s, fresh || came_back)
    }

    /// A message from `source`, the JSON text as it came, received at `received`.
    pub fn handle_message(&mut self, source: &str, json: &str, received: SystemTime, now: Instant) {
        let (s, changed) = self.source(source, now);
        s.messages += 1;
        let seq = s.messages;
        if changed {
            self.push_state(source);
        }
        let properties = vec![
            ("hub".to_string(), self.config.hub_id.clone()),
            ("received_us".to_string(), micros(received).to_string()),
            ("seq".to_string(), seq.to_string()),
        ];
        self.out.push_back(Publish {
            topic: self.topic(source, "telemetry"),
            qos: Qos::AtLeastOnce,
            retain: false,
            payload: Payload::Text(json.to_owned()),
            properties,
        });
    }

    /// Frame `seq` (the hub's per-source number) from `source`, received at `received`.
    pub fn handle_frame(
        &mut self,
        source: &str,
        seq: u64,
        jpeg: &Arc<Vec<u8>>,
        received: SystemTime,
        now: Instant,
    ) {
        let jpeg_every = (self.config.jpeg_fps > 0.0)
            .then(|| Duration::from_secs_f64(1.0 / self.config.jpeg_fps.min(1000.0)));
        let (s, changed) = self.source(source, now);
        s.frames += 1;
        let publish_jpeg = match (jpeg_every, s.last_jpeg) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(every), Some(last)) => now.saturating_duration_since(last) >= every,
        };
        if publish_jpeg {
            s.last_jpeg = Some(now);
        }
        if changed {
            self.push_state(source);
        }
        let event = serde_json::json!({
            "seq": seq,
            "bytes": jpeg.len(),
            "received_us": micros(received),
            "hub": self.config.hub_id,
        });
        self.out.push_back(Publish {
            topic: self.topic(source, "frame"),
            qos: Qos::AtMostOnce,
            retain: false,
            payload: Payload::Text(event.to_string()),
            properties: Vec::new(),
        });
        if publish_jpeg {
            self.out.push_back(Publish {
                topic: self.topic(source, "jpeg"),
                qos: Qos::AtMostOnce,
                retain: true,
                payload: Payload::Jpeg(jpeg.clone()),
                properties: Vec::new(),
            });
        }
    }

    /// Mark sources with nothing for [`QUIET_AFTER`] quiet (and publish that).
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut quiet: Vec<String> = self
            .sources
            .iter_mut()
            .filter(|(_, s)| s.live && now.saturating_duration_since(s.last_seen) >= QUIET_AFTER)
            .map(|(name, s)| {
                s.live = false;
                name.clone()
            })
            .collect();
        quiet.sort();
        for name in quiet {
            self.push_state(&name);
        }
    }

    /// When [`Publisher::handle_timeout`] has something to do next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.sources
            .values()
            .filter(|s| s.live)
            .map(|s| s.last_seen + QUIET_AFTER)
            .min()
    }

    /// The next publication, oldest first.
    pub fn poll_publish(&mut self) -> Option<Publish> {
        self.out.pop_front()
    }

    fn push_state(&mut self, name: &str) {
        let Some(s) = self.sources.get(name) else {
            return;
        };
        let state = serde_json::json!({
            "state": if s.live { "live" } else { "quiet" },
            "hub": self.config.hub_id,
            "frames": s.frames,
            "messages": s.messages,
        });
        self.out.push_back(Publish {
            topic: self.topic(name, "state"),
            qos: Qos::AtLeastOnce,
            retain: true,
            payload: Payload::Text(state.to_string()),
            properties: Vec::new(),
        });
    }
}

fn micros(t: SystemTime) -> u128 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publisher(jpeg_fps: f64) -> Publisher {
        Publisher::new(PublisherConfig {
            prefix: "udphub".into(),
            hub_id: "hubA".into(),
            jpeg_fps,
        })
    }

    fn drain(p: &mut Publisher) -> Vec<Publish> {
        std::iter::from_fn(|| p.poll_publish()).collect()
    }

    fn text(p: &Publish) -> &str {
        std::str::from_utf8(p.payload.as_bytes()).unwrap()
    }

    const EPOCH_PLUS_1S: Duration = Duration::from_secs(1);

    #[test]
    fn status_is_retained_online_on_connect_and_the_will_is_offline() {
        let mut p = publisher(1.0);
        p.handle_connected();
        let out = drain(&mut p);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].topic, "udphub/hub/hubA/status");
        assert_eq!(
            (text(&out[0]), out[0].retain, out[0].qos),
            ("online", true, Qos::AtLeastOnce)
        );
        let will = p.last_will();
        assert_eq!(
            (will.topic.as_str(), text(&will), will.retain),
            ("udphub/hub/hubA/status", "offline", true)
        );
        p.handle_stopping();
        assert_eq!(text(&drain(&mut p)[0]), "offline");
    }

    #[test]
    fn telemetry_is_the_json_as_received_with_the_envelope_in_properties() {
        let mut p = publisher(1.0);
        let t0 = Instant::now();
        let at = UNIX_EPOCH + EPOCH_PLUS_1S;
        p.handle_message("udp-10.0.0.5-4000", r#"{"battery": 0.93}"#, at, t0);
        p.handle_message("udp-10.0.0.5-4000", "[0,0,0,1]", at, t0);
        let out = drain(&mut p);
        // the source appears (state live, retained), then its two messages
        assert_eq!(out.len(), 3, "{out:#?}");
        assert_eq!(out[0].topic, "udphub/udp-10.0.0.5-4000/state");
        assert!(out[0].retain);
        assert_eq!(
            text(&out[0]),
            r#"{"frames":0,"hub":"hubA","messages":1,"state":"live"}"#
        );
        assert_eq!(out[1].topic, "udphub/udp-10.0.0.5-4000/telemetry");
        assert_eq!(
            (text(&out[1]), out[1].qos, out[1].retain),
            (r#"{"battery": 0.93}"#, Qos::AtLeastOnce, false)
        );
        let props = |p: &Publish| p.properties.clone();
        assert_eq!(
            props(&out[1]),
            vec![
                ("hub".to_string(), "hubA".to_string()),
                ("received_us".to_string(), "1000000".to_string()),
                ("seq".to_string(), "1".to_string()),
            ]
        );
        assert_eq!(props(&out[2])[2], ("seq".to_string(), "2".to_string()));
        assert_eq!(Kind::of_topic(&out[1].topic), Kind::Telemetry);
    }

    #[test]
    fn jpegs_are_retained_and_rate_limited_per_source_frame_events_are_not() {
        let mut p = publisher(1.0);
        let t0 = Instant::now();
        let jpeg = Arc::new(vec![0xFF, 0xD8, 0xFF, 0xD9]);
        let at = UNIX_EPOCH + EPOCH_PLUS_1S;
        for (i, ms) in [0u64, 300, 999, 1000, 1500].into_iter().enumerate() {
            p.handle_frame(
                "udp-a",
                i as u64 + 1,
                &jpeg,
                at,
                t0 + Duration::from_millis(ms),
            );
        }
        p.handle_frame("udp-b", 1, &jpeg, at, t0 + Duration::from_millis(1500));
        let out = drain(&mut p);
        let of = |kind, src: &str| {
            out.iter()
                .filter(|o| Kind::of_topic(&o.topic) == kind && o.topic.contains(src))
                .count()
        };
        assert_eq!((of(Kind::Frame, "udp-a"), of(Kind::Jpeg, "udp-a")), (5, 2));
        assert_eq!((of(Kind::Frame, "udp-b"), of(Kind::Jpeg, "udp-b")), (1, 1));
        let jpeg_pub = out.iter().find(|o| o.topic == "udphub/udp-a/jpeg").unwrap();
        assert!(jpeg_pub.retain && jpeg_pub.payload == Payload::Jpeg(jpeg.clone()));
        let event = out
            .iter()
            .find(|o| o.topic == "udphub/udp-a/frame")
            .unwrap();
        assert_eq!(
            text(event),
            r#"{"bytes":4,"hub":"hubA","received_us":1000000,"seq":1}"#
        );
        assert_eq!(event.qos, Qos::AtMostOnce);
        // 0 fps: no JPEG at all
        let mut p = publisher(0.0);
        p.handle_frame("udp-a", 1, &jpeg, at, t0);
        assert_eq!(
            drain(&mut p)
                .iter()
                .filter(|o| o.topic.ends_with("/jpeg"))
                .count(),
            0
        );
    }

    #[test]
    fn a_source_goes_quiet_and_live_again_and_reconnects_republish_states() {
        let mut p = publisher(0.0);
        let t0 = Instant::now();
        let at = UNIX_EPOCH;
        assert_eq!(p.poll_timeout(), None);
        p.handle_message("udp-a", "1", at, t0);
        drain(&mut p);
        assert_eq!(p.poll_timeout(), Some(t0 + QUIET_AFTER));
        p.handle_timeout(t0 + QUIET_AFTER - Duration::from_millis(1));
        assert!(drain(&mut p).is_empty(), "not yet");
        p.handle_timeout(t0 + QUIET_AFTER);
        let out = drain(&mut p);
        assert_eq!(out.len(), 1);
        assert_eq!(
            text(&out[0]),
            r#"{"frames":0,"hub":"hubA","messages":1,"state":"quiet"}"#
        );
        assert_eq!(p.poll_timeout(), None);
        // back: live again, then the message
        p.handle_message("udp-a", "2", at, t0 + QUIET_AFTER * 2);
        let out = drain(&mut p);
        assert!(text(&out[0]).contains(r#""state":"live""#), "{out:#?}");
        // a reconnection: online, then every source's state
        p.handle_connected();
        let out = drain(&mut p);
        assert_eq!(
            out.iter().map(|o| o.topic.as_str()).collect::<Vec<_>>(),
            ["udphub/hub/hubA/status", "udphub/udp-a/state"]
        );
    }

    #[test]
    fn command_topics_and_results() {
        use crate::proto::commands::{CommandResult, CommandStatus};
        let mut p = Publisher::new(PublisherConfig {
            prefix: "site/udphub".into(),
            hub_id: "hubA".into(),
            jpeg_fps: 1.0,
        });
        assert_eq!(p.command_filter(), "site/udphub/+/command");
        assert_eq!(p.command_source("site/udphub/pi-1/command"), Some("pi-1"));
        for not in [
            "site/udphub/pi/telemetry",
            "other/pi/command",
            "site/udphub/a/b/command",
            "site/udphub/../command",
            "site/udphub/pi/command/result",
        ] {
            assert_eq!(p.command_source(not), None, "{not}");
        }
        p.handle_command_result(&CommandResult {
            id: 7,
            source: "pi-1".into(),
            status: CommandStatus::Expired,
            reason: Some("no message".into()),
        });
        let out = p.poll_publish().unwrap();
        assert_eq!(out.topic, "site/udphub/pi-1/command/result");
        assert_eq!((out.qos, out.retain), (Qos::AtLeastOnce, false));
        assert_eq!(Kind::of_topic(&out.topic), Kind::CommandResult);
        let v: serde_json::Value = serde_json::from_slice(out.payload.as_bytes()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"id": 7, "source": "pi-1", "status": "expired",
                               "reason": "no message", "hub": "hubA"})
        );
    }

    #[test]
    fn a_command_is_taken_by_the_hub_that_has_the_source_or_by_all_when_none_has() {
        let mut p = Publisher::new(PublisherConfig {
            prefix: "udphub".into(),
            hub_id: "hubA".into(),
            jpeg_fps: 1.0,
        });
        assert_eq!(p.state_filter(), "udphub/+/state");
        assert!(p.takes_command("pi"), "nobody has it: try");
        p.handle_state_seen("udphub/pi/state", br#"{"state":"live","hub":"hubB"}"#);
        p.handle_state_seen("udphub/cam/state", br#"{"state":"live","hub":"hubA"}"#);
        p.handle_state_seen("udphub/a/b/state", br#"{"hub":"hubA"}"#);
        assert!(!p.takes_command("pi"), "hubB's");
        assert!(p.takes_command("cam"));
        assert_eq!(
            p.handle_incoming("udphub/pi/command", b"1"),
            Incoming::ForAnotherHub("pi".into())
        );
        assert_eq!(
            p.handle_incoming("udphub/cam/command", b"1"),
            Incoming::Command("cam".into())
        );
        assert_eq!(
            p.handle_incoming("udphub/dog/state", br#"{"hub":"hubB"}"#),
            Incoming::Other
        );
        assert_eq!(
            p.handle_incoming("udphub/dog/command", b"1"),
            Incoming::ForAnotherHub("dog".into()),
            "a state seen through handle_incoming counts"
        );
        assert!(p.takes_command("ghost"));
        p.handle_state_seen("udphub/pi/state", b"");
        assert!(p.takes_command("pi"), "its retained state was cleared");
    }
}
