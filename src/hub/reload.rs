//! `--authorized-keys` reloads: SIGHUP asks for one at once; the image service also looks
//! at the file every [`CHECK_EVERY`] and reloads it when it changed. A file that does not
//! parse keeps the keys that were in force (and the error is logged).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How often the image service looks at the file for changes.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);

static REQUESTED: AtomicBool = AtomicBool::new(false);

/// Ask for a reload now (what SIGHUP does).
pub fn request() {
    REQUESTED.store(true, Ordering::SeqCst);
}

/// Whether a reload was asked for since the last call.
pub fn take_request() -> bool {
    REQUESTED.swap(false, Ordering::SeqCst)
}

/// Make SIGHUP ask for a reload instead of ending the process (call after the Ctrl-C
/// handler is installed: it takes SIGHUP too, and this replaces it for that signal).
#[cfg(unix)]
pub fn install_sighup() -> std::io::Result<()> {
    extern "C" fn on_sighup(_: libc::c_int) {
        // async-signal-safe: one atomic store
        REQUESTED.store(true, Ordering::SeqCst);
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
