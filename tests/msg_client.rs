//! End-to-end tests of `msg-client`: stdin lines into the real hub's message log (valid ones
//! in order, invalid ones reported by line number), `--data` against the hub, a port where
//! nothing answers, a server that answers with error replies, and a bad `--data`.
//!
//! Loopback only, OS-chosen ports, every wait bounded: child processes are waited for with
//! a deadline (and killed, failing the test, past it).

mod common;

use common::{drain_nonblocking, run_client, summary_count as count, Finished, HubProcess};
use std::net::UdpSocket;
use std::thread;
use std::time::Duration;

/// Run `msg-client <args>` to the end with `stdin` as its input; kill it and panic if it
/// runs over [`common::CLIENT_TIMEOUT`].
fn msg_client(args: &[&str], stdin: &[u8]) -> Finished {
    run_client(env!("CARGO_BIN_EXE_msg-client"), args, stdin)
}

#[test]
fn stdin_lines_reach_the_log_in_order_and_bad_ones_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("messages.jsonl");
    let hub = HubProcess::start(&["--msg-log", log_path.to_str().unwrap()]);
    let input: &[u8] = b"[0, 0, 0, 1]\n\
        {bad json\n\
        \n\
        {\"temp\": 21.5, \"id\": \"pi-1\"}\r\n\
        [1, 2,\n\
        \x20\x20\n\
        \"just a string\"\n\
        [\xFF]\n\
        123456789012345678901234567890";
    let run = msg_client(
        &[
            "--stdin",
            "--hub",
            &hub.msg().to_string(),
            "--interval-ms",
            "0",
            "--reply-timeout-ms",
            "5000",
        ],
        input,
    );
    assert!(run.status.success(), "{}", run.describe());
    assert_eq!(
        count(&run.stdout, "messages", "sent"),
        4,
        "{}",
        run.describe()
    );
    assert_eq!(count(&run.stdout, "messages", "answered"), 4);
    assert_eq!(count(&run.stdout, "messages", "lost"), 0);
    assert_eq!(
        count(&run.stdout, "replies", "lines"),
        3,
        "invalid stdin lines"
    );
    for n in [2, 5, 8] {
        assert!(
            run.stderr.contains(&format!("stdin line {n}: not valid")),
            "line {n} not reported:\n{}",
            run.describe()
        );
    }
    for n in [1, 3, 4, 6, 7, 9] {
        assert!(
            !run.stderr.contains(&format!("stdin line {n}:")),
            "line {n} reported:\n{}",
            run.describe()
        );
    }

    // The hub writes each message before answering it; stop it so the log is complete.
    let (status, hub_out) = hub.stop("INT");
    assert!(status.success(), "{hub_out}");
    let log = std::fs::read_to_string(&log_path).unwrap();
    let logged: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["msg"].clone())
        .collect();
    let expected: Vec<serde_json::Value> = [
        "[0, 0, 0, 1]",
        "{\"temp\": 21.5, \"id\": \"pi-1\"}",
        "\"just a string\"",
        "123456789012345678901234567890",
    ]
    .iter()
    .map(|t| serde_json::from_str(t).unwrap())
    .collect();
    assert_eq!(logged, expected, "log:\n{log}");
    assert!(
        log.contains("123456789012345678901234567890"),
        "the big number is logged exactly as sent:\n{log}"
    );
}

#[test]
fn data_is_sent_count_times_and_answered() {
    let hub = HubProcess::start(&[]);
    let run = msg_client(
        &[
            "--hub",
            &hub.msg().to_string(),
            "--count",
            "5",
            "--data",
            "{\"battery\": 0.87}",
            "--reply-timeout-ms",
            "5000",
        ],
        b"",
    );
    assert!(run.status.success(), "{}", run.describe());
    assert_eq!(count(&run.stdout, "messages", "sent"), 5);
    assert_eq!(count(&run.stdout, "messages", "answered"), 5);
    let (status, hub_out) = hub.stop("INT");
    assert!(status.success());
    assert!(hub_out.contains("5 messages"), "{hub_out}");
}

#[test]
fn gives_up_on_a_hub_that_never_answers() {
    // Bound, so nothing is refused, but it never answers.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let hub = silent.local_addr().unwrap().to_string();
    let three_messages = |protocol: &str| {
        msg_client(
            &[
                "--protocol",
                protocol,
                "--hub",
                &hub,
                "--count",
                "3",
                "--interval-ms",
                "0",
                "--reply-timeout-ms",
                "200",
            ],
            b"",
        )
    };
    // framed: each message is resent until its reply timeout, then counted lost
    let run = three_messages("framed");
    assert!(!run.status.success(), "{}", run.describe());
    assert_eq!(
        count(&run.stdout, "messages", "lost"),
        3,
        "{}",
        run.describe()
    );
    let resent = count(&run.stdout, "replies", "resent");
    assert!(resent >= 3, "{}", run.describe());
    assert_eq!(drain_nonblocking(&silent).len() as u64, 3 + resent);
    // seed: a seed server would record a resent message twice, so there is no resend
    let run = three_messages("seed");
    assert!(!run.status.success(), "{}", run.describe());
    assert_eq!(
        count(&run.stdout, "messages", "sent"),
        3,
        "{}",
        run.describe()
    );
    assert_eq!(count(&run.stdout, "messages", "answered"), 0);
    assert_eq!(count(&run.stdout, "messages", "lost"), 3);
    assert_eq!(
        drain_nonblocking(&silent).len(),
        3,
        "each message sent once"
    );
}

#[test]
fn error_replies_are_printed_and_counted_as_rejected() {
    let server = UdpSocket::bind("127.0.0.1:0").unwrap();
    server
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let addr = server.local_addr().unwrap();
    let answering = thread::spawn(move || {
        let mut buf = [0u8; 2048];
        for _ in 0..2 {
            let (_, from) = server.recv_from(&mut buf).expect("a message");
            server
                .send_to(b"error: the hub could not record the message", from)
                .unwrap();
        }
    });
    let run = msg_client(
        &[
            "--protocol",
            "seed",
            "--hub",
            &addr.to_string(),
            "--count",
            "2",
            "--reply-timeout-ms",
            "5000",
        ],
        b"",
    );
    answering.join().unwrap();
    assert!(
        !run.status.success(),
        "nothing answered:\n{}",
        run.describe()
    );
    assert_eq!(
        count(&run.stdout, "messages", "rejected"),
        2,
        "{}",
        run.describe()
    );
    assert_eq!(count(&run.stdout, "messages", "answered"), 0);
    assert_eq!(count(&run.stdout, "messages", "lost"), 0);
    assert!(
        run.stderr
            .contains("rejected by the hub: error: the hub could not record the message"),
        "{}",
        run.describe()
    );
}

#[test]
fn invalid_data_is_refused_before_anything_is_sent() {
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let run = msg_client(
        &[
            "--hub",
            &silent.local_addr().unwrap().to_string(),
            "--data",
            "[0, 0,",
            "--count",
            "1",
        ],
        b"",
    );
    assert_eq!(run.status.code(), Some(2), "{}", run.describe());
    assert!(run.stderr.contains("not valid JSON"), "{}", run.describe());
    assert!(drain_nonblocking(&silent).is_empty(), "nothing was sent");
}
