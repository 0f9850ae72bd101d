//! The hub's web page in a real browser: a hub with `--http` is fed a moving test pattern,
//! headless Chromium loads `/`, and the screenshot must show the live picture (not a blank
//! box) where the page puts the first source, and the rendered page must name the source.
//!
//! The screenshot is kept at `target/browser/hub-page.png` for a person to look at; its
//! absolute path is printed and also written to `target/browser/SCREENSHOT_PATH` (test
//! runners hide the output of passing tests). Chromium is Debian's `chromium` package,
//! which `scripts/setup.sh` installs; without it this test fails and says so.

mod common;

use common::*;
use opencv::core::{Mat, Rect, Vec3b};
use opencv::imgcodecs;
use opencv::prelude::*;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::{self, JoinHandle};
use std::time::Duration;
use udphub::media::{jpeg, FrameSource, PatternSource};

/// Where the first source's picture is on the page in a 1280-wide window: x, y, width,
/// height (see the layout note in src/hub/http/page.html).
const FIRST_VIEW: (i32, i32, i32, i32) = (17, 74, 640, 480);
/// The longest a Chromium run may take before it is killed and the test fails.
const BROWSER_TIMEOUT: Duration = Duration::from_secs(90);

/// A camera and a telemetry sender in one thread: test-pattern frames (seed chunked
/// format, each ack awaited) at about 15 fps and a message after each frame, until told to
/// stop. Says on `first_ack` once the hub has the first frame; returns the frames acked.
struct Sender {
    camera: SocketAddr,
    stop: mpsc::Sender<()>,
    first_ack: mpsc::Receiver<()>,
    handle: JoinHandle<u64>,
}

fn spawn_sender(img: SocketAddr, msg: SocketAddr) -> Sender {
    let camera = udp_client();
    let telemetry = udp_client();
    let camera_addr = camera.local_addr().unwrap();
    let (stop, stop_rx) = mpsc::channel::<()>();
    let (first_tx, first_ack) = mpsc::channel::<()>();
    let handle = thread::spawn(move || {
        let mut pattern = PatternSource::new(640, 480);
        let mut acked = 0;
        loop {
            let frame = pattern
                .next_frame()
                .unwrap()
                .expect("the pattern never ends");
            let bytes = jpeg::encode(&frame, 85).unwrap();
            send_all(
                &camera,
                img,
                &seed_datagrams(&bytes, header8(bytes.len() as i64), SEED_CHUNK),
            );
            expect_reply(&camera, img, IMG_ACK, "frame ack");
            acked += 1;
            if acked == 1 {
                let _ = first_tx.send(());
            }
            let message = format!("{{\"frame\": {acked}, \"battery\": 12.4}}");
            send(&telemetry, msg, message.as_bytes());
            expect_reply(&telemetry, msg, MSG_ACK, "message ack");
            // pace the frames (this is the sender's frame rate, not a wait for a condition)
            match stop_rx.recv_timeout(Duration::from_millis(66)) {
                Err(RecvTimeoutError::Timeout) => {}
                _ => return acked,
            }
        }
    });
    Sender {
        camera: camera_addr,
        stop,
        first_ack,
        handle,
    }
}

/// The `chromium` command, or a failure that says how to get it.
fn chromium() -> PathBuf {
    for name in ["chromium", "chromium-browser"] {
        if let Ok(out) = Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {name}"))
            .output()
        {
            let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if out.status.success() && !path.is_empty() {
                return PathBuf::from(path);
            }
        }
    }
    panic!(
        "chromium is not installed, so the page cannot be checked in a browser: run \
         scripts/setup.sh (as root it installs Debian's `chromium` package; otherwise it \
         prints the apt-get command)"
    );
}

/// Run headless Chromium on `url` with `extra` arguments, in a fresh profile; kill it after
/// [`BROWSER_TIMEOUT`].
///
/// When Chromium acts: at the page's load event, which waits for the first picture of each
/// stream (the page draws its sources while it loads); `--timeout` is only a safety net.
/// Not `--virtual-time-budget`: virtual time stops while a request is pending, and an MJPEG
/// stream always is, so Chromium would wait forever once a stream has no new frame.
fn run_chromium(browser: &Path, extra: &[&str], url: &str) -> Output {
    let profile = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(browser);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
        "--window-size=1280,900",
        "--timeout=20000",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()))
    .args(extra)
    .arg(url)
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .process_group(0); // its own group, so a hung browser can be killed with its helpers
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", browser.display()));
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(BROWSER_TIMEOUT) {
        Ok(out) => out.expect("chromium output"),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-9", "--", &format!("-{pid}")])
                .status();
            panic!("chromium {extra:?} {url} did not finish within {BROWSER_TIMEOUT:?}");
        }
    }
}

/// Mean and standard deviation of all channels of `region`, and how many of the pattern's
/// colour bars (75% intensity) appear in it as at least 1% of its pixels.
fn region_stats(img: &Mat, region: Rect) -> (f64, f64, usize) {
    const BARS_BGR: [(u8, u8, u8); 7] = [
        (191, 191, 191),
        (0, 191, 191),
        (191, 191, 0),
        (0, 191, 0),
        (191, 0, 191),
        (0, 0, 191),
        (191, 0, 0),
    ];
    let roi = Mat::roi(img, region).unwrap();
    let (mut sum, mut sum_sq, mut n) = (0f64, 0f64, 0f64);
    let mut bar_hits = [0usize; 7];
    for y in 0..roi.rows() {
        for x in 0..roi.cols() {
            let p = roi.at_2d::<Vec3b>(y, x).unwrap();
            for c in 0..3 {
                let v = f64::from(p[c]);
                sum += v;
                sum_sq += v * v;
                n += 1.0;
            }
            for (i, bar) in BARS_BGR.iter().enumerate() {
                let close = |a: u8, b: u8| a.abs_diff(b) <= 40;
                if close(p[0], bar.0) && close(p[1], bar.1) && close(p[2], bar.2) {
                    bar_hits[i] += 1;
                }
            }
        }
    }
    let mean = sum / n;
    let sd = (sum_sq / n - mean * mean).max(0.0).sqrt();
    let pixels = (roi.rows() * roi.cols()) as usize;
    let bars = bar_hits.iter().filter(|&&h| h * 100 >= pixels).count();
    (mean, sd, bars)
}

#[test]
fn the_page_shows_the_live_picture_in_a_real_browser() {
    let browser = chromium(); // fail first, and clearly, when it is missing
    let out_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/browser");
    std::fs::create_dir_all(&out_dir).unwrap();
    let shot = out_dir.join("hub-page.png");
    let _ = std::fs::remove_file(&shot);
    std::fs::write(
        out_dir.join("SCREENSHOT_PATH"),
        format!("{}\n", shot.display()),
    )
    .unwrap();
    println!("screenshot: {}", shot.display());

    let hub = HubProcess::start(&["--http", "127.0.0.1:0"]);
    let url = format!("http://{}/", hub.http());
    let sender = spawn_sender(hub.img(), hub.msg());
    let source_id = format!("udp-127.0.0.1-{}", sender.camera.port());
    // the hub counts and stores a frame before it acks it, so the page will list the source
    sender
        .first_ack
        .recv_timeout(REPLY_TIMEOUT * 4)
        .expect("the hub acked no frame of the pattern sender");

    // the plots need two samples of the source (one a second) and a message with a number
    let history_ready = || {
        let (status, body) = http_request(hub.http(), "GET", "/api/history", None);
        assert_eq!(status, 200, "/api/history: {body}");
        let h: serde_json::Value = serde_json::from_str(&body).expect("/api/history is JSON");
        h["sources"][&source_id].as_array().map_or(0, Vec::len) >= 2
            && h["messages"]
                .as_object()
                .is_some_and(|m| m.values().any(|f| f.get("battery").is_some()))
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !history_ready() {
        assert!(
            std::time::Instant::now() < deadline,
            "/api/history has no two samples of {source_id} and no battery field within 20 s"
        );
        thread::sleep(Duration::from_millis(100));
    }

    let screenshot_arg = format!("--screenshot={}", shot.display());
    let shot_out = run_chromium(&browser, &[&screenshot_arg], &url);
    let dom = run_chromium(&browser, &["--dump-dom"], &url);

    drop(sender.stop);
    let acked = sender.handle.join().unwrap();
    let (status, _) = hub.stop("INT");
    assert!(status.success(), "hub exit status {status:?}");

    assert!(
        shot.exists(),
        "chromium wrote no screenshot at {}; its stderr:\n{}",
        shot.display(),
        String::from_utf8_lossy(&shot_out.stderr)
    );
    let img = imgcodecs::imread(shot.to_str().unwrap(), imgcodecs::IMREAD_COLOR).unwrap();
    assert!(
        img.cols() >= 1280 && img.rows() >= 900,
        "screenshot {}x{}",
        img.cols(),
        img.rows()
    );
    let (x, y, w, h) = FIRST_VIEW;
    // a margin inside the picture's box, clear of its badge
    let (mean, sd, bars) = region_stats(&img, Rect::new(x + 20, y + 40, w - 40, h - 60));
    println!(
        "picture area: mean {mean:.1}, sd {sd:.1}, {bars} of 7 colour bars; {acked} frames acked"
    );
    assert!(
        sd > 30.0 && bars >= 4,
        "the live picture area of {} looks blank (mean {mean:.1}, sd {sd:.1}, {bars} of the \
         pattern's 7 colour bars)",
        shot.display()
    );

    let html = String::from_utf8_lossy(&dom.stdout);
    assert!(
        html.contains(&source_id),
        "the rendered page does not name the source {source_id}:\n{html}\nstderr:\n{}",
        String::from_utf8_lossy(&dom.stderr)
    );
    assert!(
        html.contains(&format!("/stream/{source_id}")),
        "no live stream for {source_id} in the page"
    );
    assert!(
        html.contains("{\"frame\": "),
        "the page does not show the last message:\n{html}"
    );
    // the plots: the source's frame rate and the messages' battery field, each a line of
    // points (two at least: the history had them before the page was loaded)
    let plotted = |marker: &str| {
        html.split(marker).nth(1).is_some_and(|rest| {
            let points = rest.split("data-points=\"").nth(1).unwrap_or("");
            points
                .split('"')
                .next()
                .unwrap_or("0")
                .parse::<u32>()
                .unwrap_or(0)
                >= 2
        })
    };
    assert!(
        plotted("data-plot=\"fps\""),
        "no fps plot with points for the source in the page:\n{html}"
    );
    assert!(
        plotted("data-field=\"battery\""),
        "no plot of the messages' battery field in the page:\n{html}"
    );
}
