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
//!
//! The folder is split by role. `mod.rs` uses its children; `archive`, `decode` and
//! `pickle` use only this file's types, never each other:
//!
//! - `mod.rs`: the public API: [`TorchArchive`] (opening a checkpoint, listing its
//!   tensors, reading one as f32), [`TensorInfo`], [`DType`] and [`TorchError`].
//! - `archive.rs`: the zip side: finding `data.pkl`, checking that entries are stored
//!   and how much of them the file holds, reading whole entries and byte ranges of
//!   storages, each entry checked against its CRC-32.
//! - `decode.rs`: little-endian storage bytes to f32, and strided views to row-major
//!   order.
//! - `pickle/`: the bounded, panic-free pickle virtual machine that turns `data.pkl`
//!   into the tensors' layouts.
//! - `tests.rs`: tests of whole checkpoints through the public API.

mod archive;
mod decode;
mod pickle;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use zip::result::ZipError;
use zip::ZipArchive;

use archive::{find_pickle, read_whole_entry};
use decode::{decode, gather};
use pickle::{Machine, PickleError, MAX_VALUES};

/// The most elements a tensor whose strides overlap (e.g. stride 0 from `expand`) may
/// expand to beyond the storage span it covers.
const MAX_OVERLAP_ELEMENTS: usize = 1 << 26;
/// The largest `byteorder` entry accepted.
const MAX_BYTEORDER_LEN: u64 = 64;

/// Errors from opening or reading a PyTorch checkpoint. Every message is one line that
/// starts with the file path.
#[derive(Debug, thiserror::Error)]
pub enum TorchError {
    #[error("{}: {cause}", .path.display())]
    Io { path: PathBuf, cause: io::Error },

    /// Not a regular file (a FIFO, a device, a folder).
    #[error(transparent)]
    File(crate::files::FileError),

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

    #[error(
        "{}: corrupt: zip entry '{entry}' fails its CRC-32 check (recorded {recorded:08x}, computed {computed:08x})",
        .path.display()
    )]
    Corrupt { path: PathBuf, entry: String, recorded: u32, computed: u32 },

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
    /// The storage entries whose CRC-32 has been checked.
    verified: Mutex<HashSet<String>>,
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
        // A FIFO or a device is refused before it is opened.
        let (mut file, _) = crate::files::open_regular(path).map_err(|e| match e {
            crate::files::FileError::Read { source, .. } => io_err(source),
            other => TorchError::File(other),
        })?;
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

        Ok(Self {
            path: path.to_owned(),
            prefix,
            zip: Mutex::new(zip),
            verified: Mutex::new(HashSet::new()),
            file_len,
            tensors,
            index,
            top_level_keys,
        })
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
