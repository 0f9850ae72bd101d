//! `hub --display`: with no display the hub says so once and runs on without windows; with a
//! real X display (a private Xvfb started by the test) it opens its windows, keeps acking
//! frames, and stops cleanly. OpenCV would abort the process if a window were opened without
//! a display, so both cases matter.

mod common;

use common::*;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Send `n` real, decodable JPEG frames (the test pattern), each acked.
fn send_frames(hub: &HubProcess, n: usize) {
    use udphub::media::source::{FrameSource, PatternSource};
    let mut pattern = PatternSource::new(320, 240);
    let sock = udp_client();
    for _ in 0..n {
        let frame = pattern
            .next_frame()
            .unwrap()
            .expect("the pattern never ends");
        let jpeg = udphub::media::jpeg::encode(&frame, 80).unwrap();
        send_chunked(&sock, hub.img(), &jpeg);
        expect_reply(&sock, hub.img(), IMG_ACK, "ack with --display");
    }
}

#[test]
fn without_a_display_the_hub_says_so_and_runs_on() {
    let hub = HubProcess::start_with_env(
        &["--display"],
        &[("DISPLAY", None), ("WAYLAND_DISPLAY", None)],
    );
    send_frames(&hub, 5);
    let stderr = hub.stderr();
    let (status, stdout) = hub.stop("INT");
    assert!(status.success(), "{status:?}\n{stderr}");
    assert_summary(&stdout);
    assert_eq!(
        stderr.matches("no display").count(),
        1,
        "said once:\n{stderr}"
    );
    assert!(stdout.contains("5 frames"), "{stdout}");
}

/// A private X server on a free display number; killed on drop.
struct Xvfb {
    child: Child,
    display: String,
}

impl Xvfb {
    fn start() -> Xvfb {
        let mut child = Command::new("Xvfb")
            .args([
                "-displayfd",
                "1",
                "-screen",
                "0",
                "800x600x24",
                "-nolisten",
                "tcp",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start Xvfb (scripts/setup.sh installs xvfb): {e}"));
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let number = rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| {
                let _ = child.kill();
                panic!("Xvfb did not report its display number within 20 s")
            });
        Xvfb {
            child,
            display: format!(":{}", number.trim()),
        }
    }
}

impl Drop for Xvfb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn with_a_display_the_hub_shows_frames_and_stops_cleanly() {
    let x = Xvfb::start();
    let hub = HubProcess::start_with_env(
        &["--display"],
        &[("DISPLAY", Some(&x.display)), ("WAYLAND_DISPLAY", None)],
    );
    send_frames(&hub, 10);
    // the display thread works on its own: wait (bounded) until it says it opened a window
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !hub.stderr().contains("window opened for") && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let stderr = hub.stderr();
    let (status, stdout) = hub.stop("INT");
    assert!(status.success(), "{status:?}\n{stderr}");
    assert_summary(&stdout);
    assert!(!stderr.contains("no display"), "{stderr}");
    assert!(
        stderr.contains("window opened for udp 127.0.0.1:"),
        "{stderr}"
    );
    assert!(!stderr.contains("cannot open a window"), "{stderr}");
    assert!(
        !stderr.contains("not shown"),
        "every frame decoded and shown:\n{stderr}"
    );
    assert!(stdout.contains("10 frames"), "{stdout}");
}
