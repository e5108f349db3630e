//! Coarse-to-fine search: for the first iterations of a run the latent moves in blocks of
//! `factor × factor` tokens, so the large regions of the image (background, the main
//! shapes) settle before the fine texture does.
//!
//! It works on the gradient, not on the latent's shape: each step's gradient is averaged
//! over the blocks ([`block_average`]). Random-code starts draw one code per block of the
//! first stage, so the latent starts constant on each block; the optimisers are
//! element-wise and the clamp is too, so equal gradients keep it constant — exactly a
//! `factor`-times smaller latent, upsampled by repetition — and a session file holds the
//! same tensors whether or not a stage is active. Later stages (smaller factors, then 1)
//! free the detail.
//!
//! The schedule is written `FACTOR:UNTIL[,FACTOR:UNTIL…]`: "4:40,2:80" moves 4×4 blocks
//! for iterations 0–39, 2×2 blocks for 40–79 and single tokens after.

use candle_core::{Result, Tensor};

/// `[n, n]` averaging matrix over consecutive runs of `factor` indices (the last run may be
/// shorter): row i holds `1/len` at the columns of i's run.
fn averaging_matrix(n: usize, factor: usize, like: &Tensor) -> Result<Tensor> {
    let mut m = vec![0f32; n * n];
    for start in (0..n).step_by(factor) {
        let end = (start + factor).min(n);
        #[expect(clippy::cast_precision_loss, reason = "block lengths are at most 64")]
        let w = 1.0 / (end - start) as f32;
        for i in start..end {
            for j in start..end {
                m[i * n + j] = w;
            }
        }
    }
    super::transfer::upload(m, (n, n), like.dtype(), like.device())
}

/// Averages `t` (`[B, C, H, W]`) over blocks of `factor × factor` on its last two axes
/// and repeats each mean over its block (edge blocks may be smaller).
pub fn block_average(t: &Tensor, factor: usize) -> Result<Tensor> {
    if factor <= 1 {
        return Ok(t.clone());
    }
    let (b, c, h, w) = t.dims4()?;
    let ax = averaging_matrix(w, factor, t)?;
    let ay = averaging_matrix(h, factor, t)?;
    let rows = t.reshape((b * c * h, w))?.matmul(&ax)?.reshape((b * c, h, w))?;
    ay.broadcast_left(b * c)?.matmul(&rows)?.reshape((b, c, h, w))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn block_average_means_each_block_including_short_edge_blocks() {
        // One channel, 3 × 5, factor 2: blocks rows {0,1},{2} × cols {0,1},{2,3},{4}.
        let v: Vec<f32> = (0..15).map(|x| x as f32).collect();
        let t = Tensor::from_vec(v.clone(), (1, 1, 3, 5), &Device::Cpu).unwrap();
        let out = block_average(&t, 2).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let at = |r: usize, c: usize| v[r * 5 + c];
        let mean = |rs: &[usize], cs: &[usize]| {
            let mut s = 0.0;
            for &r in rs {
                for &c in cs {
                    s += at(r, c);
                }
            }
            s / (rs.len() * cs.len()) as f32
        };
        let row_blocks: [&[usize]; 2] = [&[0, 1], &[2]];
        let col_blocks: [&[usize]; 3] = [&[0, 1], &[2, 3], &[4]];
        for rs in row_blocks {
            for cs in col_blocks {
                let m = mean(rs, cs);
                for &r in rs {
                    for &c in cs {
                        assert!((out[r * 5 + c] - m).abs() < 1e-5, "({r},{c}) {} vs {m}", out[r * 5 + c]);
                    }
                }
            }
        }
        // Factor 1 is the identity; channels and batch are separate.
        let t2 = Tensor::randn(0f32, 1.0, (2, 3, 4, 4), &Device::Cpu).unwrap();
        let same = block_average(&t2, 1).unwrap();
        assert_eq!(same.to_vec3::<f32>().ok(), t2.to_vec3::<f32>().ok());
        let avg = block_average(&t2, 4).unwrap();
        let want = t2.mean_keepdim(3).unwrap().mean_keepdim(2).unwrap().broadcast_as((2, 3, 4, 4)).unwrap();
        let diff = (avg - want).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(diff < 1e-5, "{diff}");
    }
}
