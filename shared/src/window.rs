//! Cutting a window out of the stored tiles it overlaps (a strided score job's input): each
//! part is decoded and pasted at its offset. Pixels no part covers stay black; the fan-out
//! publishes no window with more than the allowed share of them.

use crate::imaging::{self, ImageError};
use crate::messages::Window;
use image::RgbImage;

/// Pastes the decoded `parts` (in `window.parts` order) into a `window.size` square; a part
/// that does not decode is named in the error.
pub fn compose(window: &Window, parts: &[&[u8]]) -> Result<RgbImage, (String, ImageError)> {
    let n = window.size;
    let mut image = RgbImage::new(n, n);
    for (part, bytes) in window.parts.iter().zip(parts) {
        let tile = imaging::decode_rgb(bytes).map_err(|e| (part.tile_id.clone(), e))?;
        let (w, h) = tile.dimensions();
        // a part of another size would be pasted at offsets meant for tiles of this one
        if (w, h) != (n, n) {
            return Err((
                part.tile_id.clone(),
                ImageError::Corrupt(format!("{w}x{h} tile in a window of {n} px tiles")),
            ));
        }
        for ty in 0..h {
            let y = part.y + ty as i32;
            if y < 0 || y >= n as i32 {
                continue;
            }
            for tx in 0..w {
                let x = part.x + tx as i32;
                if x < 0 || x >= n as i32 {
                    continue;
                }
                image.put_pixel(x as u32, y as u32, *tile.get_pixel(tx, ty));
            }
        }
    }
    Ok(image)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::WindowPart;
    use std::io::Cursor;

    fn png(w: u32, v: u8) -> Vec<u8> {
        let img = RgbImage::from_pixel(w, w, image::Rgb([v, v, v]));
        let mut buf = Vec::new();
        img.write_to(&mut Cursor::new(&mut buf), image::ImageFormat::Png)
            .unwrap();
        buf
    }

    fn part(id: &str, x: i32, y: i32) -> WindowPart {
        WindowPart {
            tile_id: id.into(),
            key: "k".into(),
            range: None,
            x,
            y,
        }
    }

    #[test]
    fn parts_land_at_their_offsets() {
        // a 4 px window starting 2 px into tile a: a's right half, then b's left half
        let w = Window {
            size: 4,
            parts: vec![part("a", -2, 0), part("b", 2, 0)],
        };
        let (a, b) = (png(4, 10), png(4, 200));
        let c = compose(&w, &[&a, &b]).unwrap();
        assert_eq!(c.dimensions(), (4, 4));
        assert_eq!(c.get_pixel(1, 3).0, [10, 10, 10]);
        assert_eq!(c.get_pixel(2, 0).0, [200, 200, 200]);
    }

    #[test]
    fn uncovered_pixels_stay_black_and_bad_parts_are_named() {
        let w = Window {
            size: 4,
            parts: vec![part("a", -2, -2)],
        };
        let c = compose(&w, &[&png(4, 10)]).unwrap();
        assert_eq!(c.get_pixel(1, 1).0, [10, 10, 10]);
        assert_eq!(c.get_pixel(2, 2).0, [0, 0, 0]);
        let (id, _) = compose(&w, &[b"not an image"]).err().unwrap();
        assert_eq!(id, "a");
        let (id, e) = compose(&w, &[&png(5, 10)]).err().unwrap();
        assert_eq!(id, "a");
        assert!(
            e.to_string().contains("5x5 tile in a window of 4 px tiles"),
            "{e}"
        );
    }
}
