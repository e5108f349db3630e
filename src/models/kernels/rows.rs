//! `Y += X·W` for a few rows of `X` and a weight `W` (`[k, n]`, stored by rows): the
//! products of sampling, where a handful of candidates advance one position at a time.
//!
//! The packed product of [`super::gemm`] copies `W` into panels on every call, and with a
//! handful of rows that copy costs as much as the arithmetic. Here `W` is read in place:
//! a tile of 8 (or 4, 2, 1) rows × 32 columns of `Y` stays in registers while `k` runs, each
//! 32-wide slice of a row of `W` loaded once per tile. One generic body, compiled for
//! AVX-512 and AVX2+FMA (chosen at run time) and for any CPU; each element of `Y` gains
//! one chain of fused multiply-adds over `k` from zero, so every form gives the same bits.

use candle_core::{bail, Result};

/// Columns of a tile.
const TN: usize = 32;

/// `y[i][j] += Σ_p x[i][p]·w[p][j]` for the `R` rows of `x` and `y` given, in tiles of
/// `R` rows × [`TN`] columns (the last tile narrower).
#[inline(always)]
fn tile<const R: usize>(x: &[f32], k: usize, w: &[f32], n: usize, y: &mut [f32]) {
    let mut j0 = 0;
    while j0 < n {
        let cols = (n - j0).min(TN);
        let mut acc = [[0f32; TN]; R];
        if cols == TN {
            for p in 0..k {
                let Ok(wp) = <&[f32; TN]>::try_from(&w[p * n + j0..p * n + j0 + TN]) else { continue };
                for r in 0..R {
                    let a = x[r * k + p];
                    for c in 0..TN {
                        acc[r][c] = a.mul_add(wp[c], acc[r][c]);
                    }
                }
            }
        } else {
            for p in 0..k {
                let wp = &w[p * n + j0..p * n + j0 + cols];
                for r in 0..R {
                    let a = x[r * k + p];
                    for (c, wv) in acc[r].iter_mut().zip(wp) {
                        *c = a.mul_add(*wv, *c);
                    }
                }
            }
        }
        for (r, acc_r) in acc.iter().enumerate() {
            let out = &mut y[r * n + j0..r * n + j0 + cols];
            out.iter_mut().zip(acc_r).for_each(|(o, a)| *o += a);
        }
        j0 += cols;
    }
}

/// `y += x·w` over `m` rows: tiles of `TM` rows while they last, then of 4, 2 and 1.
#[inline(always)]
fn body<const TM: usize>(x: &[f32], m: usize, k: usize, w: &[f32], n: usize, y: &mut [f32]) {
    let mut i = 0;
    while i + TM <= m {
        tile::<TM>(&x[i * k..(i + TM) * k], k, w, n, &mut y[i * n..(i + TM) * n]);
        i += TM;
    }
    if TM > 4 && i + 4 <= m {
        tile::<4>(&x[i * k..(i + 4) * k], k, w, n, &mut y[i * n..(i + 4) * n]);
        i += 4;
    }
    if i + 2 <= m {
        tile::<2>(&x[i * k..(i + 2) * k], k, w, n, &mut y[i * n..(i + 2) * n]);
        i += 2;
    }
    if i < m {
        tile::<1>(&x[i * k..(i + 1) * k], k, w, n, &mut y[i * n..(i + 1) * n]);
    }
}

#[cfg(target_arch = "x86_64")]
#[expect(unsafe_code, reason = "functions compiled for CPU features checked at run time")]
mod simd {
    /// # Safety
    /// The CPU has AVX-512F and FMA.
    #[target_feature(enable = "avx512f,fma")]
    pub unsafe fn avx512(x: &[f32], m: usize, k: usize, w: &[f32], n: usize, y: &mut [f32]) {
        super::body::<8>(x, m, k, w, n, y);
    }

    /// # Safety
    /// The CPU has AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn avx2(x: &[f32], m: usize, k: usize, w: &[f32], n: usize, y: &mut [f32]) {
        super::body::<4>(x, m, k, w, n, y);
    }

    /// The best form this CPU runs.
    pub fn run(x: &[f32], m: usize, k: usize, w: &[f32], n: usize, y: &mut [f32]) {
        if std::arch::is_x86_feature_detected!("fma") {
            if std::arch::is_x86_feature_detected!("avx512f") {
                // SAFETY: the features were just detected.
                unsafe { avx512(x, m, k, w, n, y) };
                return;
            }
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the features were just detected.
                unsafe { avx2(x, m, k, w, n, y) };
                return;
            }
        }
        super::body::<4>(x, m, k, w, n, y);
    }
}

/// `y += x·w` for `x` `[m, k]`, `w` `[k, n]` and `y` `[m, n]`, all row-major.
pub fn rows_matmul(x: &[f32], m: usize, k: usize, w: &[f32], n: usize, y: &mut [f32]) -> Result<()> {
    if x.len() < m * k || w.len() < k * n || y.len() < m * n {
        bail!("rows_matmul: [{m}x{k}] · [{k}x{n}] does not fit buffers of {}, {} and {}", x.len(), w.len(), y.len())
    }
    #[cfg(target_arch = "x86_64")]
    simd::run(x, m, k, w, n, y);
    #[cfg(not(target_arch = "x86_64"))]
    body::<4>(x, m, k, w, n, y);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_matches_the_definition() {
        let value = |i: usize, s: usize| ((i * 2_654_435_761 + s) % 1000) as f32 / 500.0 - 1.0;
        for &(m, k, n) in &[(1, 1, 1), (3, 7, 5), (8, 128, 384), (9, 33, 70), (2, 64, 32), (13, 5, 97)] {
            let x: Vec<f32> = (0..m * k).map(|i| value(i, 1)).collect();
            let w: Vec<f32> = (0..k * n).map(|i| value(i, 7)).collect();
            let start: Vec<f32> = (0..m * n).map(|i| value(i, 3)).collect();
            let mut want = start.clone();
            for i in 0..m {
                for j in 0..n {
                    let dot = (0..k).fold(0f32, |acc, p| x[i * k + p].mul_add(w[p * n + j], acc));
                    want[i * n + j] += dot;
                }
            }
            let mut forms: Vec<Vec<f32>> = Vec::new();
            let mut y = start.clone();
            rows_matmul(&x, m, k, &w, n, &mut y).unwrap();
            forms.push(y);
            let mut y = start.clone();
            body::<4>(&x, m, k, &w, n, &mut y);
            forms.push(y);
            let mut y = start.clone();
            body::<8>(&x, m, k, &w, n, &mut y);
            forms.push(y);
            for y in forms {
                assert_eq!(y, want, "{m}x{k}x{n}");
            }
        }
    }

    #[test]
    fn short_buffers_are_an_error() {
        let mut y = vec![0f32; 4];
        assert!(rows_matmul(&[1.0; 6], 2, 3, &[1.0; 5], 2, &mut y).is_err());
    }
}
