//! The micro-kernels of [`super`]'s product: one tile of `C` from a packed panel of `A`
//! and packed panels of `B`, in registers — AVX-512, AVX2+FMA, and plain Rust for any
//! CPU. The blocking, packing and threading around them are `gemm.rs`'s.

use super::{MR, NR, TS};

/// The tile product in plain Rust (the compiler vectorises the inner loop).
pub(super) fn portable_kernel(kc: usize, ap: &[f32], bp: &[f32], tile: &mut [f32; MR * TS]) {
    let mut acc = [[0.0f32; NR]; MR];
    for (a, b) in ap.chunks_exact(MR).zip(bp.chunks_exact(NR)).take(kc) {
        for (row, &av) in acc.iter_mut().zip(a) {
            for (c, &bv) in row.iter_mut().zip(b) {
                *c += av * bv;
            }
        }
    }
    for (dst, row) in tile.chunks_exact_mut(TS).zip(&acc) {
        dst[..NR].copy_from_slice(row);
    }
}

/// A micro-kernel `$name`: `C[0..ROWS][0..V·w] (+)= Σ_p a[p·MR + i] · B[p][j]`, where `w`
/// is the vector width and columns `v·w..(v + 1)·w` of `B` are read from `b[v] + p·NR`;
/// C row `i` at `c + i·rs`. Each element is one chain of fused multiply-adds over `p`
/// from zero, so every kernel gives the same bits.
macro_rules! micro_kernel {
    ($name:ident, $feature:literal, $rows:expr, $v:literal, $vec:ty, $width:literal,
     $zero:ident, $splat:ident, $load:ident, $fma:ident, $add:ident, $store:ident) => {
        /// The tile product (see `micro_kernel!`).
        ///
        /// # Safety
        /// The CPU has the feature; `a` holds `kc·MR` floats, each `b[v]` `kc·NR`, and
        /// the rows of `V·w` floats at `c + i·rs` are valid for reads and writes.
        #[target_feature(enable = $feature)]
        pub unsafe fn $name(kc: usize, a: *const f32, b: [*const f32; $v], c: *mut f32, rs: usize, add: bool) {
            // The tile's rows of C, a row stride apart, are rarely in L1 (nor do they
            // share its sets): ask for them now, so that they arrive during the loop
            // instead of stalling the stores after it (an eighth faster on Golden Cove).
            for i in 0..$rows {
                for at in (0..$v * $width).step_by(16).chain([$v * $width - 1]) {
                    prefetch(c.wrapping_add(i * rs + at));
                }
            }
            let mut acc: [[$vec; $v]; $rows] = [[$zero(); $v]; $rows];
            let (mut a, mut b) = (a, b);
            for _ in 0..kc {
                // SAFETY: p < kc, so a..a+ROWS and b[v]..b[v]+w are inside the panels.
                unsafe {
                    let bv: [$vec; $v] = std::array::from_fn(|v| $load(b[v]));
                    for (i, row) in acc.iter_mut().enumerate() {
                        let ai = $splat(*a.add(i));
                        for (sum, &bj) in row.iter_mut().zip(&bv) {
                            *sum = $fma(ai, bj, *sum);
                        }
                    }
                    a = a.add(MR);
                    for p in &mut b {
                        *p = p.add(NR);
                    }
                }
            }
            for (i, row) in acc.iter().enumerate() {
                for (v, &sum) in row.iter().enumerate() {
                    // SAFETY: row i of the tile is valid for V·w floats (the contract).
                    unsafe {
                        let at = c.add(i * rs + v * $width);
                        $store(at, if add { $add($load(at), sum) } else { sum });
                    }
                }
            }
        }
    };
}

/// Asks for the cache line holding `p` (a hint: it never faults, whatever `p` is).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn prefetch(p: *const f32) {
    #[expect(unsafe_code, reason = "a prefetch hint, which reads nothing")]
    // SAFETY: PREFETCHT0 is SSE (every x86_64 CPU) and does not access memory
    // architecturally: any address is allowed.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast::<i8>());
    }
}

/// 6×16 tiles from one packed panel of `B` (its two 8-wide halves) and six rows of a
/// packed panel of `A`.
#[cfg(target_arch = "x86_64")]
#[expect(unsafe_code, reason = "SIMD intrinsics over raw panel pointers")]
pub(super) mod avx2 {
    use std::arch::x86_64::{
        __m256, _mm256_add_ps, _mm256_fmadd_ps, _mm256_loadu_ps, _mm256_set1_ps, _mm256_setzero_ps, _mm256_storeu_ps,
    };

    use super::super::{MR, MR_AVX2, NR};
    use super::prefetch;

    micro_kernel!(
        kernel,
        "avx2,fma",
        MR_AVX2,
        2,
        __m256,
        8,
        _mm256_setzero_ps,
        _mm256_set1_ps,
        _mm256_loadu_ps,
        _mm256_fmadd_ps,
        _mm256_add_ps,
        _mm256_storeu_ps
    );
}

/// 12×32 tiles from two packed panels of `B` side by side, and 12×16 from one.
#[cfg(target_arch = "x86_64")]
#[expect(unsafe_code, reason = "SIMD intrinsics over raw panel pointers")]
pub(super) mod avx512 {
    use std::arch::x86_64::{
        __m512, _mm512_add_ps, _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_set1_ps, _mm512_setzero_ps, _mm512_storeu_ps,
    };

    use super::super::{MR, NR};
    use super::prefetch;

    /// A kernel over `$v` panels of `B` side by side.
    macro_rules! avx512_kernel {
        ($name:ident, $v:literal) => {
            micro_kernel!(
                $name,
                "avx512f",
                MR,
                $v,
                __m512,
                16,
                _mm512_setzero_ps,
                _mm512_set1_ps,
                _mm512_loadu_ps,
                _mm512_fmadd_ps,
                _mm512_add_ps,
                _mm512_storeu_ps
            );
        };
    }

    avx512_kernel!(wide, 2);
    avx512_kernel!(narrow, 1);
}
