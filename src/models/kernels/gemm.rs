//! The single-precision matrix product under every convolution and frozen linear layer
//! on the CPU: `C (+)= A·B`, blocked and packed in the GotoBLAS/BLIS loop order (panels
//! of `B` sized for the shared cache, blocks of `A` for the core's L2, a tile of `C` in
//! registers) with AVX-512 micro-kernels (a 12×32 tile in 24 registers: two 16-wide
//! panels of `B` at once; 12×16 for a lone panel) or an AVX2+FMA one (6×16, half a
//! packed panel of `A` at a time) where the CPU has them, and a portable one elsewhere.
//! Threads split `C` into column (or row) ranges, each packing its own panels.
//!
//! Operands are read through offset axes: element `(i, j)` of an operand is
//! `data[rows.at(i) + cols.at(j)]`. A strided matrix is two strided axes; the im2col
//! matrix of a convolution is a table of per-(channel, tap) offsets into the padded input
//! times a unit-stride axis, so a convolution is one product over `K = Cin·k·k` read
//! straight from its input while packing, and no im2col matrix is ever built.
//!
//! Every offset the product can read, and every element of `C` it can write, is checked
//! against its slice before any work starts; the `unsafe` here is the SIMD micro-kernels
//! and the writes into `C` through a pointer shared by the threads (disjoint tiles).
//!
//! The file is one piece, about 800 lines with its tests: the blocking, packing and
//! threading of one product share its constants and checked views; the register
//! kernels are `gemm/micro.rs`.

use std::cell::RefCell;

use candle_core::{bail, Result};

mod micro;

use micro::portable_kernel;
#[cfg(target_arch = "x86_64")]
use micro::{avx2, avx512};

/// Rows of a packed panel of `A`, and of the AVX-512 kernels' register tile (twelve rows
/// of two 16-wide vectors are 24 of the 32 registers: enough independent sums to keep
/// both FMA units of a Golden Cove core busy, where six rows left it a tenth idle).
pub const MR: usize = 12;
/// Columns of a packed panel of `B` (one AVX-512 vector, two AVX ones).
pub const NR: usize = 16;
/// Rows of the AVX2 kernel's tile: 12 of its 16 registers hold a 6×16 tile.
const MR_AVX2: usize = 6;
/// Row stride of the scratch tile that partial tiles are computed into.
const TS: usize = 2 * NR;
/// Depth of a packed block (a 16-wide panel of `B` is 16 KB: it stays in L1).
const KC: usize = 256;
/// Rows of a packed block of `A` (144×256 floats, 144 KB: it stays in L2); a multiple of `MR`.
const MC: usize = 144;
/// Columns of a packed panel of `B` (256×2048 floats, 2 MB: it stays in L3).
const NC: usize = 2048;
/// Products smaller than this (m·n·k) run on one thread.
const PARALLEL_WORK: usize = 1 << 18;

/// The offsets along one dimension of an operand.
#[derive(Debug, Clone, Copy)]
pub enum Axis<'a> {
    /// `start + i·stride` for `i < len`.
    Strided { start: usize, stride: usize, len: usize },
    /// Given offsets, one per index.
    Table(&'a [usize]),
}

impl<'a> Axis<'a> {
    pub fn strided(start: usize, stride: usize, len: usize) -> Self {
        Self::Strided { start, stride, len }
    }

    pub fn len(&self) -> usize {
        match *self {
            Self::Strided { len, .. } => len,
            Self::Table(t) => t.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The offset of index `i` (`i < len`).
    fn at(&self, i: usize) -> usize {
        match *self {
            Self::Strided { start, stride, .. } => start + i * stride,
            Self::Table(t) => t[i],
        }
    }

    /// The largest offset, `None` when empty or past `usize`.
    fn max(&self) -> Option<usize> {
        match *self {
            Self::Strided { len: 0, .. } => None,
            Self::Strided { start, stride, len } => start.checked_add((len - 1).checked_mul(stride)?),
            Self::Table(t) => t.iter().copied().max(),
        }
    }

    /// Indices `from..to` as an axis of their own.
    fn range(&self, from: usize, to: usize) -> Axis<'a> {
        match *self {
            Self::Strided { start, stride, .. } => {
                Self::Strided { start: start + from * stride, stride, len: to - from }
            }
            Self::Table(t) => Self::Table(&t[from..to]),
        }
    }

    /// Whether consecutive indices are consecutive elements.
    fn unit(&self) -> bool {
        matches!(self, Self::Strided { stride: 1, .. }) || self.len() <= 1
    }

    /// The offsets of indices `from..from + out.len()`.
    fn fill(&self, from: usize, out: &mut Vec<usize>, count: usize) {
        out.clear();
        out.extend((from..from + count).map(|i| self.at(i)));
    }
}

/// A read-only operand: element `(i, j)` is `data[rows.at(i) + cols.at(j)]`.
#[derive(Debug, Clone, Copy)]
pub struct Operand<'a> {
    pub data: &'a [f32],
    pub rows: Axis<'a>,
    pub cols: Axis<'a>,
}

impl Operand<'_> {
    /// Whether every element lies inside `data` (an empty operand always does).
    fn in_bounds(&self) -> bool {
        match (self.rows.max(), self.cols.max()) {
            (Some(r), Some(c)) => r.checked_add(c).is_some_and(|last| last < self.data.len()),
            _ => true,
        }
    }
}

/// A strided matrix view of a slice: element `(i, j)` is `data[offset + i·rs + j·cs]`.
#[derive(Debug, Clone, Copy)]
pub struct MatRef<'a> {
    pub data: &'a [f32],
    pub offset: usize,
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

impl MatRef<'_> {
    /// The transposed view of the same elements.
    #[must_use]
    pub fn t(self) -> Self {
        Self { rows: self.cols, cols: self.rows, rs: self.cs, cs: self.rs, ..self }
    }
}

impl<'a> From<MatRef<'a>> for Operand<'a> {
    fn from(m: MatRef<'a>) -> Self {
        Operand { data: m.data, rows: Axis::strided(m.offset, m.rs, m.rows), cols: Axis::strided(0, m.cs, m.cols) }
    }
}

/// A mutable strided matrix view.
#[derive(Debug)]
pub struct MatMut<'a> {
    pub data: &'a mut [f32],
    pub offset: usize,
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

impl MatMut<'_> {
    /// Whether every element lies inside `data` and no two share one (row-major or
    /// column-major layouts, possibly with gaps).
    fn valid(&self) -> bool {
        let (m, n) = (self.rows, self.cols);
        if m == 0 || n == 0 {
            return true;
        }
        let Some(last) = (m - 1)
            .checked_mul(self.rs)
            .and_then(|r| r.checked_add((n - 1).checked_mul(self.cs)?))
            .and_then(|i| i.checked_add(self.offset))
        else {
            return false;
        };
        let distinct = (m == 1 || self.rs >= 1)
            && (n == 1 || self.cs >= 1)
            && (m == 1 || n == 1 || self.rs >= n * self.cs || self.cs >= m * self.rs);
        last < self.data.len() && distinct
    }
}

/// candle's thread count, asked once: candle reads `/proc/cpuinfo` on every call unless
/// `RAYON_NUM_THREADS` is set.
pub(super) fn thread_count() -> usize {
    static THREADS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *THREADS.get_or_init(candle_core::utils::get_num_threads)
}

/// The micro-kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// 12×32 tiles in 24 AVX-512 registers (two adjacent packed panels of `B`), 12×16
    /// for a lone panel; fused multiply-add.
    Avx512,
    /// 6×16 tiles in 12 AVX registers, fused multiply-add.
    Avx2Fma,
    /// Plain Rust over the same packed layout (any CPU).
    Portable,
}

impl Kernel {
    /// The fastest kernel this CPU runs.
    pub fn best() -> Self {
        static BEST: std::sync::OnceLock<Kernel> = std::sync::OnceLock::new();
        *BEST.get_or_init(|| {
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                if std::arch::is_x86_feature_detected!("avx512f") {
                    return Kernel::Avx512;
                }
                return Kernel::Avx2Fma;
            }
            Kernel::Portable
        })
    }

    /// The AVX2 kernel where the best is AVX-512 (to check the two agree).
    #[cfg(test)]
    fn best_narrow() -> Self {
        match Self::best() {
            Self::Avx512 => Self::Avx2Fma,
            k => k,
        }
    }
}

/// `dst = lhs · rhs`, or `dst += lhs · rhs` when `accumulate`, for strided views.
pub fn matmul(dst: &mut MatMut<'_>, lhs: MatRef<'_>, rhs: MatRef<'_>, accumulate: bool) -> Result<()> {
    gemm(dst, lhs.into(), rhs.into(), accumulate)
}

/// `dst = a · b`, or `dst += a · b` when `accumulate`, with the best kernel and candle's
/// thread count.
pub fn gemm(dst: &mut MatMut<'_>, a: Operand<'_>, b: Operand<'_>, accumulate: bool) -> Result<()> {
    gemm_with(dst, a, b, accumulate, Kernel::best(), thread_count())
}

/// The C matrix shared by the threads: a base pointer and strides. Each thread writes only
/// the tiles of its own column (or row) range.
#[derive(Clone, Copy)]
struct Out {
    ptr: *mut f32,
    rs: usize,
    cs: usize,
}

// SAFETY: `Out` is only handed to threads that write disjoint elements of one checked
// view (see `gemm_with`), and the view's slice is borrowed mutably for the whole call.
#[expect(unsafe_code, reason = "threads write disjoint tiles of one checked view")]
unsafe impl Send for Out {}
#[expect(unsafe_code, reason = "threads write disjoint tiles of one checked view")]
unsafe impl Sync for Out {}

impl Out {
    /// The same matrix from row `i`, column `j` on.
    fn at(self, i: usize, j: usize) -> Self {
        Self { ptr: self.ptr.wrapping_add(i * self.rs + j * self.cs), ..self }
    }
}

/// [`gemm`] with a chosen kernel and thread count.
pub fn gemm_with(
    dst: &mut MatMut<'_>,
    a: Operand<'_>,
    b: Operand<'_>,
    accumulate: bool,
    kernel: Kernel,
    threads: usize,
) -> Result<()> {
    if !a.in_bounds() {
        bail!("matmul: a view reaches past its buffer or overlaps itself")
    }
    product(dst, Lhs::Plain(a), b, accumulate, kernel, threads)
}

/// [`gemm_with`] with a left-hand side packed beforehand, for many products with it.
pub fn gemm_packed(
    dst: &mut MatMut<'_>,
    a: &PackedLhs,
    b: Operand<'_>,
    accumulate: bool,
    kernel: Kernel,
    threads: usize,
) -> Result<()> {
    product(dst, Lhs::Packed(a), b, accumulate, kernel, threads)
}

/// A left-hand side packed once, in the panels [`gemm_with`] packs for itself block by
/// block, for many products with it (the sixteen of a Winograd convolution, band after
/// band, each of which would otherwise pack it again).
#[derive(Debug)]
pub struct PackedLhs {
    m: usize,
    k: usize,
    /// Block `(pc, ic)` at `pc·m' + ic·kc`, where `m'` is `m` rounded up to whole panels.
    data: Vec<f32>,
}

impl PackedLhs {
    /// Packs `a` (any operand; its offsets are checked here).
    pub fn new(a: Operand<'_>) -> Result<Self> {
        if !a.in_bounds() {
            bail!("matmul: a view reaches past its buffer or overlaps itself")
        }
        let (m, k) = (a.rows.len(), a.cols.len());
        let mut bufs = Buffers::default();
        let mut data = Vec::with_capacity(m.next_multiple_of(MR) * k);
        for pc in (0..k).step_by(KC) {
            let kc = KC.min(k - pc);
            for ic in (0..m).step_by(MC) {
                pack_a(&a, ic, MC.min(m - ic), pc, kc, &mut bufs);
                data.extend_from_slice(&bufs.a);
            }
        }
        Ok(Self { m, k, data })
    }

    /// The packed rows `ic..ic + mc`, columns `pc..pc + kc` (a block of `blocked`).
    fn block(&self, pc: usize, ic: usize, kc: usize, mc: usize) -> &[f32] {
        let from = pc * self.m.next_multiple_of(MR) + ic * kc;
        &self.data[from..from + mc.div_ceil(MR) * MR * kc]
    }
}

/// The left-hand side of a product: an operand packed block by block as the product
/// goes, or packed beforehand.
#[derive(Clone, Copy)]
enum Lhs<'a> {
    Plain(Operand<'a>),
    Packed(&'a PackedLhs),
}

impl Lhs<'_> {
    fn rows(&self) -> usize {
        match self {
            Self::Plain(a) => a.rows.len(),
            Self::Packed(p) => p.m,
        }
    }

    fn depth(&self) -> usize {
        match self {
            Self::Plain(a) => a.cols.len(),
            Self::Packed(p) => p.k,
        }
    }
}

/// The product behind [`gemm_with`] and [`gemm_packed`]; `a`'s offsets are checked.
fn product(
    dst: &mut MatMut<'_>,
    a: Lhs<'_>,
    b: Operand<'_>,
    accumulate: bool,
    kernel: Kernel,
    threads: usize,
) -> Result<()> {
    let (m, k, n) = (a.rows(), a.depth(), b.cols.len());
    if b.rows.len() != k || dst.rows != m || dst.cols != n {
        bail!("matmul: [{m}x{k}] · [{}x{n}] does not fit [{}x{}]", b.rows.len(), dst.rows, dst.cols)
    }
    if !b.in_bounds() || !dst.valid() {
        bail!("matmul: a view reaches past its buffer or overlaps itself")
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                for j in 0..n {
                    dst.data[dst.offset + i * dst.rs + j * dst.cs] = 0.0;
                }
            }
        }
        return Ok(());
    }
    let out = Out { ptr: dst.data[dst.offset..].as_mut_ptr(), rs: dst.rs, cs: dst.cs };
    let work = m.saturating_mul(n).saturating_mul(k);
    let parts = if work >= PARALLEL_WORK { threads.max(1) } else { 1 };
    // Split the longer side of C into `parts` ranges, whole tiles each (the columns for
    // a packed left-hand side, whose blocks are whole).
    let (split_n, len, unit) = match a {
        Lhs::Plain(_) if n < m => (false, m, MR),
        _ => (true, n, NR),
    };
    let per = len.div_ceil(parts).div_ceil(unit) * unit;
    let ranges: Vec<(usize, usize)> = (0..len).step_by(per.max(1)).map(|s| (s, (s + per).min(len))).collect();
    let job = |&(from, to): &(usize, usize)| match a {
        Lhs::Plain(plain) if !split_n => {
            let a = Lhs::Plain(Operand { rows: plain.rows.range(from, to), ..plain });
            serial(out.at(from, 0), a, b, accumulate, kernel);
        }
        _ => {
            let b = Operand { cols: b.cols.range(from, to), ..b };
            serial(out.at(0, from), a, b, accumulate, kernel);
        }
    };
    if ranges.len() > 1 {
        use rayon::prelude::*;
        ranges.par_iter().for_each(job);
    } else {
        ranges.iter().for_each(job);
    }
    Ok(())
}

/// Per-thread packing buffers, kept between calls.
#[derive(Default)]
struct Buffers {
    a: Vec<f32>,
    b: Vec<f32>,
    rows: Vec<usize>,
    cols: Vec<usize>,
}

thread_local! {
    static BUFFERS: RefCell<Buffers> = RefCell::new(Buffers::default());
}

/// One thread's product over its part of C (whose elements the caller checked).
fn serial(out: Out, a: Lhs<'_>, b: Operand<'_>, accumulate: bool, kernel: Kernel) {
    BUFFERS.with(|cell| match cell.try_borrow_mut() {
        Ok(mut bufs) => blocked(out, a, b, accumulate, kernel, &mut bufs),
        // Only if a product ran inside another on this thread: fresh buffers then.
        Err(_) => blocked(out, a, b, accumulate, kernel, &mut Buffers::default()),
    });
}

fn blocked(out: Out, a: Lhs<'_>, b: Operand<'_>, accumulate: bool, kernel: Kernel, bufs: &mut Buffers) {
    let (m, k, n) = (a.rows(), a.depth(), b.cols.len());
    let mut tile = [0.0f32; MR * TS];
    for jc in (0..n).step_by(NC) {
        let nc = NC.min(n - jc);
        for pc in (0..k).step_by(KC) {
            let kc = KC.min(k - pc);
            pack_b(&b, pc, kc, jc, nc, bufs);
            let add = accumulate || pc > 0;
            for ic in (0..m).step_by(MC) {
                let mc = MC.min(m - ic);
                let ablock = match a {
                    Lhs::Plain(a) => {
                        pack_a(&a, ic, mc, pc, kc, bufs);
                        &bufs.a
                    }
                    Lhs::Packed(p) => p.block(pc, ic, kc, mc),
                };
                let panels = nc.div_ceil(NR);
                let mut s = 0;
                while s < panels {
                    // Two whole panels side by side go through the wide kernel together.
                    let pair = kernel == Kernel::Avx512 && nc - s * NR >= 2 * NR;
                    let width = if pair { 2 } else { 1 };
                    let bp = &bufs.b[s * kc * NR..(s + width) * kc * NR];
                    let cols = (width * NR).min(nc - s * NR);
                    for r in 0..mc.div_ceil(MR) {
                        let ap = &ablock[r * kc * MR..(r + 1) * kc * MR];
                        let rows = MR.min(mc - r * MR);
                        let c = out.at(ic + r * MR, jc + s * NR);
                        if pair {
                            pair_product(kc, ap, bp, c, rows, add, &mut tile);
                        } else {
                            tile_product(kernel, kc, ap, bp, c, rows, cols, add, &mut tile);
                        }
                    }
                    s += width;
                }
            }
        }
    }
}

/// Packs rows `ic..ic+mc`, columns `pc..pc+kc` of `a` as panels of `MR` rows:
/// `bufs.a[(r·kc + p)·MR + ii]`, zero past the last row.
fn pack_a(a: &Operand<'_>, ic: usize, mc: usize, pc: usize, kc: usize, bufs: &mut Buffers) {
    let panels = mc.div_ceil(MR);
    bufs.a.resize(panels * kc * MR, 0.0);
    a.rows.fill(ic, &mut bufs.rows, mc);
    a.cols.fill(pc, &mut bufs.cols, kc);
    let (rows, cols, data) = (&bufs.rows, &bufs.cols, a.data);
    for (r, panel) in bufs.a.chunks_exact_mut(kc * MR).enumerate() {
        let live = MR.min(mc - r * MR);
        let offs = &rows[r * MR..r * MR + live];
        let (groups, _) = panel.as_chunks_mut::<MR>();
        if a.rows.unit() && live == MR {
            // Column-major: the panel's rows are consecutive for every column.
            for (dst, &co) in groups.iter_mut().zip(cols) {
                let from = offs[0] + co;
                dst.copy_from_slice(&data[from..from + MR]);
            }
        } else if a.cols.unit() {
            // Row-major: the panel's rows, each unit-stride.
            interleave(groups, data, offs, cols[0], kc);
        } else {
            for (dst, &co) in groups.iter_mut().zip(cols) {
                for (ii, d) in dst.iter_mut().enumerate() {
                    *d = offs.get(ii).map_or(0.0, |&ro| data[ro + co]);
                }
            }
        }
    }
}

/// `groups[p][i] = data[lines[i] + shift + p]` for `p < len`, zero for `i` past the
/// lines: up to `W` unit-stride lines read side by side, one element of each per step,
/// so that their cache misses overlap.
fn interleave<const W: usize>(groups: &mut [[f32; W]], data: &[f32], lines: &[usize], shift: usize, len: usize) {
    let starts: [&[f32]; W] = std::array::from_fn(|i| match lines.get(i) {
        Some(&at) => &data[at + shift..at + shift + len],
        None => &[],
    });
    for (p, dst) in groups.iter_mut().enumerate() {
        for (d, line) in dst.iter_mut().zip(&starts) {
            *d = line.get(p).copied().unwrap_or(0.0);
        }
    }
}

/// Packs rows `pc..pc+kc`, columns `jc..jc+nc` of `b` as panels of `NR` columns:
/// `bufs.b[(s·kc + p)·NR + jj]`, zero past the last column.
fn pack_b(b: &Operand<'_>, pc: usize, kc: usize, jc: usize, nc: usize, bufs: &mut Buffers) {
    let panels = nc.div_ceil(NR);
    bufs.b.resize(panels * kc * NR, 0.0);
    b.rows.fill(pc, &mut bufs.rows, kc);
    b.cols.fill(jc, &mut bufs.cols, nc);
    let (rows, cols, data) = (&bufs.rows, &bufs.cols, b.data);
    for (s, panel) in bufs.b.chunks_exact_mut(kc * NR).enumerate() {
        let live = NR.min(nc - s * NR);
        let offs = &cols[s * NR..s * NR + live];
        let (groups, _) = panel.as_chunks_mut::<NR>();
        // Columns side by side in memory (a strided unit axis, or a run of a table, such
        // as one output row of a convolution) are copied as a block.
        if b.cols.unit()
            || offs[live - 1].checked_sub(offs[0]) == Some(live - 1) && offs.windows(2).all(|w| w[1] == w[0] + 1)
        {
            for (dst, &ro) in groups.iter_mut().zip(rows) {
                let from = ro + offs[0];
                if live == NR {
                    dst.copy_from_slice(&data[from..from + NR]);
                } else {
                    dst[..live].copy_from_slice(&data[from..from + live]);
                    dst[live..].fill(0.0);
                }
            }
        } else if b.rows.unit() {
            // Column-major: the panel's columns, each unit-stride.
            interleave(groups, data, offs, rows[0], kc);
        } else {
            for (dst, &ro) in groups.iter_mut().zip(rows) {
                for (jj, d) in dst.iter_mut().enumerate() {
                    *d = offs.get(jj).map_or(0.0, |&co| data[ro + co]);
                }
            }
        }
    }
}

/// One `rows×cols` tile of C (at most `MR×NR`) from a packed panel pair: straight into
/// C for a full tile with unit column stride, else through `tile`.
#[expect(clippy::too_many_arguments, reason = "the tile's geometry, spelled out")]
fn tile_product(
    kernel: Kernel,
    kc: usize,
    ap: &[f32],
    bp: &[f32],
    c: Out,
    rows: usize,
    cols: usize,
    add: bool,
    tile: &mut [f32; MR * TS],
) {
    debug_assert!(ap.len() == kc * MR && bp.len() == kc * NR);
    let direct = rows == MR && cols == NR && c.cs == 1;
    #[cfg(target_arch = "x86_64")]
    match kernel {
        Kernel::Avx512 => {
            #[expect(unsafe_code, reason = "SIMD micro-kernel over checked panels and a checked C tile")]
            // SAFETY: `Kernel::Avx512` is only chosen when the CPU has AVX-512F. The
            // panels hold `kc·MR` and `kc·NR` floats (asserted by slicing in `blocked`). A
            // full tile's `MR` rows of `NR` unit-stride elements lie inside the view
            // checked by `gemm_with`, and only this thread writes them; `tile` is a local
            // array of `MR` rows of `TS ≥ NR` floats.
            unsafe {
                if direct {
                    avx512::narrow(kc, ap.as_ptr(), [bp.as_ptr()], c.ptr, c.rs, add);
                    return;
                }
                avx512::narrow(kc, ap.as_ptr(), [bp.as_ptr()], tile.as_mut_ptr(), TS, false);
            }
            write_tile(tile, c, rows, cols, add);
            return;
        }
        Kernel::Avx2Fma => {
            let halves = rows.div_ceil(MR_AVX2);
            #[expect(unsafe_code, reason = "SIMD micro-kernel over checked panels and a checked C tile")]
            // SAFETY: `Kernel::Avx2Fma` is only chosen when the CPU has AVX2 and FMA. The
            // panels hold `kc·MR` and `kc·NR` floats, and half `h < MR / MR_AVX2` reads
            // rows `h·MR_AVX2..(h + 1)·MR_AVX2` of each `MR`-row step of the `A` panel. A
            // full tile's rows lie inside the view checked by `gemm_with` and belong to
            // this thread; `tile` is a local array of `MR` rows of `TS ≥ NR` floats.
            unsafe {
                let b = [bp.as_ptr(), bp.as_ptr().add(NR / 2)];
                for h in 0..halves {
                    let a = ap.as_ptr().add(h * MR_AVX2);
                    if direct {
                        avx2::kernel(kc, a, b, c.ptr.add(h * MR_AVX2 * c.rs), c.rs, add);
                    } else {
                        avx2::kernel(kc, a, b, tile.as_mut_ptr().add(h * MR_AVX2 * TS), TS, false);
                    }
                }
            }
            if !direct {
                write_tile(tile, c, rows, cols, add);
            }
            return;
        }
        Kernel::Portable => {}
    }
    portable_kernel(kc, ap, bp, tile);
    write_tile(tile, c, rows, cols, add);
}

/// Two whole panels of `B` (`bp`: `2·kc·NR` floats) against one panel of `A`: a
/// `rows×2·NR` tile of C, straight into C when whole with unit column stride, else
/// through `tile`. Only called with [`Kernel::Avx512`].
fn pair_product(kc: usize, ap: &[f32], bp: &[f32], c: Out, rows: usize, add: bool, tile: &mut [f32; MR * TS]) {
    debug_assert!(ap.len() == kc * MR && bp.len() == 2 * kc * NR);
    #[cfg(target_arch = "x86_64")]
    {
        let b = [bp.as_ptr(), bp[kc * NR..].as_ptr()];
        #[expect(unsafe_code, reason = "SIMD micro-kernel over checked panels and a checked C tile")]
        // SAFETY: `Kernel::Avx512` is only chosen when the CPU has AVX-512F. The panels
        // hold `kc·MR` and `2·kc·NR` floats (asserted by slicing in `blocked`). A whole
        // tile's `MR` rows of `2·NR` unit-stride elements are two whole tiles of the view
        // checked by `gemm_with`, and only this thread writes them; `tile` is a local
        // array of `MR` rows of `TS = 2·NR` floats.
        unsafe {
            if rows == MR && c.cs == 1 {
                avx512::wide(kc, ap.as_ptr(), b, c.ptr, c.rs, add);
                return;
            }
            avx512::wide(kc, ap.as_ptr(), b, tile.as_mut_ptr(), TS, false);
        }
        write_tile(tile, c, rows, TS, add);
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let (left, right) = bp.split_at(kc * NR);
        tile_product(Kernel::Portable, kc, ap, left, c, rows, NR, add, tile);
        tile_product(Kernel::Portable, kc, ap, right, c.at(0, NR), rows, NR, add, tile);
    }
}

/// Stores (or adds) the top-left `rows×cols` of `tile` into C.
fn write_tile(tile: &[f32; MR * TS], c: Out, rows: usize, cols: usize, add: bool) {
    for i in 0..rows {
        for j in 0..cols {
            let v = tile[i * TS + j];
            #[expect(unsafe_code, reason = "a write into the checked C view")]
            // SAFETY: (i, j) is inside this tile, which lies inside the view checked by
            // `gemm_with` and belongs to this thread alone.
            unsafe {
                let p = c.ptr.add(i * c.rs + j * c.cs);
                *p = if add { *p + v } else { v };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) % 1000) as f32 / 500.0 - 1.0)
            .collect()
    }

    fn element(o: &Operand<'_>, i: usize, j: usize) -> f32 {
        o.data[o.rows.at(i) + o.cols.at(j)]
    }

    /// Every kernel and thread count against the definition, over shapes with partial
    /// tiles and several blocks, strided, transposed and table-driven operands, and both
    /// store modes.
    #[test]
    fn products_match_the_definition() -> Result<()> {
        let mut kernels = vec![Kernel::Portable];
        if Kernel::best_narrow() != Kernel::Portable {
            kernels.push(Kernel::best_narrow());
        }
        if Kernel::best() != Kernel::best_narrow() {
            kernels.push(Kernel::best());
        }
        for &(m, k, n) in &[(1, 1, 1), (7, 5, 17), (6, 16, 16), (13, 300, 37), (150, 260, 40), (5, 3, 2100)] {
            let a_data = values(m * k + 3, 1);
            let b_data = values(k * n + 5, 2);
            let table: Vec<usize> = (0..k).map(|p| (p * 7919) % (k * n - n + 1)).collect();
            // Runs of 7 columns, 9 apart: a convolution's output rows in its padded input.
            let runs: Vec<usize> = (0..n).map(|j| j / 7 * 9 + j % 7).collect();
            let operands_a = [
                Operand { data: &a_data, rows: Axis::strided(3, k, m), cols: Axis::strided(0, 1, k) },
                Operand { data: &a_data, rows: Axis::strided(0, 1, m), cols: Axis::strided(3, m, k) },
            ];
            let operands_b = [
                Operand { data: &b_data, rows: Axis::strided(5, n, k), cols: Axis::strided(0, 1, n) },
                Operand { data: &b_data, rows: Axis::strided(0, 1, k), cols: Axis::strided(5, k, n) },
                Operand { data: &b_data, rows: Axis::Table(&table), cols: Axis::strided(0, 1, n) },
                Operand { data: &b_data, rows: Axis::strided(0, 1, k), cols: Axis::Table(&runs) },
            ];
            for a in &operands_a {
                for b in &operands_b {
                    for &kernel in &kernels {
                        for threads in [1, 3] {
                            for (accumulate, column_major) in [(false, false), (true, false), (true, true)] {
                                let start = values(m * n + 2, 9);
                                let mut c = start.clone();
                                let (rs, cs) = if column_major { (1, m) } else { (n, 1) };
                                let mut dst = MatMut { data: &mut c, offset: 2, rows: m, cols: n, rs, cs };
                                gemm_with(&mut dst, *a, *b, accumulate, kernel, threads)?;
                                for i in 0..m {
                                    for j in 0..n {
                                        let mut want = if accumulate { start[2 + i * rs + j * cs] } else { 0.0 };
                                        for p in 0..k {
                                            want += element(a, i, p) * element(b, p, j);
                                        }
                                        let got = c[2 + i * rs + j * cs];
                                        assert!(
                                            (got - want).abs() <= 1e-4 * (1.0 + want.abs()) * (k as f32).sqrt(),
                                            "{m}x{k}x{n} {kernel:?} {threads} threads: ({i},{j}) {got} vs {want}"
                                        );
                                    }
                                }
                                assert_eq!(&c[..2], &start[..2], "nothing before the view is touched");
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// The wide and the narrow SIMD kernels make the same chain of fused multiply-adds
    /// per element, so they agree to the bit (training runs are reproducible on either).
    #[test]
    fn simd_kernels_agree_to_the_bit() -> Result<()> {
        let (m, k, n) = (37, 600, 150);
        let a = values(m * k, 3);
        let b = values(k * n, 4);
        let run = |kernel: Kernel| -> Result<Vec<f32>> {
            let mut c = values(m * n, 5);
            let mut dst = MatMut { data: &mut c, offset: 0, rows: m, cols: n, rs: n, cs: 1 };
            let lhs = MatRef { data: &a, offset: 0, rows: m, cols: k, rs: k, cs: 1 };
            let rhs = MatRef { data: &b, offset: 0, rows: k, cols: n, rs: n, cs: 1 };
            gemm_with(&mut dst, lhs.into(), rhs.into(), true, kernel, 2)?;
            Ok(c)
        };
        if Kernel::best() != Kernel::best_narrow() {
            assert_eq!(run(Kernel::best())?, run(Kernel::best_narrow())?);
        }
        Ok(())
    }

    #[test]
    fn bad_views_are_refused() {
        let data = vec![0.0f32; 6];
        let mut out = vec![0.0f32; 4];
        let a = MatRef { data: &data, offset: 0, rows: 2, cols: 3, rs: 3, cs: 1 };
        let past = MatRef { data: &data, offset: 1, rows: 3, cols: 2, rs: 2, cs: 1 };
        let mut dst = MatMut { data: &mut out, offset: 0, rows: 2, cols: 2, rs: 2, cs: 1 };
        assert!(matmul(&mut dst, a, past, false).is_err());
        let fits = MatRef { data: &data, offset: 0, rows: 3, cols: 2, rs: 2, cs: 1 };
        let mut overlapping = MatMut { data: &mut out, offset: 0, rows: 2, cols: 2, rs: 1, cs: 1 };
        assert!(matmul(&mut overlapping, a, fits, false).is_err());
        let table = [0usize, 1, 9];
        let reaching = Operand { data: &data, rows: Axis::Table(&table), cols: Axis::strided(0, 1, 2) };
        let mut dst = MatMut { data: &mut out, offset: 0, rows: 2, cols: 2, rs: 2, cs: 1 };
        assert!(gemm(&mut dst, a.into(), reaching, false).is_err());
    }

    #[test]
    fn nan_in_an_overwritten_output_does_not_leak() -> Result<()> {
        let a = values(6 * 4, 1);
        let b = values(4 * 16, 2);
        let mut c = vec![f32::NAN; 6 * 16];
        let mut dst = MatMut { data: &mut c, offset: 0, rows: 6, cols: 16, rs: 16, cs: 1 };
        matmul(
            &mut dst,
            MatRef { data: &a, offset: 0, rows: 6, cols: 4, rs: 4, cs: 1 },
            MatRef { data: &b, offset: 0, rows: 4, cols: 16, rs: 16, cs: 1 },
            false,
        )?;
        assert!(c.iter().all(|v| v.is_finite()));
        Ok(())
    }
}
