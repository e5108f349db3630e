//! Tensor values from storage bytes: little-endian elements of each [`DType`] to f32,
//! and the elements of a strided view (transposed, offset or expanded) in row-major
//! order. Bounds are checked by the caller ([`super::TorchArchive::read_f32`]) before
//! the bytes are read.

use half::{bf16, f16};

use super::DType;

/// Little-endian elements of `dtype` to f32.
pub(super) fn decode(dtype: &DType, bytes: &[u8]) -> Vec<f32> {
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
pub(super) fn gather(flat: &[f32], shape: &[usize], stride: &[usize], numel: usize) -> Vec<f32> {
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
