//! The only place that opens model weight files.
//!
//! A [`WeightFile`] is a safetensors file (memory-mapped) or a PyTorch zip checkpoint
//! (an HF `pytorch_model.bin` or a Lightning `.ckpt`, read through [`torch`]). It hands
//! tensors to model constructors through a candle [`VarBuilder`] whose backend checks
//! every requested shape against the file and records the first problem as a typed
//! [`ModelError`] naming the file and tensor.

pub mod torch;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;
use safetensors::{Dtype as StDtype, SafeTensors};

use crate::models::error::{ModelError, Result};
use torch::TorchArchive;

/// Name, dtype, shape and location of one tensor in a safetensors file.
#[derive(Debug, Clone)]
struct StEntry {
    dtype: StDtype,
    shape: Vec<usize>,
    start: usize,
    end: usize,
}

enum Source {
    Safetensors { map: memmap2::Mmap, entries: HashMap<String, StEntry>, order: Vec<String> },
    Torch(TorchArchive),
}

/// An opened weight file.
pub struct WeightFile {
    path: PathBuf,
    source: Source,
}

impl std::fmt::Debug for WeightFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WeightFile").field("path", &self.path).finish_non_exhaustive()
    }
}

/// How to read a PyTorch zip checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TorchLayout {
    /// The top-level object is the state dict (`pytorch_model.bin`).
    StateDict,
    /// The state dict is the top-level dict's `state_dict` entry (Lightning `.ckpt`).
    Lightning,
}

impl WeightFile {
    /// Opens a safetensors file.
    pub fn open_safetensors(path: &Path) -> Result<Self> {
        // A FIFO or a device is refused before it is opened or mapped.
        let (file, _) = crate::files::open_regular(path)?;
        // SAFETY: the map is read-only. A model file changed on disk while it is open
        // could change the bytes we read, which is the accepted trade-off of mmap for
        // multi-gigabyte weights; every offset is validated before use.
        #[expect(unsafe_code, reason = "memory-mapping multi-gigabyte weight files")]
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| ModelError::io(path, e))?;
        let (header_len, metadata) = SafeTensors::read_metadata(&map)
            .map_err(|e| ModelError::format(path, format!("not a valid safetensors file ({e})")))?;
        let mut named: Vec<(String, StEntry)> = metadata
            .tensors()
            .into_iter()
            .map(|(name, info)| {
                let entry = StEntry {
                    dtype: info.dtype,
                    shape: info.shape.clone(),
                    start: info.data_offsets.0 + 8 + header_len,
                    end: info.data_offsets.1 + 8 + header_len,
                };
                (name, entry)
            })
            .collect();
        if let Some((name, _)) = named.iter().find(|(_, e)| e.end > map.len()) {
            return Err(ModelError::format(
                path,
                format!("truncated: the data of tensor '{name}' runs past the end of the file"),
            ));
        }
        named.sort_by_key(|(_, e)| e.start);
        let order = named.iter().map(|(n, _)| n.clone()).collect();
        Ok(Self {
            path: path.to_path_buf(),
            source: Source::Safetensors { map, entries: named.into_iter().collect(), order },
        })
    }

    /// Opens a PyTorch zip checkpoint.
    pub fn open_torch(path: &Path, layout: TorchLayout) -> Result<Self> {
        let key = match layout {
            TorchLayout::StateDict => None,
            TorchLayout::Lightning => Some("state_dict"),
        };
        let archive = TorchArchive::open(path, key)?;
        Ok(Self { path: path.to_path_buf(), source: Source::Torch(archive) })
    }

    /// Opens by extension: `.safetensors`, else a PyTorch checkpoint (`.ckpt` as
    /// Lightning, anything else as a bare state dict).
    pub fn open(path: &Path) -> Result<Self> {
        if !path.exists() {
            return Err(ModelError::io(path, std::io::Error::new(std::io::ErrorKind::NotFound, "file not found")));
        }
        if path.is_dir() {
            return Err(ModelError::format(path, "is a folder, expected a weight file"));
        }
        match path.extension().and_then(|e| e.to_str()) {
            Some("safetensors") => Self::open_safetensors(path),
            Some("ckpt") => Self::open_torch(path, TorchLayout::Lightning),
            _ => Self::open_torch(path, TorchLayout::StateDict),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Tensor names in file order.
    pub fn names(&self) -> Vec<String> {
        match &self.source {
            Source::Safetensors { order, .. } => order.clone(),
            Source::Torch(a) => a.names().map(str::to_owned).collect(),
        }
    }

    pub fn contains(&self, name: &str) -> bool {
        self.shape(name).is_some()
    }

    pub fn shape(&self, name: &str) -> Option<Vec<usize>> {
        match &self.source {
            Source::Safetensors { entries, .. } => entries.get(name).map(|e| e.shape.clone()),
            Source::Torch(a) => a.info(name).map(|i| i.shape.clone()),
        }
    }

    /// Reads one tensor as f32 values in row-major order.
    pub fn read_f32(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        match &self.source {
            Source::Safetensors { map, entries, .. } => {
                let entry = entries.get(name).ok_or_else(|| self.missing(name))?;
                let bytes = &map[entry.start..entry.end];
                let values = decode_le(bytes, entry.dtype).ok_or_else(|| {
                    ModelError::format(
                        &self.path,
                        format!("tensor '{name}' has dtype {:?}, which is not a float type", entry.dtype),
                    )
                })?;
                Ok((entry.shape.clone(), values))
            }
            Source::Torch(a) => Ok(a.read_f32(name)?),
        }
    }

    /// Reads one tensor onto `device` as `dtype`, checking its shape.
    pub fn tensor(&self, name: &str, expected: &[usize], dtype: DType, device: &Device) -> Result<Tensor> {
        let (shape, values) = self.read_f32(name)?;
        if shape != expected {
            // A stored scalar and a one-element vector are the same parameter.
            let same_scalar = shape.iter().product::<usize>() == 1 && expected.iter().product::<usize>() == 1;
            if !same_scalar {
                return Err(ModelError::ShapeMismatch {
                    path: self.path.clone(),
                    name: name.to_owned(),
                    expected: expected.to_vec(),
                    found: shape,
                });
            }
        }
        Ok(Tensor::from_vec(values, expected, device)?.to_dtype(dtype)?)
    }

    fn missing(&self, name: &str) -> ModelError {
        let names = self.names();
        let hint = if names.is_empty() {
            " (the file holds no tensors)".to_owned()
        } else {
            let shown: Vec<&str> = names.iter().take(3).map(String::as_str).collect();
            format!(" (the file holds {} tensors, e.g. {})", names.len(), shown.join(", "))
        };
        ModelError::MissingTensor { path: self.path.clone(), name: name.to_owned(), hint }
    }

    /// A [`VarBuilder`] over this file, with `prefix` in front of every name.
    /// Problems are kept in the returned [`LoadReport`] as typed errors.
    pub fn var_builder(
        self: &Arc<Self>,
        prefix: &str,
        dtype: DType,
        device: &Device,
    ) -> (VarBuilder<'static>, LoadReport) {
        let report = LoadReport::default();
        let backend = FileBackend { file: Arc::clone(self), report: report.clone() };
        let vb = VarBuilder::from_backend(Box::new(backend), dtype, device.clone());
        let vb = if prefix.is_empty() { vb } else { vb.push_prefix(prefix.trim_end_matches('.')) };
        (vb, report)
    }
}

/// Decodes little-endian float data to f32.
fn decode_le(bytes: &[u8], dtype: StDtype) -> Option<Vec<f32>> {
    Some(match dtype {
        StDtype::F32 => bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
        StDtype::F16 => bytes.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        StDtype::BF16 => bytes.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        #[expect(clippy::cast_possible_truncation, reason = "weights are used as f32")]
        StDtype::F64 => bytes
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32)
            .collect(),
        _ => return None,
    })
}

/// The first problem met while a model pulled tensors from a [`WeightFile`].
#[derive(Debug, Clone, Default)]
pub struct LoadReport(Arc<Mutex<Option<ModelError>>>);

impl LoadReport {
    fn record(&self, err: ModelError) -> candle_core::Error {
        let msg = err.to_string();
        if let Ok(mut slot) = self.0.lock() {
            if slot.is_none() {
                *slot = Some(err);
            }
        }
        candle_core::Error::Msg(msg)
    }

    /// Turns a constructor's result into a typed one: the recorded weight-file error
    /// if there is one, else the candle error.
    pub fn finish<T>(&self, built: candle_core::Result<T>) -> Result<T> {
        match built {
            Ok(v) => Ok(v),
            Err(e) => {
                let recorded = self.0.lock().ok().and_then(|mut slot| slot.take());
                Err(recorded.unwrap_or(ModelError::Candle(e)))
            }
        }
    }
}

struct FileBackend {
    file: Arc<WeightFile>,
    report: LoadReport,
}

impl SimpleBackend for FileBackend {
    fn get(&self, s: Shape, name: &str, _: candle_nn::Init, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        if !self.file.contains(name) {
            return Err(self.report.record(self.file.missing(name)));
        }
        self.file.tensor(name, s.dims(), dtype, dev).map_err(|e| self.report.record(e))
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let (shape, values) = self.file.read_f32(name).map_err(|e| self.report.record(e))?;
        Tensor::from_vec(values, shape, dev)?.to_dtype(dtype)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.file.contains(name)
    }
}

/// A backend that loads nothing: it records each name and shape a constructor asks for
/// and hands back a zero-cost broadcast zero. Used to prove that a model built from a
/// full-size config asks for exactly the tensors the real file holds.
#[derive(Debug, Clone, Default)]
pub struct ShapeRecorder(Arc<Mutex<Vec<NamedShape>>>);

/// A tensor name and its shape.
pub type NamedShape = (String, Vec<usize>);

impl ShapeRecorder {
    pub fn var_builder(&self, device: &Device) -> VarBuilder<'static> {
        VarBuilder::from_backend(Box::new(self.clone()), DType::F32, device.clone())
    }

    /// The requested tensors, in request order.
    pub fn requested(&self) -> Vec<NamedShape> {
        self.0.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

impl SimpleBackend for ShapeRecorder {
    fn get(&self, s: Shape, name: &str, _: candle_nn::Init, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        if let Ok(mut v) = self.0.lock() {
            v.push((name.to_owned(), s.dims().to_vec()));
        }
        Tensor::zeros((), dtype, dev)?.broadcast_as(s)
    }

    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("shape recorder: '{name}' requested without a shape")
    }

    fn contains_tensor(&self, _: &str) -> bool {
        true
    }
}

/// A backend of seeded random weights, for gradient checks of whole models.
#[cfg(test)]
pub(crate) struct RandomBackend {
    pub scale: f64,
    pub dtype: DType,
}

#[cfg(test)]
impl RandomBackend {
    pub(crate) fn var_builder(scale: f64, dtype: DType) -> VarBuilder<'static> {
        VarBuilder::from_backend(Box::new(Self { scale, dtype }), dtype, Device::Cpu)
    }
}

#[cfg(test)]
impl SimpleBackend for RandomBackend {
    fn get(&self, s: Shape, name: &str, _: candle_nn::Init, _: DType, dev: &Device) -> candle_core::Result<Tensor> {
        // Seed from the name so every tensor differs but runs repeat.
        let mut state =
            name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
        let n = s.elem_count();
        let v: Vec<f64> = (0..n)
            .map(|_| {
                state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                #[expect(clippy::cast_precision_loss, reason = "test data")]
                let u = (state >> 11) as f64 / (1u64 << 53) as f64;
                (u * 2.0 - 1.0) * self.scale
            })
            .collect();
        let t = Tensor::from_vec(v, s, dev)?;
        // Norm weights near one, as trained models have them.
        if name.ends_with("norm1.weight")
            || name.ends_with("norm2.weight")
            || name.ends_with("norm.weight")
            || name.ends_with("norm_out.weight")
            || name.ends_with("layernorm.weight")
            || name.ends_with("layrnorm.weight")
            || name.ends_with("layer_norm.weight")
        {
            return (t + 1.0)?.to_dtype(self.dtype);
        }
        t.to_dtype(self.dtype)
    }

    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("random backend: '{name}' requested without a shape")
    }

    fn contains_tensor(&self, _: &str) -> bool {
        true
    }
}
