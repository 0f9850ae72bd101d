//! Who sent something: the hub's services ([`Service`]) and one sender on one of them
//! ([`SourceId`]), the key that statistics, saved file names, the display and the HTTP view
//! all share.
//!
//! A source is one UDP address on the image or message port, or one TCP connection (a new
//! connection from the same address is a new source).

use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::SocketAddr;

/// The hub's services.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Service {
    /// UDP image port.
    Img,
    /// UDP message port.
    Msg,
    /// TCP stream port.
    Tcp,
}

impl Service {
    pub fn name(self) -> &'static str {
        match self {
            Service::Img => "img",
            Service::Msg => "msg",
            Service::Tcp => "tcp",
        }
    }

    /// The transport, as used in saved file names: `udp` or `tcp`.
    pub fn transport(self) -> &'static str {
        match self {
            Service::Img | Service::Msg => "udp",
            Service::Tcp => "tcp",
        }
    }

    /// The service in the exit summary's headings, e.g. `images (udp)`.
    pub(super) fn title(self) -> &'static str {
        match self {
            Service::Img => "images (udp)",
            Service::Msg => "messages (udp)",
            Service::Tcp => "images (tcp)",
        }
    }

    /// What the service counts: `frames` or `messages`.
    pub(super) fn item(self) -> &'static str {
        match self {
            Service::Msg => "messages",
            _ => "frames",
        }
    }
}

/// One sender on one service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourceId {
    pub service: Service,
    pub addr: SocketAddr,
}

impl SourceId {
    /// The source as a name that is safe in file names and URLs:
    /// `{transport}-{ip}-{port}`, e.g. `udp-127.0.0.1-50000` (an IPv6 address's `:` become
    /// `_`). Saved frames are named after it and the HTTP view uses it in its paths.
    pub fn slug(&self) -> String {
        let ip = self.addr.ip().to_string().replace(':', "_");
        format!("{}-{}-{}", self.service.transport(), ip, self.addr.port())
    }
}

impl fmt::Display for SourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.service.transport(), self.addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slug_is_safe_in_urls_and_file_names() {
        let id = SourceId {
            service: Service::Img,
            addr: SocketAddr::from(([127, 0, 0, 1], 50000)),
        };
        assert_eq!(id.slug(), "udp-127.0.0.1-50000");
        let id = SourceId {
            service: Service::Tcp,
            addr: "[::1]:9".parse().unwrap(),
        };
        assert_eq!(id.slug(), "tcp-__1-9");
    }
}
