//! The benchmark frames on disk, for `img-client --jpeg FILE` (the client sends a file's
//! bytes as they are, so JPEG encoding is not measured). The frames themselves come from
//! [`udphub::media::testjpeg`].

use std::path::{Path, PathBuf};
use udphub::media::testjpeg::{noise_jpeg, noisy_pattern_jpeg};

/// A frame written to disk.
#[derive(Clone, Debug)]
pub struct Frame {
    pub path: PathBuf,
    /// Its length in bytes.
    pub bytes: usize,
}

/// Write `bytes` as `dir/name`.
pub fn write_frame(dir: &Path, name: &str, bytes: &[u8]) -> Result<Frame, String> {
    let path = dir.join(name);
    std::fs::write(&path, bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(Frame {
        path,
        bytes: bytes.len(),
    })
}

/// [`noisy_pattern_jpeg`] (the `w`x`h` test pattern at `quality`, noise added until the
/// JPEG is about `target` bytes) written as `dir/{prefix}{w}x{h}-q{quality}-noise.jpg`.
/// Programs that may run at the same time give different prefixes, so neither rewrites a
/// file the other is sending.
pub fn pattern_frame(
    dir: &Path,
    prefix: &str,
    (w, h): (i32, i32),
    quality: i32,
    target: usize,
) -> Result<Frame, String> {
    let bytes = noisy_pattern_jpeg(w, h, quality, target).map_err(|e| e.to_string())?;
    write_frame(
        dir,
        &format!("{prefix}{w}x{h}-q{quality}-noise.jpg"),
        &bytes,
    )
}

/// [`noise_jpeg`] (uniform noise at quality 100, about `target` bytes) written as
/// `dir/{prefix}noise-{w}x{h}-q100.jpg`.
pub fn noise_frame(dir: &Path, prefix: &str, target: usize) -> Result<Frame, String> {
    let (bytes, w, h) = noise_jpeg(target).map_err(|e| e.to_string())?;
    write_frame(dir, &format!("{prefix}noise-{w}x{h}-q100.jpg"), &bytes)
}
