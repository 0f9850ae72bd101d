//! `udphub::secure::session::Responder::handle_datagram` on arbitrary datagrams from one
//! address: the input is split at every `b"\xff\xfe"` into a sequence of datagrams fed to
//! one responder (fixed keys, one authorized device). It must not panic, must never reply
//! with more bytes than it got, and can never open a datagram (nobody here has a session
//! key, so an `Opened` would be a forgery).
#![no_main]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use udphub::secure::authorized::AuthorizedKeys;
use udphub::secure::keys::PrivateKey;
use udphub::secure::session::{Outcome, Responder};

fuzz_target!(|data: &[u8]| {
    let hub = PrivateKey::from_bytes([7; 32]);
    let device = PrivateKey::from_bytes([9; 32]).public_key();
    let keys = AuthorizedKeys::parse(&format!("{device} cam-1\n")).unwrap();
    let mut r = Responder::new(hub, Arc::new(keys));
    let from: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    let t0 = Instant::now();
    let mut rest = data;
    for n in 0u64.. {
        let (datagram, more) = match rest.windows(2).position(|w| w == b"\xff\xfe") {
            Some(at) => (&rest[..at], Some(&rest[at + 2..])),
            None => (rest, None),
        };
        match r.handle_datagram(from, datagram, t0 + Duration::from_millis(n)) {
            Outcome::Reply(b) => assert!(b.len() <= datagram.len()),
            Outcome::Opened { .. } => panic!("opened a datagram without a session key"),
            Outcome::Refused(_) => {}
        }
        match more {
            Some(m) => rest = m,
            None => break,
        }
    }
});
