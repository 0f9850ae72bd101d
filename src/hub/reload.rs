//! `--authorized-keys` reloads: SIGHUP asks every service for one at once; each service with
//! keys (image and message ports) also looks at the file every [`CHECK_EVERY`] through its
//! own [`Watcher`] and reloads it when it changed. A file that does not
//! parse keeps the keys that were in force (and the error is logged).

use crate::secure::authorized::KeyFile;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use std::time::Instant;

/// How often the image service looks at the file for changes.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);

/// Reloads asked for so far (each service remembers how many it has seen).
static REQUESTS: AtomicU64 = AtomicU64::new(0);

/// Ask every service for a reload now (what SIGHUP does).
pub fn request() {
    REQUESTS.fetch_add(1, Ordering::SeqCst);
}

/// One service's view of the file: reloads it when asked or when it changed.
pub struct Watcher {
    file: KeyFile,
    seen_requests: u64,
    next_check: Instant,
    service: &'static str,
}

impl Watcher {
    pub fn new(file: KeyFile, service: &'static str, now: Instant) -> Self {
        Watcher {
            file,
            seen_requests: REQUESTS.load(Ordering::SeqCst),
            next_check: now + CHECK_EVERY,
            service,
        }
    }

    /// Call from the service loop (at least once a second): hands new keys to `apply`
    /// when a reload was asked for or the file changed.
    pub fn poll(&mut self, now: Instant, apply: impl FnOnce(&KeyFile)) {
        let requests = REQUESTS.load(Ordering::SeqCst);
        let asked = requests != self.seen_requests;
        if !asked && now < self.next_check {
            return;
        }
        self.seen_requests = requests;
        self.next_check = now + CHECK_EVERY;
        let result = if asked {
            self.file.reload()
        } else {
            self.file.reload_if_changed()
        };
        match result {
            Ok(true) => {
                log::info!(
                    "{}: keys: {} reloaded: {} devices",
                    self.service,
                    self.file.path().display(),
                    self.file.keys().len()
                );
                apply(&self.file);
            }
            Ok(false) => {}
            Err(e) => log::warn!("{}: keys: keeping the keys in force: {e}", self.service),
        }
    }
}

/// Make SIGHUP ask for a reload instead of ending the process (call after the Ctrl-C
/// handler is installed: it takes SIGHUP too, and this replaces it for that signal).
#[cfg(unix)]
pub fn install_sighup() -> std::io::Result<()> {
    extern "C" fn on_sighup(_: libc::c_int) {
        // async-signal-safe: one atomic add
        REQUESTS.fetch_add(1, Ordering::SeqCst);
    }
    // SAFETY: installing a handler that only stores to an atomic.
    let previous = unsafe {
        libc::signal(
            libc::SIGHUP,
            on_sighup as extern "C" fn(libc::c_int) as libc::sighandler_t,
        )
    };
    if previous == libc::SIG_ERR {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Without Unix signals there is no SIGHUP: the file is still watched.
#[cfg(not(unix))]
pub fn install_sighup() -> std::io::Result<()> {
    Ok(())
}
