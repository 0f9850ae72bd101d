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
        captured,
        payload,
    }) = framed::parse(data)
    {
        let name = name.map(|n| SourceName::parse(n).expect("parse checked the name"));
        let mut out = framed::data_header(&header, name.as_ref(), captured.as_ref()).to_vec();
        out.extend_from_slice(payload);
        // Unknown flag bits are ignored on parse, so compare all but the flags; the
        // capture extension's 3 bytes of padding are ignored too (emitted as zeros).
        assert_eq!(out.len(), data.len());
        assert_eq!(out[..6], data[..6]);
        let mut expected = data.to_vec();
        if captured.is_some() {
            let pad = out.len() - payload.len() - 3;
            expected[pad..pad + 3].fill(0);
        }
        assert_eq!(out[8..], expected[8..]);
    }
});
