//! Full-size architectures ask for exactly the tensors the real files hold.
//!
//! The manifests in tests/fixtures/manifests were written by the reference script from
//! the upstream modules (transformers' CLIPModel, taming's VQModel/GumbelVQ) built at
//! full size on torch's meta device, so loading the real 0.3–1.7 GB files works without
//! having them here.

mod common;

use std::collections::BTreeMap;

use candle_core::Device;
use clipcanvas::models::clip::{Clip, ClipConfig};
use clipcanvas::models::vqgan::{Vqgan, VqganConfig};
use clipcanvas::models::weights::ShapeRecorder;
use common::fixture;

#[derive(serde::Deserialize)]
struct Entry {
    file: String,
    kind: String,
}

#[derive(serde::Deserialize)]
struct Manifest {
    name: String,
    config: serde_json::Value,
    tensors: BTreeMap<String, Vec<usize>>,
}

fn requested(m: &Manifest, kind: &str) -> BTreeMap<String, Vec<usize>> {
    let rec = ShapeRecorder::default();
    let vb = rec.var_builder(&Device::Cpu);
    match kind {
        "clip" => {
            let cfg = ClipConfig::from_json(&m.config.to_string()).unwrap_or_else(|e| panic!("{}: {e}", m.name));
            Clip::new(vb, &cfg).unwrap_or_else(|e| panic!("{}: {e}", m.name));
        }
        "vqgan" => {
            let yaml = m.config.as_str().unwrap_or_else(|| panic!("{}: config is not YAML text", m.name));
            let cfg = VqganConfig::from_yaml(yaml).unwrap_or_else(|e| panic!("{}: {e}", m.name));
            let vb =
                if cfg.weight_prefix.is_empty() { vb } else { vb.push_prefix(cfg.weight_prefix.trim_end_matches('.')) };
            Vqgan::new(vb, &cfg).unwrap_or_else(|e| panic!("{}: {e}", m.name));
        }
        other => panic!("unknown kind {other}"),
    }
    let mut out = BTreeMap::new();
    for (name, shape) in rec.requested() {
        assert!(out.insert(name.clone(), shape).is_none(), "{}: '{name}' requested twice", m.name);
    }
    out
}

#[test]
fn every_supported_model_asks_for_exactly_its_tensors() {
    let index: Vec<Entry> =
        serde_json::from_str(&std::fs::read_to_string(fixture("manifests/index.json")).expect("index")).expect("json");
    assert!(index.len() >= 11, "expected every supported model, got {}", index.len());
    for entry in &index {
        let text = std::fs::read_to_string(fixture(&format!("manifests/{}", entry.file))).expect("manifest");
        let m: Manifest = serde_json::from_str(&text).expect("manifest json");
        let got = requested(&m, &entry.kind);
        let missing: Vec<_> = m.tensors.keys().filter(|k| !got.contains_key(*k)).collect();
        let extra: Vec<_> = got.keys().filter(|k| !m.tensors.contains_key(*k)).collect();
        assert!(missing.is_empty() && extra.is_empty(), "{}: not read {missing:?}; not in the file {extra:?}", m.name);
        for (name, shape) in &m.tensors {
            let want = if shape.is_empty() { vec![] } else { shape.clone() };
            assert_eq!(&got[name], &want, "{}: shape of {name}", m.name);
        }
    }
}
