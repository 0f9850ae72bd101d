//! Writes small video files from the test pattern, for tests and demos.
//!
//! Tests of the `--video FILE` path need a video without shipping one in the repository,
//! so they make one here. The format is Motion-JPEG in an AVI container, written by
//! OpenCV's own built-in MJPEG writer: it needs no external codec library, and Debian's
//! OpenCV reads it back frame for frame.

use std::path::Path;

use opencv::core::Size;
use opencv::prelude::*;
use opencv::videoio::{self, VideoWriter};

use super::source::{FrameSource, PatternSource};
use super::{check_size, MediaError, Result};

/// Writes `frames` frames of [`PatternSource`] at `width` x `height` and `fps` to `path`.
///
/// The file is MJPG in AVI, so give `path` the `.avi` extension (other extensions are
/// refused by the writer). Reading it back with `VideoFileSource` yields exactly `frames`
/// frames of that size.
pub fn write_test_video(
    path: &Path,
    frames: usize,
    width: i32,
    height: i32,
    fps: f64,
) -> Result<()> {
    check_size("test video", width, height)?;
    if !(fps.is_finite() && fps > 0.0) {
        return Err(MediaError::InvalidInput(format!(
            "test video: fps must be positive, got {fps}"
        )));
    }
    let cannot = |reason: String| MediaError::CannotOpen {
        path: path.to_owned(),
        reason,
    };
    let fourcc = VideoWriter::fourcc('M', 'J', 'P', 'G')?;
    let mut writer = VideoWriter::new_with_backend(
        path,
        videoio::CAP_OPENCV_MJPEG,
        fourcc,
        fps,
        Size::new(width, height),
        true,
    )
    .map_err(|e| cannot(format!("OpenCV failed: {}", e.message)))?;
    if !writer.is_opened()? {
        return Err(cannot(
            "OpenCV's MJPEG writer refused it (is the extension .avi and the folder writable?)"
                .into(),
        ));
    }
    let mut pattern = PatternSource::new(width, height);
    for _ in 0..frames {
        let frame = pattern
            .next_frame()?
            .ok_or_else(|| MediaError::InvalidInput("test pattern ended".into()))?;
        writer.write(&frame)?;
    }
    writer.release()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_arguments_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.avi");
        assert!(write_test_video(&path, 1, 0, 10, 10.0).is_err());
        assert!(write_test_video(&path, 1, 10, 10, 0.0).is_err());
        assert!(write_test_video(&path, 1, 10, 10, f64::NAN).is_err());
        let no_dir = dir.path().join("no/such/dir/v.avi");
        assert!(write_test_video(&no_dir, 1, 16, 16, 10.0).is_err());
    }
}
