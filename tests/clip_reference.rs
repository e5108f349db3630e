//! CLIP and its tokenizer against the PyTorch reference (tests/reference/make_fixtures.py):
//! token ids against open_clip, embeddings against transformers' CLIPModel.

mod common;

use candle_core::{DType, Tensor};
use clipcanvas::models::clip;
use clipcanvas::models::tokenizer::ClipTokenizer;
use common::{assert_close, fixture, golden};

#[derive(serde::Deserialize)]
struct Case {
    text: String,
    ids: Vec<u32>,
}

#[test]
fn tokenizer_matches_open_clip() {
    let tok = ClipTokenizer::from_file(&fixture("tokenizer/tokenizer.json"), 77).expect("tokenizer");
    let cases: Vec<Case> =
        serde_json::from_str(&std::fs::read_to_string(fixture("tokenizer/cases.json")).expect("cases")).expect("json");
    assert!(cases.len() >= 50, "only {} cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let (ids, _) = tok.encode(&case.text).expect("encode");
        if ids != case.ids {
            failures.push(format!("{:?}\n   got  {:?}\n   want {:?}", case.text, trim(&ids), trim(&case.ids)));
        }
    }
    assert!(failures.is_empty(), "{} of {} differ:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

fn trim(ids: &[u32]) -> &[u32] {
    let end = ids.iter().rposition(|&v| v != 0).map_or(0, |p| p + 1);
    &ids[..end]
}

#[test]
fn long_prompts_are_truncated_with_end_marker_last() {
    let tok = ClipTokenizer::from_file(&fixture("tokenizer/tokenizer.json"), 77).expect("tokenizer");
    let long = "a painting of a lighthouse by the sea ".repeat(20);
    let (ids, truncated) = tok.encode(&long).expect("encode");
    assert!(truncated);
    assert_eq!(ids.len(), 77);
    assert_eq!(ids[0], 49406);
    assert_eq!(ids[76], 49407);
}

#[test]
fn text_and_image_embeddings_match_transformers() {
    let (model, _) = clip::load(&fixture("clip-tiny"), DType::F32, &common::device()).expect("load clip-tiny");
    let g = golden("clip-tiny/expected.safetensors");
    let ids = g["input_ids"].to_dtype(DType::U32).expect("ids");
    assert_close("text hidden", &model.text_model().hidden_states(&ids).expect("text"), &g["text_hidden"], 1e-4);
    assert_close("text_embeds", &model.encode_text(&ids).expect("text"), &g["text_embeds"], 1e-4);
    assert_close(
        "vision pooled",
        &model.vision_model().pooled(&g["pixel_values"]).expect("vision"),
        &g["vision_pooled"],
        1e-4,
    );
    assert_close("image_embeds", &model.encode_image(&g["pixel_values"]).expect("image"), &g["image_embeds"], 1e-4);
    let scale =
        g["logit_scale"].to_dtype(DType::F32).expect("f32").flatten_all().expect("flat").to_vec1::<f32>().expect("v")
            [0];
    assert!((model.logit_scale().expect("scale").ln() - scale).abs() < 1e-5);
}

/// The real CLIP tokenizer cut down to `vocab_size` ids, the two special tokens last, so
/// that it fits a model with that many token embeddings (clip-tiny-bin has 1024; the whole
/// vocabulary would be refused as belonging to another model).
fn tokenizer_within(vocab_size: usize) -> Vec<u8> {
    use serde_json::{json, Map, Value};
    let text = std::fs::read_to_string(fixture("tokenizer/tokenizer.json")).expect("tokenizer");
    let mut t: Value = serde_json::from_str(&text).expect("tokenizer json");
    let (sot, eot) = (vocab_size - 2, vocab_size - 1);
    let vocab: Map<String, Value> = t["model"]["vocab"]
        .as_object()
        .expect("vocab")
        .iter()
        .filter(|(_, id)| id.as_u64().is_some_and(|id| (id as usize) < sot))
        .map(|(k, v)| (k.clone(), v.clone()))
        .chain([("<|startoftext|>".to_owned(), json!(sot)), ("<|endoftext|>".to_owned(), json!(eot))])
        .collect();
    let merges: Vec<Value> = t["model"]["merges"]
        .as_array()
        .expect("merges")
        .iter()
        .filter(|m| {
            let (a, b) = m.as_str().and_then(|m| m.split_once(' ')).expect("merge");
            vocab.contains_key(a) && vocab.contains_key(b) && vocab.contains_key(&format!("{a}{b}"))
        })
        .cloned()
        .collect();
    t["model"]["vocab"] = Value::Object(vocab);
    t["model"]["merges"] = Value::Array(merges);
    t["added_tokens"][0]["id"] = json!(sot);
    t["added_tokens"][1]["id"] = json!(eot);
    t["post_processor"]["cls"][1] = json!(sot);
    t["post_processor"]["sep"][1] = json!(eot);
    serde_json::to_vec(&t).expect("serialise")
}

#[test]
fn pytorch_model_bin_folder_loads_and_matches() {
    // The reference saved only config.json and pytorch_model.bin; a published folder
    // also has tokenizer.json, so put it beside them.
    let dir = tempfile::tempdir().expect("temp");
    for f in ["config.json", "pytorch_model.bin"] {
        std::fs::copy(fixture(&format!("clip-tiny-bin/{f}")), dir.path().join(f)).expect("copy");
    }
    std::fs::write(dir.path().join("tokenizer.json"), tokenizer_within(1024)).expect("write tokenizer");
    let (model, _) = clip::load(dir.path(), DType::F32, &common::device()).expect("load clip-tiny-bin");
    let g = golden("clip-tiny-bin/expected.safetensors");
    let ids = g["input_ids"].to_dtype(DType::U32).expect("ids");
    assert_close("text_embeds", &model.encode_text(&ids).expect("text"), &g["text_embeds"], 1e-4);
    assert_close("image_embeds", &model.encode_image(&g["pixel_values"]).expect("image"), &g["image_embeds"], 1e-4);
}

#[test]
fn tokenized_prompts_embed_like_open_clip_ids() {
    // The whole text path from a prompt string: our tokenizer feeding our model gives the
    // reference embedding of open_clip's ids.
    let (model, tok) = clip::load(&fixture("clip-tiny"), DType::F32, &common::device()).expect("load");
    let g = golden("clip-tiny/expected.safetensors");
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("clip-tiny/expected.json")).expect("meta"))
            .expect("json");
    let prompts: Vec<String> = serde_json::from_value(meta["prompts"].clone()).expect("prompts");
    let mut ids = Vec::new();
    for p in &prompts {
        ids.extend(tok.encode(p).expect("encode").0);
    }
    let ids = Tensor::from_vec(ids, (prompts.len(), 77), &common::device()).expect("ids");
    assert_close("text_embeds from strings", &model.encode_text(&ids).expect("text"), &g["text_embeds"], 1e-4);
}
