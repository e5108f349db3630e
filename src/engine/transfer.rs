//! What crosses between the host and the compute device, counted: every tensor the
//! engine builds from host values for a step goes up through [`upload`], and every value
//! it reads back comes down through [`download_f32`]. On a GPU each is a copy over the
//! bus and a synchronisation; on the CPU the same calls are memory copies, and the counts
//! say what a GPU run would copy, so tests can hold an iteration to its budget.
//!
//! The counts are per thread (a session steps on the thread that calls it), so tests
//! running side by side do not see each other's.

use std::cell::Cell;

use candle_core::{DType, Device, Result, Shape, Tensor, WithDType};
use serde::{Deserialize, Serialize};

/// Copies between host and device, with their sizes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfers {
    pub uploads: u64,
    pub upload_bytes: u64,
    pub downloads: u64,
    pub download_bytes: u64,
}

impl Transfers {
    /// What happened between `earlier` and `self`.
    pub fn since(self, earlier: Self) -> Self {
        Self {
            uploads: self.uploads - earlier.uploads,
            upload_bytes: self.upload_bytes - earlier.upload_bytes,
            downloads: self.downloads - earlier.downloads,
            download_bytes: self.download_bytes - earlier.download_bytes,
        }
    }
}

thread_local! {
    static COUNTS: Cell<Transfers> = const { Cell::new(Transfers { uploads: 0, upload_bytes: 0, downloads: 0, download_bytes: 0 }) };
}

/// This thread's counts so far.
pub fn counts() -> Transfers {
    COUNTS.with(Cell::get)
}

fn note(up: bool, bytes: usize) {
    let bytes = u64::try_from(bytes).unwrap_or(u64::MAX);
    COUNTS.with(|c| {
        let mut t = c.get();
        if up {
            t.uploads += 1;
            t.upload_bytes = t.upload_bytes.saturating_add(bytes);
        } else {
            t.downloads += 1;
            t.download_bytes = t.download_bytes.saturating_add(bytes);
        }
        c.set(t);
    });
}

/// Host values as a tensor of `shape` in `dtype` on `device`: one upload (converted to
/// `dtype` on the host first, so only the final bytes travel).
pub fn upload<T: WithDType>(values: Vec<T>, shape: impl Into<Shape>, dtype: DType, device: &Device) -> Result<Tensor> {
    let host = Tensor::from_vec(values, shape, &Device::Cpu)?.to_dtype(dtype)?;
    note(true, host.elem_count() * dtype.size_in_bytes());
    host.to_device(device)
}

/// A tensor's values on the host, in f32 and flattened: one download.
pub fn download_f32(t: &Tensor) -> Result<Vec<f32>> {
    let v: Vec<f32> = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    note(false, v.len() * 4);
    Ok(v)
}
