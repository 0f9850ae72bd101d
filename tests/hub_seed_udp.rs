//! The hub's UDP image port against the seed UDP image clients: a whole JPEG in one
//! datagram, and the chunked format (length header, then 1024-byte data datagrams).

mod common;

use common::*;
use std::net::UdpSocket;
use tempfile::TempDir;

fn start_saving() -> (HubProcess, TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let hub = HubProcess::start(&["--save-dir", dir.path().to_str().unwrap()]);
    (hub, dir)
}

/// Stop the hub with SIGINT (which drains the save queue) and check it exited cleanly.
fn stop_ok(hub: HubProcess) -> String {
    let (status, stdout) = hub.stop("INT");
    assert!(status.success(), "hub exit status {status:?}");
    assert_summary(&stdout);
    stdout
}

fn assert_no_leftover_replies(sock: &UdpSocket, what: &str) {
    let left = drain_nonblocking(sock);
    assert!(
        left.is_empty(),
        "{what}: {} unexpected extra replies: {:?}",
        left.len(),
        left.iter()
            .map(|d| String::from_utf8_lossy(d).into_owned())
            .collect::<Vec<_>>()
    );
}

#[test]
fn single_datagram_jpeg_is_acked_and_saved() {
    let (hub, dir) = start_saving();
    let sock = udp_client();
    let me = sock.local_addr().unwrap();
    let frame = real_jpeg(30_000, 1);

    send(&sock, hub.img(), &frame);
    expect_reply(&sock, hub.img(), IMG_ACK, "single-datagram JPEG");

    stop_ok(hub);
    assert_no_leftover_replies(&sock, "single-datagram JPEG");
    assert_saved_exactly(dir.path(), &[(saved_name("udp", me, 1), frame)]);
}

#[test]
fn largest_single_datagram_jpeg_is_acked_and_saved() {
    let (hub, dir) = start_saving();
    let sock = udp_client();
    let me = sock.local_addr().unwrap();
    let frame = real_jpeg(MAX_UDP_PAYLOAD, 2);

    send(&sock, hub.img(), &frame);
    expect_reply(&sock, hub.img(), IMG_ACK, "65507-byte single-datagram JPEG");

    stop_ok(hub);
    assert_no_leftover_replies(&sock, "65507-byte JPEG");
    assert_saved_exactly(dir.path(), &[(saved_name("udp", me, 1), frame)]);
}

#[test]
fn chunked_frames_of_every_shape_are_acked_once_and_saved() {
    let (hub, dir) = start_saving();
    let sock = udp_client();
    let me = sock.local_addr().unwrap();

    // (description, frame, header width in bytes)
    let cases: Vec<(&str, Vec<u8>, usize)> = vec![
        (
            "1 byte over a multiple of 1024",
            real_jpeg(3 * 1024 + 1, 10),
            8,
        ),
        (
            "exact multiple of 1024 (trailing empty datagram)",
            real_jpeg(2 * 1024, 11),
            8,
        ),
        ("smaller than one chunk", real_jpeg(900, 12), 8),
        ("about 66 KB", real_jpeg(66 * 1024 + 123, 13), 8),
        ("exactly 1024 bytes", real_jpeg(1024, 14), 8),
        ("4-byte header", real_jpeg(5000, 15), 4),
        (
            "4-byte header, multiple of 1024",
            real_jpeg(4 * 1024, 16),
            4,
        ),
    ];

    let mut expected = Vec::new();
    for (i, (what, frame, width)) in cases.into_iter().enumerate() {
        let header = match width {
            8 => header8(frame.len() as i64),
            4 => header4(frame.len() as i32),
            _ => unreachable!(),
        };
        let datagrams = seed_datagrams(&frame, header, SEED_CHUNK);
        send_all(&sock, hub.img(), &datagrams);
        expect_reply(&sock, hub.img(), IMG_ACK, what);
        expected.push((saved_name("udp", me, i as u64 + 1), frame));
    }

    stop_ok(hub);
    assert_no_leftover_replies(&sock, "chunked frames (each must be acked exactly once)");
    assert_saved_exactly(dir.path(), &expected);
}

#[test]
fn seed_python_client_single_and_chunked() {
    let (hub, dir) = start_saving();
    let port = hub.img().port().to_string();
    let files = tempfile::tempdir().unwrap();

    // (mode, header format, frame)
    let cases: Vec<(&str, &str, Vec<u8>)> = vec![
        ("single", "l", real_jpeg(20_000, 20)),
        ("chunked", "l", real_jpeg(3 * 1024 + 1, 21)),
        ("chunked", "l", real_jpeg(2 * 1024, 22)),
        ("chunked", "l", real_jpeg(900, 23)),
        ("chunked", "l", real_jpeg(66 * 1024 + 77, 24)),
        ("chunked", "<i", real_jpeg(5000, 25)),
    ];

    let mut expected = Vec::new();
    for (i, (mode, format, frame)) in cases.into_iter().enumerate() {
        let path = files.path().join(format!("frame{i}.jpg"));
        std::fs::write(&path, &frame).unwrap();
        let run = run_seed_sender(&[
            mode,
            "--port",
            &port,
            "--file",
            path.to_str().unwrap(),
            "--header-format",
            format,
        ]);
        let what = format!("python {mode} (header {format:?}, {} bytes)", frame.len());
        assert!(
            run.status.success(),
            "{what}: exit {:?}\nstdout:\n{}\nstderr:\n{}",
            run.status,
            run.stdout,
            run.stderr
        );
        assert_eq!(run.stdout, "get message!!!\n", "{what}: printed reply");
        expected.push((saved_name("udp", run.local_addr(), 1), frame));
    }

    stop_ok(hub);
    assert_saved_exactly(dir.path(), &expected);
}

#[test]
fn seed_python_client_stop_and_wait_loop() {
    let (hub, dir) = start_saving();
    let files = tempfile::tempdir().unwrap();
    let frame = real_jpeg(66 * 1024 + 500, 30);
    let path = files.path().join("frame.jpg");
    std::fs::write(&path, &frame).unwrap();

    let run = run_seed_sender(&[
        "chunked",
        "--port",
        &hub.img().port().to_string(),
        "--file",
        path.to_str().unwrap(),
        "--repeat",
        "20",
    ]);
    assert!(
        run.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        run.status,
        run.stdout,
        run.stderr
    );
    assert_eq!(run.stdout, "get message!!!\n".repeat(20));
    let from = run.local_addr();

    stop_ok(hub);
    let expected: Vec<_> = (1..=20)
        .map(|seq| (saved_name("udp", from, seq), frame.clone()))
        .collect();
    assert_saved_exactly(dir.path(), &expected);
}

#[test]
fn unchanged_seed_client_flow_66kb_twenty_times() {
    let (hub, dir) = start_saving();
    let sock = udp_client();
    let me = sock.local_addr().unwrap();
    let frame = real_jpeg(66 * 1024 + 500, 40);

    for i in 0..20 {
        send_chunked(&sock, hub.img(), &frame);
        expect_reply(
            &sock,
            hub.img(),
            IMG_ACK,
            &format!("66 KB frame #{}", i + 1),
        );
    }

    stop_ok(hub);
    assert_no_leftover_replies(&sock, "66 KB stop-and-wait");
    let expected: Vec<_> = (1..=20)
        .map(|seq| (saved_name("udp", me, seq), frame.clone()))
        .collect();
    assert_saved_exactly(dir.path(), &expected);
}

#[test]
fn two_senders_interleaved_are_reassembled_per_source() {
    let (hub, dir) = start_saving();
    let a = udp_client();
    let b = udp_client();
    let a_addr = a.local_addr().unwrap();
    let b_addr = b.local_addr().unwrap();
    let frame_a = real_jpeg(7 * 1024 + 300, 50);
    let frame_b = real_jpeg(5 * 1024, 51); // multiple of 1024: ends with an empty datagram
    let dg_a = seed_datagrams(&frame_a, header8(frame_a.len() as i64), SEED_CHUNK);
    let dg_b = seed_datagrams(&frame_b, header8(frame_b.len() as i64), SEED_CHUNK);

    // Alternate: A header, B header, A chunk 0, B chunk 0, ...
    for i in 0..dg_a.len().max(dg_b.len()) {
        if let Some(d) = dg_a.get(i) {
            send(&a, hub.img(), d);
        }
        if let Some(d) = dg_b.get(i) {
            send(&b, hub.img(), d);
        }
    }
    expect_reply(&a, hub.img(), IMG_ACK, "interleaved sender A");
    expect_reply(&b, hub.img(), IMG_ACK, "interleaved sender B");

    stop_ok(hub);
    assert_no_leftover_replies(&a, "interleaved sender A");
    assert_no_leftover_replies(&b, "interleaved sender B");
    assert_saved_exactly(
        dir.path(),
        &[
            (saved_name("udp", a_addr, 1), frame_a),
            (saved_name("udp", b_addr, 1), frame_b),
        ],
    );
}

/// Bad input of every kind, each followed by a valid frame that must be acked. At the end
/// the saved files are exactly the valid frames, and the total number of acks (waited for
/// during the run plus whatever is queued after the hub exited) equals the number of valid
/// frames: nothing corrupt is ever acked or saved.
#[test]
fn bad_input_is_dropped_and_the_hub_resyncs() {
    let (hub, dir) = start_saving();
    let img = hub.img();
    let sock = udp_client();
    let me = sock.local_addr().unwrap();

    let mut valid: Vec<Vec<u8>> = Vec::new();
    let mut acks = 0usize;
    let mut seed = 100u64;
    // Send a valid frame in the seed chunked format and wait for its ack.
    let mut valid_frame = |after: &str, valid: &mut Vec<Vec<u8>>, acks: &mut usize| {
        seed += 1;
        let frame = real_jpeg(2 * 1024 + 300 + seed as usize, seed);
        send_chunked(&sock, img, &frame);
        let reply = recv_reply(&sock, img, &format!("valid frame after {after}"));
        assert_eq!(reply, IMG_ACK, "reply to the valid frame after {after}");
        *acks += 1;
        valid.push(frame);
    };

    valid_frame("nothing (start)", &mut valid, &mut acks);

    // 3 random bytes.
    send(&sock, img, &[0x13, 0x37, 0x42]);
    valid_frame("3 random bytes", &mut valid, &mut acks);

    // Header 0, -5, 2^62 (each rejected), also in the 4-byte form.
    for (what, header) in [
        ("header 0", header8(0)),
        ("header -5", header8(-5)),
        ("header 2^62", header8(1 << 62)),
        ("4-byte header 0", header4(0)),
        ("4-byte header -5", header4(-5)),
    ] {
        send(&sock, img, &header);
        valid_frame(what, &mut valid, &mut acks);
    }

    // A rejected header followed by data: the data must not be taken as a frame.
    let lost = real_jpeg(3 * 1024 + 400, 200);
    send(&sock, img, &header8(-5));
    send_all(
        &sock,
        img,
        &seed_datagrams(&lost, Vec::new(), SEED_CHUNK)[1..],
    );
    valid_frame("header -5 then data", &mut valid, &mut acks);

    // The header datagram lost: data chunks without a header.
    let frame = real_jpeg(3 * 1024 + 400, 201);
    let dg = seed_datagrams(&frame, header8(frame.len() as i64), SEED_CHUNK);
    send_all(&sock, img, &dg[1..]);
    valid_frame("data without its header", &mut valid, &mut acks);

    // A middle data datagram lost.
    let frame = real_jpeg(3 * 1024 + 400, 202);
    let mut dg = seed_datagrams(&frame, header8(frame.len() as i64), SEED_CHUNK);
    dg.remove(2);
    send_all(&sock, img, &dg);
    valid_frame("a frame missing a middle datagram", &mut valid, &mut acks);

    // The last data datagram lost.
    let frame = real_jpeg(3 * 1024 + 400, 203);
    let mut dg = seed_datagrams(&frame, header8(frame.len() as i64), SEED_CHUNK);
    dg.pop();
    send_all(&sock, img, &dg);
    valid_frame("a frame missing its last datagram", &mut valid, &mut acks);

    // Data datagrams of 2048 bytes: a valid frame, must simply work.
    let frame = real_jpeg(5 * 1024 + 77, 204);
    send_all(
        &sock,
        img,
        &seed_datagrams(&frame, header8(frame.len() as i64), 2048),
    );
    expect_reply(&sock, img, IMG_ACK, "frame in 2048-byte datagrams");
    acks += 1;
    valid.push(frame);
    valid_frame("a frame in 2048-byte datagrams", &mut valid, &mut acks);

    // The header sent twice: the second restarts the (empty) frame; the data completes it.
    let frame = real_jpeg(3 * 1024 + 10, 205);
    let dg = seed_datagrams(&frame, header8(frame.len() as i64), SEED_CHUNK);
    send(&sock, img, &dg[0]);
    send_all(&sock, img, &dg);
    expect_reply(&sock, img, IMG_ACK, "frame whose header was sent twice");
    acks += 1;
    valid.push(frame);
    valid_frame("a frame whose header was sent twice", &mut valid, &mut acks);

    // A frame whose bytes are complete but not a JPEG (no FF D8 / FF D9).
    let mut not_jpeg = real_jpeg(2 * 1024 + 5, 206);
    not_jpeg[0] = 0x00;
    send_chunked(&sock, img, &not_jpeg);
    valid_frame("a complete frame that is not a JPEG", &mut valid, &mut acks);

    // A single datagram that is not a JPEG, and one that is truncated.
    send(&sock, img, &vec![0x55; 3000]);
    valid_frame("a 3000-byte non-JPEG datagram", &mut valid, &mut acks);
    let truncated = real_jpeg(3000, 207);
    send(&sock, img, &truncated[..2000]);
    valid_frame("a truncated single-datagram JPEG", &mut valid, &mut acks);

    // A header larger than the frame's data, then a new header: the incomplete frame must
    // be dropped, not completed with the next frame's bytes.
    let frame = real_jpeg(2 * 1024, 208);
    send(&sock, img, &header8(frame.len() as i64 + 1000));
    send_all(
        &sock,
        img,
        &seed_datagrams(&frame, Vec::new(), SEED_CHUNK)[1..],
    );
    valid_frame(
        "a header claiming more bytes than sent",
        &mut valid,
        &mut acks,
    );

    // An empty datagram.
    send(&sock, img, &[]);
    valid_frame("an empty datagram", &mut valid, &mut acks);

    stop_ok(hub);
    let left = drain_nonblocking(&sock);
    assert!(
        left.iter().all(|d| d == IMG_ACK),
        "unexpected replies: {:?}",
        left.iter()
            .map(|d| String::from_utf8_lossy(d).into_owned())
            .collect::<Vec<_>>()
    );
    assert_eq!(
        acks + left.len(),
        valid.len(),
        "acks in total (a corrupt frame was acked if this is larger than the valid frames)"
    );
    let expected: Vec<_> = valid
        .into_iter()
        .enumerate()
        .map(|(i, f)| (saved_name("udp", me, i as u64 + 1), f))
        .collect();
    assert_saved_exactly(dir.path(), &expected);
}

#[test]
fn no_img_flag_disables_the_image_port() {
    let hub = HubProcess::start(&["--no-img"]);
    assert!(hub.img_addr.is_none());
    assert!(hub.msg_addr.is_some());
    assert!(hub.tcp_addr.is_some());
    let stdout = stop_ok(hub);
    assert!(
        !stdout.contains("hub: img listening"),
        "img line printed with --no-img:\n{stdout}"
    );
}

#[test]
fn max_frame_bytes_limits_the_header() {
    let dir = tempfile::tempdir().unwrap();
    let hub = HubProcess::start(&[
        "--save-dir",
        dir.path().to_str().unwrap(),
        "--max-frame-bytes",
        "10000",
    ]);
    let sock = udp_client();
    let me = sock.local_addr().unwrap();

    // One byte over the limit: the header is rejected, so its data is stray.
    let too_big = real_jpeg(10_001, 60);
    send_chunked(&sock, hub.img(), &too_big);
    // Exactly the limit: fine.
    let at_limit = real_jpeg(10_000, 61);
    send_chunked(&sock, hub.img(), &at_limit);
    expect_reply(
        &sock,
        hub.img(),
        IMG_ACK,
        "frame of exactly --max-frame-bytes",
    );

    stop_ok(hub);
    assert_no_leftover_replies(&sock, "frame over --max-frame-bytes");
    assert_saved_exactly(dir.path(), &[(saved_name("udp", me, 1), at_limit)]);
}

#[test]
fn stop_with_a_partial_frame_pending_exits_cleanly() {
    let (hub, dir) = start_saving();
    let sock = udp_client();
    let me = sock.local_addr().unwrap();
    let done = real_jpeg(4000, 70);
    send_chunked(&sock, hub.img(), &done);
    expect_reply(&sock, hub.img(), IMG_ACK, "complete frame");
    // Header and one chunk of a frame that never completes.
    let partial = real_jpeg(5000, 71);
    send_all(
        &sock,
        hub.img(),
        &seed_datagrams(&partial, header8(partial.len() as i64), SEED_CHUNK)[..2],
    );

    stop_ok(hub);
    assert_no_leftover_replies(&sock, "partial frame at stop");
    assert_saved_exactly(dir.path(), &[(saved_name("udp", me, 1), done)]);
}
