//! A safe reader for PyTorch checkpoints written by `torch.save` (the zip format of
//! PyTorch 1.6 and later): Hugging Face `pytorch_model.bin` files and PyTorch Lightning
//! `.ckpt` files.
//!
//! This module is responsible for turning such a file into named tensors and nothing
//! else. It runs a small pickle virtual machine over `<top>/data.pkl` that understands
//! the opcodes `torch.save` emits (protocols 2 to 5), recognises tensors
//! (`torch._utils._rebuild_tensor_v2`, `_rebuild_parameter`), storages (persistent ids)
//! and dicts (`collections.OrderedDict`), and represents every other class generically
//! so that optimizer states, callbacks and hyper-parameters of arbitrary classes are
//! parsed and ignored. Nothing from the file is ever executed or imported.
//!
//! Raw storage bytes (`<top>/data/<key>`) are read lazily, one tensor at a time, so a
//! checkpoint much larger than memory (optimizer states included) can be opened. Every
//! length and index taken from the file is checked before it is used: a crafted or
//! damaged file gives a [`TorchError`] whose one-line message names the file (and the
//! tensor, where one is involved), never a panic or an unbounded allocation. The pickle
//! machine keeps its objects in a flat arena, so no nesting depth can overflow the stack,
//! and the number of values it creates is bounded.

use std::cell::Cell;
use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use half::{bf16, f16};
use zip::result::ZipError;
use zip::{CompressionMethod, ZipArchive};

/// The pickle machine's budget, in values (about 16 bytes each): every stack push, mark
/// and memo entry costs one, and copying text or tensor metadata out of existing objects
/// costs in proportion. This bounds its memory to a few hundred MB whatever the file.
const MAX_VALUES: usize = 10_000_000;
/// The most elements a tensor whose strides overlap (e.g. stride 0 from `expand`) may
/// expand to beyond the storage span it covers.
const MAX_OVERLAP_ELEMENTS: usize = 1 << 26;
/// How deeply `torch._tensor._rebuild_from_type_v2` wrappers may nest.
const MAX_REBUILD_DEPTH: usize = 4;
/// The largest `byteorder` entry accepted.
const MAX_BYTEORDER_LEN: u64 = 64;

/// Errors from opening or reading a PyTorch checkpoint. Every message is one line that
/// starts with the file path.
#[derive(Debug, thiserror::Error)]
pub enum TorchError {
    #[error("{}: {cause}", .path.display())]
    Io { path: PathBuf, cause: io::Error },

    #[error(
        "{}: not a PyTorch zip checkpoint (legacy pre-1.6 format or another file type)",
        .path.display()
    )]
    NotZip { path: PathBuf },

    #[error("{}: {context}: {cause}", .path.display())]
    Zip { path: PathBuf, context: String, cause: ZipError },

    #[error(
        "{}: no data.pkl entry in the zip archive (not a torch.save checkpoint)",
        .path.display()
    )]
    MissingPickle { path: PathBuf },

    #[error(
        "{}: zip entry '{entry}' is compressed ({method}); only stored (uncompressed) \
         entries, as torch.save writes them, are supported",
        .path.display()
    )]
    Compressed { path: PathBuf, entry: String, method: String },

    #[error("{}: {reason}", .path.display())]
    Unsupported { path: PathBuf, reason: String },

    #[error("{}: pickle opcode 0x{opcode:02x} at byte {offset} is not supported", .path.display())]
    UnsupportedOpcode { path: PathBuf, opcode: u8, offset: usize },

    #[error("{}: malformed pickle at byte {offset}: {reason}", .path.display())]
    Pickle { path: PathBuf, offset: usize, reason: String },

    #[error("{}: no '{key}' entry (top-level keys: {keys})", .path.display())]
    MissingKey { path: PathBuf, key: String, keys: String },

    #[error("{}: expected {expected}, but {found}", .path.display())]
    Structure { path: PathBuf, expected: String, found: String },

    #[error("{}: no tensor named '{name}'", .path.display())]
    NoSuchTensor { path: PathBuf, name: String },

    #[error(
        "{}: storage '{entry}' of tensor '{tensor}' is missing from the archive",
        .path.display()
    )]
    MissingStorage { path: PathBuf, entry: String, tensor: String },

    #[error(
        "{}: truncated: storage '{entry}' is {actual} bytes, tensor '{tensor}' needs {needed}",
        .path.display()
    )]
    Truncated { path: PathBuf, entry: String, tensor: String, actual: u64, needed: u64 },

    #[error(
        "{}: truncated: zip entry '{entry}' claims {claimed} bytes but the file holds only {available}",
        .path.display()
    )]
    TruncatedEntry { path: PathBuf, entry: String, claimed: u64, available: u64 },

    #[error("{}: cannot read '{entry}': {cause}", .path.display())]
    ReadEntry { path: PathBuf, entry: String, cause: io::Error },

    #[error("{}: tensor '{tensor}' has dtype {dtype}, which cannot be read as f32", .path.display())]
    UnsupportedDtype { path: PathBuf, tensor: String, dtype: DType },

    #[error("{}: tensor '{tensor}': {reason}", .path.display())]
    BadTensor { path: PathBuf, tensor: String, reason: String },
}

/// The element type of a stored tensor, from its storage class (`torch.FloatStorage`…).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F64,
    F16,
    BF16,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
    /// A storage class this reader cannot convert (complex, quantized…), by name.
    Other(String),
}

impl DType {
    fn from_storage_class(name: &str) -> Self {
        match name {
            "FloatStorage" => Self::F32,
            "DoubleStorage" => Self::F64,
            "HalfStorage" => Self::F16,
            "BFloat16Storage" => Self::BF16,
            "LongStorage" => Self::I64,
            "IntStorage" => Self::I32,
            "ShortStorage" => Self::I16,
            "CharStorage" => Self::I8,
            "ByteStorage" | "UntypedStorage" => Self::U8,
            "BoolStorage" => Self::Bool,
            other => Self::Other(other.to_owned()),
        }
    }

    /// Bytes per element, or `None` for [`DType::Other`].
    pub fn size_in_bytes(&self) -> Option<usize> {
        match self {
            Self::F64 | Self::I64 => Some(8),
            Self::F32 | Self::I32 => Some(4),
            Self::F16 | Self::BF16 | Self::I16 => Some(2),
            Self::I8 | Self::U8 | Self::Bool => Some(1),
            Self::Other(_) => None,
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Self::F32 => "f32",
            Self::F64 => "f64",
            Self::F16 => "f16",
            Self::BF16 => "bf16",
            Self::I64 => "i64",
            Self::I32 => "i32",
            Self::I16 => "i16",
            Self::I8 => "i8",
            Self::U8 => "u8",
            Self::Bool => "bool",
            Self::Other(class) => class,
        };
        f.write_str(name)
    }
}

/// Where a tensor's elements live and how they are laid out, as recorded in the pickle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub dtype: DType,
    pub shape: Vec<usize>,
    /// Strides in elements, one per dimension of `shape`.
    pub stride: Vec<usize>,
    /// The storage's key: its bytes are the zip entry `<top>/data/<storage_key>`.
    pub storage_key: String,
    /// Offset of the first element in the storage, in elements.
    pub storage_offset: usize,
    /// The device the tensor was saved from (`cpu`, `cuda:0`…); informational only.
    pub location: String,
}

impl TensorInfo {
    /// The number of elements, or `None` if the product of the dimensions overflows.
    pub fn numel(&self) -> Option<usize> {
        self.shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d))
    }

    /// Whether the strides are those of a row-major (C-contiguous) tensor.
    fn is_contiguous(&self) -> bool {
        let mut expected = 1usize;
        for (&size, &stride) in self.shape.iter().zip(&self.stride).rev() {
            if size != 1 && stride != expected {
                return false;
            }
            expected = expected.saturating_mul(size);
        }
        true
    }

    /// Elements spanned from the storage offset to one past the last element,
    /// for a non-empty tensor; `None` on overflow.
    fn extent(&self) -> Option<usize> {
        self.shape
            .iter()
            .zip(&self.stride)
            .try_fold(1usize, |acc, (&size, &stride)| acc.checked_add(size.checked_sub(1)?.checked_mul(stride)?))
    }
}

/// An opened PyTorch checkpoint: the tensors of the selected state dict, whose data is
/// read from the file on demand.
pub struct TorchArchive {
    path: PathBuf,
    /// The top folder of the zip entries including its trailing `/` (usually `archive/`).
    prefix: String,
    zip: Mutex<ZipArchive<File>>,
    file_len: u64,
    tensors: Vec<(String, TensorInfo)>,
    index: HashMap<String, usize>,
    top_level_keys: Vec<String>,
}

impl fmt::Debug for TorchArchive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TorchArchive")
            .field("path", &self.path)
            .field("prefix", &self.prefix)
            .field("tensors", &self.tensors.len())
            .finish_non_exhaustive()
    }
}

impl TorchArchive {
    /// Open `path` and parse its pickle.
    ///
    /// `key`: `None` takes the top-level pickle object as the state dict (Hugging Face
    /// `pytorch_model.bin`); `Some("state_dict")` takes that entry of the top-level dict
    /// (Lightning `.ckpt`). The selected object must be a dict; its string-keyed tensor
    /// values are the tensors of the archive and any other values are skipped.
    pub fn open(path: &Path, key: Option<&str>) -> Result<Self, TorchError> {
        let io_err = |cause| TorchError::Io { path: path.to_owned(), cause };
        let mut file = File::open(path).map_err(io_err)?;
        let file_len = file.metadata().map_err(io_err)?.len();
        let mut magic = Vec::with_capacity(2);
        file.by_ref().take(2).read_to_end(&mut magic).map_err(io_err)?;
        if magic != b"PK" {
            return Err(TorchError::NotZip { path: path.to_owned() });
        }
        file.seek(SeekFrom::Start(0)).map_err(io_err)?;
        let mut zip = ZipArchive::new(file).map_err(|cause| TorchError::Zip {
            path: path.to_owned(),
            context: "corrupt or truncated zip archive".into(),
            cause,
        })?;

        let pickle_name = find_pickle(&zip).ok_or_else(|| TorchError::MissingPickle { path: path.to_owned() })?;
        let prefix = pickle_name[..pickle_name.len() - "data.pkl".len()].to_owned();

        let byteorder_name = format!("{prefix}byteorder");
        if zip.index_for_name(&byteorder_name).is_some() {
            let order = read_whole_entry(path, &mut zip, &byteorder_name, file_len, MAX_BYTEORDER_LEN)?;
            match order.trim_ascii() {
                b"little" => {}
                b"big" => {
                    return Err(TorchError::Unsupported {
                        path: path.to_owned(),
                        reason: "big-endian checkpoints are not supported".into(),
                    })
                }
                other => {
                    return Err(TorchError::Unsupported {
                        path: path.to_owned(),
                        reason: format!("unknown byte order '{}'", String::from_utf8_lossy(other)),
                    })
                }
            }
        }

        let pickle = read_whole_entry(path, &mut zip, &pickle_name, file_len, u64::MAX)?;
        let mut machine = Machine::new(&pickle, MAX_VALUES);
        let pickle_err = |e: PickleError| e.into_torch(path);
        let root = machine.run().map_err(pickle_err)?;
        let top_level_keys = machine.string_keys(root).map_err(pickle_err)?;

        let selected = match key {
            None => root,
            Some(key) => {
                if !machine.is_dict(root) {
                    return Err(TorchError::Structure {
                        path: path.to_owned(),
                        expected: format!("a dict with a '{key}' entry at the top level"),
                        found: format!("the top-level object is {}", machine.describe(root)),
                    });
                }
                machine.dict_get(root, key).ok_or_else(|| TorchError::MissingKey {
                    path: path.to_owned(),
                    key: key.to_owned(),
                    keys: key_list(&top_level_keys),
                })?
            }
        };
        let tensors = machine.tensors_of(selected).map_err(pickle_err)?;
        let tensors = tensors.ok_or_else(|| TorchError::Structure {
            path: path.to_owned(),
            expected: "a dict of tensors (a state dict)".into(),
            found: match key {
                None => format!("the top-level object is {}", machine.describe(selected)),
                Some(key) => format!("'{key}' is {}", machine.describe(selected)),
            },
        })?;
        let index = tensors.iter().enumerate().map(|(i, (name, _))| (name.clone(), i)).collect();

        Ok(Self { path: path.to_owned(), prefix, zip: Mutex::new(zip), file_len, tensors, index, top_level_keys })
    }

    /// The file this archive was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Names of all tensors in the selected state dict, in file order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.iter().map(|(name, _)| name.as_str())
    }

    /// All tensors of the selected state dict with their layout, in file order.
    pub fn tensors(&self) -> impl Iterator<Item = (&str, &TensorInfo)> {
        self.tensors.iter().map(|(name, info)| (name.as_str(), info))
    }

    /// The layout of tensor `name`, if the state dict holds it.
    pub fn info(&self, name: &str) -> Option<&TensorInfo> {
        self.index.get(name).map(|&i| &self.tensors[i].1)
    }

    /// The string keys of the top-level pickle object when it is a dict (for messages such
    /// as "this file holds keys X, Y"); empty otherwise.
    pub fn top_level_keys(&self) -> Vec<String> {
        self.top_level_keys.clone()
    }

    /// Read tensor `name` as f32 in contiguous row-major order, applying its shape,
    /// stride and storage offset. Returns the shape and the values.
    ///
    /// f32, f16, bf16 and f64 are converted to f32; integer and bool tensors are converted
    /// too (`as f32`, bool as 0.0/1.0, large i64 values lose precision). Other dtypes are
    /// an error. A view whose strides overlap (stride 0) may expand to at most 2^26
    /// elements more than the storage span it covers.
    pub fn read_f32(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>), TorchError> {
        let info = self
            .info(name)
            .ok_or_else(|| TorchError::NoSuchTensor { path: self.path.clone(), name: name.to_owned() })?;
        let bad = |reason: String| TorchError::BadTensor { path: self.path.clone(), tensor: name.to_owned(), reason };
        let elem_size = info.dtype.size_in_bytes().ok_or_else(|| TorchError::UnsupportedDtype {
            path: self.path.clone(),
            tensor: name.to_owned(),
            dtype: info.dtype.clone(),
        })?;
        let numel = info.numel().ok_or_else(|| bad(format!("shape {:?} has too many elements", info.shape)))?;
        if numel == 0 {
            return Ok((info.shape.clone(), Vec::new()));
        }
        let overflow = || {
            bad(format!(
                "shape {:?}, stride {:?} and storage offset {} overflow",
                info.shape, info.stride, info.storage_offset
            ))
        };
        let extent = info.extent().ok_or_else(overflow)?;
        if numel > extent && numel - extent > MAX_OVERLAP_ELEMENTS {
            return Err(bad(format!("overlapping strides expand {extent} stored elements to {numel}; refusing")));
        }
        let start = info.storage_offset.checked_mul(elem_size).ok_or_else(overflow)?;
        let end =
            info.storage_offset.checked_add(extent).and_then(|n| n.checked_mul(elem_size)).ok_or_else(overflow)?;
        let bytes = self.read_storage(name, info, start, end)?;
        let flat = decode(&info.dtype, &bytes);
        let values = if info.is_contiguous() { flat } else { gather(&flat, &info.shape, &info.stride, numel) };
        Ok((info.shape.clone(), values))
    }

    /// Bytes `start..end` of the storage of `tensor`, checked against the entry's size.
    fn read_storage(&self, tensor: &str, info: &TensorInfo, start: usize, end: usize) -> Result<Vec<u8>, TorchError> {
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

/// Keys for an error message: all of them if few, else the first ten and a count.
fn key_list(keys: &[String]) -> String {
    const SHOWN: usize = 10;
    if keys.len() <= SHOWN {
        keys.join(", ")
    } else {
        format!("{}, … and {} more", keys[..SHOWN].join(", "), keys.len() - SHOWN)
    }
}

/// The `data.pkl` entry: `<top>/data.pkl` with a single top folder, or `data.pkl`.
fn find_pickle(zip: &ZipArchive<File>) -> Option<String> {
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
fn read_whole_entry(
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

/// Little-endian elements of `dtype` to f32.
fn decode(dtype: &DType, bytes: &[u8]) -> Vec<f32> {
    fn each<const N: usize>(bytes: &[u8], f: impl Fn([u8; N]) -> f32) -> Vec<f32> {
        bytes
            .chunks_exact(N)
            .map(|chunk| {
                let mut array = [0u8; N];
                array.copy_from_slice(chunk);
                f(array)
            })
            .collect()
    }
    match dtype {
        DType::F32 => each(bytes, f32::from_le_bytes),
        DType::F64 => each(bytes, |b| f64::from_le_bytes(b) as f32),
        DType::F16 => each(bytes, |b| f16::from_le_bytes(b).to_f32()),
        DType::BF16 => each(bytes, |b| bf16::from_le_bytes(b).to_f32()),
        DType::I64 => each(bytes, |b| i64::from_le_bytes(b) as f32),
        DType::I32 => each(bytes, |b| i32::from_le_bytes(b) as f32),
        DType::I16 => each(bytes, |b| f32::from(i16::from_le_bytes(b))),
        DType::I8 => each(bytes, |b| f32::from(i8::from_le_bytes(b))),
        DType::U8 => each(bytes, |b| f32::from(u8::from_le_bytes(b))),
        DType::Bool => each(bytes, |b: [u8; 1]| if b[0] != 0 { 1.0 } else { 0.0 }),
        DType::Other(_) => Vec::new(),
    }
}

/// The elements of a strided view of `flat` (which starts at the storage offset), in
/// row-major order. `flat` must cover the view's extent.
fn gather(flat: &[f32], shape: &[usize], stride: &[usize], numel: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(numel);
    let mut index = vec![0usize; shape.len()];
    let mut pos = 0usize;
    for _ in 0..numel {
        out.push(flat[pos]);
        for d in (0..shape.len()).rev() {
            if index[d] + 1 < shape[d] {
                index[d] += 1;
                pos += stride[d];
                break;
            }
            pos -= index[d] * stride[d];
            index[d] = 0;
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// The pickle virtual machine.
// ---------------------------------------------------------------------------------------

/// Pickle opcodes (see CPython's `Lib/pickle.py`).
mod op {
    pub const MARK: u8 = b'(';
    pub const STOP: u8 = b'.';
    pub const POP: u8 = b'0';
    pub const POP_MARK: u8 = b'1';
    pub const DUP: u8 = b'2';
    pub const FLOAT: u8 = b'F';
    pub const INT: u8 = b'I';
    pub const BININT: u8 = b'J';
    pub const BININT1: u8 = b'K';
    pub const LONG: u8 = b'L';
    pub const BININT2: u8 = b'M';
    pub const NONE: u8 = b'N';
    pub const PERSID: u8 = b'P';
    pub const BINPERSID: u8 = b'Q';
    pub const REDUCE: u8 = b'R';
    pub const BINSTRING: u8 = b'T';
    pub const SHORT_BINSTRING: u8 = b'U';
    pub const UNICODE: u8 = b'V';
    pub const BINUNICODE: u8 = b'X';
    pub const APPEND: u8 = b'a';
    pub const BUILD: u8 = b'b';
    pub const GLOBAL: u8 = b'c';
    pub const DICT: u8 = b'd';
    pub const EMPTY_DICT: u8 = b'}';
    pub const APPENDS: u8 = b'e';
    pub const GET: u8 = b'g';
    pub const BINGET: u8 = b'h';
    pub const LONG_BINGET: u8 = b'j';
    pub const LIST: u8 = b'l';
    pub const EMPTY_LIST: u8 = b']';
    pub const PUT: u8 = b'p';
    pub const BINPUT: u8 = b'q';
    pub const LONG_BINPUT: u8 = b'r';
    pub const SETITEM: u8 = b's';
    pub const TUPLE: u8 = b't';
    pub const EMPTY_TUPLE: u8 = b')';
    pub const SETITEMS: u8 = b'u';
    pub const BINFLOAT: u8 = b'G';
    pub const BINBYTES: u8 = b'B';
    pub const SHORT_BINBYTES: u8 = b'C';
    pub const PROTO: u8 = 0x80;
    pub const NEWOBJ: u8 = 0x81;
    pub const TUPLE1: u8 = 0x85;
    pub const TUPLE2: u8 = 0x86;
    pub const TUPLE3: u8 = 0x87;
    pub const NEWTRUE: u8 = 0x88;
    pub const NEWFALSE: u8 = 0x89;
    pub const LONG1: u8 = 0x8a;
    pub const LONG4: u8 = 0x8b;
    pub const SHORT_BINUNICODE: u8 = 0x8c;
    pub const BINUNICODE8: u8 = 0x8d;
    pub const BINBYTES8: u8 = 0x8e;
    pub const EMPTY_SET: u8 = 0x8f;
    pub const ADDITEMS: u8 = 0x90;
    pub const FROZENSET: u8 = 0x91;
    pub const NEWOBJ_EX: u8 = 0x92;
    pub const STACK_GLOBAL: u8 = 0x93;
    pub const MEMOIZE: u8 = 0x94;
    pub const FRAME: u8 = 0x95;
    pub const BYTEARRAY8: u8 = 0x96;
}

/// A pickle value: scalars inline, everything else an index into the machine's arena.
#[derive(Debug, Clone, Copy)]
enum Value {
    None,
    Bool(bool),
    Int(i64),
    /// An integer that does not fit in i64 (its digits are not kept).
    BigInt,
    Float(f64),
    Ref(usize),
}

/// A heap object of the pickle machine. Containers refer to their items by [`Value`], so
/// sharing and mutation through the memo behave as in Python, and dropping the arena
/// never recurses.
#[derive(Debug)]
enum Obj {
    Str(String),
    /// Bytes objects (their content is never needed).
    Bytes,
    Tuple(Vec<Value>),
    List(Vec<Value>),
    Dict(Vec<(Value, Value)>),
    Set(Vec<Value>),
    /// A class or function named by GLOBAL / STACK_GLOBAL.
    Global(Box<GlobalName>),
    Storage(Box<StorageRef>),
    Tensor(Box<TensorInfo>),
    /// An instance of a class this reader does not interpret; its state is dropped.
    Object {
        class: Value,
    },
}

#[derive(Debug)]
struct GlobalName {
    module: String,
    name: String,
}

#[derive(Debug)]
struct StorageRef {
    dtype: DType,
    key: String,
    location: String,
}

/// Budget units for copying `len` bytes of text.
fn text_units(len: usize) -> usize {
    len / 16 + 1
}

/// Budget units for a copy of `info`.
fn tensor_units(info: &TensorInfo) -> usize {
    let dtype_len = match &info.dtype {
        DType::Other(name) => name.len(),
        _ => 0,
    };
    1 + info.shape.len() + info.stride.len() + text_units(info.storage_key.len() + info.location.len() + dtype_len)
}

/// What a REDUCE / NEWOBJ callable means to this reader.
enum Callable {
    RebuildTensor,
    RebuildParameter,
    RebuildFromType,
    DictClass,
    Other,
}

#[derive(Debug)]
enum PickleError {
    Unsupported { opcode: u8, offset: usize },
    Malformed { offset: usize, reason: String },
}

impl PickleError {
    fn into_torch(self, path: &Path) -> TorchError {
        match self {
            Self::Unsupported { opcode, offset } => {
                TorchError::UnsupportedOpcode { path: path.to_owned(), opcode, offset }
            }
            Self::Malformed { offset, reason } => TorchError::Pickle { path: path.to_owned(), offset, reason },
        }
    }
}

type PResult<T> = Result<T, PickleError>;

struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    /// Offset of the opcode being executed, for error messages.
    op_start: usize,
    stack: Vec<Value>,
    /// Stack lengths at each open MARK.
    marks: Vec<usize>,
    memo: HashMap<u32, Value>,
    arena: Vec<Obj>,
    /// What is left of the budget (see [`MAX_VALUES`]); a `Cell` so that code reading
    /// the arena can charge it too.
    budget: Cell<usize>,
    max_values: usize,
}

impl<'a> Machine<'a> {
    fn new(data: &'a [u8], max_values: usize) -> Self {
        Self {
            data,
            pos: 0,
            op_start: 0,
            stack: Vec::new(),
            marks: Vec::new(),
            memo: HashMap::new(),
            arena: Vec::new(),
            budget: Cell::new(max_values),
            max_values,
        }
    }

    fn malformed(&self, reason: impl Into<String>) -> PickleError {
        PickleError::Malformed { offset: self.op_start, reason: reason.into() }
    }

    // --- input ---------------------------------------------------------------------

    fn take(&mut self, len: usize) -> PResult<&'a [u8]> {
        let data = self.data;
        let remaining = data.len() - self.pos;
        if len > remaining {
            return Err(self.malformed(format!("needs {len} bytes but only {remaining} remain")));
        }
        let bytes = &data[self.pos..self.pos + len];
        self.pos += len;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self) -> PResult<[u8; N]> {
        let mut array = [0u8; N];
        array.copy_from_slice(self.take(N)?);
        Ok(array)
    }

    fn u8(&mut self) -> PResult<u8> {
        Ok(self.array::<1>()?[0])
    }

    /// A length read from the file, checked against the bytes that remain.
    fn sized(&mut self, len: u64, what: &str) -> PResult<&'a [u8]> {
        let remaining = self.data.len() - self.pos;
        match usize::try_from(len) {
            Ok(len) if len <= remaining => self.take(len),
            _ => Err(self.malformed(format!("{what} claims {len} bytes but only {remaining} remain"))),
        }
    }

    /// A signed 32-bit length (BINSTRING, LONG4).
    fn signed_len(&mut self, what: &str) -> PResult<&'a [u8]> {
        let len = i32::from_le_bytes(self.array()?);
        let len = u64::try_from(len).map_err(|_| self.malformed(format!("{what} has negative length {len}")))?;
        self.sized(len, what)
    }

    /// A newline-terminated line (text opcodes), without the newline.
    fn line(&mut self) -> PResult<&'a [u8]> {
        let data = self.data;
        let rest = &data[self.pos..];
        let end = rest.iter().position(|&b| b == b'\n').ok_or_else(|| self.malformed("unterminated text argument"))?;
        self.pos += end + 1;
        Ok(&rest[..end])
    }

    fn line_str(&mut self) -> PResult<&'a str> {
        let line = self.line()?;
        std::str::from_utf8(line).map_err(|_| self.malformed("text argument is not UTF-8"))
    }

    // --- stack -----------------------------------------------------------------------

    /// Charge `units` against the budget.
    fn spend(&self, units: usize) -> PResult<()> {
        match self.budget.get().checked_sub(units) {
            Some(left) => {
                self.budget.set(left);
                Ok(())
            }
            None => Err(self.malformed(format!("more than {} values; refusing to go on", self.max_values))),
        }
    }

    fn push(&mut self, value: Value) -> PResult<()> {
        self.spend(1)?;
        self.stack.push(value);
        Ok(())
    }

    fn push_obj(&mut self, obj: Obj) -> PResult<()> {
        let value = self.alloc(obj);
        self.push(value)
    }

    fn alloc(&mut self, obj: Obj) -> Value {
        self.arena.push(obj);
        Value::Ref(self.arena.len() - 1)
    }

    /// The stack length below which the current MARK protects the items.
    fn floor(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    fn pop(&mut self) -> PResult<Value> {
        if self.stack.len() <= self.floor() {
            return Err(self.malformed("stack underflow"));
        }
        self.stack.pop().ok_or_else(|| self.malformed("stack underflow"))
    }

    fn top(&self) -> PResult<Value> {
        if self.stack.len() <= self.floor() {
            return Err(self.malformed("stack underflow"));
        }
        self.stack.last().copied().ok_or_else(|| self.malformed("stack underflow"))
    }

    fn pop_mark(&mut self) -> PResult<Vec<Value>> {
        let mark = self.marks.pop().ok_or_else(|| self.malformed("no MARK on the stack"))?;
        Ok(self.stack.split_off(mark))
    }

    fn memo_put(&mut self, index: u32) -> PResult<()> {
        let value = self.top()?;
        self.spend(1)?;
        self.memo.insert(index, value);
        Ok(())
    }

    fn memo_get(&mut self, index: u32) -> PResult<()> {
        let value = *self.memo.get(&index).ok_or_else(|| self.malformed(format!("memo entry {index} is not set")))?;
        self.push(value)
    }

    fn obj(&self, value: Value) -> Option<&Obj> {
        match value {
            Value::Ref(i) => self.arena.get(i),
            _ => None,
        }
    }

    fn obj_mut(&mut self, value: Value) -> Option<&mut Obj> {
        match value {
            Value::Ref(i) => self.arena.get_mut(i),
            _ => None,
        }
    }

    fn str_of(&self, value: Value) -> Option<&str> {
        match self.obj(value) {
            Some(Obj::Str(s)) => Some(s),
            _ => None,
        }
    }

    // --- the main loop ---------------------------------------------------------------

    /// Run until STOP and return the pickled object.
    fn run(&mut self) -> PResult<Value> {
        loop {
            self.op_start = self.pos;
            let opcode = self.u8().map_err(|_| self.malformed("the pickle ends without STOP"))?;
            match opcode {
                op::PROTO => {
                    let version = self.u8()?;
                    if version > 5 {
                        return Err(self.malformed(format!("unknown pickle protocol {version}")));
                    }
                }
                op::FRAME => {
                    // A size hint for buffered reading; the data is not framed otherwise.
                    self.array::<8>()?;
                }
                op::STOP => return self.pop(),
                op::MARK => {
                    self.spend(1)?;
                    self.marks.push(self.stack.len());
                }
                op::POP => {
                    if self.stack.len() > self.floor() {
                        self.stack.pop();
                    } else if self.marks.pop().is_none() {
                        return Err(self.malformed("stack underflow"));
                    }
                }
                op::POP_MARK => {
                    self.pop_mark()?;
                }
                op::DUP => {
                    let value = self.top()?;
                    self.push(value)?;
                }

                // Scalars.
                op::NONE => self.push(Value::None)?,
                op::NEWTRUE => self.push(Value::Bool(true))?,
                op::NEWFALSE => self.push(Value::Bool(false))?,
                op::BININT => {
                    let v = i32::from_le_bytes(self.array()?);
                    self.push(Value::Int(v.into()))?;
                }
                op::BININT1 => {
                    let v = self.u8()?;
                    self.push(Value::Int(v.into()))?;
                }
                op::BININT2 => {
                    let v = u16::from_le_bytes(self.array()?);
                    self.push(Value::Int(v.into()))?;
                }
                op::INT => {
                    let value = match self.line_str()? {
                        "00" => Value::Bool(false),
                        "01" => Value::Bool(true),
                        text => self.parse_int(text)?,
                    };
                    self.push(value)?;
                }
                op::LONG => {
                    let text = self.line_str()?;
                    let value = self.parse_int(text.strip_suffix('L').unwrap_or(text))?;
                    self.push(value)?;
                }
                op::LONG1 => {
                    let len = self.u8()?;
                    let bytes = self.take(len.into())?;
                    self.push(decode_long(bytes))?;
                }
                op::LONG4 => {
                    let bytes = self.signed_len("LONG4")?;
                    self.push(decode_long(bytes))?;
                }
                op::BINFLOAT => {
                    let v = f64::from_be_bytes(self.array()?);
                    self.push(Value::Float(v))?;
                }
                op::FLOAT => {
                    let text = self.line_str()?;
                    let v =
                        text.trim().parse::<f64>().map_err(|_| self.malformed(format!("invalid float '{text}'")))?;
                    self.push(Value::Float(v))?;
                }

                // Strings and bytes.
                op::BINUNICODE => {
                    let len = u32::from_le_bytes(self.array()?);
                    let bytes = self.sized(len.into(), "BINUNICODE")?;
                    self.push_str(bytes)?;
                }
                op::SHORT_BINUNICODE => {
                    let len = self.u8()?;
                    let bytes = self.sized(len.into(), "SHORT_BINUNICODE")?;
                    self.push_str(bytes)?;
                }
                op::BINUNICODE8 => {
                    let len = u64::from_le_bytes(self.array()?);
                    let bytes = self.sized(len, "BINUNICODE8")?;
                    self.push_str(bytes)?;
                }
                op::UNICODE => {
                    let line = self.line()?;
                    self.push_obj(Obj::Str(decode_raw_unicode_escape(line)))?;
                }
                op::BINSTRING => {
                    let bytes = self.signed_len("BINSTRING")?;
                    self.push_str(bytes)?;
                }
                op::SHORT_BINSTRING => {
                    let len = self.u8()?;
                    let bytes = self.sized(len.into(), "SHORT_BINSTRING")?;
                    self.push_str(bytes)?;
                }
                op::BINBYTES => {
                    let len = u32::from_le_bytes(self.array()?);
                    self.sized(len.into(), "BINBYTES")?;
                    self.push_obj(Obj::Bytes)?;
                }
                op::SHORT_BINBYTES => {
                    let len = self.u8()?;
                    self.sized(len.into(), "SHORT_BINBYTES")?;
                    self.push_obj(Obj::Bytes)?;
                }
                op::BINBYTES8 | op::BYTEARRAY8 => {
                    let len = u64::from_le_bytes(self.array()?);
                    self.sized(len, "BINBYTES8")?;
                    self.push_obj(Obj::Bytes)?;
                }

                // Containers.
                op::EMPTY_TUPLE => self.push_obj(Obj::Tuple(Vec::new()))?,
                op::TUPLE => {
                    let items = self.pop_mark()?;
                    self.push_obj(Obj::Tuple(items))?;
                }
                op::TUPLE1 | op::TUPLE2 | op::TUPLE3 => {
                    let n = usize::from(opcode - op::TUPLE1) + 1;
                    let mut items = vec![Value::None; n];
                    for slot in items.iter_mut().rev() {
                        *slot = self.pop()?;
                    }
                    self.push_obj(Obj::Tuple(items))?;
                }
                op::EMPTY_LIST => self.push_obj(Obj::List(Vec::new()))?,
                op::LIST => {
                    let items = self.pop_mark()?;
                    self.push_obj(Obj::List(items))?;
                }
                op::EMPTY_DICT => self.push_obj(Obj::Dict(Vec::new()))?,
                op::DICT => {
                    let items = self.pop_mark()?;
                    let pairs = self.pairs(items)?;
                    self.push_obj(Obj::Dict(pairs))?;
                }
                op::EMPTY_SET => self.push_obj(Obj::Set(Vec::new()))?,
                op::FROZENSET => {
                    let items = self.pop_mark()?;
                    self.push_obj(Obj::Set(items))?;
                }
                op::APPEND => {
                    let item = self.pop()?;
                    self.extend_list(vec![item], "APPEND")?;
                }
                op::APPENDS => {
                    let items = self.pop_mark()?;
                    self.extend_list(items, "APPENDS")?;
                }
                op::SETITEM => {
                    let value = self.pop()?;
                    let key = self.pop()?;
                    self.extend_dict(vec![(key, value)], "SETITEM")?;
                }
                op::SETITEMS => {
                    let items = self.pop_mark()?;
                    let pairs = self.pairs(items)?;
                    self.extend_dict(pairs, "SETITEMS")?;
                }
                op::ADDITEMS => {
                    let items = self.pop_mark()?;
                    let target = self.top()?;
                    match self.obj_mut(target) {
                        Some(Obj::Set(set)) => set.extend(items),
                        Some(Obj::Object { .. }) => {}
                        _ => return Err(self.malformed("ADDITEMS target is not a set")),
                    }
                }

                // Memo.
                op::BINPUT => {
                    let index = self.u8()?;
                    self.memo_put(index.into())?;
                }
                op::LONG_BINPUT => {
                    let index = u32::from_le_bytes(self.array()?);
                    self.memo_put(index)?;
                }
                op::PUT => {
                    let index = self.memo_index()?;
                    self.memo_put(index)?;
                }
                op::MEMOIZE => {
                    let index = u32::try_from(self.memo.len()).map_err(|_| self.malformed("memo is full"))?;
                    self.memo_put(index)?;
                }
                op::BINGET => {
                    let index = self.u8()?;
                    self.memo_get(index.into())?;
                }
                op::LONG_BINGET => {
                    let index = u32::from_le_bytes(self.array()?);
                    self.memo_get(index)?;
                }
                op::GET => {
                    let index = self.memo_index()?;
                    self.memo_get(index)?;
                }

                // Classes, objects and persistent ids.
                op::GLOBAL => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.push_obj(Obj::Global(Box::new(GlobalName {
                        module: String::from_utf8_lossy(module).into_owned(),
                        name: String::from_utf8_lossy(name).into_owned(),
                    })))?;
                }
                op::STACK_GLOBAL => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    let (Some(module), Some(name)) = (self.str_of(module), self.str_of(name)) else {
                        return Err(self.malformed("STACK_GLOBAL needs two strings"));
                    };
                    let global = GlobalName { module: module.to_owned(), name: name.to_owned() };
                    self.spend(text_units(global.module.len() + global.name.len()))?;
                    self.push_obj(Obj::Global(Box::new(global)))?;
                }
                op::REDUCE => {
                    let args = self.pop()?;
                    let func = self.pop()?;
                    let value = self.reduce(func, args, 0)?;
                    self.push(value)?;
                }
                op::NEWOBJ => {
                    let _args = self.pop()?;
                    let class = self.pop()?;
                    let value = self.new_object(class);
                    self.push(value)?;
                }
                op::NEWOBJ_EX => {
                    let _kwargs = self.pop()?;
                    let _args = self.pop()?;
                    let class = self.pop()?;
                    let value = self.new_object(class);
                    self.push(value)?;
                }
                op::BUILD => {
                    // The state only matters to classes this reader does not interpret
                    // (and to an OrderedDict's `_metadata`), so it is dropped.
                    let _state = self.pop()?;
                    self.top()?;
                }
                op::BINPERSID => {
                    let pid = self.pop()?;
                    let value = self.persistent_load(pid)?;
                    self.push(value)?;
                }
                op::PERSID => {
                    let line = self.line()?;
                    let pid = self.alloc(Obj::Str(String::from_utf8_lossy(line).into_owned()));
                    let value = self.persistent_load(pid)?;
                    self.push(value)?;
                }
                opcode => return Err(PickleError::Unsupported { opcode, offset: self.op_start }),
            }
        }
    }

    fn parse_int(&self, text: &str) -> PResult<Value> {
        let text = text.trim();
        if let Ok(v) = text.parse::<i64>() {
            return Ok(Value::Int(v));
        }
        let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
        if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
            Ok(Value::BigInt)
        } else {
            Err(self.malformed(format!("invalid integer '{text}'")))
        }
    }

    fn memo_index(&mut self) -> PResult<u32> {
        let text = self.line_str()?;
        text.trim().parse().map_err(|_| self.malformed(format!("invalid memo index '{text}'")))
    }

    fn push_str(&mut self, bytes: &[u8]) -> PResult<()> {
        self.push_obj(Obj::Str(String::from_utf8_lossy(bytes).into_owned()))
    }

    fn pairs(&self, items: Vec<Value>) -> PResult<Vec<(Value, Value)>> {
        if !items.len().is_multiple_of(2) {
            return Err(self.malformed("odd number of items for a dict"));
        }
        Ok(items.chunks_exact(2).map(|kv| (kv[0], kv[1])).collect())
    }

    fn extend_list(&mut self, items: Vec<Value>, opname: &str) -> PResult<()> {
        let target = self.top()?;
        match self.obj_mut(target) {
            Some(Obj::List(list)) => list.extend(items),
            // list subclasses of unknown classes: the items are not needed.
            Some(Obj::Object { .. }) => {}
            _ => return Err(self.malformed(format!("{opname} target is not a list"))),
        }
        Ok(())
    }

    fn extend_dict(&mut self, pairs: Vec<(Value, Value)>, opname: &str) -> PResult<()> {
        let target = self.top()?;
        match self.obj_mut(target) {
            Some(Obj::Dict(dict)) => dict.extend(pairs),
            // dict subclasses of unknown classes: the items are not needed.
            Some(Obj::Object { .. }) => {}
            _ => return Err(self.malformed(format!("{opname} target is not a dict"))),
        }
        Ok(())
    }

    fn classify(&self, func: Value) -> Callable {
        let Some(Obj::Global(global)) = self.obj(func) else {
            return Callable::Other;
        };
        match (global.module.as_str(), global.name.as_str()) {
            ("torch._utils", "_rebuild_tensor_v2" | "_rebuild_tensor") => Callable::RebuildTensor,
            ("torch._utils", "_rebuild_parameter" | "_rebuild_parameter_with_state") => Callable::RebuildParameter,
            ("torch._tensor", "_rebuild_from_type_v2") => Callable::RebuildFromType,
            ("collections", "OrderedDict" | "defaultdict") | ("builtins" | "__builtin__", "dict") => {
                Callable::DictClass
            }
            _ => Callable::Other,
        }
    }

    /// The items of a tuple (or list) value.
    fn items(&self, value: Value) -> Option<&[Value]> {
        match self.obj(value) {
            Some(Obj::Tuple(items) | Obj::List(items)) => Some(items),
            _ => None,
        }
    }

    /// REDUCE: call `func(*args)` for the callables torch.save uses, else make an opaque
    /// object.
    fn reduce(&mut self, func: Value, args: Value, depth: usize) -> PResult<Value> {
        match self.classify(func) {
            Callable::RebuildTensor => {
                let tensor = self.rebuild_tensor(args)?;
                self.spend(tensor_units(&tensor))?;
                Ok(self.alloc(Obj::Tensor(Box::new(tensor))))
            }
            Callable::RebuildParameter => {
                // _rebuild_parameter(data, requires_grad, backward_hooks[, state])
                match self.items(args) {
                    Some(&[data, ..]) if matches!(self.obj(data), Some(Obj::Tensor(_))) => Ok(data),
                    _ => Err(self.malformed("_rebuild_parameter needs a tensor")),
                }
            }
            Callable::RebuildFromType => {
                // _rebuild_from_type_v2(func, new_type, args, state) calls func(*args).
                match self.items(args) {
                    Some(&[inner_func, _, inner_args, ..]) if depth < MAX_REBUILD_DEPTH => {
                        self.reduce(inner_func, inner_args, depth + 1)
                    }
                    _ => Err(self.malformed("malformed _rebuild_from_type_v2 call")),
                }
            }
            Callable::DictClass => Ok(self.alloc(Obj::Dict(Vec::new()))),
            Callable::Other => Ok(self.alloc(Obj::Object { class: func })),
        }
    }

    /// NEWOBJ / NEWOBJ_EX: `cls.__new__(cls, ...)`.
    fn new_object(&mut self, class: Value) -> Value {
        match self.classify(class) {
            Callable::DictClass => self.alloc(Obj::Dict(Vec::new())),
            _ => self.alloc(Obj::Object { class }),
        }
    }

    /// `_rebuild_tensor_v2(storage, storage_offset, size, stride, ...)`.
    fn rebuild_tensor(&self, args: Value) -> PResult<TensorInfo> {
        let (storage, offset, size, stride) = match self.items(args) {
            Some(&[storage, offset, size, stride, ..]) => (storage, offset, size, stride),
            Some(_) => return Err(self.malformed("tensor rebuild needs at least 4 arguments")),
            None => return Err(self.malformed("tensor arguments are not a tuple")),
        };
        let Some(Obj::Storage(storage)) = self.obj(storage) else {
            return Err(
                self.malformed(format!("tensor storage is {}, not a storage reference", self.describe(storage)))
            );
        };
        let storage_offset = self.usize_of(offset, "storage offset")?;
        let shape = self.usize_seq(size, "size")?;
        let stride = self.usize_seq(stride, "stride")?;
        if shape.len() != stride.len() {
            return Err(self.malformed(format!(
                "tensor size has {} dimensions but stride has {}",
                shape.len(),
                stride.len()
            )));
        }
        Ok(TensorInfo {
            dtype: storage.dtype.clone(),
            shape,
            stride,
            storage_key: storage.key.clone(),
            storage_offset,
            location: storage.location.clone(),
        })
    }

    fn usize_of(&self, value: Value, what: &str) -> PResult<usize> {
        match value {
            Value::Int(v) => {
                usize::try_from(v).map_err(|_| self.malformed(format!("tensor {what} {v} is negative or too large")))
            }
            other => Err(self.malformed(format!("tensor {what} is {}, not an int", self.describe(other)))),
        }
    }

    fn usize_seq(&self, value: Value, what: &str) -> PResult<Vec<usize>> {
        let items = self.items(value).ok_or_else(|| self.malformed(format!("tensor {what} is not a tuple")))?;
        items.iter().map(|&v| self.usize_of(v, what)).collect()
    }

    /// BINPERSID: `('storage', storage_class, key, location, numel)` to a storage.
    fn persistent_load(&mut self, pid: Value) -> PResult<Value> {
        let Some(&[tag, class, key, location, _numel]) = self.items(pid) else {
            return Err(self.malformed(format!(
                "persistent id is {}, not a ('storage', class, key, location, numel) tuple",
                self.describe(pid)
            )));
        };
        if self.str_of(tag) != Some("storage") {
            return Err(self.malformed("persistent id is not a 'storage' reference"));
        }
        let Some(Obj::Global(class)) = self.obj(class) else {
            return Err(self.malformed("storage class is not a class"));
        };
        let dtype = DType::from_storage_class(&class.name);
        let key = match (self.obj(key), key) {
            (Some(Obj::Str(s)), _) => s.clone(),
            (_, Value::Int(i)) => i.to_string(),
            _ => return Err(self.malformed("storage key is not a string")),
        };
        let location = self.str_of(location).unwrap_or_default().to_owned();
        self.spend(text_units(class.name.len() + key.len() + location.len()))?;
        Ok(self.alloc(Obj::Storage(Box::new(StorageRef { dtype, key, location }))))
    }

    // --- reading the result ----------------------------------------------------------

    fn is_dict(&self, value: Value) -> bool {
        matches!(self.obj(value), Some(Obj::Dict(_)))
    }

    /// The value of string key `key` in a dict (the last one set, as in Python).
    fn dict_get(&self, dict: Value, key: &str) -> Option<Value> {
        let Some(Obj::Dict(items)) = self.obj(dict) else {
            return None;
        };
        items.iter().rev().find(|(k, _)| self.str_of(*k) == Some(key)).map(|&(_, v)| v)
    }

    /// The distinct string keys of a dict, in insertion order; empty if not a dict.
    fn string_keys(&self, dict: Value) -> PResult<Vec<String>> {
        Ok(self.string_items(dict)?.map(|items| items.into_iter().map(|(k, _)| k).collect()).unwrap_or_default())
    }

    /// A dict's string-keyed items with Python semantics: a key keeps its first position
    /// and its last value. `None` if `dict` is not a dict.
    fn string_items(&self, dict: Value) -> PResult<Option<Vec<(String, Value)>>> {
        let Some(Obj::Dict(items)) = self.obj(dict) else {
            return Ok(None);
        };
        let mut out: Vec<(String, Value)> = Vec::new();
        // Keys are looked up by object first, so that one (possibly long) memoized key
        // used many times is hashed only once.
        let mut by_object: HashMap<usize, usize> = HashMap::new();
        let mut by_text: HashMap<&str, usize> = HashMap::new();
        for &(k, v) in items {
            let Value::Ref(id) = k else { continue };
            if let Some(&i) = by_object.get(&id) {
                out[i].1 = v;
                continue;
            }
            let Some(text) = self.str_of(k) else { continue };
            let i = match by_text.get(text) {
                Some(&i) => {
                    out[i].1 = v;
                    i
                }
                None => {
                    self.spend(text_units(text.len()))?;
                    by_text.insert(text, out.len());
                    out.push((text.to_owned(), v));
                    out.len() - 1
                }
            };
            by_object.insert(id, i);
        }
        Ok(Some(out))
    }

    /// The tensors of a state dict, or `None` if `dict` is not a dict.
    fn tensors_of(&self, dict: Value) -> PResult<Option<Vec<(String, TensorInfo)>>> {
        let Some(items) = self.string_items(dict)? else {
            return Ok(None);
        };
        let mut tensors = Vec::new();
        for (name, v) in items {
            if let Some(Obj::Tensor(info)) = self.obj(v) {
                self.spend(tensor_units(info))?;
                tensors.push((name, TensorInfo::clone(info)));
            }
        }
        Ok(Some(tensors))
    }

    /// A short description of a value for error messages ("a list", "an int"…).
    fn describe(&self, value: Value) -> String {
        match value {
            Value::None => "None".into(),
            Value::Bool(b) => format!("the bool {}", if b { "True" } else { "False" }),
            Value::Int(i) => format!("the int {i}"),
            Value::BigInt => "a large int".into(),
            Value::Float(f) => format!("the float {f}"),
            Value::Ref(_) => match self.obj(value) {
                Some(Obj::Str(_)) => "a str".into(),
                Some(Obj::Bytes) => "a bytes object".into(),
                Some(Obj::Tuple(_)) => "a tuple".into(),
                Some(Obj::List(_)) => "a list".into(),
                Some(Obj::Dict(_)) => "a dict".into(),
                Some(Obj::Set(_)) => "a set".into(),
                Some(Obj::Global(global)) => {
                    format!("the class {}.{}", global.module, global.name)
                }
                Some(Obj::Storage(_)) => "a storage".into(),
                Some(Obj::Tensor(_)) => "a tensor".into(),
                Some(Obj::Object { class }) => match self.obj(*class) {
                    Some(Obj::Global(global)) => {
                        format!("an object of class {}.{}", global.module, global.name)
                    }
                    _ => "an object".into(),
                },
                None => "an unknown value".into(),
            },
        }
    }
}

/// LONG1 / LONG4 payload: little-endian two's complement.
fn decode_long(bytes: &[u8]) -> Value {
    if bytes.len() > 8 {
        return Value::BigInt;
    }
    let Some(&last) = bytes.last() else {
        return Value::Int(0);
    };
    let fill = if last & 0x80 != 0 { 0xff } else { 0 };
    let mut array = [fill; 8];
    array[..bytes.len()].copy_from_slice(bytes);
    Value::Int(i64::from_le_bytes(array))
}

/// Python's `raw-unicode-escape`: Latin-1 text with `\uXXXX` and `\UXXXXXXXX` escapes.
fn decode_raw_unicode_escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            let digits = match bytes.get(i + 1) {
                Some(b'u') => 4,
                Some(b'U') => 8,
                _ => 0,
            };
            let escaped = bytes
                .get(i + 2..i + 2 + digits)
                .filter(|_| digits > 0)
                .and_then(|hex| std::str::from_utf8(hex).ok())
                .and_then(|hex| u32::from_str_radix(hex, 16).ok())
                .and_then(char::from_u32);
            if let Some(c) = escaped {
                out.push(c);
                i += 2 + digits;
                continue;
            }
        }
        out.push(char::from(bytes[i]));
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use zip::write::SimpleFileOptions;
    use zip::ZipWriter;

    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    /// A hand-assembled pickle byte string.
    struct Pickle(Vec<u8>);

    /// Arguments of one `_rebuild_tensor_v2` call.
    struct T<'a> {
        class: &'a str,
        key: &'a str,
        numel: i64,
        offset: i64,
        size: &'a [i64],
        stride: &'a [i64],
    }

    impl Pickle {
        fn new(protocol: u8) -> Self {
            Self(vec![op::PROTO, protocol])
        }

        fn op(&mut self, opcode: u8) -> &mut Self {
            self.0.push(opcode);
            self
        }

        fn raw(&mut self, bytes: &[u8]) -> &mut Self {
            self.0.extend_from_slice(bytes);
            self
        }

        fn str(&mut self, s: &str) -> &mut Self {
            let len = u32::try_from(s.len()).unwrap_or(u32::MAX);
            self.op(op::BINUNICODE).raw(&len.to_le_bytes()).raw(s.as_bytes())
        }

        /// An int: BININT when it fits, else LONG1.
        fn int(&mut self, v: i64) -> &mut Self {
            match i32::try_from(v) {
                Ok(v) => self.op(op::BININT).raw(&v.to_le_bytes()),
                Err(_) => self.op(op::LONG1).op(8).raw(&v.to_le_bytes()),
            }
        }

        fn float(&mut self, v: f64) -> &mut Self {
            self.op(op::BINFLOAT).raw(&v.to_be_bytes())
        }

        fn global(&mut self, module: &str, name: &str) -> &mut Self {
            self.op(op::GLOBAL).raw(module.as_bytes()).op(b'\n').raw(name.as_bytes()).op(b'\n')
        }

        fn put(&mut self, index: u8) -> &mut Self {
            self.op(op::BINPUT).op(index)
        }

        fn get(&mut self, index: u8) -> &mut Self {
            self.op(op::BINGET).op(index)
        }

        fn ordered_dict(&mut self) -> &mut Self {
            self.global("collections", "OrderedDict").op(op::EMPTY_TUPLE).op(op::REDUCE)
        }

        fn int_tuple(&mut self, values: &[i64]) -> &mut Self {
            self.op(op::MARK);
            for &v in values {
                self.int(v);
            }
            self.op(op::TUPLE)
        }

        fn storage(&mut self, class: &str, key: &str, numel: i64) -> &mut Self {
            self.op(op::MARK)
                .str("storage")
                .global("torch", class)
                .str(key)
                .str("cpu")
                .int(numel)
                .op(op::TUPLE)
                .op(op::BINPERSID)
        }

        fn tensor(&mut self, t: &T) -> &mut Self {
            self.global("torch._utils", "_rebuild_tensor_v2")
                .op(op::MARK)
                .storage(t.class, t.key, t.numel)
                .int(t.offset)
                .int_tuple(t.size)
                .int_tuple(t.stride)
                .op(op::NEWFALSE)
                .ordered_dict()
                .op(op::TUPLE)
                .op(op::REDUCE)
        }

        fn finish(&mut self) -> Vec<u8> {
            self.op(op::STOP);
            self.0.clone()
        }
    }

    fn f32s(values: &[f32]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    fn write_zip(path: &Path, entries: &[(&str, &[u8])]) -> TestResult {
        let mut zip = ZipWriter::new(File::create(path)?);
        let options = SimpleFileOptions::default().compression_method(CompressionMethod::Stored);
        for (name, data) in entries {
            zip.start_file(*name, options)?;
            zip.write_all(data)?;
        }
        zip.finish()?;
        Ok(())
    }

    /// A checkpoint whose only tensor 'w' is described by `t`, with storage '0' = `storage`.
    fn single_tensor_file(dir: &Path, t: &T, storage: &[u8]) -> Result<PathBuf, Box<dyn std::error::Error>> {
        let pickle = Pickle::new(2).ordered_dict().put(0).str("w").tensor(t).op(op::SETITEM).finish();
        let path = dir.join("single.bin");
        write_zip(&path, &[("archive/data.pkl", &pickle), ("archive/data/0", storage)])?;
        Ok(path)
    }

    fn run_pickle(data: &[u8]) -> Result<(), PickleError> {
        Machine::new(data, MAX_VALUES).run().map(|_| ())
    }

    fn malformed_reason(result: Result<(), PickleError>) -> String {
        match result {
            Err(PickleError::Malformed { reason, .. }) => reason,
            other => format!("unexpected: {other:?}"),
        }
    }

    /// A Lightning-style checkpoint: a state dict with tensors of several dtypes and
    /// layouts, optimizer states, callbacks keyed by a class, and objects of unknown
    /// classes.
    fn lightning_pickle() -> Vec<u8> {
        let f32t = |key, numel, offset, size, stride| T { class: "FloatStorage", key, numel, offset, size, stride };
        let mut p = Pickle::new(2);
        p.op(op::EMPTY_DICT).put(0).op(op::MARK);
        p.str("epoch").int(3);
        p.str("global_step").int(1 << 40);
        p.str("pytorch-lightning_version").str("1.9.5");

        p.str("state_dict").ordered_dict().put(1).op(op::MARK);
        p.str("a.weight").tensor(&f32t("0", 6, 0, &[2, 3], &[3, 1]));
        p.str("b.half").tensor(&T { class: "HalfStorage", key: "1", numel: 4, offset: 0, size: &[4], stride: &[1] });
        p.str("c.transposed").tensor(&f32t("0", 6, 0, &[3, 2], &[1, 3]));
        p.str("d.offset").tensor(&f32t("2", 6, 4, &[2], &[1]));
        p.str("e.param").global("torch._utils", "_rebuild_parameter").op(op::MARK);
        p.tensor(&T { class: "BFloat16Storage", key: "3", numel: 2, offset: 0, size: &[2], stride: &[1] });
        p.op(op::NEWTRUE).ordered_dict().op(op::TUPLE).op(op::REDUCE);
        p.str("f.steps").tensor(&T { class: "LongStorage", key: "4", numel: 1, offset: 0, size: &[], stride: &[] });
        p.str("g.double").tensor(&T {
            class: "DoubleStorage",
            key: "5",
            numel: 2,
            offset: 0,
            size: &[2],
            stride: &[1],
        });
        p.str("h.mask").tensor(&T { class: "BoolStorage", key: "6", numel: 3, offset: 0, size: &[3], stride: &[1] });
        p.str("version").int(1); // not a tensor: skipped
        p.str("i.expand").tensor(&f32t("2", 6, 1, &[2, 3], &[0, 1]));
        p.str("j.empty").tensor(&f32t("2", 6, 0, &[0, 3], &[3, 1]));
        p.op(op::SETITEMS);
        // OrderedDict state: {'_metadata': OrderedDict()}
        p.op(op::EMPTY_DICT).str("_metadata").ordered_dict().op(op::SETITEM).op(op::BUILD);

        // The same (mutated after memoization) state dict again, through the memo.
        p.str("again").get(1);

        p.str("optimizer_states").op(op::EMPTY_LIST).op(op::MARK);
        p.op(op::EMPTY_DICT).op(op::MARK);
        p.str("state").op(op::EMPTY_DICT).op(op::MARK);
        p.int(0).op(op::EMPTY_DICT).op(op::MARK);
        p.str("step").int(10).str("exp_avg").tensor(&f32t("7", 6, 0, &[2, 3], &[3, 1]));
        p.op(op::SETITEMS).op(op::SETITEMS);
        p.str("param_groups").op(op::EMPTY_LIST).op(op::EMPTY_DICT).op(op::MARK);
        p.str("lr").float(1e-4).str("params").op(op::EMPTY_LIST).op(op::MARK).int(0).int(1).op(op::APPENDS);
        p.str("betas")
            .float(0.9)
            .float(0.999)
            .op(op::TUPLE2)
            .str("amsgrad")
            .op(op::NEWFALSE)
            .str("foreach")
            .op(op::NONE);
        p.op(op::SETITEMS).op(op::APPEND);
        p.op(op::SETITEMS).op(op::APPENDS);

        // Lightning 1.x: callbacks keyed by the callback class; the value here is an
        // object of that (unknown) class, built with NEWOBJ and a state dict.
        p.str("callbacks").op(op::EMPTY_DICT).op(op::MARK);
        p.global("pytorch_lightning.callbacks.model_checkpoint", "ModelCheckpoint").put(2);
        p.get(2).op(op::EMPTY_TUPLE).op(op::NEWOBJ).op(op::EMPTY_DICT).op(op::MARK);
        p.str("best_model_path").str("epoch=3.ckpt");
        p.str("best_model_score").tensor(&f32t("8", 1, 0, &[], &[]));
        p.op(op::SETITEMS).op(op::BUILD);
        p.op(op::SETITEMS);

        // An unknown class through REDUCE, with BUILD state and dict items.
        p.str("hparams").global("argparse", "Namespace").op(op::EMPTY_TUPLE).op(op::REDUCE);
        p.op(op::EMPTY_DICT).str("lr").float(1e-4).op(op::SETITEM).op(op::BUILD);
        p.op(op::SETITEMS);
        p.finish()
    }

    fn write_lightning(dir: &Path) -> Result<PathBuf, Box<dyn std::error::Error>> {
        let pickle = lightning_pickle();
        let half: Vec<u8> =
            [1.5f32, -2.0, 0.25, 65504.0].iter().flat_map(|&v| f16::from_f32(v).to_le_bytes()).collect();
        let bf: Vec<u8> = [1.0f32, -3.0].iter().flat_map(|&v| bf16::from_f32(v).to_le_bytes()).collect();
        let long = 42i64.to_le_bytes();
        let double: Vec<u8> = [0.5f64, -2.25].iter().flat_map(|v| v.to_le_bytes()).collect();
        let path = dir.join("model.ckpt");
        write_zip(
            &path,
            &[
                ("archive/data.pkl", &pickle),
                ("archive/byteorder", b"little"),
                ("archive/data/0", &f32s(&[0.0, 1.0, 2.0, 3.0, 4.0, 5.0])),
                ("archive/data/1", &half),
                ("archive/data/2", &f32s(&[10.0, 11.0, 12.0, 13.0, 14.0, 15.0])),
                ("archive/data/3", &bf),
                ("archive/data/4", &long),
                ("archive/data/5", &double),
                ("archive/data/6", &[1, 0, 1]),
                ("archive/data/7", &f32s(&[0.0; 6])),
                ("archive/data/8", &f32s(&[0.75])),
                ("archive/version", b"3\n"),
            ],
        )?;
        Ok(path)
    }

    const LIGHTNING_NAMES: [&str; 10] = [
        "a.weight",
        "b.half",
        "c.transposed",
        "d.offset",
        "e.param",
        "f.steps",
        "g.double",
        "h.mask",
        "i.expand",
        "j.empty",
    ];

    #[test]
    fn reads_lightning_checkpoint() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = write_lightning(dir.path())?;
        let archive = TorchArchive::open(&path, Some("state_dict"))?;
        assert_eq!(archive.names().collect::<Vec<_>>(), LIGHTNING_NAMES);
        assert_eq!(
            archive.top_level_keys(),
            [
                "epoch",
                "global_step",
                "pytorch-lightning_version",
                "state_dict",
                "again",
                "optimizer_states",
                "callbacks",
                "hparams"
            ]
        );

        let read = |name| archive.read_f32(name);
        assert_eq!(read("a.weight")?, (vec![2, 3], vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]));
        assert_eq!(read("b.half")?, (vec![4], vec![1.5, -2.0, 0.25, 65504.0]));
        assert_eq!(read("c.transposed")?, (vec![3, 2], vec![0.0, 3.0, 1.0, 4.0, 2.0, 5.0]));
        assert_eq!(read("d.offset")?, (vec![2], vec![14.0, 15.0]));
        assert_eq!(read("e.param")?, (vec![2], vec![1.0, -3.0]));
        assert_eq!(read("f.steps")?, (vec![], vec![42.0]));
        assert_eq!(read("g.double")?, (vec![2], vec![0.5, -2.25]));
        assert_eq!(read("h.mask")?, (vec![3], vec![1.0, 0.0, 1.0]));
        assert_eq!(read("i.expand")?, (vec![2, 3], vec![11.0, 12.0, 13.0, 11.0, 12.0, 13.0]));
        assert_eq!(read("j.empty")?, (vec![0, 3], vec![]));

        let info = archive.info("c.transposed").ok_or("no info")?;
        assert_eq!(
            info,
            &TensorInfo {
                dtype: DType::F32,
                shape: vec![3, 2],
                stride: vec![1, 3],
                storage_key: "0".into(),
                storage_offset: 0,
                location: "cpu".into(),
            }
        );
        assert_eq!(archive.info("e.param").map(|i| &i.dtype), Some(&DType::BF16));
        assert_eq!(archive.info("version"), None);
        Ok(())
    }

    #[test]
    fn memoized_dict_sees_items_added_after_memoization() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = write_lightning(dir.path())?;
        let archive = TorchArchive::open(&path, Some("again"))?;
        assert_eq!(archive.names().collect::<Vec<_>>(), LIGHTNING_NAMES);
        assert_eq!(archive.read_f32("d.offset")?.1, [14.0, 15.0]);
        Ok(())
    }

    #[test]
    fn lightning_file_without_key_has_no_tensors() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = write_lightning(dir.path())?;
        let archive = TorchArchive::open(&path, None)?;
        assert_eq!(archive.names().count(), 0);
        assert!(archive.top_level_keys().contains(&"state_dict".to_owned()));
        Ok(())
    }

    /// An HF-style file at protocol 4: FRAME, SHORT_BINUNICODE, STACK_GLOBAL, MEMOIZE,
    /// with a top folder other than `archive/`.
    #[test]
    fn reads_protocol4_state_dict() -> TestResult {
        let mut p = Pickle::new(4);
        p.op(op::FRAME).raw(&100u64.to_le_bytes());
        p.op(op::SHORT_BINUNICODE).op(11).raw(b"collections").op(op::MEMOIZE);
        p.op(op::SHORT_BINUNICODE).op(11).raw(b"OrderedDict").op(op::MEMOIZE);
        p.op(op::STACK_GLOBAL).op(op::MEMOIZE).op(op::EMPTY_TUPLE).op(op::REDUCE).op(op::MEMOIZE);
        p.op(op::MARK);
        p.op(op::SHORT_BINUNICODE).op(1).raw(b"w").op(op::MEMOIZE);
        p.tensor(&T { class: "FloatStorage", key: "0", numel: 4, offset: 0, size: &[2, 2], stride: &[2, 1] });
        p.op(op::MEMOIZE);
        // A tied weight: the same tensor object again, through the memo (index 5).
        p.op(op::SHORT_BINUNICODE).op(4).raw(b"tied").op(op::LONG_BINGET).raw(&5u32.to_le_bytes());
        p.op(op::SETITEMS);
        let pickle = p.finish();

        let dir = tempfile::tempdir()?;
        let path = dir.path().join("pytorch_model.bin");
        write_zip(
            &path,
            &[
                ("pytorch_model/data.pkl", &pickle),
                ("pytorch_model/byteorder", b"little"),
                ("pytorch_model/data/0", &f32s(&[1.0, 2.0, 3.0, 4.0])),
            ],
        )?;
        let archive = TorchArchive::open(&path, None)?;
        assert_eq!(archive.names().collect::<Vec<_>>(), ["w", "tied"]);
        assert_eq!(archive.read_f32("tied")?, (vec![2, 2], vec![1.0, 2.0, 3.0, 4.0]));
        assert_eq!(archive.top_level_keys(), ["w", "tied"]);

        let err = TorchArchive::open(&path, Some("state_dict")).err().ok_or("opened")?;
        assert!(
            err.to_string().ends_with("pytorch_model.bin: no 'state_dict' entry (top-level keys: w, tied)"),
            "{err}"
        );
        Ok(())
    }

    #[test]
    fn selected_object_must_be_a_dict() -> TestResult {
        let dir = tempfile::tempdir()?;
        let pickle = Pickle::new(2).op(op::EMPTY_LIST).finish();
        let path = dir.path().join("list.bin");
        write_zip(&path, &[("archive/data.pkl", &pickle)])?;
        let err = TorchArchive::open(&path, None).err().ok_or("opened")?;
        assert!(
            err.to_string().ends_with("expected a dict of tensors (a state dict), but the top-level object is a list"),
            "{err}"
        );
        let err = TorchArchive::open(&path, Some("state_dict")).err().ok_or("opened")?;
        assert!(err.to_string().contains("the top-level object is a list"), "{err}");

        let ckpt = write_lightning(dir.path())?;
        let err = TorchArchive::open(&ckpt, Some("epoch")).err().ok_or("opened")?;
        assert!(err.to_string().ends_with("but 'epoch' is the int 3"), "{err}");
        Ok(())
    }

    #[test]
    fn truncated_zip_is_an_error() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = write_lightning(dir.path())?;
        let bytes = std::fs::read(&path)?;
        for cut in [bytes.len() / 2, bytes.len() - 10, 3] {
            std::fs::write(&path, &bytes[..cut])?;
            let err = TorchArchive::open(&path, Some("state_dict")).err().ok_or("opened")?;
            let message = err.to_string();
            assert!(message.starts_with(&path.display().to_string()), "{message}");
            assert!(message.contains("corrupt or truncated zip archive"), "{message}");
        }
        Ok(())
    }

    #[test]
    fn storage_shorter_than_tensor_is_truncated() -> TestResult {
        let dir = tempfile::tempdir()?;
        let t = T { class: "FloatStorage", key: "0", numel: 6, offset: 0, size: &[2, 3], stride: &[3, 1] };
        let path = single_tensor_file(dir.path(), &t, &f32s(&[1.0, 2.0]))?;
        let archive = TorchArchive::open(&path, None)?;
        let err = archive.read_f32("w").err().ok_or("read")?;
        assert_eq!(
            err.to_string(),
            format!("{}: truncated: storage 'archive/data/0' is 8 bytes, tensor 'w' needs 24", path.display())
        );

        // The offset counts too: 2 elements from offset 1 need 12 bytes.
        let t = T { class: "FloatStorage", key: "0", numel: 2, offset: 1, size: &[2], stride: &[1] };
        let path = single_tensor_file(dir.path(), &t, &f32s(&[1.0, 2.0]))?;
        let err = TorchArchive::open(&path, None)?.read_f32("w").err().ok_or("read")?;
        assert!(err.to_string().ends_with("is 8 bytes, tensor 'w' needs 12"), "{err}");
        Ok(())
    }

    #[test]
    fn missing_storage_and_unknown_names() -> TestResult {
        let dir = tempfile::tempdir()?;
        let t = T { class: "FloatStorage", key: "9", numel: 1, offset: 0, size: &[1], stride: &[1] };
        let path = single_tensor_file(dir.path(), &t, &f32s(&[1.0]))?;
        let archive = TorchArchive::open(&path, None)?;
        let err = archive.read_f32("w").err().ok_or("read")?;
        assert!(
            err.to_string().ends_with("storage 'archive/data/9' of tensor 'w' is missing from the archive"),
            "{err}"
        );
        let err = archive.read_f32("nope").err().ok_or("read")?;
        assert!(err.to_string().ends_with("no tensor named 'nope'"), "{err}");
        Ok(())
    }

    #[test]
    fn unconvertible_dtype_is_listed_but_not_read() -> TestResult {
        let dir = tempfile::tempdir()?;
        let t = T { class: "ComplexFloatStorage", key: "0", numel: 1, offset: 0, size: &[1], stride: &[1] };
        let path = single_tensor_file(dir.path(), &t, &[0; 8])?;
        let archive = TorchArchive::open(&path, None)?;
        assert_eq!(archive.info("w").map(|i| &i.dtype), Some(&DType::Other("ComplexFloatStorage".into())));
        let err = archive.read_f32("w").err().ok_or("read")?;
        assert!(
            err.to_string().ends_with("tensor 'w' has dtype ComplexFloatStorage, which cannot be read as f32"),
            "{err}"
        );
        Ok(())
    }

    #[test]
    fn hostile_shapes_are_rejected() -> TestResult {
        let dir = tempfile::tempdir()?;
        let storage = f32s(&[1.0, 2.0]);

        // Overflowing element count.
        let t = T { class: "FloatStorage", key: "0", numel: 2, offset: 0, size: &[1 << 40, 1 << 40], stride: &[1, 1] };
        let path = single_tensor_file(dir.path(), &t, &storage)?;
        let err = TorchArchive::open(&path, None)?.read_f32("w").err().ok_or("read")?;
        assert!(err.to_string().contains("tensor 'w': shape"), "{err}");

        // Overflowing span.
        let t = T { class: "FloatStorage", key: "0", numel: 2, offset: 0, size: &[2], stride: &[i64::MAX] };
        let path = single_tensor_file(dir.path(), &t, &storage)?;
        let err = TorchArchive::open(&path, None)?.read_f32("w").err().ok_or("read")?;
        assert!(err.to_string().contains("overflow"), "{err}");

        // A large offset: caught by the storage size, without allocating.
        let t = T { class: "FloatStorage", key: "0", numel: 2, offset: 1 << 60, size: &[2], stride: &[1] };
        let path = single_tensor_file(dir.path(), &t, &storage)?;
        let err = TorchArchive::open(&path, None)?.read_f32("w").err().ok_or("read")?;
        assert!(err.to_string().contains("truncated"), "{err}");

        // Stride 0 expanding one stored element to 2^40.
        let t = T { class: "FloatStorage", key: "0", numel: 2, offset: 0, size: &[1 << 20, 1 << 20], stride: &[0, 0] };
        let path = single_tensor_file(dir.path(), &t, &storage)?;
        let err = TorchArchive::open(&path, None)?.read_f32("w").err().ok_or("read")?;
        assert!(err.to_string().contains("overlapping strides"), "{err}");

        // Negative sizes and mismatched ranks are malformed pickles.
        for (size, stride) in [(&[-1i64][..], &[1i64][..]), (&[2][..], &[1, 1][..])] {
            let t = T { class: "FloatStorage", key: "0", numel: 2, offset: 0, size, stride };
            let path = single_tensor_file(dir.path(), &t, &storage)?;
            let err = TorchArchive::open(&path, None).err().ok_or("opened")?;
            assert!(matches!(err, TorchError::Pickle { .. }), "{err}");
        }
        Ok(())
    }

    #[test]
    fn huge_string_length_is_checked() -> TestResult {
        let mut p = Pickle::new(2);
        p.op(op::BINUNICODE).raw(&u32::MAX.to_le_bytes()).raw(b"abc");
        let pickle = p.finish();
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("huge.bin");
        write_zip(&path, &[("archive/data.pkl", &pickle)])?;
        let err = TorchArchive::open(&path, None).err().ok_or("opened")?;
        assert_eq!(
            err.to_string(),
            format!(
                "{}: malformed pickle at byte 2: BINUNICODE claims 4294967295 bytes but only 4 remain",
                path.display()
            )
        );

        for opcode in [op::BINUNICODE8, op::BINBYTES8] {
            let mut p = Pickle::new(4);
            p.op(opcode).raw(&u64::MAX.to_le_bytes());
            let reason = malformed_reason(run_pickle(&p.finish()));
            assert!(reason.contains("claims 18446744073709551615 bytes"), "{reason}");
        }
        let mut p = Pickle::new(2);
        p.op(op::LONG4).raw(&(-5i32).to_le_bytes());
        assert_eq!(malformed_reason(run_pickle(&p.finish())), "LONG4 has negative length -5");
        Ok(())
    }

    #[test]
    fn deep_nesting_does_not_overflow_the_stack() -> TestResult {
        const DEPTH: usize = 200_000;
        let mut p = Pickle::new(2);
        p.op(op::EMPTY_DICT).str("deep_lists");
        for _ in 0..DEPTH {
            p.op(op::EMPTY_LIST);
        }
        for _ in 1..DEPTH {
            p.op(op::APPEND);
        }
        p.op(op::SETITEM).str("deep_tuples");
        for _ in 0..DEPTH {
            p.op(op::MARK);
        }
        for _ in 0..DEPTH {
            p.op(op::TUPLE);
        }
        p.op(op::SETITEM).str("w");
        p.tensor(&T { class: "FloatStorage", key: "0", numel: 1, offset: 0, size: &[1], stride: &[1] });
        p.op(op::SETITEM);
        let pickle = p.finish();
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("deep.bin");
        write_zip(&path, &[("archive/data.pkl", &pickle), ("archive/data/0", &f32s(&[7.0]))])?;
        let archive = TorchArchive::open(&path, None)?;
        assert_eq!(archive.names().collect::<Vec<_>>(), ["w"]);
        assert_eq!(archive.read_f32("w")?.1, [7.0]);
        Ok(())
    }

    #[test]
    fn value_budget_is_enforced() {
        let mut p = Pickle::new(2);
        p.op(op::NONE);
        for _ in 0..200 {
            p.op(op::DUP);
        }
        let pickle = p.finish();
        let result = Machine::new(&pickle, 100).run().map(|_| ());
        assert_eq!(malformed_reason(result), "more than 100 values; refusing to go on");

        let mut p = Pickle::new(2);
        p.op(op::NONE);
        for i in 0..200u32 {
            p.op(op::LONG_BINPUT).raw(&i.to_le_bytes());
        }
        let pickle = p.finish();
        let result = Machine::new(&pickle, 100).run().map(|_| ());
        assert_eq!(malformed_reason(result), "more than 100 values; refusing to go on");
    }

    #[test]
    fn copies_out_of_shared_objects_are_charged() -> TestResult {
        // One long memoized string named as a module over and over.
        let mut p = Pickle::new(4);
        p.str(&"m".repeat(16_000)).put(0);
        for _ in 0..100 {
            p.get(0).get(0).op(op::STACK_GLOBAL).op(op::POP);
        }
        let pickle = p.finish();
        let result = Machine::new(&pickle, 1000).run().map(|_| ());
        assert_eq!(malformed_reason(result), "more than 1000 values; refusing to go on");

        // One tensor of high rank under many names: each copy made for the state dict
        // is charged.
        let dims = [1i64; 100];
        let mut p = Pickle::new(2);
        p.op(op::EMPTY_DICT).op(op::MARK);
        p.str("t0");
        p.tensor(&T { class: "FloatStorage", key: "0", numel: 1, offset: 0, size: &dims, stride: &dims });
        p.put(0);
        for i in 1..50 {
            p.str(&format!("t{i}")).get(0);
        }
        p.op(op::SETITEMS);
        let pickle = p.finish();
        let mut machine = Machine::new(&pickle, 2000);
        let root = machine.run().map_err(|e| format!("{e:?}"))?;
        let result = machine.tensors_of(root).map(|_| ());
        assert_eq!(malformed_reason(result), "more than 2000 values; refusing to go on");
        let mut machine = Machine::new(&pickle, MAX_VALUES);
        let root = machine.run().map_err(|e| format!("{e:?}"))?;
        let tensors = machine.tensors_of(root).map_err(|e| format!("{e:?}"))?.ok_or("no dict")?;
        assert_eq!(tensors.len(), 50);
        Ok(())
    }

    #[test]
    fn pickle_values_stay_small() {
        assert!(std::mem::size_of::<Value>() <= 16);
        assert!(std::mem::size_of::<Obj>() <= 32);
    }

    #[test]
    fn missing_pickle_and_non_zip_files() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("other.zip");
        write_zip(&path, &[("archive/other.txt", b"hello"), ("a/b/data.pkl", b".")])?;
        let err = TorchArchive::open(&path, None).err().ok_or("opened")?;
        assert!(matches!(err, TorchError::MissingPickle { .. }), "{err}");

        // A legacy (pre-1.6) torch.save file starts with a pickle, not a zip header.
        let legacy = dir.path().join("legacy.pt");
        std::fs::write(&legacy, [0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20])?;
        let err = TorchArchive::open(&legacy, None).err().ok_or("opened")?;
        assert_eq!(
            err.to_string(),
            format!("{}: not a PyTorch zip checkpoint (legacy pre-1.6 format or another file type)", legacy.display())
        );
        let empty = dir.path().join("empty.pt");
        std::fs::write(&empty, [])?;
        assert!(matches!(TorchArchive::open(&empty, None), Err(TorchError::NotZip { .. })));

        let missing = dir.path().join("missing.pt");
        assert!(matches!(TorchArchive::open(&missing, None), Err(TorchError::Io { .. })));
        Ok(())
    }

    #[test]
    fn unknown_opcodes_are_named() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("opcode.bin");
        let pickle = Pickle::new(2).op(op::EMPTY_DICT).op(0xff).finish();
        write_zip(&path, &[("archive/data.pkl", &pickle)])?;
        let err = TorchArchive::open(&path, None).err().ok_or("opened")?;
        assert_eq!(err.to_string(), format!("{}: pickle opcode 0xff at byte 3 is not supported", path.display()));
        // Protocol 5 out-of-band buffers, EXT codes and INST are not used by torch.save.
        for opcode in [0x97u8, 0x98, 0x82, b'i', b'S'] {
            let pickle = Pickle::new(5).op(opcode).finish();
            assert!(
                matches!(run_pickle(&pickle), Err(PickleError::Unsupported { opcode: o, offset: 2 }) if o == opcode),
                "{opcode:#x}"
            );
        }
        Ok(())
    }

    /// Patches every local and central header of a stored zip to claim deflate.
    fn mark_deflated(bytes: &mut [u8]) {
        let mut i = 0;
        while i + 12 <= bytes.len() {
            match &bytes[i..i + 4] {
                b"PK\x03\x04" => bytes[i + 8] = 8,
                b"PK\x01\x02" => bytes[i + 10] = 8,
                _ => {}
            }
            i += 1;
        }
    }

    #[test]
    fn compressed_entries_are_rejected() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = write_lightning(dir.path())?;
        let mut bytes = std::fs::read(&path)?;
        mark_deflated(&mut bytes);
        std::fs::write(&path, bytes)?;
        let err = TorchArchive::open(&path, Some("state_dict")).err().ok_or("opened")?;
        assert!(err.to_string().contains("zip entry 'archive/byteorder' is compressed (deflate)"), "{err}");
        Ok(())
    }

    #[test]
    fn big_endian_files_are_rejected() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("big.bin");
        let pickle = Pickle::new(2).op(op::EMPTY_DICT).finish();
        write_zip(&path, &[("archive/data.pkl", &pickle), ("archive/byteorder", b"big")])?;
        let err = TorchArchive::open(&path, None).err().ok_or("opened")?;
        assert!(err.to_string().ends_with("big-endian checkpoints are not supported"), "{err}");
        Ok(())
    }

    #[test]
    fn malformed_pickles_are_errors() {
        let cases: [(&[u8], &str); 9] = [
            (&[op::PROTO, 2], "the pickle ends without STOP"),
            (&[op::PROTO, 2, op::REDUCE, op::STOP], "stack underflow"),
            (&[op::PROTO, 2, op::NONE, op::MARK, op::STOP], "stack underflow"),
            (&[op::PROTO, 2, op::BINGET, 3, op::STOP], "memo entry 3 is not set"),
            (&[op::PROTO, 2, op::APPENDS, op::STOP], "no MARK on the stack"),
            (&[op::PROTO, 2, op::NONE, op::MARK, op::NONE, op::SETITEMS], "odd number of items for a dict"),
            (&[op::PROTO, 2, op::NONE, op::NONE, op::APPEND], "APPEND target is not a list"),
            (&[op::PROTO, 9], "unknown pickle protocol 9"),
            (&[op::PROTO, 2, op::GLOBAL, b'x'], "unterminated text argument"),
        ];
        for (pickle, expected) in cases {
            assert_eq!(malformed_reason(run_pickle(pickle)), expected, "{pickle:?}");
        }
        let mut p = Pickle::new(2);
        p.op(op::MARK).str("storage").op(op::TUPLE1).op(op::BINPERSID);
        let reason = malformed_reason(run_pickle(&p.finish()));
        assert!(reason.starts_with("persistent id is a tuple, not a ('storage'"), "{reason}");
        let reason = malformed_reason(run_pickle(b"Pfoo\n."));
        assert!(reason.starts_with("persistent id is a str"), "{reason}");
    }

    /// Text (protocol 0) opcodes and the remaining container opcodes.
    #[test]
    fn text_and_container_opcodes() -> TestResult {
        let mut p = Pickle(Vec::new());
        p.op(op::MARK);
        p.raw(b"Vkey\\u00e9\n").op(op::PUT).raw(b"7\n");
        p.op(op::INT).raw(b"12345678901234567890\n");
        p.raw(b"Vflag\n").op(op::INT).raw(b"01\n");
        p.raw(b"Vlong\n").op(op::LONG).raw(b"-42L\n");
        p.raw(b"Vfloat\n").op(op::FLOAT).raw(b"2.5\n");
        p.raw(b"Vagain\n").op(op::GET).raw(b"7\n");
        p.raw(b"Vlist\n").op(op::MARK).op(op::BININT1).op(1).op(op::BININT2).raw(&[0, 1]).op(op::LIST);
        p.raw(b"Vset\n").op(op::EMPTY_SET).op(op::MARK).op(op::NONE).op(op::ADDITEMS);
        p.raw(b"Vfrozen\n").op(op::MARK).op(op::NONE).op(op::FROZENSET);
        p.raw(b"Vbytes\n").op(op::SHORT_BINBYTES).op(2).raw(b"ab");
        p.raw(b"Vpy2\n").op(op::SHORT_BINSTRING).op(2).raw(b"ab");
        p.raw(b"Vpopped\n").op(op::NONE).op(op::NONE).op(op::POP).op(op::MARK).op(op::NONE).op(op::POP_MARK);
        p.raw(b"Vnewobj_ex\n").global("some.module", "Thing").op(op::EMPTY_TUPLE).op(op::EMPTY_DICT);
        p.op(op::NEWOBJ_EX).op(op::MARK).op(op::NONE).op(op::APPENDS);
        p.raw(b"Vdup\n").op(op::EMPTY_LIST).op(op::DUP).op(op::POP);
        p.op(op::DICT);
        let pickle = p.finish();

        let mut machine = Machine::new(&pickle, MAX_VALUES);
        let root = machine.run().map_err(|e| format!("{e:?}"))?;
        let get = |key| machine.dict_get(root, key).map(|v| machine.describe(v));
        assert_eq!(get("key\u{e9}").as_deref(), Some("a large int"));
        assert_eq!(get("flag").as_deref(), Some("the bool True"));
        assert_eq!(get("long").as_deref(), Some("the int -42"));
        assert_eq!(get("float").as_deref(), Some("the float 2.5"));
        assert_eq!(get("again").as_deref(), Some("a str"));
        assert_eq!(get("list").as_deref(), Some("a list"));
        assert_eq!(get("set").as_deref(), Some("a set"));
        assert_eq!(get("frozen").as_deref(), Some("a set"));
        assert_eq!(get("bytes").as_deref(), Some("a bytes object"));
        assert_eq!(get("py2").as_deref(), Some("a str"));
        assert_eq!(get("popped").as_deref(), Some("None"));
        assert_eq!(get("newobj_ex").as_deref(), Some("an object of class some.module.Thing"));
        assert_eq!(get("dup").as_deref(), Some("a list"));
        let list = machine.dict_get(root, "list").and_then(|v| machine.items(v));
        assert!(matches!(list, Some([Value::Int(1), Value::Int(256)])));
        Ok(())
    }

    #[test]
    fn long_key_lists_are_shortened() {
        let keys: Vec<String> = (0..12).map(|i| format!("k{i}")).collect();
        assert_eq!(key_list(&keys[..2]), "k0, k1");
        assert_eq!(key_list(&keys), "k0, k1, k2, k3, k4, k5, k6, k7, k8, k9, … and 2 more");
    }

    #[test]
    fn long_and_escape_decoding() {
        assert!(matches!(decode_long(&[]), Value::Int(0)));
        assert!(matches!(decode_long(&[0xff]), Value::Int(-1)));
        assert!(matches!(decode_long(&[0x00, 0x80]), Value::Int(-32768)));
        assert!(matches!(decode_long(&[0xff, 0x00]), Value::Int(255)));
        assert!(matches!(decode_long(&[1; 9]), Value::BigInt));
        assert_eq!(decode_raw_unicode_escape(b"a\\u00e9\\U0001F600\xe9\\x\\u12"), "a\u{e9}\u{1F600}\u{e9}\\x\\u12");
    }
}
