//! Optimisers for the latent, written out so their state can be saved and a resumed run
//! continues bit-exactly. Defaults and update order follow `torch.optim`.

use candle_core::{Result, Tensor};
use serde::{Deserialize, Serialize};

use crate::settings::OptimizerKind;

const BETA1: f64 = 0.9;
const BETA2: f64 = 0.999;
const ADAM_EPS: f64 = 1e-8;
const ADAMW_DECAY: f64 = 0.01;
const ADAGRAD_EPS: f64 = 1e-10;
const RMS_ALPHA: f64 = 0.99;

/// The optimiser's moving state: step count and up to two moment tensors.
#[derive(Debug, Clone)]
pub struct Optimizer {
    kind: OptimizerKind,
    step: u64,
    /// First moment (Adam, AdamW, Adamax).
    m: Option<Tensor>,
    /// Second moment, squared-gradient sum or infinity norm, by kind.
    v: Option<Tensor>,
}

/// The scalar part of the state, for session files.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct OptimizerMeta {
    pub kind: OptimizerKind,
    pub step: u64,
}

impl Optimizer {
    pub fn new(kind: OptimizerKind) -> Self {
        Self { kind, step: 0, m: None, v: None }
    }

    pub fn kind(&self) -> OptimizerKind {
        self.kind
    }

    pub fn meta(&self) -> OptimizerMeta {
        OptimizerMeta { kind: self.kind, step: self.step }
    }

    pub fn moments(&self) -> (Option<&Tensor>, Option<&Tensor>) {
        (self.m.as_ref(), self.v.as_ref())
    }

    /// Rebuilds a saved state.
    pub fn restore(meta: &OptimizerMeta, m: Option<Tensor>, v: Option<Tensor>) -> Self {
        Self { kind: meta.kind, step: meta.step, m, v }
    }

    /// One update of `p` with gradient `g` and learning rate `lr`; returns the new `p`.
    pub fn step(&mut self, p: &Tensor, g: &Tensor, lr: f64) -> Result<Tensor> {
        self.step += 1;
        #[expect(clippy::cast_precision_loss, reason = "step counts stay far below 2^52")]
        let t = self.step as f64;
        let zeros = || g.zeros_like();
        match self.kind {
            OptimizerKind::Adam | OptimizerKind::AdamW => {
                let p = if self.kind == OptimizerKind::AdamW { (p * (1.0 - lr * ADAMW_DECAY))? } else { p.clone() };
                let m = match &self.m {
                    Some(m) => m.clone(),
                    None => zeros()?,
                };
                let v = match &self.v {
                    Some(v) => v.clone(),
                    None => zeros()?,
                };
                let m = (&m + ((g - &m)? * (1.0 - BETA1))?)?;
                let v = ((v * BETA2)? + (g.sqr()? * (1.0 - BETA2))?)?;
                let bc1 = 1.0 - BETA1.powf(t);
                let bc2 = 1.0 - BETA2.powf(t);
                let denom = ((v.sqrt()? / bc2.sqrt())? + ADAM_EPS)?;
                let out = (p - (m.div(&denom)? * (lr / bc1))?)?;
                self.m = Some(m);
                self.v = Some(v);
                Ok(out)
            }
            OptimizerKind::Adamax => {
                let m = match &self.m {
                    Some(m) => m.clone(),
                    None => zeros()?,
                };
                let u = match &self.v {
                    Some(v) => v.clone(),
                    None => zeros()?,
                };
                let m = (&m + ((g - &m)? * (1.0 - BETA1))?)?;
                let u = (u * BETA2)?.maximum(&(g.abs()? + ADAM_EPS)?)?;
                let bc1 = 1.0 - BETA1.powf(t);
                let out = (p - (m.div(&u)? * (lr / bc1))?)?;
                self.m = Some(m);
                self.v = Some(u);
                Ok(out)
            }
            OptimizerKind::Adagrad => {
                let sum = match &self.v {
                    Some(v) => v.clone(),
                    None => zeros()?,
                };
                let sum = (sum + g.sqr()?)?;
                let out = (p - (g.div(&(sum.sqrt()? + ADAGRAD_EPS)?)? * lr)?)?;
                self.v = Some(sum);
                Ok(out)
            }
            OptimizerKind::RmsProp => {
                let v = match &self.v {
                    Some(v) => v.clone(),
                    None => zeros()?,
                };
                let v = ((v * RMS_ALPHA)? + (g.sqr()? * (1.0 - RMS_ALPHA))?)?;
                let out = (p - (g.div(&(v.sqrt()? + ADAM_EPS)?)? * lr)?)?;
                self.v = Some(v);
                Ok(out)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Values from torch.optim (torch 2.15), minimising sum(p²) from p = [1, -2] with lr 0.1
    /// for three steps:
    /// ```python
    /// p = torch.tensor([1., -2.], requires_grad=True); opt = torch.optim.Adam([p], lr=0.1)
    /// for _ in range(3): opt.zero_grad(); (p**2).sum().backward(); opt.step()
    /// ```
    #[test]
    fn matches_torch_optim() {
        let cases: [(OptimizerKind, [f32; 2]); 5] = [
            (OptimizerKind::Adam, [0.701_586_3, -1.700_623_4]),
            (OptimizerKind::AdamW, [0.698_911_25, -1.694_944_6]),
            (OptimizerKind::Adamax, [0.715_499_4, -1.707_648_3]),
            (OptimizerKind::Adagrad, [0.780_456_2, -1.775_821_4]),
            (OptimizerKind::RmsProp, [3.033_073_8e-12, -0.309_687_35]),
        ];
        for (kind, want) in cases {
            let mut opt = Optimizer::new(kind);
            let mut p = Tensor::new(&[1.0f32, -2.0], &Device::Cpu).unwrap();
            for _ in 0..3 {
                let g = (&p * 2.0).unwrap();
                p = opt.step(&p, &g, 0.1).unwrap();
            }
            let got = p.to_vec1::<f32>().unwrap();
            for (g, w) in got.iter().zip(want) {
                assert!((g - w).abs() < 1e-5, "{kind:?}: got {got:?}, want {want:?}");
            }
        }
    }
}
