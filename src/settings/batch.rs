//! `clipcanvas batch`'s file, in TOML: a base of settings, jobs that override it, and an
//! X/Y grid of two axes over any setting. Plain data: [`parse`] expands a file's text into
//! the runs' settings without I/O, and a bad file is one line naming the table and key.
//!
//! ```toml
//! [base]                       # any settings-file key; dotted keys reach inside
//! prompts = ["a lighthouse"]
//! iterations = 100
//!
//! [[job]]                      # one run: the base with these keys changed
//! name = "storm"               # its file's name (default job-N)
//! prompts = ["a lighthouse in a storm"]
//!
//! [grid]                       # one run a cell: x's values across, y's down
//! x = { key = "seed", values = [1, 2, 3] }
//! y = { key = "prompt", values = ["lighthouse", "castle"] }   # search and replace
//! ```
//!
//! The `prompt` key is A1111's prompt search-and-replace: its first value is searched for
//! in every prompt and each value put in its place. `generator` takes a name (vqgan,
//! pixel, fft).

use serde::Deserialize;
use serde_json::Value;

use super::{GeneratorSettings, RunSettings};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchFile {
    #[serde(default)]
    base: toml::Table,
    #[serde(default)]
    job: Vec<toml::Table>,
    grid: Option<GridFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GridFile {
    x: AxisFile,
    y: Option<AxisFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AxisFile {
    key: String,
    values: Vec<toml::Value>,
}

/// One run of a batch.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// Its file's name, without extension: the job's `name`, `job-N`, or `grid-xI-yJ`.
    pub name: String,
    pub settings: RunSettings,
    /// Its cell in the grid, `(column, row)`.
    pub cell: Option<(usize, usize)>,
}

/// A grid's axis as the contact sheet labels it.
#[derive(Debug, Clone, PartialEq)]
pub struct Axis {
    pub key: String,
    /// Each value as a label shows it.
    pub labels: Vec<String>,
}

/// What a batch file asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub jobs: Vec<Job>,
    /// The grid's axes (`y` `None`: one row), when the file has one.
    pub grid: Option<(Axis, Option<Axis>)>,
}

/// The most runs one batch may ask for.
pub const MAX_JOBS: usize = 10_000;

/// Expands a batch file. Its base starts from `start` (a settings file's, with
/// `--settings`), else from the shapes world's settings when the base names no model
/// and the defaults when it does.
pub fn parse(text: &str, start: Option<RunSettings>) -> Result<Plan, String> {
    let file: BatchFile =
        toml::from_str(text).map_err(|e| format!("not a batch file: {}", one_line(&e.to_string())))?;
    let names_models = ["vqgan", "clip"].iter().any(|k| file.base.contains_key(*k));
    let start =
        start.unwrap_or_else(|| if names_models { RunSettings::default() } else { RunSettings::shapes_world() });
    let mut base = serde_json::to_value(&start).map_err(|e| e.to_string())?;
    for (key, value) in &file.base {
        set(&mut base, key, toml_to_json(value)?, "[base]")?;
    }
    let base_settings = settings_of(&base, "[base]")?;
    let mut jobs = Vec::new();
    for (i, table) in file.job.iter().enumerate() {
        let at = format!("[[job]] {}", i + 1);
        let mut v = base.clone();
        let mut name = format!("job-{}", i + 1);
        for (key, value) in table {
            if key == "name" {
                name = value.as_str().map(file_name).ok_or_else(|| format!("{at}: name must be text"))?;
                continue;
            }
            set(&mut v, key, toml_to_json(value)?, &at)?;
        }
        jobs.push(Job { name, settings: settings_of(&v, &at)?, cell: None });
    }
    let grid = match &file.grid {
        Some(g) => Some(expand_grid(g, &base, &base_settings, &mut jobs)?),
        None => None,
    };
    if jobs.is_empty() {
        return Err("the batch file has no [[job]] and no [grid]: nothing to run".into());
    }
    if jobs.len() > MAX_JOBS {
        return Err(format!("the batch asks for {} runs; the most is {MAX_JOBS}", jobs.len()));
    }
    let mut seen = std::collections::HashSet::new();
    if let Some(j) = jobs.iter().find(|j| !seen.insert(j.name.clone())) {
        return Err(format!("two jobs are named {:?}; give each its own name", j.name));
    }
    Ok(Plan { jobs, grid })
}

/// An X/Y grid typed in the studio: each axis a key and its values as text, separated
/// by commas (a value in double quotes may hold commas). A value that reads as a TOML
/// value (a number, `true`, a `[list]`) is one; anything else is text. Expands like a
/// batch file's `[grid]` over `base`.
pub fn typed_grid(base: &RunSettings, x: (&str, &str), y: Option<(&str, &str)>) -> Result<Plan, String> {
    let axis = |(key, values): (&str, &str), which: &str| -> Result<AxisFile, String> {
        let key = key.trim();
        if key.is_empty() {
            return Err(format!("{which}: choose a setting"));
        }
        let values: Vec<toml::Value> = split_values(values).iter().map(|v| typed_value(v)).collect();
        if values.is_empty() {
            return Err(format!("{which}: type its values, separated by commas"));
        }
        Ok(AxisFile { key: key.to_owned(), values })
    };
    let g = GridFile { x: axis(x, "x")?, y: y.map(|y| axis(y, "y")).transpose()? };
    let base_value = serde_json::to_value(base).map_err(|e| e.to_string())?;
    let mut jobs = Vec::new();
    let grid = expand_grid(&g, &base_value, base, &mut jobs)?;
    if jobs.len() > MAX_JOBS {
        return Err(format!("the grid asks for {} runs; the most is {MAX_JOBS}", jobs.len()));
    }
    Ok(Plan { jobs, grid: Some(grid) })
}

/// A grid cell's file name without extension: `grid-xI`, or `grid-xI-yJ` on a grid
/// with a y axis (`clipcanvas batch` and the studio's grids alike).
pub fn cell_name(col: usize, row: Option<usize>) -> String {
    match row {
        Some(row) => format!("grid-x{col}-y{row}"),
        None => format!("grid-x{col}"),
    }
}

/// Values typed as `a, b, "c, d"`: split at commas outside double quotes, trimmed, the
/// quotes kept (a quoted value reads as text).
fn split_values(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in text.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out.into_iter().map(|v| v.trim().to_owned()).filter(|v| !v.is_empty()).collect()
}

fn typed_value(text: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {text}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(text.to_owned()))
}

fn expand_grid(
    g: &GridFile,
    base: &Value,
    base_settings: &RunSettings,
    jobs: &mut Vec<Job>,
) -> Result<(Axis, Option<Axis>), String> {
    let axis = |a: &AxisFile, which: &str| -> Result<Axis, String> {
        if a.values.is_empty() {
            return Err(format!("[grid] {which}: values is empty"));
        }
        Ok(Axis { key: a.key.clone(), labels: a.values.iter().map(label).collect() })
    };
    let x = axis(&g.x, "x")?;
    let y = g.y.as_ref().map(|a| axis(a, "y")).transpose()?;
    let rows = g.y.as_ref().map_or(1, |a| a.values.len());
    for row in 0..rows {
        for (col, xv) in g.x.values.iter().enumerate() {
            let mut v = base.clone();
            apply_axis(&mut v, base_settings, &g.x, xv, "[grid] x")?;
            if let Some(ya) = &g.y {
                apply_axis(&mut v, base_settings, ya, &ya.values[row], "[grid] y")?;
            }
            let name = cell_name(col, g.y.is_some().then_some(row));
            let at = format!("[grid] cell {}, {}", col + 1, row + 1);
            jobs.push(Job { name, settings: settings_of(&v, &at)?, cell: Some((col, row)) });
        }
    }
    Ok((x, y))
}

/// Sets one axis's value in a run's settings: `prompt` searches and replaces, `generator`
/// takes a name, any other key is set as it is.
fn apply_axis(v: &mut Value, base: &RunSettings, axis: &AxisFile, value: &toml::Value, at: &str) -> Result<(), String> {
    match axis.key.as_str() {
        "prompt" => {
            let text = |v: &toml::Value| {
                v.as_str().map(str::to_owned).ok_or_else(|| format!("{at}: prompt values must be text"))
            };
            let search = text(&axis.values[0])?;
            let replace = text(value)?;
            let swap = |prompts: &[String]| -> Value { prompts.iter().map(|p| p.replace(&search, &replace)).collect() };
            set(v, "prompts", swap(&base.prompts), at)?;
            let story: Vec<Value> = base.story.iter().map(|stage| swap(stage)).collect();
            set(v, "story", Value::Array(story), at)
        }
        "generator" => {
            let name = value.as_str().ok_or_else(|| format!("{at}: generator values are names (vqgan, pixel, fft)"))?;
            let g = GeneratorSettings::named(name, base.width, base.height)
                .ok_or_else(|| format!("{at}: unknown generator {name:?} (vqgan, pixel, fft)"))?;
            set(v, "generator", serde_json::to_value(g).map_err(|e| e.to_string())?, at)?;
            if g.name() != base.generator.name() {
                set(v, "lr", Value::from(g.default_lr()), at)?;
                set(v, "coarse", Value::Array(Vec::new()), at)?;
            }
            Ok(())
        }
        key => set(v, key, toml_to_json(value)?, at),
    }
}

/// Sets `key` (dotted for nested tables: `looks.symmetry`) in a settings object; a key
/// that is not a setting is an error naming it.
fn set(v: &mut Value, key: &str, value: Value, at: &str) -> Result<(), String> {
    let mut node = v;
    let parts: Vec<&str> = key.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        let Value::Object(map) = node else {
            return Err(format!("{at}: {key:?} is not a setting ({:?} holds no keys)", parts[..i].join(".")));
        };
        if i + 1 == parts.len() {
            // Optional settings (left out of a default file) are taken on trust here and
            // checked when the settings are read. A table merges into the table there
            // (`[base.looks]` keeps the looks it does not name); the generator, one of
            // several kinds, is replaced whole.
            match map.get_mut(*part) {
                Some(old) if *part != "generator" => merge(old, value),
                _ => {
                    map.insert((*part).to_owned(), value);
                }
            }
            return Ok(());
        }
        node = map.entry((*part).to_owned()).or_insert_with(|| Value::Object(serde_json::Map::new()));
    }
    Err(format!("{at}: an empty key"))
}

/// `new` over `old`: tables key by key, anything else replaced.
fn merge(old: &mut Value, new: Value) {
    match (old, new) {
        (Value::Object(old), Value::Object(new)) => {
            for (k, v) in new {
                match old.get_mut(&k) {
                    Some(o) => merge(o, v),
                    None => {
                        old.insert(k, v);
                    }
                }
            }
        }
        (old, new) => *old = new,
    }
}

fn settings_of(v: &Value, at: &str) -> Result<RunSettings, String> {
    let s: RunSettings =
        serde_json::from_value(v.clone()).map_err(|e| format!("{at}: {}", one_line(&e.to_string())))?;
    s.validate().map_err(|e| format!("{at}: {e}"))?;
    Ok(s)
}

fn toml_to_json(v: &toml::Value) -> Result<Value, String> {
    serde_json::to_value(v).map_err(|e| e.to_string())
}

/// A value as a label shows it: text without quotes.
fn label(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A name safe as a file name: letters, digits, `-` and `_`; anything else becomes `_`.
fn file_name(s: &str) -> String {
    let name: String =
        s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
    if name.is_empty() {
        "job".to_owned()
    } else {
        name
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grid_typed_in_the_studio_expands_like_a_file() {
        let base = RunSettings { prompts: vec!["a red barn:1".into()], ..RunSettings::shapes_world() };
        let plan = typed_grid(&base, ("seed", "1, 2,3"), Some(("prompt", "red, \"blue, green\""))).unwrap();
        assert_eq!(plan.jobs.len(), 6);
        assert_eq!(plan.jobs[4].settings.seed, 2);
        assert_eq!(plan.jobs[4].settings.prompts, ["a blue, green barn:1"]);
        assert_eq!(plan.jobs[4].cell, Some((1, 1)));
        let (x, y) = plan.grid.unwrap();
        assert_eq!(x.labels, ["1", "2", "3"]);
        assert_eq!(y.unwrap().labels, ["red", "blue, green"]);
        let plan = typed_grid(&base, ("optimizer", "adam, adamw"), None).unwrap();
        assert_eq!(plan.jobs.len(), 2);
        let plan = typed_grid(&base, ("looks.saturation", "0, 2.5"), None).unwrap();
        assert_eq!(plan.jobs[1].settings.looks.saturation, 2.5);
        let msg = typed_grid(&base, ("lr", "fast"), None).unwrap_err();
        assert!(msg.starts_with("[grid] cell 1, 1: "), "{msg}");
        assert_eq!(typed_grid(&base, ("seed", " , "), None).unwrap_err(), "x: type its values, separated by commas");
        assert!(typed_grid(&base, ("seeed", "1"), None).unwrap_err().contains("seeed"));
    }

    const FILE: &str = r#"
[base]
prompts = ["a lighthouse on a hill"]
iterations = 20
looks.symmetry = 2.0

[[job]]
name = "storm night"
prompts = ["a lighthouse in a storm"]
seed = 5

[grid]
x = { key = "seed", values = [1, 2, 3] }
y = { key = "prompt", values = ["lighthouse", "castle"] }
"#;

    #[test]
    fn jobs_and_a_grid_expand_over_the_base() {
        let plan = parse(FILE, None).expect("plan");
        assert_eq!(plan.jobs.len(), 1 + 6);
        let storm = &plan.jobs[0];
        assert_eq!(storm.name, "storm_night");
        assert_eq!((storm.settings.seed, storm.settings.iterations), (5, 20));
        assert_eq!(storm.settings.looks.symmetry, 2.0, "dotted keys reach inside");
        // A table merges into the settings' own: the start's other looks stay.
        let mut start = RunSettings::shapes_world();
        start.looks.saturation = 0.5;
        let merged = parse("[base.looks]\nsymmetry = 1.0\n[[job]]\n", Some(start)).expect("plan");
        let looks = &merged.jobs[0].settings.looks;
        assert_eq!((looks.saturation, looks.symmetry), (0.5, 1.0));
        assert_eq!(storm.settings.width, 128, "no models named: the shapes world's settings");
        let cell = plan.jobs.iter().find(|j| j.cell == Some((2, 1))).expect("cell");
        assert_eq!(cell.name, "grid-x2-y1");
        assert_eq!(cell.settings.seed, 3);
        assert_eq!(cell.settings.prompts, ["a castle on a hill"]);
        let (x, y) = plan.grid.expect("grid");
        assert_eq!((x.key.as_str(), x.labels), ("seed", vec!["1".to_owned(), "2".into(), "3".into()]));
        assert_eq!(y.expect("y").labels, ["lighthouse", "castle"]);
    }

    #[test]
    fn a_generator_axis_takes_names_and_their_learning_rates() {
        let plan = parse(
            "[grid]\nx = { key = \"generator\", values = [\"vqgan\", \"pixel\"] }\n[base]\nprompts = [\"a\"]",
            None,
        )
        .expect("plan");
        assert_eq!(plan.jobs[1].settings.generator.name(), "pixel");
        assert!((plan.jobs[1].settings.lr - 0.05).abs() < 1e-12);
        assert!(plan.jobs[1].settings.coarse.is_empty());
    }

    #[test]
    fn a_bad_file_is_one_line_naming_the_key() {
        let bad = |text: &str, needle: &str| {
            let e = parse(text, None).expect_err(text);
            assert!(e.contains(needle) && !e.contains('\n'), "{e}");
        };
        bad("[base]\nsede = 3\n[[job]]\n", "[base]: unknown field `sede`");
        bad("[[job]]\ncutn = \"many\"\n", "[[job]] 1: invalid type");
        bad("[[job]]\ncutn = 0\n", "[[job]] 1: cutn 0 is out of range");
        bad("[grid]\nx = { key = \"seed\", values = [] }\n", "[grid] x: values is empty");
        bad("[grid]\nx = { key = \"colour\", values = [1] }\n", "unknown field `colour`");
        bad("[grid]\nx = { key = \"generator\", values = [\"oil\"] }\n", "unknown generator \"oil\"");
        bad("[base]\nseed = 1\n", "nothing to run");
        bad("[[job]]\nname = \"a\"\n[[job]]\nname = \"a\"\n", "two jobs are named \"a\"");
        bad("[[job]\n", "not a batch file");
        bad("[gird]\n", "unknown field `gird`");
    }
}
