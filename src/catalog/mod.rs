//! Model files on disk: the catalog of known models (`models/catalog.toml`, built in),
//! where installed models are found ([`store`]), resumable checked downloads
//! ([`download`]), what a model file really holds ([`format`]), the built-in shapes
//! world ([`bundled`]), and the download service the studio's model manager runs on a
//! thread ([`service`]). The networks themselves are `crate::models`; this module only
//! knows files, and borrows the models' file readers (torch archive, safetensors header,
//! config, YAML and tokenizer parsers) to check that a file is what its name says.

pub mod bundled;
pub mod download;
pub mod entries;
pub mod error;
pub mod format;
pub mod service;
pub mod store;

pub use error::CatalogError;
