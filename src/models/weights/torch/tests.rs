//! Tests of whole checkpoints through the public API: hand-assembled pickles in zip
//! files written like `torch.save`'s (Lightning and Hugging Face layouts, every dtype,
//! strided views, tied weights), and damaged or hostile files (truncated zips,
//! compressed entries, missing storages, overflowing shapes, deep nesting), each of
//! which must give a one-line error that names the file.

use std::io::Write;

use half::{bf16, f16};
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipWriter};

use super::pickle::testing::{malformed_reason, run_pickle, Pickle, TestResult, T};
use super::pickle::{op, PickleError};
use super::*;

fn f32s(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn write_zip(path: &Path, entries: &[(&str, &[u8])]) -> TestResult {
    let mut zip = ZipWriter::new(File::create(path)?);
    let options = SimpleFileOptions::default().compression_method(CompressionMethod::Stored);
    for (name, data) in entries {
        zip.start_file(*name, options)?;
        zip.write_all(data)?;
    }
    zip.finish()?;
    Ok(())
}

/// A checkpoint whose only tensor 'w' is described by `t`, with storage '0' = `storage`.
fn single_tensor_file(dir: &Path, t: &T, storage: &[u8]) -> Result<PathBuf, Box<dyn std::error::Error>> {
    let pickle = Pickle::new(2).ordered_dict().put(0).str("w").tensor(t).op(op::SETITEM).finish();
    let path = dir.join("single.bin");
    write_zip(&path, &[("archive/data.pkl", &pickle), ("archive/data/0", storage)])?;
    Ok(path)
}

/// A Lightning-style checkpoint: a state dict with tensors of several dtypes and
/// layouts, optimizer states, callbacks keyed by a class, and objects of unknown
/// classes.
fn lightning_pickle() -> Vec<u8> {
    let f32t = |key, numel, offset, size, stride| T { class: "FloatStorage", key, numel, offset, size, stride };
    let mut p = Pickle::new(2);
    p.op(op::EMPTY_DICT).put(0).op(op::MARK);
    p.str("epoch").int(3);
    p.str("global_step").int(1 << 40);
    p.str("pytorch-lightning_version").str("1.9.5");

    p.str("state_dict").ordered_dict().put(1).op(op::MARK);
    p.str("a.weight").tensor(&f32t("0", 6, 0, &[2, 3], &[3, 1]));
    p.str("b.half").tensor(&T { class: "HalfStorage", key: "1", numel: 4, offset: 0, size: &[4], stride: &[1] });
    p.str("c.transposed").tensor(&f32t("0", 6, 0, &[3, 2], &[1, 3]));
    p.str("d.offset").tensor(&f32t("2", 6, 4, &[2], &[1]));
    p.str("e.param").global("torch._utils", "_rebuild_parameter").op(op::MARK);
    p.tensor(&T { class: "BFloat16Storage", key: "3", numel: 2, offset: 0, size: &[2], stride: &[1] });
    p.op(op::NEWTRUE).ordered_dict().op(op::TUPLE).op(op::REDUCE);
    p.str("f.steps").tensor(&T { class: "LongStorage", key: "4", numel: 1, offset: 0, size: &[], stride: &[] });
    p.str("g.double").tensor(&T { class: "DoubleStorage", key: "5", numel: 2, offset: 0, size: &[2], stride: &[1] });
    p.str("h.mask").tensor(&T { class: "BoolStorage", key: "6", numel: 3, offset: 0, size: &[3], stride: &[1] });
    p.str("version").int(1); // not a tensor: skipped
    p.str("i.expand").tensor(&f32t("2", 6, 1, &[2, 3], &[0, 1]));
    p.str("j.empty").tensor(&f32t("2", 6, 0, &[0, 3], &[3, 1]));
    p.op(op::SETITEMS);
    // OrderedDict state: {'_metadata': OrderedDict()}
    p.op(op::EMPTY_DICT).str("_metadata").ordered_dict().op(op::SETITEM).op(op::BUILD);

    // The same (mutated after memoization) state dict again, through the memo.
    p.str("again").get(1);

    p.str("optimizer_states").op(op::EMPTY_LIST).op(op::MARK);
    p.op(op::EMPTY_DICT).op(op::MARK);
    p.str("state").op(op::EMPTY_DICT).op(op::MARK);
    p.int(0).op(op::EMPTY_DICT).op(op::MARK);
    p.str("step").int(10).str("exp_avg").tensor(&f32t("7", 6, 0, &[2, 3], &[3, 1]));
    p.op(op::SETITEMS).op(op::SETITEMS);
    p.str("param_groups").op(op::EMPTY_LIST).op(op::EMPTY_DICT).op(op::MARK);
    p.str("lr").float(1e-4).str("params").op(op::EMPTY_LIST).op(op::MARK).int(0).int(1).op(op::APPENDS);
    p.str("betas").float(0.9).float(0.999).op(op::TUPLE2).str("amsgrad").op(op::NEWFALSE).str("foreach").op(op::NONE);
    p.op(op::SETITEMS).op(op::APPEND);
    p.op(op::SETITEMS).op(op::APPENDS);

    // Lightning 1.x: callbacks keyed by the callback class; the value here is an
    // object of that (unknown) class, built with NEWOBJ and a state dict.
    p.str("callbacks").op(op::EMPTY_DICT).op(op::MARK);
    p.global("pytorch_lightning.callbacks.model_checkpoint", "ModelCheckpoint").put(2);
    p.get(2).op(op::EMPTY_TUPLE).op(op::NEWOBJ).op(op::EMPTY_DICT).op(op::MARK);
    p.str("best_model_path").str("epoch=3.ckpt");
    p.str("best_model_score").tensor(&f32t("8", 1, 0, &[], &[]));
    p.op(op::SETITEMS).op(op::BUILD);
    p.op(op::SETITEMS);

    // An unknown class through REDUCE, with BUILD state and dict items.
    p.str("hparams").global("argparse", "Namespace").op(op::EMPTY_TUPLE).op(op::REDUCE);
    p.op(op::EMPTY_DICT).str("lr").float(1e-4).op(op::SETITEM).op(op::BUILD);
    p.op(op::SETITEMS);
    p.finish()
}

fn write_lightning(dir: &Path) -> Result<PathBuf, Box<dyn std::error::Error>> {
    let pickle = lightning_pickle();
    let half: Vec<u8> = [1.5f32, -2.0, 0.25, 65504.0].iter().flat_map(|&v| f16::from_f32(v).to_le_bytes()).collect();
    let bf: Vec<u8> = [1.0f32, -3.0].iter().flat_map(|&v| bf16::from_f32(v).to_le_bytes()).collect();
    let long = 42i64.to_le_bytes();
    let double: Vec<u8> = [0.5f64, -2.25].iter().flat_map(|v| v.to_le_bytes()).collect();
    let path = dir.join("model.ckpt");
    write_zip(
        &path,
        &[
            ("archive/data.pkl", &pickle),
            ("archive/byteorder", b"little"),
            ("archive/data/0", &f32s(&[0.0, 1.0, 2.0, 3.0, 4.0, 5.0])),
            ("archive/data/1", &half),
            ("archive/data/2", &f32s(&[10.0, 11.0, 12.0, 13.0, 14.0, 15.0])),
            ("archive/data/3", &bf),
            ("archive/data/4", &long),
            ("archive/data/5", &double),
            ("archive/data/6", &[1, 0, 1]),
            ("archive/data/7", &f32s(&[0.0; 6])),
            ("archive/data/8", &f32s(&[0.75])),
            ("archive/version", b"3\n"),
        ],
    )?;
    Ok(path)
}

const LIGHTNING_NAMES: [&str; 10] = [
    "a.weight",
    "b.half",
    "c.transposed",
    "d.offset",
    "e.param",
    "f.steps",
    "g.double",
    "h.mask",
    "i.expand",
    "j.empty",
];

#[test]
fn reads_lightning_checkpoint() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = write_lightning(dir.path())?;
    let archive = TorchArchive::open(&path, Some("state_dict"))?;
    assert_eq!(archive.names().collect::<Vec<_>>(), LIGHTNING_NAMES);
    assert_eq!(
        archive.top_level_keys(),
        [
            "epoch",
            "global_step",
            "pytorch-lightning_version",
            "state_dict",
            "again",
            "optimizer_states",
            "callbacks",
            "hparams"
        ]
    );

    let read = |name| archive.read_f32(name);
    assert_eq!(read("a.weight")?, (vec![2, 3], vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]));
    assert_eq!(read("b.half")?, (vec![4], vec![1.5, -2.0, 0.25, 65504.0]));
    assert_eq!(read("c.transposed")?, (vec![3, 2], vec![0.0, 3.0, 1.0, 4.0, 2.0, 5.0]));
    assert_eq!(read("d.offset")?, (vec![2], vec![14.0, 15.0]));
    assert_eq!(read("e.param")?, (vec![2], vec![1.0, -3.0]));
    assert_eq!(read("f.steps")?, (vec![], vec![42.0]));
    assert_eq!(read("g.double")?, (vec![2], vec![0.5, -2.25]));
    assert_eq!(read("h.mask")?, (vec![3], vec![1.0, 0.0, 1.0]));
    assert_eq!(read("i.expand")?, (vec![2, 3], vec![11.0, 12.0, 13.0, 11.0, 12.0, 13.0]));
    assert_eq!(read("j.empty")?, (vec![0, 3], vec![]));

    let info = archive.info("c.transposed").ok_or("no info")?;
    assert_eq!(
        info,
        &TensorInfo {
            dtype: DType::F32,
            shape: vec![3, 2],
            stride: vec![1, 3],
            storage_key: "0".into(),
            storage_offset: 0,
            location: "cpu".into(),
        }
    );
    assert_eq!(archive.info("e.param").map(|i| &i.dtype), Some(&DType::BF16));
    assert_eq!(archive.info("version"), None);
    Ok(())
}

#[test]
fn memoized_dict_sees_items_added_after_memoization() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = write_lightning(dir.path())?;
    let archive = TorchArchive::open(&path, Some("again"))?;
    assert_eq!(archive.names().collect::<Vec<_>>(), LIGHTNING_NAMES);
    assert_eq!(archive.read_f32("d.offset")?.1, [14.0, 15.0]);
    Ok(())
}

#[test]
fn lightning_file_without_key_has_no_tensors() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = write_lightning(dir.path())?;
    let archive = TorchArchive::open(&path, None)?;
    assert_eq!(archive.names().count(), 0);
    assert!(archive.top_level_keys().contains(&"state_dict".to_owned()));
    Ok(())
}

/// An HF-style file at protocol 4: FRAME, SHORT_BINUNICODE, STACK_GLOBAL, MEMOIZE,
/// with a top folder other than `archive/`.
#[test]
fn reads_protocol4_state_dict() -> TestResult {
    let mut p = Pickle::new(4);
    p.op(op::FRAME).raw(&100u64.to_le_bytes());
    p.op(op::SHORT_BINUNICODE).op(11).raw(b"collections").op(op::MEMOIZE);
    p.op(op::SHORT_BINUNICODE).op(11).raw(b"OrderedDict").op(op::MEMOIZE);
    p.op(op::STACK_GLOBAL).op(op::MEMOIZE).op(op::EMPTY_TUPLE).op(op::REDUCE).op(op::MEMOIZE);
    p.op(op::MARK);
    p.op(op::SHORT_BINUNICODE).op(1).raw(b"w").op(op::MEMOIZE);
    p.tensor(&T { class: "FloatStorage", key: "0", numel: 4, offset: 0, size: &[2, 2], stride: &[2, 1] });
    p.op(op::MEMOIZE);
    // A tied weight: the same tensor object again, through the memo (index 5).
    p.op(op::SHORT_BINUNICODE).op(4).raw(b"tied").op(op::LONG_BINGET).raw(&5u32.to_le_bytes());
    p.op(op::SETITEMS);
    let pickle = p.finish();

    let dir = tempfile::tempdir()?;
    let path = dir.path().join("pytorch_model.bin");
    write_zip(
        &path,
        &[
            ("pytorch_model/data.pkl", &pickle),
            ("pytorch_model/byteorder", b"little"),
            ("pytorch_model/data/0", &f32s(&[1.0, 2.0, 3.0, 4.0])),
        ],
    )?;
    let archive = TorchArchive::open(&path, None)?;
    assert_eq!(archive.names().collect::<Vec<_>>(), ["w", "tied"]);
    assert_eq!(archive.read_f32("tied")?, (vec![2, 2], vec![1.0, 2.0, 3.0, 4.0]));
    assert_eq!(archive.top_level_keys(), ["w", "tied"]);

    let err = TorchArchive::open(&path, Some("state_dict")).err().ok_or("opened")?;
    assert!(err.to_string().ends_with("pytorch_model.bin: no 'state_dict' entry (top-level keys: w, tied)"), "{err}");
    Ok(())
}

#[test]
fn selected_object_must_be_a_dict() -> TestResult {
    let dir = tempfile::tempdir()?;
    let pickle = Pickle::new(2).op(op::EMPTY_LIST).finish();
    let path = dir.path().join("list.bin");
    write_zip(&path, &[("archive/data.pkl", &pickle)])?;
    let err = TorchArchive::open(&path, None).err().ok_or("opened")?;
    assert!(
        err.to_string().ends_with("expected a dict of tensors (a state dict), but the top-level object is a list"),
        "{err}"
    );
    let err = TorchArchive::open(&path, Some("state_dict")).err().ok_or("opened")?;
    assert!(err.to_string().contains("the top-level object is a list"), "{err}");

    let ckpt = write_lightning(dir.path())?;
    let err = TorchArchive::open(&ckpt, Some("epoch")).err().ok_or("opened")?;
    assert!(err.to_string().ends_with("but 'epoch' is the int 3"), "{err}");
    Ok(())
}

#[test]
fn truncated_zip_is_an_error() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = write_lightning(dir.path())?;
    let bytes = std::fs::read(&path)?;
    for cut in [bytes.len() / 2, bytes.len() - 10, 3] {
        std::fs::write(&path, &bytes[..cut])?;
        let err = TorchArchive::open(&path, Some("state_dict")).err().ok_or("opened")?;
        let message = err.to_string();
        assert!(message.starts_with(&path.display().to_string()), "{message}");
        assert!(message.contains("corrupt or truncated zip archive"), "{message}");
    }
    Ok(())
}

#[test]
fn storage_shorter_than_tensor_is_truncated() -> TestResult {
    let dir = tempfile::tempdir()?;
    let t = T { class: "FloatStorage", key: "0", numel: 6, offset: 0, size: &[2, 3], stride: &[3, 1] };
    let path = single_tensor_file(dir.path(), &t, &f32s(&[1.0, 2.0]))?;
    let archive = TorchArchive::open(&path, None)?;
    let err = archive.read_f32("w").err().ok_or("read")?;
    assert_eq!(
        err.to_string(),
        format!("{}: truncated: storage 'archive/data/0' is 8 bytes, tensor 'w' needs 24", path.display())
    );

    // The offset counts too: 2 elements from offset 1 need 12 bytes.
    let t = T { class: "FloatStorage", key: "0", numel: 2, offset: 1, size: &[2], stride: &[1] };
    let path = single_tensor_file(dir.path(), &t, &f32s(&[1.0, 2.0]))?;
    let err = TorchArchive::open(&path, None)?.read_f32("w").err().ok_or("read")?;
    assert!(err.to_string().ends_with("is 8 bytes, tensor 'w' needs 12"), "{err}");
    Ok(())
}

#[test]
fn missing_storage_and_unknown_names() -> TestResult {
    let dir = tempfile::tempdir()?;
    let t = T { class: "FloatStorage", key: "9", numel: 1, offset: 0, size: &[1], stride: &[1] };
    let path = single_tensor_file(dir.path(), &t, &f32s(&[1.0]))?;
    let archive = TorchArchive::open(&path, None)?;
    let err = archive.read_f32("w").err().ok_or("read")?;
    assert!(err.to_string().ends_with("storage 'archive/data/9' of tensor 'w' is missing from the archive"), "{err}");
    let err = archive.read_f32("nope").err().ok_or("read")?;
    assert!(err.to_string().ends_with("no tensor named 'nope'"), "{err}");
    Ok(())
}

#[test]
fn unconvertible_dtype_is_listed_but_not_read() -> TestResult {
    let dir = tempfile::tempdir()?;
    let t = T { class: "ComplexFloatStorage", key: "0", numel: 1, offset: 0, size: &[1], stride: &[1] };
    let path = single_tensor_file(dir.path(), &t, &[0; 8])?;
    let archive = TorchArchive::open(&path, None)?;
    assert_eq!(archive.info("w").map(|i| &i.dtype), Some(&DType::Other("ComplexFloatStorage".into())));
    let err = archive.read_f32("w").err().ok_or("read")?;
    assert!(
        err.to_string().ends_with("tensor 'w' has dtype ComplexFloatStorage, which cannot be read as f32"),
        "{err}"
    );
    Ok(())
}

#[test]
fn hostile_shapes_are_rejected() -> TestResult {
    let dir = tempfile::tempdir()?;
    let storage = f32s(&[1.0, 2.0]);

    // Overflowing element count.
    let t = T { class: "FloatStorage", key: "0", numel: 2, offset: 0, size: &[1 << 40, 1 << 40], stride: &[1, 1] };
    let path = single_tensor_file(dir.path(), &t, &storage)?;
    let err = TorchArchive::open(&path, None)?.read_f32("w").err().ok_or("read")?;
    assert!(err.to_string().contains("tensor 'w': shape"), "{err}");

    // Overflowing span.
    let t = T { class: "FloatStorage", key: "0", numel: 2, offset: 0, size: &[2], stride: &[i64::MAX] };
    let path = single_tensor_file(dir.path(), &t, &storage)?;
    let err = TorchArchive::open(&path, None)?.read_f32("w").err().ok_or("read")?;
    assert!(err.to_string().contains("overflow"), "{err}");

    // A large offset: caught by the storage size, without allocating.
    let t = T { class: "FloatStorage", key: "0", numel: 2, offset: 1 << 60, size: &[2], stride: &[1] };
    let path = single_tensor_file(dir.path(), &t, &storage)?;
    let err = TorchArchive::open(&path, None)?.read_f32("w").err().ok_or("read")?;
    assert!(err.to_string().contains("truncated"), "{err}");

    // Stride 0 expanding one stored element to 2^40.
    let t = T { class: "FloatStorage", key: "0", numel: 2, offset: 0, size: &[1 << 20, 1 << 20], stride: &[0, 0] };
    let path = single_tensor_file(dir.path(), &t, &storage)?;
    let err = TorchArchive::open(&path, None)?.read_f32("w").err().ok_or("read")?;
    assert!(err.to_string().contains("overlapping strides"), "{err}");

    // Negative sizes and mismatched ranks are malformed pickles.
    for (size, stride) in [(&[-1i64][..], &[1i64][..]), (&[2][..], &[1, 1][..])] {
        let t = T { class: "FloatStorage", key: "0", numel: 2, offset: 0, size, stride };
        let path = single_tensor_file(dir.path(), &t, &storage)?;
        let err = TorchArchive::open(&path, None).err().ok_or("opened")?;
        assert!(matches!(err, TorchError::Pickle { .. }), "{err}");
    }
    Ok(())
}

#[test]
fn huge_string_length_is_checked() -> TestResult {
    let mut p = Pickle::new(2);
    p.op(op::BINUNICODE).raw(&u32::MAX.to_le_bytes()).raw(b"abc");
    let pickle = p.finish();
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("huge.bin");
    write_zip(&path, &[("archive/data.pkl", &pickle)])?;
    let err = TorchArchive::open(&path, None).err().ok_or("opened")?;
    assert_eq!(
        err.to_string(),
        format!("{}: malformed pickle at byte 2: BINUNICODE claims 4294967295 bytes but only 4 remain", path.display())
    );

    for opcode in [op::BINUNICODE8, op::BINBYTES8] {
        let mut p = Pickle::new(4);
        p.op(opcode).raw(&u64::MAX.to_le_bytes());
        let reason = malformed_reason(run_pickle(&p.finish()));
        assert!(reason.contains("claims 18446744073709551615 bytes"), "{reason}");
    }
    let mut p = Pickle::new(2);
    p.op(op::LONG4).raw(&(-5i32).to_le_bytes());
    assert_eq!(malformed_reason(run_pickle(&p.finish())), "LONG4 has negative length -5");
    Ok(())
}

#[test]
fn deep_nesting_does_not_overflow_the_stack() -> TestResult {
    const DEPTH: usize = 200_000;
    let mut p = Pickle::new(2);
    p.op(op::EMPTY_DICT).str("deep_lists");
    for _ in 0..DEPTH {
        p.op(op::EMPTY_LIST);
    }
    for _ in 1..DEPTH {
        p.op(op::APPEND);
    }
    p.op(op::SETITEM).str("deep_tuples");
    for _ in 0..DEPTH {
        p.op(op::MARK);
    }
    for _ in 0..DEPTH {
        p.op(op::TUPLE);
    }
    p.op(op::SETITEM).str("w");
    p.tensor(&T { class: "FloatStorage", key: "0", numel: 1, offset: 0, size: &[1], stride: &[1] });
    p.op(op::SETITEM);
    let pickle = p.finish();
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("deep.bin");
    write_zip(&path, &[("archive/data.pkl", &pickle), ("archive/data/0", &f32s(&[7.0]))])?;
    let archive = TorchArchive::open(&path, None)?;
    assert_eq!(archive.names().collect::<Vec<_>>(), ["w"]);
    assert_eq!(archive.read_f32("w")?.1, [7.0]);
    Ok(())
}

#[test]
fn missing_pickle_and_non_zip_files() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("other.zip");
    write_zip(&path, &[("archive/other.txt", b"hello"), ("a/b/data.pkl", b".")])?;
    let err = TorchArchive::open(&path, None).err().ok_or("opened")?;
    assert!(matches!(err, TorchError::MissingPickle { .. }), "{err}");

    // A legacy (pre-1.6) torch.save file starts with a pickle, not a zip header.
    let legacy = dir.path().join("legacy.pt");
    std::fs::write(&legacy, [0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20])?;
    let err = TorchArchive::open(&legacy, None).err().ok_or("opened")?;
    assert_eq!(
        err.to_string(),
        format!("{}: not a PyTorch zip checkpoint (legacy pre-1.6 format or another file type)", legacy.display())
    );
    let empty = dir.path().join("empty.pt");
    std::fs::write(&empty, [])?;
    assert!(matches!(TorchArchive::open(&empty, None), Err(TorchError::NotZip { .. })));

    let missing = dir.path().join("missing.pt");
    assert!(matches!(TorchArchive::open(&missing, None), Err(TorchError::Io { .. })));
    Ok(())
}

#[test]
fn unknown_opcodes_are_named() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("opcode.bin");
    let pickle = Pickle::new(2).op(op::EMPTY_DICT).op(0xff).finish();
    write_zip(&path, &[("archive/data.pkl", &pickle)])?;
    let err = TorchArchive::open(&path, None).err().ok_or("opened")?;
    assert_eq!(err.to_string(), format!("{}: pickle opcode 0xff at byte 3 is not supported", path.display()));
    // Protocol 5 out-of-band buffers, EXT codes and INST are not used by torch.save.
    for opcode in [0x97u8, 0x98, 0x82, b'i', b'S'] {
        let pickle = Pickle::new(5).op(opcode).finish();
        assert!(
            matches!(run_pickle(&pickle), Err(PickleError::Unsupported { opcode: o, offset: 2 }) if o == opcode),
            "{opcode:#x}"
        );
    }
    Ok(())
}

/// Patches every local and central header of a stored zip to claim deflate.
fn mark_deflated(bytes: &mut [u8]) {
    let mut i = 0;
    while i + 12 <= bytes.len() {
        match &bytes[i..i + 4] {
            b"PK\x03\x04" => bytes[i + 8] = 8,
            b"PK\x01\x02" => bytes[i + 10] = 8,
            _ => {}
        }
        i += 1;
    }
}

#[test]
fn compressed_entries_are_rejected() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = write_lightning(dir.path())?;
    let mut bytes = std::fs::read(&path)?;
    mark_deflated(&mut bytes);
    std::fs::write(&path, bytes)?;
    let err = TorchArchive::open(&path, Some("state_dict")).err().ok_or("opened")?;
    assert!(err.to_string().contains("zip entry 'archive/byteorder' is compressed (deflate)"), "{err}");
    Ok(())
}

#[test]
fn big_endian_files_are_rejected() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("big.bin");
    let pickle = Pickle::new(2).op(op::EMPTY_DICT).finish();
    write_zip(&path, &[("archive/data.pkl", &pickle), ("archive/byteorder", b"big")])?;
    let err = TorchArchive::open(&path, None).err().ok_or("opened")?;
    assert!(err.to_string().ends_with("big-endian checkpoints are not supported"), "{err}");
    Ok(())
}

#[test]
fn long_key_lists_are_shortened() {
    let keys: Vec<String> = (0..12).map(|i| format!("k{i}")).collect();
    assert_eq!(key_list(&keys[..2]), "k0, k1");
    assert_eq!(key_list(&keys), "k0, k1, k2, k3, k4, k5, k6, k7, k8, k9, … and 2 more");
}

/// `bytes` with the byte at `pattern`'s first occurrence + `skip` flipped.
fn flipped(bytes: &[u8], pattern: &[u8], skip: usize) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    let at = bytes.windows(pattern.len()).position(|w| w == pattern).ok_or("pattern not found")? + skip;
    let mut out = bytes.to_vec();
    out[at] ^= 0x01;
    Ok(out)
}

#[test]
fn a_flipped_byte_fails_the_crc_of_the_entry_read() -> TestResult {
    let dir = tempfile::tempdir()?;
    let values = f32s(&[1.5, 2.5, 3.5, 4.5, 5.5, 6.5]);
    // A tensor spanning its whole storage, and one reading only its second half.
    let whole = T { class: "FloatStorage", key: "0", numel: 6, offset: 0, size: &[2, 3], stride: &[3, 1] };
    let half = T { class: "FloatStorage", key: "0", numel: 6, offset: 3, size: &[3], stride: &[1] };
    for t in [&whole, &half] {
        let path = single_tensor_file(dir.path(), t, &values)?;
        let good = std::fs::read(&path)?;
        assert_eq!(
            TorchArchive::open(&path, None)?.read_f32("w")?.1.len(),
            usize::try_from(t.size.iter().product::<i64>())?
        );
        // The first element: outside what the half view reads, and still checked.
        std::fs::write(&path, flipped(&good, &values, 1)?)?;
        let err = TorchArchive::open(&path, None)?.read_f32("w").err().ok_or("read a corrupt storage")?;
        let msg = err.to_string();
        assert!(
            msg.starts_with(&format!("{}: corrupt: zip entry 'archive/data/0' fails its CRC-32 check", path.display())),
            "{msg}"
        );
        assert!(matches!(err, TorchError::Corrupt { .. }), "{err:?}");
    }
    // The pickle is checked as it is read.
    let path = single_tensor_file(dir.path(), &whole, &values)?;
    let good = std::fs::read(&path)?;
    std::fs::write(&path, flipped(&good, b"rebuild_tensor_v2", 3)?)?;
    let err = TorchArchive::open(&path, None).err().ok_or("opened a corrupt pickle")?;
    assert!(err.to_string().contains("corrupt: zip entry 'archive/data.pkl' fails its CRC-32 check"), "{err}");
    Ok(())
}
