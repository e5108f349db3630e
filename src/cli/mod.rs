//! The headless command line: argument parsing and the subcommands. Each subcommand
//! validates its arguments, calls the engine, and returns an error for `main` to print
//! once.

pub mod animate;
pub mod batch;
pub mod bench;
mod error;
pub mod generate;
pub mod models;
mod preflight;
pub mod run_args;
pub mod score;
pub mod train_demo;
pub mod train_onestep;

use clap::{Parser, Subcommand};

pub use error::CliError;

/// clipcanvas: a studio for VQGAN+CLIP text-to-image art.
#[derive(Debug, Parser)]
#[command(name = "clipcanvas", version, about, args_override_self = true)]
pub struct Cli {
    /// Open the studio with these settings (a settings JSON or a PNG made by clipcanvas).
    #[arg(long, global = false)]
    pub settings: Option<std::path::PathBuf>,
    /// Start the run as soon as the studio opens.
    #[arg(long)]
    pub start: bool,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Make an image from prompts, headless.
    Generate(Box<generate::GenerateArgs>),
    /// Make an animation: keyframed zoom, rotation and pan, prompt schedules, video
    /// restyling; frames, GIF and video, headless.
    Animate(Box<animate::AnimateArgs>),
    /// Run a batch of jobs and an X/Y grid from a TOML file, headless: a PNG a job and a
    /// labelled contact sheet of the grid.
    Batch(batch::BatchArgs),
    /// Print the CLIP cosine similarity of an image with each prompt, one per line.
    Score(score::ScoreArgs),
    /// Train the built-in shapes-world CLIP and VQGAN (about 40 minutes on 2 cores).
    TrainDemo(train_demo::TrainDemoArgs),
    /// Train a one-step generator (text → image in one pass) for a CLIP + VQGAN pair,
    /// from a folder of images or the shapes world.
    TrainOnestep(Box<train_onestep::TrainOneStepArgs>),
    /// List, download and verify the pretrained models.
    Models(models::ModelsArgs),
    /// Time iterations at standard settings (random full-size weights), stage by stage.
    Bench(bench::BenchArgs),
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Some(Command::Generate(args)) => generate::run(&args),
        Some(Command::Animate(args)) => animate::run(&args),
        Some(Command::Batch(args)) => batch::run(&args),
        Some(Command::Score(args)) => score::run(&args),
        Some(Command::TrainDemo(args)) => train_demo::run(&args),
        Some(Command::TrainOnestep(args)) => train_onestep::run(&args),
        Some(Command::Models(args)) => models::run(&args),
        Some(Command::Bench(args)) => bench::run(&args),
        None => open_studio(&cli),
    }
}

#[cfg(feature = "studio")]
fn open_studio(cli: &Cli) -> Result<(), CliError> {
    let settings = match &cli.settings {
        Some(path) => Some(run_args::read_settings_file(path)?),
        None => None,
    };
    crate::ui::run_studio(crate::ui::StudioOptions { settings, start: cli.start }).map_err(CliError::Runtime)
}

/// A headless build has no studio to open: it says so and how to run a command instead.
#[cfg(not(feature = "studio"))]
fn open_studio(_cli: &Cli) -> Result<(), CliError> {
    Err(CliError::Input(anyhow::anyhow!(
        "this clipcanvas is headless (built without the `studio` feature): give it a command, such as \
         `clipcanvas generate -p \"a lighthouse\"`, or see `clipcanvas --help`"
    )))
}
