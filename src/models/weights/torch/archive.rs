//! The zip side of a checkpoint: everything that talks to [`zip::ZipArchive`].
//!
//! `torch.save` writes a zip of stored (uncompressed) entries: `<top>/data.pkl`, the
//! pickle; `<top>/byteorder`; and one `<top>/data/<key>` entry per storage. This file
//! finds `data.pkl`, checks that an entry is stored and not encrypted and how many of
//! the bytes its header claims the file really holds, reads small entries whole
//! (CRC-checked by the zip reader), and reads a byte range of a storage for one tensor,
//! so that no size taken from the file is trusted before it is checked.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::PoisonError;

use zip::{CompressionMethod, ZipArchive};

use super::{TensorInfo, TorchArchive, TorchError};

/// The `data.pkl` entry: `<top>/data.pkl` with a single top folder, or `data.pkl`.
pub(super) fn find_pickle(zip: &ZipArchive<File>) -> Option<String> {
    zip.file_names()
        .filter_map(Result::ok)
        .find(|name| {
            name.strip_suffix("data.pkl")
                .is_some_and(|dir| dir.is_empty() || (dir.ends_with('/') && dir.matches('/').count() == 1))
        })
        .map(std::borrow::Cow::into_owned)
}

/// Sizes of a stored zip entry: what its header claims, and how much of that the file
/// actually holds.
struct EntrySize {
    claimed: u64,
    available: u64,
}

/// The size of stored entry `index`, after checking that it is neither compressed nor
/// encrypted.
fn stored_entry_size(
    path: &Path,
    zip: &mut ZipArchive<File>,
    index: usize,
    entry: &str,
    file_len: u64,
) -> Result<EntrySize, TorchError> {
    let raw = zip.by_index_raw(index).map_err(|cause| TorchError::Zip {
        path: path.to_owned(),
        context: format!("cannot open '{entry}'"),
        cause,
    })?;
    let method = raw.compression();
    if method != CompressionMethod::Stored {
        let method = if method == CompressionMethod::DEFLATE { "deflate".to_owned() } else { method.to_string() };
        return Err(TorchError::Compressed { path: path.to_owned(), entry: entry.to_owned(), method });
    }
    if raw.encrypted() {
        return Err(TorchError::Unsupported {
            path: path.to_owned(),
            reason: format!("zip entry '{entry}' is encrypted"),
        });
    }
    let claimed = raw.size();
    let start = raw.data_start().ok_or_else(|| TorchError::Unsupported {
        path: path.to_owned(),
        reason: format!("zip entry '{entry}': where its data starts is not known"),
    })?;
    let available = file_len.saturating_sub(start).min(claimed);
    Ok(EntrySize { claimed, available })
}

/// The whole content of a stored entry of at most `max_len` bytes, CRC-checked.
pub(super) fn read_whole_entry(
    path: &Path,
    zip: &mut ZipArchive<File>,
    entry: &str,
    file_len: u64,
    max_len: u64,
) -> Result<Vec<u8>, TorchError> {
    let index = zip.index_for_name(entry).ok_or_else(|| TorchError::MissingPickle { path: path.to_owned() })?;
    let EntrySize { claimed, available } = stored_entry_size(path, zip, index, entry, file_len)?;
    if claimed > available {
        return Err(TorchError::TruncatedEntry { path: path.to_owned(), entry: entry.to_owned(), claimed, available });
    }
    if claimed > max_len {
        return Err(TorchError::Unsupported {
            path: path.to_owned(),
            reason: format!("zip entry '{entry}' is {claimed} bytes, more than the {max_len} expected"),
        });
    }
    let read_err = |cause| TorchError::ReadEntry { path: path.to_owned(), entry: entry.to_owned(), cause };
    let reader = zip.by_index(index).map_err(|cause| TorchError::Zip {
        path: path.to_owned(),
        context: format!("cannot open '{entry}'"),
        cause,
    })?;
    // `claimed <= available <= file length`, so this allocation is bounded by the file.
    let capacity = usize::try_from(claimed).map_err(|_| read_err(io::ErrorKind::OutOfMemory.into()))?;
    let mut bytes = Vec::with_capacity(capacity);
    reader.take(claimed).read_to_end(&mut bytes).map_err(read_err)?;
    Ok(bytes)
}

impl TorchArchive {
    /// Bytes `start..end` of the storage of `tensor`, checked against the entry's size.
    pub(super) fn read_storage(
        &self,
        tensor: &str,
        info: &TensorInfo,
        start: usize,
        end: usize,
    ) -> Result<Vec<u8>, TorchError> {
        let entry = format!("{}data/{}", self.prefix, info.storage_key);
        let mut zip = self.zip.lock().unwrap_or_else(PoisonError::into_inner);
        let index = zip.index_for_name(&entry).ok_or_else(|| TorchError::MissingStorage {
            path: self.path.clone(),
            entry: entry.clone(),
            tensor: tensor.to_owned(),
        })?;
        let available = stored_entry_size(&self.path, &mut zip, index, &entry, self.file_len)?.available;
        if available < end as u64 {
            return Err(TorchError::Truncated {
                path: self.path.clone(),
                entry,
                tensor: tensor.to_owned(),
                actual: available,
                needed: end as u64,
            });
        }
        let read_err = |cause| TorchError::ReadEntry { path: self.path.clone(), entry: entry.clone(), cause };
        let mut reader = zip.by_index_seek(index).map_err(|cause| TorchError::Zip {
            path: self.path.clone(),
            context: format!("cannot open '{entry}'"),
            cause,
        })?;
        reader.seek(SeekFrom::Start(start as u64)).map_err(read_err)?;
        // `end <= available <= file length`, so this allocation is bounded by the file.
        let mut bytes = vec![0u8; end - start];
        reader.read_exact(&mut bytes).map_err(read_err)?;
        Ok(bytes)
    }
}
