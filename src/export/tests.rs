//! Tests of the file formats: PNG metadata round trips, damaged files, GIF and video
//! (with stand-in ffmpeg scripts), frame sequences, atomic replacement.

use super::*;
use image::codecs::gif::GifDecoder;
use image::{AnimationDecoder, Rgb};

fn gradient(w: u32, h: u32, seed: u8) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        Rgb([((x * 7) % 256) as u8 ^ seed, ((y * 13) % 256) as u8, ((x + y) % 256) as u8 ^ seed])
    })
}

fn solid(w: u32, h: u32, c: [u8; 3]) -> RgbImage {
    RgbImage::from_pixel(w, h, Rgb(c))
}

/// Everything in `dir`, names only, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

#[test]
fn png_round_trip_pixels_and_unicode_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.png");
    let img = gradient(37, 21, 5);
    let meta = serde_json::json!({
        "prompt": "un château sous la pluie — 雨の城 🌧️",
        "seed": 42u64,
        "models": [{"name": "vqgan_imagenet_f16_16384", "sha256": "ab".repeat(32)}],
    })
    .to_string();
    write_png(&path, &img, Some(&meta)).unwrap();

    let back = image::open(&path).unwrap().to_rgb8();
    assert_eq!(back.dimensions(), img.dimensions());
    assert_eq!(back.as_raw(), img.as_raw());
    let read = read_png_metadata(&path).unwrap().unwrap();
    assert_eq!(read, meta);
    let v: serde_json::Value = serde_json::from_str(&read).unwrap();
    assert_eq!(v["prompt"], "un château sous la pluie — 雨の城 🌧️");

    // The Software chunk is there too.
    let reader = png::Decoder::new(BufReader::new(File::open(&path).unwrap())).read_info().unwrap();
    let sw = reader.info().uncompressed_latin1_text.iter().find(|c| c.keyword == "Software").unwrap();
    assert_eq!(sw.text, format!("clipcanvas {}", env!("CARGO_PKG_VERSION")));
    // Only the destination is left in the folder.
    assert_eq!(listing(dir.path()), ["out.png"]);
}

#[test]
fn png_overwrite_replaces_whole_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.png");
    write_png(&path, &gradient(64, 64, 1), Some("{\"a\":1}")).unwrap();
    write_png(&path, &solid(3, 2, [9, 8, 7]), None).unwrap();
    assert_eq!(image::open(&path).unwrap().to_rgb8(), solid(3, 2, [9, 8, 7]));
    assert_eq!(read_png_metadata(&path).unwrap(), None);
    assert_eq!(listing(dir.path()), ["out.png"]);
}

#[test]
fn png_without_metadata_gives_none() {
    let dir = tempfile::tempdir().unwrap();
    let ours = dir.path().join("ours.png");
    write_png(&ours, &gradient(8, 8, 0), None).unwrap();
    assert_eq!(read_png_metadata(&ours).unwrap(), None);
    // A PNG from another encoder, with no text chunks at all.
    let theirs = dir.path().join("theirs.png");
    gradient(8, 8, 0).save(&theirs).unwrap();
    assert_eq!(read_png_metadata(&theirs).unwrap(), None);
}

#[test]
fn non_png_and_truncated_png_are_errors_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.png");
    std::fs::write(&path, b"this is not a png at all").unwrap();
    let err = read_png_metadata(&path).unwrap_err();
    assert!(matches!(err, ExportError::NotPng { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(!msg.contains('\n'), "{msg}");

    let good = dir.path().join("good.png");
    write_png(&good, &gradient(40, 40, 3), Some("{}")).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let cut = dir.path().join("cut.png");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let err = read_png_metadata(&cut).unwrap_err();
    assert!(err.to_string().contains(&cut.display().to_string()), "{err}");

    let missing = dir.path().join("missing.png");
    let err = read_png_metadata(&missing).unwrap_err();
    assert!(matches!(err, ExportError::Read { .. }), "{err:?}");
    assert!(err.to_string().contains("missing.png"), "{err}");
}

#[test]
fn failing_atomic_write_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("result.bin");
    let err = write_atomic(&path, |w| {
        w.write_all(&[7u8; 200_000])?; // more than the buffer: bytes reach the temp file
        Err(io::Error::other("simulated failure midway"))
    })
    .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("simulated failure midway") && msg.contains("result.bin"), "{msg}");
    assert!(!path.exists());
    assert!(listing(dir.path()).is_empty(), "{:?}", listing(dir.path()));

    // An existing destination survives a failed overwrite untouched.
    std::fs::write(&path, b"previous good result").unwrap();
    write_atomic(&path, |w| {
        w.write_all(b"half")?;
        Err(io::Error::other("boom"))
    })
    .unwrap_err();
    assert_eq!(std::fs::read(&path).unwrap(), b"previous good result");
    assert_eq!(listing(dir.path()), ["result.bin"]);

    // And a successful one replaces it.
    write_atomic(&path, |w| w.write_all(b"new")).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"new");
    assert_eq!(listing(dir.path()), ["result.bin"]);
}

#[test]
fn disk_full_error_is_reported_and_nothing_left() {
    // A real ENOSPC without mounting a tiny filesystem: the closure copies into
    // /dev/full, whose writes fail with "No space left on device", and returns that
    // error as a full disk under the temp file would.
    let full = Path::new("/dev/full");
    if !full.exists() {
        eprintln!("skipped: no /dev/full");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("frame.png");
    let err = write_atomic(&path, |w| {
        w.write_all(b"partial")?;
        let mut dev = std::fs::OpenOptions::new().write(true).open(full)?;
        dev.write_all(&[0u8; 4096])?;
        dev.flush()
    })
    .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("No space left on device"), "{msg}");
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(!msg.contains('\n'));
    assert!(listing(dir.path()).is_empty());
}

#[test]
fn missing_or_readonly_directory_gives_one_line_error() {
    let dir = tempfile::tempdir().unwrap();
    let img = gradient(4, 4, 0);

    let missing = dir.path().join("no/such/dir/out.png");
    let err = write_png(&missing, &img, None).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains(&missing.display().to_string()), "{msg}");
    assert!(msg.contains("No such file or directory") || msg.contains("cannot find the path"), "{msg}");
    assert!(!msg.contains('\n'), "{msg}");

    // A "folder" that is a file.
    let file = dir.path().join("plain.txt");
    std::fs::write(&file, b"x").unwrap();
    let under_file = file.join("out.png");
    let msg = write_gif(&under_file, std::slice::from_ref(&img), 100).unwrap_err().to_string();
    assert!(msg.contains(&under_file.display().to_string()) && !msg.contains('\n'), "{msg}");

    // A read-only folder (root ignores permissions, so check it really is one first).
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let ro = dir.path().join("ro");
        std::fs::create_dir(&ro).unwrap();
        std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
        if File::create(ro.join("probe")).is_ok() {
            eprintln!("skipped read-only check: running with permission to write anyway (root)");
        } else {
            let path = ro.join("out.png");
            let msg = write_png(&path, &img, None).unwrap_err().to_string();
            assert!(msg.contains(&path.display().to_string()) && msg.contains("ermission denied"), "{msg}");
            assert!(!msg.contains('\n'), "{msg}");
            let seq = FrameSequence::create(&ro.join("frames")).unwrap_err().to_string();
            assert!(seq.contains("frames") && !seq.contains('\n'), "{seq}");
        }
        std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

#[test]
fn frame_sequence_names_and_order() {
    let dir = tempfile::tempdir().unwrap();
    let frames_dir = dir.path().join("run/frames");
    let mut seq = FrameSequence::create(&frames_dir).unwrap();
    assert!(frames_dir.is_dir());
    assert!(seq.paths().is_empty());
    for (i, it) in [1usize, 2, 10, 250].into_iter().enumerate() {
        let meta = format!("{{\"iteration\":{it}}}");
        let p = seq.push(it, &gradient(6, 4, u8::try_from(i).unwrap()), Some(&meta)).unwrap();
        assert_eq!(read_png_metadata(&p).unwrap().unwrap(), meta);
    }
    let names: Vec<String> =
        seq.paths().iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    assert_eq!(names, ["frame_000001.png", "frame_000002.png", "frame_000010.png", "frame_000250.png"]);
    assert!(seq.paths().iter().all(|p| p.parent() == Some(frames_dir.as_path())));
    // Sorted names are the push order, and the folder holds nothing else.
    assert_eq!(listing(&frames_dir), names);
    // Re-writing an iteration replaces it without duplicating the entry.
    seq.push(10, &solid(6, 4, [1, 2, 3]), None).unwrap();
    assert_eq!(seq.paths().len(), 4);
    assert_eq!(image::open(&seq.paths()[2]).unwrap().to_rgb8(), solid(6, 4, [1, 2, 3]));
    // Creating over an existing folder is fine.
    FrameSequence::create(&frames_dir).unwrap();
}

#[test]
fn gif_decodes_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("anim.gif");
    let colours = [[220u8, 30, 40], [20, 200, 60], [30, 40, 210], [250, 250, 250]];
    let frames: Vec<RgbImage> = colours.iter().map(|&c| solid(33, 17, c)).collect();
    write_gif(&path, &frames, 80).unwrap();
    assert_eq!(listing(dir.path()), ["anim.gif"]);

    let dec = GifDecoder::new(BufReader::new(File::open(&path).unwrap())).unwrap();
    let decoded = dec.into_frames().collect_frames().unwrap();
    assert_eq!(decoded.len(), colours.len());
    for (f, c) in decoded.iter().zip(colours) {
        assert_eq!(f.buffer().dimensions(), (33, 17));
        let (num, den) = f.delay().numer_denom_ms();
        assert_eq!(num / den, 80);
        for p in f.buffer().pixels() {
            for k in 0..3 {
                assert!((i32::from(p[k]) - i32::from(c[k])).abs() <= 8, "{p:?} vs {c:?}");
            }
            assert_eq!(p[3], 255);
        }
    }
    // Loops forever: the NETSCAPE2.0 extension with a loop count of 0.
    let bytes = std::fs::read(&path).unwrap();
    let at = bytes.windows(11).position(|w| w == b"NETSCAPE2.0").unwrap();
    assert_eq!(&bytes[at + 11..at + 16], &[3, 1, 0, 0, 0]);
}

#[test]
fn gif_and_video_reject_bad_frame_lists() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.gif");
    let err = write_gif(&path, &[], 100).unwrap_err();
    assert!(err.to_string().contains("no frames"), "{err}");
    let err = write_gif(&path, &[solid(4, 4, [0; 3]), solid(5, 4, [0; 3])], 100).unwrap_err();
    assert!(err.to_string().contains("frame 1 is 5×4"), "{err}");
    let err = write_video(&dir.path().join("x.mp4"), &[], 10).unwrap_err();
    assert!(matches!(err, ExportError::Input { .. }), "{err:?}");
    assert!(listing(dir.path()).is_empty());
}

#[test]
fn sha256_of_known_strings() {
    let dir = tempfile::tempdir().unwrap();
    let abc = dir.path().join("abc.txt");
    std::fs::write(&abc, b"abc").unwrap();
    assert_eq!(file_sha256(&abc).unwrap(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    let empty = dir.path().join("empty");
    std::fs::write(&empty, b"").unwrap();
    assert_eq!(file_sha256(&empty).unwrap(), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    // Larger than the buffer: a million 'a's, the FIPS 180-2 long test vector.
    let big = dir.path().join("big");
    std::fs::write(&big, vec![b'a'; 1_000_000]).unwrap();
    let big2 = dir.path().join("big2");
    std::fs::write(&big2, vec![b'a'; 3 << 20]).unwrap();
    assert_eq!(file_sha256(&big).unwrap(), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
    assert_eq!(file_sha256(&big2).unwrap().len(), 64);
    let err = file_sha256(&dir.path().join("nope")).unwrap_err().to_string();
    assert!(err.contains("nope") && !err.contains('\n'), "{err}");
}

#[test]
fn video_with_or_without_ffmpeg() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.mp4");
    // Odd sides exercise the padding.
    let frames: Vec<RgbImage> = (0..3).map(|i| gradient(33, 17, i * 40)).collect();
    match write_video(&path, &frames, 12) {
        Ok(()) => {
            assert!(find_on_path("ffmpeg").is_some());
            let bytes = std::fs::read(&path).unwrap();
            assert!(!bytes.is_empty());
            assert_eq!(&bytes[4..8], b"ftyp", "not an mp4");
            assert_eq!(listing(dir.path()), ["run.mp4"]);
        }
        Err(ExportError::FfmpegMissing) => {
            assert!(find_on_path("ffmpeg").is_none());
            assert_eq!(
                ExportError::FfmpegMissing.to_string(),
                "ffmpeg not found on PATH: install ffmpeg to write videos, or use --gif/--frames"
            );
            assert!(listing(dir.path()).is_empty());
        }
        Err(e) => panic!("unexpected error: {e}"),
    }
}

/// A stand-in ffmpeg: a shell script with the given body, run with ffmpeg's arguments.
#[cfg(unix)]
fn fake_ffmpeg(dir: &Path, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join("fake-ffmpeg");
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

#[cfg(unix)]
#[test]
fn video_pipeline_with_a_fake_ffmpeg() {
    let tools = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.mp4");
    let frames: Vec<RgbImage> = (0..3).map(|i| gradient(33, 17, i)).collect();
    let frame_bytes = 33 * 17 * 3;

    // Success: the script copies stdin to its last argument (the temp file); all
    // frames arrive, raw, and the result is renamed into place with nothing else left.
    let ok = fake_ffmpeg(tools.path(), r#"for a; do out="$a"; done; cat > "$out""#);
    write_video_with(&ok, &path, &frames, (33, 17), 12).unwrap();
    let got = std::fs::read(&path).unwrap();
    assert_eq!(got.len(), 3 * frame_bytes);
    assert_eq!(&got[..frame_bytes], frames[0].as_raw().as_slice());
    assert_eq!(listing(dir.path()), ["run.mp4"]);

    // Failure after reading everything: the last stderr line is the message, the temp
    // file is gone and the earlier video is untouched.
    let bad =
        fake_ffmpeg(tools.path(), "cat > /dev/null; echo 'some noise' >&2; echo 'Unknown encoder libx264' >&2; exit 1");
    let err = write_video_with(&bad, &path, &frames, (33, 17), 12).unwrap_err();
    assert!(matches!(err, ExportError::Ffmpeg { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("Unknown encoder libx264") && msg.contains("run.mp4") && !msg.contains('\n'), "{msg}");
    assert_eq!(std::fs::read(&path).unwrap(), got);
    assert_eq!(listing(dir.path()), ["run.mp4"]);

    // ffmpeg dying without reading its input (broken pipe) is an error too, not a hang.
    let big: Vec<RgbImage> = (0..4).map(|i| gradient(512, 512, i)).collect();
    let quits = fake_ffmpeg(tools.path(), "echo 'bad arguments' >&2; exit 1");
    let err = write_video_with(&quits, &dir.path().join("b.mp4"), &big, (512, 512), 12).unwrap_err();
    assert!(err.to_string().contains("bad arguments"), "{err}");
    assert_eq!(listing(dir.path()), ["run.mp4"]);

    // Exiting 0 without consuming the frames is not taken as success.
    let lazy = fake_ffmpeg(tools.path(), "exit 0");
    let err = write_video_with(&lazy, &dir.path().join("c.mp4"), &big, (512, 512), 12).unwrap_err();
    assert!(err.to_string().contains("cannot stream frames"), "{err}");
    assert_eq!(listing(dir.path()), ["run.mp4"]);
}

#[cfg(unix)]
#[test]
fn frames_are_extracted_from_a_video_through_ffmpeg() {
    let tools = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let video = dir.path().join("clip.mp4");
    std::fs::write(&video, b"a video").unwrap();
    let frame = dir.path().join("one.png");
    gradient(8, 6, 1).save(&frame).unwrap();
    // A stand-in that writes three frames to the numbered pattern it is given last.
    let ok = fake_ffmpeg(
        tools.path(),
        &format!(r#"for a; do out="$a"; done; for i in 0 1 2; do cp {} "$(printf "$out" $i)"; done"#, frame.display()),
    );
    let out = dir.path().join("source");
    assert_eq!(extract_frames_with(&ok, &video, &out, 100).unwrap(), 3);
    assert_eq!(listing(&out), ["000000.png", "000001.png", "000002.png"]);
    // ffmpeg's own complaint, in one line, names the video.
    let bad = fake_ffmpeg(tools.path(), "echo 'clip.mp4: Invalid data found when processing input' >&2; exit 1");
    let err = extract_frames_with(&bad, &video, &dir.path().join("s2"), 100).unwrap_err().to_string();
    assert!(err.contains("Invalid data found") && err.contains("clip.mp4") && !err.contains('\n'), "{err}");
    // A run that writes nothing is an error too; a video that is not a file is refused first.
    let none = fake_ffmpeg(tools.path(), "exit 0");
    assert!(extract_frames_with(&none, &video, &dir.path().join("s3"), 100)
        .unwrap_err()
        .to_string()
        .contains("no frames"));
    assert!(extract_frames_with(&ok, dir.path(), &dir.path().join("s4"), 100).is_err());
}
