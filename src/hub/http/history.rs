//! The last minutes of every source, for the plots on the web page (`/api/history`, issue
//! 13): per image source one sample a second of its frame rate, bytes per frame, latency
//! p50/p99 and the sender's chosen JPEG quality; per message source the numeric fields of
//! its messages over time (battery, temperature …).
//!
//! Socket-free and clock-free: the HTTP view's history thread feeds it the hub's counters
//! once a second ([`History::record_image`]) and the messages it takes from a tap of its
//! own ([`History::record_message`]), with the time passed in. Everything is bounded:
//! [`SPAN_S`] seconds of samples per series, at most [`MAX_FIELDS`] fields per message
//! source (the first ones seen), one point per field per second (the newest value in that
//! second wins), and at most [`MAX_SOURCES`] sources of each kind (later ones are not
//! plotted, and a source not seen for [`SPAN_S`] is forgotten).

use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};

/// Seconds of history kept (and plotted).
pub const SPAN_S: f64 = 300.0;
/// Numeric fields plotted per message source.
pub const MAX_FIELDS: usize = 8;
/// Sources of each kind (image, message) plotted.
pub const MAX_SOURCES: usize = 64;
/// Longest field path kept (`gps.alt` …), in bytes.
const MAX_FIELD_NAME: usize = 64;

/// One image-source sample: what happened in the second before `t_s`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ImageSample {
    /// Seconds since the hub started.
    pub t_s: f64,
    pub fps: f64,
    /// Mean JPEG bytes of the frames of that second (`null` when there were none).
    pub bytes_per_frame: Option<f64>,
    /// The source's latency percentiles then, in ms (`null` when not known).
    pub latency_p50_ms: Option<f64>,
    pub latency_p99_ms: Option<f64>,
    /// The JPEG quality its newest frame was sent at, as the sender said (`null`: unknown).
    pub quality: Option<u8>,
}

/// What an image source's counters and figures are at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ImageReading {
    pub frames: u64,
    pub bytes: u64,
    pub latency_p50_ms: Option<f64>,
    pub latency_p99_ms: Option<f64>,
    pub quality: Option<u8>,
}

#[derive(Default)]
struct ImageSeries {
    last: Option<(f64, u64, u64)>,
    samples: VecDeque<ImageSample>,
}

#[derive(Default)]
struct MessageSeries {
    last_s: f64,
    /// Field path -> (t_s, value), at most one point per second.
    fields: BTreeMap<String, VecDeque<(f64, f64)>>,
}

/// The history of every source; see the module doc.
#[derive(Default)]
pub struct History {
    images: BTreeMap<String, ImageSeries>,
    messages: BTreeMap<String, MessageSeries>,
}

/// `/api/history`: per source id, its series.
#[derive(Debug, Serialize)]
pub struct HistoryState {
    pub span_s: f64,
    /// Seconds since the hub started, when this was taken.
    pub now_s: f64,
    pub sources: BTreeMap<String, Vec<ImageSample>>,
    /// Per message source id: per field path, `[t_s, value]` points.
    pub messages: BTreeMap<String, BTreeMap<String, Vec<(f64, f64)>>>,
}

fn trim<T>(q: &mut VecDeque<T>, now_s: f64, t: impl Fn(&T) -> f64) {
    while q.front().is_some_and(|x| now_s - t(x) > SPAN_S) {
        q.pop_front();
    }
}

impl History {
    pub fn new() -> Self {
        History::default()
    }

    /// Record image source `id`'s reading at `now_s`; the first reading of a source only
    /// sets its base (a rate needs two).
    pub fn record_image(&mut self, id: &str, now_s: f64, r: ImageReading) {
        if !self.images.contains_key(id) && self.images.len() >= MAX_SOURCES {
            return;
        }
        let series = self.images.entry(id.to_owned()).or_default();
        if let Some((t0, frames0, bytes0)) = series.last {
            let dt = now_s - t0;
            if dt <= 0.0 {
                return;
            }
            let frames = r.frames.saturating_sub(frames0);
            let bytes = r.bytes.saturating_sub(bytes0);
            series.samples.push_back(ImageSample {
                t_s: now_s,
                fps: frames as f64 / dt,
                bytes_per_frame: (frames > 0).then(|| bytes as f64 / frames as f64),
                latency_p50_ms: r.latency_p50_ms,
                latency_p99_ms: r.latency_p99_ms,
                quality: r.quality,
            });
            trim(&mut series.samples, now_s, |s| s.t_s);
        }
        series.last = Some((now_s, r.frames, r.bytes));
    }

    /// Record the numeric fields of message `json` from message source `id` at `now_s`:
    /// top-level numbers and numbers one object deep (`gps.alt`). Anything else in it, and
    /// text that is not a JSON object, is not plotted.
    pub fn record_message(&mut self, id: &str, now_s: f64, json: &str) {
        if !self.messages.contains_key(id) && self.messages.len() >= MAX_SOURCES {
            return;
        }
        let Ok(serde_json::Value::Object(map)) = serde_json::from_str(json) else {
            return;
        };
        let series = self.messages.entry(id.to_owned()).or_default();
        series.last_s = now_s;
        let mut put = |path: String, v: f64| {
            if path.len() > MAX_FIELD_NAME {
                return;
            }
            if !series.fields.contains_key(&path) && series.fields.len() >= MAX_FIELDS {
                return;
            }
            let q = series.fields.entry(path).or_default();
            match q.back_mut() {
                // one point per second: the newest value of that second
                Some(last) if now_s.floor() == last.0.floor() => *last = (now_s, v),
                _ => q.push_back((now_s, v)),
            }
            trim(q, now_s, |p| p.0);
        };
        for (key, value) in &map {
            match value {
                serde_json::Value::Number(n) => {
                    if let Some(v) = n.as_f64() {
                        put(key.clone(), v);
                    }
                }
                serde_json::Value::Object(inner) => {
                    for (k, v) in inner {
                        if let Some(v) = v.as_f64() {
                            put(format!("{key}.{k}"), v);
                        }
                    }
                }
                _ => {}
            }
        }
    }

    /// Forget sources with nothing in the last [`SPAN_S`] seconds (so others can take their
    /// places).
    pub fn forget_old(&mut self, now_s: f64) {
        self.images
            .retain(|_, s| s.last.is_some_and(|(t, _, _)| now_s - t <= SPAN_S));
        self.messages.retain(|_, s| now_s - s.last_s <= SPAN_S);
    }

    /// Everything, for `/api/history`.
    pub fn state(&self, now_s: f64) -> HistoryState {
        HistoryState {
            span_s: SPAN_S,
            now_s,
            sources: self
                .images
                .iter()
                .map(|(id, s)| (id.clone(), s.samples.iter().cloned().collect()))
                .collect(),
            messages: self
                .messages
                .iter()
                .map(|(id, s)| {
                    let fields = s
                        .fields
                        .iter()
                        .map(|(f, q)| (f.clone(), q.iter().copied().collect()))
                        .collect();
                    (id.clone(), fields)
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(frames: u64, bytes: u64) -> ImageReading {
        ImageReading {
            frames,
            bytes,
            ..ImageReading::default()
        }
    }

    #[test]
    fn image_samples_are_rates_over_the_second_before() {
        let mut h = History::new();
        h.record_image("img-a", 1.0, reading(10, 10_000));
        assert!(
            h.state(1.0).sources["img-a"].is_empty(),
            "one reading is a base"
        );
        h.record_image(
            "img-a",
            2.0,
            ImageReading {
                quality: Some(70),
                latency_p99_ms: Some(42.0),
                ..reading(40, 40_000)
            },
        );
        h.record_image("img-a", 3.0, reading(40, 40_000));
        let s = &h.state(3.0).sources["img-a"];
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].fps, 30.0);
        assert_eq!(s[0].bytes_per_frame, Some(1000.0));
        assert_eq!(s[0].quality, Some(70));
        assert_eq!(s[0].latency_p99_ms, Some(42.0));
        assert_eq!((s[1].fps, s[1].bytes_per_frame), (0.0, None));
    }

    #[test]
    fn samples_older_than_the_span_are_dropped() {
        let mut h = History::new();
        for t in 0..700u32 {
            h.record_image("img-a", f64::from(t), reading(u64::from(t) * 5, 0));
        }
        let s = &h.state(699.0).sources["img-a"];
        assert_eq!(s.len(), SPAN_S as usize + 1);
        assert!(s.iter().all(|x| 699.0 - x.t_s <= SPAN_S && x.fps == 5.0));
    }

    #[test]
    fn message_numbers_are_plotted_one_point_per_second_newest_wins() {
        let mut h = History::new();
        h.record_message(
            "msg-a",
            10.1,
            r#"{"battery": 80, "gps": {"alt": 12.5, "fix": "3d"}, "name": "x"}"#,
        );
        h.record_message("msg-a", 10.7, r#"{"battery": 79}"#);
        h.record_message("msg-a", 11.2, r#"{"battery": 78, "temp": -3.5}"#);
        h.record_message("msg-a", 12.0, "[1, 2, 3]");
        h.record_message("msg-a", 12.0, "not json");
        let st = h.state(12.0);
        let fields = &st.messages["msg-a"];
        assert_eq!(fields["battery"], vec![(10.7, 79.0), (11.2, 78.0)]);
        assert_eq!(fields["gps.alt"], vec![(10.1, 12.5)]);
        assert_eq!(fields["temp"], vec![(11.2, -3.5)]);
        assert_eq!(fields.len(), 3, "text fields are not plotted: {fields:?}");
    }

    #[test]
    fn fields_and_sources_are_bounded_and_old_sources_forgotten() {
        let mut h = History::new();
        let many: String = (0..50).map(|i| format!("\"f{i:02}\": {i},")).collect();
        h.record_message("msg-a", 1.0, &format!("{{{many} \"z\": 1}}"));
        assert_eq!(h.state(1.0).messages["msg-a"].len(), MAX_FIELDS);
        for i in 0..MAX_SOURCES + 10 {
            h.record_image(&format!("img-{i}"), 1.0, reading(0, 0));
            h.record_message(&format!("msg-{i}"), 1.0, r#"{"v": 1}"#);
        }
        let st = h.state(1.0);
        assert_eq!(
            (st.sources.len(), st.messages.len()),
            (MAX_SOURCES, MAX_SOURCES)
        );
        h.forget_old(1.0 + SPAN_S + 1.0);
        let st = h.state(1.0 + SPAN_S + 1.0);
        assert!(st.sources.is_empty() && st.messages.is_empty());
    }
}
