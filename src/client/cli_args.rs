//! Command-line pieces both clients share (`img-client`, `msg-client`): the name and key
//! flags, parsed and checked the same way.

use super::error::ClientError;
use super::img_sender::DeviceKeys;
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
        }))
    }
}

/// `--name`'s parser: the rules of [`SourceName`].
pub fn parse_name(s: &str) -> Result<SourceName, String> {
    SourceName::parse(s).map_err(|e| e.to_string())
}
