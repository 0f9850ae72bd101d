//! End-to-end tests of `img-client`: against the real `hub` in each protocol (every frame of
//! a test video acked, saved, and decoding to the requested size), against a stand-in for
//! the seed's Python server, against a port where nothing answers, and the demo script;
//! adaptation through `udp-relay`'s rate limit (`--adapt on` and `off`); parity through
//! `udp-relay --loss` (`--fec`).
//!
//! Loopback only, OS-chosen ports, every wait bounded: child processes are waited for with
//! a deadline (and killed, failing the test, past it).

mod common;

use common::{list_dir, run_bounded, run_client, summary_count as count, Finished, HubProcess};
use std::io::{BufRead, BufReader, Read};
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};
use udphub::media::{jpeg, testvideo, FrameSource, PatternSource};

/// Run `img-client <args>` to the end (bounded by [`common::CLIENT_TIMEOUT`]).
fn img_client(args: &[&str]) -> Finished {
    run_client(env!("CARGO_BIN_EXE_img-client"), args, b"")
}

/// The saved `.jpg` files of `dir`, each checked to decode to `size`.
fn saved_frames(dir: &Path, size: (i32, i32)) -> usize {
    let names = list_dir(dir);
    for name in &names {
        assert!(
            name.ends_with(".jpg"),
            "unexpected file {name} in the save dir"
        );
        let bytes = std::fs::read(dir.join(name)).unwrap();
        let got = jpeg::decoded_size(&bytes)
            .unwrap_or_else(|e| panic!("saved frame {name} does not decode: {e}"));
        assert_eq!(got, size, "size of saved frame {name}");
    }
    names.len()
}

/// Every frame of a 20-frame video goes through the hub in `protocol`, is acked (tcp:
/// written), saved and decodes to the size the client was asked to resize to.
fn video_end_to_end(protocol: &str) {
    const FRAMES: u64 = 20;
    let dir = tempfile::tempdir().unwrap();
    let video = dir.path().join("test.avi");
    testvideo::write_test_video(&video, FRAMES as usize, 320, 240, 10.0).unwrap();
    let save_dir = dir.path().join("frames");
    std::fs::create_dir(&save_dir).unwrap();
    let hub = HubProcess::start(&["--save-dir", save_dir.to_str().unwrap()]);
    let addr = if protocol == "tcp" {
        hub.tcp()
    } else {
        hub.img()
    };
    // 256x192 at quality 80 is far below one datagram (single) and differs from the
    // video's own size, so the resize is checked too.
    let run = img_client(&[
        "--video",
        video.to_str().unwrap(),
        "--width",
        "256",
        "--height",
        "192",
        "--quality",
        "80",
        "--protocol",
        protocol,
        "--hub",
        &addr.to_string(),
        "--ack-timeout-ms",
        "5000",
    ]);
    assert!(run.status.success(), "{}", run.describe());
    assert_eq!(
        count(&run.stdout, "frames", "sent"),
        FRAMES,
        "{}",
        run.describe()
    );
    // the seed TCP stream has no ack: its frames are written, never "acked"
    let through = if protocol == "tcp" {
        "written"
    } else {
        "acked"
    };
    assert_eq!(
        count(&run.stdout, "frames", through),
        FRAMES,
        "{}",
        run.describe()
    );
    if protocol == "tcp" {
        assert!(!run.stdout.contains("acked"), "{}", run.describe());
    }
    assert_eq!(count(&run.stdout, "frames", "lost"), 0);
    assert_eq!(
        count(&run.stdout, "frames", "skipped"),
        0,
        "a file is never skipped"
    );

    let (status, hub_out) = hub.stop("INT");
    assert!(status.success(), "hub exit {status:?}\n{hub_out}");
    assert_eq!(
        saved_frames(&save_dir, (256, 192)) as u64,
        FRAMES,
        "hub output:\n{hub_out}\nclient:\n{}",
        run.describe()
    );
}

#[test]
fn framed_sends_every_frame_of_a_video() {
    video_end_to_end("framed");
}

#[test]
fn chunked_sends_every_frame_of_a_video() {
    video_end_to_end("chunked");
}

#[test]
fn single_sends_every_frame_of_a_video() {
    video_end_to_end("single");
}

#[test]
fn tcp_sends_every_frame_of_a_video() {
    video_end_to_end("tcp");
}

/// `--jpeg FILE` sends the file's bytes exactly as they are (the hub's saved copy of every
/// frame equals the file), unpaced and paced (`--fps`, through the capture thread), never
/// encodes, never skips, and `--json-summary` says so; a file that is not a JPEG is refused
/// before anything is sent.
#[test]
fn jpeg_sends_the_file_bytes_as_they_are() {
    const FRAMES: u64 = 4;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("frame.jpg");
    let frame = PatternSource::new(320, 240).next_frame().unwrap().unwrap();
    let bytes = jpeg::encode(&frame, 85).unwrap();
    std::fs::write(&file, &bytes).unwrap();
    let save_dir = dir.path().join("frames");
    std::fs::create_dir(&save_dir).unwrap();
    let hub = HubProcess::start(&["--save-dir", save_dir.to_str().unwrap()]);
    let run = img_client(&[
        "--jpeg",
        file.to_str().unwrap(),
        "--frames",
        &FRAMES.to_string(),
        "--hub",
        &hub.img().to_string(),
        "--ack-timeout-ms",
        "5000",
        "--json-summary",
    ]);
    assert!(run.status.success(), "{}", run.describe());
    let summary: serde_json::Value = serde_json::from_str(run.stdout.trim())
        .unwrap_or_else(|e| panic!("--json-summary is not JSON ({e}): {}", run.describe()));
    assert_eq!(summary["acked"], FRAMES, "{summary}");
    assert_eq!(summary["skipped"], 0, "{summary}");
    assert_eq!(summary["bytes"], FRAMES * bytes.len() as u64, "{summary}");
    assert_eq!(
        summary["encode"]["count"], 0,
        "nothing is encoded: {summary}"
    );
    assert!(summary["encode"]["p50_us"].is_null(), "{summary}");
    assert!(
        summary["rtt"]["p99_us"].as_f64().unwrap() > 0.0,
        "{summary}"
    );

    // paced, the bytes go through the capture thread: the same bytes again
    let run = img_client(&[
        "--jpeg",
        file.to_str().unwrap(),
        "--frames",
        &FRAMES.to_string(),
        "--fps",
        "100",
        "--protocol",
        "chunked",
        "--hub",
        &hub.img().to_string(),
        "--ack-timeout-ms",
        "5000",
    ]);
    assert!(run.status.success(), "{}", run.describe());
    assert_eq!(count(&run.stdout, "frames", "acked"), FRAMES);
    assert!(run.stdout.contains("(0 frames encoded)"), "{}", run.stdout);

    let (status, hub_out) = hub.stop("INT");
    assert!(status.success(), "hub exit {status:?}\n{hub_out}");
    let names = list_dir(&save_dir);
    assert_eq!(names.len() as u64, 2 * FRAMES, "{names:?}\n{hub_out}");
    for name in &names {
        let saved = std::fs::read(save_dir.join(name)).unwrap();
        assert!(saved == bytes, "{name} differs from the --jpeg file");
    }

    let not_jpeg = dir.path().join("not.jpg");
    std::fs::write(&not_jpeg, b"hello, world").unwrap();
    let run = img_client(&["--jpeg", not_jpeg.to_str().unwrap(), "--frames", "1"]);
    assert_eq!(run.status.code(), Some(2), "{}", run.describe());
    assert!(run.stderr.contains("not a JPEG"), "{}", run.describe());
}

/// A stand-in for the seed's Python `udp_server.py` on an OS-chosen port.
struct Standin {
    child: Child,
    port: u16,
    /// Its stdout, line by line (the sender is dropped at end of file).
    lines: mpsc::Receiver<String>,
    stderr: thread::JoinHandle<String>,
}

impl Standin {
    fn start(frames: u32) -> Standin {
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/seed_server_standin.py");
        let mut child = Command::new("python3")
            .arg(&script)
            .args(["--frames", &frames.to_string(), "--timeout", "30"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run python3 (scripts/setup.sh installs it): {e}"));
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in stdout.lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut err_pipe = child.stderr.take().unwrap();
        let stderr = thread::spawn(move || {
            let mut text = String::new();
            let _ = err_pipe.read_to_string(&mut text);
            text
        });
        let first = lines.recv_timeout(Duration::from_secs(30));
        let port = match first.as_deref().map(str::parse::<u16>) {
            Ok(Ok(port)) => port,
            other => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the Python stand-in did not print its port first: {other:?}");
            }
        };
        Standin {
            child,
            port,
            lines,
            stderr,
        }
    }

    /// Wait (bounded) for the stand-in to exit by itself; its status and remaining output.
    fn finish(mut self) -> (ExitStatus, String) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut out = String::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    out.push_str(&line);
                    out.push('\n');
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    panic!("the Python stand-in did not exit within 60 s; output:\n{out}");
                }
            }
        }
        // stdout is at end of file: the script has exited or is exiting.
        let status = self.child.wait().expect("wait python3");
        out.push_str(&self.stderr.join().unwrap_or_default());
        (status, out)
    }
}

#[test]
fn chunked_is_understood_by_the_seed_python_server() {
    const FRAMES: u32 = 5;
    let standin = Standin::start(FRAMES);
    let run = img_client(&[
        "--pattern",
        "--width",
        "320",
        "--height",
        "240",
        "--frames",
        &FRAMES.to_string(),
        "--protocol",
        "chunked",
        "--hub",
        &format!("127.0.0.1:{}", standin.port),
        "--ack-timeout-ms",
        "5000",
    ]);
    // The stand-in exits by itself after FRAMES frames (or after its own 30 s timeout).
    let (py_status, py_out) = standin.finish();
    assert!(
        run.status.success(),
        "{}\nstand-in:\n{py_out}",
        run.describe()
    );
    assert_eq!(count(&run.stdout, "frames", "acked"), u64::from(FRAMES));
    assert_eq!(count(&run.stdout, "frames", "lost"), 0);
    assert!(py_status.success(), "stand-in {py_status:?}:\n{py_out}");
    assert!(
        py_out.contains(&format!(
            "standin: received {FRAMES} frames (0 with bad JPEG markers)"
        )),
        "{py_out}"
    );
}

#[test]
fn gives_up_on_a_hub_that_never_answers_framed() {
    gives_up_on_a_hub_that_never_answers("framed");
}

#[test]
fn gives_up_on_a_hub_that_never_answers_chunked() {
    gives_up_on_a_hub_that_never_answers("chunked");
}

fn gives_up_on_a_hub_that_never_answers(protocol: &str) {
    // A socket that is bound (so nothing is refused) but never answers.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    let run = img_client(&[
        "--protocol",
        protocol,
        "--pattern",
        "--width",
        "160",
        "--height",
        "120",
        "--frames",
        "3",
        "--hub",
        &addr.to_string(),
        "--ack-timeout-ms",
        "200",
    ]);
    assert!(!run.status.success(), "{}", run.describe());
    assert_eq!(
        count(&run.stdout, "frames", "sent"),
        3,
        "{}",
        run.describe()
    );
    assert_eq!(count(&run.stdout, "frames", "acked"), 0);
    assert_eq!(count(&run.stdout, "frames", "lost"), 3);
    assert!(
        run.stderr.contains("no frame was acked"),
        "{}",
        run.describe()
    );
}

#[test]
fn a_camera_that_cannot_be_opened_is_a_clear_error() {
    // Camera 99 exists on no test machine.
    let run = img_client(&["--camera", "99", "--frames", "1"]);
    assert!(!run.status.success(), "{}", run.describe());
    assert!(run.stderr.contains("camera 99"), "{}", run.describe());
    assert!(run.stderr.contains("--pattern"), "{}", run.describe());
    assert!(run.stderr.contains("--video"), "{}", run.describe());
    assert!(!run.stdout.contains("frames: sent"), "nothing was sent");
}

#[test]
fn single_refuses_a_frame_over_one_datagram() {
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    // A 1920x1080 test pattern at quality 100 is far over 65507 bytes.
    let run = img_client(&[
        "--pattern",
        "--width",
        "1920",
        "--height",
        "1080",
        "--quality",
        "100",
        "--frames",
        "1",
        "--protocol",
        "single",
        "--hub",
        &silent.local_addr().unwrap().to_string(),
    ]);
    assert!(!run.status.success(), "{}", run.describe());
    assert!(
        run.stderr.contains("does not fit in one UDP datagram"),
        "{}",
        run.describe()
    );
    assert!(
        run.stderr.contains("--protocol chunked"),
        "{}",
        run.describe()
    );
}

/// `scripts/demo.sh` runs to the end (it builds the release binaries itself) and leaves
/// saved frames and a message log.
#[test]
fn demo_script_runs_to_the_end() {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let out = tempfile::tempdir().unwrap();
    let mut cmd = Command::new("bash");
    cmd.arg(repo.join("scripts/demo.sh"))
        .arg(out.path())
        .env("DEMO_SECONDS", "3")
        .env("DEMO_HTTP", "127.0.0.1:0")
        .current_dir(std::env::temp_dir());
    // The first release build of OpenCV bindings takes minutes.
    let run = run_bounded(&mut cmd, b"", Duration::from_secs(40 * 60));
    assert!(run.status.success(), "{}", run.describe());
    let frames = list_dir(&out.path().join("frames"));
    assert!(!frames.is_empty(), "no saved frames\n{}", run.describe());
    let log = std::fs::read_to_string(out.path().join("messages.jsonl")).unwrap();
    assert!(
        log.lines().count() > 0,
        "empty message log\n{}",
        run.describe()
    );
    assert!(
        run.stdout.contains("img-client: summary"),
        "{}",
        run.describe()
    );
    assert!(
        run.stdout.contains("msg-client: summary"),
        "{}",
        run.describe()
    );
    assert!(run.stdout.contains("hub: summary"), "{}", run.describe());
}

/// `--protocol tcp` over a link slower than the camera (a reader taking 2 KiB every 10 ms,
/// about 200 kB/s, from the 640x480 test pattern at 30 fps, about 20 kB a frame: 600 kB/s): the kernel never holds
/// more than the bounded send buffer's worth of the stream, so the frames made while one is
/// being written are skipped instead of queued; and every frame counted as written arrives.
#[test]
fn tcp_over_a_slow_link_skips_frames_instead_of_queueing_them() {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    const RCVBUF: usize = 16 * 1024;

    // A small receive buffer (inherited by the accepted socket), so the link, not the
    // receiver's kernel, is what holds bytes back.
    let listener =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    listener.set_recv_buffer_size(RCVBUF).unwrap();
    listener
        .bind(
            &"127.0.0.1:0"
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
        )
        .unwrap();
    listener.listen(1).unwrap();
    let listener: std::net::TcpListener = listener.into();
    let addr = listener.local_addr().unwrap();
    let read = Arc::new(AtomicU64::new(0));
    let client_done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (read, client_done) = (read.clone(), client_done.clone());
        thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let mut buf = vec![0u8; 2048];
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => read.fetch_add(n as u64, Ordering::SeqCst),
                };
                if !client_done.load(Ordering::SeqCst) {
                    // the link's pace (a model of a slow link, not a wait for a condition)
                    thread::sleep(Duration::from_millis(10));
                }
            }
        })
    };

    let run = img_client(&[
        "--hub",
        &addr.to_string(),
        "--protocol",
        "tcp",
        "--pattern",
        "--fps",
        "30",
        "--frames",
        "90",
        "--json-summary",
    ]);
    let read_at_exit = read.load(Ordering::SeqCst);
    client_done.store(true, Ordering::SeqCst);
    assert!(run.success(), "{}", run.describe());
    let summary: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap();
    let written = summary["written"].as_u64().unwrap();
    let skipped = summary["skipped"].as_u64().unwrap();
    // the stream: a 16-byte header and the JPEG per frame (every frame sent was written)
    assert_eq!(summary["sent"].as_u64().unwrap(), written, "{summary}");
    let stream_bytes = summary["bytes"].as_u64().unwrap() + 16 * written;
    let per_frame = stream_bytes / written.max(1);
    let backlog = stream_bytes - read_at_exit.min(stream_bytes);
    assert!(skipped > 0, "{summary}");
    // at most the send buffer (64 KiB, doubled by Linux), the receive buffer (doubled too)
    // and two frames in the writes' hands: not the seconds of video an autotuned buffer holds
    let bound = 2 * 64 * 1024 + 2 * RCVBUF as u64 + 2 * per_frame;
    assert!(
        backlog <= bound,
        "{backlog} bytes were still on their way when the client ended (bound {bound}): {summary}"
    );
    reader.join().unwrap();
    assert_eq!(
        read.load(Ordering::SeqCst),
        stream_bytes,
        "every frame counted as written arrives: {summary}"
    );
}

/// The issue-13 scene (the 640x480 pattern with noise 18, ~67 kB a frame at q90, 30 fps:
/// 16 Mbit/s) through `udp-relay --rate-mbit 4`, framed: with `--adapt on` the chosen
/// quality or size goes below the start, with `--adapt off` every frame stays at q90; the
/// hub saves every delivered frame whole either way. No timing is asserted.
#[test]
fn adapt_lowers_quality_or_size_through_a_narrow_link_and_off_keeps_it() {
    for (adapt, frames) in [("on", "45"), ("off", "20")] {
        let save_dir = tempfile::tempdir().unwrap();
        let hub = HubProcess::start(&["--save-dir", save_dir.path().to_str().unwrap()]);
        let upstream = hub.img().to_string();
        let (relay, at) =
            common::start_relay(&upstream, &["--rate-mbit", "4", "--queue-bytes", "250000"]);
        let run = img_client(&[
            "--hub",
            &at,
            "--pattern",
            "--noise",
            "18",
            "--fps",
            "30",
            "--frames",
            frames,
            "--adapt",
            adapt,
            "--json-summary",
        ]);
        drop(relay);
        assert!(run.success(), "{}", run.describe());
        let summary: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap();
        let e = &summary["encoding"];
        assert_eq!(e["adapt"].as_bool(), Some(adapt == "on"), "{summary}");
        let quality_min = e["quality_min"].as_i64().unwrap();
        let width_min = e["width_min"].as_i64().unwrap();
        if adapt == "on" {
            assert!(quality_min < 90 || width_min < 640, "{summary}");
        } else {
            assert_eq!(
                (quality_min, e["quality"].as_i64()),
                (90, Some(90)),
                "{summary}"
            );
            assert_eq!(width_min, 640, "{summary}");
        }
        let (status, hub_out) = hub.stop("INT");
        assert!(status.success(), "hub exit {status:?}\n{hub_out}");
        // never a corrupt frame: the hub counted none, and every saved frame decodes
        for line in hub_out.lines().filter(|l| l.contains(" corrupt")) {
            let n = line
                .split(", ")
                .find_map(|p| p.strip_suffix(" corrupt"))
                .and_then(|n| n.trim().parse::<u64>().ok());
            assert_eq!(n, Some(0), "{line}\n{hub_out}");
        }
        let saved = list_dir(save_dir.path());
        assert!(!saved.is_empty(), "{hub_out}");
        for name in &saved {
            let bytes = std::fs::read(save_dir.path().join(name)).unwrap();
            let (w, _) = jpeg::decoded_size(&bytes)
                .unwrap_or_else(|e| panic!("saved frame {name} does not decode: {e}"));
            assert!(adapt == "on" || w == 640, "{name}: {w} wide");
        }
    }
}

/// Framed with `--fec 20` through `udp-relay --loss 0.05` (both ways): the hub rebuilds
/// frames from parity (its --json-summary says how many), the client's summary shows the
/// parity in use and the chunks the hub rebuilt, and frames are delivered, none corrupt.
/// No timing is asserted.
#[test]
fn parity_rebuilds_frames_lost_chunks_through_a_lossy_relay() {
    let hub = HubProcess::start(&["--json-summary", "--http", "127.0.0.1:0"]);
    let upstream = hub.img().to_string();
    let (relay, at) = common::start_relay(&upstream, &["--loss", "0.05", "--seed", "13"]);
    let run = img_client(&[
        "--hub",
        &at,
        "--pattern",
        "--noise",
        "18",
        "--fps",
        "20",
        "--frames",
        "40",
        "--adapt",
        "off",
        "--window",
        "4",
        "--fec",
        "20",
        "--json-summary",
    ]);
    drop(relay);
    assert!(run.success(), "{}", run.describe());
    let summary: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap();
    assert!(summary["acked"].as_u64().unwrap() > 0, "{summary}");
    let fec = &summary["encoding"]["fec"];
    let (parity, data) = (
        fec["parity"].as_u64().unwrap(),
        fec["data"].as_u64().unwrap(),
    );
    assert!(parity > 0 && parity * 100 >= data * 20, "{summary}");
    assert!(fec["rebuilt"].as_u64().unwrap() > 0, "{summary}");
    // while the hub runs: /state and /metrics count the frames rebuilt
    let (code, body) = common::http_request(hub.http(), "GET", "/state", None);
    assert_eq!(code, 200, "{body}");
    let state: serde_json::Value = serde_json::from_str(&body).unwrap();
    let live = state["rebuilt"]
        .as_array()
        .and_then(|r| r.iter().find(|s| s["service"] == "img"))
        .unwrap_or_else(|| panic!("no img row in /state's rebuilt: {body}"));
    let live_frames = live["frames"].as_u64().unwrap();
    assert!(live_frames > 0, "{live}");
    let (code, metrics) = common::http_request(hub.http(), "GET", "/metrics", None);
    assert_eq!(code, 200);
    assert!(
        metrics.contains(&format!(
            "udphub_rebuilt_frames_total{{service=\"img\"}} {live_frames}"
        )),
        "{metrics}"
    );
    let (status, hub_out) = hub.stop("INT");
    assert!(status.success(), "hub exit {status:?}\n{hub_out}");
    let hub_summary: serde_json::Value =
        serde_json::from_str(hub_out.lines().last().unwrap_or("")).unwrap();
    let img = hub_summary["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["service"] == "img")
        .unwrap_or_else(|| panic!("no img service in {hub_summary}"));
    assert!(img["total"]["items"].as_u64().unwrap() > 0, "{img}");
    assert_eq!(img["total"]["corrupt"].as_u64(), Some(0), "{img}");
    assert!(
        img["rebuilt"]["frames"].as_u64().unwrap() >= live_frames,
        "{img}"
    );
    assert!(
        img["rebuilt"]["chunks"].as_u64().unwrap() >= img["rebuilt"]["frames"].as_u64().unwrap(),
        "{img}"
    );
}
