//! Training of models that clipcanvas makes itself (today the one-step generator,
//! `train-onestep`): the pieces every trainer needs — variables initialised by name,
//! an AdamW whose moments can be saved, checkpoints written atomically with their
//! state — and the trainers. Deterministic for a seed on a given machine: every random
//! choice comes from the seeded [`Rng`], and the CPU kernels are deterministic.

pub mod data;
pub mod onestep;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};

use crate::engine::rng::Rng;
use crate::models::weights::ShapeRecorder;

/// The training layer's one error type.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// Bad input: an empty folder, an unreadable image, models that do not fit, a
    /// checkpoint made with other options.
    #[error("{0}")]
    Input(String),
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Model(#[from] crate::models::ModelError),
    #[error(transparent)]
    Engine(#[from] crate::engine::EngineError),
    #[error(transparent)]
    Write(#[from] crate::files::FileError),
    #[error("training failed: {0}")]
    Candle(#[from] candle_core::Error),
    /// Stopped between steps; the last checkpoint stays.
    #[error("cancelled")]
    Cancelled,
}

impl TrainError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io { path: path.into(), source }
    }
}

pub type Result<T, E = TrainError> = std::result::Result<T, E>;

/// Progress of a training run, and its cancellation.
pub trait Progress {
    /// A stage ("dataset", "train") begins with this many steps, `done` of them already
    /// done (a resumed run).
    fn stage(&mut self, name: &str, steps: usize, done: usize);
    /// One step finished with this loss; `detail` is a short line of extra figures.
    fn step(&mut self, step: usize, loss: f64, detail: &str);
    /// A line worth keeping (a checkpoint written, an evaluation).
    fn note(&mut self, line: &str);
    /// Checked between steps: true stops the run.
    fn cancelled(&self) -> bool {
        false
    }
}

/// How a variable starts.
#[derive(Debug, Clone, Copy)]
pub enum Init {
    Zeros,
    Ones,
    Normal(f64),
}

/// Variables for every tensor `build` asks for, each initialised by `rule` from its
/// name and shape, drawn in name order (so the same seed gives the same weights).
pub fn init_vars(
    build: impl Fn(VarBuilder) -> candle_core::Result<()>,
    rule: impl Fn(&str, &[usize]) -> Init,
    rng: &mut Rng,
    device: &Device,
) -> Result<Vars> {
    let recorder = ShapeRecorder::default();
    build(recorder.var_builder(device))?;
    let mut requested = recorder.requested();
    requested.sort_by(|a, b| a.0.cmp(&b.0));
    let mut vars = BTreeMap::new();
    for (name, shape) in requested {
        let n: usize = shape.iter().product();
        let t = match rule(&name, &shape) {
            Init::Zeros => Tensor::zeros(shape.as_slice(), DType::F32, device)?,
            Init::Ones => Tensor::ones(shape.as_slice(), DType::F32, device)?,
            Init::Normal(std) => {
                #[expect(clippy::cast_possible_truncation, reason = "an f32 weight's scale")]
                let v: Vec<f32> = rng.normals_f32(n).into_iter().map(|x| x * std as f32).collect();
                Tensor::from_vec(v, shape.as_slice(), device)?
            }
        };
        vars.insert(name, Var::from_tensor(&t)?);
    }
    Ok(Vars(vars))
}

/// Named variables in name order.
#[derive(Debug, Clone)]
pub struct Vars(pub BTreeMap<String, Var>);

impl Vars {
    /// A `VarBuilder` that hands out these variables (tracked tensors) by name.
    pub fn var_builder(&self, device: &Device) -> Result<VarBuilder<'static>> {
        let map = VarMap::new();
        {
            let mut data = map.data().lock().map_err(|_| TrainError::Input("variable map poisoned".into()))?;
            for (k, v) in &self.0 {
                data.insert(k.clone(), v.clone());
            }
        }
        Ok(VarBuilder::from_varmap(&map, DType::F32, device))
    }

    /// Sets every variable from `tensors` (`prefix` + name), which must hold them all.
    pub fn load(&self, tensors: &std::collections::HashMap<String, Tensor>, prefix: &str) -> Result<()> {
        for (name, var) in &self.0 {
            let t = tensors
                .get(&format!("{prefix}{name}"))
                .ok_or_else(|| TrainError::Input(format!("the checkpoint has no tensor '{prefix}{name}'")))?;
            if t.dims() != var.dims() {
                return Err(TrainError::Input(format!(
                    "the checkpoint's '{prefix}{name}' is {:?}, the model's {:?}",
                    t.dims(),
                    var.dims()
                )));
            }
            var.set(&t.to_dtype(DType::F32)?)?;
        }
        Ok(())
    }

    /// The current values, `prefix` + name.
    pub fn tensors(&self, prefix: &str, dtype: DType) -> Result<BTreeMap<String, Tensor>> {
        self.0.iter().map(|(k, v)| Ok((format!("{prefix}{k}"), v.as_tensor().to_dtype(dtype)?))).collect()
    }
}

/// AdamW with decoupled weight decay on the named variables `decayed` says to decay,
/// global gradient-norm clipping, and moments that are saved with a checkpoint.
#[derive(Debug)]
pub struct AdamW {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    pub clip_norm: f64,
    /// Steps taken.
    pub t: usize,
    m: BTreeMap<String, Tensor>,
    v: BTreeMap<String, Tensor>,
}

impl AdamW {
    pub fn new(vars: &Vars, beta1: f64, beta2: f64, weight_decay: f64, clip_norm: f64) -> Result<Self> {
        let zeros = |v: &Var| Tensor::zeros(v.dims(), DType::F32, v.device());
        let m = vars.0.iter().map(|(k, v)| Ok((k.clone(), zeros(v)?))).collect::<Result<_>>()?;
        let v = vars.0.iter().map(|(k, v)| Ok((k.clone(), zeros(v)?))).collect::<Result<_>>()?;
        Ok(Self { beta1, beta2, eps: 1e-8, weight_decay, clip_norm, t: 0, m, v })
    }

    /// One step at learning rate `lr`; `decayed(name)` says which variables decay.
    /// Returns the gradient norm before clipping.
    pub fn step(
        &mut self,
        vars: &Vars,
        grads: &candle_core::backprop::GradStore,
        lr: f64,
        decayed: impl Fn(&str) -> bool,
    ) -> Result<f64> {
        let mut norm2 = 0f64;
        let mut present = Vec::with_capacity(vars.0.len());
        for (name, var) in &vars.0 {
            let g = grads.get(var.as_tensor()).cloned();
            if let Some(g) = &g {
                norm2 += f64::from(g.sqr()?.sum_all()?.to_scalar::<f32>()?);
            }
            present.push((name, var, g));
        }
        let norm = norm2.sqrt();
        if !norm.is_finite() {
            return Err(TrainError::Input(format!("the gradient is not finite (norm {norm}); lower --lr")));
        }
        let scale = if self.clip_norm > 0.0 && norm > self.clip_norm { self.clip_norm / norm } else { 1.0 };
        self.t += 1;
        #[expect(clippy::cast_possible_truncation, clippy::cast_possible_wrap, reason = "step counts fit i32")]
        let t = self.t as i32;
        let (c1, c2) = (1.0 - self.beta1.powi(t), 1.0 - self.beta2.powi(t));
        for (name, var, g) in present {
            let Some(g) = g else { continue };
            let g = (g * scale)?;
            let (Some(m), Some(v)) = (self.m.get_mut(name), self.v.get_mut(name)) else { continue };
            *m = ((&*m * self.beta1)? + (&g * (1.0 - self.beta1))?)?;
            *v = ((&*v * self.beta2)? + (g.sqr()? * (1.0 - self.beta2))?)?;
            let update = ((&*m / c1)? / ((&*v / c2)?.sqrt()? + self.eps)?)?;
            let mut w = var.as_tensor().clone();
            if self.weight_decay > 0.0 && decayed(name) {
                w = (w * (1.0 - lr * self.weight_decay))?;
            }
            var.set(&(w - (update * lr)?)?)?;
        }
        Ok(norm)
    }

    /// The moments as tensors named `m.<name>` and `v.<name>`.
    pub fn tensors(&self) -> BTreeMap<String, Tensor> {
        let m = self.m.iter().map(|(k, t)| (format!("m.{k}"), t.clone()));
        let v = self.v.iter().map(|(k, t)| (format!("v.{k}"), t.clone()));
        m.chain(v).collect()
    }

    /// Restores the moments saved by [`Self::tensors`] after `t` steps.
    pub fn load(&mut self, tensors: &std::collections::HashMap<String, Tensor>, t: usize) -> Result<()> {
        for (prefix, map) in [("m.", &mut self.m), ("v.", &mut self.v)] {
            for (k, slot) in map.iter_mut() {
                let saved = tensors
                    .get(&format!("{prefix}{k}"))
                    .ok_or_else(|| TrainError::Input(format!("the checkpoint has no optimiser state for '{k}'")))?;
                if saved.dims() != slot.dims() {
                    return Err(TrainError::Input(format!(
                        "the checkpoint's optimiser state for '{k}' has another shape"
                    )));
                }
                *slot = saved.to_dtype(DType::F32)?;
            }
        }
        self.t = t;
        Ok(())
    }
}

/// A cosine learning-rate schedule with linear warm-up, ending at a tenth of the peak.
pub fn cosine_lr(step: usize, steps: usize, peak: f64, warmup: usize) -> f64 {
    if step < warmup {
        #[expect(clippy::cast_precision_loss, reason = "step counts")]
        return peak * (step + 1) as f64 / warmup as f64;
    }
    #[expect(clippy::cast_precision_loss, reason = "step counts")]
    let t = (step - warmup) as f64 / (steps.saturating_sub(warmup)).max(1) as f64;
    peak * (0.1 + 0.9 * 0.5 * (1.0 + (std::f64::consts::PI * t.min(1.0)).cos()))
}

/// Writes `tensors` and a JSON `state` (in the safetensors header's metadata, so the
/// two can never disagree) atomically to `path`.
pub fn save_with_state(path: &Path, tensors: &BTreeMap<String, Tensor>, state: &str) -> Result<()> {
    let mut meta = std::collections::HashMap::new();
    meta.insert("state".to_owned(), state.to_owned());
    let views: Vec<(String, Tensor)> = tensors.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let bytes =
        safetensors::serialize(views, Some(meta)).map_err(|e| TrainError::Input(format!("{}: {e}", path.display())))?;
    crate::files::write_atomic(path, |w| std::io::Write::write_all(w, &bytes))?;
    Ok(())
}

/// Reads a file written by [`save_with_state`]: its tensors (on the CPU) and state.
pub fn load_with_state(path: &Path) -> Result<(std::collections::HashMap<String, Tensor>, String)> {
    let bytes = std::fs::read(path).map_err(|e| TrainError::io(path, e))?;
    let bad = |e: String| TrainError::Input(format!("{}: not a clipcanvas checkpoint ({e})", path.display()));
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| bad(e.to_string()))?;
    let state = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get("state").cloned())
        .ok_or_else(|| bad("no state in its header".into()))?;
    let tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu).map_err(|e| bad(e.to_string()))?;
    Ok((tensors, state))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adamw_matches_the_formula_and_round_trips_its_moments() {
        let dev = Device::Cpu;
        let mut rng = Rng::new(1);
        let vars = init_vars(
            |vb| {
                vb.get((2, 3), "a.weight")?;
                vb.get(3, "a.bias")?;
                Ok(())
            },
            |name, _| if name.ends_with("bias") { Init::Zeros } else { Init::Normal(1.0) },
            &mut rng,
            &dev,
        )
        .unwrap();
        let w0: Vec<Vec<f32>> = vars.0["a.weight"].as_tensor().to_vec2().unwrap();
        let loss = |vars: &Vars| {
            let w = vars.0["a.weight"].as_tensor();
            let b = vars.0["a.bias"].as_tensor();
            ((w.sqr().unwrap().sum_all().unwrap() + b.sum_all().unwrap()).unwrap() * 0.5).unwrap()
        };
        let mut opt = AdamW::new(&vars, 0.9, 0.95, 0.1, 0.0).unwrap();
        let grads = loss(&vars).backward().unwrap();
        opt.step(&vars, &grads, 0.01, |n| n.ends_with("weight")).unwrap();
        // Step 1: m̂ = g, v̂ = g², so the update is lr·sign(g) (plus decay).
        let w1: Vec<Vec<f32>> = vars.0["a.weight"].as_tensor().to_vec2().unwrap();
        for (r0, r1) in w0.iter().zip(&w1) {
            for (a, b) in r0.iter().zip(r1) {
                let want = a * (1.0 - 0.01 * 0.1) - 0.01 * a.signum();
                assert!((b - want).abs() < 1e-5, "{b} vs {want}");
            }
        }
        let b1: Vec<f32> = vars.0["a.bias"].as_tensor().to_vec1().unwrap();
        assert!(b1.iter().all(|&v| (v + 0.01).abs() < 1e-6), "bias not decayed, moved by lr: {b1:?}");
        // Saving and loading the moments continues identically.
        let saved: std::collections::HashMap<String, Tensor> = opt.tensors().into_iter().collect();
        let mut again = AdamW::new(&vars, 0.9, 0.95, 0.1, 0.0).unwrap();
        again.load(&saved, opt.t).unwrap();
        let before = vars.0["a.weight"].as_tensor().copy().unwrap();
        let grads = loss(&vars).backward().unwrap();
        opt.step(&vars, &grads, 0.01, |_| true).unwrap();
        let a: Vec<Vec<f32>> = vars.0["a.weight"].as_tensor().to_vec2().unwrap();
        vars.0["a.weight"].set(&before).unwrap();
        again.step(&vars, &grads, 0.01, |_| true).unwrap();
        let b: Vec<Vec<f32>> = vars.0["a.weight"].as_tensor().to_vec2().unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn checkpoints_keep_tensors_and_state_together() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.safetensors");
        let mut t = BTreeMap::new();
        t.insert("x".to_owned(), Tensor::new(&[1f32, 2.0], &Device::Cpu).unwrap());
        save_with_state(&path, &t, "{\"step\":3}").unwrap();
        let (back, state) = load_with_state(&path).unwrap();
        assert_eq!(state, "{\"step\":3}");
        assert_eq!(back["x"].to_vec1::<f32>().unwrap(), vec![1.0, 2.0]);
        std::fs::write(&path, b"garbage").unwrap();
        assert!(load_with_state(&path).unwrap_err().to_string().contains("not a clipcanvas checkpoint"));
    }

    #[test]
    fn the_schedule_warms_up_then_falls_to_a_tenth() {
        assert!((cosine_lr(0, 100, 1.0, 10) - 0.1).abs() < 1e-12);
        assert!((cosine_lr(9, 100, 1.0, 10) - 1.0).abs() < 1e-12);
        assert!((cosine_lr(10, 100, 1.0, 10) - 1.0).abs() < 1e-12);
        assert!((cosine_lr(100, 100, 1.0, 10) - 0.1).abs() < 1e-12);
    }
}
