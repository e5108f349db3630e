//! Helpers shared by the unit tests of the custom ops (`frozen`, `trained`).

use candle_core::{Result, Tensor};

/// Asserts that `a` is within `tol`, relative to `b`'s largest magnitude (at least 1),
/// of `b` everywhere.
pub fn close(a: &Tensor, b: &Tensor, tol: f32) -> Result<()> {
    let d = (a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
    let s = b.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?.max(1.0);
    assert!(d <= tol * s, "max difference {d} (scale {s})");
    Ok(())
}
