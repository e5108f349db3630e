//! The look losses against pixray's PyTorch code (`tests/reference/make_look_fixtures.py`):
//! values and gradients of saturation, both mirror symmetries and the edge colour; and,
//! as processes, a symmetry weight that makes the image more symmetric and an edge
//! weight that colours the border.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use candle_core::{Tensor, Var};
use clipcanvas::engine::looks::LookLosses;
use clipcanvas::settings::Looks;
use common::{assert_close, bin, device, fixture, golden, model_args, ok};

fn expected_values() -> serde_json::Value {
    let text = std::fs::read_to_string(fixture("looks/values.json")).expect("values.json");
    serde_json::from_str::<serde_json::Value>(&text).expect("json")["values"].clone()
}

/// The one term `looks` makes on the golden image and cutouts, its value and the
/// gradients with respect to the image and the cutouts.
fn term(looks: Looks) -> (f64, Tensor, Tensor) {
    let g = golden("looks/expected.safetensors");
    let image = Var::from_tensor(&g["image"]).expect("var");
    let cutouts = Var::from_tensor(&g["cutouts"]).expect("var");
    let (_, _, h, w) = image.as_tensor().dims4().expect("4d");
    let losses = LookLosses::new(looks, w, h, &device()).expect("looks");
    let terms = losses.terms(image.as_tensor(), cutouts.as_tensor()).expect("terms");
    assert_eq!(terms.len(), 1, "one look on: {:?}", terms.iter().map(|t| &t.0).collect::<Vec<_>>());
    let loss = &terms[0].1;
    let value = f64::from(loss.to_scalar::<f32>().expect("scalar"));
    let grads = loss.backward().expect("backward");
    let zero = |v: &Var| v.as_tensor().zeros_like().expect("zeros");
    let gi = grads.get(image.as_tensor()).cloned().unwrap_or_else(|| zero(&image));
    let gc = grads.get(cutouts.as_tensor()).cloned().unwrap_or_else(|| zero(&cutouts));
    (value, gi, gc)
}

/// The edge look of the golden case: orange, 10 % strips, pixray's global share.
fn edge_looks() -> Looks {
    let text = std::fs::read_to_string(fixture("looks/values.json")).expect("values.json");
    let v: serde_json::Value = serde_json::from_str(&text).expect("json");
    let e = &v["edge"];
    let c = |i: usize| e["color"][i].as_f64().expect("colour");
    Looks {
        edge: 1.0,
        edge_color: [c(0), c(1), c(2)],
        edge_thickness: e["thickness"].as_f64().expect("thickness"),
        edge_global: e["global"].as_f64().expect("global"),
        ..Looks::default()
    }
}

/// The palette look of the golden case: four colours at weight 1.
fn palette_looks() -> Looks {
    let text = std::fs::read_to_string(fixture("looks/values.json")).expect("values.json");
    let v: serde_json::Value = serde_json::from_str(&text).expect("json");
    let palette = v["palette"]
        .as_array()
        .expect("palette")
        .iter()
        .map(|c| [0, 1, 2].map(|i| c[i].as_f64().expect("channel")))
        .collect();
    Looks { palette_weight: 1.0, palette, ..Looks::default() }
}

#[test]
fn saturation_symmetry_edge_and_palette_match_pixrays_losses_and_gradients() {
    let want = expected_values();
    let g = golden("looks/expected.safetensors");
    let cases = [
        ("saturation", Looks { saturation: 1.0, ..Looks::default() }),
        ("symmetry", Looks { symmetry: 1.0, ..Looks::default() }),
        ("symmetry_vertical", Looks { symmetry_vertical: 1.0, ..Looks::default() }),
        ("edge", edge_looks()),
        ("palette", palette_looks()),
    ];
    for (name, looks) in cases {
        let (value, grad_image, grad_cutouts) = term(looks);
        let expected = want[name].as_f64().expect("value");
        assert!((value - expected).abs() <= 1e-6 * expected.abs().max(1e-3), "{name}: {value} vs {expected}");
        let on_cutouts = name == "saturation" || name == "palette";
        let (grad, _) = if on_cutouts { (grad_cutouts, grad_image) } else { (grad_image, grad_cutouts) };
        assert_close(&format!("{name}: gradient"), &grad, &g[&format!("{name}.grad")], 1e-5);
    }
}

#[test]
fn the_tilers_roll_is_torch_roll() {
    let g = golden("looks/expected.safetensors");
    let rolled = clipcanvas::engine::looks::roll(&g["image"], 13, 5).expect("roll");
    assert_close("rolled by (5, 13)", &rolled, &g["rolled"], 0.0);
    let (_, _, h, w) = g["image"].dims4().expect("4d");
    let whole = clipcanvas::engine::looks::roll(&g["image"], w, 2 * h).expect("roll");
    assert_close("rolled by whole turns", &whole, &g["image"], 0.0);
}

#[test]
fn weights_scale_the_terms_and_off_makes_none() {
    let g = golden("looks/expected.safetensors");
    let (_, _, h, w) = g["image"].dims4().expect("4d");
    let off = LookLosses::new(Looks::default(), w, h, &device()).expect("looks");
    assert!(off.terms(&g["image"], &g["cutouts"]).expect("terms").is_empty());
    let (one, _, _) = term(Looks { symmetry: 1.0, ..Looks::default() });
    let (three, _, _) = term(Looks { symmetry: 3.0, ..Looks::default() });
    assert!((three - 3.0 * one).abs() < 1e-6 * three.abs(), "{three} vs 3 × {one}");
}

/// A 30-iteration pixel-cell run of the fixture models in `dir` (the look tests' common
/// run), with `extra` flags, writing `out`.
fn pixel_run(dir: &std::path::Path, extra: &[&str], out: &str) -> std::process::Output {
    let mut cmd = bin();
    cmd.arg("generate").args(model_args());
    cmd.args(["--generator", "pixel", "--pixel-size", "16x16", "-s", "32x32", "--cutn", "2", "-i", "30"]);
    cmd.args(["-p", "a lighthouse", "--seed", "4", "-o", out]).args(extra).current_dir(dir);
    cmd.output().expect("run")
}

/// Mean absolute difference between an image and its left–right mirror, in 0–255.
fn asymmetry(path: &std::path::Path) -> f64 {
    let img = image::open(path).expect("png").to_rgb8();
    let (w, h) = img.dimensions();
    let mut sum = 0u64;
    for (x, y, p) in img.enumerate_pixels() {
        let q = img.get_pixel(w - 1 - x, y);
        sum += p.0.iter().zip(q.0).map(|(a, b)| u64::from(a.abs_diff(b))).sum::<u64>();
    }
    #[expect(clippy::cast_precision_loss, reason = "a mean")]
    let mean = sum as f64 / f64::from(3 * w * h);
    mean
}

#[test]
fn a_symmetry_weight_makes_the_image_more_symmetric() {
    let dir = tempfile::tempdir().expect("temp");
    let d = dir.path();
    let run = |extra: &[&str], out: &str| {
        ok(&pixel_run(d, extra, out));
    };
    run(&[], "plain.png");
    run(&["--symmetry", "50"], "mirror.png");
    let (plain, mirror) = (asymmetry(&d.join("plain.png")), asymmetry(&d.join("mirror.png")));
    assert!(mirror < plain / 2.0, "asymmetry {mirror:.1} with the symmetry loss against {plain:.1} without");
    let meta = clipcanvas::export::read_png_metadata(&d.join("mirror.png")).expect("read").expect("metadata");
    let v: serde_json::Value = serde_json::from_str(&meta).expect("json");
    assert_eq!(v["settings"]["looks"]["symmetry"], 50.0, "the PNG keeps the look");
}

/// Mean distance (0–255) of the pixels within `strip` of the border from `colour`.
fn border_distance(path: &std::path::Path, strip: u32, colour: [u8; 3]) -> f64 {
    let img = image::open(path).expect("png").to_rgb8();
    let (w, h) = img.dimensions();
    let (mut sum, mut n) = (0u64, 0u64);
    for (x, y, p) in img.enumerate_pixels() {
        if x < strip || y < strip || x >= w - strip || y >= h - strip {
            sum += p.0.iter().zip(colour).map(|(a, b)| u64::from(a.abs_diff(b))).sum::<u64>();
            n += 3;
        }
    }
    #[expect(clippy::cast_precision_loss, reason = "a mean")]
    let mean = sum as f64 / n as f64;
    mean
}

#[test]
fn an_edge_weight_pulls_the_border_to_its_colour_and_a_bad_colour_is_one_line() {
    let dir = tempfile::tempdir().expect("temp");
    let d = dir.path();
    let run = |extra: &[&str], out: &str| pixel_run(d, extra, out);
    ok(&run(&[], "plain.png"));
    ok(&run(&["--edge", "20", "--edge-color", "#00ff00", "--edge-thickness", "10"], "edge.png"));
    let (plain, edged) =
        (border_distance(&d.join("plain.png"), 2, [0, 255, 0]), border_distance(&d.join("edge.png"), 2, [0, 255, 0]));
    assert!(edged < plain / 2.0, "border {edged:.1} from green with the edge loss against {plain:.1} without");
    common::fails(&run(&["--edge", "1", "--edge-color", "greenish"], "x.png"), 2, "--edge-color");
    common::fails(&run(&["--edge-thickness", "60"], "x.png"), 2, "between 0 and 45 percent");
    assert!(!d.join("x.png").exists());
}

/// Mean distance (0–1, Euclidean over RGB) of an image's pixels from the nearest of
/// `palette`.
fn palette_distance(path: &std::path::Path, palette: &[[f64; 3]]) -> f64 {
    let img = image::open(path).expect("png").to_rgb8();
    let mut sum = 0.0;
    for p in img.pixels() {
        let rgb = p.0.map(|v| f64::from(v) / 255.0);
        let d = palette
            .iter()
            .map(|c| c.iter().zip(rgb).map(|(a, b)| (a - b).powi(2)).sum::<f64>().sqrt())
            .fold(f64::INFINITY, f64::min);
        sum += d;
    }
    sum / f64::from(img.width() * img.height())
}

#[test]
fn a_palette_pulls_the_pixels_to_its_colours_and_an_unreadable_one_is_one_line() {
    let dir = tempfile::tempdir().expect("temp");
    let d = dir.path();
    let run = |extra: &[&str], out: &str| pixel_run(d, extra, out);
    std::fs::write(d.join("bw.txt"), "# black and white\n#000000\nwhite\n").expect("palette file");
    ok(&run(&[], "plain.png"));
    ok(&run(&["--palette", "bw.txt", "--palette-weight", "20"], "bw.png"));
    let bw = [[0.0; 3], [1.0; 3]];
    let (plain, kept) = (palette_distance(&d.join("plain.png"), &bw), palette_distance(&d.join("bw.png"), &bw));
    assert!(kept < plain / 2.0, "distance from black and white {kept:.3} with the palette against {plain:.3} without");
    let meta = clipcanvas::export::read_png_metadata(&d.join("bw.png")).expect("read").expect("metadata");
    let v: serde_json::Value = serde_json::from_str(&meta).expect("json");
    assert_eq!(v["settings"]["looks"]["palette"], serde_json::json!([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]));
    common::fails(&run(&["--palette", "blurple"], "x.png"), 2, "--palette: colour \"blurple\"");
    common::fails(&run(&["--palette-weight", "1"], "x.png"), 2, "needs a palette");
    assert!(!d.join("x.png").exists());
}

/// Mean absolute difference (0–255) between horizontally and vertically neighbouring
/// pixels.
fn roughness(path: &std::path::Path) -> f64 {
    let img = image::open(path).expect("png").to_rgb8();
    let (w, h) = img.dimensions();
    let (mut sum, mut n) = (0u64, 0u64);
    for (x, y, p) in img.enumerate_pixels() {
        for (dx, dy) in [(1, 0), (0, 1)] {
            if x + dx < w && y + dy < h {
                let q = img.get_pixel(x + dx, y + dy);
                sum += p.0.iter().zip(q.0).map(|(a, b)| u64::from(a.abs_diff(b))).sum::<u64>();
                n += 3;
            }
        }
    }
    #[expect(clippy::cast_precision_loss, reason = "a mean")]
    let mean = sum as f64 / n.max(1) as f64;
    mean
}

#[test]
fn the_smoothness_look_is_the_total_variation_weight() {
    let dir = tempfile::tempdir().expect("temp");
    let d = dir.path();
    ok(&pixel_run(d, &[], "plain.png"));
    ok(&pixel_run(d, &["--smoothness", "20"], "smooth.png"));
    let (plain, smooth) = (roughness(&d.join("plain.png")), roughness(&d.join("smooth.png")));
    assert!(smooth < plain * 0.8, "roughness {smooth:.1} with smoothness against {plain:.1} without");
    let meta = clipcanvas::export::read_png_metadata(&d.join("smooth.png")).expect("read").expect("metadata");
    let v: serde_json::Value = serde_json::from_str(&meta).expect("json");
    assert_eq!(v["settings"]["tv_weight"], 20.0, "smoothness is the total-variation weight");
}
