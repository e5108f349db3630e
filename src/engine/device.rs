//! Choosing the compute device from a user's `cpu`, `cuda[:N]` or `metal`.

use candle_core::Device;

use super::error::{EngineError, Result};

/// Parses a device name and opens it; names a missing GPU build or device clearly.
pub fn parse_device(name: &str) -> Result<Device> {
    let name = name.trim().to_ascii_lowercase();
    if name == "cpu" {
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
        _ => Err(EngineError::Device(format!("unknown device '{name}' (expected cpu, cuda[:N] or metal)"))),
    }
}
