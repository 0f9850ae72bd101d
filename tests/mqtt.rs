//! `hub --mqtt` end to end against a real Mosquitto of the test's own (testkit's broker, on
//! a loopback port): two hubs and four clients into one broker, a subscriber that sees every
//! telemetry message exactly once under its source and hub, the retained picture, each
//! hub's `online`, and `offline` when a hub is killed; and a broker that is away at start,
//! then restarted, which stalls nothing and gets the retained status back.
#![cfg(feature = "mqtt")]

mod common;

use common::*;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{Client, Event, MqttOptions};
use std::collections::HashMap;
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};
use udphub_testkit::broker::Mosquitto;

/// The longest wait for a publication that must come.
const WAIT: Duration = Duration::from_secs(20);

/// A publication as the subscriber saw it.
#[derive(Clone, Debug)]
struct Seen {
    topic: String,
    payload: Vec<u8>,
    retain: bool,
    properties: Vec<(String, String)>,
}

impl Seen {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }
    fn property(&self, name: &str) -> Option<&str> {
        self.properties
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A subscriber to `udphub/#` on `port`; its publications arrive on the receiver. Returns
/// once the subscription is acknowledged (so nothing published after is missed).
fn subscribe(port: u16, id: &str) -> (Client, Receiver<Seen>) {
    let mut options = MqttOptions::new(id, "127.0.0.1", port);
    options.set_max_packet_size(Some(64 << 20));
    let (client, mut connection) = Client::new(options, 64);
    client.subscribe("udphub/#", QoS::AtLeastOnce).unwrap();
    let (tx, rx) = mpsc::channel();
    let (ready_tx, ready_rx) = mpsc::channel();
    std::thread::spawn(move || {
        for event in connection.iter() {
            match event {
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    let _ = ready_tx.send(());
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let seen = Seen {
                        topic: String::from_utf8_lossy(&p.topic).into_owned(),
                        payload: p.payload.to_vec(),
                        retain: p.retain,
                        properties: p.properties.map(|p| p.user_properties).unwrap_or_default(),
                    };
                    if tx.send(seen).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });
    ready_rx
        .recv_timeout(WAIT)
        .expect("the subscriber's SUBACK");
    (client, rx)
}

/// Take publications until `done` holds for what was seen (at most [`WAIT`]).
fn collect_until(
    rx: &Receiver<Seen>,
    seen: &mut Vec<Seen>,
    what: &str,
    done: impl Fn(&[Seen]) -> bool,
) {
    let deadline = Instant::now() + WAIT;
    while !done(seen) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(s) => seen.push(s),
            Err(_) => panic!(
                "{what}: not seen within {WAIT:?}; seen topics: {:?}",
                seen.iter().map(|s| s.topic.as_str()).collect::<Vec<_>>()
            ),
        }
    }
}

fn hub_with_mqtt(broker_url: &str, id: &str) -> HubProcess {
    HubProcess::start(&[
        "--mqtt",
        broker_url,
        "--mqtt-id",
        id,
        "--mqtt-jpeg-fps",
        "100",
    ])
}

/// Send `lines` (one JSON value each) through `msg-client --stdin`; all must be answered.
fn send_messages(hub: &HubProcess, name: &str, lines: &[String]) {
    let stdin = lines.join("\n") + "\n";
    let run = run_client(
        env!("CARGO_BIN_EXE_msg-client"),
        &[
            "--stdin",
            "--name",
            name,
            "--hub",
            &hub.msg().to_string(),
            "--status-interval-ms",
            "0",
        ],
        stdin.as_bytes(),
    );
    assert!(run.success(), "{}", run.describe());
    assert_eq!(
        summary_count(&run.stdout, "messages", "answered"),
        lines.len() as u64,
        "{}",
        run.stdout
    );
}

fn telemetry_of(seen: &[Seen], hub_id: &str) -> Vec<Seen> {
    seen.iter()
        .filter(|s| s.topic.ends_with("/telemetry") && s.property("hub") == Some(hub_id))
        .cloned()
        .collect()
}

#[test]
fn two_hubs_publish_every_message_once_the_picture_and_their_status() {
    let broker = Mosquitto::start().unwrap_or_else(|e| panic!("{e}"));
    let (_sub, rx) = subscribe(broker.port(), "test-sub");
    let mut seen = Vec::new();
    let hub_a = hub_with_mqtt(&broker.url(), "hubA");
    let hub_b = hub_with_mqtt(&broker.url(), "hubB");
    collect_until(&rx, &mut seen, "both hubs online", |s| {
        ["hubA", "hubB"].iter().all(|id| {
            s.iter()
                .any(|p| p.topic == format!("udphub/hub/{id}/status") && p.payload == b"online")
        })
    });

    // telemetry: 20 distinct messages into each hub
    let lines = |hub: &str| -> Vec<String> {
        (0..20)
            .map(|i| format!(r#"{{"hub": "{hub}", "n": {i}, "battery": 0.{i:02}}}"#))
            .collect()
    };
    send_messages(&hub_a, "rover-a", &lines("a"));
    send_messages(&hub_b, "rover-b", &lines("b"));
    // a frame into each hub from img-client, a real JPEG
    let frames_dir = tempfile::tempdir().unwrap();
    let jpeg = real_jpeg(20_000, 7);
    let file = frames_dir.path().join("f.jpg");
    std::fs::write(&file, &jpeg).unwrap();
    for (hub, name) in [(&hub_a, "cam-a"), (&hub_b, "cam-b")] {
        let run = run_client(
            env!("CARGO_BIN_EXE_img-client"),
            &[
                "--name",
                name,
                "--jpeg",
                file.to_str().unwrap(),
                "--frames",
                "3",
                "--hub",
                &hub.img().to_string(),
            ],
            b"",
        );
        assert!(run.success(), "{}", run.describe());
    }
    collect_until(&rx, &mut seen, "all telemetry and both pictures", |s| {
        telemetry_of(s, "hubA").len() >= 20
            && telemetry_of(s, "hubB").len() >= 20
            && s.iter().filter(|p| p.topic.ends_with("/jpeg")).count() >= 2
    });
    for (id, sender, want) in [
        ("hubA", "rover-a", lines("a")),
        ("hubB", "rover-b", lines("b")),
    ] {
        let got = telemetry_of(&seen, id);
        // one source per hub, every message once, as sent, numbered 1..=20 in order
        let sources: Vec<&str> = got.iter().map(|s| s.topic.as_str()).collect();
        assert!(sources.windows(2).all(|w| w[0] == w[1]), "{sources:?}");
        assert_eq!(
            sources[0],
            format!("udphub/{sender}/telemetry"),
            "a named sender's topic"
        );
        assert_eq!(got.iter().map(Seen::text).collect::<Vec<_>>(), want);
        let seqs: Vec<String> = got
            .iter()
            .map(|s| s.property("seq").unwrap().to_string())
            .collect();
        assert_eq!(seqs, (1..=20).map(|i| i.to_string()).collect::<Vec<_>>());
        assert!(got.iter().all(|s| s.property("received_us").is_some()));
    }
    let pictures: Vec<&Seen> = seen.iter().filter(|p| p.topic.ends_with("/jpeg")).collect();
    let mut picture_topics: Vec<&str> = pictures.iter().map(|p| p.topic.as_str()).collect();
    picture_topics.sort();
    picture_topics.dedup();
    assert_eq!(
        picture_topics,
        ["udphub/cam-a/jpeg", "udphub/cam-b/jpeg"],
        "a named camera's topics use its name"
    );
    assert!(
        pictures.iter().all(|p| p.payload == jpeg),
        "the pictures are the JPEG sent"
    );
    let frame_events = seen.iter().filter(|p| p.topic.ends_with("/frame")).count();
    assert!(frame_events >= 2, "{frame_events}");
    let states: HashMap<&str, String> = seen
        .iter()
        .filter(|p| p.topic.ends_with("/state"))
        .map(|p| (p.topic.as_str(), p.text()))
        .collect();
    assert!(states.len() >= 4, "a state per source: {states:?}");

    // a hub killed without a word: the broker publishes its last will
    drop(hub_a); // SIGKILL
    collect_until(&rx, &mut seen, "hubA offline", |s| {
        s.iter()
            .any(|p| p.topic == "udphub/hub/hubA/status" && p.payload == b"offline")
    });
    // a hub stopped with Ctrl-C says so itself, and its summary counts what it sent
    let (status, out) = hub_b.stop("INT");
    assert!(status.success(), "{out}");
    assert!(out.contains("mqtt mqtt://127.0.0.1:"), "{out}");
    collect_until(&rx, &mut seen, "hubB offline", |s| {
        s.iter()
            .any(|p| p.topic == "udphub/hub/hubB/status" && p.payload == b"offline")
    });

    // a subscriber that comes later gets the retained picture and statuses at once
    let (_late, late_rx) = subscribe(broker.port(), "late-sub");
    let mut late = Vec::new();
    collect_until(&late_rx, &mut late, "the retained picture", |s| {
        s.iter().any(|p| p.topic.ends_with("/jpeg"))
    });
    let picture = late.iter().find(|p| p.topic.ends_with("/jpeg")).unwrap();
    assert!(picture.retain && picture.payload == jpeg);
    udphub::jpegcheck::validate(&picture.payload).expect("the retained picture is a JPEG");
}

#[test]
fn a_broker_away_at_start_or_restarted_stalls_nothing() {
    // a port with no broker yet
    let broker = Mosquitto::start().unwrap_or_else(|e| panic!("{e}"));
    let port = broker.port();
    let url = broker.url();
    drop(broker);
    let hub = hub_with_mqtt(&url, "hubC");
    let batch =
        |from: usize| -> Vec<String> { (from..from + 10).map(|i| format!("[{i}]")).collect() };
    send_messages(&hub, "rover", &batch(0)); // answered without a broker

    let broker = Mosquitto::start_on(port).unwrap_or_else(|e| panic!("{e}"));
    let (_sub, rx) = subscribe(port, "sub-1");
    let mut seen = Vec::new();
    collect_until(&rx, &mut seen, "hubC online after the broker came", |s| {
        s.iter()
            .any(|p| p.topic == "udphub/hub/hubC/status" && p.payload == b"online")
    });
    send_messages(&hub, "rover", &batch(10));
    collect_until(&rx, &mut seen, "the second batch", |s| {
        s.iter()
            .any(|p| p.topic.ends_with("/telemetry") && p.payload == b"[19]")
    });

    // the broker dies: the hub still answers every message at once
    drop(broker);
    send_messages(&hub, "rover", &batch(20));
    // and a new broker (no persistence: it knows nothing) gets the retained status again
    let _broker = Mosquitto::start_on(port).unwrap_or_else(|e| panic!("{e}"));
    let deadline = Instant::now() + WAIT;
    let mut back = false;
    while !back && Instant::now() < deadline {
        // subscribe until the hub has reconnected and republished (its backoff is at
        // most 5 s); each subscriber sees the retained status at once if it is there
        let (_s, rx) = subscribe(port, "sub-2");
        while let Ok(p) = rx.recv_timeout(Duration::from_secs(1)) {
            if p.topic == "udphub/hub/hubC/status" && p.payload == b"online" && p.retain {
                back = true;
                break;
            }
        }
    }
    assert!(
        back,
        "the retained status came back after the broker restarted"
    );
    let (status, out) = hub.stop("INT");
    assert!(status.success(), "{out}");
}

#[test]
fn a_command_published_to_the_broker_reaches_msg_client_and_its_result_comes_back() {
    let broker = Mosquitto::start().unwrap_or_else(|e| panic!("{e}"));
    let (sub, rx) = subscribe(broker.port(), "test-cmd");
    let mut seen = Vec::new();
    let hub = HubProcess::start(&[
        "--mqtt",
        &broker.url(),
        "--mqtt-id",
        "hubC",
        "--command-ttl",
        "1",
    ]);
    let msg = hub.msg().to_string();
    // messages longer than a reply with the command, so it may ride one unauthenticated
    let client = LiveClient::start(
        env!("CARGO_BIN_EXE_msg-client"),
        &[
            "--hub",
            &msg,
            "--name",
            "robot-1",
            "--interval-ms",
            "100",
            "--status-interval-ms",
            "0",
            "--data",
            r#"{"battery": 0.93, "pose": [1.5, 2.25, 0.0]}"#,
        ],
    );
    collect_until(&rx, &mut seen, "the robot's telemetry", |s| {
        s.iter().any(|p| p.topic == "udphub/robot-1/telemetry")
    });
    // both subscriptions (states, commands) acknowledged by the broker
    let subscribed = "mqtt: subscribed (commands on udphub/+/command)";
    let deadline = Instant::now() + WAIT;
    while hub.stderr().matches(subscribed).count() < 2 {
        assert!(Instant::now() < deadline, "{}", hub.stderr());
        std::thread::sleep(Duration::from_millis(20));
    }
    let published = Instant::now();
    sub.publish(
        "udphub/robot-1/command",
        QoS::AtLeastOnce,
        false,
        r#"{"drive": "stop"}"#,
    )
    .unwrap();
    let line = client
        .line_where(WAIT, |l| l.starts_with("{\"command\""))
        .unwrap_or_else(|| panic!("msg-client printed no command; hub:\n{}", hub.stderr()));
    let took = published.elapsed();
    let printed: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(printed["command"], serde_json::json!({"drive": "stop"}));
    let id = printed["id"].as_u64().expect("an id");
    eprintln!("command published -> printed by msg-client (--interval-ms 100): {took:?}");
    let result = |s: &[Seen], source: &str| -> Option<serde_json::Value> {
        s.iter()
            .filter(|p| p.topic == format!("udphub/{source}/command/result"))
            .find_map(|p| serde_json::from_slice(&p.payload).ok())
    };
    collect_until(&rx, &mut seen, "the delivered result", |s| {
        result(s, "robot-1").is_some()
    });
    assert_eq!(
        result(&seen, "robot-1").unwrap(),
        serde_json::json!({"id": id, "source": "robot-1", "status": "delivered", "hub": "hubC"})
    );
    // no device of that name: expired after --command-ttl, and the result says so
    sub.publish("udphub/ghost/command", QoS::AtLeastOnce, false, "[1]")
        .unwrap();
    collect_until(&rx, &mut seen, "the expired result", |s| {
        result(s, "ghost").is_some()
    });
    let expired = result(&seen, "ghost").unwrap();
    assert_eq!(expired["status"], "expired", "{expired}");
    assert!(expired["id"].as_u64().unwrap() > id, "{expired}");
    assert!(
        expired["reason"].as_str().unwrap().contains("no message"),
        "{expired}"
    );
    // not JSON: rejected at once
    sub.publish("udphub/robot-1/command", QoS::AtLeastOnce, false, "{nope")
        .unwrap();
    collect_until(&rx, &mut seen, "the rejected result", |s| {
        s.iter().any(|p| {
            p.topic == "udphub/robot-1/command/result" && p.text().contains("\"rejected\"")
        })
    });
}
