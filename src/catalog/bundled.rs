//! The models that come with clipcanvas: the shapes world (see `crate::demo`), a tiny
//! CLIP and VQGAN trained by `clipcanvas train-demo` and kept in the repository's
//! `models/shapes-world/`. They are the default when no models are given.

use std::path::{Path, PathBuf};

/// The folder name of the shapes world inside a models folder.
pub const SHAPES_WORLD: &str = "shapes-world";

/// What clipcanvas says once when it falls back to the shapes world.
pub const DEMO_NOTICE: &str = "demo models: shapes world — install real models for art, see README";

/// The shapes world's files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapesWorld {
    /// The CLIP folder (config.json, model.safetensors, tokenizer.json).
    pub clip: PathBuf,
    /// The VQGAN weights; its `model.yaml` sits beside them.
    pub vqgan: PathBuf,
    /// The one-step model's folder, when it is there.
    pub onestep: Option<PathBuf>,
}

impl ShapesWorld {
    /// The shapes world inside a models folder, if its files are all there.
    pub fn in_folder(models: &Path) -> Option<Self> {
        let root = models.join(SHAPES_WORLD);
        let onestep = root.join("onestep");
        let onestep = ["config.json", "model.safetensors"].iter().all(|f| onestep.join(f).is_file()).then_some(onestep);
        let world = Self { clip: root.join("clip"), vqgan: root.join("vqgan").join("model.safetensors"), onestep };
        let complete =
            ["config.json", "model.safetensors", "tokenizer.json"].iter().all(|f| world.clip.join(f).is_file())
                && world.vqgan.is_file()
                && world.vqgan.with_extension("yaml").is_file();
        complete.then_some(world)
    }
}

/// The folders searched for the shapes world: the model store's roots
/// ([`super::store::default_roots`]), in its order.
pub fn search_folders() -> Vec<PathBuf> {
    super::store::default_roots(&[]).into_iter().map(|r| r.path).collect()
}

/// The first complete shapes world in [`search_folders`].
pub fn shapes_world() -> Option<ShapesWorld> {
    search_folders().iter().find_map(|f| ShapesWorld::in_folder(f))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_incomplete_world_is_not_found() {
        let dir = std::env::temp_dir().join(format!("clipcanvas-bundled-{}", std::process::id()));
        let clip = dir.join(SHAPES_WORLD).join("clip");
        std::fs::create_dir_all(&clip).ok();
        for f in ["config.json", "model.safetensors", "tokenizer.json"] {
            std::fs::write(clip.join(f), b"x").ok();
        }
        assert_eq!(ShapesWorld::in_folder(&dir), None, "no VQGAN yet");
        let vq = dir.join(SHAPES_WORLD).join("vqgan");
        std::fs::create_dir_all(&vq).ok();
        std::fs::write(vq.join("model.safetensors"), b"x").ok();
        assert_eq!(ShapesWorld::in_folder(&dir), None, "no YAML yet");
        std::fs::write(vq.join("model.yaml"), b"x").ok();
        let found = ShapesWorld::in_folder(&dir);
        std::fs::remove_dir_all(&dir).ok();
        assert_eq!(found.map(|w| w.vqgan), Some(vq.join("model.safetensors")));
    }
}
