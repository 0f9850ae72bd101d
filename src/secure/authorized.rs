//! The hub's authorized-keys file: which device keys may open a session, and the name each
//! one gets (a device cannot choose its own name once keys are on: the file names it).
//!
//! ```text
//! # one device per line: <public key> <name>
//! 4Cq0ejPX9tSbd1zXoWdNYK0IS8QCdnkLRqKIP1C8wHg= cam-kitchen
//! pQX0dnN7rQpz0bLq1mQq4tDq1d3x9P5v2W9E0H6cGks= weather.1   # after '#': a comment
//! ```
//!
//! Blank lines and everything from a `#` on are ignored (neither base64 nor a name holds a
//! `#`). Errors carry the line number: a bad key, a bad or missing name, an extra field, a key
//! or a name given twice. [`KeyFile`] holds the parsed file and reloads it when it changed
//! (or when told, on SIGHUP); a bad new file keeps the old keys in force.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use super::keys::{KeyError, PublicKey};
use crate::wire::name::{NameError, SourceName};

/// The parsed file: each authorized key and its name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuthorizedKeys {
    pub by_key: HashMap<PublicKey, SourceName>,
}

/// What is wrong with an authorized-keys text (line numbers count from 1).
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error("line {line}: bad public key: {source}")]
    BadKey { line: usize, source: KeyError },
    #[error("line {line}: a key needs a name after it (<public key> <name>)")]
    MissingName { line: usize },
    #[error("line {line}: bad name {name:?}: {source}")]
    BadName {
        line: usize,
        name: String,
        source: NameError,
    },
    #[error(
        "line {line}: one device per line is <public key> <name>, then nothing but a # comment"
    )]
    ExtraField { line: usize },
    #[error("line {line}: this key is already on line {first}")]
    DuplicateKey { line: usize, first: usize },
    #[error("line {line}: the name {name} is already on line {first}")]
    DuplicateName {
        line: usize,
        name: SourceName,
        first: usize,
    },
}

impl AuthorizedKeys {
    /// Parse the file's text.
    pub fn parse(text: &str) -> Result<AuthorizedKeys, ParseError> {
        let mut by_key = HashMap::new();
        let mut key_line: HashMap<PublicKey, usize> = HashMap::new();
        let mut name_line: HashMap<SourceName, usize> = HashMap::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let content = raw.split('#').next().unwrap_or("");
            let mut fields = content.split_whitespace();
            let Some(key_text) = fields.next() else {
                continue;
            };
            let key: PublicKey = key_text
                .parse()
                .map_err(|source| ParseError::BadKey { line, source })?;
            let name_text = fields.next().ok_or(ParseError::MissingName { line })?;
            let name = SourceName::parse(name_text).map_err(|source| ParseError::BadName {
                line,
                name: name_text.to_owned(),
                source,
            })?;
            if fields.next().is_some() {
                return Err(ParseError::ExtraField { line });
            }
            if let Some(&first) = key_line.get(&key) {
                return Err(ParseError::DuplicateKey { line, first });
            }
            if let Some(&first) = name_line.get(&name) {
                return Err(ParseError::DuplicateName { line, name, first });
            }
            key_line.insert(key, line);
            name_line.insert(name.clone(), line);
            by_key.insert(key, name);
        }
        Ok(AuthorizedKeys { by_key })
    }

    /// The name the file gives `key`, or `None`: not authorized.
    pub fn name_of(&self, key: &PublicKey) -> Option<&SourceName> {
        self.by_key.get(key)
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

/// Why the authorized-keys file could not be (re)loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: {source}")]
    Parse { path: PathBuf, source: ParseError },
}

/// What identifies one version of the file without reading it (modification time and length),
/// and the hash of the content read then.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Seen {
    mtime: Option<SystemTime>,
    len: u64,
    hash: u64,
}

/// The authorized-keys file in force, reloadable. `generation` is +1 per reload that changed
/// the keys, so a holder of an older `Arc` can tell it is stale.
#[derive(Debug)]
pub struct KeyFile {
    path: PathBuf,
    /// The last version looked at (also a bad one, so a broken file is reported once per
    /// change, not on every poll).
    seen: Seen,
    /// The hash of the text `keys` came from.
    loaded_hash: u64,
    keys: Arc<AuthorizedKeys>,
    generation: u64,
}

impl KeyFile {
    /// Load `path`; an error if it cannot be read or parsed.
    pub fn load(path: &Path) -> Result<KeyFile, LoadError> {
        let (seen, text) = read(path)?;
        let keys = AuthorizedKeys::parse(&text).map_err(|source| LoadError::Parse {
            path: path.to_owned(),
            source,
        })?;
        Ok(KeyFile {
            path: path.to_owned(),
            seen,
            loaded_hash: seen.hash,
            keys: Arc::new(keys),
            generation: 0,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The keys in force.
    pub fn keys(&self) -> &Arc<AuthorizedKeys> {
        &self.keys
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Poll (e.g. once a second): reload if the file's modification time or length changed.
    /// `Ok(true)`: new keys are in force (hand [`KeyFile::keys`] to the responder). An error
    /// (unreadable, or a bad new text) keeps the old keys; it is returned once per change of
    /// the file, for the caller to log.
    pub fn reload_if_changed(&mut self) -> Result<bool, LoadError> {
        let meta = std::fs::metadata(&self.path).map_err(|source| LoadError::Io {
            path: self.path.clone(),
            source,
        })?;
        if meta.modified().ok() == self.seen.mtime && meta.len() == self.seen.len {
            return Ok(false);
        }
        self.reload_inner()
    }

    /// Reload now, whatever the file's time says (on SIGHUP). `Ok(false)` if the text is the
    /// one in force.
    pub fn reload(&mut self) -> Result<bool, LoadError> {
        self.reload_inner()
    }

    fn reload_inner(&mut self) -> Result<bool, LoadError> {
        let (seen, text) = read(&self.path)?;
        self.seen = seen;
        if seen.hash == self.loaded_hash {
            return Ok(false);
        }
        let keys = AuthorizedKeys::parse(&text).map_err(|source| LoadError::Parse {
            path: self.path.clone(),
            source,
        })?;
        self.loaded_hash = seen.hash;
        if keys == *self.keys {
            return Ok(false);
        }
        self.keys = Arc::new(keys);
        self.generation += 1;
        Ok(true)
    }
}

fn read(path: &Path) -> Result<(Seen, String), LoadError> {
    let io_err = |source| LoadError::Io {
        path: path.to_owned(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io_err)?;
    let text = std::fs::read_to_string(path).map_err(io_err)?;
    let mut h = DefaultHasher::new();
    text.hash(&mut h);
    let seen = Seen {
        mtime: meta.modified().ok(),
        len: meta.len(),
        hash: h.finish(),
    };
    Ok((seen, text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secure::keys::generate;

    fn key() -> PublicKey {
        generate().unwrap().1
    }

    #[test]
    fn parses_keys_names_comments_and_blank_lines() {
        let (a, b) = (key(), key());
        let text = format!("# devices\n\n  {a} cam-1\n{b}\tweather.2   # on the roof\n   # end\n");
        let keys = AuthorizedKeys::parse(&text).unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys.name_of(&a).unwrap().as_str(), "cam-1");
        assert_eq!(keys.name_of(&b).unwrap().as_str(), "weather.2");
        assert!(keys.name_of(&key()).is_none());
        assert!(AuthorizedKeys::parse("").unwrap().is_empty());
    }

    #[test]
    fn errors_carry_line_numbers() {
        let (a, b) = (key(), key());
        let err = |t: String| AuthorizedKeys::parse(&t).unwrap_err();
        let e = err(format!("# x\n{a} ok\nnot-a-key cam\n"));
        assert!(matches!(e, ParseError::BadKey { line: 3, .. }), "{e}");
        assert!(e.to_string().starts_with("line 3:"));
        let e = err(format!("{a}\n"));
        assert!(matches!(e, ParseError::MissingName { line: 1 }), "{e}");
        let e = err(format!("\n{a} bad/name\n"));
        assert!(matches!(e, ParseError::BadName { line: 2, .. }), "{e}");
        let e = err(format!("{a} cam one\n"));
        assert!(matches!(e, ParseError::ExtraField { line: 1 }), "{e}");
        let e = err(format!("{a} cam1\n{b} cam2\n{a} cam3\n"));
        assert!(
            matches!(e, ParseError::DuplicateKey { line: 3, first: 1 }),
            "{e}"
        );
        let e = err(format!("{a} cam1\n\n{b} cam1\n"));
        assert!(
            matches!(
                e,
                ParseError::DuplicateName {
                    line: 3,
                    first: 1,
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn key_file_reloads_changes_and_keeps_old_keys_on_a_bad_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("authorized_keys");
        let (a, b) = (key(), key());
        std::fs::write(&path, format!("{a} cam-a\n")).unwrap();
        let mut file = KeyFile::load(&path).unwrap();
        assert_eq!(file.generation(), 0);
        assert!(!file.reload_if_changed().unwrap(), "nothing changed");

        // A longer file: the length differs even if the mtime does not.
        std::fs::write(&path, format!("{a} cam-a\n{b} cam-b\n")).unwrap();
        assert!(file.reload_if_changed().unwrap());
        assert_eq!(file.generation(), 1);
        assert_eq!(file.keys().name_of(&b).unwrap().as_str(), "cam-b");
        let held = Arc::clone(file.keys());

        // A broken edit: the error once, the old keys stay.
        std::fs::write(&path, format!("{a} cam-a\n{b} cam-b\nbroken\n")).unwrap();
        let e = file.reload_if_changed().unwrap_err();
        assert!(e.to_string().contains("line 3"), "{e}");
        assert!(e.to_string().contains("authorized_keys"), "{e}");
        assert!(
            !file.reload_if_changed().unwrap(),
            "reported once per change"
        );
        assert_eq!(file.generation(), 1);
        assert!(Arc::ptr_eq(&held, file.keys()));

        // Revoking b (a forced reload, as on SIGHUP).
        std::fs::write(&path, format!("{a} cam-a\n")).unwrap();
        assert!(file.reload().unwrap());
        assert_eq!(file.generation(), 2);
        assert!(file.keys().name_of(&b).is_none());
        assert!(!file.reload().unwrap(), "same text again");

        // Comments only changed: not a new generation.
        std::fs::write(&path, format!("# edited\n{a} cam-a\n")).unwrap();
        assert!(!file.reload().unwrap());
        assert_eq!(file.generation(), 2);

        // A removed file: an error, keys stay.
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(
            file.reload_if_changed(),
            Err(LoadError::Io { .. })
        ));
        assert!(file.keys().name_of(&a).is_some());
    }
}
