//! Statistics per source and per service: counters the socket threads bump without locks,
//! a reporter thread that logs rates every few seconds, and the summary printed at exit
//! ([`HubSummary`]: text for people, JSON with `hub --json-summary`).
//!
//! A source ([`SourceId`]) is one sender on one service (a UDP address on the image or
//! message port, or one TCP connection). Each service thread looks its sources' counters up
//! once and keeps the `Arc`, so the per-frame cost is a few relaxed atomic adds.

use super::latency::{LatencyHistogram, LatencyState, LatencyWindow};
use super::source::{Service, SourceId};
use crate::client::stats::{Samples, SamplesSummary};
use crate::hub::saver::SaverReport;
use crate::proto::framed_receiver::FrameTiming;
use crate::shutdown::Shutdown;
use crate::wire::name::SourceName;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, TryLockError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Distinct sources tracked per service; further ones are counted together as "others".
pub const MAX_SOURCES: usize = 4096;

/// Counters of one source. Times are microseconds since the hub started.
#[derive(Debug, Default)]
pub struct Counters {
    /// Intact frames (or valid messages) received.
    pub items: AtomicU64,
    /// Bytes in those frames or messages.
    pub bytes: AtomicU64,
    /// Frames that reached their length but failed the check (or invalid messages).
    pub corrupt: AtomicU64,
    /// Partial frames given up (lost datagrams, timeout, memory budget).
    pub dropped: AtomicU64,
    /// Datagrams that could not be used (bad headers, stray data).
    pub rejected: AtomicU64,
    first_us: AtomicU64,
    last_us: AtomicU64,
    /// Frame latencies (image sources): locked once per frame by its service thread, and
    /// by readers (`/state`, `/metrics`, the reports) for a copy.
    pub latency: Mutex<LatencyWindow>,
}

/// A plain copy of [`Counters`].
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Snapshot {
    pub items: u64,
    pub bytes: u64,
    pub corrupt: u64,
    pub dropped: u64,
    pub rejected: u64,
    /// Seconds from the first to the last item, when there were two or more.
    pub span_s: f64,
    /// When the last item came, in seconds since the hub started (0 when none came).
    pub last_s: f64,
}

impl Snapshot {
    /// Average items per second between the first and the last item.
    pub fn rate(&self) -> f64 {
        if self.items >= 2 && self.span_s > 0.0 {
            (self.items - 1) as f64 / self.span_s
        } else {
            0.0
        }
    }

    fn add(&mut self, o: &Snapshot) {
        self.items += o.items;
        self.bytes += o.bytes;
        self.corrupt += o.corrupt;
        self.dropped += o.dropped;
        self.rejected += o.rejected;
        self.span_s = self.span_s.max(o.span_s);
        self.last_s = self.last_s.max(o.last_s);
    }
}

impl Counters {
    pub fn snapshot(&self) -> Snapshot {
        let (first, last) = (self.first_us.load(Relaxed), self.last_us.load(Relaxed));
        Snapshot {
            items: self.items.load(Relaxed),
            bytes: self.bytes.load(Relaxed),
            corrupt: self.corrupt.load(Relaxed),
            dropped: self.dropped.load(Relaxed),
            rejected: self.rejected.load(Relaxed),
            span_s: last.saturating_sub(first) as f64 / 1e6,
            last_s: last as f64 / 1e6,
        }
    }
}

/// Bytes of the last message kept for the HTTP view; longer ones are cut (on a character
/// boundary).
pub const LAST_MESSAGE_BYTES: usize = 500;

/// The newest valid message (its first [`LAST_MESSAGE_BYTES`] bytes), for the HTTP view.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LastMessage {
    /// Who sent it; `None` until a message came.
    pub from: Option<SocketAddr>,
    pub text: String,
    /// Whether `text` was cut.
    pub truncated: bool,
    /// When it came, in seconds since the hub started.
    pub at_s: f64,
}

/// All counters of the hub.
#[derive(Debug)]
pub struct Stats {
    started: Instant,
    sources: Mutex<HashMap<SourceId, Arc<Counters>>>,
    last_message: Mutex<LastMessage>,
    /// With `--mqtt`: the broker (as shown) and the bridge's counters.
    mqtt: Mutex<Option<(String, Arc<crate::mqtt::MqttCounters>)>>,
    names: Mutex<Names>,
    /// Datagrams and connections refused without a reply (keys required), per service and
    /// reason (`unauthenticated`, `tampered`, `replayed`, ...).
    refused: Mutex<BTreeMap<(Service, &'static str), u64>>,
    /// Commands down (issue 15), as the message service last counted them.
    commands: CommandCounters,
    /// Per service, from the arrival of the datagram that completed a frame to its ack
    /// being sent, as the service stored it when it stopped.
    ack_delays: Mutex<BTreeMap<Service, SamplesSummary>>,
    /// Per service, framed frames rebuilt from parity, as the service last counted them.
    rebuilt: Mutex<BTreeMap<Service, crate::proto::framed_receiver::Rebuilt>>,
}

/// What became of commands, lock-free (the message service stores, readers load).
#[derive(Debug, Default)]
struct CommandCounters {
    submitted: AtomicU64,
    delivered: AtomicU64,
    expired: AtomicU64,
    rejected: AtomicU64,
    waiting: AtomicU64,
}

/// Commands at one moment, as `/state` and the exit summary show them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandState {
    pub submitted: u64,
    pub delivered: u64,
    pub expired: u64,
    pub rejected: u64,
    /// Not delivered, not expired yet.
    pub waiting: u64,
}

/// Sources' names as shown: the name a source gave, or `NAME#n` when another source
/// already shows that name (see [`Stats::claim_name`]).
#[derive(Debug, Default)]
struct Names {
    by_id: HashMap<SourceId, String>,
    holder: HashMap<(Service, String), SourceId>,
}

/// A source quiet this long gives its name up to a new source claiming it (a camera that
/// restarted, from a new port), instead of the newcomer becoming `NAME#2`.
pub const NAME_HANDOVER_AFTER: Duration = Duration::from_secs(5);
/// Suffixes tried (`#2` .. `#MAX_NAME_SUFFIX`) before a source is shown by its address.
const MAX_NAME_SUFFIX: u32 = 1000;

impl Stats {
    pub fn new() -> Arc<Stats> {
        Arc::new(Stats {
            started: Instant::now(),
            sources: Mutex::new(HashMap::new()),
            last_message: Mutex::new(LastMessage::default()),
            mqtt: Mutex::new(None),
            names: Mutex::new(Names::default()),
            refused: Mutex::new(BTreeMap::new()),
            commands: CommandCounters::default(),
            ack_delays: Mutex::new(BTreeMap::new()),
            rebuilt: Mutex::new(BTreeMap::new()),
        })
    }

    /// `service`'s frames rebuilt from parity so far (see [`ServiceSummary::rebuilt`]):
    /// stored by the service whenever the count changes, and when it stops.
    pub fn set_rebuilt(&self, service: Service, rebuilt: crate::proto::framed_receiver::Rebuilt) {
        let mut all = self.rebuilt.lock().unwrap_or_else(|e| e.into_inner());
        all.insert(service, rebuilt);
    }

    /// Frames rebuilt from parity so far, per service that rebuilt any.
    pub fn rebuilt(&self) -> Vec<(Service, crate::proto::framed_receiver::Rebuilt)> {
        let all = self.rebuilt.lock().unwrap_or_else(|e| e.into_inner());
        all.iter()
            .filter(|(_, r)| **r != Default::default())
            .map(|(&s, &r)| (s, r))
            .collect()
    }

    /// `service`'s ack delays (see [`ServiceSummary::ack_delay`]), stored when it stops.
    pub fn set_ack_delay(&self, service: Service, samples: &Samples) {
        let mut delays = self.ack_delays.lock().unwrap_or_else(|e| e.into_inner());
        delays.insert(service, SamplesSummary::of(samples));
    }

    /// The message service's command counts now.
    pub fn set_commands(&self, c: crate::proto::commands::CommandCounts, waiting: usize) {
        let s = &self.commands;
        s.submitted.store(c.submitted, Relaxed);
        s.delivered.store(c.delivered, Relaxed);
        s.expired.store(c.expired, Relaxed);
        s.rejected.store(c.rejected, Relaxed);
        s.waiting.store(waiting as u64, Relaxed);
    }

    /// The command counts last stored.
    pub fn commands(&self) -> CommandState {
        let s = &self.commands;
        CommandState {
            submitted: s.submitted.load(Relaxed),
            delivered: s.delivered.load(Relaxed),
            expired: s.expired.load(Relaxed),
            rejected: s.rejected.load(Relaxed),
            waiting: s.waiting.load(Relaxed),
        }
    }

    /// Count one datagram or connection of `service` refused for `reason`.
    pub fn count_refused(&self, service: Service, reason: &'static str) {
        let mut refused = self.refused.lock().unwrap_or_else(|e| e.into_inner());
        *refused.entry((service, reason)).or_default() += 1;
    }

    /// The refusals so far: (service, reason, count), by service then reason.
    pub fn refused(&self) -> Vec<(Service, &'static str, u64)> {
        let refused = self.refused.lock().unwrap_or_else(|e| e.into_inner());
        refused.iter().map(|(&(s, r), &n)| (s, r, n)).collect()
    }

    /// Show source `id` as `name` from now on; returns the name it is shown as. When
    /// another source of the service shows that name and has been heard from within
    /// [`NAME_HANDOVER_AFTER`], `id` is told apart as `NAME#2` (or `#3`, ...); a quieter
    /// holder gives the name up (and is shown by its address again). A source keeps the
    /// first name it is shown as. An `authenticated` name (the authorized-keys file's) is
    /// the device's own: it takes the name over at once (the same key from a new address
    /// is the same device, restarted), never `NAME#2`.
    pub fn claim_name(&self, id: SourceId, name: &SourceName, authenticated: bool) -> String {
        let now_us = self.started.elapsed().as_micros() as u64;
        let sources = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        let mut names = self.names.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(shown) = names.by_id.get(&id) {
            return shown.clone();
        }
        if names.by_id.len() >= 4 * MAX_SOURCES {
            return id.to_string();
        }
        let handover_us = NAME_HANDOVER_AFTER.as_micros() as u64;
        let is_quiet = |holder: &SourceId| {
            sources.get(holder).is_none_or(|c| {
                let last = c.last_us.load(Relaxed);
                c.items.load(Relaxed) == 0 || now_us.saturating_sub(last) >= handover_us
            })
        };
        for n in 1..=MAX_NAME_SUFFIX {
            let shown = match n {
                1 => name.to_string(),
                n => name.with_suffix(n),
            };
            let key = (id.service, shown.clone());
            match names.holder.get(&key).copied() {
                Some(holder) if !authenticated && !is_quiet(&holder) => continue,
                Some(holder) => {
                    names.by_id.remove(&holder);
                }
                None => {}
            }
            names.holder.insert(key, id);
            names.by_id.insert(id, shown.clone());
            return shown;
        }
        id.to_string()
    }

    /// The name source `id` is shown as, if it gave one.
    pub fn name_of(&self, id: SourceId) -> Option<String> {
        let names = self.names.lock().unwrap_or_else(|e| e.into_inner());
        names.by_id.get(&id).cloned()
    }

    /// Every named source's name as shown.
    pub fn names(&self) -> HashMap<SourceId, String> {
        let names = self.names.lock().unwrap_or_else(|e| e.into_inner());
        names.by_id.clone()
    }

    /// Report the MQTT bridge's `counters` (publishing to `broker`) with the hub's own.
    pub fn attach_mqtt(&self, broker: String, counters: Arc<crate::mqtt::MqttCounters>) {
        *self.mqtt.lock().unwrap_or_else(|e| e.into_inner()) = Some((broker, counters));
    }

    /// The MQTT bridge's counters now, if one is attached.
    pub fn mqtt_state(&self) -> Option<crate::mqtt::MqttState> {
        let m = self.mqtt.lock().unwrap_or_else(|e| e.into_inner());
        m.as_ref().map(|(broker, c)| c.state(broker))
    }

    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// The counters of a source, created on first use. Call once per source and keep the
    /// `Arc` (see [`SourceCache`]); past [`MAX_SOURCES`] per service, new sources share the
    /// "others" entry (address 0.0.0.0:0).
    pub fn source(&self, id: SourceId) -> Arc<Counters> {
        let mut map = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = map.get(&id) {
            return c.clone();
        }
        let per_service = map.keys().filter(|k| k.service == id.service).count();
        let id = if per_service >= MAX_SOURCES {
            SourceId {
                service: id.service,
                addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            }
        } else {
            id
        };
        map.entry(id).or_default().clone()
    }

    /// Count one intact frame or message of `bytes` bytes; returns its 1-based number.
    pub fn record_item(&self, c: &Counters, bytes: usize) -> u64 {
        let now = self.started.elapsed().as_micros() as u64;
        let before = c.items.fetch_add(1, Relaxed);
        if before == 0 {
            c.first_us.store(now, Relaxed);
        }
        c.last_us.store(now, Relaxed);
        c.bytes.fetch_add(bytes as u64, Relaxed);
        before + 1
    }

    /// Take a delivered frame's timing into its source's latency figures.
    pub fn record_timing(&self, c: &Counters, timing: &FrameTiming) {
        c.latency
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .record(timing);
    }

    /// Every image source's latency now (those that delivered a frame with a capture time
    /// or a clock state), with its histogram: percentiles over the recent window, or
    /// (`recent` false) over the last frames however old.
    pub fn latencies(&self, recent: bool) -> HashMap<SourceId, (LatencyState, LatencyHistogram)> {
        let now_us = crate::proto::framed_sender::wall_us(std::time::SystemTime::now());
        let map = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        map.iter()
            .filter_map(|(id, c)| {
                let w = c.latency.lock().unwrap_or_else(|e| e.into_inner());
                let state = match recent {
                    true => w.state(now_us),
                    false => w.state_of_last_frames(),
                };
                (!w.is_empty()).then(|| (*id, (state, w.histogram())))
            })
            .collect()
    }

    /// Keep `text`, received at `at_s` (seconds since the hub started), as the newest
    /// message. Called by the message service for every valid message: a copy of at most
    /// [`LAST_MESSAGE_BYTES`] bytes into a buffer that is reused (no allocation once it has
    /// grown), under a lock it only *tries* to take: when the HTTP view holds it that
    /// moment, nothing is changed and `false` comes back, so the receiving thread never
    /// waits; the caller offers the message again later (the message service does at its
    /// next message or poll tick). Every message rather than every Nth, so the view shows
    /// the true last message of a sender that stops.
    pub fn try_set_last_message(&self, from: SocketAddr, text: &str, at_s: f64) -> bool {
        let mut last = match self.last_message.try_lock() {
            Ok(last) => last,
            Err(TryLockError::Poisoned(e)) => e.into_inner(),
            Err(TryLockError::WouldBlock) => return false,
        };
        let mut end = text.len().min(LAST_MESSAGE_BYTES);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        last.from = Some(from);
        last.text.clear();
        last.text.push_str(&text[..end]);
        last.truncated = end < text.len();
        last.at_s = at_s;
        true
    }

    /// A copy of the newest message.
    pub fn last_message(&self) -> LastMessage {
        self.last_message
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Every source's snapshot, sorted by service then address.
    pub fn snapshot(&self) -> Vec<(SourceId, Snapshot)> {
        let map = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<_> = map.iter().map(|(k, c)| (*k, c.snapshot())).collect();
        v.sort_by_key(|(k, _)| *k);
        v
    }

    /// The totals of one service.
    pub fn service_total(&self, service: Service) -> Snapshot {
        let mut t = Snapshot::default();
        for (_, s) in self.snapshot().iter().filter(|(k, _)| k.service == service) {
            t.add(s);
        }
        t
    }

    /// The exit summary's figures: per service (in the order given), then per source. The
    /// saver's counts are the caller's to add.
    pub fn summary(&self, services: &[Service]) -> HubSummary {
        let all = self.snapshot();
        let names = self.names();
        let mut latencies = self.latencies(false);
        let services = services
            .iter()
            .map(|&service| {
                let mut total = Snapshot::default();
                let sources: Vec<SourceSummary> = all
                    .iter()
                    .filter(|(k, _)| k.service == service)
                    .map(|(k, s)| {
                        total.add(s);
                        SourceSummary {
                            name: names.get(k).cloned(),
                            latency_ms: latencies.remove(k).map(|(l, _)| l),
                            ..SourceSummary::of(k.addr, s)
                        }
                    })
                    .collect();
                ServiceSummary {
                    service,
                    total: SourceSummary::of(None, &total),
                    sources,
                    ack_delay: self
                        .ack_delays
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .get(&service)
                        .cloned(),
                    rebuilt: self
                        .rebuilt
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .get(&service)
                        .copied()
                        .filter(|r| *r != Default::default()),
                }
            })
            .collect();
        HubSummary {
            uptime_s: self.uptime().as_secs_f64(),
            services,
            saved: None,
            mqtt: self.mqtt_state(),
            commands: Some(self.commands()).filter(|c| c.submitted > 0),
            refused: self
                .refused()
                .into_iter()
                .map(|(service, reason, count)| RefusedCount {
                    service,
                    reason: reason.to_owned(),
                    count,
                })
                .collect(),
        }
    }
}

/// The hub's exit summary: what [`HubSummary::text`] prints for people and
/// `hub --json-summary` prints as one JSON object.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HubSummary {
    /// Seconds since the hub started.
    pub uptime_s: f64,
    /// One entry per enabled service.
    pub services: Vec<ServiceSummary>,
    /// With `--save-dir`: what the saver wrote.
    pub saved: Option<SaverReport>,
    /// With `--mqtt`: what the bridge published and dropped.
    #[serde(default)]
    pub mqtt: Option<crate::mqtt::MqttState>,
    /// When commands were submitted: what became of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commands: Option<CommandState>,
    /// With keys: what was refused without a reply, per service and reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refused: Vec<RefusedCount>,
}

/// Datagrams (or TCP connections) of one service refused for one reason.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RefusedCount {
    pub service: Service,
    pub reason: String,
    pub count: u64,
}

/// One service in the [`HubSummary`]: its totals and each of its sources.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServiceSummary {
    pub service: Service,
    /// The sum over its sources (`addr` is `null`).
    pub total: SourceSummary,
    /// Sorted by address; past [`MAX_SOURCES`] the others share address `0.0.0.0:0`.
    pub sources: Vec<SourceSummary>,
    /// The image service: for each delivered frame, from the moment the datagram that
    /// completed it was received to the moment its ack was sent (the check of the frame
    /// and its hand-over to the sinks), in µs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ack_delay: Option<SamplesSummary>,
    /// The image service: framed frames rebuilt from parity (frames, data chunks, and
    /// rebuilds refused by the check), when there were any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rebuilt: Option<crate::proto::framed_receiver::Rebuilt>,
}

/// One source's (or a service's total) counts in the [`HubSummary`]; see [`Counters`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SourceSummary {
    pub addr: Option<SocketAddr>,
    /// The name the source gave, as shown (absent for unnamed sources and totals).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Intact frames, or valid messages.
    pub items: u64,
    pub bytes: u64,
    /// Items per second between the first and the last ([`Snapshot::rate`]).
    pub rate: f64,
    /// Frames that failed the check, or invalid messages.
    pub corrupt: u64,
    pub dropped: u64,
    pub rejected: u64,
    /// Image sources whose frames carry a capture time: latency over the last seconds and
    /// the clock state ([`crate::hub::latency`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<LatencyState>,
}

impl SourceSummary {
    fn of(addr: impl Into<Option<SocketAddr>>, s: &Snapshot) -> SourceSummary {
        SourceSummary {
            addr: addr.into(),
            name: None,
            items: s.items,
            bytes: s.bytes,
            rate: s.rate(),
            corrupt: s.corrupt,
            dropped: s.dropped,
            rejected: s.rejected,
            latency_ms: None,
        }
    }
}

impl HubSummary {
    /// The service's entry, if it was enabled.
    pub fn service(&self, service: Service) -> Option<&ServiceSummary> {
        self.services.iter().find(|s| s.service == service)
    }

    /// The summary for people (stdout at exit): per service, then per source, then what
    /// the saver did.
    pub fn text(&self) -> String {
        let mut out = format!("hub: summary after {:.1} s\n", self.uptime_s);
        for s in &self.services {
            let service = s.service;
            let _ = writeln!(out, "  {}: {}", service.title(), line(service, &s.total));
            if let Some(r) = &s.rebuilt {
                let _ = writeln!(
                    out,
                    "    frames rebuilt from parity: {} ({} chunks; {} rebuilds failed the check)",
                    r.frames, r.chunks, r.failed
                );
            }
            for source in &s.sources {
                let id = SourceId {
                    service,
                    addr: source.addr.unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0))),
                };
                let id = shown(&id, source.name.as_deref());
                let _ = writeln!(out, "    {id}: {}", line(service, source));
            }
        }
        if let Some(s) = &self.saved {
            let _ = writeln!(
                out,
                "  saved: {} frames ({} skipped while the disk was behind, {} failed)",
                s.saved, s.skipped, s.failed
            );
        }
        if let Some(m) = &self.mqtt {
            let _ = writeln!(out, "  {}", m.line());
        }
        if let Some(c) = &self.commands {
            let _ = writeln!(
                out,
                "  commands: {} submitted, {} delivered, {} expired, {} rejected, {} waiting",
                c.submitted, c.delivered, c.expired, c.rejected, c.waiting
            );
        }
        if !self.refused.is_empty() {
            let parts: Vec<String> = self
                .refused
                .iter()
                .map(|r| format!("{} {} {}", r.service.name(), r.reason, r.count))
                .collect();
            let _ = writeln!(out, "  refused without a reply: {}", parts.join(", "));
        }
        out
    }
}

fn line(service: Service, s: &SourceSummary) -> String {
    let mut l = format!(
        "{} {}, {}, {:.1} {}/s",
        s.items,
        service.item(),
        human_bytes(s.bytes),
        s.rate,
        if service == Service::Msg {
            "msg"
        } else {
            "frames"
        },
    );
    if service == Service::Msg {
        let _ = write!(l, ", {} invalid", s.corrupt);
    } else {
        let _ = write!(
            l,
            ", {} corrupt, {} dropped, {} rejected",
            s.corrupt, s.dropped, s.rejected
        );
        if let Some(latency) = &s.latency_ms {
            let _ = write!(l, ", {}", latency.line());
        }
    }
    l
}

/// `12.3 MB`-style sizes (powers of 1000).
pub fn human_bytes(n: u64) -> String {
    match n {
        0..=999 => format!("{n} B"),
        1_000..=999_999 => format!("{:.1} kB", n as f64 / 1e3),
        1_000_000..=999_999_999 => format!("{:.1} MB", n as f64 / 1e6),
        _ => format!("{:.2} GB", n as f64 / 1e9),
    }
}

/// A service thread's own map from sender address to its counters, so the shared registry
/// is locked once per new sender, not once per frame.
pub struct SourceCache {
    service: Service,
    stats: Arc<Stats>,
    map: HashMap<SocketAddr, Arc<Counters>>,
    /// Names as shown ([`Stats::claim_name`]) of the named sources in `map`.
    shown: HashMap<SocketAddr, Arc<str>>,
}

impl SourceCache {
    pub fn new(service: Service, stats: Arc<Stats>) -> Self {
        SourceCache {
            service,
            stats,
            map: HashMap::new(),
            shown: HashMap::new(),
        }
    }

    /// Count a refusal of this service's (see [`Stats::count_refused`]).
    pub fn count_refused(&self, reason: &'static str) {
        self.stats.count_refused(self.service, reason);
    }

    /// The name `addr` is shown as, when it gives `name` (claimed once per source, so a
    /// source's later datagrams cost a map lookup; `authenticated`: the keys file's name, see
    /// [`Stats::claim_name`]). `None` if `name` is not a valid name (the parsers let none
    /// through).
    pub fn shown_name(
        &mut self,
        addr: SocketAddr,
        name: &str,
        authenticated: bool,
    ) -> Option<Arc<str>> {
        if let Some(shown) = self.shown.get(&addr) {
            return Some(shown.clone());
        }
        let name = SourceName::parse(name).ok()?;
        if self.shown.len() >= MAX_SOURCES {
            self.shown.clear();
        }
        let id = SourceId {
            service: self.service,
            addr,
        };
        let shown = self.stats.claim_name(id, &name, authenticated);
        if shown != name.as_str() {
            log::warn!(
                "{}: {id} also calls itself \"{name}\": shown as \"{shown}\"",
                self.service.name()
            );
        }
        let shown: Arc<str> = shown.into();
        self.shown.insert(addr, shown.clone());
        Some(shown)
    }

    /// Count one intact frame from `addr` with its timing; returns its 1-based number.
    pub fn record_frame(&mut self, addr: SocketAddr, bytes: usize, timing: &FrameTiming) -> u64 {
        let counters = Self::lookup(&mut self.map, self.service, &self.stats, addr);
        self.stats.record_timing(counters, timing);
        self.stats.record_item(counters, bytes)
    }

    /// Count one intact frame or message from `addr`; returns its 1-based number.
    pub fn record_item(&mut self, addr: SocketAddr, bytes: usize) -> u64 {
        let counters = Self::lookup(&mut self.map, self.service, &self.stats, addr);
        self.stats.record_item(counters, bytes)
    }

    /// The counters of `addr`.
    pub fn get(&mut self, addr: SocketAddr) -> &Counters {
        Self::lookup(&mut self.map, self.service, &self.stats, addr)
    }

    fn lookup<'a>(
        map: &'a mut HashMap<SocketAddr, Arc<Counters>>,
        service: Service,
        stats: &Stats,
        addr: SocketAddr,
    ) -> &'a Counters {
        if map.len() >= MAX_SOURCES && !map.contains_key(&addr) {
            map.clear();
        }
        map.entry(addr)
            .or_insert_with(|| stats.source(SourceId { service, addr }))
    }
}

/// Sources named one by one in each periodic report; the other active ones are summed up
/// in one line per service, so a flood of new sources adds a bounded number of lines.
pub const REPORT_TOP_SOURCES: usize = 5;

impl Snapshot {
    /// The counts that changed from `before` to `self`, as a snapshot of the interval
    /// (its `span_s` and `last_s` are 0).
    fn since(&self, before: &Snapshot) -> Snapshot {
        Snapshot {
            items: self.items.saturating_sub(before.items),
            bytes: self.bytes.saturating_sub(before.bytes),
            corrupt: self.corrupt.saturating_sub(before.corrupt),
            dropped: self.dropped.saturating_sub(before.dropped),
            rejected: self.rejected.saturating_sub(before.rejected),
            span_s: 0.0,
            last_s: 0.0,
        }
    }

    /// An interval's counts ([`Snapshot::since`]) as rates over `interval`: `12.0 frames/s,
    /// 800.0 kB/s, +0 corrupt, +0 dropped, +0 rejected`.
    fn interval_rates(&self, service: Service, interval: Duration) -> String {
        let secs = interval.as_secs_f64().max(1e-9);
        format!(
            "{:.1} {}/s, {}/s, +{} corrupt, +{} dropped, +{} rejected",
            self.items as f64 / secs,
            service.item(),
            human_bytes((self.bytes as f64 / secs) as u64),
            self.corrupt,
            self.dropped,
            self.rejected,
        )
    }
}

/// A source as the stats lines and the summary show it: `cam (udp 10.0.0.5:50000)` for a
/// named one, else `udp 10.0.0.5:50000`.
fn shown(id: &SourceId, name: Option<&str>) -> String {
    match name {
        Some(name) => format!("{name} ({id})"),
        None => id.to_string(),
    }
}

/// The periodic report's lines for the sources' snapshots `now`, against `previous` (the
/// snapshots of the last report, updated here; sources gone from `now` are forgotten). The
/// [`REPORT_TOP_SOURCES`] busiest sources that changed (most items, then most bytes, then
/// most errors) get a line each; the other active ones one line per service:
/// `img: + 1995 other sources: …`. Quiet sources get none.
fn report_lines(
    previous: &mut HashMap<SourceId, Snapshot>,
    now: Vec<(SourceId, Snapshot)>,
    names: &HashMap<SourceId, String>,
    latencies: &HashMap<SourceId, (LatencyState, LatencyHistogram)>,
    interval: Duration,
) -> Vec<String> {
    let mut active: Vec<(SourceId, Snapshot, u64)> = Vec::new();
    let mut seen = HashMap::with_capacity(now.len());
    for (id, snap) in now {
        let delta = snap.since(&previous.get(&id).copied().unwrap_or_default());
        if delta != Snapshot::default() {
            active.push((id, delta, snap.items));
        }
        seen.insert(id, snap);
    }
    *previous = seen;
    active.sort_by(|a, b| {
        let errors = |d: &Snapshot| d.corrupt + d.dropped + d.rejected;
        (b.1.items, b.1.bytes, errors(&b.1), a.0).cmp(&(a.1.items, a.1.bytes, errors(&a.1), b.0))
    });
    let rest = active.split_off(active.len().min(REPORT_TOP_SOURCES));
    let mut lines: Vec<String> = active
        .iter()
        .map(|(id, d, total)| {
            let latency = latencies
                .get(id)
                .map(|(l, _)| format!(", {}", l.line()))
                .unwrap_or_default();
            format!(
                "{}: {}{latency} ({total} total)",
                shown(id, names.get(id).map(String::as_str)),
                d.interval_rates(id.service, interval)
            )
        })
        .collect();
    let mut others: Vec<(Service, usize, Snapshot)> = Vec::new();
    for (id, d, _) in &rest {
        match others.iter_mut().find(|(s, _, _)| *s == id.service) {
            Some((_, n, sum)) => {
                *n += 1;
                sum.add(d);
            }
            None => others.push((id.service, 1, *d)),
        }
    }
    others.sort_by_key(|(s, _, _)| s.name());
    for (service, n, sum) in others {
        let noun = if n == 1 { "source" } else { "sources" };
        lines.push(format!(
            "{}: + {n} other {noun}: {}",
            service.name(),
            sum.interval_rates(service, interval)
        ));
    }
    lines
}

/// Log every active source's rates every `interval` until shutdown.
pub fn spawn_reporter(
    stats: Arc<Stats>,
    interval: Duration,
    shutdown: Shutdown,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("stats".into())
        .spawn(move || {
            let mut previous: HashMap<SourceId, Snapshot> = HashMap::new();
            while !shutdown.wait_timeout(interval) {
                let (snapshot, names) = (stats.snapshot(), stats.names());
                let latencies = stats.latencies(true);
                for line in report_lines(&mut previous, snapshot, &names, &latencies, interval) {
                    log::info!("{line}");
                }
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_source_claiming_a_name_is_told_apart_and_a_quiet_one_hands_it_over() {
        let stats = Stats::new();
        let img = |port| SourceId {
            service: Service::Img,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        };
        let cam = SourceName::parse("cam").unwrap();
        // a source that has delivered a frame holds its name
        let first = stats.source(img(1));
        stats.record_item(&first, 10);
        assert_eq!(stats.claim_name(img(1), &cam, false), "cam");
        assert_eq!(
            stats.claim_name(img(1), &cam, false),
            "cam",
            "asked again: the same"
        );
        let second = stats.source(img(2));
        stats.record_item(&second, 10);
        assert_eq!(stats.claim_name(img(2), &cam, false), "cam#2");
        // the same name on another service is another name
        let msg = SourceId {
            service: Service::Msg,
            ..img(3)
        };
        assert_eq!(stats.claim_name(msg, &cam, false), "cam");
        assert_eq!(stats.name_of(img(2)).as_deref(), Some("cam#2"));
        // a holder that never delivered anything gives the name up
        let other = SourceName::parse("door").unwrap();
        assert_eq!(stats.claim_name(img(4), &other, false), "door");
        assert_eq!(stats.claim_name(img(5), &other, false), "door");
        assert_eq!(stats.name_of(img(4)), None, "shown by its address again");
        assert_eq!(stats.names().len(), 4);
        // an authenticated name (the keys file's) is the device's own: it takes over at once
        assert_eq!(stats.claim_name(img(6), &cam, true), "cam");
        assert_eq!(stats.name_of(img(1)), None);
    }

    #[test]
    fn the_report_names_the_busiest_sources_and_sums_up_the_rest() {
        let src = |service, port| SourceId {
            service,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        };
        let snap = |items, bytes| Snapshot {
            items,
            bytes,
            ..Snapshot::default()
        };
        let secs = Duration::from_secs(5);
        let mut previous = HashMap::new();
        // 2000 image sources with 1 frame each, a camera with 50, a quiet one, a sensor
        let mut now: Vec<_> = (1..=2000)
            .map(|p| (src(Service::Img, p), snap(1, 1000)))
            .collect();
        now.push((src(Service::Img, 9000), snap(50, 5_000_000)));
        now.push((src(Service::Msg, 7000), snap(10, 500)));
        let lines = report_lines(
            &mut previous,
            now.clone(),
            &HashMap::new(),
            &HashMap::new(),
            secs,
        );
        assert_eq!(lines.len(), REPORT_TOP_SOURCES + 1, "{lines:#?}");
        assert_eq!(
            lines[0],
            "udp 127.0.0.1:9000: 10.0 frames/s, 1.0 MB/s, +0 corrupt, +0 dropped, +0 rejected \
             (50 total)"
        );
        assert!(
            lines[1].starts_with("udp 127.0.0.1:7000: 2.0 messages/s"),
            "{}",
            lines[1]
        );
        // sources 1..=3 by the tie-break on the id, then the other 1997 in one line
        assert!(
            lines[2].starts_with("udp 127.0.0.1:1: 0.2 frames/s"),
            "{}",
            lines[2]
        );
        assert_eq!(
            lines[5],
            "img: + 1997 other sources: 399.4 frames/s, 399.4 kB/s, +0 corrupt, +0 dropped, \
             +0 rejected"
        );
        // nothing changed: nothing to say; a source gone is forgotten
        assert!(report_lines(
            &mut previous,
            now.clone(),
            &HashMap::new(),
            &HashMap::new(),
            secs
        )
        .is_empty());
        now.truncate(10);
        assert!(
            report_lines(&mut previous, now, &HashMap::new(), &HashMap::new(), secs).is_empty()
        );
        assert_eq!(previous.len(), 10);
    }

    #[test]
    fn counts_per_source_and_sums_per_service() {
        let stats = Stats::new();
        let mut cache = SourceCache::new(Service::Img, stats.clone());
        let a = SocketAddr::from(([127, 0, 0, 1], 1));
        let b = SocketAddr::from(([127, 0, 0, 1], 2));
        assert_eq!(cache.record_item(a, 100), 1);
        assert_eq!(cache.record_item(a, 50), 2);
        cache.get(b).corrupt.fetch_add(1, Relaxed);
        let total = stats.service_total(Service::Img);
        assert_eq!((total.items, total.bytes, total.corrupt), (2, 150, 1));
        let summary = stats.summary(&[Service::Img]).text();
        assert!(summary.starts_with("hub: summary"));
        assert!(
            summary.contains("udp 127.0.0.1:1: 2 frames, 150 B"),
            "{summary}"
        );
        assert!(summary.contains("1 corrupt"), "{summary}");
    }

    #[test]
    fn frames_rebuilt_from_parity_are_in_the_summary_when_there_were_any() {
        use crate::proto::framed_receiver::Rebuilt;
        let stats = Stats::new();
        stats.set_rebuilt(Service::Img, Rebuilt::default());
        let summary = stats.summary(&[Service::Img]);
        assert_eq!(summary.services[0].rebuilt, None);
        assert!(!summary.text().contains("parity"));
        let json = serde_json::to_value(&summary).unwrap();
        assert!(json["services"][0].get("rebuilt").is_none(), "{json}");
        let r = Rebuilt {
            frames: 2,
            chunks: 3,
            failed: 1,
        };
        stats.set_rebuilt(Service::Img, r);
        let summary = stats.summary(&[Service::Img]);
        assert_eq!(summary.services[0].rebuilt, Some(r));
        assert!(
            summary.text().contains(
                "    frames rebuilt from parity: 2 (3 chunks; 1 rebuilds failed the check)"
            ),
            "{}",
            summary.text()
        );
        let json = serde_json::to_value(&summary).unwrap();
        assert_eq!(
            json["services"][0]["rebuilt"],
            serde_json::json!({"frames": 2, "chunks": 3, "failed": 1})
        );
        let back: HubSummary = serde_json::from_value(json).unwrap();
        assert_eq!(back, summary);
    }

    #[test]
    fn the_summary_reads_back_from_json_and_prints_the_same_text() {
        let stats = Stats::new();
        let mut img = SourceCache::new(Service::Img, stats.clone());
        let mut msg = SourceCache::new(Service::Msg, stats.clone());
        let a = SocketAddr::from(([127, 0, 0, 1], 1));
        img.record_item(a, 2000);
        img.get(a).dropped.fetch_add(2, Relaxed);
        msg.record_item(a, 12);
        msg.get(a).corrupt.fetch_add(1, Relaxed);
        let mut summary = stats.summary(&[Service::Img, Service::Msg, Service::Tcp]);
        summary.saved = Some(SaverReport {
            saved: 1,
            skipped: 0,
            failed: 0,
        });
        let json = serde_json::to_value(&summary).unwrap();
        assert_eq!(json["services"][0]["service"], "img");
        assert_eq!(json["services"][0]["total"]["items"], 1);
        assert_eq!(json["services"][0]["total"]["dropped"], 2);
        assert!(json["services"][0]["total"]["addr"].is_null(), "{json}");
        assert_eq!(json["services"][0]["sources"][0]["addr"], "127.0.0.1:1");
        assert_eq!(json["services"][1]["sources"][0]["corrupt"], 1);
        assert_eq!(json["services"][2]["sources"], serde_json::json!([]));
        assert_eq!(json["saved"]["saved"], 1);
        let back: HubSummary = serde_json::from_value(json).unwrap();
        assert_eq!(back, summary);
        assert_eq!(back.service(Service::Msg).unwrap().total.bytes, 12);

        let text = summary.text();
        let body: Vec<&str> = text.lines().skip(1).collect();
        assert!(text.starts_with("hub: summary after "), "{text}");
        assert_eq!(
            body,
            [
                "  images (udp): 1 frames, 2.0 kB, 0.0 frames/s, 0 corrupt, 2 dropped, 0 rejected",
                "    udp 127.0.0.1:1: 1 frames, 2.0 kB, 0.0 frames/s, 0 corrupt, 2 dropped, 0 rejected",
                "  messages (udp): 1 messages, 12 B, 0.0 msg/s, 1 invalid",
                "    udp 127.0.0.1:1: 1 messages, 12 B, 0.0 msg/s, 1 invalid",
                "  images (tcp): 0 frames, 0 B, 0.0 frames/s, 0 corrupt, 0 dropped, 0 rejected",
                "  saved: 1 frames (0 skipped while the disk was behind, 0 failed)",
            ],
            "{text}"
        );
    }

    #[test]
    fn last_message_is_kept_cut_on_a_character_boundary() {
        let stats = Stats::new();
        assert_eq!(stats.last_message().from, None);
        let from = SocketAddr::from(([127, 0, 0, 1], 7));
        assert!(stats.try_set_last_message(from, "[0, 0, 0, 1]", 1.5));
        let last = stats.last_message();
        assert_eq!(
            (last.from, last.text.as_str(), last.truncated),
            (Some(from), "[0, 0, 0, 1]", false)
        );
        let long = format!("\"{}\"", "é".repeat(LAST_MESSAGE_BYTES));
        assert!(stats.try_set_last_message(from, &long, 2.0));
        let last = stats.last_message();
        assert!(last.truncated);
        assert!(last.text.len() <= LAST_MESSAGE_BYTES && last.text.len() >= LAST_MESSAGE_BYTES - 1);
        assert!(long.starts_with(&last.text));
        assert_eq!(last.at_s, 2.0);
    }

    #[test]
    fn the_message_thread_does_not_wait_for_a_reader_of_the_last_message() {
        let stats = Stats::new();
        let from = SocketAddr::from(([127, 0, 0, 1], 7));
        let held = stats.last_message.lock().unwrap();
        assert!(!stats.try_set_last_message(from, "[1]", 1.0));
        drop(held);
        assert_eq!(stats.last_message().from, None);
        assert!(stats.try_set_last_message(from, "[1]", 1.0));
        assert_eq!(stats.last_message().text, "[1]");
    }

    #[test]
    fn sources_beyond_the_limit_share_one_entry() {
        let stats = Stats::new();
        for port in 0..(MAX_SOURCES as u16 + 10) {
            let id = SourceId {
                service: Service::Msg,
                addr: SocketAddr::from(([127, 0, 0, 1], port + 1)),
            };
            stats.record_item(&stats.source(id), 1);
        }
        assert_eq!(stats.snapshot().len(), MAX_SOURCES + 1);
        assert_eq!(
            stats.service_total(Service::Msg).items,
            MAX_SOURCES as u64 + 10
        );
    }
}
