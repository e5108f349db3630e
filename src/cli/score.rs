//! `clipcanvas score`: rank images against prompts with CLIP.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;

use super::error::CliError;
use crate::engine::device::parse_device;
use crate::engine::score::Scorer;

#[derive(Debug, Args)]
pub struct ScoreArgs {
    /// A Hugging Face CLIP folder (config.json, model.safetensors, tokenizer.json), or an
    /// installed model's name (e.g. clip-vit-b-32).
    #[arg(long)]
    pub clip: PathBuf,
    /// The image to score.
    #[arg(long)]
    pub image: PathBuf,
    /// A prompt; repeat for several. Scores print in the order given.
    #[arg(short, long = "prompt", required = true)]
    pub prompts: Vec<String>,
    /// auto (the first GPU this build can use, else the CPU), cpu, cuda[:N] or metal.
    #[arg(long, default_value = "auto")]
    pub device: String,
}

pub fn run(args: &ScoreArgs) -> Result<(), CliError> {
    let device = parse_device(&args.device)?;
    let clip = super::models::resolve_clip_arg(&args.clip)?;
    let scorer = Scorer::load(&clip, &device)?;
    let scores = scorer.score_file(&args.image, &args.prompts)?;
    let mut out = std::io::stdout().lock();
    for s in scores {
        writeln!(out, "{s:.6}").map_err(|e| CliError::Runtime(e.into()))?;
    }
    Ok(())
}
