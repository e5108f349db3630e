//! Validates every WGSL shader in shaders/ at compile time, so a broken shader fails the
//! build rather than the user. Nothing else happens here, and nothing at all in a headless
//! build (without the `studio` feature), which has no shaders to run.

#[cfg(feature = "studio")]
use std::path::Path;

#[cfg(not(feature = "studio"))]
fn main() {}

#[cfg(feature = "studio")]
fn main() {
    println!("cargo:rerun-if-changed=shaders");
    let dir = Path::new("shaders");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut paths: Vec<_> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "wgsl"))
        .collect();
    paths.sort();
    for path in paths {
        println!("cargo:rerun-if-changed={}", path.display());
        let source = match std::fs::read_to_string(&path) {
            Ok(s) => s,
            Err(e) => fail(&path, &e.to_string()),
        };
        let module = match naga::front::wgsl::parse_str(&source) {
            Ok(m) => m,
            Err(e) => fail(&path, &e.emit_to_string_with_path(&source, &path.display().to_string())),
        };
        let mut validator =
            naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::all());
        if let Err(e) = validator.validate(&module) {
            fail(&path, &e.emit_to_string_with_path(&source, &path.display().to_string()));
        }
    }
}

#[cfg(feature = "studio")]
fn fail(path: &Path, msg: &str) -> ! {
    eprintln!("{msg}");
    panic!("shader {} is invalid", path.display());
}
