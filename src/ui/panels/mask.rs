//! The region brush: the artist paints a prompt row's mask on the live canvas (brush
//! size, paint or erase, clear, show or hide), and the canvas shades what it leaves out. The
//! mask itself lives in the row ([`RowRegion`]); this holds only the brush.

use egui::{Color32, Pos2, Rect};

use crate::settings::Mask;
use crate::ui::state::{RowRegion, StudioState};

/// The shade over the pixels the mask leaves out, so that the painted region stands
/// lit whatever the image's colours.
const SHADE: Color32 = Color32::from_rgba_premultiplied(0, 0, 0, 150);

/// The brush and which row's mask it paints.
pub struct MaskBrush {
    /// The id of the row being painted; `None`: not painting.
    pub target: Option<u32>,
    /// The brush's radius, in mask pixels.
    pub radius: f32,
    pub erase: bool,
    /// Tint the masked pixels on the canvas.
    pub show: bool,
    /// The size a new mask gets: the canvas's frame, or the settings' size before one.
    pub canvas_size: (usize, usize),
    /// Where the stroke in progress last stamped, in mask pixels.
    last: Option<Pos2>,
    overlay: Option<(Mask, egui::TextureHandle)>,
}

impl Default for MaskBrush {
    fn default() -> Self {
        Self { target: None, radius: 8.0, erase: false, show: true, canvas_size: (128, 128), last: None, overlay: None }
    }
}

impl MaskBrush {
    /// Gives the row `id` an empty mask of the canvas's size (if it has none) and starts
    /// painting it.
    pub fn start(&mut self, state: &mut StudioState, id: u32) {
        let (w, h) = self.canvas_size;
        if let Some(row) = state.prompts.iter_mut().find(|r| r.id == id) {
            row.region.get_or_insert_with(|| RowRegion { mask: Mask::empty(w.max(1), h.max(1)), outside: false });
            self.target = Some(id);
            self.show = true;
        }
    }

    /// The mask being painted.
    fn mask<'a>(&self, state: &'a mut StudioState) -> Option<&'a mut Mask> {
        let id = self.target?;
        state.prompts.iter_mut().find(|r| r.id == id)?.region.as_mut().map(|r| &mut r.mask)
    }

    /// The toolbar shown above the canvas while painting; returns true if the mask
    /// changed.
    pub fn toolbar(&mut self, ui: &mut egui::Ui, state: &mut StudioState) -> bool {
        let Some(id) = self.target else { return false };
        let Some(row) = state.prompts.iter().find(|r| r.id == id) else {
            self.target = None;
            return false;
        };
        let mut changed = false;
        let text = crate::settings::prompt::excerpt(row.text.trim());
        ui.horizontal(|ui| {
            ui.label(format!("Region of \"{text}\":"));
            ui.selectable_value(&mut self.erase, false, "Paint").on_hover_text("Drag on the canvas to add to the mask");
            ui.selectable_value(&mut self.erase, true, "Erase").on_hover_text("Drag on the canvas to take away");
            let size = ui.label("brush");
            ui.add(egui::Slider::new(&mut self.radius, 1.0..=64.0).integer()).labelled_by(size.id);
            if ui.button("Clear").on_hover_text("Empty the mask").clicked() {
                if let Some(mask) = self.mask(state) {
                    *mask = Mask::empty(mask.width(), mask.height());
                    changed = true;
                }
            }
            ui.checkbox(&mut self.show, "Show mask");
            if ui.button("Done").on_hover_text("Stop painting (the canvas pans again)").clicked() {
                self.target = None;
            }
        });
        changed
    }

    /// Paints (or erases) on the canvas: a drag with the primary button stamps the brush
    /// along the pointer's path. `image_rect` is where the image is drawn. Returns true
    /// if the mask changed.
    pub fn paint(&mut self, state: &mut StudioState, response: &egui::Response, image_rect: Rect) -> bool {
        let down = response.is_pointer_button_down_on() && response.ctx.input(|i| i.pointer.primary_down());
        let (Some(pos), true) = (response.interact_pointer_pos(), down) else {
            self.last = None;
            return false;
        };
        let (radius, erase, last) = (self.radius, self.erase, self.last);
        let Some(mask) = self.mask(state) else { return false };
        if image_rect.width() <= 0.0 || image_rect.height() <= 0.0 {
            return false;
        }
        #[expect(clippy::cast_precision_loss, reason = "mask sides are at most 8192")]
        let (w, h) = (mask.width() as f32, mask.height() as f32);
        let at = Pos2::new(
            (pos.x - image_rect.left()) / image_rect.width() * w,
            (pos.y - image_rect.top()) / image_rect.height() * h,
        );
        let from = last.unwrap_or(at);
        let mut bits = mask.bits();
        let before = bits.clone();
        // Stamps every half radius along the stroke, so fast drags leave no gaps.
        let steps = ((at - from).length() / (radius * 0.5).max(0.5)).ceil().max(1.0);
        #[expect(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "a stroke's few stamps")]
        for k in 0..=steps as usize {
            #[expect(clippy::cast_precision_loss, reason = "a stroke's few stamps")]
            let p = from + (at - from) * (k as f32 / steps);
            stamp(&mut bits, mask.width(), mask.height(), p, radius, !erase);
        }
        self.last = Some(at);
        if bits == before {
            return false;
        }
        *mask = Mask::from_fn(mask.width(), mask.height(), |x, y| bits[y * mask.width() + x]);
        true
    }

    /// Shows the painted row's mask over the image: what it leaves out is shaded.
    pub fn overlay(&mut self, ui: &egui::Ui, state: &mut StudioState, image_rect: Rect) {
        if !self.show {
            return;
        }
        let Some(mask) = self.mask(state).map(|m| m.clone()) else { return };
        let current = self.overlay.as_ref().is_some_and(|(m, _)| *m == mask);
        if !current {
            let pixels: Vec<Color32> =
                mask.bits().into_iter().map(|b| if b { Color32::TRANSPARENT } else { SHADE }).collect();
            let image = egui::ColorImage::new([mask.width(), mask.height()], pixels);
            match &mut self.overlay {
                Some((m, tex)) => {
                    tex.set(image, egui::TextureOptions::NEAREST);
                    *m = mask;
                }
                None => {
                    let tex = ui.ctx().load_texture("region-mask", image, egui::TextureOptions::NEAREST);
                    self.overlay = Some((mask, tex));
                }
            }
        }
        if let Some((_, tex)) = &self.overlay {
            let uv = Rect::from_min_max(egui::pos2(0.0, 0.0), egui::pos2(1.0, 1.0));
            ui.painter().with_clip_rect(ui.clip_rect()).image(tex.id(), image_rect, uv, Color32::WHITE);
        }
    }
}

/// Sets (or clears) the pixels whose centres lie within `radius` of `at`.
fn stamp(bits: &mut [bool], width: usize, height: usize, at: Pos2, radius: f32, on: bool) {
    #[expect(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "clamped to the mask")]
    let span = |c: f32, n: usize| -> (usize, usize) {
        let lo = (c - radius).floor().max(0.0) as usize;
        let hi = ((c + radius).ceil().max(0.0) as usize).min(n);
        (lo, hi)
    };
    let (x0, x1) = span(at.x, width);
    let (y0, y1) = span(at.y, height);
    for y in y0..y1 {
        for x in x0..x1 {
            #[expect(clippy::cast_precision_loss, reason = "mask sides are at most 8192")]
            let d = Pos2::new(x as f32 + 0.5, y as f32 + 0.5) - at;
            if d.length_sq() <= radius * radius {
                bits[y * width + x] = on;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_is_a_disc() {
        let mut bits = vec![false; 10 * 10];
        stamp(&mut bits, 10, 10, Pos2::new(5.0, 5.0), 2.0, true);
        assert_eq!(bits.iter().filter(|b| **b).count(), 12);
        assert!(bits[5 * 10 + 5] && !bits[0]);
        stamp(&mut bits, 10, 10, Pos2::new(5.0, 5.0), 1.0, false);
        assert_eq!(bits.iter().filter(|b| **b).count(), 8);
        // Off the edge: clipped, no panic.
        stamp(&mut bits, 10, 10, Pos2::new(-3.0, 12.0), 4.0, true);
    }
}
