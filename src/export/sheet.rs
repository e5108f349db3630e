//! The contact sheet of an X/Y grid (`clipcanvas batch`): each cell's image in its place,
//! the x axis's values labelled along the top and the y axis's down the left, in egui's
//! Ubuntu Light (rasterised with `ab_glyph`), white on dark grey.

use ab_glyph::{Font, FontRef, PxScale, ScaleFont};
use image::{Rgb, RgbImage};

const BACKGROUND: Rgb<u8> = Rgb([32, 32, 32]);
const INK: [f32; 3] = [235.0, 235.0, 235.0];
/// Space around the cells and between them, in pixels.
const GAP: u32 = 8;

/// Draws the sheet: `cells[row][col]` (a missing cell stays background), the x labels
/// (one a column, with `x_title`) over the columns and the y labels (with `y_title`)
/// left of the rows.
pub fn contact_sheet(
    cells: &[Vec<Option<RgbImage>>],
    x_title: &str,
    x_labels: &[String],
    y: Option<(&str, &[String])>,
) -> RgbImage {
    let font = FontRef::try_from_slice(epaint_default_fonts::UBUNTU_LIGHT).ok();
    let (cw, ch) = cells.iter().flatten().flatten().fold((1, 1), |(w, h), c| (w.max(c.width()), h.max(c.height())));
    let scale = PxScale::from((ch as f32 / 8.0).clamp(14.0, 28.0));
    let line = scale.y.ceil() as u32 + 4;
    let text_w = |s: &str| font.as_ref().map_or(0.0, |f| width(f, scale, s)).ceil() as u32;
    let left = match y {
        Some((title, labels)) => {
            let widest = labels.iter().map(|l| text_w(l)).chain([text_w(title)]).max().unwrap_or(0);
            widest.min(cw * 2) + 2 * GAP
        }
        None => GAP,
    };
    let top = 2 * line + GAP;
    let cols = x_labels.len().max(cells.iter().map(Vec::len).max().unwrap_or(0)) as u32;
    let rows = cells.len() as u32;
    let width = left + cols * (cw + GAP);
    let height = top + rows * (ch + GAP);
    let mut sheet = RgbImage::from_pixel(width, height, BACKGROUND);
    let Some(font) = font.as_ref() else { return sheet };
    let mut text = |s: &str, x: u32, y: u32, max_w: u32| draw(&mut sheet, font, scale, s, x, y, max_w);
    text(x_title, left, GAP / 2, width.saturating_sub(left));
    for (i, l) in x_labels.iter().enumerate() {
        let x = left + i as u32 * (cw + GAP);
        text(l, x + cw.saturating_sub(text_w(l)) / 2, GAP / 2 + line, cw);
    }
    if let Some((title, labels)) = y {
        text(title, GAP, GAP / 2 + line, left.saturating_sub(GAP));
        for (j, l) in labels.iter().enumerate() {
            let y = top + j as u32 * (ch + GAP) + ch / 2;
            text(l, GAP, y.saturating_sub(line / 2), left.saturating_sub(2 * GAP));
        }
    }
    for (j, row) in cells.iter().enumerate() {
        for (i, cell) in row.iter().enumerate() {
            let Some(img) = cell else { continue };
            let x = left + i as u32 * (cw + GAP) + (cw - img.width()) / 2;
            let y = top + j as u32 * (ch + GAP) + (ch - img.height()) / 2;
            image::imageops::replace(&mut sheet, img, i64::from(x), i64::from(y));
        }
    }
    sheet
}

fn width(font: &FontRef<'_>, scale: PxScale, s: &str) -> f32 {
    let f = font.as_scaled(scale);
    s.chars().map(|c| f.h_advance(f.glyph_id(c))).sum()
}

/// Draws `s` with its top-left at `(x, y)`, cut off past `max_w` pixels.
fn draw(img: &mut RgbImage, font: &FontRef<'_>, scale: PxScale, s: &str, x: u32, y: u32, max_w: u32) {
    let f = font.as_scaled(scale);
    let mut pen = x as f32;
    let baseline = y as f32 + f.ascent();
    for c in s.chars() {
        let id = f.glyph_id(c);
        let advance = f.h_advance(id);
        if pen + advance > (x + max_w) as f32 {
            break;
        }
        let glyph = id.with_scale_and_position(scale, ab_glyph::point(pen, baseline));
        if let Some(outline) = font.outline_glyph(glyph) {
            let bounds = outline.px_bounds();
            outline.draw(|gx, gy, coverage| {
                let px = bounds.min.x as i64 + i64::from(gx);
                let py = bounds.min.y as i64 + i64::from(gy);
                let (Ok(px), Ok(py)) = (u32::try_from(px), u32::try_from(py)) else { return };
                if px < img.width() && py < img.height() {
                    let p = img.get_pixel_mut(px, py);
                    for (ch, ink) in p.0.iter_mut().zip(INK) {
                        *ch = (f32::from(*ch) * (1.0 - coverage) + ink * coverage).round() as u8;
                    }
                }
            });
        }
        pen += advance;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_go_in_their_places_with_labels_around() {
        let red = RgbImage::from_pixel(40, 30, Rgb([255, 0, 0]));
        let blue = RgbImage::from_pixel(40, 30, Rgb([0, 0, 255]));
        let cells = vec![vec![Some(red.clone()), Some(blue)], vec![None, Some(red)]];
        let x = ["1".to_owned(), "22".to_owned()];
        let y = ["lighthouse".to_owned(), "castle".to_owned()];
        let sheet = contact_sheet(&cells, "seed", &x, Some(("prompt", &y)));
        let count = |c: [u8; 3]| sheet.pixels().filter(|p| p.0 == c).count();
        assert_eq!(count([255, 0, 0]), 2 * 40 * 30);
        assert_eq!(count([0, 0, 255]), 40 * 30);
        // Light pixels: the labels' ink.
        assert!(sheet.pixels().filter(|p| p.0[1] > 150).count() > 100);
        // The red cell of row 1 is right of the labels and under the column titles.
        let first_red = sheet.enumerate_pixels().find(|(_, _, p)| p.0 == [255, 0, 0]).map(|(x, y, _)| (x, y));
        let (x0, y0) = first_red.expect("a red cell");
        assert!(x0 > 2 * GAP && y0 > 2 * GAP, "{x0}, {y0}");
    }
}
