//! Square windows of an image, each resampled to one size by a matrix per axis, as one
//! candle custom op on the CPU (the notebook's cutouts: `engine::cutouts::cut`). The
//! composition it replaces makes about eight graph nodes a window (two narrows, copies
//! for the reshapes and transposes, two products, the concatenation), each of which gets
//! a zero gradient and an addition on the way back; here the products read each window
//! in place from the image, write straight into the batch, and on the way back add each
//! window's gradient straight into the image's.

use std::sync::Arc;

use candle_core::{bail, CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor};

use super::storage::{dense, input_slice, with_cpu_slice, with_cpu_slices};
use crate::models::kernels::{self, MatMut, MatRef};

/// One window: its top-left corner and side, and the `[size, out]` matrix (the
/// transposed `[out, size]` resampling) that maps a row or column of it to `out` values;
/// `None` when the side already is `out` (the identity).
#[derive(Debug, Clone)]
pub struct Window {
    pub y: usize,
    pub x: usize,
    pub size: usize,
    pub matrix_t: Option<Tensor>,
}

/// `windows` of `img` (`[1, C, H, W]`, f32 on the CPU), each resampled to `out×out` by
/// `M·window·Mᵀ` per channel: `[windows, C, out, out]`, in the order given.
pub fn resample_windows(img: &Tensor, windows: &[Window], out: usize) -> Result<Tensor> {
    if !img.device().is_cpu() || img.dtype() != DType::F32 {
        bail!("windows: needs a CPU f32 image")
    }
    let (b, _, h, w) = img.dims4()?;
    if b != 1 || windows.is_empty() || out == 0 {
        bail!("windows: needs one image, some windows and an output size")
    }
    let mut mats = Vec::with_capacity(windows.len());
    for win in windows {
        if win.size == 0 || win.x + win.size > w || win.y + win.size > h {
            bail!("windows: a window of side {} at ({}, {}) lies outside the {w}x{h} image", win.size, win.x, win.y)
        }
        mats.push(match &win.matrix_t {
            None if win.size == out => None,
            Some(m) if m.dims() == [win.size, out] && m.dtype() == DType::F32 && m.device().is_cpu() => Some(dense(m)?),
            _ => bail!("windows: the matrix of a window of side {} does not map it to {out}", win.size),
        });
    }
    let op = WindowsOp { windows: Arc::new(windows.iter().map(|w| (w.y, w.x, w.size)).collect()), mats, out };
    dense(img)?.apply_op1(op)
}

struct WindowsOp {
    /// Each window's `(y, x, size)`.
    windows: Arc<Vec<(usize, usize, usize)>>,
    /// Each window's dense `[size, out]` matrix, `None` for the identity.
    mats: Vec<Option<Tensor>>,
    out: usize,
}

impl WindowsOp {
    /// Runs `f` with each window's matrix as a slice (empty for the identity).
    fn with_matrices<R>(&self, f: impl FnOnce(&[&[f32]]) -> Result<R>) -> Result<R> {
        let present: Vec<Tensor> = self.mats.iter().flatten().cloned().collect();
        with_cpu_slices(&present, |slices| {
            let mut it = slices.iter();
            let all: Vec<&[f32]> =
                self.mats.iter().map(|m| if m.is_some() { it.next().copied().unwrap_or(&[]) } else { &[] }).collect();
            f(&all)
        })
    }
}

impl CustomOp1 for WindowsOp {
    fn name(&self) -> &'static str {
        "resample-windows"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let img = input_slice(storage, layout)?;
        let (_, c, h, w) = layout.shape().dims4()?;
        let n = self.out;
        let mut y = vec![0.0f32; self.windows.len() * c * n * n];
        self.with_matrices(|mats| {
            let mut tmp = Vec::new();
            for (k, (&(wy, wx, s), m)) in self.windows.iter().zip(mats).enumerate() {
                for ch in 0..c {
                    let src = MatRef { data: img, offset: ch * h * w + wy * w + wx, rows: s, cols: s, rs: w, cs: 1 };
                    let at = (k * c + ch) * n * n;
                    if m.is_empty() {
                        for (i, row) in y[at..at + n * n].chunks_exact_mut(n).enumerate() {
                            let from = src.offset + i * w;
                            row.copy_from_slice(&img[from..from + n]);
                        }
                        continue;
                    }
                    // T = window·Mᵀ (`[s, n]`), then out = M·T.
                    let mt = MatRef { data: m, offset: 0, rows: s, cols: n, rs: n, cs: 1 };
                    tmp.resize(s * n, 0.0);
                    let mut t = MatMut { data: &mut tmp, offset: 0, rows: s, cols: n, rs: n, cs: 1 };
                    kernels::matmul(&mut t, src, mt, false)?;
                    let t = MatRef { data: &tmp, offset: 0, rows: s, cols: n, rs: n, cs: 1 };
                    let mut dst = MatMut { data: &mut y, offset: at, rows: n, cols: n, rs: n, cs: 1 };
                    kernels::matmul(&mut dst, mt.t(), t, false)?;
                }
            }
            Ok(())
        })?;
        Ok((CpuStorage::F32(y), Shape::from((self.windows.len(), c, n, n))))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let (_, c, h, w) = arg.dims4()?;
        let n = self.out;
        let mut dimg = vec![0.0f32; c * h * w];
        with_cpu_slice(&dense(grad)?, |dy| {
            if dy.len() != self.windows.len() * c * n * n {
                bail!("windows backward: {} gradients for {} windows of {c}x{n}x{n}", dy.len(), self.windows.len())
            }
            self.with_matrices(|mats| {
                let mut tmp = Vec::new();
                for (k, (&(wy, wx, s), m)) in self.windows.iter().zip(mats).enumerate() {
                    for ch in 0..c {
                        let at = (k * c + ch) * n * n;
                        let offset = ch * h * w + wy * w + wx;
                        if m.is_empty() {
                            for (i, row) in dy[at..at + n * n].chunks_exact(n).enumerate() {
                                let to = offset + i * w;
                                dimg[to..to + n].iter_mut().zip(row).for_each(|(d, g)| *d += g);
                            }
                            continue;
                        }
                        // dT = Mᵀ·dY (`[s, n]`), then the window's gradient += dT·M.
                        let mt = MatRef { data: m, offset: 0, rows: s, cols: n, rs: n, cs: 1 };
                        let g = MatRef { data: dy, offset: at, rows: n, cols: n, rs: n, cs: 1 };
                        tmp.resize(s * n, 0.0);
                        let mut dt = MatMut { data: &mut tmp, offset: 0, rows: s, cols: n, rs: n, cs: 1 };
                        kernels::matmul(&mut dt, mt, g, false)?;
                        let dt = MatRef { data: &tmp, offset: 0, rows: s, cols: n, rs: n, cs: 1 };
                        let mut dst = MatMut { data: &mut dimg, offset, rows: s, cols: s, rs: w, cs: 1 };
                        kernels::matmul(&mut dst, dt, mt.t(), true)?;
                    }
                }
                Ok(())
            })
        })?;
        Ok(Some(Tensor::from_vec(dimg, arg.shape(), arg.device())?))
    }
}
