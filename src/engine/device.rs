//! Choosing the compute device from a user's `cpu`, `cuda[:N]` or `metal`, and the
//! number format the frozen networks run in on it.

use candle_core::{DType, Device};

use crate::settings::Precision;

use super::error::{EngineError, Result};

/// Parses a device name and opens it; names a missing GPU build or device clearly.
/// `auto` is the first GPU this build can open (CUDA, then Metal), else the CPU.
pub fn parse_device(name: &str) -> Result<Device> {
    let name = name.trim().to_ascii_lowercase();
    if name == "cpu" {
        return Ok(Device::Cpu);
    }
    if name == "auto" {
        if candle_core::utils::cuda_is_available() {
            if let Ok(d) = Device::new_cuda(0) {
                return Ok(d);
            }
        }
        if candle_core::utils::metal_is_available() {
            if let Ok(d) = Device::new_metal(0) {
                return Ok(d);
            }
        }
        return Ok(Device::Cpu);
    }
    let (kind, index) = match name.split_once(':') {
        Some((k, i)) => {
            let i: usize = i.parse().map_err(|_| EngineError::Device(format!("bad device index in '{name}'")))?;
            (k.to_owned(), i)
        }
        None => (name.clone(), 0),
    };
    match kind.as_str() {
        "cuda" => {
            if !candle_core::utils::cuda_is_available() {
                return Err(EngineError::Device(
                    "this build has no CUDA support (rebuild with --features cuda)".into(),
                ));
            }
            Device::new_cuda(index).map_err(|e| EngineError::Device(format!("cannot open cuda:{index} ({e})")))
        }
        "metal" => {
            if !candle_core::utils::metal_is_available() {
                return Err(EngineError::Device(
                    "this build has no Metal support (rebuild with --features metal)".into(),
                ));
            }
            Device::new_metal(index).map_err(|e| EngineError::Device(format!("cannot open metal:{index} ({e})")))
        }
        _ => Err(EngineError::Device(format!("unknown device '{name}' (expected auto, cpu, cuda[:N] or metal)"))),
    }
}

/// The format the frozen networks' weights are loaded in for `precision`.
pub fn weights_dtype(precision: Precision) -> DType {
    match precision {
        Precision::F32 => DType::F32,
        Precision::F16 => DType::F16,
        Precision::Bf16 => DType::BF16,
    }
}

/// Refuses a number format the device cannot run: candle's CPU backend has no bf16
/// matrix product. f16 runs on the CPU, slower than f32 there (it is for GPUs).
pub fn check_precision(device: &Device, precision: Precision) -> Result<()> {
    if device.is_cpu() && precision == Precision::Bf16 {
        return Err(EngineError::Input(
            "bf16 precision needs a GPU (device cuda); on the CPU use f32 (f16 runs there too, but slower)".into(),
        ));
    }
    Ok(())
}

/// The memory in use on a GPU (its total less its free memory, every process counted),
/// `None` on the CPU or where the driver cannot say.
pub fn memory_in_use(device: &Device) -> Option<u64> {
    match device {
        #[cfg(feature = "cuda")]
        Device::Cuda(d) => {
            let (free, total) = d.cuda_stream().context().mem_get_info().ok()?;
            u64::try_from(total.saturating_sub(free)).ok()
        }
        _ => None,
    }
}
