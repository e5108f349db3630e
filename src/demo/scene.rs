//! The shapes world's procedural data: scenes of one or two flat-coloured shapes on a
//! flat background, rendered with anti-aliased edges, and captions generated from the
//! scene's attributes in varied phrasings.
//!
//! Everything is drawn from the seeded [`Rng`], so a seed always gives the same data.

use image::RgbImage;

use crate::engine::rng::Rng;

/// A named colour of the world, with its sRGB value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Colour {
    pub name: &'static str,
    pub rgb: [u8; 3],
}

/// The world's colours. Shapes and backgrounds use the same palette.
pub const COLOURS: [Colour; 10] = [
    Colour { name: "red", rgb: [220, 30, 30] },
    Colour { name: "orange", rgb: [245, 140, 20] },
    Colour { name: "yellow", rgb: [245, 225, 40] },
    Colour { name: "green", rgb: [40, 170, 60] },
    Colour { name: "cyan", rgb: [40, 210, 220] },
    Colour { name: "blue", rgb: [35, 70, 210] },
    Colour { name: "purple", rgb: [130, 50, 180] },
    Colour { name: "pink", rgb: [245, 130, 190] },
    Colour { name: "white", rgb: [240, 240, 240] },
    Colour { name: "black", rgb: [20, 20, 20] },
];

/// The shapes of the world.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Circle,
    Square,
    Triangle,
    Star,
    Ring,
    Cross,
}

impl Shape {
    pub const ALL: [Shape; 6] = [Shape::Circle, Shape::Square, Shape::Triangle, Shape::Star, Shape::Ring, Shape::Cross];

    pub fn name(self) -> &'static str {
        match self {
            Shape::Circle => "circle",
            Shape::Square => "square",
            Shape::Triangle => "triangle",
            Shape::Star => "star",
            Shape::Ring => "ring",
            Shape::Cross => "cross",
        }
    }

    pub fn plural(self) -> &'static str {
        match self {
            Shape::Cross => "crosses",
            Shape::Circle => "circles",
            Shape::Square => "squares",
            Shape::Triangle => "triangles",
            Shape::Star => "stars",
            Shape::Ring => "rings",
        }
    }

    /// Whether the point `(x, y)`, in units of the shape's radius about its centre
    /// (y down), is inside the shape.
    pub(crate) fn contains(self, x: f64, y: f64) -> bool {
        match self {
            Shape::Circle => x * x + y * y <= 1.0,
            Shape::Square => x.abs() <= 0.82 && y.abs() <= 0.82,
            Shape::Triangle => {
                // Equilateral, pointing up, circumradius 1.
                let top = -1.0;
                let base = 0.5;
                if y < top || y > base {
                    return false;
                }
                let half = (y - top) / (base - top) * 0.866;
                x.abs() <= half
            }
            Shape::Star => {
                let r = (x * x + y * y).sqrt();
                if r < 1e-9 {
                    return true;
                }
                // Angle from the upward axis; five points.
                let a = x.atan2(-y).rem_euclid(std::f64::consts::TAU / 5.0) - std::f64::consts::PI / 5.0;
                // The outline between an outer point (r = 1) and an inner corner (r = 0.42).
                let inner = 0.42;
                let t = a.abs() / (std::f64::consts::PI / 5.0); // 0 at the inner corner, 1 at the point
                                                                // Straight edge between the two polar points, in polar form.
                let (ax, ay) = (inner, 0.0);
                let phi = std::f64::consts::PI / 5.0;
                let (bx, by) = (phi.cos(), phi.sin());
                let ang = t * phi;
                // Intersect the ray at `ang` with the segment a→b.
                let (dx, dy) = (bx - ax, by - ay);
                let (cx, cy) = (ang.cos(), ang.sin());
                let denom = cx * dy - cy * dx;
                let edge = if denom.abs() < 1e-12 { 1.0 } else { (ax * dy - ay * dx) / denom };
                r <= edge
            }
            Shape::Ring => {
                let r2 = x * x + y * y;
                (0.36..=1.0).contains(&r2)
            }
            Shape::Cross => (x.abs() <= 0.3 && y.abs() <= 0.9) || (y.abs() <= 0.3 && x.abs() <= 0.9),
        }
    }
}

/// Where a single shape sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    Centre,
    Left,
    Right,
    Top,
    Bottom,
}

impl Position {
    pub const ALL: [Position; 5] = [Position::Centre, Position::Left, Position::Right, Position::Top, Position::Bottom];

    pub fn name(self) -> &'static str {
        match self {
            Position::Centre => "centre",
            Position::Left => "left",
            Position::Right => "right",
            Position::Top => "top",
            Position::Bottom => "bottom",
        }
    }

    /// The position's centre as a fraction of the canvas.
    pub fn anchor(self) -> (f64, f64) {
        match self {
            Position::Centre => (0.5, 0.5),
            Position::Left => (0.27, 0.5),
            Position::Right => (0.73, 0.5),
            Position::Top => (0.5, 0.27),
            Position::Bottom => (0.5, 0.73),
        }
    }

    /// The nearest named position to a point given as fractions of the canvas.
    pub fn nearest(x: f64, y: f64) -> Position {
        let mut best = (f64::INFINITY, Position::Centre);
        for p in Position::ALL {
            let (ax, ay) = p.anchor();
            let d = (x - ax).powi(2) + (y - ay).powi(2);
            if d < best.0 {
                best = (d, p);
            }
        }
        best.1
    }

    /// The phrase that places a shape here ("on the left", "in the centre").
    fn phrase(self, rng: &mut Rng) -> String {
        match self {
            Position::Centre => {
                let word = if rng.chance(0.3) { "center" } else { "centre" };
                if rng.chance(0.5) {
                    format!("in the {word}")
                } else {
                    "in the middle".to_owned()
                }
            }
            Position::Left | Position::Right => {
                let at = if rng.chance(0.5) { "on" } else { "at" };
                format!("{at} the {}", self.name())
            }
            Position::Top | Position::Bottom => {
                let at = if rng.chance(0.5) { "at" } else { "near" };
                format!("{at} the {}", self.name())
            }
        }
    }
}

/// A shape's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Size {
    Small,
    Big,
}

impl Size {
    pub const ALL: [Size; 2] = [Size::Small, Size::Big];

    pub fn name(self) -> &'static str {
        match self {
            Size::Small => "small",
            Size::Big => "big",
        }
    }

    /// The radius as a fraction of the canvas side.
    fn radius(self) -> f64 {
        match self {
            Size::Small => 0.11,
            Size::Big => 0.21,
        }
    }

    fn word(self, rng: &mut Rng) -> &'static str {
        match self {
            Size::Small => ["small", "small", "little", "tiny"][rng.below(4)],
            Size::Big => ["big", "big", "large", "huge"][rng.below(4)],
        }
    }
}

/// The attributes of one scene.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scene {
    pub shape: Shape,
    /// Index into [`COLOURS`].
    pub colour: usize,
    /// Index into [`COLOURS`]; never the shape's colour.
    pub background: usize,
    pub position: Position,
    pub size: Size,
    /// One or two shapes. Two shapes sit side by side (or one above the other) and
    /// their caption names no position.
    pub count: usize,
}

/// Which optional attributes a caption names, and the seed of its wording.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CaptionStyle {
    pub size: bool,
    pub background: bool,
    pub position: bool,
    pub picture: bool,
    pub form: usize,
    pub seed: u64,
}

impl CaptionStyle {
    pub fn random(rng: &mut Rng) -> Self {
        Self {
            size: rng.chance(0.75),
            background: rng.chance(0.85),
            position: rng.chance(0.85),
            picture: rng.chance(0.15),
            form: rng.below(4),
            seed: rng.next_u64(),
        }
    }
}

/// Per-scene jitter drawn with the attributes, so the same attributes look a little
/// different every time.
#[derive(Debug, Clone, Copy)]
struct Jitter {
    dx: f64,
    dy: f64,
    scale: f64,
    shade: [f64; 3],
    bg_shade: [f64; 3],
    vertical_pair: bool,
}

impl Scene {
    /// A random scene; `two_share` is the fraction of scenes with two shapes.
    pub fn random(rng: &mut Rng, two_share: f64) -> Self {
        let colour = rng.below(COLOURS.len());
        let mut background = rng.below(COLOURS.len() - 1);
        if background >= colour {
            background += 1;
        }
        Self {
            shape: Shape::ALL[rng.below(Shape::ALL.len())],
            colour,
            background,
            position: Position::ALL[rng.below(Position::ALL.len())],
            size: Size::ALL[rng.below(Size::ALL.len())],
            count: if rng.chance(two_share) { 2 } else { 1 },
        }
    }

    /// Renders the scene at `side`×`side` pixels with 4×4 supersampled edges.
    pub fn render(&self, side: usize, rng: &mut Rng) -> RgbImage {
        let jitter = Jitter {
            dx: rng.range(-0.04, 0.04),
            dy: rng.range(-0.04, 0.04),
            scale: rng.range(0.9, 1.1),
            shade: [rng.range(-12.0, 12.0), rng.range(-12.0, 12.0), rng.range(-12.0, 12.0)],
            bg_shade: [rng.range(-12.0, 12.0), rng.range(-12.0, 12.0), rng.range(-12.0, 12.0)],
            vertical_pair: rng.chance(0.5),
        };
        self.render_with(side, &jitter)
    }

    fn centres(&self, j: &Jitter) -> Vec<(f64, f64)> {
        if self.count == 1 {
            let (x, y) = self.position.anchor();
            vec![(x + j.dx, y + j.dy)]
        } else {
            let gap = match self.size {
                Size::Small => 0.2,
                Size::Big => 0.25,
            };
            let (cx, cy) = (0.5 + j.dx, 0.5 + j.dy);
            if j.vertical_pair {
                vec![(cx, cy - gap), (cx, cy + gap)]
            } else {
                vec![(cx - gap, cy), (cx + gap, cy)]
            }
        }
    }

    fn render_with(&self, side: usize, j: &Jitter) -> RgbImage {
        let fg = shade(COLOURS[self.colour].rgb, j.shade);
        let bg = shade(COLOURS[self.background].rgb, j.bg_shade);
        let mut radius = self.size.radius() * j.scale;
        if self.count == 2 && self.size == Size::Big {
            radius *= 0.8;
        }
        let centres = self.centres(j);
        let n = side as f64;
        let sub = 4;
        let mut img = RgbImage::new(side as u32, side as u32);
        for (px, py, pixel) in img.enumerate_pixels_mut() {
            let mut cover = 0usize;
            for sy in 0..sub {
                for sx in 0..sub {
                    let x = (f64::from(px) + (sx as f64 + 0.5) / sub as f64) / n;
                    let y = (f64::from(py) + (sy as f64 + 0.5) / sub as f64) / n;
                    if centres.iter().any(|&(cx, cy)| self.shape.contains((x - cx) / radius, (y - cy) / radius)) {
                        cover += 1;
                    }
                }
            }
            let a = cover as f64 / (sub * sub) as f64;
            for c in 0..3 {
                pixel.0[c] = (bg[c] * (1.0 - a) + fg[c] * a).round().clamp(0.0, 255.0) as u8;
            }
        }
        img
    }

    /// A caption in one of several phrasings. Optional attributes (size, position,
    /// background) are sometimes left out, as people leave them out of prompts.
    pub fn caption(&self, rng: &mut Rng) -> String {
        self.caption_styled(&CaptionStyle::random(rng))
    }

    /// The caption in a given style: scenes that differ in one attribute get captions
    /// that differ only in the words for it (the contrastive training's hard negatives).
    pub fn caption_styled(&self, style: &CaptionStyle) -> String {
        let mut rng = Rng::new(style.seed);
        let rng = &mut rng;
        let colour = COLOURS[self.colour].name;
        let bg = COLOURS[self.background].name;
        let size = if style.size { Some(self.size.word(rng)) } else { None };
        let with_bg = style.background;
        let with_pos = self.count == 1 && style.position;
        let noun = if self.count == 1 { self.shape.name() } else { self.shape.plural() };
        let mut subject = String::new();
        if self.count == 2 {
            subject.push_str(if rng.chance(0.8) { "two " } else { "a pair of " });
        } else {
            subject.push_str("a ");
        }
        if let Some(s) = size {
            subject.push_str(s);
            subject.push(' ');
        }
        subject.push_str(colour);
        subject.push(' ');
        subject.push_str(noun);
        if self.count == 1 && starts_with_vowel(&subject[2..]) {
            subject.replace_range(0..2, "an ");
        }
        let pos = if with_pos { Some(self.position.phrase(rng)) } else { None };
        let mut parts = vec![subject.clone()];
        match style.form {
            // "a big red circle on the left on a blue background"
            0 | 1 => {
                if let Some(p) = &pos {
                    parts.push(p.clone());
                }
                if with_bg {
                    parts.push(if rng.chance(0.7) { format!("on a {bg} background") } else { format!("on {bg}") });
                }
            }
            // "a blue background with a big red circle on the left"
            2 if with_bg => {
                parts.insert(0, format!("a {bg} background with"));
                if let Some(p) = &pos {
                    parts.push(p.clone());
                }
            }
            // "big red circle, left, blue background"
            _ => {
                let bare = if self.count == 2 {
                    subject.clone()
                } else {
                    subject.trim_start_matches("an ").trim_start_matches("a ").to_owned()
                };
                parts = vec![bare];
                if with_pos {
                    parts.push(self.position.name().to_owned());
                }
                if with_bg {
                    parts.push(format!("{bg} background"));
                }
                return parts.join(", ");
            }
        }
        let text = parts.join(" ");
        if style.picture {
            format!("a picture of {text}")
        } else {
            text
        }
    }

    /// The canonical caption that names every attribute; the zero-shot evaluation
    /// compares these while varying one attribute at a time.
    pub fn canonical_caption(&self) -> String {
        let colour = COLOURS[self.colour].name;
        let bg = COLOURS[self.background].name;
        if self.count == 2 {
            return format!("two {} {colour} {} on a {bg} background", self.size.name(), self.shape.plural());
        }
        let pos = match self.position {
            Position::Centre => "in the centre".to_owned(),
            Position::Left | Position::Right => format!("on the {}", self.position.name()),
            Position::Top | Position::Bottom => format!("at the {}", self.position.name()),
        };
        format!("a {} {colour} {} {pos} on a {bg} background", self.size.name(), self.shape.name())
    }
}

fn starts_with_vowel(s: &str) -> bool {
    s.starts_with(['a', 'e', 'i', 'o', 'u'])
}

fn shade(rgb: [u8; 3], delta: [f64; 3]) -> [f64; 3] {
    [
        (f64::from(rgb[0]) + delta[0]).clamp(0.0, 255.0),
        (f64::from(rgb[1]) + delta[1]).clamp(0.0, 255.0),
        (f64::from(rgb[2]) + delta[2]).clamp(0.0, 255.0),
    ]
}

/// The index of a colour by name.
pub fn colour_index(name: &str) -> Option<usize> {
    COLOURS.iter().position(|c| c.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_scene_and_caption() {
        let make = |seed| {
            let mut rng = Rng::new(seed);
            let s = Scene::random(&mut rng, 0.2);
            (s, s.render(32, &mut rng), s.caption(&mut rng))
        };
        let (a, ai, ac) = make(7);
        let (b, bi, bc) = make(7);
        assert_eq!(a, b);
        assert_eq!(ai, bi);
        assert_eq!(ac, bc);
    }

    #[test]
    fn background_differs_from_shape_and_shape_lands_where_named() {
        let mut rng = Rng::new(3);
        for _ in 0..200 {
            let mut s = Scene::random(&mut rng, 0.0);
            assert_ne!(s.colour, s.background);
            s.size = Size::Big;
            let img = s.render(64, &mut rng);
            let fg = COLOURS[s.colour].rgb;
            // Centroid of pixels closer to the shape colour than to the background.
            let (mut sx, mut sy, mut n) = (0.0, 0.0, 0.0);
            for (x, y, p) in img.enumerate_pixels() {
                let d = |c: [u8; 3]| (0..3).map(|i| (f64::from(p.0[i]) - f64::from(c[i])).powi(2)).sum::<f64>();
                if d(fg) < d(COLOURS[s.background].rgb) {
                    sx += f64::from(x) + 0.5;
                    sy += f64::from(y) + 0.5;
                    n += 1.0;
                }
            }
            assert!(n > 50.0, "{s:?} drew {n} pixels");
            assert_eq!(Position::nearest(sx / n / 64.0, sy / n / 64.0), s.position, "{s:?}");
        }
    }

    #[test]
    fn captions_name_the_attributes_they_keep() {
        let mut rng = Rng::new(11);
        for _ in 0..500 {
            let s = Scene::random(&mut rng, 0.3);
            let c = s.caption(&mut rng);
            assert!(c.contains(COLOURS[s.colour].name), "{c}");
            let noun = if s.count == 1 { s.shape.name() } else { s.shape.plural() };
            assert!(c.contains(noun), "{c}");
            assert!(!c.contains("  "), "{c}");
        }
        let s = Scene {
            shape: Shape::Circle,
            colour: 0,
            background: 5,
            position: Position::Left,
            size: Size::Big,
            count: 1,
        };
        assert_eq!(s.canonical_caption(), "a big red circle on the left on a blue background");
    }

    #[test]
    fn every_shape_has_a_distinct_silhouette() {
        let masks: Vec<Vec<bool>> = Shape::ALL
            .iter()
            .map(|s| {
                (0..40 * 40)
                    .map(|i| s.contains(f64::from(i % 40) / 20.0 - 1.0 + 0.025, f64::from(i / 40) / 20.0 - 1.0 + 0.025))
                    .collect()
            })
            .collect();
        for (i, a) in masks.iter().enumerate() {
            let area = a.iter().filter(|v| **v).count();
            assert!(area > 200, "{:?} area {area}", Shape::ALL[i]);
            for b in &masks[i + 1..] {
                let diff = a.iter().zip(b).filter(|(x, y)| x != y).count();
                assert!(diff > 100, "{:?} too close to another shape", Shape::ALL[i]);
            }
        }
    }
}
