//! `udphub-keygen` as a user runs it: a new key file is mode 0600 and its public key is
//! printed; a second run on the same file refuses (exit 2) and leaves it alone; `--public`
//! prints the same public key; a malformed or missing file is exit 2 with its path named.

use std::path::Path;
use std::process::{Command, Output};
use udphub::secure::keys::{PublicKey, KEY_TEXT_LEN};

fn keygen(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_udphub-keygen"))
        .args(args)
        .output()
        .expect("run udphub-keygen")
}

fn stdout_line(out: &Output) -> String {
    let s = String::from_utf8(out.stdout.clone()).unwrap();
    assert_eq!(s.lines().count(), 1, "one line expected: {s:?}");
    s.trim_end().to_owned()
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn new_key_is_0600_and_public_matches() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cam1.key");
    let out = keygen(&[path_str(&file)]);
    assert!(out.status.success(), "{out:?}");
    let public = stdout_line(&out);
    assert_eq!(public.len(), KEY_TEXT_LEN);
    public.parse::<PublicKey>().unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let again = keygen(&["--public", path_str(&file)]);
    assert!(again.status.success(), "{again:?}");
    assert_eq!(stdout_line(&again), public);
}

#[test]
fn refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hub.key");
    assert!(keygen(&[path_str(&file)]).status.success());
    let before = std::fs::read(&file).unwrap();
    let out = keygen(&[path_str(&file)]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("hub.key") && err.contains("exists"), "{err}");
    assert!(out.stdout.is_empty());
    assert_eq!(std::fs::read(&file).unwrap(), before);
}

#[test]
fn malformed_or_missing_file_is_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.key");
    std::fs::write(&bad, "hello\n").unwrap();
    let out = keygen(&["--public", path_str(&bad)]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad.key"));
    let missing = dir.path().join("missing.key");
    let out = keygen(&["--public", path_str(&missing)]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.key"));
}
