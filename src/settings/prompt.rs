//! Prompt strings: `text[:weight[:stop]]`, several joined with `|`, story stages joined
//! with `^`. Parsing follows the reference's `split_prompt` (split from the right), but a
//! trailing segment only counts as a weight or stop when it is a number, so Windows
//! paths (`C:\art\x.png`) and URLs (`https://…/x.png:0.5`) stay whole.

use serde::{Deserialize, Serialize};

/// One parsed prompt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromptSpec {
    pub text: String,
    pub weight: f64,
    /// Distances below this get no gradient; `-inf` (the default) means none.
    pub stop: f64,
}

fn looks_numeric(s: &str) -> bool {
    let t = s.trim();
    // A path or URL tail ("8080/a.png", "\\art\\x.png") is text, not a malformed number.
    (t.starts_with(|c: char| c.is_ascii_digit() || matches!(c, '-' | '+' | '.')) && !t.contains(['/', '\\']))
        || t.eq_ignore_ascii_case("inf")
        || t.eq_ignore_ascii_case("nan")
}

fn number(s: &str) -> Option<f64> {
    let t = s.trim();
    let v = match t.to_ascii_lowercase().as_str() {
        "inf" | "+inf" => f64::INFINITY,
        "-inf" => f64::NEG_INFINITY,
        _ => t.parse::<f64>().ok()?,
    };
    if v.is_nan() {
        None
    } else {
        Some(v)
    }
}

/// The largest stop a prompt may have: π²/2, the reach of what the stop is compared
/// with, the spherical distance `2·arcsin(‖a−b‖/2)²` of two unit embeddings (0 for the
/// same direction, π²/2 for opposite ones), signed by the weight. A stop beyond it
/// never acts or switches the prompt off from the start. (The hardening issue suggested
/// ±1, as for a cosine; but a distance of 1 is a cosine of about 0.16, and the PyTorch
/// reference's own step fixture uses a stop of 1.2071.)
pub const STOP_LIMIT: f64 = std::f64::consts::PI * std::f64::consts::PI / 2.0;

/// The longest prompt accepted, in characters: far beyond CLIP's 77 tokens (about 300
/// characters of English), short of what only a mistake or an attack would type.
pub const MAX_PROMPT_CHARS: usize = 10_000;

/// A prompt as messages show it: the first 60 characters, and "…" when there are more, so
/// a long prompt is never echoed whole.
pub fn excerpt(text: &str) -> String {
    const SHOWN: usize = 60;
    match text.char_indices().nth(SHOWN) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

/// Parses `text[:weight[:stop]]`: at most [`MAX_PROMPT_CHARS`] characters; the stop
/// must be finite and within ±[`STOP_LIMIT`].
pub fn parse_prompt(s: &str) -> Result<PromptSpec, String> {
    let chars = s.chars().count();
    if chars > MAX_PROMPT_CHARS {
        return Err(format!("prompt {:?} is {chars} characters long; the most is {MAX_PROMPT_CHARS}", excerpt(s)));
    }
    let mut text = s;
    let mut nums: Vec<f64> = Vec::new();
    for _ in 0..2 {
        let Some((head, tail)) = text.rsplit_once(':') else { break };
        if !looks_numeric(tail) {
            if tail.trim().is_empty() && !head.is_empty() && !head.ends_with(':') {
                return Err(format!("empty weight after ':' in prompt {:?}", excerpt(s)));
            }
            break;
        }
        match number(tail) {
            Some(v) => {
                nums.insert(0, v);
                text = head;
            }
            None => return Err(format!("malformed number {:?} in prompt {:?}", excerpt(tail.trim()), excerpt(s))),
        }
    }
    let text = text.trim();
    if text.is_empty() {
        return Err(format!("prompt {:?} has no text", excerpt(s)));
    }
    let weight = nums.first().copied().unwrap_or(1.0);
    if !weight.is_finite() {
        return Err(format!("weight must be a finite number in prompt {:?}", excerpt(s)));
    }
    let stop = match nums.get(1) {
        Some(&stop) if !(stop.is_finite() && (-STOP_LIMIT..=STOP_LIMIT).contains(&stop)) => {
            let stop = if stop.abs() < 1e6 || stop.is_infinite() { stop.to_string() } else { format!("{stop:e}") };
            return Err(format!(
                "stop {stop} in prompt {:?} is out of range: give a number from -4.93 to 4.93 (±π²/2, the \
                 reach of the distance it is compared with), or leave it out for no stop",
                excerpt(s)
            ));
        }
        Some(&stop) => stop,
        None => f64::NEG_INFINITY,
    };
    Ok(PromptSpec { text: text.to_owned(), weight, stop })
}

/// Splits `a | b` into trimmed, non-empty prompt strings.
pub fn split_prompts(s: &str) -> Vec<String> {
    s.split('|').map(str::trim).filter(|p| !p.is_empty()).map(str::to_owned).collect()
}

/// Splits nerdyrodent's story syntax `a | b ^ c` into stages of prompt strings.
pub fn split_story(s: &str) -> Vec<Vec<String>> {
    s.split('^').map(split_prompts).filter(|stage| !stage.is_empty()).collect()
}

/// Parses a noise prompt `seed[:weight]`.
pub fn parse_noise_prompt(s: &str) -> Result<(u64, f64), String> {
    let (seed, weight) = match s.split_once(':') {
        Some((a, b)) => (a, number(b).ok_or_else(|| format!("malformed weight in noise prompt {:?}", excerpt(s)))?),
        None => (s, 1.0),
    };
    let seed =
        seed.trim().parse::<u64>().map_err(|_| format!("noise prompt {:?} needs a whole-number seed", excerpt(s)))?;
    if !weight.is_finite() {
        return Err(format!("weight must be finite in noise prompt {:?}", excerpt(s)));
    }
    Ok((seed, weight))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> PromptSpec {
        parse_prompt(s).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn text_weight_stop() {
        assert_eq!(p("a cat"), PromptSpec { text: "a cat".into(), weight: 1.0, stop: f64::NEG_INFINITY });
        assert_eq!(p("a cat:2"), PromptSpec { text: "a cat".into(), weight: 2.0, stop: f64::NEG_INFINITY });
        assert_eq!(p("a cat:-0.5:0.8"), PromptSpec { text: "a cat".into(), weight: -0.5, stop: 0.8 });
        assert_eq!(p("a cat:1:-1").stop, -1.0);
    }

    #[test]
    fn stops_are_finite_and_within_reach() {
        for bad in ["a cat:1:-inf", "a cat:1:inf", "a cat:1:5", "a cat:-1:-4.94", "a cat:1:1e300"] {
            let e = parse_prompt(bad).unwrap_err();
            assert!(e.starts_with("stop ") && e.contains("from -4.93 to 4.93"), "{bad}: {e}");
        }
        assert!(parse_prompt("a cat:1:nan").unwrap_err().contains("malformed number"));
        assert_eq!(p("a cat:1:1.2071").stop, 1.2071);
        assert_eq!(p("a cat:-1:-4.93").stop, -4.93);
    }

    #[test]
    fn paths_and_urls_stay_whole() {
        assert_eq!(p(r"C:\art\x.png").text, r"C:\art\x.png");
        assert_eq!(
            p(r"C:\art\x.png:0.5"),
            PromptSpec { text: r"C:\art\x.png".into(), weight: 0.5, stop: f64::NEG_INFINITY }
        );
        assert_eq!(p("https://example.com/a.png").text, "https://example.com/a.png");
        assert_eq!(p("https://example.com/a.png:2:0.1").weight, 2.0);
        assert_eq!(p("http://host:8080/a.png").text, "http://host:8080/a.png");
    }

    #[test]
    fn malformed_weights_are_errors() {
        assert!(parse_prompt("a cat:1.5x").is_err());
        assert!(parse_prompt("a cat:nan").is_err());
        assert!(parse_prompt("a cat:inf").is_err());
        assert!(parse_prompt(":1").is_err());
        assert!(parse_prompt("a cat:").is_err());
    }

    #[test]
    fn splitting() {
        assert_eq!(split_prompts("a | b:2 ||"), vec!["a", "b:2"]);
        assert_eq!(split_story("a | b ^ c"), vec![vec!["a".to_owned(), "b".to_owned()], vec!["c".to_owned()]]);
        assert_eq!(parse_noise_prompt("42:0.5"), Ok((42, 0.5)));
        assert!(parse_noise_prompt("x").is_err());
    }

    #[test]
    fn long_prompts_are_capped_and_never_echoed_whole() {
        assert_eq!(excerpt("short"), "short");
        let long = "é".repeat(100);
        assert_eq!(excerpt(&long), format!("{}…", "é".repeat(60)));
        assert!(parse_prompt(&"a".repeat(MAX_PROMPT_CHARS)).is_ok());
        let err = parse_prompt(&"a".repeat(1 << 20)).unwrap_err();
        assert_eq!(err, format!("prompt \"{}…\" is 1048576 characters long; the most is 10000", "a".repeat(60)));
        let err = parse_prompt(&format!("{}:1.5x", "a".repeat(5000))).unwrap_err();
        assert!(err.len() < 200, "{err}");
    }
}
