//! Everything OpenCV: JPEG encode/decode, capture sources, preview windows.
//!
//! Outside tests (which use it to make real images), this is the only part of the crate that
//! talks to OpenCV (through the `opencv` crate; the rest handles frames only as the opaque
//! [`Mat`] re-exported here), so the protocol and network code stay testable without
//! images, cameras or displays. Every
//! OpenCV failure and every unusable input comes back as a [`MediaError`] with a message a
//! person can act on; nothing here panics on bad input.
//!
//! - [`jpeg`]: frames to JPEG bytes and back (the wire carries JPEG).
//! - [`source`]: where the camera client's frames come from (camera, video file, images,
//!   synthetic test pattern), behind the [`FrameSource`] trait.
//! - [`display`]: preview windows; check [`display_available`] first.
//! - [`testvideo`]: writes small video files for tests and demos.
//! - [`testjpeg`]: real JPEGs of an exact byte length, for tests.

pub mod display;
pub mod jpeg;
pub mod source;
pub mod testjpeg;
pub mod testvideo;

use std::fmt;
use std::path::PathBuf;

pub use display::{display_available, pump_events, Window};
pub use opencv::core::Mat;
pub use source::{
    into_size, resize_to, CameraSource, FrameSource, ImageSource, PatternSource, VideoFileSource,
};

/// Result of every fallible call in [`media`](self).
pub type Result<T> = std::result::Result<T, MediaError>;

/// Why a media operation failed.
#[derive(Debug)]
pub enum MediaError {
    /// An OpenCV call reported an error (an exception on the C++ side).
    OpenCv(opencv::Error),
    /// The bytes given to a JPEG decoder did not decode to an image.
    NotJpeg,
    /// A window was requested but neither `DISPLAY` nor `WAYLAND_DISPLAY` is set.
    NoDisplay,
    /// Camera `index` could not be opened (absent, busy, or no permission).
    CameraUnavailable { index: i32, detail: String },
    /// A file or folder could not be used as a source; `reason` says why.
    CannotOpen { path: PathBuf, reason: String },
    /// An argument or frame that cannot be used (empty frame, size <= 0, quality out of range...).
    InvalidInput(String),
}

impl fmt::Display for MediaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MediaError::OpenCv(e) => write!(f, "OpenCV error: {e}"),
            MediaError::NotJpeg => write!(f, "not a decodable JPEG"),
            MediaError::NoDisplay => write!(
                f,
                "no display available (neither DISPLAY nor WAYLAND_DISPLAY is set); \
                 cannot open a window"
            ),
            MediaError::CameraUnavailable { index, detail } => write!(
                f,
                "camera {index} could not be opened{}; use --pattern for a synthetic test \
                 pattern or --video FILE to stream a video file instead",
                if detail.is_empty() {
                    String::new()
                } else {
                    format!(" ({detail})")
                }
            ),
            MediaError::CannotOpen { path, reason } => {
                write!(f, "cannot open {}: {reason}", path.display())
            }
            MediaError::InvalidInput(msg) => write!(f, "{msg}"),
        }
    }
}

impl std::error::Error for MediaError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            MediaError::OpenCv(e) => Some(e),
            _ => None,
        }
    }
}

impl From<opencv::Error> for MediaError {
    fn from(e: opencv::Error) -> Self {
        MediaError::OpenCv(e)
    }
}

/// Limits OpenCV's own logging on stderr to errors, for the whole process. By default it
/// also prints warnings, e.g. one per capture backend that fails to open a missing camera.
pub fn quiet_opencv_logs() -> Result<()> {
    opencv::core::set_log_level(opencv::core::LogLevel::LOG_LEVEL_ERROR)?;
    Ok(())
}

/// Returns an [`MediaError::InvalidInput`] unless `width` and `height` are both positive.
fn check_size(what: &str, width: i32, height: i32) -> Result<()> {
    if width <= 0 || height <= 0 {
        return Err(MediaError::InvalidInput(format!(
            "{what}: size must be positive, got {width}x{height}"
        )));
    }
    Ok(())
}
