//! Elementwise math that the compiler can vectorise, and [`wide`], which compiles a loop
//! for the widest vector unit the CPU has.
//!
//! The crate is built for the x86-64 baseline (SSE2), so a plain loop runs four lanes
//! wide, and a loop that calls libm's `expf` runs one. [`exp`] is plain arithmetic
//! (Cephes' `expf`: a range reduction, a degree-6 polynomial and the exponent written
//! into the bits), which the compiler vectorises; [`wide`] runs a closure inlined into a
//! function compiled for AVX-512 (else AVX2 and FMA), where its loops run 16 (8) lanes
//! wide (with one running f32 sum a loop stays a chain of dependent additions: sums run
//! in lanes, as in `kernels::lane_sum`). Rust does not fuse `a·b + c` on its own, so a loop gives the same bits
//! whichever unit runs it.

/// `eˣ` within 2 ulp of the exact value: `0` below −87.34 (where it would be
/// subnormal), `∞` above 88.72, NaN for NaN.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOW: f32 = -87.336_55;
    const HIGH: f32 = 88.722_84;
    // 1.5·2²³: adding it rounds to an integer, which is then the low bits.
    const ROUND: f32 = 12_582_912.0;
    // ln 2 in two parts, the first with few enough bits that n·LN2_HI is exact.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let c = x.clamp(LOW, HIGH);
    let t = c * std::f32::consts::LOG2_E + ROUND;
    let n = t - ROUND;
    let r = c - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_2e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let e = p * r * r + r + 1.0;
    // 2ⁿ in two halves, each a normal number (n runs from −126 to 128 here); `t`'s low
    // bits hold n.
    #[expect(clippy::cast_possible_wrap, reason = "t's bits are those of 1.5·2²³ + n, |n| ≤ 128")]
    let n = t.to_bits() as i32 - 0x4B40_0000;
    let (half, rest) = (n >> 1, n - (n >> 1));
    #[expect(clippy::cast_sign_loss, reason = "a biased exponent, 1 to 254")]
    let pow2 = |k: i32| f32::from_bits(((k + 127) << 23) as u32);
    let y = e * pow2(half) * pow2(rest);
    if x < LOW {
        0.0
    } else if x > HIGH {
        f32::INFINITY
    } else {
        y
    }
}

/// `1 / (1 + e⁻ˣ)` with [`exp`].
#[inline(always)]
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

/// Runs `f`, compiled for AVX-512 where the CPU has it, else for AVX2 with FMA, else
/// for the baseline — when `f` is inlined here, so mark the closure
/// `#[inline(always)]` (`wide(#[inline(always)] || …)`); the functions it calls must
/// be inlined too.
#[inline]
pub fn wide<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        use super::gemm::Kernel;
        #[expect(unsafe_code, reason = "calling code compiled for a CPU feature that was detected")]
        // SAFETY: `Kernel::best` picks `Avx512` only where the CPU has AVX-512F, AVX2 and
        // FMA, and `Avx2Fma` only where it has AVX2 and FMA.
        unsafe {
            match Kernel::best() {
                Kernel::Avx512 => return on_avx512(f),
                Kernel::Avx2Fma => return on_avx2(f),
                Kernel::Portable => {}
            }
        }
    }
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
fn on_avx512<R>(f: impl FnOnce() -> R) -> R {
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn on_avx2<R>(f: impl FnOnce() -> R) -> R {
    f()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ulps(a: f32, b: f32) -> i64 {
        (i64::from(a.to_bits() as i32) - i64::from(b.to_bits() as i32)).abs()
    }

    #[test]
    fn exp_is_within_two_ulp_of_libm_over_its_range() {
        let mut worst = 0;
        let mut x = -87.3f32;
        while x < 88.7 {
            for dx in [0.0f32, 1e-3, 0.123_456, 0.5] {
                let v = x + dx;
                worst = worst.max(ulps(exp(v), v.exp()));
            }
            x += 0.731;
        }
        for v in [0.0f32, -0.0, 1e-8, -1e-8, 1.0, -1.0, 88.0, 88.5, 88.72, -87.0, -87.33] {
            worst = worst.max(ulps(exp(v), v.exp()));
        }
        assert!(worst <= 2, "{worst} ulp");
    }

    #[test]
    fn exp_saturates_and_keeps_nan() {
        assert_eq!(exp(-100.0), 0.0);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(89.0), f32::INFINITY);
        assert_eq!(exp(f32::INFINITY), f32::INFINITY);
        assert!(exp(f32::NAN).is_nan());
        assert!((sigmoid(0.0) - 0.5).abs() < 1e-7);
        assert_eq!(sigmoid(-200.0), 0.0);
        assert_eq!(sigmoid(200.0), 1.0);
    }

    #[test]
    fn wide_loops_give_the_baseline_bits() {
        let xs: Vec<f32> = (0..1000).map(|i| (i as f32 - 500.0) * 0.173).collect();
        let plain: Vec<f32> = xs.iter().map(|&v| v * sigmoid(v)).collect();
        let vectorised = wide(
            #[inline(always)]
            || xs.iter().map(|&v| v * sigmoid(v)).collect::<Vec<f32>>(),
        );
        assert_eq!(plain, vectorised);
    }
}
