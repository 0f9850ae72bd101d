//! The HTTP view under slow and silent connections (issue 11), end to end on loopback: 200
//! connections from 59 addresses (127.0.0.2–127.0.0.60) that send half a request head and
//! then nothing cannot keep a legitimate `/state` request out; one address gets at most
//! `--http-max-conns-per-addr` places and a 503 beyond them; a connection that never sends
//! a whole head gets a 408; and the refusal and eviction log lines are rate-limited.

mod common;

use common::*;
use socket2::{Domain, Socket, Type};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// A TCP connection to `to` from `from_ip` (any port).
fn connect_from(from_ip: Ipv4Addr, to: SocketAddr) -> TcpStream {
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    s.bind(&SocketAddr::from((from_ip, 0)).into())
        .unwrap_or_else(|e| panic!("bind {from_ip}: {e}"));
    s.connect_timeout(&to.into(), REPLY_TIMEOUT)
        .unwrap_or_else(|e| panic!("connect {to} from {from_ip}: {e}"));
    let s: TcpStream = s.into();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

/// Everything `s` receives until the server closes (or 20 s pass), as text.
fn read_all(mut s: TcpStream) -> String {
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// `GET /state` from 127.0.0.1; the response's status line and body.
fn get_state(hub: SocketAddr) -> String {
    let mut s = connect_from(Ipv4Addr::LOCALHOST, hub);
    s.write_all(b"GET /state HTTP/1.1\r\nHost: hub\r\nConnection: close\r\n\r\n")
        .unwrap();
    read_all(s)
}

/// Lines of the hub's log that report a connection refused or cut.
fn refusal_lines(log: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("http: refusing") || l.contains("cut to make room"))
        .count()
}

#[test]
fn slow_connections_from_many_addresses_cannot_keep_a_request_out() {
    let hub = HubProcess::start(&["--http", "127.0.0.1:0"]);
    let started = Instant::now();
    let http = hub.http();
    let slow: Vec<TcpStream> = (0..200)
        .map(|i| {
            let ip = Ipv4Addr::new(127, 0, 0, 2 + (i % 59) as u8);
            let mut s = connect_from(ip, http);
            s.write_all(b"GET /state HTTP/1.1\r\nHo").unwrap();
            s
        })
        .collect();
    for i in 0..10 {
        let response = get_state(http);
        assert!(
            response.starts_with("HTTP/1.1 200"),
            "legitimate request {i} while 200 slow connections are open: {response:.300}"
        );
        assert!(response.contains("\"services\""), "{response:.300}");
    }
    let (status, out, log) = hub.stop_with_stderr("INT");
    let elapsed = started.elapsed();
    assert!(status.success(), "{out}");
    drop(slow);
    // 16 + 32 places: at least 152 slow connections and the 10 requests each cut one; the
    // log says so in at most 10 lines a second (and 10 more for a second just begun)
    let lines = refusal_lines(&log);
    let bound = 10 * (elapsed.as_secs() as usize + 2);
    assert!(
        (1..=bound).contains(&lines),
        "{lines} refusal/eviction lines in {elapsed:?} (at most {bound}):\n{log}"
    );
}

#[test]
fn one_address_gets_its_share_and_a_503_beyond_it() {
    let hub = HubProcess::start(&["--http", "127.0.0.1:0", "--http-max-conns-per-addr", "3"]);
    let http = hub.http();
    let one = Ipv4Addr::new(127, 0, 0, 7);
    let held: Vec<TcpStream> = (0..3).map(|_| connect_from(one, http)).collect();
    for _ in 0..2 {
        let refused = read_all(connect_from(one, http));
        assert!(refused.starts_with("HTTP/1.1 503"), "{refused:.300}");
        assert!(refused.contains("from this address"), "{refused:.300}");
    }
    let response = get_state(http);
    assert!(response.starts_with("HTTP/1.1 200"), "{response:.300}");
    drop(held);
    let (status, out) = hub.stop("INT");
    assert!(status.success(), "{out}");
}

#[test]
fn a_connection_that_never_sends_a_whole_head_gets_408() {
    let hub = HubProcess::start(&["--http", "127.0.0.1:0"]);
    let mut s = connect_from(Ipv4Addr::LOCALHOST, hub.http());
    s.write_all(b"GET / HT").unwrap();
    let response = read_all(s);
    assert!(response.starts_with("HTTP/1.1 408"), "{response:.300}");
    let silent = read_all(connect_from(Ipv4Addr::LOCALHOST, hub.http()));
    assert!(silent.starts_with("HTTP/1.1 408"), "{silent:.300}");
    let (status, out) = hub.stop("INT");
    assert!(status.success(), "{out}");
}
