//! `AnimationSettings`: what an animation adds to a run's settings — the frame count, the
//! camera's keyframed motion, the per-frame schedules (iterations, init weight, learning
//! rate, prompt weights), prompt changes at frames, deflicker options and video
//! restyling. Plain data that rides in `RunSettings::animation`, so settings files, PNGs
//! and the studio keep it like every other setting. [`AnimationSettings::plan`] evaluates
//! it into one [`FramePlan`] per frame.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::prompt::{parse_prompt, split_prompts, PromptSpec};
use super::schedule::{Easing, Schedule};

/// What the warp samples beyond the image's edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Border {
    /// The edge pixels repeat (OpenCV's BORDER_REPLICATE).
    #[default]
    Replicate,
    /// The image tiles (OpenCV's BORDER_WRAP).
    Wrap,
}

impl Border {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "replicate" => Some(Self::Replicate),
            "wrap" => Some(Self::Wrap),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Replicate => "replicate",
            Self::Wrap => "wrap",
        }
    }
}

/// The longest animation accepted, in frames.
pub const MAX_FRAMES: usize = 100_000;
/// The most iterations one frame may take.
pub const MAX_ITERATIONS_PER_FRAME: usize = 100_000;

/// An animation: each frame warps the previous one, encodes it to the latent and
/// optimises it for the frame's iterations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AnimationSettings {
    pub frames: usize,
    /// Frames per second of the GIF or video.
    pub fps: f64,
    /// How values between numeric keyframes are found.
    pub interpolation: Easing,
    /// Scale about the centre per frame (above 1 zooms in).
    pub zoom: Schedule,
    /// Rotation per frame, degrees, counter-clockwise.
    pub angle: Schedule,
    /// Shift per frame, pixels (right is positive).
    pub translation_x: Schedule,
    /// Shift per frame, pixels (down is positive).
    pub translation_y: Schedule,
    pub border: Border,
    /// Iterations each frame optimises for.
    pub iterations_per_frame: Schedule,
    /// How strongly each frame holds on to its start (the warped previous frame, or the
    /// source frame when restyling): the init loss weight per frame.
    pub init_weight: Schedule,
    /// The learning rate per frame.
    pub lr: Schedule,
    /// The weight of each prompt per frame: the n-th schedule replaces the n-th prompt's
    /// weight in whichever prompt set is active. Missing ones keep the prompt's own.
    pub prompt_weights: Vec<Schedule>,
    /// Prompt sets that take over at frames (`{0: ["a forest"], 60: ["a city"]}`); empty:
    /// the run's prompts throughout.
    pub prompt_frames: BTreeMap<usize, Vec<String>>,
    /// Deflicker: match each frame's start to the first frame's colour statistics (mean
    /// and spread of L, a and b).
    pub color_coherence: bool,
    /// Deflicker: each frame's latent is an exponential moving average over frames,
    /// `z ← s·z_prev + (1 − s)·z`; 0 is off.
    pub latent_smoothing: f64,
    /// Restyle a sequence: each frame of this folder (PNG/JPEG, in name order) becomes
    /// its output frame's start.
    #[serde(serialize_with = "super::lossy_path")]
    pub input_frames: Option<PathBuf>,
    /// Restyling: how much of the previous output, warped, is blended into the source
    /// frame for coherence (0: the source alone).
    pub blend_previous: Schedule,
}

impl Default for AnimationSettings {
    fn default() -> Self {
        Self {
            frames: 60,
            fps: 12.0,
            interpolation: Easing::Linear,
            zoom: Schedule::constant(1.0),
            angle: Schedule::constant(0.0),
            translation_x: Schedule::constant(0.0),
            translation_y: Schedule::constant(0.0),
            border: Border::Replicate,
            iterations_per_frame: Schedule::constant(10.0),
            init_weight: Schedule::constant(0.0),
            lr: Schedule::constant(0.1),
            prompt_weights: Vec::new(),
            prompt_frames: BTreeMap::new(),
            color_coherence: false,
            latent_smoothing: 0.0,
            input_frames: None,
            blend_previous: Schedule::constant(0.0),
        }
    }
}

/// The camera's move from one frame to the next.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Motion {
    pub zoom: f64,
    pub angle: f64,
    pub translation_x: f64,
    pub translation_y: f64,
}

impl Motion {
    pub const NONE: Motion = Motion { zoom: 1.0, angle: 0.0, translation_x: 0.0, translation_y: 0.0 };

    pub fn is_identity(&self) -> bool {
        *self == Self::NONE
    }
}

/// Everything one frame needs, evaluated from the schedules.
#[derive(Debug, Clone, PartialEq)]
pub struct FramePlan {
    pub frame: usize,
    pub motion: Motion,
    pub iterations: usize,
    pub init_weight: f64,
    pub lr: f64,
    /// The frame's prompts, `text:weight[:stop]`, with the scheduled weights.
    pub prompts: Vec<String>,
    pub blend_previous: f64,
}

impl AnimationSettings {
    /// Checks what can be checked without evaluating: counts and ranges.
    pub fn validate(&self) -> Result<(), String> {
        if self.frames == 0 || self.frames > MAX_FRAMES {
            return Err(format!("frames {} is out of range (1 to {MAX_FRAMES})", self.frames));
        }
        if !(self.fps.is_finite() && self.fps > 0.0 && self.fps <= 240.0) {
            return Err(format!("fps must be above 0 and at most 240, got {}", self.fps));
        }
        if !(self.latent_smoothing.is_finite() && (0.0..1.0).contains(&self.latent_smoothing)) {
            return Err(format!("latent smoothing must be in [0, 1), got {}", self.latent_smoothing));
        }
        for prompts in self.prompt_frames.values() {
            for p in prompts {
                parse_prompt(p)?;
            }
        }
        Ok(())
    }

    /// The plan of every frame, from the schedules, the run's own prompts and its
    /// iterations (frame 0's: it starts from noise, a draft or the init image, as the
    /// image `generate` makes; the schedule's iterations are the later frames'). Errors
    /// name the schedule, the frame and where in the schedule the problem is.
    pub fn plan(&self, run_prompts: &[String], first_iterations: usize) -> Result<Vec<FramePlan>, String> {
        self.validate()?;
        let n = self.frames;
        let eval = |name: &str, s: &Schedule| s.values(n, self.interpolation).map_err(|e| format!("{name}: {e}"));
        let zoom = eval("zoom", &self.zoom)?;
        let angle = eval("angle", &self.angle)?;
        let tx = eval("translation_x", &self.translation_x)?;
        let ty = eval("translation_y", &self.translation_y)?;
        let iters = eval("iterations_per_frame", &self.iterations_per_frame)?;
        let init_weight = eval("init_weight", &self.init_weight)?;
        let lr = eval("lr", &self.lr)?;
        let blend = eval("blend_previous", &self.blend_previous)?;
        let weights = self
            .prompt_weights
            .iter()
            .enumerate()
            .map(|(i, s)| eval(&format!("prompt weight {}", i + 1), s))
            .collect::<Result<Vec<_>, _>>()?;
        let mut plans = Vec::with_capacity(n);
        for f in 0..n {
            if zoom[f] <= 0.0 {
                return Err(format!("zoom: the value at frame {f} is {}; a zoom must be above 0", zoom[f]));
            }
            if lr[f] <= 0.0 {
                return Err(format!("lr: the value at frame {f} is {}; a learning rate must be above 0", lr[f]));
            }
            if !(0.0..=1.0).contains(&blend[f]) {
                return Err(format!("blend_previous: the value at frame {f} is {}; it must be in [0, 1]", blend[f]));
            }
            let it = iters[f].round();
            #[expect(clippy::cast_precision_loss, reason = "a small constant")]
            if !(0.0..=MAX_ITERATIONS_PER_FRAME as f64).contains(&it) {
                return Err(format!(
                    "iterations_per_frame: the value at frame {f} is {}; it must be 0 to {MAX_ITERATIONS_PER_FRAME}",
                    iters[f]
                ));
            }
            #[expect(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "checked just above")]
            let iterations = if f == 0 { first_iterations } else { it as usize };
            let active = self.prompt_frames.range(..=f).next_back().map_or(run_prompts, |(_, p)| p.as_slice());
            let prompts = active
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    let spec = parse_prompt(p)?;
                    Ok(match weights.get(i) {
                        Some(w) => format_prompt(&PromptSpec { weight: w[f], ..spec }),
                        None => p.clone(),
                    })
                })
                .collect::<Result<Vec<_>, String>>()?;
            plans.push(FramePlan {
                frame: f,
                motion: Motion { zoom: zoom[f], angle: angle[f], translation_x: tx[f], translation_y: ty[f] },
                iterations,
                init_weight: init_weight[f],
                lr: lr[f],
                prompts,
                blend_previous: blend[f],
            });
        }
        Ok(plans)
    }
}

/// A prompt back as `text:weight[:stop]`, which [`parse_prompt`] reads as the same spec.
pub fn format_prompt(spec: &PromptSpec) -> String {
    if spec.stop == f64::NEG_INFINITY {
        format!("{}:{}", spec.text, spec.weight)
    } else {
        format!("{}:{}:{}", spec.text, spec.weight, spec.stop)
    }
}

/// Story stages as prompt changes at frames: stage k takes over at frame `k·every`
/// (default: the frames shared evenly among the stages).
pub fn story_frames(stages: Vec<Vec<String>>, frames: usize, every: Option<usize>) -> BTreeMap<usize, Vec<String>> {
    let every = every.unwrap_or_else(|| frames.div_ceil(stages.len().max(1))).max(1);
    stages.into_iter().enumerate().map(|(k, p)| (k * every, p)).collect()
}

/// Prompt sets at frames from `{0: "a forest", 60: "a city | a river"}` (a YAML/JSON
/// mapping of frame to prompts joined with `|`).
pub fn parse_prompt_frames(text: &str) -> Result<BTreeMap<usize, Vec<String>>, String> {
    let shape = "the prompt schedule must be a mapping of frame to prompts, like {0: \"a forest\", 60: \"a city\"}";
    // Keys as strings: YAML reads `0:` as a number and JSON writes `"0":`.
    let map: BTreeMap<String, String> = serde_norway::from_str(text).map_err(|e| format!("{shape} ({e})"))?;
    let mut out = BTreeMap::new();
    for (key, prompts) in map {
        let frame: usize = key.trim().parse().map_err(|_| format!("{shape}; {key:?} is not a frame number"))?;
        let list = split_prompts(&prompts);
        if list.is_empty() {
            return Err(format!("the prompt schedule's frame {frame} has no prompt"));
        }
        for p in &list {
            parse_prompt(p).map_err(|e| format!("the prompt schedule's frame {frame}: {e}"))?;
        }
        out.insert(frame, list);
    }
    if out.is_empty() {
        return Err("the prompt schedule is empty".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_follow_the_schedules() {
        let a = AnimationSettings {
            frames: 4,
            zoom: Schedule::parse("0:(1.0), 3:(1.3)").unwrap(),
            iterations_per_frame: Schedule::parse("0:(5), 2:(2.6)").unwrap(),
            prompt_weights: vec![Schedule::parse("0:(1), 3:(0)").unwrap()],
            prompt_frames: BTreeMap::from([(2, vec!["a city:2".to_owned(), "fog:-1:0.5".to_owned()])]),
            ..AnimationSettings::default()
        };
        let plans = a.plan(&["a forest".to_owned()], 20).unwrap();
        let zooms: Vec<f64> = plans.iter().map(|p| p.motion.zoom).collect();
        assert!(zooms.iter().zip([1.0, 1.1, 1.2, 1.3]).all(|(a, b)| (a - b).abs() < 1e-12), "{zooms:?}");
        let iters: Vec<usize> = plans.iter().map(|p| p.iterations).collect();
        assert_eq!(iters, vec![20, 4, 3, 3]);
        let prompts: Vec<Vec<String>> = plans.iter().map(|p| p.prompts.clone()).collect();
        // The first prompt's weight follows the schedule; the second keeps its own and its stop.
        let w1 = 1.0 - 1.0 / 3.0;
        let w2 = 1.0 - 2.0 / 3.0;
        assert_eq!(
            prompts,
            vec![
                vec!["a forest:1".to_owned()],
                vec![format!("a forest:{w1}")],
                vec![format!("a city:{w2}"), "fog:-1:0.5".to_owned()],
                vec!["a city:0".to_owned(), "fog:-1:0.5".to_owned()],
            ]
        );
        assert_eq!(parse_prompt(&format!("a forest:{w1}")).unwrap().weight, w1);
    }

    #[test]
    fn bad_values_name_the_schedule_and_frame() {
        let mut a = AnimationSettings { frames: 3, ..AnimationSettings::default() };
        a.zoom = Schedule::parse("0:(1), 2:(0)").unwrap();
        assert_eq!(a.plan(&[], 1).unwrap_err(), "zoom: the value at frame 2 is 0; a zoom must be above 0");
        a.zoom = Schedule::parse("0:(1/(t-1))").unwrap();
        assert!(a.plan(&[], 1).unwrap_err().starts_with("zoom: at character 4 (\"1/(t-1)\") at frame 1"));
        a.zoom = Schedule::constant(1.0);
        a.iterations_per_frame = Schedule::parse("0:(-1)").unwrap();
        assert!(a.plan(&[], 1).unwrap_err().starts_with("iterations_per_frame: the value at frame 0 is -1"));
        a.iterations_per_frame = Schedule::constant(1.0);
        a.frames = 0;
        assert!(a.plan(&[], 1).unwrap_err().starts_with("frames 0 is out of range"));
    }

    #[test]
    fn prompt_schedules_read_yaml_and_json() {
        let m = parse_prompt_frames("{0: \"a forest\", 60: \"a city | a river:0.5\"}").unwrap();
        assert_eq!(m[&0], vec!["a forest".to_owned()]);
        assert_eq!(m[&60], vec!["a city".to_owned(), "a river:0.5".to_owned()]);
        assert_eq!(parse_prompt_frames("{\"0\": \"x\"}").unwrap()[&0], vec!["x".to_owned()]);
        assert!(parse_prompt_frames("{a: \"x\"}").unwrap_err().starts_with("the prompt schedule must be a mapping"));
        assert!(parse_prompt_frames("{0: \"\"}").unwrap_err().contains("frame 0 has no prompt"));
        assert!(parse_prompt_frames("{}").unwrap_err().contains("empty"));
    }

    #[test]
    fn settings_round_trip_through_json() {
        let a = AnimationSettings {
            zoom: Schedule::parse("0:(1.0+0.002*sin(t/5))").unwrap(),
            prompt_frames: BTreeMap::from([(5, vec!["x".to_owned()])]),
            border: Border::Wrap,
            ..AnimationSettings::default()
        };
        let json = serde_json::to_string(&a).unwrap();
        assert!(json.contains("\"zoom\":\"0:(1.0+0.002*sin(t/5))\""), "{json}");
        assert_eq!(serde_json::from_str::<AnimationSettings>(&json).unwrap(), a);
    }
}
