//! The hub's startup errors: why [`super::start`] could not bring the hub up.
//!
//! Typed so a caller can tell a bad setting ([`ConfigError`]) from a port that is taken
//! ([`HubError::Bind`], naming the service, the protocol and the address) from a file or
//! folder that cannot be used, and still reach the underlying [`std::io::Error`] through
//! [`std::error::Error::source`]. The `Display` of each is the one line `hub` prints after
//! `hub: ` before it exits non-zero.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Why the hub could not start.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// The settings do not fit together.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A service's socket cannot be bound (port in use, address not local, no permission).
    #[error("{service}: cannot bind {transport} {addr}: {source}")]
    Bind {
        /// "img", "msg", "tcp" or "http".
        service: &'static str,
        /// "udp" or "tcp".
        transport: &'static str,
        addr: SocketAddr,
        source: io::Error,
    },
    /// A bound socket's own address cannot be read back.
    #[error("{service}: cannot read the bound address: {source}")]
    LocalAddr {
        service: &'static str,
        source: io::Error,
    },
    /// `--msg-log` cannot be opened for appending.
    #[error("--msg-log {}: {source}", path.display())]
    MsgLog { path: PathBuf, source: io::Error },
    /// `--frame-log` cannot be opened for appending.
    #[error("--frame-log {}: {source}", path.display())]
    FrameLog { path: PathBuf, source: io::Error },
    /// `--save-dir` cannot be created or written.
    #[error("--save-dir {}: {source}", path.display())]
    SaveDir { path: PathBuf, source: io::Error },
    /// `--key` cannot be read or is not a private key.
    #[error("--key: {0}")]
    Key(#[from] crate::secure::keys::KeyError),
    /// `--authorized-keys` cannot be read or has a bad line.
    #[error("--authorized-keys: {0}")]
    AuthorizedKeys(#[from] crate::secure::authorized::LoadError),
    /// A thread of the hub cannot be started.
    #[error("cannot start the {thread} thread: {source}")]
    Spawn {
        thread: &'static str,
        source: io::Error,
    },
}

/// A hub setting that is out of range, or two that do not go together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("every service is turned off; nothing to do")]
    NoService,
    #[error("--max-frame-bytes must be positive")]
    MaxFrameBytes,
    #[error("--max-partial-bytes ({partial}) must be at least --max-frame-bytes ({frame})")]
    PartialBelowFrame { partial: usize, frame: u64 },
    #[error("--frame-timeout-ms must be positive")]
    FrameTimeout,
    #[error("--save-every must be at least 1")]
    SaveEvery,
    #[error("--msg-log-max-bytes must be at least {0} (one largest message)")]
    MsgLogMaxBytes(u64),
    #[error("--frame-log-max-bytes must be at least {0}")]
    FrameLogMaxBytes(u64),
    #[error("--msg-budget-bytes-per-s must be positive")]
    MsgBudget,
    #[error("--save-max-bytes must be positive")]
    SaveMaxBytes,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::{start, HubConfig};
    use crate::shutdown::Shutdown;
    use std::time::Duration;

    #[test]
    fn each_bad_setting_has_its_own_error() {
        let only_img = HubConfig {
            img_port: Some(0),
            msg_port: None,
            tcp_port: None,
            ..HubConfig::default()
        };
        assert_eq!(only_img.validate(), Ok(()));
        let cases: [(HubConfig, ConfigError, &str); 5] = [
            (
                HubConfig {
                    img_port: None,
                    ..only_img.clone()
                },
                ConfigError::NoService,
                "nothing to do",
            ),
            (
                HubConfig {
                    max_frame_bytes: 0,
                    ..only_img.clone()
                },
                ConfigError::MaxFrameBytes,
                "--max-frame-bytes",
            ),
            (
                HubConfig {
                    max_frame_bytes: 10,
                    max_partial_bytes: 9,
                    ..only_img.clone()
                },
                ConfigError::PartialBelowFrame {
                    partial: 9,
                    frame: 10,
                },
                "--max-partial-bytes (9) must be at least --max-frame-bytes (10)",
            ),
            (
                HubConfig {
                    frame_timeout: Duration::ZERO,
                    ..only_img.clone()
                },
                ConfigError::FrameTimeout,
                "--frame-timeout-ms",
            ),
            (
                HubConfig {
                    save_every: 0,
                    ..only_img.clone()
                },
                ConfigError::SaveEvery,
                "--save-every",
            ),
        ];
        for (config, want, text) in cases {
            let err = config.validate().unwrap_err();
            assert_eq!(err, want);
            assert!(err.to_string().contains(text), "{err}");
        }
    }

    #[test]
    fn a_taken_port_names_the_service_and_the_address() {
        let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let config = HubConfig {
            img_port: None,
            msg_port: Some(addr.port()),
            tcp_port: None,
            ..HubConfig::default()
        };
        let shutdown = Shutdown::new();
        let err = match start(&config, shutdown.clone()) {
            Ok(running) => {
                shutdown.trigger();
                running.wait();
                panic!("the hub bound {addr}, which is taken");
            }
            Err(e) => e,
        };
        let HubError::Bind {
            service,
            transport,
            addr: failed,
            ref source,
        } = err
        else {
            panic!("not a bind error: {err:?}");
        };
        assert_eq!((service, transport, failed), ("msg", "udp", addr));
        assert_eq!(source.kind(), io::ErrorKind::AddrInUse);
        assert_eq!(
            err.to_string(),
            format!("msg: cannot bind udp {addr}: {source}")
        );
        assert!(std::error::Error::source(&err).is_some());
    }
}
