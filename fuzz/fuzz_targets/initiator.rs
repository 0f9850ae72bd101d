//! `udphub::secure::session::Initiator::handle_datagram`: what a device parses from the
//! network before anything is authenticated. The input is split at every `b"\xff\xfe"` into
//! datagrams fed to one initiator (fixed keys) between `seal` and `poll_transmit` calls. It
//! must not panic, never establish a session or open a datagram (nobody here has the hub's
//! private key), and only ever transmit initiations.
#![no_main]

use std::time::{Duration, Instant, SystemTime};

use libfuzzer_sys::fuzz_target;
use udphub::secure::cipher::Cipher;
use udphub::secure::keys::PrivateKey;
use udphub::secure::session::Initiator;
use udphub::secure::wire;

fuzz_target!(|data: &[u8]| {
    let hub = PrivateKey::from_bytes([7; 32]).public_key();
    let device = PrivateKey::from_bytes([9; 32]);
    let t0 = Instant::now();
    let mut i = Initiator::with_wall_clock(device, hub, Cipher::preferred(), t0, SystemTime::UNIX_EPOCH);
    let mut rest = data;
    for n in 0u64.. {
        let now = t0 + Duration::from_millis(n);
        if let Some(d) = i.poll_transmit(now) {
            assert_eq!(d.len(), wire::INIT_LEN);
        }
        let (datagram, more) = match rest.windows(2).position(|w| w == b"\xff\xfe") {
            Some(at) => (&rest[..at], Some(&rest[at + 2..])),
            None => (rest, None),
        };
        assert!(matches!(i.handle_datagram(datagram, now), Err(_)));
        assert!(!i.is_established());
        assert!(i.seal(datagram, now).is_none());
        match more {
            Some(m) => rest = m,
            None => break,
        }
    }
});
