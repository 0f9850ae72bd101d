//! Command-line pieces both clients share (`img-client`, `msg-client`): the name and key
//! flags, parsed and checked the same way.

use super::error::ClientError;
use super::img_sender::DeviceKeys;
use crate::secure::cipher::Cipher;
use crate::secure::keys::{read_private_key, PublicKey};
use crate::wire::name::SourceName;
use std::path::PathBuf;

/// `--key FILE --hub-key PUBLIC_KEY`: both or neither.
#[derive(clap::Args, Debug, Clone)]
pub struct KeyArgs {
    /// framed: this device's private key (written by `udphub-keygen FILE`), for a hub that
    /// requires keys: every datagram is encrypted and authenticated, and the hub names the
    /// device as its authorized-keys file says. Requires --hub-key.
    #[arg(long, value_name = "FILE", requires = "hub_key")]
    pub key: Option<PathBuf>,
    /// framed: the hub's public key (what `udphub-keygen --public HUB_KEY_FILE` prints).
    #[arg(long, value_name = "PUBLIC_KEY", requires = "key")]
    pub hub_key: Option<PublicKey>,
    /// framed with --key: the AEAD of the sessions, `auto` (AES-256-GCM when this CPU has AES
    /// instructions, else ChaCha20-Poly1305), `aes-256-gcm` or `chacha20-poly1305`. The hub
    /// takes either.
    #[arg(long, value_name = "CIPHER", default_value = "auto", value_parser = parse_cipher, requires = "key")]
    pub cipher: CipherChoice,
}

/// `--cipher`: a cipher, or this CPU's [`Cipher::preferred`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CipherChoice {
    Auto,
    Fixed(Cipher),
}

impl CipherChoice {
    pub fn cipher(self) -> Cipher {
        match self {
            CipherChoice::Auto => Cipher::preferred(),
            CipherChoice::Fixed(c) => c,
        }
    }
}

fn parse_cipher(s: &str) -> Result<CipherChoice, String> {
    if s == "auto" {
        return Ok(CipherChoice::Auto);
    }
    s.parse()
        .map(CipherChoice::Fixed)
        .map_err(|e| format!("{e}, or auto"))
}

impl KeyArgs {
    /// The keys, read, when given; `framed`: whether the chosen protocol can carry them.
    /// A key file readable by others is used, with a warning on stderr from `program`.
    pub fn device_keys(
        &self,
        framed: bool,
        program: &str,
    ) -> Result<Option<DeviceKeys>, ClientError> {
        let (Some(path), Some(hub)) = (&self.key, self.hub_key) else {
            return Ok(None);
        };
        if !framed {
            return Err(ClientError::KeysNeedFramed);
        }
        let loaded = read_private_key(path)?;
        if loaded.too_open {
            eprintln!(
                "{program}: warning: --key {} is readable by others than its owner (chmod 600 it)",
                path.display()
            );
        }
        Ok(Some(DeviceKeys {
            key: loaded.key,
            hub,
            cipher: self.cipher.cipher(),
        }))
    }
}

/// `--name`'s parser: the rules of [`SourceName`].
pub fn parse_name(s: &str) -> Result<SourceName, String> {
    SourceName::parse(s).map_err(|e| e.to_string())
}
