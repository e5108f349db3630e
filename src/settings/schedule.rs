//! Keyframe schedules in Deforum's syntax: `"0:(1.0), 30:(1.04), 60:(0.98)"`. A value is a
//! number or an expression in `t` (the frame number), `max_f` (the number of frames) and
//! `pi`, e.g. `0:(1.0+0.002*sin(t/5))`, evaluated by the `exmex` crate (`^` or `**` for
//! powers; sin, cos, tan, abs, sqrt, exp, ln, log10, floor, round, min, max…).
//!
//! Values follow Deforum's rules. A number is the value at its frame, and the frames
//! between numbers are interpolated (linearly, or eased in and out). An expression holds
//! from its frame until the next keyframe, evaluated at each frame. Before the first
//! keyframe the first value holds, after the last one the last. Unlike Deforum, a
//! keyframe beyond the last frame still steers the interpolation toward it, so
//! `0:(1), 100:(2)` over 50 frames ends at 1.5 rather than staying at 1.
//!
//! The list itself (frames, colons, brackets, commas) is scanned here; only the
//! expressions go to the crate. Every error names the character where it is.

use std::fmt;

use exmex::Express;
use serde::{Deserialize, Serialize};

/// The longest schedule accepted, in characters.
pub const MAX_SCHEDULE_CHARS: usize = 20_000;
/// The deepest bracket nesting in a value.
const MAX_DEPTH: usize = 64;
/// The highest keyframe accepted (a frame count beyond any real animation).
pub const MAX_FRAME: usize = 1_000_000;

/// How values between two numeric keyframes are found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Easing {
    /// Straight lines between keyframes (Deforum's default).
    #[default]
    Linear,
    /// Slow out of one keyframe and into the next (a cosine ease in-out).
    EaseInOut,
}

impl Easing {
    pub const ALL: [Easing; 2] = [Easing::Linear, Easing::EaseInOut];

    pub fn name(self) -> &'static str {
        match self {
            Easing::Linear => "linear",
            Easing::EaseInOut => "ease-in-out",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.name() == s || (s == "ease" && *e == Easing::EaseInOut))
    }

    /// The share of the way from one keyframe to the next at `s` in `[0, 1]`.
    fn shape(self, s: f64) -> f64 {
        match self {
            Easing::Linear => s,
            Easing::EaseInOut => (1.0 - (std::f64::consts::PI * s).cos()) / 2.0,
        }
    }
}

/// One keyframe's value.
#[derive(Debug, Clone)]
enum Value {
    Number(f64),
    /// An expression and its variables' names (as the crate orders them).
    Expr {
        expr: Box<exmex::FlatEx<f64>>,
        text: String,
    },
}

#[derive(Debug, Clone)]
struct Key {
    frame: usize,
    value: Value,
    /// Where the value starts in the schedule's text (a character index from 0).
    at: usize,
}

/// A parsed schedule. It keeps its text, which is what settings files and PNGs store.
#[derive(Debug, Clone)]
pub struct Schedule {
    text: String,
    keys: Vec<Key>,
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for Schedule {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Schedule {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Schedule::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// The variables an expression may use.
const VARIABLES: [&str; 3] = ["max_f", "pi", "t"];

impl Schedule {
    /// The schedule of one value for every frame.
    pub fn constant(value: f64) -> Self {
        Self { text: value.to_string(), keys: vec![Key { frame: 0, value: Value::Number(value), at: 0 }] }
    }

    /// Parses `"F:(V), F:(V), …"` (a bare number is a constant). Errors are one line that
    /// names the character (counting from 1) where the problem is.
    pub fn parse(text: &str) -> Result<Self, String> {
        let chars: Vec<char> = text.chars().collect();
        if chars.len() > MAX_SCHEDULE_CHARS {
            return Err(format!(
                "the schedule is {} characters long; at most {MAX_SCHEDULE_CHARS} are accepted",
                chars.len()
            ));
        }
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err("the schedule is empty: give keyframes like \"0:(1.0), 30:(1.04)\" or a number".into());
        }
        if let Ok(v) = trimmed.parse::<f64>() {
            if !v.is_finite() {
                return Err(format!("the value {trimmed} is not a finite number"));
            }
            let at = text.find(trimmed).map_or(0, |b| text[..b].chars().count());
            return Ok(Self { text: text.to_owned(), keys: vec![Key { frame: 0, value: Value::Number(v), at }] });
        }
        let mut keys: Vec<Key> = Vec::new();
        let mut i = 0;
        let skip_ws = |i: &mut usize| {
            while *i < chars.len() && chars[*i].is_whitespace() {
                *i += 1;
            }
        };
        let err = |at: usize, msg: &str| format!("at character {}: {msg}", at + 1);
        loop {
            skip_ws(&mut i);
            if i >= chars.len() {
                break;
            }
            let start = i;
            while i < chars.len() && chars[i].is_ascii_digit() {
                i += 1;
            }
            if i == start {
                return Err(err(i, &format!("expected a frame number, found {:?}", chars[i])));
            }
            let digits: String = chars[start..i].iter().collect();
            let frame = digits
                .parse::<usize>()
                .ok()
                .filter(|f| *f <= MAX_FRAME)
                .ok_or_else(|| err(start, &format!("frame {digits} is beyond the last accepted ({MAX_FRAME})")))?;
            skip_ws(&mut i);
            if chars.get(i) != Some(&':') {
                return Err(err(i, "expected ':' after the frame number"));
            }
            i += 1;
            skip_ws(&mut i);
            if chars.get(i) != Some(&'(') {
                return Err(err(i, "expected '(' before the value"));
            }
            i += 1;
            let value_start = i;
            let mut depth = 1;
            while i < chars.len() {
                match chars[i] {
                    '(' => {
                        depth += 1;
                        if depth > MAX_DEPTH {
                            return Err(err(i, &format!("brackets nested deeper than {MAX_DEPTH}")));
                        }
                    }
                    ')' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
            if i >= chars.len() {
                return Err(err(value_start - 1, "this '(' is never closed"));
            }
            let value_text: String = chars[value_start..i].iter().collect();
            i += 1;
            if keys.iter().any(|k| k.frame == frame) {
                return Err(err(start, &format!("frame {frame} has two keyframes")));
            }
            let value = parse_value(&value_text).map_err(|m| err(value_start, &m))?;
            keys.push(Key { frame, value, at: value_start });
            skip_ws(&mut i);
            match chars.get(i) {
                None => break,
                Some(',') => i += 1,
                Some(c) => return Err(err(i, &format!("expected ',' between keyframes, found {c:?}"))),
            }
        }
        if keys.is_empty() {
            return Err("the schedule has no keyframes".into());
        }
        keys.sort_by_key(|k| k.frame);
        Ok(Self { text: text.to_owned(), keys })
    }

    /// The schedule's text, as given.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The keyframes' frames, in order.
    pub fn keyframes(&self) -> Vec<usize> {
        self.keys.iter().map(|k| k.frame).collect()
    }

    /// True when every frame has the same value (a single number).
    pub fn is_constant(&self) -> bool {
        matches!(self.keys.as_slice(), [Key { value: Value::Number(_), .. }])
    }

    /// The value at every frame of an animation of `frames` frames. An expression that
    /// gives no finite number at some frame is an error naming the frame and where the
    /// expression is.
    pub fn values(&self, frames: usize, easing: Easing) -> Result<Vec<f64>, String> {
        // The frames whose value is known: numbers at their keyframes (any frame), and
        // each frame an expression holds over (within the animation).
        let mut known: Vec<(usize, f64)> = Vec::new();
        for (n, key) in self.keys.iter().enumerate() {
            match &key.value {
                Value::Number(v) => known.push((key.frame, *v)),
                Value::Expr { expr, text } => {
                    let until = self.keys.get(n + 1).map_or(frames, |next| next.frame.min(frames));
                    for t in key.frame..until {
                        known.push((
                            t,
                            eval(expr, t, frames)
                                .map_err(|m| format!("at character {} ({text:?}) at frame {t}: {m}", key.at + 1))?,
                        ));
                    }
                }
            }
        }
        let mut out = Vec::with_capacity(frames);
        let mut right = 0; // the first known point at or after t
        for t in 0..frames {
            while right < known.len() && known[right].0 < t {
                right += 1;
            }
            let v = match (right.checked_sub(1).map(|l| known[l]), known.get(right)) {
                (_, Some(&(f, v))) if f == t => v,
                (Some((f0, v0)), Some(&(f1, v1))) => {
                    #[expect(clippy::cast_precision_loss, reason = "frames are far below 2^52")]
                    let s = (t - f0) as f64 / (f1 - f0) as f64;
                    v0 + (v1 - v0) * easing.shape(s)
                }
                (None, Some(&(_, v))) | (Some((_, v)), None) => v,
                (None, None) => 0.0,
            };
            if !v.is_finite() {
                return Err(format!("at frame {t} the value between keyframes is too large to be a number"));
            }
            out.push(v);
        }
        Ok(out)
    }
}

fn parse_value(text: &str) -> Result<Value, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("the value is empty".into());
    }
    if let Ok(v) = t.parse::<f64>() {
        return if v.is_finite() { Ok(Value::Number(v)) } else { Err(format!("{t} is not a finite number")) };
    }
    // Python's power operator, as Deforum's schedules write it; `max_f` in braces, which
    // the crate reads as one variable's name (bare, it would read the `max` function).
    let source = t.replace("**", "^").replace("max_f", "{max_f}");
    let expr = exmex::parse::<f64>(&source).map_err(|e| format!("{t:?} is not an expression ({e})"))?;
    if let Some(unknown) = expr.var_names().iter().find(|v| !VARIABLES.contains(&v.as_str())) {
        return Err(format!(
            "{t:?} uses {unknown:?}; an expression may use t (the frame), max_f (the frame count) and pi"
        ));
    }
    Ok(Value::Expr { expr: Box::new(expr), text: t.to_owned() })
}

fn eval(expr: &exmex::FlatEx<f64>, t: usize, frames: usize) -> Result<f64, String> {
    #[expect(clippy::cast_precision_loss, reason = "frames are far below 2^52")]
    let vars: Vec<f64> = expr
        .var_names()
        .iter()
        .map(|name| match name.as_str() {
            "t" => t as f64,
            "max_f" => frames as f64,
            _ => std::f64::consts::PI,
        })
        .collect();
    let v = expr.eval(&vars).map_err(|e| e.to_string())?;
    if v.is_finite() {
        Ok(v)
    } else {
        Err(format!("gives {v}, not a finite number"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(text: &str, frames: usize) -> Vec<f64> {
        Schedule::parse(text).unwrap().values(frames, Easing::Linear).unwrap()
    }

    fn close(a: &[f64], b: &[f64]) {
        assert_eq!(a.len(), b.len(), "{a:?} vs {b:?}");
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-12, "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn numbers_are_interpolated_between_keyframes_and_held_outside() {
        // By hand: 1.0 at 0, 1.04 at 4 (steps of 0.01), 0.98 at 7 (steps of -0.02).
        close(&values("0:(1.0), 4:(1.04), 7:(0.98)", 9), &[1.0, 1.01, 1.02, 1.03, 1.04, 1.02, 1.0, 0.98, 0.98]);
        // Before the first keyframe the first value holds; keys may come in any order.
        close(&values("6:(3), 2:(1)", 8), &[1.0, 1.0, 1.0, 1.5, 2.0, 2.5, 3.0, 3.0]);
        // A keyframe past the end still steers the line toward it.
        close(&values("0:(1), 100:(2)", 3), &[1.0, 1.01, 1.02]);
        close(&values("1.5", 3), &[1.5, 1.5, 1.5]);
        close(&values(" 0 : ( -2 ) ", 2), &[-2.0, -2.0]);
    }

    #[test]
    fn easing_is_slow_at_both_ends() {
        let v = Schedule::parse("0:(0), 4:(1)").unwrap().values(5, Easing::EaseInOut).unwrap();
        // (1 - cos(pi s)) / 2 at s = 0, 1/4, 1/2, 3/4, 1.
        let h = std::f64::consts::FRAC_1_SQRT_2;
        close(&v, &[0.0, (1.0 - h) / 2.0, 0.5, (1.0 + h) / 2.0, 1.0]);
    }

    #[test]
    fn expressions_hold_until_the_next_keyframe_and_are_evaluated_each_frame() {
        // 1 + 0.002 sin(t/5) for frames 0..3, then 2 at frame 3 on.
        let v = values("0:(1.0+0.002*sin(t/5)), 3:(2)", 5);
        let e = |t: f64| 1.0 + 0.002 * (t / 5.0).sin();
        close(&v, &[e(0.0), e(1.0), e(2.0), 2.0, 2.0]);
        // Numbers after an expression interpolate from its last value (frame 3); an
        // expression, even a constant one, holds (frame 5); max_f, pi and ** work.
        let v = values("0:(t*max_f), 2:(10), 4:(2**3), 6:(cos(pi))", 7);
        close(&v, &[0.0, 7.0, 10.0, 9.0, 8.0, 8.0, -1.0]);
        // Integer-looking division is real division, as in Python 3.
        close(&values("0:(1/2)", 1), &[0.5]);
    }

    #[test]
    fn bad_schedules_name_where_the_problem_is() {
        let e = |s: &str| Schedule::parse(s).unwrap_err();
        assert_eq!(e("0:(1.0), 30:(1.04"), "at character 13: this '(' is never closed");
        assert_eq!(e("0:(1.0) 30:(2)"), "at character 9: expected ',' between keyframes, found '3'");
        assert_eq!(e("0(1)"), "at character 2: expected ':' after the frame number");
        assert_eq!(e("0:1"), "at character 3: expected '(' before the value");
        assert_eq!(e("a:(1)"), "at character 1: expected a frame number, found 'a'");
        assert_eq!(e("0:(1), 0:(2)"), "at character 8: frame 0 has two keyframes");
        assert!(e("0:(1+)").starts_with("at character 4: \"1+\" is not an expression"), "{}", e("0:(1+)"));
        assert!(e("0:(x*2)").starts_with("at character 4: \"x*2\" uses \"x\""), "{}", e("0:(x*2)"));
        assert_eq!(e("0:()"), "at character 4: the value is empty");
        assert_eq!(e("  "), "the schedule is empty: give keyframes like \"0:(1.0), 30:(1.04)\" or a number");
        assert_eq!(e("0:(inf)"), "at character 4: inf is not a finite number");
        assert!(e("99999999999999999999:(1)").contains("beyond the last accepted"));
        assert!(e(&"0:(".repeat(10)).contains("never closed") || e(&"0:(".repeat(10)).contains("nested"));
        assert!(e(&format!("0:({}1{})", "(".repeat(100), ")".repeat(100))).contains("nested deeper than 64"));
        assert!(e(&"1".repeat(MAX_SCHEDULE_CHARS + 1)).contains("at most"));
        // Finite keyframes whose difference is not.
        let s = Schedule::parse("0:(-1.7e308), 4:(1.7e308)").unwrap();
        assert!(s
            .values(5, Easing::Linear)
            .unwrap_err()
            .contains("at frame 1 the value between keyframes is too large"));
        // An expression that fails at some frame says which.
        let s = Schedule::parse("0:(1), 2:(1/(t-3))").unwrap();
        let msg = s.values(5, Easing::Linear).unwrap_err();
        assert_eq!(msg, "at character 11 (\"1/(t-3)\") at frame 3: gives inf, not a finite number");
    }

    #[test]
    fn round_trips_as_its_text() {
        let s = Schedule::parse("0:(1.0), 30:(1.04)").unwrap();
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(json, "\"0:(1.0), 30:(1.04)\"");
        assert_eq!(serde_json::from_str::<Schedule>(&json).unwrap(), s);
        assert!(serde_json::from_str::<Schedule>("\"0:(\"").unwrap_err().to_string().contains("never closed"));
        assert_eq!(Schedule::constant(0.5).values(2, Easing::Linear).unwrap(), vec![0.5, 0.5]);
        assert!(Schedule::constant(0.5).is_constant() && !s.is_constant());
        assert_eq!(s.keyframes(), vec![0, 30]);
    }
}
