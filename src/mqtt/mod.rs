//! `hub --mqtt URL`: the hub feeds an MQTT broker (Mosquitto, EMQX, HiveMQ), so that any
//! number of hubs and consumers meet there: telemetry, frame events, a retained picture
//! per source, each source's state and each hub's status. See [`publisher`] for the topics
//! and payloads (the rules, socket-free) and [`bridge`] for the threads that send them.
//!
//! The broker is never on the receive path: the bridge reads the hub's taps (the newest
//! frame per source, a bounded queue of messages; [`crate::api::Hub`]) on threads of its
//! own, and hands publications to the MQTT client without waiting; what the client cannot
//! take (the broker slow or down, its queue full) is dropped and counted. A broker that is
//! not there at start is not an error: the bridge says so and retries with a backoff.
//!
//! The client is `rumqttc` (MQTT 5, for the telemetry envelope in user properties): its
//! blocking `Client` runs its own small runtime internally and keeps this crate's code on
//! std threads.

#[cfg(feature = "mqtt")]
pub mod bridge;
pub mod publisher;

use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

/// What the MQTT bridge did, shared (lock-free) with whoever reports it: the hub's `/state`,
/// `/metrics` and exit summary.
#[derive(Debug, Default)]
pub struct MqttCounters {
    /// Publications the connection sent to the broker.
    pub sent: AtomicU64,
    /// Publications dropped because the client's queue was full (the broker slow or down).
    pub dropped: AtomicU64,
    /// Of those, telemetry messages (QoS 1).
    pub dropped_telemetry: AtomicU64,
    /// Connections made (the first one included).
    pub connections: AtomicU64,
    /// Whether a connection is up now.
    pub connected: AtomicBool,
}

impl MqttCounters {
    /// The counters now, for `broker` (shown without its password).
    pub fn state(&self, broker: &str) -> MqttState {
        MqttState {
            broker: broker.to_string(),
            connected: self.connected.load(Relaxed),
            sent: self.sent.load(Relaxed),
            dropped: self.dropped.load(Relaxed),
            dropped_telemetry: self.dropped_telemetry.load(Relaxed),
            connections: self.connections.load(Relaxed),
        }
    }
}

/// [`MqttCounters`] at one moment, as `/state` and the exit summary show them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MqttState {
    pub broker: String,
    pub connected: bool,
    pub sent: u64,
    pub dropped: u64,
    pub dropped_telemetry: u64,
    pub connections: u64,
}

impl MqttState {
    /// `mqtt mqtt://host:1883: 120 publications sent, 3 dropped (1 of them telemetry) …`.
    pub fn line(&self) -> String {
        format!(
            "mqtt {}: {} publications sent, {} dropped ({} of them telemetry) while the \
             broker was slow or away, {} connections",
            self.broker, self.sent, self.dropped, self.dropped_telemetry, self.connections
        )
    }
}

/// Where the broker is, from `mqtt://[user[:password]@]host[:port]` (port 1883 by default).
#[derive(Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    pub host: String,
    pub port: u16,
    pub user: Option<String>,
    pub password: Option<String>,
}

impl fmt::Debug for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BrokerUrl")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .finish()
    }
}

impl fmt::Display for BrokerUrl {
    /// `mqtt://host:port` (never the password).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.user {
            Some(u) => write!(f, "mqtt://{u}@{}:{}", self.host, self.port),
            None => write!(f, "mqtt://{}:{}", self.host, self.port),
        }
    }
}

/// Why a broker URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BrokerUrlError {
    #[error("{0:?}: a broker URL is mqtt://[user[:password]@]host[:port]")]
    Form(String),
    #[error("{0:?}: mqtts:// (TLS) is not supported yet; use mqtt:// on a trusted network or a local broker bridge")]
    Tls(String),
    #[error("{0:?}: the port must be a number from 1 to 65535")]
    Port(String),
}

impl BrokerUrl {
    pub fn parse(url: &str) -> Result<BrokerUrl, BrokerUrlError> {
        if url.starts_with("mqtts://") {
            return Err(BrokerUrlError::Tls(url.into()));
        }
        let rest = url
            .strip_prefix("mqtt://")
            .ok_or_else(|| BrokerUrlError::Form(url.into()))?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let (login, hostport) = match rest.rsplit_once('@') {
            Some((login, hp)) => (Some(login), hp),
            None => (None, rest),
        };
        let (user, password) = match login {
            None => (None, None),
            Some(l) => match l.split_once(':') {
                Some((u, p)) => (Some(u.to_string()), Some(p.to_string())),
                None => (Some(l.to_string()), None),
            },
        };
        let (host, port) = match hostport.rsplit_once(':') {
            // an IPv6 literal in brackets: [::1]:1883
            Some((h, p)) if !p.contains(']') => (
                h,
                p.parse::<u16>()
                    .ok()
                    .filter(|&p| p > 0)
                    .ok_or_else(|| BrokerUrlError::Port(url.into()))?,
            ),
            _ => (hostport, 1883),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || host.contains('/') || user.as_deref() == Some("") {
            return Err(BrokerUrlError::Form(url.into()));
        }
        Ok(BrokerUrl {
            host: host.to_string(),
            port,
            user,
            password,
        })
    }
}

/// This machine's host name (the default hub id).
pub use crate::wire::name::host_name;

/// Whether `s` may be a topic level (the prefix's levels, a hub id): not empty, no MQTT
/// wildcard (`+`, `#`), no `/` (a prefix may have `/` between levels), no NUL.
pub fn is_topic_level(s: &str) -> bool {
    !s.is_empty() && !s.contains(['+', '#', '/', '\0'])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls_parse_with_defaults_and_refuse_what_they_cannot_be() {
        let u = BrokerUrl::parse("mqtt://broker.local").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.user, u.password),
            ("broker.local", 1883, None, None)
        );
        let u = BrokerUrl::parse("mqtt://cam:s3cret@10.0.0.2:1884/").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("10.0.0.2", 1884));
        assert_eq!(
            (u.user.as_deref(), u.password.as_deref()),
            (Some("cam"), Some("s3cret"))
        );
        assert_eq!(
            u.to_string(),
            "mqtt://cam@10.0.0.2:1884",
            "no password shown"
        );
        assert!(!format!("{u:?}").contains("s3cret"));
        let u = BrokerUrl::parse("mqtt://[::1]:1885").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 1885));
        assert!(matches!(
            BrokerUrl::parse("mqtts://x"),
            Err(BrokerUrlError::Tls(_))
        ));
        assert!(matches!(
            BrokerUrl::parse("http://x"),
            Err(BrokerUrlError::Form(_))
        ));
        assert!(matches!(
            BrokerUrl::parse("mqtt://x:0"),
            Err(BrokerUrlError::Port(_))
        ));
        assert!(matches!(
            BrokerUrl::parse("mqtt://x:99999"),
            Err(BrokerUrlError::Port(_))
        ));
        assert!(matches!(
            BrokerUrl::parse("mqtt://"),
            Err(BrokerUrlError::Form(_))
        ));
        assert!(is_topic_level("hubA") && !is_topic_level("a/b") && !is_topic_level("#"));
    }
}
