//! The hub's UDP message port against the seed message client (udp_client_2.py):
//! one UTF-8 JSON value per datagram, answered with `get the msg`.

mod common;

use common::*;
use serde_json::{json, Value};
use std::net::UdpSocket;

/// Wait for one reply and check it is an error reply: starts with `error:`, at most 64 bytes.
/// (Junk shorter than its error reply gets none: see the test below.)
fn expect_error_reply(sock: &UdpSocket, hub: std::net::SocketAddr, what: &str) {
    let reply = recv_reply(sock, hub, what);
    assert!(
        reply.starts_with(b"error:"),
        "{what}: reply {:?} does not start with `error:`",
        String::from_utf8_lossy(&reply)
    );
    assert!(
        reply.len() <= 64,
        "{what}: error reply is {} bytes (at most 64 allowed)",
        reply.len()
    );
}

#[test]
fn seed_message_is_acked() {
    let hub = HubProcess::start(&[]);
    let sock = udp_client();
    // json.dumps([0,0,0,1]).encode()
    send(&sock, hub.msg(), b"[0, 0, 0, 1]");
    expect_reply(&sock, hub.msg(), MSG_ACK, "[0,0,0,1]");
    let (status, _) = hub.stop("INT");
    assert!(status.success(), "hub exit status {status:?}");
    assert!(drain_nonblocking(&sock).is_empty(), "extra replies");
}

#[test]
fn seed_message_from_python_is_acked() {
    let hub = HubProcess::start(&[]);
    let port = hub.msg().port().to_string();

    let run = run_seed_sender(&["msg", "--port", &port]);
    assert!(
        run.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        run.status,
        run.stdout,
        run.stderr
    );
    assert_eq!(run.stdout, "get the msg\n");

    // Other JSON values, and the seed's loop (stop-and-wait) a few times.
    let run = run_seed_sender(&[
        "msg",
        "--port",
        &port,
        "--json",
        r#"{"speed": 1.5, "name": "小车", "flags": [true, false, null]}"#,
        "--repeat",
        "5",
    ]);
    assert!(
        run.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        run.status,
        run.stdout,
        run.stderr
    );
    assert_eq!(run.stdout, "get the msg\n".repeat(5));

    let (status, _) = hub.stop("INT");
    assert!(status.success(), "hub exit status {status:?}");
}

#[test]
fn unusable_datagrams_get_short_error_replies_and_the_port_keeps_working() {
    let hub = HubProcess::start(&[]);
    let sock = udp_client();
    let msg = hub.msg();

    let mut oversized = b"[".to_vec();
    while oversized.len() < MAX_UDP_PAYLOAD - 3 {
        oversized.extend_from_slice(b"0, ");
    }
    oversized.resize(MAX_UDP_PAYLOAD, b' '); // an array that is never closed
    assert_eq!(oversized.len(), MAX_UDP_PAYLOAD);

    let short: Vec<(&str, Vec<u8>)> = vec![
        ("non-UTF-8 bytes", vec![0xFF, 0xFE, 0x80, 0x00, 0xC3]),
        ("UTF-8 cut inside a character", b"[\"\xE5\xB0\"]".to_vec()),
        ("invalid JSON", b"[0, 0, 0,".to_vec()),
        ("two JSON values", b"[1] [2]".to_vec()),
        ("plain text", b"hello hub".to_vec()),
    ];
    // A reply is never longer than the junk it answers (no amplification, issue 11): the
    // same junk padded with spaces to 64 bytes gets its error reply.
    let mut cases: Vec<(String, Vec<u8>)> = short
        .iter()
        .map(|(what, bad)| {
            let mut padded = bad.clone();
            padded.resize(64, b' ');
            (format!("{what}, padded to 64 bytes"), padded)
        })
        .collect();
    cases.push((
        "a 65507-byte datagram (unterminated JSON)".into(),
        oversized,
    ));
    for (what, bad) in &cases {
        send(&sock, msg, bad);
        expect_error_reply(&sock, msg, what);
        send(&sock, msg, b"[0, 0, 0, 1]");
        expect_reply(&sock, msg, MSG_ACK, &format!("valid message after {what}"));
    }
    // ...and shorter than its reply it gets none: the next reply is the valid message's ack
    // (one socket thread answers in order)
    for (what, bad) in short.iter().chain([&("an empty datagram", Vec::new())]) {
        send(&sock, msg, bad);
        send(&sock, msg, b"[0, 0, 0, 1]");
        expect_reply(
            &sock,
            msg,
            MSG_ACK,
            &format!("no reply to {what}, then the ack"),
        );
    }

    let (status, _) = hub.stop("INT");
    assert!(status.success(), "hub exit status {status:?}");
    let left = drain_nonblocking(&sock);
    assert!(left.is_empty(), "{} extra replies: {left:?}", left.len());
}

/// 50 distinct messages, each waiting for its reply; the log holds exactly those 50 lines
/// in order after the hub is stopped with `signal`.
fn msg_log_holds_every_message(signal: &str) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("messages.jsonl");
    let hub = HubProcess::start(&["--msg-log", log.to_str().unwrap()]);
    let sock = udp_client();
    let me = sock.local_addr().unwrap();
    let msg = hub.msg();

    let sent: Vec<Value> = (0..50)
        .map(|i| match i % 5 {
            0 => json!([0, 0, 0, i]),
            1 => json!({"i": i, "name": format!("消息 {i}"), "nested": {"ok": true}}),
            2 => json!(format!("text with\nnewline {i}")),
            3 => json!(i * 1000),
            _ => json!({"i": i, "list": [null, false, "x"], "neg": -i}),
        })
        .collect();
    for (i, value) in sent.iter().enumerate() {
        // Pretty printing puts newlines between tokens: the log line must still be one line.
        let text = if i % 7 == 0 {
            serde_json::to_string_pretty(value).unwrap()
        } else {
            serde_json::to_string(value).unwrap()
        };
        send(&sock, msg, text.as_bytes());
        expect_reply(&sock, msg, MSG_ACK, &format!("message #{i}"));
    }

    let (status, stdout) = hub.stop(signal);
    assert!(
        status.success(),
        "hub exit status {status:?} after SIG{signal}"
    );
    assert_summary(&stdout);

    let text = std::fs::read_to_string(&log).expect("read the msg log");
    let lines: Vec<&str> = text.lines().collect();
    assert!(text.ends_with('\n'), "the last log line is not terminated");
    assert_eq!(lines.len(), sent.len(), "log lines:\n{text}");
    for (i, (line, value)) in lines.iter().zip(&sent).enumerate() {
        let entry: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("log line {i} is not JSON ({e}): {line:?}"));
        let obj = entry
            .as_object()
            .unwrap_or_else(|| panic!("log line {i} is not an object: {line:?}"));
        let ts = obj
            .get("ts")
            .and_then(Value::as_f64)
            .unwrap_or_else(|| panic!("log line {i}: no numeric ts: {line:?}"));
        assert!(ts > 1.0e9, "log line {i}: ts {ts} is not unix seconds");
        assert_eq!(
            obj.get("from"),
            Some(&json!(me.to_string())),
            "log line {i}: from"
        );
        assert_eq!(obj.get("msg"), Some(value), "log line {i}: msg");
    }
}

#[test]
fn msg_log_holds_every_message_after_sigint() {
    msg_log_holds_every_message("INT");
}

#[test]
fn msg_log_holds_every_message_after_sigterm() {
    msg_log_holds_every_message("TERM");
}

#[test]
fn no_msg_flag_disables_the_message_port() {
    let hub = HubProcess::start(&["--no-msg"]);
    assert!(hub.img_addr.is_some());
    assert!(hub.msg_addr.is_none());
    assert!(hub.tcp_addr.is_some());
    let (status, stdout) = hub.stop("INT");
    assert!(status.success(), "hub exit status {status:?}");
    assert!(
        !stdout.contains("hub: msg listening"),
        "msg line printed with --no-msg:\n{stdout}"
    );
}
