//! clipcanvas's fuzz targets; see `targets` and docs/fuzzing.md.
pub mod targets;
