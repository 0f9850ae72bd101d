//! The hub's web view (`hub --http`) from outside, over loopback: `/state` and `/metrics`
//! agree with what a sender sent, `/snapshot` is the last frame byte for byte, `/stream`
//! yields complete JPEG parts, a viewer that stops reading costs the hub no frame, the
//! viewer limit answers 503, and bad requests get their status without touching reception.
//!
//! The HTTP client here is a few lines over `TcpStream`, written from the HTTP/1.1 and
//! multipart rules rather than from the hub's code, so a shared misunderstanding cannot hide.

mod common;

use common::*;
use serde_json::Value;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------
// A minimal HTTP client
// ---------------------------------------------------------------------------------------

struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(REPLY_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(REPLY_TIMEOUT)).unwrap();
    s
}

/// Read a status line and headers.
fn read_head(reader: &mut impl BufRead) -> (u16, Vec<(String, String)>) {
    let mut line = String::new();
    reader.read_line(&mut line).expect("status line");
    let mut words = line.split_whitespace();
    assert_eq!(
        words.next().map(|v| v.starts_with("HTTP/1.")),
        Some(true),
        "status line {line:?}"
    );
    let status = words
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("status line {line:?}"));
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).expect("header line");
        let h = h.trim_end_matches(['\r', '\n']);
        if h.is_empty() {
            return (status, headers);
        }
        let (name, value) = h
            .split_once(':')
            .unwrap_or_else(|| panic!("header line {h:?}"));
        headers.push((name.trim().to_string(), value.trim().to_string()));
    }
}

/// Send `raw` as the request and read the whole response (the server closes afterwards:
/// every request here says `Connection: close` or is one the server refuses).
fn exchange(addr: SocketAddr, raw: &[u8], head_only: bool) -> Response {
    let mut s = connect(addr);
    s.write_all(raw).expect("send request");
    let mut reader = BufReader::new(s);
    let (status, headers) = read_head(&mut reader);
    let mut body = Vec::new();
    if !head_only {
        reader
            .read_to_end(&mut body)
            .expect("read body until the server closes");
    }
    let r = Response {
        status,
        headers,
        body,
    };
    if let (false, Some(len)) = (head_only, r.header("Content-Length")) {
        assert_eq!(
            len.parse::<usize>().unwrap(),
            r.body.len(),
            "Content-Length vs body"
        );
    }
    r
}

fn request(addr: SocketAddr, method: &str, path: &str) -> Response {
    let raw = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    exchange(addr, raw.as_bytes(), method == "HEAD")
}

fn get(addr: SocketAddr, path: &str) -> Response {
    request(addr, "GET", path)
}

fn state(hub: &HubProcess) -> Value {
    let r = get(hub.http(), "/state");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("Content-Type"), Some("application/json"));
    serde_json::from_slice(&r.body)
        .unwrap_or_else(|e| panic!("/state is not JSON: {e}\n{}", r.text()))
}

/// The image source with `id` in a `/state` document.
fn source<'a>(st: &'a Value, id: &str) -> &'a Value {
    st["sources"]
        .as_array()
        .expect("sources array")
        .iter()
        .find(|s| s["id"] == id)
        .unwrap_or_else(|| panic!("no source {id} in /state: {st:#}"))
}

/// `/metrics` as `metric{labels}` -> value; checks every sample's family has HELP and TYPE.
fn metrics(hub: &HubProcess) -> HashMap<String, f64> {
    let r = get(hub.http(), "/metrics");
    assert_eq!(r.status, 200);
    assert!(r
        .header("Content-Type")
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let text = r.text();
    let mut helped = Vec::new();
    let mut typed = Vec::new();
    let mut samples = HashMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            helped.push(rest.split(' ').next().unwrap().to_string());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut w = rest.split(' ');
            let name = w.next().unwrap().to_string();
            let kind = w.next().unwrap();
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            assert!(
                kind != "counter" || name.ends_with("_total"),
                "counter name {line}"
            );
            typed.push(name);
        } else if !line.is_empty() {
            let (key, value) = line
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("sample {line:?}"));
            let name = key.split('{').next().unwrap();
            // a histogram's series carry its name and a suffix
            let name = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .filter(|h| typed.iter().any(|t| t == h))
                .unwrap_or(name);
            assert!(helped.iter().any(|h| h == name), "no HELP before {line}");
            assert!(typed.iter().any(|t| t == name), "no TYPE before {line}");
            let value: f64 = value
                .parse()
                .unwrap_or_else(|e| panic!("value in {line:?}: {e}"));
            samples.insert(key.to_string(), value);
        }
    }
    samples
}

fn metric(m: &HashMap<String, f64>, key: &str) -> f64 {
    *m.get(key).unwrap_or_else(|| {
        let mut keys: Vec<_> = m.keys().collect();
        keys.sort();
        panic!("no sample {key} in /metrics; samples: {keys:#?}")
    })
}

// ---------------------------------------------------------------------------------------
// Senders
// ---------------------------------------------------------------------------------------

/// The id the web view gives a sender: `{transport}-{ip}-{port}`.
fn id(transport: &str, addr: SocketAddr) -> String {
    format!("{transport}-{}-{}", addr.ip(), addr.port())
}

/// Send one frame in the seed chunked format (8-byte header; `chunk`-byte data datagrams)
/// and wait for its ack.
fn send_acked(sock: &UdpSocket, to: SocketAddr, frame: &[u8], chunk: usize) {
    send_all(
        sock,
        to,
        &seed_datagrams(frame, header8(frame.len() as i64), chunk),
    );
    expect_reply(sock, to, IMG_ACK, "frame ack");
}

fn start_hub(extra: &[&str]) -> HubProcess {
    let mut args = vec!["--http", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    HubProcess::start(&args)
}

/// Poll `/state` until `done` holds (at most [`REPLY_TIMEOUT`]); the last state.
fn state_when(hub: &HubProcess, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + REPLY_TIMEOUT;
    loop {
        let st = state(hub);
        if done(&st) {
            return st;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not seen in /state within {REPLY_TIMEOUT:?}: {st:#}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------------------
// MJPEG
// ---------------------------------------------------------------------------------------

/// An open `/stream` response, read part by part.
struct Stream {
    reader: BufReader<TcpStream>,
    boundary: String,
}

fn open_stream(addr: SocketAddr, id: &str) -> Result<Stream, Response> {
    let mut s = connect(addr);
    write!(s, "GET /stream/{id} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut reader = BufReader::new(s);
    let (status, headers) = read_head(&mut reader);
    let content_type = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-type"))
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    if status != 200 {
        let mut body = Vec::new();
        let _ = reader.read_to_end(&mut body);
        return Err(Response {
            status,
            headers,
            body,
        });
    }
    let boundary = content_type
        .strip_prefix("multipart/x-mixed-replace;")
        .and_then(|rest| rest.trim().strip_prefix("boundary="))
        .unwrap_or_else(|| panic!("not an MJPEG content type: {content_type:?}"))
        .trim_matches('"')
        .to_string();
    Ok(Stream { reader, boundary })
}

impl Stream {
    /// The next part's body, checked to be whole: its length is the announced one and the
    /// boundary delimiter follows.
    fn next_part(&mut self) -> Vec<u8> {
        let mut line = String::new();
        // the delimiter `--boundary`, possibly after the CRLF that ends the previous part
        while line.trim_end().is_empty() {
            line.clear();
            let n = self
                .reader
                .read_line(&mut line)
                .expect("read a boundary line");
            assert!(n > 0, "the stream ended");
        }
        assert_eq!(
            line.trim_end(),
            format!("--{}", self.boundary),
            "delimiter line"
        );
        let mut length = None;
        loop {
            let mut h = String::new();
            self.reader.read_line(&mut h).expect("part header");
            let h = h.trim_end_matches(['\r', '\n']);
            if h.is_empty() {
                break;
            }
            let (name, value) = h.split_once(':').unwrap();
            if name.eq_ignore_ascii_case("content-type") {
                assert_eq!(value.trim(), "image/jpeg");
            }
            if name.eq_ignore_ascii_case("content-length") {
                length = Some(value.trim().parse::<usize>().unwrap());
            }
        }
        let length = length.expect("each part announces its Content-Length");
        let mut body = vec![0u8; length];
        self.reader.read_exact(&mut body).expect("a whole part");
        let mut crlf = [0u8; 2];
        self.reader
            .read_exact(&mut crlf)
            .expect("CRLF after the part");
        assert_eq!(&crlf, b"\r\n");
        body
    }
}

fn is_jpeg(b: &[u8]) -> bool {
    b.len() >= 4 && b[..2] == [0xFF, 0xD8] && b[b.len() - 2..] == [0xFF, 0xD9]
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

#[test]
fn state_and_metrics_count_what_was_sent() {
    let hub = start_hub(&[]);
    let http = hub.http();

    // image source over UDP: one corrupt frame first (announced 5000 bytes, no end marker),
    // then 5 intact frames, each acked; per-socket order means the corrupt one is counted
    // once the first ack is back
    let cam = udp_client();
    let mut corrupt = real_jpeg(5000, 99);
    corrupt[4998] = 0;
    send_all(
        &cam,
        hub.img(),
        &seed_datagrams(&corrupt, header8(5000), SEED_CHUNK),
    );
    let frames: Vec<Vec<u8>> = (0..5)
        .map(|i| real_jpeg(3000 + i * 1000, i as u64))
        .collect();
    for f in &frames {
        send_acked(&cam, hub.img(), f, SEED_CHUNK);
    }
    let cam_id = id("udp", cam.local_addr().unwrap());
    let cam_bytes: usize = frames.iter().map(Vec::len).sum();

    // image source over TCP: 2 frames (no acks on TCP: wait for /state to count them)
    let mut tcp = tcp_connect(hub.tcp());
    for i in 0..2 {
        let f = real_jpeg(2000, 50 + i);
        tcp.write_all(&tcp_header(f.len())).unwrap();
        tcp.write_all(&f).unwrap();
    }
    let tcp_id = id("tcp", tcp.local_addr().unwrap());

    // messages: 3 valid, 1 invalid, each answered
    let tel = udp_client();
    let msgs = ["[0, 0, 0, 1]", "{\"speed\": 2.5}", "[1, 2, 3, 4]"];
    for m in msgs {
        send(&tel, hub.msg(), m.as_bytes());
        expect_reply(&tel, hub.msg(), MSG_ACK, "message ack");
    }
    send(&tel, hub.msg(), format!("{:<64}", "{not json").as_bytes()); // padded: shorter junk gets no reply
    let _ = recv_reply(&tel, hub.msg(), "error reply");
    let tel_addr = tel.local_addr().unwrap();

    let st = state_when(&hub, "the 2 TCP frames", |st| {
        st["sources"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["id"] == tcp_id.as_str() && s["frames"] == 2)
    });
    let cam_state = source(&st, &cam_id);
    assert_eq!(cam_state["service"], "img");
    assert_eq!(cam_state["addr"], cam.local_addr().unwrap().to_string());
    assert_eq!(cam_state["frames"], 5, "{st:#}");
    assert_eq!(cam_state["bytes"], cam_bytes);
    assert_eq!(cam_state["corrupt"], 1);
    assert_eq!(
        (
            cam_state["dropped"].as_u64(),
            cam_state["rejected"].as_u64()
        ),
        (Some(0), Some(0))
    );
    assert!(
        cam_state["fps"].as_f64().unwrap() >= 0.0
            && cam_state["fps_average"].as_f64().unwrap() >= 0.0
    );
    assert!(cam_state["last_seen_s_ago"].as_f64().unwrap() >= 0.0);
    assert_eq!(cam_state["stream"], format!("/stream/{cam_id}"));
    assert_eq!(cam_state["snapshot"], format!("/snapshot/{cam_id}.jpg"));
    assert_eq!(source(&st, &tcp_id)["service"], "tcp");
    assert_eq!(source(&st, &tcp_id)["bytes"], 4000);

    let m = &st["messages"];
    assert_eq!(
        (m["messages"].as_u64(), m["invalid"].as_u64()),
        (Some(3), Some(1)),
        "{m:#}"
    );
    let msg_bytes: usize = msgs.iter().map(|m| m.len()).sum();
    assert_eq!(m["bytes"], msg_bytes);
    assert_eq!(m["last"]["text"], msgs[2]);
    assert_eq!(m["last"]["from"], tel_addr.to_string());
    assert_eq!(m["last"]["truncated"], false);
    assert_eq!(m["sources"][0]["messages"], 3);

    // services, bound addresses and receive buffers
    let services = st["services"].as_array().unwrap();
    let service = |name: &str| {
        services
            .iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("no {name} in {services:#?}"))
    };
    assert_eq!(service("img")["addr"], hub.img().to_string());
    assert_eq!(service("msg")["addr"], hub.msg().to_string());
    assert_eq!(service("tcp")["addr"], hub.tcp().to_string());
    assert_eq!(service("http")["addr"], http.to_string());
    assert!(service("img")["receive_buffer_bytes"].as_u64().unwrap() > 0);
    assert!(service("msg")["receive_buffer_bytes"].as_u64().unwrap() > 0);
    assert!(st["uptime_s"].as_f64().unwrap() > 0.0);
    assert_eq!(st["http"]["max_viewers"], 16);

    // the same counters in Prometheus text
    let mm = metrics(&hub);
    let cam_labels = format!("{{service=\"img\",source=\"{cam_id}\"}}");
    assert_eq!(
        metric(&mm, &format!("udphub_frames_total{cam_labels}")),
        5.0
    );
    assert_eq!(
        metric(&mm, &format!("udphub_frame_bytes_total{cam_labels}")),
        cam_bytes as f64
    );
    assert_eq!(
        metric(&mm, &format!("udphub_frames_corrupt_total{cam_labels}")),
        1.0
    );
    assert_eq!(
        metric(&mm, &format!("udphub_frames_dropped_total{cam_labels}")),
        0.0
    );
    assert_eq!(
        metric(
            &mm,
            &format!("udphub_frames_total{{service=\"tcp\",source=\"{tcp_id}\"}}")
        ),
        2.0
    );
    let tel_labels = format!("{{service=\"msg\",source=\"{}\"}}", id("udp", tel_addr));
    assert_eq!(
        metric(&mm, &format!("udphub_messages_total{tel_labels}")),
        3.0
    );
    assert_eq!(
        metric(&mm, &format!("udphub_messages_invalid_total{tel_labels}")),
        1.0
    );
    assert_eq!(
        metric(&mm, &format!("udphub_message_bytes_total{tel_labels}")),
        msg_bytes as f64
    );
    assert!(metric(&mm, "udphub_receive_buffer_bytes{service=\"img\"}") > 0.0);
    assert!(metric(&mm, "udphub_uptime_seconds") > 0.0);

    // the page itself
    let page = get(http, "/");
    assert_eq!(page.status, 200);
    assert!(page
        .header("Content-Type")
        .unwrap()
        .starts_with("text/html"));
    assert!(page.text().contains("/state") && page.text().contains("<script>"));

    drop(tcp);
    let (status, stdout) = hub.stop("INT");
    assert!(status.success(), "{status:?}");
    assert_summary(&stdout);
}

#[test]
fn snapshot_is_the_last_frame_byte_for_byte() {
    let hub = start_hub(&[]);
    let cam = udp_client();
    let cam_id = id("udp", cam.local_addr().unwrap());
    assert_eq!(
        get(hub.http(), &format!("/snapshot/{cam_id}.jpg")).status,
        404,
        "before any frame"
    );

    let frames: Vec<Vec<u8>> = (0..3)
        .map(|i| real_jpeg(70_000 + i * 10, 7 + i as u64))
        .collect();
    for f in &frames {
        send_acked(&cam, hub.img(), f, SEED_CHUNK);
    }
    let r = get(hub.http(), &format!("/snapshot/{cam_id}.jpg"));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Content-Type"), Some("image/jpeg"));
    assert!(
        r.body == frames[2],
        "snapshot ({} bytes) is not the last frame sent",
        r.body.len()
    );

    let head = request(hub.http(), "HEAD", &format!("/snapshot/{cam_id}.jpg"));
    assert_eq!(
        (head.status, head.header("Content-Length")),
        (200, Some("70020"))
    );

    for unknown in [
        "/snapshot/udp-127.0.0.1-1.jpg",
        "/snapshot/nonsense.jpg",
        "/stream/udp-127.0.0.1-1",
    ] {
        let r = get(hub.http(), unknown);
        assert_eq!(r.status, 404, "{unknown}: {}", r.text());
    }
}

#[test]
fn stream_yields_complete_jpeg_parts() {
    let hub = start_hub(&[]);
    let cam = udp_client();
    let cam_id = id("udp", cam.local_addr().unwrap());
    // a first frame, so the source exists
    let first = real_jpeg(40_000, 1);
    send_acked(&cam, hub.img(), &first, SEED_CHUNK);

    let mut stream =
        open_stream(hub.http(), &cam_id).unwrap_or_else(|r| panic!("{} {}", r.status, r.text()));
    assert_eq!(
        stream.next_part(),
        first,
        "a new viewer starts with the newest frame"
    );

    // keep sending distinct frames until the viewer has seen 3 more parts
    let done = Arc::new(AtomicBool::new(false));
    let sender = {
        let (done, to) = (done.clone(), hub.img());
        thread::spawn(move || {
            let mut sent = Vec::new();
            let mut i = 0u64;
            while !done.load(Ordering::Relaxed) && i < 2000 {
                i += 1;
                let f = real_jpeg(30_000 + (i as usize % 7) * 1000, 100 + i);
                send_acked(&cam, to, &f, 8192);
                sent.push(f);
            }
            sent
        })
    };
    let parts: Vec<Vec<u8>> = (0..3).map(|_| stream.next_part()).collect();
    done.store(true, Ordering::Relaxed);
    let sent = sender.join().unwrap();
    for (n, p) in parts.iter().enumerate() {
        assert!(is_jpeg(p), "part {n} is not a complete JPEG");
        assert!(
            sent.contains(p),
            "part {n} ({} bytes) is not a frame that was sent",
            p.len()
        );
    }
}

#[test]
fn a_viewer_that_stops_reading_costs_no_frame() {
    let hub = start_hub(&[]);
    let cam = udp_client();
    let cam_id = id("udp", cam.local_addr().unwrap());
    send_acked(&cam, hub.img(), &real_jpeg(1000, 1), SEED_CHUNK);

    // open a stream, read its head, and never read again
    let stalled =
        open_stream(hub.http(), &cam_id).unwrap_or_else(|r| panic!("{} {}", r.status, r.text()));
    assert_eq!(state(&hub)["http"]["viewers"], 1);

    // 64 frames of 256 KiB: 16 MiB, more than the loopback socket buffers of the stalled
    // viewer's connection can hold, so its writer ends up blocked
    const N: u64 = 64;
    let mut last = Vec::new();
    for i in 0..N {
        last = real_jpeg(256 * 1024, 1000 + i);
        send_acked(&cam, hub.img(), &last, 60_000);
    }
    let st = state(&hub);
    assert_eq!(
        source(&st, &cam_id)["frames"],
        N + 1,
        "every frame acked is counted"
    );
    assert_eq!(source(&st, &cam_id)["dropped"], 0);

    // another viewer is served meanwhile, starting with the newest frame
    let mut fresh =
        open_stream(hub.http(), &cam_id).unwrap_or_else(|r| panic!("{} {}", r.status, r.text()));
    assert!(
        fresh.next_part() == last,
        "a new viewer gets the newest frame"
    );

    // and the hub still stops promptly with a stalled viewer attached
    let (status, stdout) = hub.stop("INT");
    assert!(status.success(), "{status:?}");
    assert_summary(&stdout);
    drop(stalled);
}

#[test]
fn viewers_past_the_limit_get_503() {
    let hub = start_hub(&["--http-max-viewers", "2"]);
    let cam = udp_client();
    let cam_id = id("udp", cam.local_addr().unwrap());
    send_acked(&cam, hub.img(), &real_jpeg(1000, 1), SEED_CHUNK);

    let a = open_stream(hub.http(), &cam_id).unwrap_or_else(|r| panic!("{}", r.status));
    let _b = open_stream(hub.http(), &cam_id).unwrap_or_else(|r| panic!("{}", r.status));
    match open_stream(hub.http(), &cam_id) {
        Ok(_) => panic!("a third viewer was served with --http-max-viewers 2"),
        Err(r) => {
            assert_eq!(r.status, 503);
            assert!(r.text().contains("--http-max-viewers"), "{}", r.text());
        }
    }
    // other requests are still served
    assert_eq!(get(hub.http(), "/state").status, 200);

    // once a viewer leaves, its place is free again (the hub notices within a poll)
    drop(a);
    let deadline = Instant::now() + REPLY_TIMEOUT;
    while open_stream(hub.http(), &cam_id).is_err() {
        assert!(
            Instant::now() < deadline,
            "the place of a viewer that left was never freed"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn bad_requests_get_their_status_and_reception_goes_on() {
    let hub = start_hub(&[]);
    let http = hub.http();
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        (
            "POST",
            b"POST /state HTTP/1.1\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello".to_vec(),
            405,
        ),
        (
            "DELETE",
            b"DELETE / HTTP/1.1\r\nConnection: close\r\n\r\n".to_vec(),
            405,
        ),
        (
            "unknown method",
            b"BREW /pot HTTP/1.1\r\nConnection: close\r\n\r\n".to_vec(),
            501,
        ),
        (
            "unknown path",
            b"GET /nope HTTP/1.1\r\nConnection: close\r\n\r\n".to_vec(),
            404,
        ),
        ("not HTTP", b"hello there\r\n\r\n".to_vec(), 400),
        (
            "HTTP/2 request line",
            b"GET / HTTP/2.0\r\n\r\n".to_vec(),
            505,
        ),
        (
            "20 kB header",
            format!("GET / HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(20_000)).into_bytes(),
            431,
        ),
        (
            "200 headers",
            format!(
                "GET / HTTP/1.1\r\n{}\r\n",
                (0..200)
                    .map(|i| format!("X-{i}: 1\r\n"))
                    .collect::<String>()
            )
            .into_bytes(),
            431,
        ),
    ];
    for (what, raw, status) in &cases {
        let r = exchange(http, raw, false);
        assert_eq!(r.status, *status, "{what}: {}", r.text());
        if *status == 405 {
            assert_eq!(r.header("Allow"), Some("GET, HEAD"), "{what}");
        }
    }
    // HEAD: the head of a GET, no body
    let head = request(http, "HEAD", "/state");
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    // a request that stops half-way, left open: holds only its own connection
    let mut half = connect(http);
    half.write_all(b"GET /state HTTP/1.1\r\nHost: x").unwrap();

    // reception is untouched: a frame and a message are acked and counted
    let cam = udp_client();
    send_acked(&cam, hub.img(), &real_jpeg(5000, 3), SEED_CHUNK);
    let tel = udp_client();
    let sneaky = "[\"</script><h1>sneaky</h1>\"]";
    send(&tel, hub.msg(), sneaky.as_bytes());
    expect_reply(&tel, hub.msg(), MSG_ACK, "message ack");
    let st = state(&hub);
    assert_eq!(
        source(&st, &id("udp", cam.local_addr().unwrap()))["frames"],
        1
    );
    assert_eq!(st["messages"]["messages"], 1);
    assert_eq!(st["messages"]["last"]["text"], sneaky);
    // the page carries the state, but no sender's text can end its script
    let page = get(http, "/").text();
    assert!(
        !page.contains("<h1>sneaky"),
        "message text got into the page unescaped"
    );

    // keep-alive: two requests on one connection
    let mut s = connect(http);
    s.write_all(b"GET /state HTTP/1.1\r\nHost: x\r\n\r\nGET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut reader = BufReader::new(s);
    let mut statuses = Vec::new();
    for _ in 0..2 {
        let (status, headers) = read_head(&mut reader);
        let len: usize = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .unwrap()
            .1
            .parse()
            .unwrap();
        let mut body = vec![0u8; len];
        reader.read_exact(&mut body).unwrap();
        statuses.push(status);
    }
    assert_eq!(statuses, [200, 200]);

    let (status, _) = hub.stop("INT");
    assert!(status.success(), "{status:?}");
    drop(half);
}

#[test]
fn a_source_that_stops_is_marked_quiet() {
    let hub = start_hub(&[]);
    let cam = udp_client();
    let cam_id = id("udp", cam.local_addr().unwrap());
    send_acked(&cam, hub.img(), &real_jpeg(2000, 5), SEED_CHUNK);
    // quiet once no frame came for 3 s; allow a slow machine up to 20 s
    let deadline = Instant::now() + Duration::from_secs(20);
    let st = loop {
        let st = state(&hub);
        if source(&st, &cam_id)["quiet"] == true {
            break st;
        }
        assert!(Instant::now() < deadline, "never marked quiet: {st:#}");
        thread::sleep(Duration::from_millis(200));
    };
    let s = source(&st, &cam_id);
    assert!(s["last_seen_s_ago"].as_f64().unwrap() > 3.0, "{s:#}");
    assert_eq!(s["fps"], 0.0, "a quiet source's recent rate is 0: {s:#}");
    // its last frame can still be fetched
    assert_eq!(
        get(hub.http(), &format!("/snapshot/{cam_id}.jpg")).body,
        real_jpeg(2000, 5)
    );
}

#[test]
fn a_viewer_that_stops_reading_is_dropped_and_its_place_freed() {
    let hub = start_hub(&["--http-max-viewers", "1"]);
    let cam = udp_client();
    let cam_id = id("udp", cam.local_addr().unwrap());
    send_acked(&cam, hub.img(), &real_jpeg(1000, 1), SEED_CHUNK);
    let stalled = open_stream(hub.http(), &cam_id).unwrap_or_else(|r| panic!("{}", r.status));
    assert_eq!(
        open_stream(hub.http(), &cam_id).err().map(|r| r.status),
        Some(503)
    );

    // keep frames coming: the stalled viewer's writes stop making way, and once a frame is
    // not taken within the hub's write timeout (5 s) it is dropped, freeing the one place
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut i = 0;
    loop {
        i += 1;
        send_acked(&cam, hub.img(), &real_jpeg(256 * 1024, 10 + i), 60_000);
        if state(&hub)["http"]["viewers"] == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the stalled viewer was never dropped"
        );
        thread::sleep(Duration::from_millis(50)); // the camera's frame rate
    }
    let mut next =
        open_stream(hub.http(), &cam_id).unwrap_or_else(|r| panic!("{} {}", r.status, r.text()));
    assert!(is_jpeg(&next.next_part()));
    drop(stalled);
}

// ---------------------------------------------------------------------------------------
// Names
// ---------------------------------------------------------------------------------------

/// Run `img-client --jpeg FILE --frames N --name NAME` to completion against `hub`.
fn send_named(hub: &HubProcess, jpeg: &std::path::Path, frames: u32, name: &str) -> Finished {
    run_client(
        env!("CARGO_BIN_EXE_img-client"),
        &[
            "--hub",
            &hub.img().to_string(),
            "--jpeg",
            jpeg.to_str().unwrap(),
            "--frames",
            &frames.to_string(),
            "--name",
            name,
            "--status-interval-ms",
            "0",
        ],
        b"",
    )
}

#[test]
fn named_cameras_are_shown_and_stored_by_name_and_a_second_claim_is_told_apart() {
    let save = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let jpeg = files.path().join("frame.jpg");
    std::fs::write(&jpeg, fake_jpeg(5000, 3)).unwrap();
    let hub = start_hub(&["--save-dir", save.path().to_str().unwrap()]);
    let first = send_named(&hub, &jpeg, 3, "door-cam");
    assert!(first.success(), "{}", first.describe());
    assert_eq!(summary_count(&first.stdout, "frames", "acked"), 3);
    // the first camera was heard from just now: a second one claiming its name is told
    // apart (within NAME_HANDOVER_AFTER, which the whole second run takes far less than)
    let second = send_named(&hub, &jpeg, 2, "door-cam");
    assert!(second.success(), "{}", second.describe());
    let st = state_when(&hub, "two named sources", |st| {
        st["sources"].as_array().is_some_and(|s| {
            s.iter()
                .filter(|s| {
                    s["name"]
                        .as_str()
                        .is_some_and(|n| n.starts_with("door-cam"))
                })
                .count()
                == 2
        })
    });
    let mut names: Vec<(String, u64)> = st["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                s["frames"].as_u64().unwrap(),
            )
        })
        .collect();
    names.sort();
    assert_eq!(
        names,
        [("door-cam".to_string(), 3), ("door-cam#2".to_string(), 2)]
    );
    let m = metrics(&hub);
    assert!(
        m.iter().any(|(k, v)| k.starts_with("udphub_frames_total{")
            && k.contains("name=\"door-cam#2\"")
            && *v == 2.0),
        "{m:?}"
    );
    let (status, stdout, stderr) = hub.stop_with_stderr("INT");
    assert!(status.success());
    assert!(stdout.contains("door-cam#2 (udp 127.0.0.1:"), "{stdout}");
    assert!(
        stderr.contains("also calls itself \"door-cam\""),
        "{stderr}"
    );
    let saved = list_dir(save.path());
    let named = |prefix: &str| saved.iter().filter(|n| n.starts_with(prefix)).count();
    assert_eq!(
        (named("door-cam-"), named("door-cam+2-")),
        (3, 2),
        "{saved:?}"
    );
}

#[test]
fn a_bad_name_is_refused_at_start() {
    let hub = start_hub(&[]);
    let files = tempfile::tempdir().unwrap();
    let jpeg = files.path().join("frame.jpg");
    std::fs::write(&jpeg, fake_jpeg(500, 1)).unwrap();
    for bad in ["", "a b", "cam/1", &"x".repeat(65)] {
        let run = send_named(&hub, &jpeg, 1, bad);
        assert_eq!(run.status.code(), Some(2), "{bad:?}: {}", run.describe());
        assert!(run.stderr.contains("--name"), "{bad:?}: {}", run.stderr);
    }
    let (_, stdout) = hub.stop("INT");
    assert!(stdout.contains("images (udp): 0 frames"), "{stdout}");
}

#[test]
fn a_posted_command_reaches_msg_client_and_one_for_an_absent_device_expires() {
    let hub = start_hub(&["--command-ttl", "3"]);
    let msg = hub.msg().to_string();
    // a message longer than the reply with the command: it may carry it unauthenticated
    let client = LiveClient::start(
        env!("CARGO_BIN_EXE_msg-client"),
        &[
            "--hub",
            &msg,
            "--name",
            "pi",
            "--interval-ms",
            "100",
            "--status-interval-ms",
            "0",
            "--data",
            r#"{"t": 21.5, "note": "long enough to carry a command"}"#,
        ],
    );
    let r = post_command(hub.http(), "pi", r#"{"led": "on"}"#);
    assert_eq!(r.0, 202, "{}", r.1);
    let id = serde_json::from_str::<Value>(&r.1).unwrap()["id"]
        .as_u64()
        .expect("an id");
    let line = client
        .line_where(Duration::from_secs(10), |l| l.starts_with("{\"command\""))
        .unwrap_or_else(|| panic!("no command printed; hub:\n{}", hub.stderr()));
    let got: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(got, serde_json::json!({"command": {"led": "on"}, "id": id}));
    wait_stderr(
        &hub,
        &format!("command {id} for pi: Delivered"),
        Duration::from_secs(10),
    );
    // a command longer than the client's messages: the hub says how long a message must
    // be to carry it (never answering with more bytes than came), the next one is padded
    let waypoints: Vec<[u32; 2]> = (0..40).map(|i| [i, i * 2]).collect();
    let long = serde_json::json!({ "waypoints": waypoints });
    let r = post_command(hub.http(), "pi", &long.to_string());
    assert_eq!(r.0, 202, "{}", r.1);
    let long_id = serde_json::from_str::<Value>(&r.1).unwrap()["id"]
        .as_u64()
        .unwrap();
    let line = client
        .line_where(Duration::from_secs(10), |l| l.starts_with("{\"command\""))
        .unwrap_or_else(|| panic!("the long command was not printed; hub:\n{}", hub.stderr()));
    assert_eq!(
        serde_json::from_str::<Value>(&line).unwrap(),
        serde_json::json!({"command": long, "id": long_id})
    );
    // no device named ghost: expired after the TTL, and the log says so
    let r = post_command(hub.http(), "ghost", "[1]");
    assert_eq!(r.0, 202, "{}", r.1);
    let ghost = serde_json::from_str::<Value>(&r.1).unwrap()["id"]
        .as_u64()
        .unwrap();
    wait_stderr(
        &hub,
        &format!("command {ghost} for ghost: Expired"),
        Duration::from_secs(10),
    );
    let st = state_when(&hub, "the command counts", |st| {
        st["commands"]["expired"] == 1 && st["commands"]["delivered"] == 2
    });
    assert_eq!(
        st["commands"],
        serde_json::json!({"submitted": 3, "delivered": 2, "expired": 1, "rejected": 0,
                           "waiting": 0})
    );
    let metrics = get(hub.http(), "/metrics").text();
    for line in [
        "udphub_commands_total{status=\"submitted\"} 3\n",
        "udphub_commands_total{status=\"delivered\"} 2\n",
        "udphub_commands_total{status=\"expired\"} 1\n",
        "udphub_commands_waiting 0\n",
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }
    // refused with a clear status
    assert_eq!(post_command(hub.http(), "pi", "{nope").0, 400);
    assert_eq!(post_command(hub.http(), "a/b", "1").0, 400);
    assert_eq!(post_command(hub.http(), "pi..", "1").0, 202);
    let big = format!("\"{}\"", "x".repeat(9000));
    let r = post_command(hub.http(), "pi", &big);
    assert_eq!(r.0, 413, "{}", r.1);
    assert!(r.1.contains("8192"), "{}", r.1);
    // the client printed the command once, not once per reply that repeated it
    assert!(client
        .line_where(Duration::from_millis(300), |l| l.contains(&id.to_string()))
        .is_none());
}

#[test]
fn on_command_runs_the_program_with_the_command_on_stdin_and_a_failing_one_stops_nothing() {
    let hub = start_hub(&["--command-ttl", "5"]);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("got");
    let script = dir.path().join("on-command.sh");
    // the first run fails (exit 3), every run appends what it read and its id
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nread -r json\necho \"$UDPHUB_COMMAND_ID $json\" >> {0}\n\
             [ \"$(wc -l < {0})\" -gt 1 ] || exit 3\n",
            out.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let msg = hub.msg().to_string();
    let _client = LiveClient::start(
        env!("CARGO_BIN_EXE_msg-client"),
        &[
            "--hub",
            &msg,
            "--name",
            "arm",
            "--interval-ms",
            "100",
            "--status-interval-ms",
            "0",
            "--on-command",
            script.to_str().unwrap(),
            "--data",
            r#"{"joint": [0.1, 0.2, 0.3], "ok": true}"#,
        ],
    );
    let mut ids = Vec::new();
    for body in [r#"{"grip": 1}"#, r#"{"grip": 0}"#] {
        let r = post_command(hub.http(), "arm", body);
        assert_eq!(r.0, 202, "{}", r.1);
        ids.push(
            serde_json::from_str::<Value>(&r.1).unwrap()["id"]
                .as_u64()
                .unwrap(),
        );
    }
    for id in &ids {
        wait_stderr(
            &hub,
            &format!("command {id} for arm: Delivered"),
            Duration::from_secs(10),
        );
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let want = format!("{} {{\"grip\": 1}}\n{} {{\"grip\": 0}}\n", ids[0], ids[1]);
    while std::fs::read_to_string(&out).unwrap_or_default() != want {
        assert!(
            Instant::now() < deadline,
            "the program's record: {:?}",
            std::fs::read_to_string(&out)
        );
        thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------------------
// Latency (issue 13)
// ---------------------------------------------------------------------------------------

/// `hub --frame-log` with img-client over framed UDP and a stamped seed chunked frame:
/// framed lines carry the capture time and (once the clock estimate is in) a synced latency
/// that is sane (0 <= latency < 10 s: a sanity check, not a timing assertion); the seed
/// line carries its stamp's capture time, unsynced. `/state`, `/metrics` and the client's
/// summary show the latency and the clock.
#[test]
fn frame_latency_is_logged_and_shown_for_framed_and_stamped_seed_frames() {
    let files = tempfile::tempdir().unwrap();
    let jpeg = files.path().join("frame.jpg");
    std::fs::write(&jpeg, fake_jpeg(5000, 7)).unwrap();
    let log = files.path().join("frames.jsonl");
    let hub = start_hub(&["--frame-log", log.to_str().unwrap()]);
    let run = send_named(&hub, &jpeg, 20, "lat-cam");
    assert!(run.success(), "{}", run.describe());
    assert!(
        run.stdout.contains("  capture to ack: p50 "),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("  clock: hub - client "),
        "{}",
        run.stdout
    );
    // a seed chunked frame stamped with its capture time
    let capture_us = 1_764_000_000_123_456u64;
    let stamped = udphub::jpegcheck::with_capture_stamp(&real_jpeg(3000, 9), capture_us);
    let sock = udp_client();
    send_chunked(&sock, hub.img(), &stamped);
    expect_reply(&sock, hub.img(), IMG_ACK, "ack of the stamped frame");
    // img-client over the seed TCP stream stamps the frames it encodes itself
    let tcp = run_client(
        env!("CARGO_BIN_EXE_img-client"),
        &[
            "--hub",
            &hub.tcp().to_string(),
            "--protocol",
            "tcp",
            "--pattern",
            "--width",
            "64",
            "--height",
            "48",
            "--frames",
            "3",
            "--status-interval-ms",
            "0",
        ],
        b"",
    );
    assert!(tcp.success(), "{}", tcp.describe());

    let st = state_when(&hub, "a synced latency", |st| {
        st["sources"].as_array().unwrap().iter().any(|s| {
            s["name"] == "lat-cam"
                && s["latency_ms"]["clock"] == "synced"
                && s["latency_ms"]["p50"].is_number()
        })
    });
    let cam = st["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "lat-cam")
        .unwrap();
    let l = &cam["latency_ms"];
    assert!(
        l["p99"].as_f64().unwrap() >= l["p50"].as_f64().unwrap(),
        "{l}"
    );
    assert!(l["offset_err_ms"].as_f64().unwrap() <= 20.0, "{l}");
    let seed_id = format!("udp-127.0.0.1-{}", sock.local_addr().unwrap().port());
    assert_eq!(source(&st, &seed_id)["latency_ms"]["clock"], "unsynced");
    let m = metrics(&hub);
    let count = m
        .iter()
        .find(|(k, _)| {
            k.starts_with("udphub_frame_latency_seconds_count{") && k.contains("lat-cam")
        })
        .map(|(_, v)| *v)
        .unwrap_or_else(|| panic!("no latency histogram for lat-cam: {m:#?}"));
    assert!(count >= 1.0);

    let (status, stdout) = hub.stop("INT");
    assert!(status.success());
    assert!(stdout.contains("latency p50 "), "{stdout}");
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(lines.len(), 24, "{text}");
    let keys = [
        "arrival_us",
        "bytes",
        "capture_us",
        "clock",
        "frame",
        "latency_ms",
        "name",
        "quality",
        "source",
    ];
    for line in &lines {
        let mut got: Vec<&str> = line
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        got.sort();
        assert_eq!(got, keys, "{line}");
    }
    let framed: Vec<&Value> = lines.iter().filter(|l| l["name"] == "lat-cam").collect();
    assert_eq!(framed.len(), 20);
    for (i, l) in framed.iter().enumerate() {
        assert_eq!(l["frame"], i as u64, "{l}");
        assert_eq!(l["bytes"], 5000);
        assert!(l["capture_us"].as_u64().unwrap() <= l["arrival_us"].as_u64().unwrap() + 20_000);
        assert_eq!(l["quality"], Value::Null, "--jpeg bytes: no quality");
    }
    // the first frames go out before the first ack brought the hub's time
    let synced: Vec<f64> = framed
        .iter()
        .filter(|l| l["clock"] == "synced")
        .map(|l| l["latency_ms"].as_f64().unwrap())
        .collect();
    assert!(synced.len() >= 15, "{text}");
    assert!(
        synced.iter().all(|&ms| (0.0..10_000.0).contains(&ms)),
        "{synced:?}"
    );
    let tcp_lines: Vec<&Value> = lines
        .iter()
        .filter(|l| l["bytes"] != 5000 && l["name"].is_null() && l["capture_us"] != capture_us)
        .collect();
    assert_eq!(tcp_lines.len(), 3, "{text}");
    for l in tcp_lines {
        // a capture time from the stamp, no clock
        assert!(l["capture_us"].as_u64().is_some(), "{l}");
        assert_eq!(
            (&l["clock"], &l["latency_ms"]),
            (&Value::from("unsynced"), &Value::Null)
        );
    }
    let seed = lines
        .iter()
        .find(|l| l["capture_us"] == capture_us)
        .unwrap();
    assert_eq!(seed["capture_us"], capture_us);
    assert_eq!(
        (&seed["clock"], &seed["latency_ms"], &seed["frame"]),
        (&Value::from("unsynced"), &Value::Null, &Value::from(1))
    );
}
