//! Helpers shared by the unit tests of the ops and layers (`ops`, `nn`) and of the
//! models and engine code built on them: tolerance checks and finite-difference gradients.

use candle_core::{DType, Device, Result, Tensor, Var};

/// Asserts that `a` is within `tol`, relative to `b`'s largest magnitude (at least 1),
/// of `b` everywhere.
pub fn close(a: &Tensor, b: &Tensor, tol: f32) -> Result<()> {
    let d = (a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
    let s = b.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?.max(1.0);
    assert!(d <= tol * s, "max difference {d} (scale {s})");
    Ok(())
}

/// Checks autograd's gradient of the scalar `f(x)` against central finite
/// differences, in f64, at every element of `x`.
pub fn check_gradient(name: &str, x: &Tensor, f: impl Fn(&Tensor) -> Result<Tensor>) {
    let var = Var::from_tensor(&x.to_dtype(DType::F64).unwrap()).unwrap();
    let grads = f(var.as_tensor()).unwrap().backward().unwrap();
    let analytic: Vec<f64> = grads.get(var.as_tensor()).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    let base: Vec<f64> = var.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
    let h = 1e-6;
    for i in 0..base.len() {
        let eval = |delta: f64| -> f64 {
            let mut v = base.clone();
            v[i] += delta;
            let t = Tensor::from_vec(v, x.shape(), x.device()).unwrap();
            f(&t).unwrap().to_scalar::<f64>().unwrap()
        };
        let numeric = (eval(h) - eval(-h)) / (2.0 * h);
        let tol = 1e-5 * (1.0 + numeric.abs());
        assert!(
            (numeric - analytic[i]).abs() <= tol,
            "{name}: d/dx[{i}] autograd {} vs numeric {numeric}",
            analytic[i]
        );
    }
}

/// Deterministic values uniform in [−1, 1) of `shape`, in f64.
pub fn randn(shape: &[usize], seed: u64) -> Tensor {
    // A small deterministic generator keeps these tests independent of candle's RNG.
    let mut s = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    let n: usize = shape.iter().product();
    let v: Vec<f64> = (0..n)
        .map(|_| {
            s = s.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            #[expect(clippy::cast_precision_loss, reason = "test data")]
            let u = (s >> 11) as f64 / (1u64 << 53) as f64;
            u * 2.0 - 1.0
        })
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// `Σ y·w` for a fixed random `w` of `y`'s shape (a scalar to differentiate).
pub fn weighted_sum(y: &Tensor, seed: u64) -> Result<Tensor> {
    let w = randn(y.dims(), seed);
    y.mul(&w)?.sum_all()
}
