//! Sampling on the CPU over plain `f32` buffers.
//!
//! Drawing a grid is one position at a time: for a handful of candidates, each layer is a
//! few products of a handful of rows, an attention over the positions so far and two
//! norms. As candle ops each of those costs more to dispatch than to compute (about 20
//! ops a layer, 6 layers, 256 positions: 1.1 s for 8 candidates of the shapes world's
//! model). Here the same arithmetic runs over buffers allocated once per grid, the
//! products through the packed kernel of [`crate::models::kernels::gemm`]; the logits
//! agree with the tensor path's to float rounding (tested in the parent module).

use candle_core::{DType, Result, Tensor};

use super::OneStep;
use crate::models::kernels::rows_matmul;
use crate::models::nn::{LayerNorm, Linear};

/// A row-major matrix's values on the host.
fn host(t: &Tensor) -> Result<Vec<f32>> {
    t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()
}

/// `a·b` in eight independent lanes (a sum in one chain does not vectorise).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ac.remainder().iter().zip(bc.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ac.zip(bc) {
        for l in 0..8 {
            lanes[l] += x[l] * y[l];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// A linear layer with its weight transposed to `[in, out]`, so products read it in rows.
struct Affine {
    wt: Vec<f32>,
    bias: Option<Vec<f32>>,
    inp: usize,
    out: usize,
}

impl Affine {
    fn new(l: &Linear) -> Result<Self> {
        let (w, b) = l.parts();
        let (out, inp) = w.dims2()?;
        Ok(Self { wt: host(&w.t()?.contiguous()?)?, bias: b.map(host).transpose()?, inp, out })
    }

    /// `y = x·W (+ b)` for `rows` rows of `x`; with `add`, `y += x·W (+ b)`.
    fn apply(&self, x: &[f32], rows: usize, y: &mut [f32], add: bool) -> Result<()> {
        let n = self.out;
        for row in y.chunks_exact_mut(n).take(rows) {
            match (&self.bias, add) {
                (Some(b), true) => row.iter_mut().zip(b).for_each(|(v, b)| *v += b),
                (Some(b), false) => row.copy_from_slice(b),
                (None, true) => {}
                (None, false) => row.fill(0.0),
            }
        }
        rows_matmul(x, rows, self.inp, &self.wt, n, y)
    }
}

/// A layer norm's scale and shift.
struct Norm {
    gamma: Vec<f32>,
    beta: Vec<f32>,
    eps: f32,
}

impl Norm {
    fn new(n: &LayerNorm) -> Result<Self> {
        let (g, b, eps) = n.parts();
        #[expect(clippy::cast_possible_truncation, reason = "an f32 model's epsilon")]
        let eps = eps as f32;
        Ok(Self { gamma: host(g)?, beta: host(b)?, eps })
    }

    /// Normalises each row of `x` into `y`.
    fn apply(&self, x: &[f32], y: &mut [f32]) {
        let w = self.gamma.len();
        #[expect(clippy::cast_precision_loss, reason = "widths are small")]
        let inv_w = 1.0 / w as f32;
        for (xr, yr) in x.chunks_exact(w).zip(y.chunks_exact_mut(w)) {
            let mean = xr.iter().sum::<f32>() * inv_w;
            let var = xr.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() * inv_w;
            let inv = 1.0 / (var + self.eps).sqrt();
            for (((y, x), g), b) in yr.iter_mut().zip(xr).zip(&self.gamma).zip(&self.beta) {
                *y = (x - mean) * inv * g + b;
            }
        }
    }
}

struct Block {
    ln1: Norm,
    qkv: Affine,
    proj: Affine,
    ln2: Norm,
    fc1: Affine,
    fc2: Affine,
}

/// The model's weights on the host, and the sizes sampling needs.
pub(super) struct HostModel {
    width: usize,
    heads: usize,
    mlp: usize,
    n_codes: usize,
    cells: usize,
    scale: f32,
    cond_proj: Affine,
    tok_emb: Vec<f32>,
    pos_emb: Vec<f32>,
    blocks: Vec<Block>,
    ln_f: Norm,
    head: Affine,
}

impl HostModel {
    pub(super) fn new(m: &OneStep) -> Result<Self> {
        let c = &m.config;
        let blocks = m
            .blocks
            .iter()
            .map(|b| {
                Ok(Block {
                    ln1: Norm::new(&b.ln1)?,
                    qkv: Affine::new(&b.qkv)?,
                    proj: Affine::new(&b.proj)?,
                    ln2: Norm::new(&b.ln2)?,
                    fc1: Affine::new(&b.fc1)?,
                    fc2: Affine::new(&b.fc2)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let hd = c.width / c.heads;
        #[expect(clippy::cast_precision_loss, reason = "head widths are small")]
        let scale = (hd as f32).powf(-0.5);
        Ok(Self {
            width: c.width,
            heads: c.heads,
            mlp: c.mlp,
            n_codes: c.n_codes,
            cells: c.cells(),
            scale,
            cond_proj: Affine::new(&m.cond_proj)?,
            tok_emb: host(&m.tok_emb)?,
            pos_emb: host(&m.pos_emb)?,
            blocks,
            ln_f: Norm::new(&m.ln_f)?,
            head: Affine::new(&m.head)?,
        })
    }

    /// Draws one grid of codes per row of `cond` (`b` rows of the CLIP width), in raster
    /// order: `pick` chooses each position's code from its row of logits and a uniform
    /// number, drawn from `uniform` for the rows in order at each position. Returns the
    /// codes, grid by grid.
    ///
    /// The rows are split into lanes, one per thread, that advance side by side; every
    /// row's arithmetic is its own (no sum mixes rows) and the uniform numbers are drawn
    /// before the lanes run, so the codes do not depend on how many lanes there are.
    pub(super) fn generate(
        &self,
        cond: &[f32],
        b: usize,
        pick: &(dyn Fn(&[f32], f64) -> u32 + Sync),
        uniform: &mut dyn FnMut() -> f64,
    ) -> Result<Vec<u32>> {
        let cells = self.cells;
        let lanes_n = rayon::current_num_threads().clamp(1, b.max(1));
        let per = b.div_ceil(lanes_n).max(1);
        let mut lanes: Vec<Lane> = (0..b).step_by(per).map(|from| Lane::new(self, from, (b - from).min(per))).collect();
        for lane in &mut lanes {
            let rows = &cond[lane.from * self.cond_proj.inp..(lane.from + lane.rows) * self.cond_proj.inp];
            self.cond_proj.apply(rows, lane.rows, &mut lane.x, false)?;
        }
        let mut us = vec![0f64; b];
        for i in 0..cells {
            us.iter_mut().for_each(|u| *u = uniform());
            let step = |lane: &mut Lane| self.advance(lane, i, &us[lane.from..lane.from + lane.rows], pick);
            if lanes.len() > 1 {
                use rayon::prelude::*;
                lanes.par_iter_mut().try_for_each(step)?;
            } else {
                lanes.iter_mut().try_for_each(step)?;
            }
        }
        Ok(lanes.into_iter().flat_map(|lane| lane.codes).collect())
    }

    /// Runs position `i` of the lane's rows (their inputs in `lane.x`) through every
    /// layer and the head, picks each row's code with its uniform number in `us`, and
    /// puts the code's embedding in `lane.x` for the next position.
    fn advance(&self, lane: &mut Lane, i: usize, us: &[f64], pick: &(dyn Fn(&[f32], f64) -> u32 + Sync)) -> Result<()> {
        let (w, heads, cells) = (self.width, self.heads, self.cells);
        let hd = w / heads;
        let b = lane.rows;
        let pos = &self.pos_emb[i * w..(i + 1) * w];
        for row in lane.x.chunks_exact_mut(w) {
            row.iter_mut().zip(pos).for_each(|(v, p)| *v += p);
        }
        let per_layer = b * heads * cells * hd;
        for (l, block) in self.blocks.iter().enumerate() {
            block.ln1.apply(&lane.x, &mut lane.normed);
            block.qkv.apply(&lane.normed, b, &mut lane.qkv, false)?;
            let k_layer = &mut lane.keys[l * per_layer..(l + 1) * per_layer];
            let v_layer = &mut lane.values[l * per_layer..(l + 1) * per_layer];
            for r in 0..b {
                let q_all = &lane.qkv[r * 3 * w..(r + 1) * 3 * w];
                for h in 0..heads {
                    let base = ((r * heads + h) * cells) * hd;
                    k_layer[base + i * hd..base + (i + 1) * hd].copy_from_slice(&q_all[w + h * hd..w + (h + 1) * hd]);
                    v_layer[base + i * hd..base + (i + 1) * hd]
                        .copy_from_slice(&q_all[2 * w + h * hd..2 * w + (h + 1) * hd]);
                    let q = &q_all[h * hd..(h + 1) * hd];
                    let s = &mut lane.scores[..=i];
                    for (sj, kj) in s.iter_mut().zip(k_layer[base..base + (i + 1) * hd].chunks_exact(hd)) {
                        *sj = dot(q, kj) * self.scale;
                    }
                    let max = s.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let mut total = 0.0;
                    for sj in s.iter_mut() {
                        *sj = (*sj - max).exp();
                        total += *sj;
                    }
                    let out = &mut lane.attended[r * w + h * hd..r * w + (h + 1) * hd];
                    out.fill(0.0);
                    for (sj, vj) in s.iter().zip(v_layer[base..base + (i + 1) * hd].chunks_exact(hd)) {
                        let p = sj / total;
                        out.iter_mut().zip(vj).for_each(|(o, v)| *o += p * v);
                    }
                }
            }
            block.proj.apply(&lane.attended, b, &mut lane.x, true)?;
            block.ln2.apply(&lane.x, &mut lane.normed);
            block.fc1.apply(&lane.normed, b, &mut lane.hidden, false)?;
            for v in &mut lane.hidden {
                *v /= 1.0 + (-1.702 * *v).exp();
            }
            block.fc2.apply(&lane.hidden, b, &mut lane.x, true)?;
        }
        self.ln_f.apply(&lane.x, &mut lane.normed);
        self.head.apply(&lane.normed, b, &mut lane.logits, false)?;
        for (r, u) in us.iter().enumerate().take(b) {
            let code = pick(&lane.logits[r * self.n_codes..(r + 1) * self.n_codes], *u);
            lane.codes[r * cells + i] = code;
            if i + 1 < cells {
                let e = usize::try_from(code).ok().and_then(|c| self.tok_emb.get(c * w..(c + 1) * w));
                let Some(e) = e else { candle_core::bail!("one-step sampling: code {code} is out of range") };
                lane.x[r * w..(r + 1) * w].copy_from_slice(e);
            }
        }
        Ok(())
    }
}

/// Rows `from..from + rows` of a batch, and the buffers that advance them: each layer's
/// keys and values (`[layer][row][head][position][head_dim]`) and the scratch of one
/// position.
struct Lane {
    from: usize,
    rows: usize,
    keys: Vec<f32>,
    values: Vec<f32>,
    x: Vec<f32>,
    normed: Vec<f32>,
    qkv: Vec<f32>,
    attended: Vec<f32>,
    hidden: Vec<f32>,
    scores: Vec<f32>,
    logits: Vec<f32>,
    /// The rows' codes so far, `[row][position]`.
    codes: Vec<u32>,
}

impl Lane {
    fn new(m: &HostModel, from: usize, rows: usize) -> Self {
        let cache = m.blocks.len() * rows * m.cells * m.width;
        Self {
            from,
            rows,
            keys: vec![0.0; cache],
            values: vec![0.0; cache],
            x: vec![0.0; rows * m.width],
            normed: vec![0.0; rows * m.width],
            qkv: vec![0.0; rows * 3 * m.width],
            attended: vec![0.0; rows * m.width],
            hidden: vec![0.0; rows * m.mlp],
            scores: vec![0.0; m.cells],
            logits: vec![0.0; rows * m.n_codes],
            codes: vec![0; rows * m.cells],
        }
    }
}
