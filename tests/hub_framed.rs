//! The framed image format against a running hub: from the README's stdlib-only Python
//! sender, and from the library's socket-free sender driven over a real UDP socket.

mod common;

use common::*;
use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};
use udphub::proto::framed_sender::{FrameMeta, FramedSender, SenderConfig, SenderEvent};

fn stop_ok(hub: HubProcess) -> String {
    let (status, stdout) = hub.stop("INT");
    assert!(status.success(), "hub exit status {status:?}");
    assert_summary(&stdout);
    stdout
}

fn saved_contents(dir: &std::path::Path) -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = list_dir(dir)
        .iter()
        .map(|n| std::fs::read(dir.join(n)).unwrap())
        .collect();
    v.sort();
    v
}

#[test]
fn readme_python_sender_delivers_frames_byte_identical() {
    let dir = tempfile::tempdir().unwrap();
    let frames_dir = tempfile::tempdir().unwrap();
    let hub = HubProcess::start(&["--save-dir", dir.path().to_str().unwrap()]);
    let frames: Vec<Vec<u8>> = [5000, 66_000, 200_000, 1400, 1]
        .iter()
        .enumerate()
        .map(|(i, &n)| fake_jpeg(n.max(4), i as u64))
        .collect();
    let paths: Vec<String> = frames
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let p = frames_dir.path().join(format!("{i}.jpg"));
            std::fs::write(&p, f).unwrap();
            p.to_str().unwrap().to_string()
        })
        .collect();
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/python/framed_send.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(hub.img().to_string())
        .args(&paths)
        .output()
        .expect("python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "python sender failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout
            .lines()
            .filter(|l| l.ends_with(": delivered"))
            .count(),
        frames.len(),
        "{stdout}"
    );
    stop_ok(hub);
    let mut want = frames;
    want.sort();
    assert_eq!(saved_contents(dir.path()), want);
}

/// Drive a [`FramedSender`] over a UDP socket: the loop a client runs.
fn send_all(
    sock: &UdpSocket,
    hub: SocketAddr,
    sender: &mut FramedSender,
    frames: &[Vec<u8>],
) -> (usize, usize) {
    let (mut acked, mut lost, mut next) = (0, 0, 0);
    let mut rx = vec![0u8; 2048];
    let deadline = Instant::now() + Duration::from_secs(60);
    while (next < frames.len() || sender.in_flight() > 0) && Instant::now() < deadline {
        let now = Instant::now();
        while next < frames.len() && sender.can_send() {
            sender
                .send_frame(Arc::new(frames[next].clone()), FrameMeta::default(), now)
                .unwrap();
            next += 1;
        }
        while let Some(t) = sender.poll_transmit(now) {
            sock.send_to(&t.payload, t.to).unwrap();
        }
        let wait = sender
            .poll_timeout()
            .map_or(Duration::from_millis(50), |t| {
                t.saturating_duration_since(now)
            })
            .max(Duration::from_micros(100));
        sock.set_read_timeout(Some(wait)).unwrap();
        if let Ok((n, from)) = sock.recv_from(&mut rx) {
            if from == hub {
                sender.handle_datagram(&rx[..n], Instant::now());
            }
        }
        let now = Instant::now();
        if sender.poll_timeout().is_some_and(|t| t <= now) {
            sender.handle_timeout(now);
        }
        while let Some(e) = sender.poll_event() {
            match e {
                SenderEvent::Acked { .. } => acked += 1,
                SenderEvent::GaveUp { .. } => lost += 1,
            }
        }
    }
    (acked, lost)
}

#[test]
fn library_sender_with_window_one_and_four_against_the_hub() {
    let dir = tempfile::tempdir().unwrap();
    let hub = HubProcess::start(&["--save-dir", dir.path().to_str().unwrap()]);
    let frames: Vec<Vec<u8>> = (0..30)
        .map(|i| fake_jpeg(20_000 + 997 * i, i as u64))
        .collect();
    for (window, chunk_size) in [(1, 1400), (4, 65_000)] {
        let sock = udp_client();
        let config = SenderConfig {
            window,
            chunk_size,
            ..SenderConfig::default()
        };
        let mut sender = FramedSender::new(config, hub.img(), 1000 + window as u32, Instant::now());
        assert_eq!(
            send_all(&sock, hub.img(), &mut sender, &frames),
            (30, 0),
            "window {window}"
        );
    }
    stop_ok(hub);
    let mut want: Vec<Vec<u8>> = frames.iter().chain(frames.iter()).cloned().collect();
    want.sort();
    assert_eq!(saved_contents(dir.path()), want);
}

#[test]
fn seed_and_framed_senders_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let hub = HubProcess::start(&["--save-dir", dir.path().to_str().unwrap()]);
    let seed_frame = real_jpeg(30_000, 1);
    let framed_frames: Vec<Vec<u8>> = (0..5).map(|i| fake_jpeg(30_000, 10 + i)).collect();
    let seed_sock = udp_client();
    // the seed sender's header goes first, then the framed frames, then its data
    send(&seed_sock, hub.img(), &header8(seed_frame.len() as i64));
    let framed_sock = udp_client();
    let mut sender = FramedSender::new(SenderConfig::default(), hub.img(), 77, Instant::now());
    assert_eq!(
        send_all(&framed_sock, hub.img(), &mut sender, &framed_frames),
        (5, 0)
    );
    for d in seed_slices(&seed_frame, SEED_CHUNK) {
        send(&seed_sock, hub.img(), d);
    }
    expect_reply(&seed_sock, hub.img(), IMG_ACK, "seed frame ack");
    stop_ok(hub);
    assert_eq!(
        saved_from(dir.path(), "udp", seed_sock.local_addr().unwrap()),
        vec![seed_frame]
    );
    assert_eq!(
        saved_from(dir.path(), "udp", framed_sock.local_addr().unwrap()),
        framed_frames
    );
}
