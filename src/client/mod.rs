//! The clients: `img-client` (camera side, e.g. a Raspberry Pi, streaming JPEG frames) and
//! `msg-client` (telemetry, one JSON value per datagram).
//!
//! The binaries in `clients/` only parse flags; everything they do lives here so it can be
//! tested and reused:
//! - [`img`]: the camera client's run loop: capture+encode on one thread, network send on
//!   another (they overlap), joined by a [`handoff`] slot; status lines and the summary.
//! - [`img_sender`]: the [`img_sender::ImgSender`] trait and one sender per transport (seed
//!   chunked and single-datagram UDP in one, framed UDP, seed TCP stream), all speaking the
//!   formats of [`crate::wire`].
//! - [`msg`] and [`msg_sender`]: the telemetry client's run loop and its request/reply step.
//! - [`udp_link`]: the UDP socket both clients use to talk to the hub and wait for replies
//!   (bounded waits, late replies drained, foreign datagrams ignored).
//! - [`stats`]: counters, RTT/encode-time samples with percentiles, status and summary text.
//! - [`error`]: [`ClientError`], why a run could not start or what ended it.
//!
//! Every wait in here is bounded: a client never blocks forever on a hub that is gone.

#[cfg(feature = "cli")]
pub mod cli_args;
pub mod error;
pub mod handoff;
pub mod img;
pub mod img_sender;
pub mod mjpeg;
pub mod msg;
pub mod msg_sender;
pub mod stats;
pub mod udp_link;

use std::net::{SocketAddr, ToSocketAddrs};

pub use error::{ClientError, ImgConfigError};

/// Resolve `HOST:PORT` (a name or an address) to one socket address, preferring IPv4 (the
/// seed scripts and most small-device networks are IPv4-only).
pub fn resolve_hub(hub: &str) -> Result<SocketAddr, ClientError> {
    let addrs: Vec<SocketAddr> = hub
        .to_socket_addrs()
        .map_err(|source| ClientError::Resolve {
            hub: hub.to_owned(),
            source,
        })?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
        .ok_or_else(|| ClientError::NoAddress {
            hub: hub.to_owned(),
        })
}

/// A random 32-bit id for one run of a sender (a framed image stream, a framed message
/// run): the hub tells a restarted sender from the old one by it. Not secret.
pub(crate) fn random_run_id() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    h.write_u32(std::process::id());
    h.finish() as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_addresses_and_names() {
        assert_eq!(
            resolve_hub("127.0.0.1:9999").unwrap(),
            "127.0.0.1:9999".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(resolve_hub("localhost:6666").unwrap().port(), 6666);
        let err = resolve_hub("no-port-here").unwrap_err();
        assert!(matches!(err, ClientError::Resolve { .. }), "{err:?}");
        assert!(err.to_string().contains("HOST:PORT"), "{err}");
    }
}
