//! A source's name: what a device calls itself (`img-client --name`, `msg-client --name`),
//! or, with keys, what the hub's authorized-keys file calls it. Names are shown and stored
//! everywhere a source is (`/state`, `/metrics` labels, file names under `--save-dir`,
//! `--msg-log` lines, MQTT topics), so the alphabet is one that is safe in all of them:
//! 1 to [`MAX_LEN`] characters of `[A-Za-z0-9._-]`, and never `.` or `..` (a path element).

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

/// The longest name, in bytes (= characters: the alphabet is ASCII).
pub const MAX_LEN: usize = 64;

/// A valid source name. Cheap to clone (shared): the hub hands one out per authenticated
/// datagram.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SourceName(Arc<str>);

/// Why a string is not a source name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("a name cannot be empty")]
    Empty,
    #[error("a name is at most {MAX_LEN} characters, this one has {0}")]
    TooLong(usize),
    #[error("a name may hold only A-Z a-z 0-9 . _ -, not {0:?}")]
    BadChar(char),
    #[error("a name cannot be \".\" or \"..\"")]
    Dots,
}

impl SourceName {
    /// Check `s` against the rules above.
    pub fn parse(s: &str) -> Result<SourceName, NameError> {
        check(s)?;
        Ok(SourceName(Arc::from(s)))
    }

    /// Parse the name bytes of a datagram.
    pub fn from_bytes(b: &[u8]) -> Result<SourceName, NameError> {
        match std::str::from_utf8(b) {
            Ok(s) => SourceName::parse(s),
            Err(e) => {
                let bad = b[e.valid_up_to()];
                Err(NameError::BadChar(char::from(bad)))
            }
        }
    }

    /// This machine's name made valid ([`SourceName::default_for_host`] of [`host_name`]):
    /// the default of `--name`.
    pub fn of_this_host() -> SourceName {
        SourceName::default_for_host(&host_name())
    }

    /// The name a device gets when it is not given one: this machine's host name, made
    /// valid (other characters become `-`, cut to [`MAX_LEN`]), or `device`.
    pub fn default_for_host(host: &str) -> SourceName {
        let cleaned: String = host
            .chars()
            .map(|c| if is_name_char(c) { c } else { '-' })
            .take(MAX_LEN)
            .collect();
        SourceName::parse(&cleaned).unwrap_or_else(|_| SourceName(Arc::from("device")))
    }

    /// This name with a `#n` suffix, to tell apart a second unauthenticated stream claiming
    /// it (the suffix is outside the alphabet, so no device can claim it).
    pub fn with_suffix(&self, n: u32) -> String {
        format!("{}#{n}", self.0)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Whether `s` is a valid name (the rules of the module documentation), without making one.
pub fn check(s: &str) -> Result<(), NameError> {
    if s.is_empty() {
        return Err(NameError::Empty);
    }
    if let Some(c) = s.chars().find(|c| !is_name_char(*c)) {
        return Err(NameError::BadChar(c));
    }
    if s.len() > MAX_LEN {
        return Err(NameError::TooLong(s.len()));
    }
    if s == "." || s == ".." {
        return Err(NameError::Dots);
    }
    Ok(())
}

/// This machine's host name (the default `--name`, and the hub's MQTT id), or `hub` when
/// it cannot be read.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "hub".into())
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

impl fmt::Display for SourceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for SourceName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SourceName::parse(s)
    }
}

impl AsRef<str> for SourceName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_alphabet_and_the_length() {
        assert!(SourceName::parse("pi-cam_1.lab").is_ok());
        assert_eq!(SourceName::parse(""), Err(NameError::Empty));
        assert_eq!(SourceName::parse("a b"), Err(NameError::BadChar(' ')));
        assert_eq!(SourceName::parse("cam/1"), Err(NameError::BadChar('/')));
        assert_eq!(SourceName::parse("cam#2"), Err(NameError::BadChar('#')));
        assert_eq!(SourceName::parse("é"), Err(NameError::BadChar('é')));
        assert_eq!(SourceName::parse(".."), Err(NameError::Dots));
        assert!(SourceName::parse(&"a".repeat(64)).is_ok());
        assert_eq!(
            SourceName::parse(&"a".repeat(65)),
            Err(NameError::TooLong(65))
        );
        assert_eq!(
            SourceName::from_bytes(b"ab\xff"),
            Err(NameError::BadChar('\u{ff}'))
        );
    }

    #[test]
    fn host_names_are_made_valid() {
        assert_eq!(
            SourceName::default_for_host("raspberrypi").as_str(),
            "raspberrypi"
        );
        assert_eq!(
            SourceName::default_for_host("my pi (2)").as_str(),
            "my-pi--2-"
        );
        assert_eq!(SourceName::default_for_host("").as_str(), "device");
        assert_eq!(SourceName::default_for_host("..").as_str(), "device");
        assert_eq!(
            SourceName::default_for_host(&"x".repeat(100))
                .as_str()
                .len(),
            64
        );
        let n = SourceName::parse("cam").unwrap();
        assert_eq!(n.with_suffix(2), "cam#2");
    }
}
