//! A per-date land-use map as PNG: one square per tile in its class colour, a title, and a
//! legend naming each class (drawn with an embedded 8×8 bitmap font, so no font files).

use aerial_shared::palette;
use image::{Rgb, RgbImage};

const MARGIN: u32 = 12;
const TEXT_SCALE: u32 = 2;
const GLYPH: u32 = 8 * TEXT_SCALE;
const SWATCH: u32 = 16;

fn text(img: &mut RgbImage, x: u32, y: u32, s: &str, colour: Rgb<u8>) {
    for (i, ch) in s.chars().enumerate() {
        let glyph = font8x8::legacy::BASIC_LEGACY
            .get(ch as usize)
            .copied()
            .unwrap_or(font8x8::legacy::BASIC_LEGACY[b'?' as usize]);
        for (gy, bits) in glyph.iter().enumerate() {
            for gx in 0..8u32 {
                if bits & (1 << gx) == 0 {
                    continue;
                }
                for dy in 0..TEXT_SCALE {
                    for dx in 0..TEXT_SCALE {
                        let px = x + i as u32 * GLYPH + gx * TEXT_SCALE + dx;
                        let py = y + gy as u32 * TEXT_SCALE + dy;
                        if px < img.width() && py < img.height() {
                            img.put_pixel(px, py, colour);
                        }
                    }
                }
            }
        }
    }
}

fn fill(img: &mut RgbImage, x: u32, y: u32, w: u32, h: u32, c: [u8; 3]) {
    for py in y..(y + h).min(img.height()) {
        for px in x..(x + w).min(img.width()) {
            img.put_pixel(px, py, Rgb(c));
        }
    }
}

/// Renders the class grid (`cells[row * cols + col]`) with a title and legend; PNG bytes.
pub fn render(
    labels: &[String],
    rows: usize,
    cols: usize,
    cells: &[Option<usize>],
    title: &str,
) -> Result<Vec<u8>, image::ImageError> {
    let (rows, cols) = (rows as u32, cols as u32);
    // cells at least 8 px, the map about 480 px wide
    let cell = (480 / cols.max(1)).clamp(8, 64);
    let names: Vec<String> = labels
        .iter()
        .cloned()
        .chain(["not scored".to_string()])
        .collect();
    let longest = names.iter().map(|n| n.len()).max().unwrap_or(0) as u32;
    let legend_w = SWATCH + 8 + longest * GLYPH;
    let map_top = MARGIN * 2 + GLYPH;
    let legend_h = names.len() as u32 * (SWATCH + 8);
    let width = (MARGIN * 3 + cols * cell + legend_w).max(MARGIN * 2 + title.len() as u32 * GLYPH);
    let height = map_top + (rows * cell).max(legend_h) + MARGIN;
    let mut img = RgbImage::from_pixel(width, height, Rgb([255, 255, 255]));
    text(&mut img, MARGIN, MARGIN, title, Rgb([0, 0, 0]));
    for r in 0..rows {
        for c in 0..cols {
            let colour = match cells[(r * cols + c) as usize] {
                Some(l) => palette::colour(&labels[l], l),
                None => palette::NO_DATA,
            };
            fill(
                &mut img,
                MARGIN + c * cell,
                map_top + r * cell,
                cell,
                cell,
                colour,
            );
        }
    }
    let lx = MARGIN * 2 + cols * cell;
    for (i, name) in names.iter().enumerate() {
        let y = map_top + i as u32 * (SWATCH + 8);
        let colour = if i < labels.len() {
            palette::colour(name, i)
        } else {
            palette::NO_DATA
        };
        fill(&mut img, lx, y, SWATCH, SWATCH, [0, 0, 0]);
        fill(&mut img, lx + 1, y + 1, SWATCH - 2, SWATCH - 2, colour);
        text(&mut img, lx + SWATCH + 8, y, name, Rgb([0, 0, 0]));
    }
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png)?;
    Ok(out.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_has_class_colours_and_a_legend() {
        let labels = vec!["field".to_string(), "river_lake".to_string()];
        let png = render(
            &labels,
            2,
            2,
            &[Some(0), Some(1), None, Some(0)],
            "test 2009",
        )
        .unwrap();
        let img = image::load_from_memory(&png).unwrap().to_rgb8();
        let cell = (480 / 2u32).clamp(8, 64);
        let map_top = MARGIN * 2 + GLYPH;
        let at = |c: u32, r: u32| {
            img.get_pixel(MARGIN + c * cell + cell / 2, map_top + r * cell + cell / 2)
                .0
        };
        assert_eq!(at(0, 0), palette::colour("field", 0));
        assert_eq!(at(1, 0), palette::colour("river_lake", 1));
        assert_eq!(at(0, 1), palette::NO_DATA);
        // legend swatch of the second class, right of the map
        let lx = MARGIN * 2 + 2 * cell;
        let sw = img
            .get_pixel(lx + SWATCH / 2, map_top + (SWATCH + 8) + SWATCH / 2)
            .0;
        assert_eq!(sw, palette::colour("river_lake", 1));
        // legend text: some black pixels right of the first swatch
        let dark = (0..GLYPH * 5)
            .flat_map(|dx| (0..GLYPH).map(move |dy| (dx, dy)))
            .filter(|&(dx, dy)| img.get_pixel(lx + SWATCH + 8 + dx, map_top + dy).0 == [0, 0, 0])
            .count();
        assert!(dark > 20, "legend label not drawn ({dark} dark pixels)");
    }
}
