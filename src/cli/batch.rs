//! `clipcanvas batch FILE.toml`: runs a list of jobs and an X/Y grid described in TOML
//! (`settings::batch`), one after another, each written atomically as a PNG with its
//! settings; a grid's cells also go on a labelled contact sheet. The whole file is
//! checked before anything runs. `--resume` skips the jobs whose PNG is there with the
//! same settings. Ctrl-C (SIGTERM, SIGHUP) stops between iterations: the finished jobs
//! stay, and `--resume` goes on from the one that was stopped.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use clap::Args;

use super::error::CliError;
use super::run_args::{input, read_settings_file, runtime};
use crate::engine::device::parse_device;
use crate::engine::loaded::{load_models, resolve_models, ModelKey, Models};
use crate::engine::observer::{Frame, Observer, StepStats};
use crate::engine::session::{RunEnd, Session};
use crate::export;
use crate::settings::batch::{self, Job, Plan};
use crate::settings::png::PngMeta;
use crate::settings::RunSettings;

#[derive(Debug, Args)]
pub struct BatchArgs {
    /// The batch file: [base] settings, [[job]] overrides and a [grid] of two axes.
    pub file: PathBuf,
    /// The folder the jobs' PNGs (NAME.png) and the grid's contact sheet (grid.png) go to.
    #[arg(short, long, default_value = "batch")]
    pub out: PathBuf,
    /// Start the base from a settings file or a clipcanvas PNG.
    #[arg(long)]
    pub settings: Option<PathBuf>,
    /// Skip the jobs whose PNG is in the folder already, made with the same settings.
    #[arg(long)]
    pub resume: bool,
    /// Run jobs even where the memory estimate says they will not fit.
    #[arg(long)]
    pub no_memory_check: bool,
}

fn say(line: std::fmt::Arguments<'_>) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Reads, expands and checks the whole file: every job's settings (model names resolved),
/// before anything runs.
fn plan(args: &BatchArgs) -> Result<Plan, CliError> {
    let bytes = crate::files::read_bounded(&args.file, 1 << 20, "batch file").map_err(input)?;
    let text = String::from_utf8(bytes).map_err(|_| input(format!("{}: not UTF-8 text", args.file.display())))?;
    let start = args.settings.as_deref().map(read_settings_file).transpose()?;
    let mut plan = batch::parse(&text, start).map_err(|e| input(format!("{}: {e}", args.file.display())))?;
    for job in &mut plan.jobs {
        job.settings = super::models::resolve_names(job.settings.clone())?;
        if job.settings.iterations > 0 {
            job.settings.check_objective().map_err(|e| input(format!("job {}: {e}", job.name)))?;
        }
        resolve_models(&job.settings).map_err(|e| input(format!("job {}: {e}", job.name)))?;
    }
    Ok(plan)
}

/// Whether `path` holds a finished job of `settings`: a clipcanvas PNG with those
/// settings, at its last iteration.
fn done(path: &Path, settings: &RunSettings) -> bool {
    let Ok(Some(meta)) = export::read_png_metadata(path) else { return false };
    serde_json::from_str::<PngMeta>(&meta).is_ok_and(|m| m.settings == *settings && m.iteration == settings.iterations)
}

/// The models of the last job, kept while the next job asks for the same.
#[derive(Default)]
struct ModelCache {
    loaded: Option<(ModelKey, Arc<Models>)>,
}

impl ModelCache {
    fn get(&mut self, s: &RunSettings) -> Result<Arc<Models>, CliError> {
        let key = ModelKey::of(s);
        if let Some((k, m)) = &self.loaded {
            if k.serves(&key) {
                return Ok(Arc::clone(m));
            }
        }
        self.loaded = None;
        let models = Arc::new(load_models(s, &parse_device(&s.device)?)?);
        self.loaded = Some((key, Arc::clone(&models)));
        Ok(models)
    }
}

/// Reports a job's progress every tenth of its iterations.
struct JobObserver {
    label: String,
}

impl Observer for JobObserver {
    fn on_step(&mut self, stats: &StepStats) {
        let every = (stats.iterations / 10).max(1);
        let done = stats.iteration + 1;
        if done.is_multiple_of(every) || done == stats.iterations {
            say(format_args!("{}: iteration {done}/{} loss {:.4}", self.label, stats.iterations, stats.total_loss));
        }
    }

    fn on_frame(&mut self, _iteration: usize, _frame: &Frame) {}

    fn frame_every(&self) -> usize {
        0
    }

    fn notice(&mut self, message: &str) {
        say(format_args!("{}: note: {message}", self.label));
    }
}

/// Runs one job to its PNG; `Ok(false)` when stopped (nothing written).
fn run_job(
    job: &Job,
    label: &str,
    out: &Path,
    cache: &mut ModelCache,
    args: &BatchArgs,
    cancel: &Arc<AtomicBool>,
) -> Result<bool, CliError> {
    let s = &job.settings;
    if !args.no_memory_check && parse_device(&s.device)?.is_cpu() {
        super::generate::check_memory(s, None)?;
    }
    let models = cache.get(s)?;
    let hashes = super::generate::model_hashes(models.source.as_ref(), s)?;
    let mut session = Session::new(models, s.clone())?;
    let mut observer = JobObserver { label: label.to_owned() };
    if session.run(&mut observer, cancel)? == RunEnd::Cancelled {
        return Ok(false);
    }
    let meta = PngMeta::new(session.settings(), session.iteration(), hashes).to_json().map_err(input)?;
    export::write_png(out, &session.render_rgb()?, Some(&meta)).map_err(runtime)?;
    Ok(true)
}

pub fn run(args: &BatchArgs) -> Result<(), CliError> {
    let plan = plan(args)?;
    std::fs::create_dir_all(&args.out)
        .map_err(|e| input(format!("--out {}: cannot make the folder ({e})", args.out.display())))?;
    let cancel = Arc::new(AtomicBool::new(false));
    {
        let cancel = Arc::clone(&cancel);
        let _ = ctrlc::set_handler(move || cancel.store(true, Ordering::Relaxed));
    }
    let total = plan.jobs.len();
    let mut cache = ModelCache::default();
    let mut failed = Vec::new();
    for (i, job) in plan.jobs.iter().enumerate() {
        let out = args.out.join(format!("{}.png", job.name));
        let label = format!("[{}/{total}] {}", i + 1, job.name);
        if args.resume && done(&out, &job.settings) {
            say(format_args!("{label}: done already"));
            continue;
        }
        match run_job(job, &label, &out, &mut cache, args, &cancel) {
            Ok(true) => say(format_args!("{label}: wrote {}", out.display())),
            Ok(false) => {
                say(format_args!("{label}: stopped; the jobs before it are kept (--resume goes on)"));
                return Err(CliError::Interrupted);
            }
            Err(e) => {
                say(format_args!("{label}: error: {e}"));
                failed.push(job.name.clone());
            }
        }
    }
    if let Some((x, y)) = &plan.grid {
        let sheet_path = args.out.join("grid.png");
        let rows = y.as_ref().map_or(1, |a| a.labels.len());
        let mut cells = vec![vec![None; x.labels.len()]; rows];
        for job in &plan.jobs {
            if let Some((col, row)) = job.cell {
                let png = args.out.join(format!("{}.png", job.name));
                cells[row][col] = image::open(&png).ok().map(|i| i.to_rgb8());
            }
        }
        let sheet = export::sheet::contact_sheet(
            &cells,
            &x.key,
            &x.labels,
            y.as_ref().map(|a| (a.key.as_str(), a.labels.as_slice())),
        );
        export::write_png(&sheet_path, &sheet, None).map_err(runtime)?;
        say(format_args!("contact sheet: {}", sheet_path.display()));
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(runtime(anyhow::anyhow!("{} of {total} jobs failed: {}", failed.len(), failed.join(", "))))
    }
}
