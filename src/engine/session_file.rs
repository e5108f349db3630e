//! The session file's envelope: a safetensors file whose metadata holds the session's
//! JSON (settings, iteration, random state, optimiser counters) under
//! `clipcanvas_session`, and a SHA-256 of that JSON and of every tensor (name, dtype,
//! shape, bytes) under `clipcanvas_sha256`, so a file damaged after it was saved is
//! reported as corrupt instead of resumed wrongly. Files written before the checksum
//! existed carry none and are still read. What the JSON means is `session.rs`'s business.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use safetensors::{SafeTensors, View};
use sha2::{Digest, Sha256};

use super::error::{EngineError, Result};

/// The metadata key of the session's JSON.
const SESSION_KEY: &str = "clipcanvas_session";
/// The metadata key of the checksum (absent in files written before it).
const CHECKSUM_KEY: &str = "clipcanvas_sha256";

/// The file's bytes: `tensors` and the session's `json`, with their checksum.
pub(super) fn encode(json: String, tensors: HashMap<String, Tensor>) -> Result<Vec<u8>> {
    let cannot = |e: safetensors::SafeTensorError| EngineError::Input(format!("cannot serialise the session ({e})"));
    let mut entries: Vec<(String, Tensor)> = tensors.into_iter().collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    // The bytes hashed are those `serialize` writes (`View::data`), one tensor at a time.
    let sum = checksum(&json, entries.iter().map(|(n, t)| (n.as_str(), t)));
    let metadata: HashMap<String, String> = [(SESSION_KEY.to_owned(), json), (CHECKSUM_KEY.to_owned(), sum)].into();
    safetensors::serialize(entries, Some(metadata)).map_err(cannot)
}

/// The session JSON and tensors (on the CPU) of the file at `path`: a regular file of at
/// most [`MAX_SESSION_BYTES`](crate::files::MAX_SESSION_BYTES), whose checksum, when it
/// has one, matches.
pub(super) fn decode(path: &Path) -> Result<(String, HashMap<String, Tensor>)> {
    let bad = |msg: String| EngineError::Session { path: path.to_path_buf(), msg };
    let bytes = crate::files::read_bounded(path, crate::files::MAX_SESSION_BYTES, "session file")?;
    let (_, header) = SafeTensors::read_metadata(&bytes)
        .map_err(|e| bad(format!("not a clipcanvas session file, or a damaged one ({e})")))?;
    let metadata = header.metadata().clone().unwrap_or_default();
    let json = metadata
        .get(SESSION_KEY)
        .ok_or_else(|| bad("not a clipcanvas session file (no session metadata)".into()))?
        .clone();
    if let Some(key) = metadata.keys().find(|k| *k != SESSION_KEY && *k != CHECKSUM_KEY) {
        return Err(bad(format!("corrupt session file: unknown metadata entry {key:?}")));
    }
    let views = SafeTensors::deserialize(&bytes)
        .map_err(|e| bad(format!("corrupt session file: its tensors cannot be read ({e})")))?;
    if let Some(saved) = metadata.get(CHECKSUM_KEY) {
        let mut named = views.tensors();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        if *saved != checksum(&json, named.iter().map(|(n, v)| (n.as_str(), v))) {
            return Err(bad("corrupt session file: its checksum does not match its contents \
                 (the file changed after it was saved)"
                .into()));
        }
    }
    let tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)
        .map_err(|e| bad(format!("corrupt session file: its tensors cannot be read ({e})")))?;
    Ok((json, tensors))
}

/// SHA-256, as lowercase hex, of the JSON and every tensor (given in name order): each
/// field length-prefixed, so no two different sessions hash the same bytes.
fn checksum<'a, V: View>(json: &str, tensors: impl Iterator<Item = (&'a str, V)>) -> String {
    let mut h = Sha256::new();
    let mut field = |bytes: &[u8]| {
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    field(b"clipcanvas session checksum 1");
    field(json.as_bytes());
    for (name, view) in tensors {
        field(name.as_bytes());
        field(serde_json::to_string(&view.dtype()).unwrap_or_default().as_bytes());
        let shape: Vec<u8> = view.shape().iter().flat_map(|&d| (d as u64).to_le_bytes()).collect();
        field(&shape);
        field(&view.data());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> HashMap<String, Tensor> {
        let z = Tensor::arange(0f32, 24.0, &Device::Cpu).and_then(|t| t.reshape((1, 2, 3, 4))).expect("z");
        [("z".to_owned(), z.clone()), ("z_orig".to_owned(), z)].into()
    }

    #[test]
    fn round_trips_and_finds_a_flipped_byte_anywhere_in_the_data() {
        let dir = tempfile::tempdir().expect("temp");
        let path = dir.path().join("a.session");
        let bytes = encode("{\"iteration\":7}".into(), sample()).expect("encode");
        std::fs::write(&path, &bytes).expect("write");
        let (json, tensors) = decode(&path).expect("decode");
        assert_eq!(json, "{\"iteration\":7}");
        assert_eq!(tensors["z"].dims(), &[1, 2, 3, 4]);
        // Every byte of the tensor data and every digit of the JSON is covered.
        let header = usize::try_from(u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"))).expect("len");
        let digit = bytes.windows(2).position(|w| w == b":7").expect("the iteration") + 1;
        for at in (8 + header..bytes.len()).chain([digit]) {
            let mut bad = bytes.clone();
            bad[at] ^= 0x04;
            std::fs::write(&path, &bad).expect("write");
            let msg = decode(&path).expect_err("corrupt").to_string();
            assert!(msg.contains("corrupt session file") || msg.contains("damaged"), "byte {at}: {msg}");
        }
    }

    #[test]
    fn a_file_without_a_checksum_still_loads() {
        let dir = tempfile::tempdir().expect("temp");
        let path = dir.path().join("old.session");
        // What the releases before the checksum wrote: the JSON alone.
        let mut entries: Vec<(String, Tensor)> = sample().into_iter().collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        let meta: HashMap<String, String> = [(SESSION_KEY.to_owned(), "{}".to_owned())].into();
        std::fs::write(&path, safetensors::serialize(entries, Some(meta)).expect("serialise")).expect("write");
        let (json, tensors) = decode(&path).expect("an old file loads");
        assert_eq!((json.as_str(), tensors.len()), ("{}", 2));
    }
}
