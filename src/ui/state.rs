//! What the studio remembers between sessions (saved by eframe's persistence) and turns
//! into [`RunSettings`]: prompt rows, image panels, story stages and run settings.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::settings::animation::AnimationSettings;
use crate::settings::prompt::parse_prompt;
use crate::settings::{Mask, OneStepSettings, Region, RunSettings};

/// One row of the prompt editor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromptRow {
    pub text: String,
    pub weight: f32,
    /// `None` is no stop.
    pub stop: Option<f32>,
    pub enabled: bool,
    /// Which row this is while rows are added, removed and reordered (the loss plot's
    /// series and colour follow it); 0 until [`StudioState::number_rows`] gives it one.
    #[serde(default)]
    pub id: u32,
    /// A region prompt's mask: the row is scored only inside it (or outside, see
    /// [`RowRegion::outside`]); `None` scores the whole canvas.
    #[serde(default)]
    pub region: Option<RowRegion>,
}

/// The mask a prompt row is painted onto.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RowRegion {
    pub mask: Mask,
    /// Scored on what the mask leaves out.
    #[serde(default)]
    pub outside: bool,
}

impl PromptRow {
    pub fn new(text: &str) -> Self {
        Self { text: text.to_owned(), weight: 1.0, stop: None, enabled: true, id: 0, region: None }
    }

    /// The label the engine reports this row's loss under.
    pub fn loss_label(&self) -> String {
        let text = parse_prompt(&self.to_spec()).map_or_else(|_| self.text.trim().to_owned(), |p| p.text);
        match &self.region {
            Some(r) if r.outside => format!("outside: {text}"),
            Some(_) => format!("region: {text}"),
            None => text,
        }
    }

    /// The `text:weight[:stop]` form the engine parses.
    pub fn to_spec(&self) -> String {
        match self.stop {
            Some(stop) => format!("{}:{}:{}", self.text.trim(), self.weight, stop),
            None => format!("{}:{}", self.text.trim(), self.weight),
        }
    }
}

/// One target image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageRow {
    pub path: PathBuf,
    pub weight: f32,
}

impl ImageRow {
    pub fn to_spec(&self) -> String {
        format!("{}:{}", self.path.display(), self.weight)
    }
}

/// The studio's editable state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StudioState {
    pub prompts: Vec<PromptRow>,
    /// Story mode: each stage is a `a | b:0.5` prompt line; empty is off.
    pub story: Vec<String>,
    pub targets: Vec<ImageRow>,
    pub settings: RunSettings,
    /// How Draft draws: the one-step model, candidates and sampling.
    pub draft: OneStepSettings,
    /// Start and Draft pick a new seed each time (on by default, as A1111's −1).
    pub new_seed: bool,
    /// Record every this many iterations of a run into its outputs folder, for
    /// animations of every step (0: off; the kept frames are exported then).
    pub record_every: usize,
    /// How exported animations look.
    pub look: crate::worker::files::Look,
    /// The Animation panel's frames, camera path and schedules (Render animation runs
    /// them; Start makes a single image).
    pub animation: AnimationSettings,
    /// Prompt rows' weights over an animation's frames, by row id; a row without one
    /// keeps its slider's weight.
    pub weight_schedules: std::collections::BTreeMap<u32, crate::settings::schedule::Schedule>,
}

impl Default for StudioState {
    fn default() -> Self {
        // A fresh studio starts in the built-in shapes world (no model paths), at the
        // size and settings its models were made for; real models are set in Settings.
        let settings = RunSettings::shapes_world();
        Self {
            prompts: vec![PromptRow::new("a big red circle on a blue background")],
            story: Vec::new(),
            targets: Vec::new(),
            settings,
            draft: OneStepSettings::default(),
            new_seed: true,
            record_every: 0,
            look: crate::worker::files::Look::default(),
            animation: AnimationSettings::default(),
            weight_schedules: std::collections::BTreeMap::new(),
        }
    }
}

impl StudioState {
    /// The enabled prompts as engine specs (rows with empty text are skipped).
    pub fn prompt_specs(&self) -> Vec<String> {
        self.sent_rows().map(PromptRow::to_spec).collect()
    }

    /// The rows a run uses as text prompts, in order: enabled, with text, and no region.
    pub fn sent_rows(&self) -> impl Iterator<Item = &PromptRow> {
        self.prompts.iter().filter(|r| r.enabled && !r.text.trim().is_empty() && r.region.is_none())
    }

    /// The rows a run uses as region prompts, in order.
    pub fn region_rows(&self) -> impl Iterator<Item = &PromptRow> {
        self.prompts.iter().filter(|r| r.enabled && !r.text.trim().is_empty() && r.region.is_some())
    }

    /// Every row a run uses, text and region prompts.
    pub fn used_rows(&self) -> impl Iterator<Item = &PromptRow> {
        self.prompts.iter().filter(|r| r.enabled && !r.text.trim().is_empty())
    }

    /// Gives every row without one (new, or read from an older save) an id no other row
    /// has.
    pub fn number_rows(&mut self) {
        let mut next = self.prompts.iter().map(|r| r.id).max().unwrap_or(0);
        let mut seen = std::collections::HashSet::new();
        for row in &mut self.prompts {
            if row.id == 0 || !seen.insert(row.id) {
                next += 1;
                row.id = next;
                seen.insert(next);
            }
        }
    }

    pub fn target_specs(&self) -> Vec<String> {
        self.targets.iter().map(ImageRow::to_spec).collect()
    }

    /// The settings of a run started now.
    pub fn run_settings(&self) -> Result<RunSettings, String> {
        let s = self.run_settings_unchecked();
        s.validate()?;
        Ok(s)
    }

    /// The settings of the animation rendered now: the run's, with the Animation panel's.
    /// Its prompts are the prompt rows (story stages are not used by an animation).
    /// Story stages take turns over the frames (each an equal share, in order).
    pub fn animation_settings(&self) -> Result<RunSettings, String> {
        let mut s = self.run_settings_unchecked();
        let mut anim = self.animation.clone();
        let stages = std::mem::take(&mut s.story);
        if stages.len() > 1 {
            anim.prompt_frames = crate::settings::animation::story_frames(stages, anim.frames, None);
        }
        anim.prompt_weights = self.prompt_weight_schedules().unwrap_or_default();
        s.animation = Some(anim);
        s.validate()?;
        if let Some(a) = &s.animation {
            a.plan(&s.prompts, s.iterations)?;
        }
        Ok(s)
    }

    /// The prompt rows' weight schedules in the order the rows are sent (a row without one
    /// holds its slider's weight), or `None` when no row has one.
    fn prompt_weight_schedules(&self) -> Option<Vec<crate::settings::schedule::Schedule>> {
        let rows: Vec<&PromptRow> = self.sent_rows().collect();
        rows.iter().any(|r| self.weight_schedules.contains_key(&r.id)).then(|| {
            rows.iter()
                .map(|r| {
                    self.weight_schedules
                        .get(&r.id)
                        .cloned()
                        .unwrap_or_else(|| crate::settings::schedule::Schedule::constant(f64::from(r.weight)))
                })
                .collect()
        })
    }

    /// The settings a settings file keeps: the run's and the Animation panel's.
    pub fn saved_settings(&self) -> RunSettings {
        let mut s = self.run_settings_unchecked();
        let mut anim = self.animation.clone();
        if let Some(weights) = self.prompt_weight_schedules() {
            anim.prompt_weights = weights;
        }
        s.animation = Some(anim);
        s
    }

    fn run_settings_unchecked(&self) -> RunSettings {
        let mut s = self.settings.clone();
        s.animation = None;
        s.prompts = self.prompt_specs();
        s.story = self
            .story
            .iter()
            .map(|line| crate::settings::prompt::split_prompts(line))
            .filter(|stage| !stage.is_empty())
            .collect();
        s.image_prompts = self.target_specs();
        s.regions = self
            .region_rows()
            .filter_map(|row| {
                let r = row.region.as_ref()?;
                Some(Region { prompt: row.to_spec(), outside: r.outside, mask: r.mask.clone() })
            })
            .collect();
        s
    }

    /// The settings of a draft made now: the run's, starting from a one-step draft
    /// (in place of any init image, and of coarse-to-fine search) with no iterations yet.
    pub fn draft_settings(&self) -> Result<RunSettings, String> {
        let mut s = self.run_settings_unchecked();
        s.one_step = Some(OneStepSettings { pick: 0, ..self.draft.clone() });
        s.init_image = None;
        // A draft has no random start to vary.
        s.variation = None;
        // The draft already holds the large regions coarse-to-fine search would settle.
        s.coarse.clear();
        s.iterations = 0;
        s.validate()?;
        Ok(s)
    }

    /// Restores the editable state from a run's settings (a settings file, a dropped PNG).
    /// "New seed each run" turns off, so that Start makes that run again.
    pub fn restore(&mut self, s: &RunSettings) {
        self.new_seed = false;
        self.prompts = s
            .prompts
            .iter()
            .filter_map(|p| parse_prompt(p).ok())
            .map(|p| {
                #[expect(clippy::cast_possible_truncation, reason = "weights are small")]
                PromptRow {
                    text: p.text,
                    weight: p.weight as f32,
                    stop: p.stop.is_finite().then_some(p.stop as f32),
                    enabled: true,
                    id: 0,
                    region: None,
                }
            })
            .collect();
        for r in &s.regions {
            let Ok(p) = parse_prompt(&r.prompt) else { continue };
            #[expect(clippy::cast_possible_truncation, reason = "weights are small")]
            self.prompts.push(PromptRow {
                text: p.text,
                weight: p.weight as f32,
                stop: p.stop.is_finite().then_some(p.stop as f32),
                enabled: true,
                id: 0,
                region: Some(RowRegion { mask: r.mask.clone(), outside: r.outside }),
            });
        }
        self.story = s.story.iter().map(|stage| stage.join(" | ")).collect();
        self.targets = s
            .image_prompts
            .iter()
            .filter_map(|p| parse_prompt(p).ok())
            .map(|p| {
                #[expect(clippy::cast_possible_truncation, reason = "weights are small")]
                ImageRow { path: PathBuf::from(p.text), weight: p.weight as f32 }
            })
            .collect();
        self.settings = s.clone();
        self.settings.animation = None;
        self.number_rows();
        self.weight_schedules.clear();
        if let Some(a) = &s.animation {
            self.animation = a.clone();
            for (row, schedule) in self.prompts.iter().zip(&a.prompt_weights) {
                if !schedule.is_constant() {
                    self.weight_schedules.insert(row.id, schedule.clone());
                }
            }
            self.animation.prompt_weights.clear();
        }
        if let Some(one) = &s.one_step {
            self.draft = one.clone();
        }
        self.number_rows();
    }
}

/// A rough estimate of peak memory for a run, in bytes: decoder activations (with
/// gradients) at the canvas size plus CLIP activations per cutout, for the f16 VQGAN
/// and ViT-B/32 class of models, or with `demo` for the built-in shapes world. Shown
/// next to size and cutn as a guide.
pub fn memory_estimate(width: usize, height: usize, cutn: usize, demo: bool) -> u64 {
    let pixels = (width * height) as u64;
    if demo {
        // Peak resident memory of `generate` with the shapes world, measured (release,
        // CPU): 0.16 GB at 128² with 16 cutouts, 0.37 GB at 256² with 32, 1.5 GB at 512²
        // with 16 — about 5.5 kB a pixel (the small decoder's activations and their
        // gradients), 0.2 MB a 64² cutout, and the process.
        return 60_000_000 + pixels * 5_500 + cutn as u64 * 200_000;
    }
    // ~ 128 channels × ~40 saved activations × 4 bytes per pixel, plus the weights.
    let decoder = pixels * 128 * 40 * 4 / 2;
    // ViT-B/32 at 224²: 50 tokens × 768 × ~12 layers × ~24 saved tensors × 4 bytes.
    let clip = cutn as u64 * 50 * 768 * 12 * 24 * 4 + cutn as u64 * 3 * 224 * 224 * 4 * 6;
    let weights = 1_000_000_000;
    decoder + clip + weights
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_round_trip_through_settings() {
        let st = StudioState {
            prompts: vec![
                PromptRow { weight: -0.5, stop: Some(0.8), id: 1, ..PromptRow::new("a cat") },
                PromptRow { enabled: false, id: 2, ..PromptRow::new("off") },
                PromptRow {
                    id: 3,
                    region: Some(RowRegion { mask: Mask::from_fn(4, 4, |x, _| x < 2), outside: true }),
                    ..PromptRow::new("a moon")
                },
            ],
            targets: vec![ImageRow { path: PathBuf::from("C:\\art\\x.png"), weight: 0.5 }],
            ..StudioState::default()
        };
        let s = st.run_settings().unwrap_or_default();
        assert_eq!(s.prompts, vec!["a cat:-0.5:0.8".to_owned()]);
        assert_eq!(s.image_prompts, vec!["C:\\art\\x.png:0.5".to_owned()]);
        let mut back = StudioState::default();
        back.restore(&s);
        assert_eq!(back.prompts[0], st.prompts[0]);
        assert_eq!(s.regions.len(), 1);
        assert_eq!((s.regions[0].prompt.as_str(), s.regions[0].outside), ("a moon:1", true));
        // The region row comes back after the text prompts, with its mask.
        assert_eq!(back.prompts.len(), 2);
        assert_eq!(PromptRow { id: 3, ..back.prompts[1].clone() }, st.prompts[2]);
        assert_eq!(back.prompts[1].loss_label(), "outside: a moon");
        assert_eq!(back.targets, st.targets);
    }

    #[test]
    fn an_animation_takes_story_stages_as_prompt_changes_and_row_weight_schedules() {
        use crate::settings::schedule::Schedule;
        let mut st = StudioState {
            prompts: vec![PromptRow::new("a forest"), PromptRow { weight: 0.5, ..PromptRow::new("fog") }],
            ..StudioState::default()
        };
        st.number_rows();
        st.animation.frames = 10;
        let second = st.prompts[1].id;
        st.weight_schedules.insert(second, Schedule::parse("0:(0), 9:(1)").unwrap());
        let s = st.animation_settings().unwrap();
        let a = s.animation.as_ref().unwrap();
        // The first row keeps its slider's weight; the second follows its schedule.
        let weights: Vec<&str> = a.prompt_weights.iter().map(Schedule::text).collect();
        assert_eq!(weights, ["1", "0:(0), 9:(1)"]);
        assert!(a.prompt_frames.is_empty());
        // Story stages take turns over the frames, in equal shares.
        st.story = vec!["a seed".into(), "a sprout | rain:0.5".into(), "a tree".into()];
        let a = st.animation_settings().unwrap().animation.unwrap();
        let frames: Vec<usize> = a.prompt_frames.keys().copied().collect();
        assert_eq!(frames, [0, 4, 8]);
        assert_eq!(a.prompt_frames[&4], ["a sprout".to_owned(), "rain:0.5".to_owned()]);
        // Restoring the settings brings the schedule back to its row; Start stays one image.
        let mut back = StudioState::default();
        back.restore(&st.saved_settings());
        assert_eq!(back.weight_schedules.values().map(Schedule::text).collect::<Vec<_>>(), ["0:(0), 9:(1)"]);
        assert_eq!(back.weight_schedules.keys().copied().collect::<Vec<_>>(), [back.prompts[1].id]);
        assert!(back.run_settings().unwrap().animation.is_none());
    }

    #[test]
    fn every_row_gets_an_id_of_its_own() {
        let mut st = StudioState {
            prompts: vec![PromptRow::new("a"), PromptRow::new("b"), PromptRow { id: 7, ..PromptRow::new("c") }],
            ..StudioState::default()
        };
        st.prompts.push(st.prompts[2].clone());
        st.number_rows();
        let ids: Vec<u32> = st.prompts.iter().map(|r| r.id).collect();
        assert_eq!(ids[2], 7, "an id a row has is kept");
        let unique: std::collections::HashSet<u32> = ids.iter().copied().collect();
        assert_eq!(unique.len(), 4, "{ids:?}");
        assert!(!ids.contains(&0));
    }

    #[test]
    fn memory_grows_with_size_and_cutn() {
        for demo in [false, true] {
            assert!(memory_estimate(512, 512, 32, demo) > memory_estimate(256, 256, 32, demo));
            assert!(memory_estimate(256, 256, 64, demo) > memory_estimate(256, 256, 32, demo));
        }
        // The shapes world's runs are small: its preset (128², 16 cutouts) took 0.16 GB.
        let preset = memory_estimate(128, 128, 16, true);
        assert!((100_000_000..300_000_000).contains(&preset), "{preset}");
        assert!(memory_estimate(128, 128, 16, false) > 5 * preset);
    }
}
