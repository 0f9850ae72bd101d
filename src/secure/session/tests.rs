//! Socket-free tests of the handshake, the transport and the refusals. Every datagram the
//! responder is fed goes through `feed`, which checks that a reply is never larger than the
//! datagram it answers.

use super::*;
use crate::secure::keys::generate;

const FROM: &str = "127.0.0.1:40000";

fn from() -> SocketAddr {
    FROM.parse().unwrap()
}

fn authorized(entries: &[(PublicKey, &str)]) -> Arc<AuthorizedKeys> {
    let text: String = entries.iter().map(|(k, n)| format!("{k} {n}\n")).collect();
    Arc::new(AuthorizedKeys::parse(&text).unwrap())
}

struct Setup {
    hub_private: PrivateKey,
    hub_public: PublicKey,
    dev_private: PrivateKey,
    dev_public: PublicKey,
    t0: Instant,
}

fn setup() -> Setup {
    let (hub_private, hub_public) = generate().unwrap();
    let (dev_private, dev_public) = generate().unwrap();
    Setup {
        hub_private,
        hub_public,
        dev_private,
        dev_public,
        t0: Instant::now(),
    }
}

impl Setup {
    fn responder(&self) -> Responder {
        Responder::new(
            self.hub_private.clone(),
            authorized(&[(self.dev_public, "cam-1")]),
        )
    }
    fn initiator(&self) -> Initiator {
        Initiator::new(self.dev_private.clone(), self.hub_public, self.t0)
    }
}

/// The responder's answer to `bytes`, checking the no-amplification rule.
fn feed(r: &mut Responder, bytes: &[u8], now: Instant) -> Outcome {
    let out = r.handle_datagram(from(), bytes, now);
    if let Outcome::Reply(b) = &out {
        assert!(
            b.len() <= bytes.len(),
            "reply of {} to {}",
            b.len(),
            bytes.len()
        );
    }
    out
}

fn refused(out: Outcome) -> Reason {
    match out {
        Outcome::Refused(r) => r,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// Run one handshake: the initiator's due initiation, the responder's reply, back.
fn handshake(i: &mut Initiator, r: &mut Responder, now: Instant) {
    let init = i.poll_transmit(now).expect("an initiation is due");
    let Outcome::Reply(resp) = feed(r, &init, now) else {
        panic!("no reply to the initiation")
    };
    assert_eq!(i.handle_datagram(&resp, now).unwrap(), None);
    assert!(i.is_established());
}

fn opened(out: Outcome) -> (SessionId, SourceName, Vec<u8>) {
    match out {
        Outcome::Opened {
            session,
            name,
            plaintext,
        } => (session, name, plaintext),
        other => panic!("expected Opened, got {other:?}"),
    }
}

#[test]
fn handshake_and_transport_both_ways_with_measured_sizes() {
    let s = setup();
    let (mut i, mut r) = (s.initiator(), s.responder());
    let now = s.t0;
    assert!(i.seal(b"too early", now).is_none());
    let init = i.poll_transmit(now).unwrap();
    assert_eq!(init.len(), wire::INIT_LEN);
    assert_eq!(init.len(), 116);
    assert!(i.poll_transmit(now).is_none(), "sent once, not again yet");
    let Outcome::Reply(resp) = feed(&mut r, &init, now) else {
        panic!()
    };
    assert_eq!(resp.len(), wire::RESPONSE_LEN);
    assert_eq!(resp.len(), 64);
    assert_eq!(i.handle_datagram(&resp, now).unwrap(), None);
    assert!(i.is_established());
    assert_eq!(i.poll_timeout(), None, "nothing more to send");
    assert_eq!(r.handshakes().completed, 1);

    for len in [0usize, 1, 1400 + 32, 65_000 + 32] {
        let plain: Vec<u8> = (0..len).map(|x| x as u8).collect();
        let d = i.seal(&plain, now).unwrap();
        assert_eq!(d.len(), len + wire::TRANSPORT_OVERHEAD);
        assert_eq!(wire::TRANSPORT_OVERHEAD, 32);
        if len >= 16 {
            assert_ne!(&d[16..32], &plain[..16], "encrypted");
        }
        let (session, name, got) = opened(feed(&mut r, &d, now));
        assert_eq!(name.as_str(), "cam-1");
        assert_eq!(got, plain);
        let back = r.seal(session, b"ack").unwrap();
        assert_eq!(back.len(), 3 + 32);
        assert_eq!(i.handle_datagram(&back, now).unwrap().unwrap(), b"ack");
    }
    assert!(i.seal(&vec![0; wire::MAX_PLAINTEXT + 1], now).is_none());
}

#[test]
fn a_bit_flipped_anywhere_in_a_transport_datagram_is_refused() {
    let s = setup();
    let (mut i, mut r) = (s.initiator(), s.responder());
    handshake(&mut i, &mut r, s.t0);
    let d = i.seal(b"frame bytes", s.t0).unwrap();
    for bit in 0..d.len() * 8 {
        let mut bad = d.clone();
        bad[bit / 8] ^= 1 << (bit % 8);
        let reason = refused(feed(&mut r, &bad, s.t0));
        assert!(
            matches!(
                reason,
                Reason::Tampered | Reason::Malformed | Reason::UnknownSession | Reason::Replayed
            ),
            "bit {bit}: {reason:?}"
        );
    }
    // The genuine one still opens: the forgeries did not move the window.
    opened(feed(&mut r, &d, s.t0));
    // And the other way: a flipped reply from the hub is refused by the device.
    let session = SessionId(i.current.as_ref().unwrap().remote);
    let back = r.seal(session, b"ack").unwrap();
    for bit in 0..back.len() * 8 {
        let mut bad = back.clone();
        bad[bit / 8] ^= 1 << (bit % 8);
        assert!(i.handle_datagram(&bad, s.t0).is_err(), "bit {bit}");
    }
    assert_eq!(i.handle_datagram(&back, s.t0).unwrap().unwrap(), b"ack");
}

#[test]
fn a_byte_flipped_anywhere_in_an_initiation_gets_no_reply() {
    let s = setup();
    let mut r = s.responder();
    let mut i = s.initiator();
    let init = i.poll_transmit(s.t0).unwrap();
    for at in 0..init.len() {
        let mut bad = init.clone();
        bad[at] ^= 1 << (at % 8);
        let reason = refused(feed(&mut r, &bad, s.t0));
        assert!(
            matches!(reason, Reason::BadHandshake | Reason::Malformed),
            "byte {at}: {reason:?}"
        );
    }
    assert_eq!(r.handshakes().completed, 0);
    // The genuine one is still taken afterwards.
    assert!(matches!(feed(&mut r, &init, s.t0), Outcome::Reply(_)));
}

#[test]
fn a_byte_flipped_anywhere_in_a_response_is_refused() {
    let s = setup();
    let mut r = s.responder();
    // One handshake per flipped byte (a failed read may consume the handshake state).
    for at in 0..wire::RESPONSE_LEN {
        let mut i = s.initiator();
        let now = s.t0 + Duration::from_millis(at as u64);
        let init = i.poll_transmit(now).unwrap();
        let Outcome::Reply(resp) = feed(&mut r, &init, now) else {
            panic!()
        };
        let mut bad = resp.clone();
        bad[at] ^= 1 << (at % 8);
        let e = i.handle_datagram(&bad, now).unwrap_err();
        assert!(
            matches!(
                e,
                Reason::BadHandshake | Reason::Malformed | Reason::UnknownSession
            ),
            "byte {at}: {e:?}"
        );
        assert!(!i.is_established(), "byte {at}");
    }
}

#[test]
fn replayed_and_reordered_transport() {
    let s = setup();
    let (mut i, mut r) = (s.initiator(), s.responder());
    handshake(&mut i, &mut r, s.t0);
    let ds: Vec<Vec<u8>> = (0..100u8).map(|n| i.seal(&[n], s.t0).unwrap()).collect();
    // Reordered: odd ones first, then even ones backwards; each delivered once.
    let order: Vec<usize> = (0..100)
        .filter(|n| n % 2 == 1)
        .chain((0..100).filter(|n| n % 2 == 0).rev())
        .collect();
    for &n in &order {
        let (_, _, p) = opened(feed(&mut r, &ds[n], s.t0));
        assert_eq!(p, [n as u8]);
    }
    // Every one replayed: refused.
    for d in &ds {
        assert_eq!(refused(feed(&mut r, d, s.t0)), Reason::Replayed);
    }
    // Later, far older than the window: refused as too old even if never seen.
    let late = i.seal(b"late", s.t0).unwrap();
    for _ in 0..3000 {
        i.seal(b"x", s.t0).unwrap();
    }
    let newest = i.seal(b"newest", s.t0).unwrap();
    opened(feed(&mut r, &newest, s.t0));
    assert_eq!(refused(feed(&mut r, &late, s.t0)), Reason::Replayed);
}

#[test]
fn replayed_initiation_unknown_key_and_device_clock_behind_get_no_reply() {
    let s = setup();
    let mut r = s.responder();
    let mut i = s.initiator();
    let init = i.poll_transmit(s.t0).unwrap();
    assert!(matches!(feed(&mut r, &init, s.t0), Outcome::Reply(_)));
    let later = s.t0 + Duration::from_secs(5);
    assert_eq!(refused(feed(&mut r, &init, later)), Reason::ReplayedInit);

    let (stranger, _) = generate().unwrap();
    let mut x = Initiator::new(stranger, s.hub_public, s.t0);
    let init = x.poll_transmit(s.t0).unwrap();
    assert_eq!(refused(feed(&mut r, &init, s.t0)), Reason::UnknownKey);

    // The right device, but its clock went back an hour (no RTC): refused until its clock
    // passes the newest initiation taken (documented in the module).
    let behind = SystemTime::now() - Duration::from_secs(3600);
    let mut i2 = Initiator::with_wall_clock(
        s.dev_private.clone(),
        s.hub_public,
        Cipher::preferred(),
        s.t0,
        behind,
    );
    let init = i2.poll_transmit(s.t0).unwrap();
    assert_eq!(refused(feed(&mut r, &init, s.t0)), Reason::ReplayedInit);

    // A device that knows the wrong hub key: its initiation does not decrypt.
    let (_, wrong_hub) = generate().unwrap();
    let mut w = Initiator::new(s.dev_private.clone(), wrong_hub, s.t0);
    let init = w.poll_transmit(s.t0).unwrap();
    assert_eq!(refused(feed(&mut r, &init, s.t0)), Reason::BadHandshake);
    assert_eq!(r.handshakes().completed, 1);
    assert_eq!(r.handshakes().attempted, 5);
}

#[test]
fn revoked_key_ends_the_session_and_a_renamed_key_keeps_it() {
    let s = setup();
    let (mut i, mut r) = (s.initiator(), s.responder());
    handshake(&mut i, &mut r, s.t0);
    let d = i.seal(b"1", s.t0).unwrap();
    opened(feed(&mut r, &d, s.t0));

    r.set_keys(authorized(&[(s.dev_public, "cam-renamed")]));
    let d = i.seal(b"2", s.t0).unwrap();
    let (_, name, _) = opened(feed(&mut r, &d, s.t0));
    assert_eq!(name.as_str(), "cam-renamed");

    let (_, other) = generate().unwrap();
    r.set_keys(authorized(&[(other, "someone-else")]));
    assert_eq!(r.session_count(), 0);
    let d = i.seal(b"3", s.t0).unwrap();
    assert_eq!(refused(feed(&mut r, &d, s.t0)), Reason::UnknownSession);
    // And it cannot come back by handshaking.
    let later = s.t0 + REHANDSHAKE_AFTER;
    i.seal(b"4", later).unwrap();
    let init = i.poll_transmit(later).expect("a rehandshake after silence");
    assert_eq!(refused(feed(&mut r, &init, later)), Reason::UnknownKey);
}

#[test]
fn after_a_hub_restart_the_device_rehandshakes_by_itself_within_2_s() {
    let s = setup();
    let (mut i, mut r) = (s.initiator(), s.responder());
    handshake(&mut i, &mut r, s.t0);
    // Frames every 50 ms, each acked: no rehandshake while the hub answers.
    let step = Duration::from_millis(50);
    let mut now = s.t0;
    for _ in 0..60 {
        now += step;
        let d = i.seal(b"frame", now).unwrap();
        let (session, _, _) = opened(feed(&mut r, &d, now));
        let ack = r.seal(session, b"ack").unwrap();
        i.handle_datagram(&ack, now).unwrap();
        assert!(i.poll_transmit(now).is_none());
    }
    assert_eq!(i.handshakes_started(), 1);

    // The hub restarts: a new Responder with the same keys and nothing else.
    let mut r = s.responder();
    let restart = now;
    let mut delivered_at = None;
    for _ in 0..100 {
        now += step;
        if let Some(d) = i.seal(b"frame", now) {
            match feed(&mut r, &d, now) {
                Outcome::Opened { session, .. } => {
                    delivered_at = Some(now);
                    let ack = r.seal(session, b"ack").unwrap();
                    i.handle_datagram(&ack, now).unwrap();
                    break;
                }
                Outcome::Refused(Reason::UnknownSession) => {}
                other => panic!("{other:?}"),
            }
        }
        while let Some(init) = i.poll_transmit(now) {
            if let Outcome::Reply(resp) = feed(&mut r, &init, now) {
                i.handle_datagram(&resp, now).unwrap();
            }
        }
    }
    let took = delivered_at.expect("frames resumed") - restart;
    assert!(took < Duration::from_secs(2), "resumed after {took:?}");
    assert!(
        took >= REHANDSHAKE_AFTER,
        "not before the silence was noticed"
    );
    assert_eq!(i.handshakes_started(), 2);
}

#[test]
fn an_unanswered_initiation_is_resent_fresh_with_backoff() {
    let s = setup();
    let mut r = s.responder();
    let mut i = s.initiator();
    let mut now = s.t0;
    let first = i.poll_transmit(now).unwrap();
    // The hub answers the first, but its response is lost.
    assert!(matches!(feed(&mut r, &first, now), Outcome::Reply(_)));
    let mut waits = vec![];
    let mut last = first.clone();
    for _ in 0..5 {
        let due = i.poll_timeout().unwrap();
        assert!(i.poll_transmit(due - Duration::from_millis(1)).is_none());
        waits.push(due - now);
        now = due;
        let again = i.poll_transmit(now).unwrap();
        assert_ne!(again, last, "a fresh initiation, not the same bytes");
        last = again;
    }
    let ms: Vec<u128> = waits.iter().map(|d| d.as_millis()).collect();
    assert_eq!(ms, [250, 500, 1000, 2000, 2000]);
    // The latest one is taken (newer timestamp) and completes the handshake.
    let Outcome::Reply(resp) = feed(&mut r, &last, now) else {
        panic!()
    };
    i.handle_datagram(&resp, now).unwrap();
    assert!(i.is_established());
    assert_eq!(i.poll_timeout(), None);
}

#[test]
fn a_new_handshake_replaces_the_session_and_the_old_one_overlaps() {
    let s = setup();
    let (mut i, mut r) = (s.initiator(), s.responder());
    handshake(&mut i, &mut r, s.t0);
    let in_flight = i.seal(b"old session", s.t0).unwrap();
    let in_flight2 = i.seal(b"old session 2", s.t0).unwrap();
    // A second device run with the same key (or a rehandshake) replaces the session.
    let t1 = s.t0 + Duration::from_millis(10);
    let mut i2 = Initiator::new(s.dev_private.clone(), s.hub_public, t1);
    handshake(&mut i2, &mut r, t1);
    assert_eq!(r.session_count(), 2);
    let (_, _, p) = opened(feed(&mut r, &in_flight, t1));
    assert_eq!(p, b"old session");
    let d = i2.seal(b"new session", t1).unwrap();
    opened(feed(&mut r, &d, t1));
    // Past the overlap the old session is gone.
    let late = t1 + OVERLAP + Duration::from_millis(1);
    assert_eq!(
        refused(feed(&mut r, &in_flight2, late)),
        Reason::UnknownSession
    );
    assert_eq!(r.session_count(), 1);
    // A third handshake drops the oldest at once: one current and one previous per key.
    let t2 = late + Duration::from_millis(1);
    let mut i3 = Initiator::new(s.dev_private.clone(), s.hub_public, t2);
    handshake(&mut i3, &mut r, t2);
    let t3 = t2 + Duration::from_millis(1);
    let mut i4 = Initiator::new(s.dev_private.clone(), s.hub_public, t3);
    handshake(&mut i4, &mut r, t3);
    assert_eq!(r.session_count(), 2);
}

#[test]
fn counter_exhaustion_starts_a_rehandshake() {
    let s = setup();
    let (mut i, mut r) = (s.initiator(), s.responder());
    handshake(&mut i, &mut r, s.t0);
    i.set_send_counter(REKEY_AFTER_MESSAGES - 1);
    let d = i.seal(b"last before rekey", s.t0).unwrap();
    opened(feed(&mut r, &d, s.t0));
    let init = i.poll_transmit(s.t0).expect("rehandshake at exhaustion");
    assert_eq!(i.handshakes_started(), 2);
    let Outcome::Reply(resp) = feed(&mut r, &init, s.t0) else {
        panic!()
    };
    i.handle_datagram(&resp, s.t0).unwrap();
    let d = i.seal(b"fresh", s.t0).unwrap();
    assert_eq!(&d[8..16], &0u64.to_le_bytes(), "new session, counter 0");
    opened(feed(&mut r, &d, s.t0));
    // Past the very last counter the old session would seal nothing.
    i.set_send_counter(MAX_COUNTER + 1);
    assert!(i.seal(b"x", s.t0).is_none());
}

#[test]
fn the_hub_refuses_a_response_and_the_device_an_initiation() {
    let s = setup();
    let (mut i, mut r) = (s.initiator(), s.responder());
    let init = i.poll_transmit(s.t0).unwrap();
    let Outcome::Reply(resp) = feed(&mut r, &init, s.t0) else {
        panic!()
    };
    assert_eq!(refused(feed(&mut r, &resp, s.t0)), Reason::Unexpected);
    assert_eq!(i.handle_datagram(&init, s.t0), Err(Reason::Unexpected));
    assert_eq!(refused(feed(&mut r, b"hello", s.t0)), Reason::Malformed);
    assert_eq!(refused(feed(&mut r, b"", s.t0)), Reason::Malformed);
}

#[test]
fn sessions_are_bounded_replaced_ones_go_first_then_the_oldest() {
    let (hub_private, hub_public) = generate().unwrap();
    let devices: Vec<(PrivateKey, PublicKey)> = (0..4).map(|_| generate().unwrap()).collect();
    let names = ["d0", "d1", "d2", "d3"];
    let entries: Vec<(PublicKey, &str)> = devices
        .iter()
        .zip(names)
        .map(|((_, p), n)| (*p, n))
        .collect();
    let mut r = Responder::with_max_sessions(hub_private, authorized(&entries), 3);
    let t0 = Instant::now();
    let mut inits: Vec<Initiator> = vec![];
    for (n, (k, _)) in devices.iter().take(2).enumerate() {
        let now = t0 + Duration::from_millis(n as u64);
        let mut i = Initiator::new(k.clone(), hub_public, now);
        handshake(&mut i, &mut r, now);
        inits.push(i);
    }
    // d0 again: its old session becomes the replaced one (3 sessions now).
    let now = t0 + Duration::from_millis(10);
    let mut d0b = Initiator::new(devices[0].0.clone(), hub_public, now);
    handshake(&mut d0b, &mut r, now);
    assert_eq!(r.session_count(), 3);
    // d2: over the bound, the replaced d0 session goes first.
    let now = t0 + Duration::from_millis(20);
    let mut d2 = Initiator::new(devices[2].0.clone(), hub_public, now);
    handshake(&mut d2, &mut r, now);
    assert_eq!(r.session_count(), 3);
    let old_d0 = inits[0].seal(b"x", now).unwrap();
    assert_eq!(refused(feed(&mut r, &old_d0, now)), Reason::UnknownSession);
    // d3: no replaced session left, the oldest (d1) goes.
    let now = t0 + Duration::from_millis(30);
    let mut d3 = Initiator::new(devices[3].0.clone(), hub_public, now);
    handshake(&mut d3, &mut r, now);
    assert_eq!(r.session_count(), 3);
    let d1 = inits[1].seal(b"x", now).unwrap();
    assert_eq!(refused(feed(&mut r, &d1, now)), Reason::UnknownSession);
    for i in [&mut d0b, &mut d2, &mut d3] {
        let d = i.seal(b"still here", now).unwrap();
        opened(feed(&mut r, &d, now));
    }
}

#[test]
fn state_machines_can_move_to_another_thread() {
    fn is_send<T: Send>() {}
    is_send::<Initiator>();
    is_send::<Responder>();
}

/// Not a test: the cost of sealing and opening, for the benchmark budget. Run with
/// `cargo test --release --no-default-features --lib seal_open_rate -- --ignored --nocapture`.
#[test]
#[ignore]
fn seal_open_rate() {
    let s = setup();
    let mut r = s.responder();
    let t = Instant::now();
    let n_hs = 200;
    for k in 0..n_hs {
        let now = s.t0 + Duration::from_millis(k);
        let mut x = Initiator::new(s.dev_private.clone(), s.hub_public, now);
        handshake(&mut x, &mut r, now);
    }
    let per_hs = t.elapsed() / n_hs as u32;
    let now = s.t0 + Duration::from_secs(1);
    let mut i = Initiator::new(s.dev_private.clone(), s.hub_public, now);
    handshake(&mut i, &mut r, now);
    for size in [1432usize, 65_032] {
        let plain = vec![0x5a; size];
        let n = (200_000_000 / size).max(1000);
        let t = Instant::now();
        let mut ds = Vec::with_capacity(1000);
        let mut opened_bytes = 0usize;
        for k in 0..n {
            ds.push(i.seal(&plain, now).unwrap());
            if ds.len() == 1000 || k == n - 1 {
                for d in ds.drain(..) {
                    if let Outcome::Opened { plaintext, .. } = r.handle_datagram(from(), &d, now) {
                        opened_bytes += plaintext.len();
                    }
                }
            }
        }
        let el = t.elapsed();
        assert_eq!(opened_bytes, n * size);
        println!(
            "seal+open {size} B: {:.2} us per datagram, {:.0} MB/s",
            el.as_secs_f64() * 1e6 / n as f64,
            (n * size) as f64 / el.as_secs_f64() / 1e6
        );
    }
    println!("handshake (both sides): {per_hs:?}");
    // snow's cipher alone (ChaCha20-Poly1305 of its default resolver), for comparison.
    use snow::resolvers::{CryptoResolver, DefaultResolver};
    let mut c = DefaultResolver
        .resolve_cipher(&snow::params::CipherChoice::ChaChaPoly)
        .unwrap();
    c.set(&[3; 32]);
    for size in [1432usize, 65_032] {
        let plain = vec![0x5a; size];
        let mut out = vec![0u8; size + 16];
        let n = (200_000_000 / size).max(1000);
        let t = Instant::now();
        for k in 0..n {
            c.encrypt(k as u64, &[], &plain, &mut out);
        }
        let el = t.elapsed();
        println!(
            "snow cipher encrypt only {size} B: {:.2} us, {:.0} MB/s",
            el.as_secs_f64() * 1e6 / n as f64,
            (n * size) as f64 / el.as_secs_f64() / 1e6
        );
    }
}

#[test]
fn a_forged_response_does_not_spoil_the_handshake() {
    let s = setup();
    let (mut i, mut r) = (s.initiator(), s.responder());
    let init = i.poll_transmit(s.t0).unwrap();
    let Outcome::Reply(resp) = feed(&mut r, &init, s.t0) else {
        panic!()
    };
    // An injector that read the initiation's index off the air answers first with garbage
    // (snow restores its handshake state after a failed read).
    let sender = u32::from_le_bytes(init[4..8].try_into().unwrap());
    let forged = wire::emit_response(1234, sender, &[0x42; wire::RESPONSE_NOISE_LEN]);
    assert_eq!(i.handle_datagram(&forged, s.t0), Err(Reason::BadHandshake));
    assert!(!i.is_established());
    assert_eq!(i.handle_datagram(&resp, s.t0).unwrap(), None);
    assert!(i.is_established());
}

#[test]
fn sessions_rekey_after_two_minutes_and_are_refused_after_three() {
    let s = setup();
    let (mut i, mut r) = (s.initiator(), s.responder());
    handshake(&mut i, &mut r, s.t0);
    let mut now = s.t0;
    while now + Duration::from_secs(10) < s.t0 + REKEY_AFTER_TIME {
        now += Duration::from_secs(10);
        let d = i.seal(b"frame", now).unwrap();
        let (session, _, _) = opened(feed(&mut r, &d, now));
        i.handle_datagram(&r.seal(session, b"ack").unwrap(), now)
            .unwrap();
        assert!(i.poll_transmit(now).is_none(), "no rekey before 120 s");
    }
    now = s.t0 + REKEY_AFTER_TIME;
    let d = i.seal(b"old session still", now).unwrap();
    opened(feed(&mut r, &d, now));
    let init = i.poll_transmit(now).expect("rekey at 120 s");
    let Outcome::Reply(resp) = feed(&mut r, &init, now) else {
        panic!()
    };
    i.handle_datagram(&resp, now).unwrap();
    let d = i.seal(b"new session", now).unwrap();
    assert_eq!(&d[8..16], &0u64.to_le_bytes());
    opened(feed(&mut r, &d, now));
    assert_eq!(i.handshakes_started(), 2);

    // A device that did not rekey: at 180 s neither side uses the session.
    let (mut i, mut r) = (s.initiator(), s.responder());
    handshake(&mut i, &mut r, s.t0);
    let d = i.seal(b"x", s.t0).unwrap();
    let late = s.t0 + REJECT_AFTER_TIME;
    assert_eq!(refused(feed(&mut r, &d, late)), Reason::UnknownSession);
    assert_eq!(r.session_count(), 0);
    assert!(i.seal(b"y", late).is_none());
    assert!(!i.is_established());
    assert!(i.poll_transmit(late).is_some(), "a new handshake is due");
}

#[test]
fn either_cipher_makes_a_session_and_a_changed_kind_fails_the_handshake() {
    let s = setup();
    for cipher in Cipher::ALL {
        let mut r = s.responder();
        let mut i = Initiator::with_cipher(s.dev_private.clone(), s.hub_public, cipher, s.t0);
        assert_eq!(i.cipher(), cipher);
        let init = i.poll_transmit(s.t0).unwrap();

        // The other cipher's kind on the same bytes: the prologue and the protocol name
        // differ, so nobody in between can choose the device's cipher.
        let mut swapped = init.clone();
        swapped[3] = wire::init_kind(Cipher::ALL.into_iter().find(|&c| c != cipher).unwrap());
        assert_eq!(refused(feed(&mut r, &swapped, s.t0)), Reason::BadHandshake);

        let Outcome::Reply(resp) = feed(&mut r, &init, s.t0) else {
            panic!("{cipher}: no reply")
        };
        i.handle_datagram(&resp, s.t0).unwrap();
        let sealed = i.seal(b"frame bytes", s.t0).unwrap();
        assert_eq!(
            sealed.len(),
            b"frame bytes".len() + wire::TRANSPORT_OVERHEAD
        );
        let Outcome::Opened {
            session, plaintext, ..
        } = feed(&mut r, &sealed, s.t0)
        else {
            panic!("{cipher}: not opened")
        };
        assert_eq!(plaintext, b"frame bytes");
        let ack = r.seal(session, b"ack").unwrap();
        assert_eq!(i.handle_datagram(&ack, s.t0).unwrap().unwrap(), b"ack");
    }
}
