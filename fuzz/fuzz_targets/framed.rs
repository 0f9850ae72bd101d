//! `udphub::wire::framed::parse` on arbitrary bytes: it must not panic, and a data
//! datagram it accepts must re-emit to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use udphub::wire::framed::{self, Packet};

fuzz_target!(|data: &[u8]| {
    if let Ok(Packet::Data(h, payload)) = framed::parse(data) {
        let mut out = Vec::new();
        framed::emit_data(&mut out, &h, payload);
        // Unknown flag bits are ignored on parse, so compare all but the flags.
        assert_eq!(out.len(), data.len());
        assert_eq!(out[..6], data[..6]);
        assert_eq!(out[8..], data[8..]);
    }
});
