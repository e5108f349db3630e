//! The file plumbing every layer shares: atomic writes (a temporary sibling, fsync,
//! rename, the folder synced), SHA-256 of files, and bounded reads. Export, the model
//! catalog, the worker's session saves and training all write through here, so a full
//! disk or a crash never leaves a half-written file in place of a good one; settings,
//! sessions, configs, tokenizers, images and weights are opened through here, so a FIFO,
//! a device such as `/dev/zero` or a folder is refused before it is read, and no file
//! larger than its kind can be is read into memory.

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
    /// A FIFO, a device, a socket or a folder where a file was expected.
    #[error("{}: is not a regular file ({kind})", path.display())]
    NotRegular { path: PathBuf, kind: &'static str },
    /// A file larger than anything of its kind can be.
    #[error("{}: is {size} bytes, more than the {max} bytes a {what} can be", path.display())]
    TooLarge { path: PathBuf, size: u64, max: u64, what: &'static str },
}

/// The largest settings file (JSON) read: a settings file is a few kilobytes.
pub const MAX_SETTINGS_BYTES: u64 = 16 << 20;
/// The largest model config (a taming YAML, a `config.json`) read.
pub const MAX_CONFIG_BYTES: u64 = 16 << 20;
/// The largest `tokenizer.json` read (CLIP's is 2.2 MB).
pub const MAX_TOKENIZER_BYTES: u64 = 64 << 20;
/// The largest session file read: its latent and optimiser moments at 8192×8192 with an
/// f8 VQGAN of 256 channels are 4 × 256 × 1024² f32 values, 4 GiB.
pub const MAX_SESSION_BYTES: u64 = 4 << 30;
/// The largest encoded image (init image, target, image prompt) read.
pub const MAX_IMAGE_BYTES: u64 = 256 << 20;

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

/// What a file that is not a regular file is, for messages.
fn kind_of(meta: &std::fs::Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_dir() {
        return "a folder";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "a FIFO";
        }
        if t.is_char_device() || t.is_block_device() {
            return "a device";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    "not a plain file"
}

/// Checks that `path` (after following links) is a regular file, without opening it (so
/// a FIFO never blocks); its length.
pub fn check_regular(path: &Path) -> Result<u64, FileError> {
    let meta = std::fs::metadata(path).map_err(|source| FileError::Read { path: path.to_path_buf(), source })?;
    if meta.is_file() {
        Ok(meta.len())
    } else {
        Err(FileError::NotRegular { path: path.to_path_buf(), kind: kind_of(&meta) })
    }
}

/// Opens a regular file for reading; its length. A FIFO, a device or a folder is refused
/// before it is opened, and again on the opened handle (so one swapped in between is
/// refused too; on Unix the open does not block on a FIFO).
pub fn open_regular(path: &Path) -> Result<(File, u64), FileError> {
    check_regular(path)?;
    let read_err = |source| FileError::Read { path: path.to_path_buf(), source };
    let mut options = OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK);
    }
    let file = options.open(path).map_err(read_err)?;
    let meta = file.metadata().map_err(read_err)?;
    if !meta.is_file() {
        return Err(FileError::NotRegular { path: path.to_path_buf(), kind: kind_of(&meta) });
    }
    Ok((file, meta.len()))
}

/// The whole of a regular file of at most `max` bytes (`what` names its kind in the
/// message), read with one allocation of its size. A file that grows while it is read
/// is cut off at `max + 1` bytes and refused.
pub fn read_bounded(path: &Path, max: u64, what: &'static str) -> Result<Vec<u8>, FileError> {
    let (file, len) = open_regular(path)?;
    let too_large = |size| FileError::TooLarge { path: path.to_path_buf(), size, max, what };
    if len > max {
        return Err(too_large(len));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    file.take(max.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|source| FileError::Read { path: path.to_path_buf(), source })?;
    if bytes.len() as u64 > max {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(bytes)
}

/// A regular text file of at most `max` bytes as UTF-8, a leading byte-order mark
/// (which Windows editors write) dropped.
pub fn read_text_bounded(path: &Path, max: u64, what: &'static str) -> Result<String, FileError> {
    let mut bytes = read_bounded(path, max, what)?;
    if bytes.starts_with(b"\xEF\xBB\xBF") {
        bytes.drain(..3);
    }
    String::from_utf8(bytes).map_err(|e| FileError::Read {
        path: path.to_path_buf(),
        source: io::Error::new(io::ErrorKind::InvalidData, format!("not UTF-8 text ({e})")),
    })
}

/// SHA-256 of a file as lowercase hex, streaming through a 1 MiB buffer (model files can
/// be gigabytes).
pub fn file_sha256(path: &Path) -> Result<String, FileError> {
    let read_err = |source| FileError::Read { path: path.to_path_buf(), source };
    let (mut file, _) = open_regular(path)?;
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

    #[test]
    fn only_regular_files_of_bounded_size_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let msg = read_bounded(dir.path(), 10, "settings file").unwrap_err().to_string();
        assert!(msg.ends_with("is not a regular file (a folder)"), "{msg}");
        #[cfg(unix)]
        {
            let msg = read_bounded(Path::new("/dev/zero"), 10, "settings file").unwrap_err().to_string();
            assert_eq!(msg, "/dev/zero: is not a regular file (a device)");
            let fifo = dir.path().join("fifo");
            assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
            // Refused without blocking, though nothing writes to it.
            let msg = read_bounded(&fifo, 10, "settings file").unwrap_err().to_string();
            assert!(msg.ends_with("is not a regular file (a FIFO)"), "{msg}");
            assert!(open_regular(&fifo).is_err());
        }
        let path = dir.path().join("a.json");
        std::fs::write(&path, "\u{feff}{\"a\": 1}").unwrap();
        assert_eq!(read_text_bounded(&path, 100, "settings file").unwrap(), "{\"a\": 1}");
        let msg = read_bounded(&path, 5, "settings file").unwrap_err().to_string();
        assert!(msg.ends_with("is 11 bytes, more than the 5 bytes a settings file can be"), "{msg}");
        std::fs::write(&path, b"\xff\xfe").unwrap();
        let msg = read_text_bounded(&path, 100, "settings file").unwrap_err().to_string();
        assert!(msg.contains("not UTF-8 text"), "{msg}");
        let msg = read_bounded(&dir.path().join("none"), 10, "image").unwrap_err().to_string();
        assert!(msg.contains("cannot read") && msg.contains("No such file"), "{msg}");
    }
}
