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
use serde::{Deserialize, Serialize};

/// One stage of the schedule: blocks of `factor × factor` tokens before iteration `until`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoarseStage {
    pub factor: usize,
    pub until: usize,
}

/// Parses "4:40,2:80" (an empty string or "none" is no schedule).
pub fn parse_schedule(text: &str) -> std::result::Result<Vec<CoarseStage>, String> {
    let text = text.trim();
    if text.is_empty() || text.eq_ignore_ascii_case("none") {
        return Ok(Vec::new());
    }
    let stages = text
        .split(',')
        .map(|part| {
            let bad = || format!("coarse stage {:?} is not FACTOR:UNTIL (e.g. 4:40)", part.trim());
            let (f, u) = part.trim().split_once(':').ok_or_else(bad)?;
            let factor = f.trim().parse::<usize>().map_err(|_| bad())?;
            let until = u.trim().parse::<usize>().map_err(|_| bad())?;
            Ok(CoarseStage { factor, until })
        })
        .collect::<std::result::Result<Vec<_>, String>>()?;
    validate_schedule(&stages)?;
    Ok(stages)
}

/// Writes a schedule the way [`parse_schedule`] reads it.
pub fn format_schedule(stages: &[CoarseStage]) -> String {
    stages.iter().map(|s| format!("{}:{}", s.factor, s.until)).collect::<Vec<_>>().join(",")
}

/// Factors from 1 to 64; stage ends strictly increasing.
pub fn validate_schedule(stages: &[CoarseStage]) -> std::result::Result<(), String> {
    let mut last = 0;
    for s in stages {
        if !(1..=64).contains(&s.factor) {
            return Err(format!("coarse factor {} is out of range (1 to 64 tokens)", s.factor));
        }
        if s.until <= last {
            return Err(format!(
                "coarse stages must end at increasing iterations above 0 (got {} after {last})",
                s.until
            ));
        }
        last = s.until;
    }
    Ok(())
}

/// The block size at iteration `it` (1 when no stage covers it).
pub fn factor_at(stages: &[CoarseStage], it: usize) -> usize {
    stages.iter().find(|s| it < s.until).map_or(1, |s| s.factor)
}

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
    Tensor::from_vec(m, (n, n), like.device())?.to_dtype(like.dtype())
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
    fn schedules_parse_format_and_refuse_nonsense() {
        let s = parse_schedule("4:40, 2:80").unwrap();
        assert_eq!(s, vec![CoarseStage { factor: 4, until: 40 }, CoarseStage { factor: 2, until: 80 }]);
        assert_eq!(format_schedule(&s), "4:40,2:80");
        assert!(parse_schedule("none").unwrap().is_empty());
        assert!(parse_schedule("").unwrap().is_empty());
        for bad in ["4", "4:x", "0:10", "65:10", "4:40,2:40", "4:0", "4:40;2:80"] {
            let e = parse_schedule(bad).unwrap_err();
            assert!(!e.contains('\n') && !e.is_empty(), "{bad}: {e}");
        }
        assert_eq!(factor_at(&s, 0), 4);
        assert_eq!(factor_at(&s, 39), 4);
        assert_eq!(factor_at(&s, 40), 2);
        assert_eq!(factor_at(&s, 79), 2);
        assert_eq!(factor_at(&s, 80), 1);
        assert_eq!(factor_at(&[], 0), 1);
    }

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
