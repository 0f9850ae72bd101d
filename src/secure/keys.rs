//! X25519 key pairs for [`crate::secure`]: generating one (with snow's own generator), the
//! key text (standard base64 of the 32 bytes, 44 characters, as WireGuard writes its keys),
//! and the private key file (one line of key text, mode 0600, never overwritten).

use std::fmt;
use std::fs::OpenOptions;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use snow::resolvers::{CryptoResolver, DefaultResolver};

/// Bytes in a key, private or public.
pub const KEY_LEN: usize = 32;
/// Characters in a key's text.
pub const KEY_TEXT_LEN: usize = 44;

/// A device's or the hub's private key. Its `Debug` does not show the key.
#[derive(Clone, PartialEq, Eq)]
pub struct PrivateKey([u8; KEY_LEN]);

/// A public key: what an authorized-keys line and `--hub-key` hold.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey([u8; KEY_LEN]);

/// Why a key text or key file is not usable.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("a key is {KEY_TEXT_LEN} characters of base64, this one has {0}")]
    BadLength(usize),
    #[error("a key is base64 of {KEY_LEN} bytes: {0}")]
    BadBase64(String),
    #[error("{path}: already exists; not overwriting a key (remove it first if you mean to)")]
    Exists { path: PathBuf },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: not a private key: {source}")]
    Malformed {
        path: PathBuf,
        #[source]
        source: Box<KeyError>,
    },
    #[error("key generation failed: {0}")]
    Generate(String),
}

impl PrivateKey {
    pub fn from_bytes(b: [u8; KEY_LEN]) -> PrivateKey {
        PrivateKey(b)
    }

    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// The public key of this private key (X25519 scalar times the base point, done by
    /// snow's resolver).
    pub fn public_key(&self) -> PublicKey {
        let mut dh = DefaultResolver
            .resolve_dh(&snow::params::DHChoice::Curve25519)
            .expect("snow's default resolver has Curve25519");
        dh.set(&self.0);
        let mut out = [0u8; KEY_LEN];
        out.copy_from_slice(dh.pubkey());
        PublicKey(out)
    }

    /// The key text (base64). Only for writing the key file: never log it.
    pub fn to_text(&self) -> String {
        STANDARD.encode(self.0)
    }

    /// Parse key text (surrounding white space is ignored).
    pub fn from_text(s: &str) -> Result<PrivateKey, KeyError> {
        decode(s).map(PrivateKey)
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PrivateKey(public {})", self.public_key())
    }
}

impl Drop for PrivateKey {
    fn drop(&mut self) {
        // The bytes do not outlive the key in this struct (copies inside snow are snow's to
        // wipe, and it does).
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

impl PublicKey {
    pub fn from_bytes(b: [u8; KEY_LEN]) -> PublicKey {
        PublicKey(b)
    }

    /// From a slice of exactly [`KEY_LEN`] bytes (what snow returns as a remote static key).
    pub fn from_slice(b: &[u8]) -> Option<PublicKey> {
        b.try_into().ok().map(PublicKey)
    }

    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&STANDARD.encode(self.0))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

impl FromStr for PublicKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<PublicKey, KeyError> {
        decode(s).map(PublicKey)
    }
}

fn decode(s: &str) -> Result<[u8; KEY_LEN], KeyError> {
    let s = s.trim();
    if s.len() != KEY_TEXT_LEN {
        return Err(KeyError::BadLength(s.chars().count()));
    }
    let v = STANDARD
        .decode(s)
        .map_err(|e| KeyError::BadBase64(e.to_string()))?;
    v.try_into()
        .map_err(|v: Vec<u8>| KeyError::BadBase64(format!("{} bytes, not {KEY_LEN}", v.len())))
}

/// A new key pair from snow's generator (the operating system's random source).
pub fn generate() -> Result<(PrivateKey, PublicKey), KeyError> {
    // The key pair is X25519's whichever AEAD a session uses.
    let kp = snow::Builder::new(super::cipher::Cipher::ChaChaPoly.noise_params())
        .generate_keypair()
        .map_err(|e| KeyError::Generate(e.to_string()))?;
    let private: [u8; KEY_LEN] = kp.private[..]
        .try_into()
        .map_err(|_| KeyError::Generate("snow returned a key of the wrong size".into()))?;
    let private = PrivateKey(private);
    let public = private.public_key();
    debug_assert_eq!(&public.0[..], &kp.public[..]);
    Ok((private, public))
}

/// Generate a key pair and write the private key to `path` as one line of key text: the file
/// is created (never overwritten: [`KeyError::Exists`] if it is there) with mode 0600 on Unix.
/// Returns the public key.
pub fn write_new_private_key(path: &Path) -> Result<PublicKey, KeyError> {
    let io_err = |source| KeyError::Io {
        path: path.to_owned(),
        source,
    };
    let (private, public) = generate()?;
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(|e| {
        if e.kind() == io::ErrorKind::AlreadyExists {
            KeyError::Exists {
                path: path.to_owned(),
            }
        } else {
            io_err(e)
        }
    })?;
    let mut line = private.to_text();
    line.push('\n');
    f.write_all(line.as_bytes()).map_err(io_err)?;
    f.sync_all().map_err(io_err)?;
    Ok(public)
}

/// A private key read from its file.
#[derive(Debug)]
pub struct LoadedKey {
    pub key: PrivateKey,
    /// The file can be read by its group or by others (mode & 0o077 on Unix): the caller
    /// should warn (`chmod 600 FILE`). Always false elsewhere.
    pub too_open: bool,
}

/// Read a private key file written by [`write_new_private_key`] (or `wg genkey`: the same
/// text). Errors name the path and what is wrong.
pub fn read_private_key(path: &Path) -> Result<LoadedKey, KeyError> {
    let io_err = |source| KeyError::Io {
        path: path.to_owned(),
        source,
    };
    let f = std::fs::File::open(path).map_err(io_err)?;
    let meta = f.metadata().map_err(io_err)?;
    if !meta.is_file() {
        return Err(io_err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        )));
    }
    #[cfg(unix)]
    let too_open = {
        use std::os::unix::fs::PermissionsExt;
        meta.permissions().mode() & 0o077 != 0
    };
    #[cfg(not(unix))]
    let too_open = false;
    // A key file is one line; read a little more to say "too long" rather than read a
    // large file whole.
    let mut text = String::new();
    f.take(4096)
        .read_to_string(&mut text)
        .map_err(|e| KeyError::Malformed {
            path: path.to_owned(),
            source: Box::new(KeyError::BadBase64(e.to_string())),
        })?;
    let key = PrivateKey::from_text(&text).map_err(|e| KeyError::Malformed {
        path: path.to_owned(),
        source: Box::new(e),
    })?;
    Ok(LoadedKey { key, too_open })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_key_text_round_trips_and_is_44_chars() {
        let (_, public) = generate().unwrap();
        let text = public.to_string();
        assert_eq!(text.len(), KEY_TEXT_LEN);
        assert_eq!(text.parse::<PublicKey>().unwrap(), public);
        assert_eq!(format!(" {text}\n").parse::<PublicKey>().unwrap(), public);
    }

    #[test]
    fn known_vector_rfc7748() {
        // RFC 7748 section 6.1: Alice's private key and public key.
        let hex = |s: &str| -> [u8; 32] {
            let v: Vec<u8> = (0..s.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
                .collect();
            v.try_into().unwrap()
        };
        let private = PrivateKey::from_bytes(hex(
            "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a",
        ));
        let public = hex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a");
        assert_eq!(private.public_key().as_bytes(), &public);
    }

    #[test]
    fn bad_key_texts_are_refused() {
        assert!(matches!(
            "".parse::<PublicKey>(),
            Err(KeyError::BadLength(0))
        ));
        assert!(matches!(
            "abc".parse::<PublicKey>(),
            Err(KeyError::BadLength(3))
        ));
        // 44 characters that are not base64.
        let bad = "!".repeat(44);
        assert!(matches!(
            bad.parse::<PublicKey>(),
            Err(KeyError::BadBase64(_))
        ));
        // 44 characters of base64 that decode to 33 bytes: impossible, but 43 chars + '='
        // padding at the wrong place is refused.
        let mut wrong_pad = "A".repeat(42);
        wrong_pad.push_str("==");
        assert!(wrong_pad.parse::<PublicKey>().is_err());
    }

    #[test]
    fn key_file_is_0600_refuses_overwrite_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("device.key");
        let public = write_new_private_key(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let before = std::fs::read(&path).unwrap();
        let err = write_new_private_key(&path).unwrap_err();
        assert!(matches!(err, KeyError::Exists { .. }), "{err}");
        assert!(err.to_string().contains("device.key"));
        assert_eq!(std::fs::read(&path).unwrap(), before);
        let loaded = read_private_key(&path).unwrap();
        assert!(!loaded.too_open);
        assert_eq!(loaded.key.public_key(), public);
    }

    #[cfg(unix)]
    #[test]
    fn group_readable_key_file_is_flagged() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        write_new_private_key(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(read_private_key(&path).unwrap().too_open);
    }

    #[test]
    fn malformed_and_missing_key_files_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.key");
        std::fs::write(&path, "not a key\n").unwrap();
        let err = read_private_key(&path).unwrap_err();
        assert!(matches!(err, KeyError::Malformed { .. }));
        assert!(err.to_string().contains("bad.key"), "{err}");
        let missing = dir.path().join("missing.key");
        let err = read_private_key(&missing).unwrap_err();
        assert!(err.to_string().contains("missing.key"), "{err}");
    }

    #[test]
    fn private_key_debug_does_not_show_the_key() {
        let (private, public) = generate().unwrap();
        let shown = format!("{private:?}");
        assert!(!shown.contains(&private.to_text()));
        assert!(shown.contains(&public.to_string()));
    }
}
