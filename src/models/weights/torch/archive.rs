//! The zip side of a checkpoint: everything that talks to [`zip::ZipArchive`].
//!
//! `torch.save` writes a zip of stored (uncompressed) entries: `<top>/data.pkl`, the
//! pickle; `<top>/byteorder`; and one `<top>/data/<key>` entry per storage. This file
//! finds `data.pkl`, checks that an entry is stored and not encrypted and how many of
//! the bytes its header claims the file really holds, reads small entries whole, and
//! reads a byte range of a storage for one tensor, so that no size taken from the file
//! is trusted before it is checked. Every entry that is read is checked against the
//! CRC-32 the zip's central directory records for it: whole entries as they are read,
//! a storage the first time any of it is read (over the bytes read when a tensor spans
//! the whole storage, as it usually does; by one streaming pass otherwise), so a
//! damaged checkpoint is reported as corrupt, naming the entry, instead of loaded.

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
    /// The CRC-32 the central directory records for the entry.
    crc32: u32,
}

/// Checks `bytes`, the whole of `entry`, against its recorded CRC-32.
fn check_crc(path: &Path, entry: &str, bytes: &[u8], recorded: u32) -> Result<(), TorchError> {
    let computed = crc32fast::hash(bytes);
    if computed == recorded {
        Ok(())
    } else {
        Err(TorchError::Corrupt { path: path.to_owned(), entry: entry.to_owned(), recorded, computed })
    }
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
    Ok(EntrySize { claimed, available, crc32: raw.crc32() })
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
    let EntrySize { claimed, available, crc32 } = stored_entry_size(path, zip, index, entry, file_len)?;
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
    check_crc(path, entry, &bytes, crc32)?;
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
        let EntrySize { claimed, available, crc32 } =
            stored_entry_size(&self.path, &mut zip, index, &entry, self.file_len)?;
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
        let whole = start == 0 && end as u64 == claimed;
        let mut verified = self.verified.lock().unwrap_or_else(PoisonError::into_inner);
        if !whole && !verified.contains(&entry) {
            // Part of a storage: check the whole entry once, streaming it.
            if claimed > available {
                return Err(TorchError::TruncatedEntry { path: self.path.clone(), entry, claimed, available });
            }
            let mut hasher = crc32fast::Hasher::new();
            let mut buf = vec![0u8; usize::try_from(claimed.min(1 << 20)).unwrap_or(1 << 20)];
            let mut left = claimed;
            while left > 0 {
                let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                reader.read_exact(&mut buf[..n]).map_err(read_err)?;
                hasher.update(&buf[..n]);
                left -= n as u64;
            }
            let computed = hasher.finalize();
            if computed != crc32 {
                return Err(TorchError::Corrupt { path: self.path.clone(), entry, recorded: crc32, computed });
            }
            verified.insert(entry.clone());
        }
        reader.seek(SeekFrom::Start(start as u64)).map_err(read_err)?;
        // `end <= available <= file length`, so this allocation is bounded by the file.
        let mut bytes = vec![0u8; end - start];
        reader.read_exact(&mut bytes).map_err(read_err)?;
        if whole && !verified.contains(&entry) {
            check_crc(&self.path, &entry, &bytes, crc32)?;
            verified.insert(entry);
        }
        Ok(bytes)
    }
}
