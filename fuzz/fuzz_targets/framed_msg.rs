//! `udphub::wire::framed_msg::parse_message` and `parse_reply` on arbitrary bytes: no panic;
//! a message it accepts has a name `SourceName` accepts too, and re-emits to the same bytes
//! (but the two reserved bytes, which parse ignores).
#![no_main]

use libfuzzer_sys::fuzz_target;
use udphub::wire::framed_msg;
use udphub::wire::name::SourceName;

fuzz_target!(|data: &[u8]| {
    let _ = framed_msg::parse_reply(data);
    if let Ok(m) = framed_msg::parse_message(data) {
        let name = SourceName::parse(m.name).expect("parse_message checked the name");
        let out = framed_msg::emit_message(m.run, m.seq, &name, m.json);
        assert_eq!(out.len(), data.len());
        assert_eq!(out[..6], data[..6]);
        assert_eq!(out[8..], data[8..]);
    }
});
