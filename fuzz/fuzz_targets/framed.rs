//! `udphub::wire::framed::parse` on arbitrary bytes: it must not panic, and a data
//! datagram it accepts must re-emit to the same bytes (its name, if any, is a valid
//! `SourceName`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use udphub::wire::framed::{self, Packet};
use udphub::wire::name::SourceName;

fuzz_target!(|data: &[u8]| {
    if let Ok(Packet::Data {
        header,
        name,
        payload,
    }) = framed::parse(data)
    {
        let name = name.map(|n| SourceName::parse(n).expect("parse checked the name"));
        let mut out = Vec::new();
        framed::emit_named_data(&mut out, &header, name.as_ref(), payload);
        // Unknown flag bits are ignored on parse, so compare all but the flags.
        assert_eq!(out.len(), data.len());
        assert_eq!(out[..6], data[..6]);
        assert_eq!(out[8..], data[8..]);
    }
});
