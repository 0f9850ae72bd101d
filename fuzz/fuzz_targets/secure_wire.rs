//! `udphub::secure::wire::parse` on arbitrary bytes: it must not panic, and whatever it
//! accepts must re-emit to exactly the same bytes (no field is silently dropped).
#![no_main]

use libfuzzer_sys::fuzz_target;
use udphub::secure::wire::{self, Packet};

fuzz_target!(|data: &[u8]| {
    let Ok(p) = wire::parse(data) else { return };
    let out = match p {
        Packet::Init {
            sender,
            cipher,
            noise,
        } => wire::emit_init(sender, cipher, noise),
        Packet::Response {
            sender,
            receiver,
            noise,
        } => wire::emit_response(sender, receiver, noise),
        Packet::Transport {
            receiver,
            counter,
            ciphertext,
        } => {
            let mut v = wire::transport_header(receiver, counter).to_vec();
            v.extend_from_slice(ciphertext);
            v
        }
    };
    assert_eq!(out, data);
});
