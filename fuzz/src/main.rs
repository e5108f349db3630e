//! The AFL harness: `clipcanvas-fuzz TARGET` runs one target of `targets::TARGETS` in
//! AFL's persistent mode (under afl-fuzz), or once on standard input (to replay a file).

use std::path::Path;

fn main() {
    let name = std::env::args().nth(1).unwrap_or_default();
    if !clipcanvas_fuzz::targets::TARGETS.contains(&name.as_str()) {
        eprintln!("usage: clipcanvas-fuzz TARGET (one of {})", clipcanvas_fuzz::targets::TARGETS.join(", "));
        std::process::exit(2);
    }
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures");
    afl::fuzz!(|data: &[u8]| {
        // A refusal is the expected answer to most inputs; only panics and aborts count.
        let _ = clipcanvas_fuzz::targets::run(&name, data, &fixtures);
    });
}
