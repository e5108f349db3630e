//! The look losses' weights (`engine::looks`): plain data, all off by default.

use serde::{Deserialize, Serialize};

/// Weights of the look losses; 0 is off.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Looks {
    /// pixray's colourfulness loss on the cutouts (negative: toward grey).
    pub saturation: f64,
    /// Mirror symmetry left–right: MSE between the image and its mirror image.
    pub symmetry: f64,
    /// Mirror symmetry top–bottom.
    pub symmetry_vertical: f64,
    /// pixray's edge colour loss: the weight of the border strips' (and, at
    /// `edge_global` of that, the whole image's) MSE from `edge_color`.
    pub edge: f64,
    /// The border's colour, RGB in `[0, 1]` (pixray's default: white).
    pub edge_color: [f64; 3],
    /// The strips' width, in percent of the side (pixray's default 5).
    pub edge_thickness: f64,
    /// The whole image's share of the edge loss (pixray's `global_color_weight`, 0.05).
    pub edge_global: f64,
    /// Seamless tiling: each step the image is rolled by a random offset before the
    /// cutouts, so the result tiles (pixray's `--tiler`).
    pub tile: bool,
    /// pixray's palette loss: the weight of the cutouts' pixels' distance from their
    /// nearest colour of `palette`.
    pub palette_weight: f64,
    /// The palette's colours, RGB in `[0, 1]`.
    pub palette: Vec<[f64; 3]>,
}

impl Default for Looks {
    fn default() -> Self {
        Self {
            saturation: 0.0,
            symmetry: 0.0,
            symmetry_vertical: 0.0,
            edge: 0.0,
            edge_color: [1.0, 1.0, 1.0],
            edge_thickness: 5.0,
            edge_global: 0.05,
            tile: false,
            palette_weight: 0.0,
            palette: Vec::new(),
        }
    }
}

impl Looks {
    pub fn is_off(&self) -> bool {
        *self == Self::default()
    }

    pub fn validate(&self) -> Result<(), String> {
        for (name, v) in [
            ("saturation", self.saturation),
            ("symmetry", self.symmetry),
            ("symmetry_vertical", self.symmetry_vertical),
            ("edge", self.edge),
            ("edge_global", self.edge_global),
            ("palette", self.palette_weight),
        ] {
            if !(v.is_finite() && v.abs() <= 1000.0) {
                return Err(format!("the {name} weight must be a number between -1000 and 1000, got {v}"));
            }
        }
        if !(self.edge_thickness.is_finite() && (0.0..=45.0).contains(&self.edge_thickness)) {
            return Err(format!("the edge thickness must be between 0 and 45 percent, got {}", self.edge_thickness));
        }
        if self.edge_color.iter().any(|c| !(c.is_finite() && (0.0..=1.0).contains(c))) {
            return Err(format!("the edge colour's channels must be between 0 and 1, got {:?}", self.edge_color));
        }
        if self.palette.iter().flatten().any(|c| !(c.is_finite() && (0.0..=1.0).contains(c))) {
            return Err("the palette's colours must have channels between 0 and 1".into());
        }
        if self.palette_weight != 0.0 && self.palette.is_empty() {
            return Err("the palette loss needs a palette (--palette)".into());
        }
        if self.palette.len() > 256 {
            return Err(format!("a palette holds at most 256 colours, got {}", self.palette.len()));
        }
        Ok(())
    }
}

/// A colour as `#RRGGBB`, `R,G,B` (0–255) or one of a few names, as RGB in `[0, 1]`.
pub fn parse_color(text: &str) -> Result<[f64; 3], String> {
    let t = text.trim().to_ascii_lowercase();
    let named: Option<[u8; 3]> = match t.as_str() {
        "white" => Some([255, 255, 255]),
        "black" => Some([0, 0, 0]),
        "red" => Some([255, 0, 0]),
        "green" => Some([0, 128, 0]),
        "lime" => Some([0, 255, 0]),
        "blue" => Some([0, 0, 255]),
        "yellow" => Some([255, 255, 0]),
        "cyan" => Some([0, 255, 255]),
        "magenta" => Some([255, 0, 255]),
        "orange" => Some([255, 165, 0]),
        "purple" => Some([128, 0, 128]),
        "pink" => Some([255, 192, 203]),
        "grey" | "gray" => Some([128, 128, 128]),
        _ => None,
    };
    let bad = || format!("colour {text:?} must be #RRGGBB, R,G,B (0-255) or a name such as white, black or red");
    let bytes = match named {
        Some(b) => b,
        None if t.starts_with('#') && t.len() == 7 => {
            let hex = |i: usize| u8::from_str_radix(&t[i..i + 2], 16).map_err(|_| bad());
            [hex(1)?, hex(3)?, hex(5)?]
        }
        None => {
            let parts: Vec<&str> = t.split(',').map(str::trim).collect();
            let [r, g, b] = parts.as_slice() else { return Err(bad()) };
            let byte = |s: &str| s.parse::<u8>().map_err(|_| bad());
            [byte(r)?, byte(g)?, byte(b)?]
        }
    };
    Ok(bytes.map(|b| f64::from(b) / 255.0))
}

/// A palette: colours (as [`parse_color`] reads them) separated by spaces, semicolons or
/// new lines, with `# ` (a hash and a space) starting a comment, or a named one: `rgb`
/// (red, green, blue), `cmyk` (cyan, magenta, yellow, black), `bw` (black, white),
/// `pico8` (PICO-8's 16).
pub fn parse_palette(text: &str) -> Result<Vec<[f64; 3]>, String> {
    let named: Option<&[&str]> = match text.trim().to_ascii_lowercase().as_str() {
        "rgb" => Some(&["red", "lime", "blue"]),
        "cmyk" => Some(&["cyan", "magenta", "yellow", "black"]),
        "bw" => Some(&["black", "white"]),
        "pico8" => Some(&[
            "#000000", "#1d2b53", "#7e2553", "#008751", "#ab5236", "#5f574f", "#c2c3c7", "#fff1e8", "#ff004d",
            "#ffa300", "#ffec27", "#00e436", "#29adff", "#83769c", "#ff77a8", "#ffccaa",
        ]),
        _ => None,
    };
    if let Some(names) = named {
        return names.iter().map(|n| parse_color(n)).collect();
    }
    let colours: Vec<[f64; 3]> = text
        .lines()
        .map(|line| if line.trim_start().starts_with("# ") { "" } else { line.split(" # ").next().unwrap_or("") })
        .flat_map(|line| line.split([' ', ';', '\t']))
        .map(str::trim)
        .filter(|w| !w.is_empty())
        .map(parse_color)
        .collect::<Result<_, _>>()?;
    if colours.is_empty() {
        return Err("the palette holds no colours".into());
    }
    Ok(colours)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_parse_by_hex_numbers_and_name_and_bad_ones_say_how() {
        assert_eq!(parse_color("#ff8000").expect("hex"), [1.0, 128.0 / 255.0, 0.0]);
        assert_eq!(parse_color(" 0, 255 ,0").expect("rgb"), [0.0, 1.0, 0.0]);
        assert_eq!(parse_color("White").expect("name"), [1.0, 1.0, 1.0]);
        for bad in ["#ff80", "#gg0000", "1,2", "256,0,0", "chartreuse-ish", ""] {
            assert!(parse_color(bad).expect_err(bad).contains("#RRGGBB"), "{bad}");
        }
    }

    #[test]
    fn palettes_parse_from_lists_files_and_names() {
        assert_eq!(parse_palette("#ff0000; black white").expect("list").len(), 3);
        let file = "# my palette\n#000000 # black\n255,255,255\n\n";
        assert_eq!(parse_palette(file).expect("file"), vec![[0.0; 3], [1.0; 3]]);
        assert_eq!(parse_palette("PICO8").expect("pico8").len(), 16);
        assert!(parse_palette("  ").expect_err("empty").contains("no colours"));
        assert!(parse_palette("red blurple").expect_err("bad").contains("blurple"));
    }

    #[test]
    fn defaults_are_pixrays_and_off() {
        let l = Looks::default();
        assert!(l.is_off() && l.validate().is_ok());
        assert_eq!((l.edge_color, l.edge_thickness, l.edge_global), ([1.0; 3], 5.0, 0.05));
        assert!(Looks { edge_thickness: 60.0, ..l.clone() }.validate().is_err());
        assert!(Looks { edge_color: [1.5, 0.0, 0.0], ..l }.validate().is_err());
    }
}
