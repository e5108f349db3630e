//! Does an image show what its prompt says? The meaning test of the shapes world,
//! judged from pixels alone ([`super::stats`] and [`super::silhouette`], never the
//! CLIP): fifteen prompts that name every colour as subject and as background, every
//! shape, every place and both sizes, in the world's several phrasings.

use std::path::Path;
use std::sync::Arc;

use image::RgbImage;

use candle_core::Device;

use super::scene::{colour_index, Position, Scene, Shape, Size};
use super::silhouette::shape_of;
use super::stats::analyse;
use crate::engine::image::{rgb_to_tensor, tensor_to_rgb};
use crate::engine::loaded::Models;
use crate::engine::rng::Rng;
use crate::engine::session::Session;
use crate::engine::EngineError;
use crate::models::vqgan::Vqgan;
use crate::settings::{OneStepSettings, RunSettings};

/// A prompt and what it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Case {
    pub prompt: &'static str,
    pub colour: usize,
    pub background: usize,
    pub shape: Shape,
    /// `None` where the prompt names no place.
    pub position: Option<Position>,
    pub size: Option<Size>,
}

fn case(
    prompt: &'static str,
    colour: &str,
    background: &str,
    shape: Shape,
    position: Option<Position>,
    size: Option<Size>,
) -> Case {
    Case {
        prompt,
        colour: colour_index(colour).unwrap_or(0),
        background: colour_index(background).unwrap_or(0),
        shape,
        position,
        size,
    }
}

/// The meaning test's prompts.
pub fn cases() -> Vec<Case> {
    use Position::{Bottom, Centre, Left, Right, Top};
    use Shape::{Circle, Cross, Ring, Square, Star, Triangle};
    use Size::{Big, Small};
    vec![
        case("a big red circle on a blue background", "red", "blue", Circle, None, Some(Big)),
        case(
            "a small yellow square on the left on a green background",
            "yellow",
            "green",
            Square,
            Some(Left),
            Some(Small),
        ),
        case("a purple background with a big white star at the top", "white", "purple", Star, Some(Top), Some(Big)),
        case("big orange triangle, right, black background", "orange", "black", Triangle, Some(Right), Some(Big)),
        case("a tiny cyan ring in the centre on a pink background", "cyan", "pink", Ring, Some(Centre), Some(Small)),
        case(
            "a large black cross at the bottom on a yellow background",
            "black",
            "yellow",
            Cross,
            Some(Bottom),
            Some(Big),
        ),
        case("a pink circle on the right on a white background", "pink", "white", Circle, Some(Right), None),
        case("a green star on the left on an orange background", "green", "orange", Star, Some(Left), None),
        case("a blue square at the top on a red background", "blue", "red", Square, Some(Top), None),
        case("white triangle, centre, cyan background", "white", "cyan", Triangle, Some(Centre), None),
        case(
            "a picture of a small purple cross on the right on a black background",
            "purple",
            "black",
            Cross,
            Some(Right),
            Some(Small),
        ),
        case("a red background with a big green ring at the bottom", "green", "red", Ring, Some(Bottom), Some(Big)),
        case("a small blue star on a yellow background", "blue", "yellow", Star, None, Some(Small)),
        case("an orange circle at the bottom on a purple background", "orange", "purple", Circle, Some(Bottom), None),
        case("a large white square on the left on a pink background", "white", "pink", Square, Some(Left), Some(Big)),
    ]
}

/// What was right about one image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub background: bool,
    pub colour: bool,
    /// `None` where the prompt names no place.
    pub position: Option<bool>,
    pub shape: bool,
}

/// Judges `img` against `case`: the commonest colour class is the background, the
/// largest region of another class the subject (its colour, place and shape).
pub fn judge(img: &RgbImage, case: &Case) -> Verdict {
    let a = analyse(img);
    let blob = a.blob.as_ref();
    let shape = blob.and_then(|b| shape_of(img, b.colour)).map(|(s, _)| s);
    Verdict {
        background: a.background == case.background,
        colour: blob.is_some_and(|b| b.colour == case.colour),
        position: case.position.map(|p| blob.is_some_and(|b| b.position == p)),
        shape: shape == Some(case.shape),
    }
}

/// Counts of right answers over many verdicts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub runs: usize,
    pub background: usize,
    pub colour: usize,
    pub position: usize,
    /// Runs whose prompt names a place.
    pub placed: usize,
    pub shape: usize,
}

impl Tally {
    pub fn add(&mut self, v: Verdict) {
        self.runs += 1;
        self.background += usize::from(v.background);
        self.colour += usize::from(v.colour);
        self.shape += usize::from(v.shape);
        if let Some(p) = v.position {
            self.placed += 1;
            self.position += usize::from(p);
        }
    }

    /// Shares right: background, colour, place, shape.
    pub fn shares(&self) -> [f64; 4] {
        let share = |n: usize, of: usize| if of == 0 { f64::NAN } else { n as f64 / of as f64 };
        [
            share(self.background, self.runs),
            share(self.colour, self.runs),
            share(self.position, self.placed),
            share(self.shape, self.runs),
        ]
    }

    /// One line: "background 44/45 · colour 43/45 · place 33/36 · shape 41/45".
    pub fn line(&self) -> String {
        format!(
            "background {}/{} · colour {}/{} · place {}/{} · shape {}/{}",
            self.background, self.runs, self.colour, self.runs, self.position, self.placed, self.shape, self.runs
        )
    }
}

/// The meaning test of one-step drafts, and of their refinement.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DraftEval {
    pub drafts: Tally,
    /// After the refinement's iterations, where asked for.
    pub refined: Option<Tally>,
}

/// How the meaning test of drafts runs.
#[derive(Debug, Clone)]
pub struct DraftEvalOptions {
    pub seeds: Vec<u64>,
    pub one_step: OneStepSettings,
    /// Refine each draft this many iterations (the shapes preset) with this init weight.
    pub refine: Option<(usize, f64)>,
    /// Only the first this many prompts.
    pub prompts: usize,
}

/// Drafts every prompt of [`cases`] with every seed on the shapes world's `models`
/// (which must hold its one-step model), judges each draft (and its refinement), and
/// reports a line per run through `line`; with `keep`, writes the images there as
/// `<case>-<seed>-draft.png` and `-refined.png`.
pub fn evaluate_drafts(
    models: &Arc<Models>,
    opts: &DraftEvalOptions,
    keep: Option<&Path>,
    line: &mut dyn FnMut(&str),
) -> Result<DraftEval, EngineError> {
    let mut eval = DraftEval { refined: opts.refine.map(|_| Tally::default()), ..DraftEval::default() };
    for (i, case) in cases().iter().enumerate().take(opts.prompts) {
        for &seed in &opts.seeds {
            let (iterations, init_weight) = opts.refine.unwrap_or((0, 0.0));
            let settings = RunSettings {
                prompts: vec![case.prompt.to_owned()],
                seed,
                iterations,
                init_weight,
                one_step: Some(opts.one_step.clone()),
                coarse: Vec::new(),
                ..RunSettings::shapes_world()
            };
            let mut session = Session::new(Arc::clone(models), settings)?;
            let draft = session.render_rgb()?;
            let v = judge(&draft, case);
            eval.drafts.add(v);
            let mut text = format!("{} (seed {seed}): draft {}", case.prompt, verdict_words(v));
            if let Some(dir) = keep {
                save(&draft, &dir.join(format!("{i}-{seed}-draft.png")))?;
            }
            if let Some(refined) = &mut eval.refined {
                for _ in 0..iterations {
                    session.step()?;
                }
                let img = session.render_rgb()?;
                let v = judge(&img, case);
                refined.add(v);
                text.push_str(&format!("; refined {}", verdict_words(v)));
                if let Some(dir) = keep {
                    save(&img, &dir.join(format!("{i}-{seed}-refined.png")))?;
                }
            }
            line(&text);
        }
    }
    Ok(eval)
}

/// The test's ceiling for any generator of `vqgan`'s codes: every case drawn as a scene
/// (what its prompt leaves out drawn at random with each seed), encoded and decoded by
/// `vqgan` at `side`×`side`, and judged as a draft is. A shape the VQGAN cannot
/// reconstruct cannot be drafted either.
pub fn evaluate_reconstructions(vqgan: &Vqgan, seeds: &[u64], side: usize) -> Result<Tally, EngineError> {
    let mut tally = Tally::default();
    for &seed in seeds {
        let mut rng = Rng::new(seed);
        for case in cases() {
            let scene = Scene {
                shape: case.shape,
                colour: case.colour,
                background: case.background,
                position: case.position.unwrap_or(Position::ALL[rng.below(Position::ALL.len())]),
                size: case.size.unwrap_or(Size::ALL[rng.below(Size::ALL.len())]),
                count: 1,
            };
            let x = rgb_to_tensor(&scene.render(side, &mut rng), &Device::Cpu)?;
            let y = vqgan.decode(&vqgan.encode(&((x * 2.0)? - 1.0)?)?)?;
            tally.add(judge(&tensor_to_rgb(&((y + 1.0)? / 2.0)?)?, &case));
        }
    }
    Ok(tally)
}

fn save(img: &RgbImage, path: &Path) -> Result<(), EngineError> {
    crate::export::write_png(path, img, None).map_err(|e| EngineError::Input(e.to_string()))
}

fn verdict_words(v: Verdict) -> String {
    let mark = |b: bool| if b { "right" } else { "WRONG" };
    let place = v.position.map_or_else(|| "-".to_owned(), |p| mark(p).to_owned());
    format!("background {}, colour {}, place {place}, shape {}", mark(v.background), mark(v.colour), mark(v.shape))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::scene::COLOURS;

    #[test]
    fn the_cases_cover_every_colour_shape_place_and_size() {
        let cs = cases();
        for c in 0..COLOURS.len() {
            assert!(cs.iter().any(|k| k.colour == c), "colour {c} never a subject");
            assert!(cs.iter().any(|k| k.background == c), "colour {c} never a background");
        }
        for s in Shape::ALL {
            assert!(cs.iter().any(|k| k.shape == s), "{s:?}");
        }
        for p in Position::ALL {
            assert!(cs.iter().any(|k| k.position == Some(p)), "{p:?}");
        }
        for s in Size::ALL {
            assert!(cs.iter().any(|k| k.size == Some(s)), "{s:?}");
        }
        // Every prompt names its colours and shape in words.
        for k in &cs {
            assert!(
                k.prompt.contains(COLOURS[k.colour].name) && k.prompt.contains(COLOURS[k.background].name),
                "{}",
                k.prompt
            );
            assert!(k.prompt.contains(k.shape.name()), "{}", k.prompt);
        }
    }

    #[test]
    fn drawn_scenes_pass_and_wrong_ones_fail() {
        let mut rng = Rng::new(4);
        for k in cases() {
            let scene = Scene {
                shape: k.shape,
                colour: k.colour,
                background: k.background,
                position: k.position.unwrap_or(Position::Centre),
                size: k.size.unwrap_or(Size::Big),
                count: 1,
            };
            let v = judge(&scene.render(128, &mut rng), &k);
            assert!(v.background && v.colour && v.position != Some(false) && v.shape, "{}: {v:?}", k.prompt);
            let swapped = Scene { colour: k.background, background: k.colour, ..scene };
            let v = judge(&swapped.render(128, &mut rng), &k);
            assert!(!v.background && !v.colour, "{}: {v:?}", k.prompt);
        }
    }
}
