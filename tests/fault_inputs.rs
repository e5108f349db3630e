//! `clipcanvas generate` fed hostile input files (the hardening issue, items 2, 7 and the
//! input-file parts of 9): decompression bombs, files that are not regular files, deep
//! nesting, corrupted checkpoints and sessions, truncated images, byte-order marks,
//! relative paths in settings files, a tokenizer from another model, and huge prompts.
//! Each failure checks the exit code, the one error line, that nothing panicked, and
//! that the folder is left exactly as it was; each success checks what was made.

mod common;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::Path;
use std::process::Output;

use common::{bin, fails, fixture, model_args, ok, read, tree};

/// A small, fast run: 32×32, 2 cutouts, 2 iterations.
fn generate(dir: &Path, extra: &[&str]) -> Output {
    let mut cmd = bin();
    cmd.arg("generate").args(model_args()).args(["-s", "32x32", "--cutn", "2", "-i", "2", "--save-every", "1"]);
    cmd.args(extra).current_dir(dir);
    cmd.output().expect("run clipcanvas")
}

/// Asserts the run failed with exit 2 and one line holding `needle`, leaving `dir` as
/// `before`; the error line.
fn refused(dir: &Path, before: &BTreeMap<OsString, Vec<u8>>, out: &Output, needle: &str) -> String {
    let stderr = fails(out, 2, needle);
    assert!(tree(dir) == *before, "the folder changed: {:?}", tree(dir).keys().collect::<Vec<_>>());
    stderr
}

fn copy(from: &Path, to: &Path) {
    std::fs::copy(from, to).unwrap_or_else(|e| panic!("{} → {}: {e}", from.display(), to.display()));
}

/// A FIFO at `path` (nothing ever writes to it: a reader that opens it would wait forever).
#[cfg(unix)]
fn mkfifo(path: &Path) {
    let status = std::process::Command::new("mkfifo").arg(path).status().expect("mkfifo");
    assert!(status.success(), "mkfifo {}", path.display());
}

// ---------------------------------------------------------------------------------------
// Builders of hostile files
// ---------------------------------------------------------------------------------------

/// Writes bits least significant first, as deflate does.
#[derive(Default)]
struct Bits {
    out: Vec<u8>,
    acc: u64,
    n: u32,
}

impl Bits {
    fn put(&mut self, value: u32, len: u32) {
        self.acc |= u64::from(value) << self.n;
        self.n += len;
        while self.n >= 8 {
            self.out.push((self.acc & 0xFF) as u8);
            self.acc >>= 8;
            self.n -= 8;
        }
    }

    /// A Huffman code: its bits go most significant first.
    fn code(&mut self, code: u32, len: u32) {
        let reversed = (0..len).fold(0, |r, i| r | (((code >> i) & 1) << (len - 1 - i)));
        self.put(reversed, len);
    }

    fn finish(mut self) -> Vec<u8> {
        if self.n > 0 {
            self.out.push((self.acc & 0xFF) as u8);
        }
        self.out
    }
}

/// A zlib stream that inflates to `1 + 258 × copies` bytes of 'a' at about 160:1: one
/// fixed-Huffman block of a literal and `copies` back-references of 258 bytes at
/// distance 1.
fn zlib_bomb(copies: u64) -> Vec<u8> {
    let mut bits = Bits::default();
    bits.put(1, 1); // the final block
    bits.put(1, 2); // fixed Huffman codes
    bits.code(0x30 + u32::from(b'a'), 8);
    for _ in 0..copies {
        bits.code(0b1100_0101, 8); // length 258 (code 285)
        bits.code(0, 5); // distance 1
    }
    bits.code(0, 7); // end of block
    let mut out = vec![0x78, 0x01];
    out.extend(bits.finish());
    let n = u128::from(1 + 258 * copies);
    let a = (1 + 97 * n) % 65_521;
    let b = (n + 97 * n * (n + 1) / 2) % 65_521;
    out.extend(u32::try_from((b << 16) | a).expect("adler").to_be_bytes());
    out
}

/// A 1×1 PNG whose compressed `clipcanvas` iTXt chunk inflates to `inflated` bytes.
fn png_text_bomb(inflated: u64) -> Vec<u8> {
    let mut data = b"clipcanvas\0\x01\x00\0\0".to_vec(); // keyword, compressed, zlib, no language
    data.extend(zlib_bomb(inflated / 258));
    let mut png = Vec::new();
    let mut enc = png::Encoder::new(&mut png, 1, 1);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut w = enc.write_header().expect("header");
    w.write_chunk(png::chunk::ChunkType(*b"iTXt"), &data).expect("iTXt");
    w.write_image_data(&[0, 0, 0]).expect("pixels");
    w.finish().expect("finish");
    png
}

/// A PNG chunk: length, type, data, CRC-32.
fn chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut out = u32::try_from(data.len()).expect("len").to_be_bytes().to_vec();
    out.extend(kind);
    out.extend(data);
    let mut crc = crc32fast::Hasher::new();
    crc.update(kind);
    crc.update(data);
    out.extend(crc.finalize().to_be_bytes());
    out
}

/// A PNG that says it is `side`×`side` RGB (75 GB of pixels at 100 000) and holds none.
fn png_dimension_bomb(side: u32) -> Vec<u8> {
    let mut ihdr = side.to_be_bytes().to_vec();
    ihdr.extend(side.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend(chunk(b"IHDR", &ihdr));
    png.extend(chunk(b"IDAT", &zlib_bomb(4)));
    png.extend(chunk(b"IEND", &[]));
    png
}

/// A 64×64 JPEG of a gradient.
fn jpeg() -> Vec<u8> {
    let img = image::RgbImage::from_fn(64, 64, |x, y| image::Rgb([(x * 4) as u8, (y * 4) as u8, 128]));
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90).encode_image(&img).expect("jpeg");
    out
}

// ---------------------------------------------------------------------------------------
// Item 2: decompression and dimension bombs
// ---------------------------------------------------------------------------------------

/// Hardening issue, item 2: a small PNG whose clipcanvas text inflates to 256 MiB is
/// refused as it inflates (at 8 MiB), not inflated until memory runs out.
#[test]
fn a_png_text_bomb_as_settings_is_refused_as_it_inflates() {
    let dir = tempfile::tempdir().expect("temp");
    let d = dir.path();
    let bomb = png_text_bomb(256 << 20);
    assert!(bomb.len() < 2 << 20, "the bomb is small: {} bytes", bomb.len());
    std::fs::write(d.join("bomb.png"), &bomb).expect("write");
    let before = tree(d);
    let out = generate(d, &["--settings", "bomb.png", "-p", "x"]);
    refused(d, &before, &out, "its clipcanvas text inflates past 8 MiB");
}

/// Hardening issue, item 2: an image that claims 100 000 × 100 000 pixels, as init image
/// and as image prompt, is refused from its header, before any pixel is decoded.
#[test]
fn a_dimension_bomb_image_is_refused_from_its_header() {
    let dir = tempfile::tempdir().expect("temp");
    let d = dir.path();
    std::fs::write(d.join("huge.png"), png_dimension_bomb(100_000)).expect("write");
    let before = tree(d);
    for flag in ["--init-image", "--image-prompt"] {
        let out = generate(d, &["-p", "x", flag, "huge.png"]);
        refused(d, &before, &out, "it is 100000×100000; clipcanvas reads images of at most 16384 pixels a side");
    }
}

// ---------------------------------------------------------------------------------------
// Item 7: endless and slow inputs
// ---------------------------------------------------------------------------------------

/// Hardening issue, item 7: `/dev/zero`, a FIFO and a folder given as the settings, the
/// session to resume, the init image, an image prompt or the VQGAN config are refused at
/// once, as not regular files (a FIFO nobody writes to would otherwise block forever,
/// `/dev/zero` fill memory).
#[cfg(unix)]
#[test]
fn files_that_are_not_regular_files_are_refused_at_once() {
    let dir = tempfile::tempdir().expect("temp");
    let d = dir.path();
    mkfifo(&d.join("fifo"));
    std::fs::create_dir(d.join("folder")).expect("mkdir");
    let before = tree(d);
    for target in ["/dev/zero", "fifo", "folder"] {
        for flag in ["--settings", "--resume", "--init-image", "--image-prompt", "--vqgan-config"] {
            let out = generate(d, &["-p", "x", flag, target]);
            let line = refused(d, &before, &out, "is not a regular file");
            let kind = match target {
                "/dev/zero" => "a device",
                "fifo" => "a FIFO",
                _ => "a folder",
            };
            assert!(line.contains(kind) && line.contains(target), "{flag} {target}: {line}");
        }
    }
}

/// Hardening issue, item 7: weight files, memory-mapped or read as zips, are refused the
/// same way when they are not regular files (a FIFO would block the open, `/dev/zero`
/// map as nothing).
#[cfg(unix)]
#[test]
fn weight_files_that_are_not_regular_files_are_refused() {
    use clipcanvas::models::weights::torch::TorchArchive;
    use clipcanvas::models::weights::WeightFile;
    let dir = tempfile::tempdir().expect("temp");
    let fifo = dir.path().join("model.safetensors");
    mkfifo(&fifo);
    for path in [fifo.as_path(), Path::new("/dev/zero"), dir.path()] {
        let msg = WeightFile::open_safetensors(path).expect_err("refused").to_string();
        assert!(msg.contains("is not a regular file"), "{msg}");
        let msg = TorchArchive::open(path, None).expect_err("refused").to_string();
        assert!(msg.contains("is not a regular file"), "{msg}");
    }
}

/// Hardening issue, item 7: a VQGAN config nested 100 000 deep — as compact sequences
/// (`- - - …`), as flow brackets (`[[[…`, `{a: {a: …`) and by indentation — is refused
/// before the YAML parser sees it (the flow forms took 52 s and 216 s before).
#[test]
fn deep_yaml_configs_are_refused_before_parsing() {
    let dir = tempfile::tempdir().expect("temp");
    let d = dir.path();
    let deep = 100_000;
    std::fs::write(d.join("compact.yaml"), format!("{}x\n", "- ".repeat(deep))).expect("write");
    std::fs::write(d.join("flow.yaml"), format!("model: {}{}\n", "[".repeat(deep), "]".repeat(deep))).expect("write");
    std::fs::write(d.join("maps.yaml"), format!("model: {}1{}\n", "{a: ".repeat(deep), "}".repeat(deep)))
        .expect("write");
    let indented: String = (0..200).map(|i| format!("{}k{i}:\n", " ".repeat(i))).collect();
    std::fs::write(d.join("indented.yaml"), indented).expect("write");
    let before = tree(d);
    for name in ["compact.yaml", "flow.yaml", "maps.yaml", "indented.yaml"] {
        let out = generate(d, &["-p", "x", "--vqgan-config", name]);
        refused(d, &before, &out, "nested deeper than 64 levels");
    }
}

/// Hardening issue, item 7: a settings file nested 100 000 deep is refused by the JSON
/// parser's depth limit (128), not parsed.
#[test]
fn deep_json_settings_are_refused() {
    let dir = tempfile::tempdir().expect("temp");
    let d = dir.path();
    let deep = 100_000;
    std::fs::write(d.join("deep.json"), format!("{}{}", "[".repeat(deep), "]".repeat(deep))).expect("write");
    let nested = format!("{{\"prompts\": {}\"x\"{}}}", "[".repeat(deep), "]".repeat(deep));
    std::fs::write(d.join("nested.json"), nested).expect("write");
    let before = tree(d);
    for name in ["deep.json", "nested.json"] {
        let out = generate(d, &["--settings", name]);
        refused(d, &before, &out, "recursion limit exceeded");
    }
}

// ---------------------------------------------------------------------------------------
// Item 9: silent corruption
// ---------------------------------------------------------------------------------------

/// Hardening issue, item 9: one flipped byte in a weight entry of a PyTorch checkpoint is
/// caught by the entry's CRC-32 and reported as corruption naming the entry.
#[test]
fn a_flipped_byte_in_a_checkpoint_fails_its_crc() {
    let dir = tempfile::tempdir().expect("temp");
    let d = dir.path();
    copy(&fixture("vqgan-tiny/model.ckpt"), &d.join("model.ckpt"));
    copy(&fixture("vqgan-tiny/model.yaml"), &d.join("model.yaml"));
    // The largest storage: a convolution the decoder reads.
    let (entry, at) = {
        let mut zip = zip::ZipArchive::new(std::fs::File::open(d.join("model.ckpt")).expect("open")).expect("zip");
        let names: Vec<String> = zip
            .file_names()
            .filter_map(Result::ok)
            .filter(|n| n.contains("/data/"))
            .map(std::borrow::Cow::into_owned)
            .collect();
        let mut best = (String::new(), 0u64, 0u64);
        for name in names {
            let f = zip.by_name(&name).expect("entry");
            if f.size() > best.2 {
                best = (name.clone(), f.data_start().expect("start"), f.size());
            }
        }
        (best.0, best.1 + best.2 / 2)
    };
    let mut bytes = read(&d.join("model.ckpt"));
    bytes[usize::try_from(at).expect("offset")] ^= 0x10;
    std::fs::write(d.join("model.ckpt"), &bytes).expect("write");
    let before = tree(d);
    let mut cmd = bin();
    cmd.args(["generate", "--vqgan", "model.ckpt", "--clip"]).arg(fixture("clip-tiny"));
    cmd.args(["-s", "32x32", "--cutn", "2", "-i", "1", "-p", "x"]).current_dir(d);
    let out = cmd.output().expect("run");
    let line = refused(d, &before, &out, "corrupt: zip entry");
    assert!(line.contains(&format!("'{entry}' fails its CRC-32 check")), "{line}");
}

/// The header length and bytes of a session file, and where its tensor data starts.
fn data_start(session: &[u8]) -> usize {
    8 + usize::try_from(u64::from_le_bytes(session[..8].try_into().expect("8 bytes"))).expect("len")
}

/// Hardening issue, item 9: a session file carries a checksum — a flipped byte in its
/// latent or in its JSON is reported as corruption on resume — and a session written
/// before the checksum existed still resumes.
#[test]
fn sessions_carry_a_checksum_and_old_ones_still_resume() {
    let dir = tempfile::tempdir().expect("temp");
    let d = dir.path();
    ok(&generate(d, &["-p", "a red circle", "--session", "run.session", "-o", "first.png"]));
    let good = read(&d.join("run.session"));

    // A flipped byte in the latent, and a changed digit of the iteration.
    let mut in_data = good.clone();
    in_data[data_start(&good) + 5] ^= 0x01;
    let mut in_json = good.clone();
    let at = good.windows(13).position(|w| w == b"iteration\\\":2").expect("the iteration in the JSON") + 12;
    in_json[at] = b'1';
    for bad in [in_data, in_json] {
        std::fs::write(d.join("run.session"), &bad).expect("write");
        let before = tree(d);
        let out = generate(d, &["--resume", "run.session", "-i", "3", "-o", "second.png"]);
        refused(d, &before, &out, "corrupt session file: its checksum does not match its contents");
    }

    // The file as releases before the checksum wrote it: the same, without the checksum.
    let tensors = candle_core::safetensors::load_buffer(&good, &candle_core::Device::Cpu).expect("tensors");
    let (_, header) = safetensors::SafeTensors::read_metadata(&good).expect("metadata");
    let mut meta = header.metadata().clone().expect("metadata");
    assert!(meta.remove("clipcanvas_sha256").is_some(), "new sessions carry the checksum");
    let mut entries: Vec<_> = tensors.into_iter().collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    std::fs::write(d.join("old.session"), safetensors::serialize(entries, Some(meta)).expect("serialise"))
        .expect("write");
    ok(&generate(d, &["--resume", "old.session", "-i", "3", "-o", "second.png"]));
    assert!(d.join("second.png").is_file());
}

/// Hardening issue, item 9: a JPEG cut short — which the decoder would fill with grey —
/// is refused as truncated, as init image and as image prompt; the whole JPEG works.
#[test]
fn a_truncated_jpeg_is_refused() {
    let dir = tempfile::tempdir().expect("temp");
    let d = dir.path();
    let whole = jpeg();
    std::fs::write(d.join("half.jpg"), &whole[..whole.len() / 2]).expect("write");
    std::fs::write(d.join("cut-end.jpg"), &whole[..whole.len() - 2]).expect("write");
    let before = tree(d);
    for name in ["half.jpg", "cut-end.jpg"] {
        for flag in ["--init-image", "--image-prompt"] {
            let out = generate(d, &["-p", "x", flag, name]);
            refused(d, &before, &out, "truncated JPEG: the file ends before its end-of-image marker");
        }
    }
    std::fs::write(d.join("whole.jpg"), &whole).expect("write");
    ok(&generate(d, &["-p", "x", "--init-image", "whole.jpg", "-i", "1"]));
}

/// Hardening issue, item 9: a settings file that starts with a UTF-8 byte-order mark (as
/// Windows editors write it) is read.
#[test]
fn a_settings_file_with_a_byte_order_mark_works() {
    let dir = tempfile::tempdir().expect("temp");
    let d = dir.path();
    std::fs::write(d.join("bom.json"), "\u{feff}{\"prompts\": [\"a red circle\"], \"seed\": 7}").expect("write");
    ok(&generate(d, &["--settings", "bom.json", "-i", "1"]));
    let meta = clipcanvas::export::read_png_metadata(&d.join("output.png")).expect("read").expect("metadata");
    let meta: serde_json::Value = serde_json::from_str(&meta).expect("json");
    assert_eq!(meta["settings"]["prompts"][0], "a red circle");
    assert_eq!(meta["seed"], 7);
}

/// Hardening issue, item 9: relative image paths in a settings file (the init image and
/// an image prompt) are taken from the settings file's folder, not the current one.
#[test]
fn relative_images_in_a_settings_file_are_found_beside_it() {
    let dir = tempfile::tempdir().expect("temp");
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir(&a).expect("mkdir");
    std::fs::create_dir(&b).expect("mkdir");
    copy(&fixture("score/exact.png"), &a.join("init.png"));
    copy(&fixture("score/wide.png"), &a.join("target.png"));
    let settings = r#"{"prompts": ["x"], "init_image": "init.png", "image_prompts": ["target.png:0.5"]}"#;
    std::fs::write(a.join("settings.json"), settings).expect("write");
    let before_a = tree(&a);
    ok(&generate(&b, &["--settings", "../a/settings.json", "-i", "1"]));
    assert_eq!(tree(&a), before_a, "the settings folder is untouched");
    assert_eq!(tree(&b).into_keys().collect::<Vec<_>>(), [OsString::from("output.png")]);
    let meta = clipcanvas::export::read_png_metadata(&b.join("output.png")).expect("read").expect("metadata");
    let meta: serde_json::Value = serde_json::from_str(&meta).expect("json");
    let init = meta["settings"]["init_image"].as_str().expect("init image");
    assert_eq!(Path::new(init), Path::new("../a").join("init.png"));
    assert_eq!(meta["settings"]["image_prompts"][0], format!("{}:0.5", Path::new("../a").join("target.png").display()));
}

/// Hardening issue, item 9: a tokenizer whose ids reach past the CLIP model's token
/// embedding is bad input found at load time (exit 2), not a failure mid-run (exit 1).
#[test]
fn a_tokenizer_from_another_model_is_bad_input() {
    let dir = tempfile::tempdir().expect("temp");
    let d = dir.path();
    let clip = d.join("clip");
    std::fs::create_dir(&clip).expect("mkdir");
    for f in ["config.json", "model.safetensors"] {
        copy(&fixture("clip-tiny").join(f), &clip.join(f));
    }
    let mut tok: serde_json::Value =
        serde_json::from_slice(&read(&fixture("clip-tiny/tokenizer.json"))).expect("tokenizer json");
    tok["model"]["vocab"]["a</w>"] = serde_json::json!(60_000);
    std::fs::write(clip.join("tokenizer.json"), serde_json::to_vec(&tok).expect("json")).expect("write");
    let before = tree(d);
    let mut cmd = bin();
    cmd.arg("generate").arg("--vqgan").arg(fixture("vqgan-tiny/model.ckpt")).args(["--clip", "clip"]);
    cmd.args(["-s", "32x32", "--cutn", "2", "-i", "1", "-p", "a"]).current_dir(d);
    let line = refused(d, &before, &cmd.output().expect("run"), "the tokenizer does not belong to this model");
    assert!(line.contains("reaches id 60000") && line.contains("49408 rows"), "{line}");
}

/// Hardening issue, item 9: a 1 MB prompt (in a settings file; the command line takes at
/// most 128 KiB an argument) and a 100 000-character one are refused in a short line
/// that does not echo them; a long prompt under the cap runs, and the note that it was
/// cut to 77 tokens shows only its start.
#[test]
fn huge_prompts_are_refused_and_long_ones_are_not_echoed() {
    let dir = tempfile::tempdir().expect("temp");
    let d = dir.path();
    let huge = format!("{{\"prompts\": [\"{}\"]}}", "a".repeat(1 << 20));
    std::fs::write(d.join("huge.json"), huge).expect("write");
    let before = tree(d);
    let out = generate(d, &["--settings", "huge.json"]);
    let line = refused(d, &before, &out, "is 1048576 characters long; the most is 10000");
    assert!(line.len() < 300, "a short line: {line}");
    let long = "b".repeat(100_000);
    let out = generate(d, &["-p", &long]);
    let line = refused(d, &before, &out, "is 100000 characters long; the most is 10000");
    assert!(line.len() < 300, "a short line: {line}");

    let words = "a red circle on a blue square ".repeat(60);
    let s = ok(&generate(d, &["-p", words.trim(), "-i", "1"]));
    let note = s.stderr.lines().find(|l| l.contains("longer than CLIP's 77 tokens")).expect("the note");
    assert!(
        note.len() < 200 && note.contains("a red circle on a blue square a red circle on a blue square …"),
        "{note}"
    );
}
