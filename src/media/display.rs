//! Preview windows (OpenCV highgui).
//!
//! OpenCV aborts the whole process when it opens a window without a display, so every
//! window goes through [`Window::open`], which refuses (with [`MediaError::NoDisplay`]) unless
//! [`display_available`] says there is one.
//!
//! Threads: Debian's OpenCV uses the Qt backend, which binds the GUI to the first thread
//! that opens a window. Make every window call (open, show, [`pump_events`], drop) from
//! that one thread for the whole life of the process: once it has exited, a window call
//! from any other thread hangs forever (seen with OpenCV 4.6 under Xvfb). [`Window`] is
//! not `Send` for that reason; create it on the display thread and keep that thread alive.

use std::marker::PhantomData;

use opencv::core::Mat;
use opencv::highgui;
use opencv::prelude::*;

use super::{jpeg, MediaError, Result};

/// True only when `DISPLAY` or `WAYLAND_DISPLAY` is set and non-empty.
pub fn display_available() -> bool {
    ["DISPLAY", "WAYLAND_DISPLAY"]
        .iter()
        .any(|var| std::env::var_os(var).is_some_and(|v| !v.is_empty()))
}

/// An OpenCV window showing frames; destroyed on drop.
#[derive(Debug)]
pub struct Window {
    title: String,
    /// highgui windows belong to the thread that made them.
    _not_send: PhantomData<*const ()>,
}

impl Window {
    /// Opens a window titled `title`. Errors with [`MediaError::NoDisplay`] when
    /// [`display_available`] is false (instead of letting OpenCV abort the process).
    pub fn open(title: &str) -> Result<Window> {
        if !display_available() {
            return Err(MediaError::NoDisplay);
        }
        highgui::named_window(title, highgui::WINDOW_AUTOSIZE)?;
        Ok(Window {
            title: title.to_owned(),
            _not_send: PhantomData,
        })
    }

    /// The window's title (also its OpenCV name).
    pub fn title(&self) -> &str {
        &self.title
    }

    /// Shows `frame` in the window. The window repaints during [`pump_events`].
    pub fn show(&mut self, frame: &Mat) -> Result<()> {
        if frame.empty() {
            return Err(MediaError::InvalidInput(format!(
                "cannot show an empty frame in window {:?}",
                self.title
            )));
        }
        highgui::imshow(&self.title, frame)?;
        Ok(())
    }

    /// Decodes `jpeg` and shows it; undecodable bytes are an error and leave the window as is.
    pub fn show_jpeg(&mut self, jpeg: &[u8]) -> Result<()> {
        let frame = jpeg::decode(jpeg)?;
        self.show(&frame)
    }
}

impl Drop for Window {
    fn drop(&mut self) {
        // Nothing useful to do with a failure while dropping.
        let _ = highgui::destroy_window(&self.title);
    }
}

/// Runs the GUI event loop for up to `ms` milliseconds (`0` waits for a key forever), so
/// windows repaint and react. Returns the key pressed, if any (e.g. `Some(27)` for ESC).
/// Errors with [`MediaError::NoDisplay`] when there is no display.
pub fn pump_events(ms: i32) -> Result<Option<i32>> {
    if !display_available() {
        return Err(MediaError::NoDisplay);
    }
    let key = highgui::wait_key(ms)?;
    Ok((key >= 0).then_some(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    // The environment is process-global and shared with other tests: only read it here.
    #[test]
    fn open_agrees_with_display_available() {
        if display_available() {
            return; // Would open a real window; not a unit test's business.
        }
        assert!(matches!(Window::open("test"), Err(MediaError::NoDisplay)));
        assert!(matches!(pump_events(1), Err(MediaError::NoDisplay)));
        assert!(MediaError::NoDisplay.to_string().contains("DISPLAY"));
    }

    /// Runs only with a display (e.g. under `xvfb-run`): a window lives on the thread that
    /// opened it, shows raw and JPEG frames, and rejects bad ones without closing.
    #[test]
    fn window_shows_frames_when_a_display_is_present() {
        if !display_available() {
            return;
        }
        std::thread::spawn(|| {
            use crate::media::{FrameSource, PatternSource};
            let frame = PatternSource::new(160, 120).next_frame().unwrap().unwrap();
            let mut window = Window::open("udphub media test").unwrap();
            assert_eq!(window.title(), "udphub media test");
            window.show(&frame).unwrap();
            window
                .show_jpeg(&jpeg::encode(&frame, 80).unwrap())
                .unwrap();
            assert!(window.show_jpeg(b"garbage").is_err());
            assert!(window.show(&Mat::default()).is_err());
            pump_events(1).unwrap();
        })
        .join()
        .unwrap();
    }
}
