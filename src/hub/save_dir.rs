//! The `--save-dir` folder kept within `--save-max-bytes`: the saved frames are indexed
//! oldest first, and before a frame is written the oldest are deleted until it fits.
//!
//! Why: a saver that only adds files fills its disk (issue 11: 11,000 files a second from
//! one sender of tiny "JPEGs"). The index is built at start from the `.jpg` files already
//! there (oldest by modification time first), so a restarted hub keeps the cap too; only
//! `.jpg` files are ever deleted, never anything else a user keeps in the folder. The
//! number of files is capped as well ([`MAX_FILES`]), so the index itself stays small.

use std::collections::VecDeque;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// At most this many frames are kept, whatever their size.
pub const MAX_FILES: usize = 100_000;

/// The save folder and what it holds. See the module documentation.
pub struct SaveDir {
    dir: PathBuf,
    max_bytes: u64,
    max_files: usize,
    /// Saved frames, oldest first, with their sizes.
    files: VecDeque<(PathBuf, u64)>,
    total_bytes: u64,
}

impl SaveDir {
    /// Create `dir` if needed and index the frames already in it.
    pub fn open(dir: &Path, max_bytes: u64) -> io::Result<SaveDir> {
        Self::open_with(dir, max_bytes, MAX_FILES)
    }

    fn open_with(dir: &Path, max_bytes: u64, max_files: usize) -> io::Result<SaveDir> {
        fs::create_dir_all(dir)?;
        let mut found: Vec<(SystemTime, PathBuf, u64)> = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') || !name.ends_with(".jpg") {
                continue;
            }
            let meta = entry.metadata()?;
            if meta.is_file() {
                let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                found.push((mtime, entry.path(), meta.len()));
            }
        }
        found.sort();
        let total_bytes = found.iter().map(|(_, _, len)| len).sum();
        let mut save_dir = SaveDir {
            dir: dir.to_path_buf(),
            max_bytes,
            max_files: max_files.max(1),
            files: found.into_iter().map(|(_, p, len)| (p, len)).collect(),
            total_bytes,
        };
        save_dir.make_room(0);
        Ok(save_dir)
    }

    /// Bytes the saved frames take now.
    pub fn total_bytes(&self) -> u64 {
        self.total_bytes
    }

    /// Frames saved now.
    pub fn file_count(&self) -> usize {
        self.files.len()
    }

    /// Write `bytes` as `name` (temp file + rename), first deleting the oldest frames until
    /// it fits. A frame larger than the whole cap is refused.
    pub fn save(&mut self, name: &str, bytes: &[u8]) -> io::Result<()> {
        let len = bytes.len() as u64;
        if len > self.max_bytes {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "a {len}-byte frame is larger than --save-max-bytes ({})",
                    self.max_bytes
                ),
            ));
        }
        self.make_room(len);
        let path = self.dir.join(name);
        write_atomically(&path, bytes)?;
        self.files.push_back((path, len));
        self.total_bytes += len;
        Ok(())
    }

    /// Delete the oldest frames until `incoming` more bytes, and one more file, fit.
    fn make_room(&mut self, incoming: u64) {
        while self.total_bytes + incoming > self.max_bytes || self.files.len() >= self.max_files {
            let Some((path, len)) = self.files.pop_front() else {
                break;
            };
            self.total_bytes -= len;
            match fs::remove_file(&path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    log::warn!("save: cannot delete {}: {e}", path.display());
                }
                _ => {}
            }
        }
    }
}

/// Write `bytes` to `path` through a temp file and a rename.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("frame");
    let tmp: PathBuf = path.with_file_name(format!(".{name}.tmp"));
    let result = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.flush()?;
        drop(f);
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn the_oldest_frames_go_first_and_the_cap_holds() {
        let dir = tempfile::tempdir().unwrap();
        let mut save = SaveDir::open(dir.path(), 250).unwrap();
        for i in 0..10 {
            save.save(&format!("f{i}.jpg"), &[i as u8; 100]).unwrap();
            assert!(save.total_bytes() <= 250);
        }
        assert_eq!(names(dir.path()), ["f8.jpg", "f9.jpg"]);
        assert_eq!(fs::read(dir.path().join("f9.jpg")).unwrap(), [9u8; 100]);
        assert!(save.save("big.jpg", &[0; 251]).is_err());
        assert_eq!(
            names(dir.path()),
            ["f8.jpg", "f9.jpg"],
            "nothing deleted for it"
        );
    }

    #[test]
    fn files_already_there_are_counted_oldest_first_and_others_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        for (i, name) in ["old.jpg", "mid.jpg", "new.jpg"].iter().enumerate() {
            fs::write(dir.path().join(name), [0u8; 100]).unwrap();
            let f = fs::File::options()
                .write(true)
                .open(dir.path().join(name))
                .unwrap();
            let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000 + i as u64);
            f.set_modified(t).unwrap();
        }
        fs::write(dir.path().join("notes.txt"), [0u8; 1000]).unwrap();
        // 250 bytes: opening keeps the newest two
        let mut save = SaveDir::open(dir.path(), 250).unwrap();
        assert_eq!(save.total_bytes(), 200);
        assert_eq!(names(dir.path()), ["mid.jpg", "new.jpg", "notes.txt"]);
        save.save("next.jpg", &[1; 100]).unwrap();
        assert_eq!(names(dir.path()), ["new.jpg", "next.jpg", "notes.txt"]);
    }

    #[test]
    fn the_file_count_is_capped_too() {
        let dir = tempfile::tempdir().unwrap();
        let mut save = SaveDir::open_with(dir.path(), 1 << 20, 3).unwrap();
        for i in 0..10 {
            save.save(&format!("f{i}.jpg"), &[0; 5]).unwrap();
        }
        assert_eq!(save.file_count(), 3);
        assert_eq!(names(dir.path()), ["f7.jpg", "f8.jpg", "f9.jpg"]);
    }
}
