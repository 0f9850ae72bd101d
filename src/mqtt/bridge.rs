//! The threads between the hub and the broker: `mqtt-msgs` and `mqtt-frames` take what the
//! hub's taps hold and feed the [`Publisher`], whose publications go to the `rumqttc`
//! client without waiting (`try_publish`: a full client queue drops the publication and
//! counts it); `mqtt-net` drives the client's connection, reconnects with a backoff
//! (0.1 s doubling to 5 s) and tells the publisher when a connection is made, so that
//! `online` and the retained states are published again.
//!
//! With a command inbox (issue 15), `mqtt-net` subscribes to `PREFIX/+/command` on every
//! connection and hands each command to the inbox without waiting (one it cannot take is
//! answered `rejected` at once), and `mqtt-commands` publishes the results.
//!
//! On shutdown `offline` is published, the client disconnects, and the connection gets at
//! most [`FLUSH_TIMEOUT`] to send what is queued.

use super::publisher::{Incoming, Kind, Payload, Publish, Publisher, PublisherConfig, Qos};
use super::{BrokerUrl, MqttCounters};
use crate::api::{Frames, Messages};
use crate::hub::command_inbox::CommandInbox;
use crate::hub::source::{Service, SourceId};
use crate::proto::commands::{CommandResult, CommandStatus};
use crate::shutdown::{Shutdown, POLL_INTERVAL};
use rumqttc::v5::mqttbytes::v5::{LastWill, Packet, PublishProperties};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{Client, Connection, Event, MqttOptions};
use std::io;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Publications the client holds while the broker is slow or away; past that, dropped.
pub const CLIENT_QUEUE: usize = 1024;
/// How long a stopping bridge lets the connection send what is queued.
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(1);
/// Keep-alive: the broker publishes the last will this long (x1.5) after the hub vanished
/// without closing its connection (a closed connection is noticed at once).
const KEEP_ALIVE: Duration = Duration::from_secs(10);

/// Everything `hub --mqtt` needs.
#[derive(Clone, Debug)]
pub struct MqttConfig {
    pub broker: BrokerUrl,
    pub publisher: PublisherConfig,
}

/// The running bridge.
pub struct Bridge {
    threads: Vec<JoinHandle<()>>,
    counters: Arc<MqttCounters>,
}

struct Shared {
    publisher: Mutex<Publisher>,
    client: Client,
    counters: Arc<MqttCounters>,
}

fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, Publisher> {
    shared.publisher.lock().unwrap_or_else(|e| e.into_inner())
}

/// A publication on `PREFIX/<source>/command`: handed to the inbox, or answered `rejected`
/// (id 0: it never got one) when it is not UTF-8 or the inbox cannot take it.
fn take_command(shared: &Shared, inbox: &CommandInbox, topic: &[u8], payload: &[u8]) {
    let topic = String::from_utf8_lossy(topic);
    let source = match lock(shared).handle_incoming(&topic, payload) {
        Incoming::Command(source) => source,
        Incoming::ForAnotherHub(source) => {
            return log::debug!("mqtt: a command for {source}: another hub has it")
        }
        Incoming::Other => return,
    };
    let why = match std::str::from_utf8(payload) {
        Err(_) => "the payload is not UTF-8".to_string(),
        Ok(json) => match inbox.submit(&source, json) {
            Ok(_) => return,
            Err(e) => e.to_string(),
        },
    };
    let result = CommandResult {
        id: 0,
        source,
        status: CommandStatus::Rejected,
        reason: Some(why),
    };
    shared.flush(|p| p.handle_command_result(&result));
}

impl Shared {
    /// Let the publisher act on its timers, then hand what it has to the client.
    fn flush(&self, act: impl FnOnce(&mut Publisher)) {
        let mut p = self.publisher.lock().unwrap_or_else(|e| e.into_inner());
        act(&mut p);
        if p.poll_timeout().is_some_and(|t| t <= Instant::now()) {
            p.handle_timeout(Instant::now());
        }
        while let Some(publish) = p.poll_publish() {
            self.send(publish);
        }
    }

    fn send(&self, publish: Publish) {
        let kind = Kind::of_topic(&publish.topic);
        let qos = match publish.qos {
            Qos::AtMostOnce => QoS::AtMostOnce,
            Qos::AtLeastOnce => QoS::AtLeastOnce,
        };
        let payload = match publish.payload {
            Payload::Text(t) => t.into_bytes(),
            // (the client takes owned bytes: one copy per published picture, at most
            // --mqtt-jpeg-fps per source)
            Payload::Jpeg(j) => j.as_ref().clone(),
        };
        let properties = PublishProperties {
            user_properties: publish.properties,
            ..Default::default()
        };
        let sent = self.client.try_publish_with_properties(
            publish.topic,
            qos,
            publish.retain,
            payload,
            properties,
        );
        if sent.is_err() {
            self.counters.dropped.fetch_add(1, Relaxed);
            if kind == Kind::Telemetry {
                self.counters.dropped_telemetry.fetch_add(1, Relaxed);
            }
        }
    }
}

impl Bridge {
    /// Connect (in the background) and publish what `frames` and `messages` yield until
    /// `shutdown`. Fails only if a thread cannot be started.
    pub fn spawn(
        config: MqttConfig,
        mut frames: Frames,
        mut messages: Messages,
        commands: Option<Arc<CommandInbox>>,
        shutdown: Shutdown,
    ) -> io::Result<Bridge> {
        let publisher = Publisher::new(config.publisher.clone());
        let mut options = MqttOptions::new(
            format!("udphub-{}", config.publisher.hub_id),
            config.broker.host.clone(),
            config.broker.port,
        );
        options.set_keep_alive(KEEP_ALIVE);
        options.set_request_channel_capacity(CLIENT_QUEUE);
        options.set_clean_start(true);
        if let Some(user) = &config.broker.user {
            options.set_credentials(
                user.clone(),
                config.broker.password.clone().unwrap_or_default(),
            );
        }
        let will = publisher.last_will();
        options.set_last_will(LastWill::new(
            will.topic,
            will.payload.as_bytes().to_vec(),
            QoS::AtLeastOnce,
            true,
            None,
        ));
        let (client, connection) = Client::new(options, CLIENT_QUEUE);
        let counters = Arc::new(MqttCounters::default());
        let shared = Arc::new(Shared {
            publisher: Mutex::new(publisher),
            client,
            counters: counters.clone(),
        });
        let mut threads = Vec::new();
        let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new().name(name.into()).spawn(f)
        };
        if let Some(results) = commands.as_ref().and_then(|c| c.take_results()) {
            let (shared, shutdown) = (shared.clone(), shutdown.clone());
            threads.push(spawn(
                "mqtt-commands",
                Box::new(move || {
                    while !shutdown.is_triggered() {
                        if let Ok(r) = results.recv_timeout(POLL_INTERVAL) {
                            shared.flush(|p| p.handle_command_result(&r));
                        }
                    }
                }),
            )?);
        }
        {
            let (shared, shutdown, broker) =
                (shared.clone(), shutdown.clone(), config.broker.clone());
            threads.push(spawn(
                "mqtt-net",
                Box::new(move || drive(connection, &shared, commands, &shutdown, &broker)),
            )?);
        }
        {
            let (shared, shutdown) = (shared.clone(), shutdown.clone());
            threads.push(spawn(
                "mqtt-msgs",
                Box::new(move || loop {
                    match messages.recv_timeout(POLL_INTERVAL) {
                        Some(m) => {
                            let source = SourceId {
                                service: Service::Msg,
                                addr: m.source,
                            };
                            let name = topic_source(m.name.as_deref(), &source);
                            let now = Instant::now();
                            shared.flush(|p| p.handle_message(&name, &m.json, m.received, now));
                        }
                        // (None at shutdown only once the queue is empty)
                        None if shutdown.is_triggered() => return,
                        None => shared.flush(|_| {}),
                    }
                }),
            )?);
        }
        {
            let (shared, shutdown) = (shared.clone(), shutdown.clone());
            threads.push(spawn(
                "mqtt-frames",
                Box::new(move || {
                    while !shutdown.is_triggered() {
                        match frames.recv_timeout(POLL_INTERVAL) {
                            Some(f) => shared.flush(|p| {
                                p.handle_frame(
                                    &topic_source(f.name.as_deref(), &f.source),
                                    f.seq,
                                    &f.jpeg,
                                    f.received,
                                    Instant::now(),
                                )
                            }),
                            None => shared.flush(|_| {}),
                        }
                    }
                }),
            )?);
        }
        Ok(Bridge { threads, counters })
    }

    /// The counters, live.
    pub fn counters(&self) -> Arc<MqttCounters> {
        self.counters.clone()
    }

    /// Wait for the threads (they end within [`FLUSH_TIMEOUT`] of the shutdown).
    pub fn join(self) -> Arc<MqttCounters> {
        for t in self.threads {
            let _ = t.join();
        }
        self.counters
    }
}

/// The connection's loop: poll the client's event loop, note connections and sends, back
/// off after a failure; at shutdown, publish `offline`, disconnect and flush.
/// The topic level of a source: its name as shown when it gave one (the `#` of `NAME#2` is
/// an MQTT wildcard, so it becomes `~`), else its slug (`udp-10.0.0.5-50000`).
fn topic_source(name: Option<&str>, source: &SourceId) -> String {
    match name {
        Some(name) => name.replace('#', "~"),
        None => source.slug(),
    }
}

fn drive(
    mut connection: Connection,
    shared: &Shared,
    commands: Option<Arc<CommandInbox>>,
    shutdown: &Shutdown,
    broker: &BrokerUrl,
) {
    let counters = &shared.counters;
    let mut backoff = Duration::from_millis(100);
    let mut failures_logged = 0u32;
    let mut stop_deadline: Option<Instant> = None;
    loop {
        if stop_deadline.is_none() && shutdown.is_triggered() {
            shared.flush(|p| p.handle_stopping());
            let _ = shared.client.try_disconnect();
            stop_deadline = Some(Instant::now() + FLUSH_TIMEOUT);
        }
        if stop_deadline.is_some_and(|d| Instant::now() >= d) {
            return;
        }
        match connection.recv_timeout(POLL_INTERVAL) {
            Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => {
                counters.connections.fetch_add(1, Relaxed);
                counters.connected.store(true, Relaxed);
                backoff = Duration::from_millis(100);
                failures_logged = 0;
                log::info!("mqtt: connected to {broker}");
                shared.flush(|p| p.handle_connected());
                if commands.is_some() {
                    let filters = {
                        let p = lock(shared);
                        [p.state_filter(), p.command_filter()]
                    };
                    for filter in filters {
                        if let Err(e) = shared.client.try_subscribe(filter, QoS::AtLeastOnce) {
                            log::warn!("mqtt: cannot subscribe for commands: {e}");
                        }
                    }
                }
            }
            Ok(Ok(Event::Incoming(Packet::SubAck(_)))) => {
                log::info!(
                    "mqtt: subscribed (commands on {})",
                    lock(shared).command_filter()
                );
            }
            Ok(Ok(Event::Incoming(Packet::Publish(p)))) => {
                if let Some(inbox) = &commands {
                    take_command(shared, inbox, &p.topic, &p.payload);
                }
            }
            Ok(Ok(Event::Outgoing(rumqttc::Outgoing::Publish(_)))) => {
                counters.sent.fetch_add(1, Relaxed);
            }
            Ok(Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect))) if stop_deadline.is_some() => {
                return;
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                if stop_deadline.is_some() {
                    return;
                }
                let was = counters.connected.swap(false, Relaxed);
                // one line when the connection is lost or the first attempts fail, then one
                // every time the backoff reaches its ceiling
                if was || failures_logged < 1 || backoff >= Duration::from_secs(5) {
                    log::warn!(
                        "mqtt: {broker}: {e}; the hub goes on, retrying in {:.1} s",
                        backoff.as_secs_f64()
                    );
                    failures_logged += 1;
                }
                shutdown.wait_timeout(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            Err(rumqttc::v5::RecvTimeoutError::Timeout) => {}
            Err(rumqttc::v5::RecvTimeoutError::Disconnected) => return,
        }
    }
}
