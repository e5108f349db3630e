//! `clipcanvas generate` under hostile conditions (the hardening issue, items 3 to 6):
//! paths that are not Unicode, bad input found before anything is written, unwritable
//! outputs found before the first iteration, and SIGTERM/SIGHUP saving like Ctrl-C.
//! Each test checks the exit code, the one error line, that nothing panicked, and the
//! exact files left behind.

mod common;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{bin, fails, fixture, model_args, names, ok, png_meta, tree};

/// A small, fast run: 32×32, 2 cutouts, 3 iterations, every iteration reported.
fn generate(dir: &Path, extra: &[&str]) -> Output {
    let mut cmd = bin();
    cmd.arg("generate").args(model_args()).args(["-s", "32x32", "--cutn", "2", "-i", "3", "--save-every", "1"]);
    cmd.args(extra).current_dir(dir);
    cmd.output().expect("run clipcanvas")
}

// ---------------------------------------------------------------------------------------
// Issue item 3: paths that are not Unicode
// ---------------------------------------------------------------------------------------

#[cfg(unix)]
fn os(bytes: &[u8]) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    PathBuf::from(std::ffi::OsStr::from_bytes(bytes))
}

/// Hardening issue, item 3: every file flag takes a path that is not valid UTF-8; the
/// run saves everything, the metadata names such paths lossily, and the session resumes
/// (with the models named again, as their saved names are lossy).
#[cfg(unix)]
#[test]
fn paths_that_are_not_utf8_work_for_every_file_flag() {
    let dir = tempfile::tempdir().expect("temp");
    let d = dir.path();
    let models = d.join(os(b"models-\xff"));
    std::fs::create_dir(&models).expect("mkdir");
    let vqgan = models.join(os(b"vq-\xfe.ckpt"));
    let config = models.join(os(b"config-\xfd.yaml")); // not beside the checkpoint: --vqgan-config
    let clip = models.join(os(b"clip-\xfc"));
    std::fs::copy(fixture("vqgan-tiny/model.ckpt"), &vqgan).expect("copy");
    std::fs::copy(fixture("vqgan-tiny/model.yaml"), &config).expect("copy");
    std::fs::create_dir(&clip).expect("mkdir");
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        std::fs::copy(fixture("clip-tiny").join(f), clip.join(f)).expect("copy");
    }
    let init = d.join(os(b"init-\xfb.png"));
    std::fs::copy(fixture("score/exact.png"), &init).expect("copy");
    let before = tree(d);

    let model_flags = |cmd: &mut Command| {
        cmd.arg("--vqgan").arg(&vqgan).arg("--vqgan-config").arg(&config).arg("--clip").arg(&clip);
    };
    let mut cmd = bin();
    cmd.arg("generate").args(["-s", "32x32", "--cutn", "2", "-i", "2", "--save-every", "1", "-p", "x"]);
    model_flags(&mut cmd);
    cmd.arg("--init-image").arg(os(b"init-\xfb.png"));
    cmd.arg("-o").arg(os(b"out-\xff.png"));
    cmd.arg("--session").arg(os(b"run-\xff.session"));
    cmd.arg("--gif").arg(os(b"anim-\xff.gif"));
    cmd.arg("--frames").arg(os(b"frames-\xff"));
    let s = ok(&cmd.current_dir(d).output().expect("run"));
    assert!(!s.stderr.contains("panicked"), "{}", s.stderr);

    let mut want: Vec<OsString> = before.keys().cloned().collect();
    for name in [&b"out-\xff.png"[..], b"run-\xff.session", b"anim-\xff.gif", b"frames-\xff/"] {
        want.push(os(name).into_os_string());
    }
    for frame in ["frame_000000.png", "frame_000001.png"] {
        let mut name = os(b"frames-\xff").into_os_string();
        name.push("/");
        name.push(frame);
        want.push(name);
    }
    want.sort();
    let got: Vec<OsString> = tree(d).into_keys().collect();
    assert_eq!(got, want);
    // The inputs are untouched.
    for (name, bytes) in &before {
        assert_eq!(&tree(d)[name], bytes, "{name:?}");
    }

    // The PNG's metadata is whole, with the odd bytes replaced.
    let meta = png_meta(&d.join(os(b"out-\xff.png")));
    assert_eq!(meta["iteration"], 2);
    assert_eq!(meta["settings"]["init_image"], "init-\u{fffd}.png");
    assert_eq!(meta["settings"]["vqgan"], vqgan.to_string_lossy().as_ref());
    assert_eq!(meta["settings"]["vqgan_config"], config.to_string_lossy().as_ref());
    assert_eq!(meta["settings"]["clip"], clip.to_string_lossy().as_ref());
    assert_eq!(meta["models"]["vqgan"]["name"], "vq-\u{fffd}.ckpt");

    // The session resumes, given the models again, to the same image as a straight run.
    let mut cmd = bin();
    cmd.arg("generate").arg("--resume").arg(os(b"run-\xff.session")).args(["-i", "3", "-o", "resumed.png"]);
    model_flags(&mut cmd);
    ok(&cmd.current_dir(d).output().expect("run"));
    let mut cmd = bin();
    cmd.arg("generate").args(["-s", "32x32", "--cutn", "2", "-i", "3", "-p", "x", "-o", "straight.png"]);
    model_flags(&mut cmd);
    cmd.arg("--init-image").arg(os(b"init-\xfb.png"));
    ok(&cmd.current_dir(d).output().expect("run"));
    let pixels = |name: &str| image::open(d.join(name)).expect("png").to_rgb8().into_raw();
    assert_eq!(pixels("resumed.png"), pixels("straight.png"), "bit-exact continuation");
}

// ---------------------------------------------------------------------------------------
// Issue item 4: a run that fails writes nothing it was not asked for
// ---------------------------------------------------------------------------------------

/// What a folder holds when only `out.png` holds `bytes`.
fn only_out(bytes: &[u8]) -> BTreeMap<OsString, Vec<u8>> {
    BTreeMap::from([(OsString::from("out.png"), bytes.to_vec())])
}

/// Hardening issue, item 4: prompts that leave nothing to optimise fail with exit 2
/// before anything is written: an earlier --out keeps its bytes, and no session, GIF or
/// frames folder appears.
#[test]
fn a_run_with_nothing_to_optimise_writes_nothing() {
    for prompt in ["a:0", "", "|", "^", "   ", " | ^ | ", "a ^ b:0"] {
        let dir = tempfile::tempdir().expect("temp");
        let d = dir.path();
        std::fs::write(d.join("out.png"), b"an earlier image").expect("write");
        let out = generate(d, &["-p", prompt, "-o", "out.png", "--gif", "a.gif", "--frames", "frames"]);
        let stderr = fails(&out, 2, "nothing to optimise");
        assert!(!stderr.contains("iteration "), "{prompt:?} ran: {stderr}");
        assert_eq!(tree(d), only_out(b"an earlier image"), "{prompt:?}");
    }
}

/// Hardening issue, item 4: a loss that becomes NaN fails with exit 1 and writes no
/// image (it would be black) and no session; an earlier --out keeps its bytes. (An init
/// weight of 1e300 overflows f32: the loss is not finite at iteration 0.)
#[test]
fn a_nan_loss_keeps_the_earlier_image_and_writes_no_session() {
    let dir = tempfile::tempdir().expect("temp");
    let d = dir.path();
    std::fs::write(d.join("out.png"), b"an earlier image").expect("write");
    let out = generate(d, &["-p", "x", "--init-weight", "1e300", "-o", "out.png", "--session", "s.session"]);
    fails(&out, 1, "NaN or infinite at iteration 0");
    assert_eq!(tree(d), only_out(b"an earlier image"));
    // Without --session and --out the same: no output.png, no output.session.
    let out = generate(d, &["-p", "x", "--init-weight", "1e300"]);
    fails(&out, 1, "NaN or infinite");
    assert_eq!(tree(d), only_out(b"an earlier image"));
}

// ---------------------------------------------------------------------------------------
// Issue item 5: unwritable outputs are found before the first iteration
// ---------------------------------------------------------------------------------------

/// Hardening issue, item 5: an output that cannot be written (a missing folder, a folder
/// given as a file, a file given as a folder) fails with exit 2 and one line naming it,
/// before the first iteration, and nothing is written. (--video without ffmpeg: see
/// `video_without_ffmpeg_says_so_clearly` in cli_generate.rs.)
#[test]
fn unwritable_outputs_are_found_before_the_first_iteration() {
    let dir = tempfile::tempdir().expect("temp");
    let d = dir.path();
    std::fs::write(d.join("file"), b"a file").expect("write");
    std::fs::create_dir(d.join("folder")).expect("mkdir");
    let before = tree(d);
    let cases: [(&[&str], &str); 8] = [
        (&["-o", "missing/x.png"], "missing/x.png: cannot write: No such file or directory"),
        (&["--session", "missing/x.session"], "missing/x.session: cannot write"),
        (&["--gif", "missing/x.gif"], "missing/x.gif: cannot write"),
        (&["--video", "missing/x.mp4"], "missing/x.mp4: cannot write"),
        (&["-o", "folder"], "folder: cannot write: it is a folder"),
        (&["-o", "file/x.png"], "file/x.png: cannot write: Not a directory"),
        (&["--frames", "file/frames"], "file/frames: cannot write frames there: file is not a folder"),
        (&["--frames", "folder/new/frames", "-o", "missing/x.png"], "missing/x.png"),
    ];
    for (flags, needle) in cases {
        let out = generate(d, &[&["-p", "x"][..], flags].concat());
        let stderr = fails(&out, 2, needle);
        assert!(!stderr.contains("iteration "), "{flags:?} ran: {stderr}");
        assert_eq!(tree(d), before, "{flags:?}");
    }
    // A frames folder that does not exist yet is created by the run.
    ok(&generate(d, &["-p", "x", "--frames", "folder/new/frames", "-i", "1"]));
    assert_eq!(names(&d.join("folder")), ["new/", "new/frames/", "new/frames/frame_000000.png"]);
}

/// Hardening issue, item 5: a read-only folder is found before the first iteration.
/// Root writes anyway, so as root the command runs as `nobody`, for whom it is read-only.
#[cfg(unix)]
#[test]
fn a_read_only_folder_is_found_before_the_first_iteration() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().expect("temp");
    let d = dir.path();
    let ro = d.join("ro");
    std::fs::create_dir(&ro).expect("mkdir");
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).expect("chmod");
    std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let command = |out: &str, nobody: bool| {
        let mut cmd = bin();
        cmd.arg("generate").args(model_args()).args(["-s", "32x32", "--cutn", "2", "-i", "3", "--save-every", "1"]);
        cmd.args(["-p", "x", "-o", out]).current_dir(d);
        if nobody {
            cmd.uid(65534).gid(65534);
        }
        cmd
    };
    let as_root = std::fs::File::create(ro.join("probe")).is_ok();
    if as_root {
        std::fs::remove_file(ro.join("probe")).expect("rm");
        // Only where `nobody` can run the binary and read the models (a checkout in a
        // folder only root may enter cannot): a run into a folder anyone may write first.
        let open = d.join("open");
        std::fs::create_dir(&open).expect("mkdir");
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        let baseline = command("open/x.png", true).output();
        std::fs::remove_dir_all(&open).expect("rm");
        if !baseline.is_ok_and(|o| o.status.success()) {
            eprintln!("skipped: running as root, and `nobody` cannot run clipcanvas on its models here");
            return;
        }
    }
    let out = command("ro/x.png", as_root).output().expect("run");
    let stderr = fails(&out, 2, "ro/x.png: cannot write: Permission denied");
    assert!(!stderr.contains("iteration "), "{stderr}");
    assert_eq!(names(d), ["ro/"]);
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

// ---------------------------------------------------------------------------------------
// Issue item 6: SIGTERM and SIGHUP save like Ctrl-C
// ---------------------------------------------------------------------------------------

/// Starts a long run in `d`, waits for its first progress line, sends `signal` with
/// kill(1), and returns the exit code and the rest of stderr. With `hang_up_stderr` the
/// reading end of stderr is closed before the signal, as when a terminal goes away, and
/// the rest is empty.
fn interrupt(d: &Path, signal: &str, hang_up_stderr: bool) -> (Option<i32>, Vec<String>) {
    let mut cmd = bin();
    cmd.arg("generate").args(model_args()).args(["-s", "32x32", "--cutn", "2", "-p", "x", "-i", "100000"]);
    cmd.args(["--save-every", "1"]);
    let mut child = cmd.current_dir(d).stderr(Stdio::piped()).spawn().expect("spawn");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stderr));
    let first = lines.next().expect("a progress line").expect("utf8");
    assert!(first.starts_with("iteration"), "{first}");
    let lines = if hang_up_stderr {
        drop(lines);
        // Let the run meet the closed pipe before it is told to stop.
        std::thread::sleep(std::time::Duration::from_millis(300));
        None
    } else {
        Some(lines)
    };
    let kill = Command::new("kill").args([&format!("-{signal}"), &child.id().to_string()]).status();
    assert!(kill.expect("kill").success());
    let rest: Vec<String> = lines.map(|l| l.map_while(Result::ok).collect()).unwrap_or_default();
    (child.wait().expect("wait").code(), rest)
}

/// Checks a run stopped by a signal left exactly the last frame and its session, both
/// whole: the session resumed for no further iterations renders the same pixels.
fn assert_saved(d: &Path) {
    assert_eq!(names(d), ["output.png", "output.session"]);
    let meta = png_meta(&d.join("output.png"));
    let iteration = meta["iteration"].as_u64().expect("iteration");
    assert!(iteration >= 1, "{meta}");
    let again = bin()
        .args(["generate", "--resume", "output.session", "-i", &iteration.to_string(), "-o", "again.png"])
        .current_dir(d)
        .output()
        .expect("run");
    ok(&again);
    let pixels = |name: &str| image::open(d.join(name)).expect("png").to_rgb8().into_raw();
    assert_eq!(pixels("output.png"), pixels("again.png"), "the session holds the saved frame's latent");
    // And it goes on from there.
    ok(&bin()
        .args(["generate", "--resume", "output.session", "-i", &(iteration + 1).to_string(), "-o", "more.png"])
        .current_dir(d)
        .output()
        .expect("run"));
}

/// Hardening issue, item 6: SIGTERM and SIGHUP stop a run the way Ctrl-C does: exit 130,
/// one "stopped at" line, the last frame and the session saved.
#[test]
fn sigterm_and_sighup_save_the_last_frame_and_the_session() {
    for signal in ["TERM", "HUP"] {
        let dir = tempfile::tempdir().expect("temp");
        let d = dir.path();
        let (code, rest) = interrupt(d, signal, false);
        assert_eq!(code, Some(130), "SIG{signal}: {rest:?}");
        assert!(!rest.iter().any(|l| l.contains("panicked") || l.starts_with("error")), "SIG{signal}: {rest:?}");
        let stopped: Vec<&String> = rest.iter().filter(|l| l.starts_with("stopped at iteration")).collect();
        assert_eq!(stopped.len(), 1, "SIG{signal}: {rest:?}");
        assert!(stopped[0].ends_with("image in output.png, session in output.session"), "{stopped:?}");
        assert_saved(d);
    }
}

/// Hardening issue, item 6: SIGHUP usually means the terminal is gone; writing progress
/// to it then fails, and must not stop the run from saving.
#[test]
fn sighup_saves_even_when_stderr_is_gone() {
    let dir = tempfile::tempdir().expect("temp");
    let d = dir.path();
    let (code, _) = interrupt(d, "HUP", true);
    assert_eq!(code, Some(130));
    assert_saved(d);
}

// ---------------------------------------------------------------------------------------
// Issue 27, autosave: a killed run loses at most the iterations since its last autosave
// ---------------------------------------------------------------------------------------

#[test]
fn a_killed_run_resumes_from_its_autosave() {
    let dir = tempfile::tempdir().expect("temp");
    let d = dir.path();
    let mut cmd = bin();
    cmd.arg("generate").args(model_args()).args(["-s", "32x32", "--cutn", "2", "-p", "x", "-i", "100000"]);
    cmd.args(["--save-every", "1", "--autosave", "5"]);
    let mut child = cmd.current_dir(d).stderr(Stdio::piped()).spawn().expect("spawn");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stderr));
    let mut seen = 0;
    while seen < 12 {
        let line = lines.next().expect("a progress line").expect("utf8");
        if let Some(n) = line.strip_prefix("iteration ").and_then(|r| r.split('/').next()) {
            seen = n.parse().expect("a number");
        }
    }
    // A kill: no handler runs, nothing is saved at the end.
    assert!(Command::new("kill").args(["-KILL", &child.id().to_string()]).status().expect("kill").success());
    let _ = child.wait();
    assert_eq!(names(d), ["output.autosave.session"], "only the autosave is there");
    let (_, at) = clipcanvas::engine::session::Session::read_saved(&d.join("output.autosave.session")).expect("read");
    assert!(at % 5 == 0 && at >= 10, "autosaved at iteration {at}, the run had done {seen}");
    // It resumes, and a run that ends leaves no autosave behind.
    let resumed = bin()
        .args(["generate", "--resume", "output.autosave.session", "-i", &(at + 3).to_string(), "-o", "more.png"])
        .current_dir(d)
        .output()
        .expect("run");
    ok(&resumed);
    assert_eq!(png_meta(&d.join("more.png"))["iteration"].as_u64(), Some(at as u64 + 3));
    assert!(!d.join("more.autosave.session").exists());
    let mut off = bin();
    off.arg("generate").args(model_args()).args([
        "-s",
        "32x32",
        "--cutn",
        "2",
        "-p",
        "x",
        "-i",
        "12",
        "--autosave",
        "0",
    ]);
    ok(&off.args(["-o", "off.png"]).current_dir(d).output().expect("run"));
    assert!(!d.join("off.autosave.session").exists());
}
