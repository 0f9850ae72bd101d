//! The two AEADs a session may use, both standard Noise cipher functions that snow
//! implements (with ring underneath): ChaCha20-Poly1305 (WireGuard's) and AES-256-GCM.
//!
//! Why two: AES-GCM is about four times cheaper where the CPU has AES and carry-less
//! multiply instructions (every x86-64 PC of the last decade, Apple and most ARMv8.x cores,
//! the Raspberry Pi 5; measured here, 65,000 bytes: 15 µs against 63 µs to open), and the
//! hub opens every datagram of every device on its receive thread. ChaCha20-Poly1305 is the
//! faster one on cores without them (the Raspberry Pi 4 and older), where AES runs as
//! constant-time software. The device picks ([`Cipher::preferred`] by default: AES-GCM when
//! its own CPU has the instructions) and says which in the kind of its initiation; the hub
//! takes either. The kind is in the Noise prologue and the protocol name differs, so a
//! changed kind fails the handshake: no one in between can pick for the device.

use std::fmt;
use std::str::FromStr;

/// A session's AEAD.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Cipher {
    /// `Noise_IK_25519_ChaChaPoly_BLAKE2s`: WireGuard's.
    ChaChaPoly,
    /// `Noise_IK_25519_AESGCM_BLAKE2s`.
    AesGcm,
}

impl Cipher {
    pub const ALL: [Cipher; 2] = [Cipher::ChaChaPoly, Cipher::AesGcm];

    /// The Noise protocol name.
    pub fn noise_name(self) -> &'static str {
        match self {
            Cipher::ChaChaPoly => "Noise_IK_25519_ChaChaPoly_BLAKE2s",
            Cipher::AesGcm => "Noise_IK_25519_AESGCM_BLAKE2s",
        }
    }

    pub(super) fn noise_params(self) -> snow::params::NoiseParams {
        self.noise_name().parse().expect("a valid Noise pattern")
    }

    /// The flag value: `chacha20-poly1305` or `aes-256-gcm`.
    pub fn as_str(self) -> &'static str {
        match self {
            Cipher::ChaChaPoly => "chacha20-poly1305",
            Cipher::AesGcm => "aes-256-gcm",
        }
    }

    /// AES-GCM when this CPU has AES and carry-less multiply instructions, else
    /// ChaCha20-Poly1305.
    pub fn preferred() -> Cipher {
        if has_aes_instructions() {
            Cipher::AesGcm
        } else {
            Cipher::ChaChaPoly
        }
    }
}

#[cfg(target_arch = "x86_64")]
fn has_aes_instructions() -> bool {
    std::arch::is_x86_feature_detected!("aes") && std::arch::is_x86_feature_detected!("pclmulqdq")
}

#[cfg(target_arch = "aarch64")]
fn has_aes_instructions() -> bool {
    std::arch::is_aarch64_feature_detected!("aes")
        && std::arch::is_aarch64_feature_detected!("pmull")
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn has_aes_instructions() -> bool {
    false
}

impl fmt::Display for Cipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `--cipher` value that is not one of ours.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown cipher {0:?} (chacha20-poly1305 or aes-256-gcm)")]
pub struct UnknownCipher(String);

impl FromStr for Cipher {
    type Err = UnknownCipher;
    fn from_str(s: &str) -> Result<Cipher, UnknownCipher> {
        Cipher::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| UnknownCipher(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_parse() {
        for c in Cipher::ALL {
            assert_eq!(c.as_str().parse::<Cipher>(), Ok(c));
            let _ = c.noise_params();
        }
        assert!("aes".parse::<Cipher>().is_err());
        assert!(Cipher::ALL.contains(&Cipher::preferred()));
    }
}
