//! What `/state` (JSON) and `/metrics` (Prometheus text) say: one [`State`] is built from
//! the hub's counters per request and written out in either form, so the two always agree.
//!
//! Rates: `fps_average` is over a source's whole life (first to last frame); `fps` is the
//! recent rate, from samples of the counters the HTTP side keeps ([`Rates`]) over the last
//! few seconds, so the page shows what a source does now and a quiet source drops to 0.

use super::frames::LatestFrames;
use crate::hub::latency::{LatencyHistogram, LatencyState, LatencyWindow, BUCKETS_S};
use crate::hub::source::Service;
use crate::hub::stats::{Snapshot, Stats};
use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::net::SocketAddr;

/// A source with no frame (or message) for this long is shown as quiet.
pub const QUIET_AFTER_S: f64 = 3.0;
/// The recent rate is measured over about this long.
const RATE_WINDOW_S: f64 = 5.0;
/// Samples closer together than this are not kept.
const SAMPLE_EVERY_S: f64 = 0.25;
/// Below this much history, the recent rate falls back to the lifetime average.
const MIN_RATE_SPAN_S: f64 = 1.0;

/// One service the hub runs, as it was bound.
#[derive(Clone, Debug, Serialize)]
pub struct ServiceInfo {
    /// `img`, `msg`, `tcp` or `http`.
    pub name: &'static str,
    /// `udp` or `tcp`.
    pub transport: &'static str,
    pub addr: SocketAddr,
    /// The UDP receive buffer as the kernel reports it (`SO_RCVBUF`; Linux reports twice
    /// the usable size). Absent for TCP services.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub receive_buffer_bytes: Option<usize>,
}

/// The hub's whole state, as `/state` returns it.
#[derive(Debug, Serialize)]
pub struct State {
    pub uptime_s: f64,
    pub services: Vec<ServiceInfo>,
    pub http: HttpState,
    /// Image sources (UDP senders and TCP connections), by service then address.
    pub sources: Vec<SourceState>,
    pub messages: MessagesState,
    /// With `--mqtt`: the bridge's counters (`null` without).
    pub mqtt: Option<crate::mqtt::MqttState>,
    /// Commands down: submitted, delivered, expired, rejected, waiting.
    pub commands: crate::hub::stats::CommandState,
    /// With keys: what was refused without a reply, per service and reason.
    pub refused: Vec<RefusedState>,
    /// Framed frames rebuilt from parity chunks (`--fec`), per service that rebuilt any.
    pub rebuilt: Vec<RebuiltState>,
}

/// One service's frames rebuilt from parity: frames, data chunks rebuilt, and rebuilds
/// that did not match the frame's check (dropped, then nacked).
#[derive(Debug, Serialize)]
pub struct RebuiltState {
    pub service: &'static str,
    #[serde(flatten)]
    pub rebuilt: crate::proto::framed_receiver::Rebuilt,
}

/// Datagrams (or TCP connections) of one service refused for one reason.
#[derive(Debug, Serialize)]
pub struct RefusedState {
    pub service: &'static str,
    pub reason: &'static str,
    pub count: u64,
}

#[derive(Debug, Serialize)]
pub struct HttpState {
    pub viewers: usize,
    pub max_viewers: usize,
}

/// One image source.
#[derive(Debug, Serialize)]
pub struct SourceState {
    /// URL-safe id, as in `/stream/<id>` (and in saved file names).
    pub id: String,
    /// The name the source gave (framed `--name`), as shown (`NAME#2` for a second claim).
    pub name: Option<String>,
    /// `img` (UDP) or `tcp`.
    pub service: &'static str,
    pub addr: SocketAddr,
    pub frames: u64,
    pub bytes: u64,
    pub corrupt: u64,
    pub dropped: u64,
    pub rejected: u64,
    /// Frames per second over the last few seconds.
    pub fps: f64,
    /// Frames per second from its first to its last frame.
    pub fps_average: f64,
    /// Seconds since its last intact frame; `null` before the first.
    pub last_seen_s_ago: Option<f64>,
    /// No intact frame for [`QUIET_AFTER_S`] seconds (or none yet).
    pub quiet: bool,
    /// `/stream/<id>` and `/snapshot/<id>.jpg` once a frame is there to show.
    pub stream: Option<String>,
    pub snapshot: Option<String>,
    /// The JPEG quality of its newest frame, as the sender said (framed senders that say
    /// it); `null` otherwise.
    pub quality: Option<u8>,
    /// Frame latency over the last seconds, and the clock state of the newest frame
    /// ([`crate::hub::latency`]).
    pub latency_ms: LatencyState,
    /// For `/metrics`: every synced frame's latency so far.
    #[serde(skip)]
    pub latency_histogram: Option<LatencyHistogram>,
}

/// The message channel.
#[derive(Debug, Serialize)]
pub struct MessagesState {
    pub messages: u64,
    pub bytes: u64,
    /// Datagrams that were not one UTF-8 JSON value.
    pub invalid: u64,
    /// Messages per second over the last few seconds, all senders together.
    pub rate: f64,
    pub last: Option<LastMessageState>,
    pub sources: Vec<MessageSourceState>,
}

#[derive(Debug, Serialize)]
pub struct LastMessageState {
    pub from: SocketAddr,
    /// The message's JSON text, its first 500 bytes.
    pub text: String,
    pub truncated: bool,
    pub s_ago: f64,
}

#[derive(Debug, Serialize)]
pub struct MessageSourceState {
    pub id: String,
    /// The name the sender gave, if any.
    pub name: Option<String>,
    pub addr: SocketAddr,
    pub messages: u64,
    pub bytes: u64,
    pub invalid: u64,
    pub rate: f64,
    pub last_seen_s_ago: Option<f64>,
    pub quiet: bool,
}

/// Recent rates: a few samples of each counter over the last [`RATE_WINDOW_S`] seconds.
#[derive(Default)]
pub struct Rates {
    samples: HashMap<String, VecDeque<(f64, u64)>>,
}

impl Rates {
    /// Record that `key`'s counter is `count` at `now_s` and return its recent rate, or
    /// `fallback` while there is too little history.
    fn observe(&mut self, key: String, now_s: f64, count: u64, fallback: f64) -> f64 {
        let q = self.samples.entry(key).or_default();
        if q.back().is_none_or(|&(t, _)| now_s - t >= SAMPLE_EVERY_S) {
            q.push_back((now_s, count));
        }
        // keep one sample at least a window old as the base
        while q.len() > 2 && now_s - q[1].0 >= RATE_WINDOW_S {
            q.pop_front();
        }
        let (t0, n0) = q[0];
        if now_s - t0 < MIN_RATE_SPAN_S {
            return fallback;
        }
        count.saturating_sub(n0) as f64 / (now_s - t0)
    }
}

fn age(uptime_s: f64, s: &Snapshot) -> Option<f64> {
    (s.items > 0).then(|| (uptime_s - s.last_s).max(0.0))
}

fn is_quiet(age: Option<f64>) -> bool {
    age.is_none_or(|a| a > QUIET_AFTER_S)
}

/// Build the state from the hub's counters.
pub fn build(
    stats: &Stats,
    frames: &LatestFrames,
    services: &[ServiceInfo],
    http: HttpState,
    rates: &mut Rates,
) -> State {
    let snapshot = stats.snapshot();
    let names = stats.names();
    let mut latencies = stats.latencies(true);
    let uptime_s = stats.uptime().as_secs_f64();
    let mut sources = Vec::new();
    let mut msg_sources = Vec::new();
    let mut msg_total = Snapshot::default();
    for (id, s) in &snapshot {
        let slug = id.slug();
        let last_seen_s_ago = age(uptime_s, s);
        match id.service {
            Service::Img | Service::Tcp => {
                let viewable = frames.get(id).is_some();
                let (latency_ms, latency_histogram) = match latencies.remove(id) {
                    Some((state, histogram)) => (state, Some(histogram)),
                    None => (LatencyWindow::default().state(0), None),
                };
                sources.push(SourceState {
                    quality: latency_ms.quality,
                    latency_ms,
                    latency_histogram,
                    fps: rates.observe(
                        format!("{}/{slug}", id.service.name()),
                        uptime_s,
                        s.items,
                        s.rate(),
                    ),
                    id: slug.clone(),
                    name: names.get(id).cloned(),
                    service: id.service.name(),
                    addr: id.addr,
                    frames: s.items,
                    bytes: s.bytes,
                    corrupt: s.corrupt,
                    dropped: s.dropped,
                    rejected: s.rejected,
                    fps_average: s.rate(),
                    last_seen_s_ago,
                    quiet: is_quiet(last_seen_s_ago),
                    stream: viewable.then(|| format!("/stream/{slug}")),
                    snapshot: viewable.then(|| format!("/snapshot/{slug}.jpg")),
                });
            }
            Service::Msg => {
                msg_total.items += s.items;
                msg_total.bytes += s.bytes;
                msg_total.corrupt += s.corrupt;
                msg_sources.push(MessageSourceState {
                    rate: rates.observe(format!("msg/{slug}"), uptime_s, s.items, s.rate()),
                    id: slug,
                    name: names.get(id).cloned(),
                    addr: id.addr,
                    messages: s.items,
                    bytes: s.bytes,
                    invalid: s.corrupt,
                    last_seen_s_ago,
                    quiet: is_quiet(last_seen_s_ago),
                });
            }
        }
    }
    let last = stats.last_message();
    let messages = MessagesState {
        messages: msg_total.items,
        bytes: msg_total.bytes,
        invalid: msg_total.corrupt,
        rate: msg_sources.iter().map(|s| s.rate).sum(),
        last: last.from.map(|from| LastMessageState {
            from,
            text: last.text,
            truncated: last.truncated,
            s_ago: (uptime_s - last.at_s).max(0.0),
        }),
        sources: msg_sources,
    };
    State {
        uptime_s,
        services: services.to_vec(),
        http,
        sources,
        messages,
        mqtt: stats.mqtt_state(),
        commands: stats.commands(),
        refused: stats
            .refused()
            .into_iter()
            .map(|(service, reason, count)| RefusedState {
                service: service.name(),
                reason,
                count,
            })
            .collect(),
        rebuilt: stats
            .rebuilt()
            .into_iter()
            .map(|(service, rebuilt)| RebuiltState {
                service: service.name(),
                rebuilt,
            })
            .collect(),
    }
}

/// The `name` label of a named source (after `source`), or nothing.
fn name_label(name: &Option<String>) -> String {
    name.as_deref()
        .map(|n| format!(",name=\"{}\"", label(n)))
        .unwrap_or_default()
}

/// A Prometheus label value: `\`, `"` and newlines escaped.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// `udphub_frame_latency_seconds`, per image source with a synced frame.
fn histogram(out: &mut String, state: &State, src: &dyn Fn(&SourceState) -> String) {
    let name = "udphub_frame_latency_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} Capture to arrival on the hub, on the hub's clock (the sender's \
         offset estimate applied), per image source whose clock is synced."
    );
    let _ = writeln!(out, "# TYPE {name} histogram");
    for s in &state.sources {
        let Some(h) = &s.latency_histogram else {
            continue;
        };
        let labels = src(s);
        let inner = &labels[1..labels.len() - 1];
        for (le, n) in BUCKETS_S.iter().zip(h.cumulative) {
            let _ = writeln!(out, "{name}_bucket{{{inner},le=\"{le}\"}} {n}");
        }
        let _ = writeln!(out, "{name}_bucket{{{inner},le=\"+Inf\"}} {}", h.count);
        let _ = writeln!(out, "{name}_sum{labels} {}", h.sum_s);
        let _ = writeln!(out, "{name}_count{labels} {}", h.count);
    }
}

/// The state in the Prometheus text exposition format (version 0.0.4).
pub fn metrics(state: &State) -> String {
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, rows: Vec<(String, f64)>| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, value) in rows {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    let src = |s: &SourceState| {
        format!(
            "{{service=\"{}\",source=\"{}\"{}}}",
            s.service,
            label(&s.id),
            name_label(&s.name)
        )
    };
    let per_source = |f: &dyn Fn(&SourceState) -> f64| -> Vec<(String, f64)> {
        state.sources.iter().map(|s| (src(s), f(s))).collect()
    };
    family(
        "udphub_uptime_seconds",
        "gauge",
        "Seconds since the hub started.",
        vec![(String::new(), state.uptime_s)],
    );
    family(
        "udphub_receive_buffer_bytes",
        "gauge",
        "UDP receive buffer of a service as the kernel reports it (SO_RCVBUF).",
        state
            .services
            .iter()
            .filter_map(|s| {
                Some((
                    format!("{{service=\"{}\"}}", s.name),
                    s.receive_buffer_bytes? as f64,
                ))
            })
            .collect(),
    );
    family(
        "udphub_frames_total",
        "counter",
        "Intact frames received, per image source.",
        per_source(&|s| s.frames as f64),
    );
    family(
        "udphub_frame_bytes_total",
        "counter",
        "Bytes in the intact frames, per image source.",
        per_source(&|s| s.bytes as f64),
    );
    family(
        "udphub_frames_corrupt_total",
        "counter",
        "Frames that reached their length but were not a complete JPEG.",
        per_source(&|s| s.corrupt as f64),
    );
    family(
        "udphub_frames_dropped_total",
        "counter",
        "Partial frames given up (lost datagrams, timeout, memory budget, peer closed).",
        per_source(&|s| s.dropped as f64),
    );
    family(
        "udphub_rejected_total",
        "counter",
        "Datagrams or headers that could not be used (bad headers, stray data).",
        per_source(&|s| s.rejected as f64),
    );
    family(
        "udphub_frames_per_second",
        "gauge",
        "Frames per second over the last few seconds.",
        per_source(&|s| s.fps),
    );
    family(
        "udphub_last_frame_age_seconds",
        "gauge",
        "Seconds since the source's last intact frame.",
        state
            .sources
            .iter()
            .filter_map(|s| Some((src(s), s.last_seen_s_ago?)))
            .collect(),
    );
    let m = &state.messages;
    let msg_src = |f: &dyn Fn(&MessageSourceState) -> f64| -> Vec<(String, f64)> {
        m.sources
            .iter()
            .map(|s| {
                (
                    format!(
                        "{{service=\"msg\",source=\"{}\"{}}}",
                        label(&s.id),
                        name_label(&s.name)
                    ),
                    f(s),
                )
            })
            .collect()
    };
    family(
        "udphub_messages_total",
        "counter",
        "Valid JSON messages received, per sender.",
        msg_src(&|s| s.messages as f64),
    );
    family(
        "udphub_message_bytes_total",
        "counter",
        "Bytes in the valid messages, per sender.",
        msg_src(&|s| s.bytes as f64),
    );
    family(
        "udphub_messages_invalid_total",
        "counter",
        "Datagrams on the message port that were not one UTF-8 JSON value, per sender.",
        msg_src(&|s| s.invalid as f64),
    );
    family(
        "udphub_messages_per_second",
        "gauge",
        "Messages per second over the last few seconds, all senders.",
        vec![(String::new(), m.rate)],
    );
    family(
        "udphub_http_viewers",
        "gauge",
        "Open /stream viewers.",
        vec![(String::new(), state.http.viewers as f64)],
    );
    family(
        "udphub_http_max_viewers",
        "gauge",
        "Most /stream viewers at once (--http-max-viewers).",
        vec![(String::new(), state.http.max_viewers as f64)],
    );
    family(
        "udphub_refused_total",
        "counter",
        "Datagrams and TCP connections refused without a reply (keys required), per service \
         and reason.",
        state
            .refused
            .iter()
            .map(|r| {
                let labels = format!("{{service=\"{}\",reason=\"{}\"}}", r.service, r.reason);
                (labels, r.count as f64)
            })
            .collect(),
    );
    family(
        "udphub_rebuilt_frames_total",
        "counter",
        "Framed frames completed with chunks rebuilt from parity (--fec), per service.",
        state
            .rebuilt
            .iter()
            .map(|r| {
                (
                    format!("{{service=\"{}\"}}", r.service),
                    r.rebuilt.frames as f64,
                )
            })
            .collect(),
    );
    let c = &state.commands;
    family(
        "udphub_commands_total",
        "counter",
        "Commands to devices (POST /api/sources/<source>/command, MQTT PREFIX/<source>/command), \
         by outcome: submitted, delivered, expired, rejected.",
        [
            ("submitted", c.submitted),
            ("delivered", c.delivered),
            ("expired", c.expired),
            ("rejected", c.rejected),
        ]
        .into_iter()
        .map(|(status, n)| (format!("{{status=\"{status}\"}}"), n as f64))
        .collect(),
    );
    family(
        "udphub_commands_waiting",
        "gauge",
        "Commands not yet delivered nor expired.",
        vec![(String::new(), c.waiting as f64)],
    );
    if let Some(m) = &state.mqtt {
        let one = |v: u64| vec![(String::new(), v as f64)];
        family(
            "udphub_mqtt_connected",
            "gauge",
            "1 while the connection to the MQTT broker (--mqtt) is up.",
            one(u64::from(m.connected)),
        );
        family(
            "udphub_mqtt_published_total",
            "counter",
            "Publications sent to the MQTT broker.",
            one(m.sent),
        );
        family(
            "udphub_mqtt_dropped_total",
            "counter",
            "Publications dropped while the broker was slow or away (kind: all, telemetry).",
            vec![
                ("{kind=\"all\"}".to_string(), m.dropped as f64),
                (
                    "{kind=\"telemetry\"}".to_string(),
                    m.dropped_telemetry as f64,
                ),
            ],
        );
        family(
            "udphub_mqtt_connections_total",
            "counter",
            "Connections made to the MQTT broker.",
            one(m.connections),
        );
    }
    histogram(&mut out, state, &src);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_rate_needs_a_second_of_history_then_follows_the_counter() {
        let mut r = Rates::default();
        assert_eq!(r.observe("a".into(), 0.0, 0, 7.0), 7.0);
        assert_eq!(r.observe("a".into(), 0.5, 5, 7.0), 7.0);
        assert_eq!(r.observe("a".into(), 2.0, 20, 7.0), 10.0);
        // quiet for a long while: the rate falls to zero
        assert_eq!(r.observe("a".into(), 20.0, 20, 7.0), 0.0);
        assert_eq!(r.observe("a".into(), 40.0, 20, 7.0), 0.0);
    }

    #[test]
    fn metrics_have_help_and_type_for_every_family() {
        let stats = Stats::new();
        let id = crate::hub::source::SourceId {
            service: Service::Img,
            addr: SocketAddr::from(([127, 0, 0, 1], 5)),
        };
        stats.record_item(&stats.source(id), 10);
        let state = build(
            &stats,
            &LatestFrames::default(),
            &[],
            HttpState {
                viewers: 0,
                max_viewers: 4,
            },
            &mut Rates::default(),
        );
        let text = metrics(&state);
        assert!(
            text.contains("udphub_frames_total{service=\"img\",source=\"udp-127.0.0.1-5\"} 1\n"),
            "{text}"
        );
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap();
            // a histogram's series are named after it
            let name = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .filter(|h| text.contains(&format!("# TYPE {h} histogram")))
                .unwrap_or(name);
            assert!(
                text.contains(&format!("# TYPE {name} ")),
                "no TYPE for {name}"
            );
            assert!(
                text.contains(&format!("# HELP {name} ")),
                "no HELP for {name}"
            );
        }
    }
}
