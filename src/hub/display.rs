//! `--display`: one OpenCV window per source showing its newest decoded frame.
//!
//! Decoding and drawing run on this thread only, fed "latest frame wins", so a slow screen
//! never slows a receiver. OpenCV aborts the process when it opens a window with no display,
//! so without `DISPLAY`/`WAYLAND_DISPLAY` the hub says so once and runs on without windows.

use super::source::SourceId;
use crate::latest::LatestByKey;
#[cfg(feature = "opencv")]
use crate::media::display::{display_available, pump_events, Window};
use crate::shutdown::Shutdown;
#[cfg(feature = "opencv")]
use crate::shutdown::POLL_INTERVAL;
#[cfg(feature = "opencv")]
use std::collections::hash_map::{Entry, HashMap};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Frames waiting to be shown, newest per source.
pub type DisplayQueue = LatestByKey<SourceId, Arc<Vec<u8>>>;

/// Start the display thread, or return `None` (after saying why) when there is no display.
/// Without the `opencv` feature there are no windows: says so once and returns `None`.
pub fn spawn(shutdown: Shutdown) -> Option<(Arc<DisplayQueue>, JoinHandle<()>)> {
    #[cfg(not(feature = "opencv"))]
    {
        let _ = shutdown;
        log::warn!(
            "--display: this hub was built without the `opencv` feature; running without windows"
        );
        None
    }
    #[cfg(feature = "opencv")]
    spawn_windows(shutdown)
}

#[cfg(feature = "opencv")]
fn spawn_windows(shutdown: Shutdown) -> Option<(Arc<DisplayQueue>, JoinHandle<()>)> {
    if !display_available() {
        log::warn!("--display: no display (DISPLAY and WAYLAND_DISPLAY are unset); running without windows");
        return None;
    }
    let queue = Arc::new(DisplayQueue::default());
    let q = queue.clone();
    let handle = std::thread::Builder::new()
        .name("display".into())
        .spawn(move || show_loop(&q, &shutdown))
        .map_err(|e| log::error!("--display: cannot start the display thread: {e}"))
        .ok()?;
    Some((queue, handle))
}

#[cfg(feature = "opencv")]
fn show_loop(queue: &DisplayQueue, shutdown: &Shutdown) {
    let mut windows: HashMap<SourceId, Window> = HashMap::new();
    let mut failed_once = false;
    while !shutdown.is_triggered() {
        for (source, jpeg) in queue.take_all(POLL_INTERVAL) {
            let window = match windows.entry(source) {
                Entry::Occupied(o) => o.into_mut(),
                Entry::Vacant(v) => match Window::open(&format!("udphub {source}")) {
                    Ok(w) => {
                        log::info!("--display: window opened for {source}");
                        v.insert(w)
                    }
                    Err(e) => {
                        if !failed_once {
                            log::error!("--display: cannot open a window: {e}");
                            failed_once = true;
                        }
                        continue;
                    }
                },
            };
            if let Err(e) = window.show_jpeg(&jpeg) {
                log::warn!("--display: frame from {source} not shown: {e}");
            }
        }
        if !windows.is_empty() {
            // let the window system draw; a key press is not a reason to stop the hub
            let _ = pump_events(1);
        }
    }
    drop(windows);
}
