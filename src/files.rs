//! The file plumbing every layer that writes shares: atomic writes (a temporary sibling,
//! fsync, rename, the folder synced) and SHA-256 of files. Export, the model catalog, the
//! worker's session saves and training all write through here, so a full disk or a crash
//! never leaves a half-written file in place of a good one.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};

/// A file that could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// Creating, writing, syncing or renaming a file failed.
    #[error("{}: cannot write: {source}", path.display())]
    Write { path: PathBuf, source: io::Error },
    /// Opening or reading a file failed.
    #[error("{}: cannot read: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("{}: not a file path", path.display())]
    NotAFile { path: PathBuf },
}

/// Distinguishes temporary names within this process; the pid distinguishes processes.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// The folder a path lives in (`.` for a bare file name).
pub(crate) fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Creates a fresh, empty temporary sibling of `path`: `.<name>.<pid>.<n>.tmp` in the
/// same folder (so the final rename never crosses filesystems). `create_new` guarantees
/// it is ours; a stale leftover of the same name is skipped, not clobbered.
pub(crate) fn create_temp_sibling(path: &Path) -> Result<(PathBuf, File), FileError> {
    let name = path.file_name().ok_or_else(|| FileError::NotAFile { path: path.to_path_buf() })?;
    let dir = parent_dir(path);
    let pid = std::process::id();
    let mut last_err = None;
    for _ in 0..16 {
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let mut temp_name = std::ffi::OsString::from(".");
        temp_name.push(name);
        temp_name.push(format!(".{pid}.{n}.tmp"));
        let temp = dir.join(temp_name);
        match OpenOptions::new().write(true).create_new(true).open(&temp) {
            Ok(file) => return Ok((temp, file)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last_err = Some(e),
            Err(e) => return Err(FileError::Write { path: path.to_path_buf(), source: e }),
        }
    }
    let source = last_err.unwrap_or_else(|| io::Error::from(io::ErrorKind::AlreadyExists));
    Err(FileError::Write { path: path.to_path_buf(), source })
}

/// Checks, before any work, that [`write_atomic`] could write `path` now: it is not a
/// folder, and a temporary sibling can be created in its folder (and is removed again).
/// Asking the filesystem finds what a write would: a missing folder, permissions, ACLs,
/// a read-only mount, a full inode table.
pub fn check_writable(path: &Path) -> Result<(), FileError> {
    if path.is_dir() {
        let source = io::Error::new(io::ErrorKind::IsADirectory, "it is a folder");
        return Err(FileError::Write { path: path.to_path_buf(), source });
    }
    let (temp, file) = create_temp_sibling(path)?;
    drop(file);
    let _ = std::fs::remove_file(&temp);
    Ok(())
}

/// Makes a finished rename durable by syncing the folder's entry. Best effort: some
/// filesystems (and all non-Unix systems) cannot sync a directory, and the data itself is
/// already on disk by then.
fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    #[cfg(not(unix))]
    let _ = dir;
}

/// Moves a complete, synced temporary file into place; on failure removes it.
pub(crate) fn commit(temp: &Path, path: &Path) -> Result<(), FileError> {
    if let Err(e) = std::fs::rename(temp, path) {
        let _ = std::fs::remove_file(temp);
        return Err(FileError::Write { path: path.to_path_buf(), source: e });
    }
    sync_dir(parent_dir(path));
    Ok(())
}

/// The core of [`write_atomic`], for writers with errors of their own (encoders that tell
/// format errors from I/O ones): write to a temporary sibling, sync, rename into place;
/// on any error the temporary file is removed and `path` is untouched.
pub fn write_atomic_with<E: From<FileError>>(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<File>) -> Result<(), E>,
) -> Result<(), E> {
    let (temp, file) = create_temp_sibling(path)?;
    let io_err = |source: io::Error| FileError::Write { path: path.to_path_buf(), source };
    let result = (|| {
        let mut w = BufWriter::with_capacity(1 << 16, file);
        write(&mut w)?;
        let file = w.into_inner().map_err(|e| io_err(e.into_error()))?;
        file.sync_all().map_err(io_err)?;
        Ok(())
    })();
    match result {
        Ok(()) => Ok(commit(&temp, path)?),
        Err(e) => {
            let _ = std::fs::remove_file(&temp);
            Err(e)
        }
    }
}

/// Writes bytes via temp+fsync+rename: on any error the temporary file is removed and
/// the destination is untouched. Errors (the closure's included) become
/// [`FileError::Write`] naming `path`.
pub fn write_atomic(path: &Path, write: impl FnOnce(&mut BufWriter<File>) -> io::Result<()>) -> Result<(), FileError> {
    write_atomic_with(path, |w| write(w).map_err(|source| FileError::Write { path: path.to_path_buf(), source }))
}

/// SHA-256 of a file as lowercase hex, streaming through a 1 MiB buffer (model files can
/// be gigabytes).
pub fn file_sha256(path: &Path) -> Result<String, FileError> {
    let read_err = |source| FileError::Read { path: path.to_path_buf(), source };
    let mut file = File::open(path).map_err(read_err)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => hasher.update(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(read_err(e)),
        }
    }
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names_are_hidden_siblings() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.png");
        let (t1, _f1) = create_temp_sibling(&path).unwrap();
        let (t2, _f2) = create_temp_sibling(&path).unwrap();
        assert_ne!(t1, t2);
        for t in [&t1, &t2] {
            assert_eq!(t.parent(), path.parent());
            let name = t.file_name().unwrap().to_string_lossy().into_owned();
            assert!(name.starts_with(".a.png.") && name.ends_with(".tmp"), "{name}");
            assert!(name.contains(&std::process::id().to_string()), "{name}");
        }
        // A bare file name lives in the current folder.
        assert_eq!(parent_dir(Path::new("x.png")), Path::new("."));
    }

    #[test]
    fn check_writable_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        check_writable(&dir.path().join("a.png")).unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        let missing = dir.path().join("no/a.png");
        let msg = check_writable(&missing).unwrap_err().to_string();
        assert!(msg.starts_with(&missing.display().to_string()) && msg.contains("No such file"), "{msg}");
        let msg = check_writable(dir.path()).unwrap_err().to_string();
        assert!(msg.contains("it is a folder"), "{msg}");
    }
}
