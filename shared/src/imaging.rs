//! Image decoding with a decompression-bomb guard, and the one preprocessing function used
//! by featurize, train and score: RGB → 224×224 bilinear → [0,1] → ImageNet mean/std → CHW f32.

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use image::{ImageReader, Limits, RgbImage};
use std::io::Cursor;

/// Model input edge, pixels.
pub const INPUT_SIZE: u32 = 224;
/// ImageNet channel means (RGB, on [0,1] values).
pub const MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet channel standard deviations.
pub const STD: [f32; 3] = [0.229, 0.224, 0.225];
/// Largest accepted image edge; bigger headers are refused before any pixel is allocated.
pub const MAX_EDGE: u32 = 12_000;
/// Largest decoder allocation.
pub const MAX_ALLOC: u64 = 512 * 1024 * 1024;

/// Why an image was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ImageError {
    /// Zero bytes.
    #[error("zero-byte file")]
    Empty,
    /// Not a known image format.
    #[error("not a recognised image format")]
    UnknownFormat,
    /// Header claims a size over the limit.
    #[error("image {width}x{height} exceeds the {max}x{max} limit")]
    TooLarge {
        /// Claimed width.
        width: u32,
        /// Claimed height.
        height: u32,
        /// Limit per edge.
        max: u32,
    },
    /// Not an RGB(A) image: a single band or band pair is not aerial colour imagery, and
    /// silently replicating it into RGB would give confident nonsense.
    #[error("wrong band count: {bands} (need 3 RGB or 4 RGBA)")]
    WrongBands {
        /// Colour channels the image has.
        bands: u8,
    },
    /// The decoder failed (corrupt or truncated data).
    #[error("corrupt or truncated image: {0}")]
    Corrupt(String),
}

/// Decodes JPEG/PNG/TIFF bytes to RGB8, refusing empty, unknown, oversized and corrupt input.
pub fn decode_rgb(bytes: &[u8]) -> Result<RgbImage, ImageError> {
    if bytes.is_empty() {
        return Err(ImageError::Empty);
    }
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| ImageError::Corrupt(e.to_string()))?;
    match reader.format() {
        None => return Err(ImageError::UnknownFormat),
        // the JPEG decoder pads a cut-off scan with grey instead of failing: require the
        // end-of-image marker (allowing a little trailing padding)
        Some(image::ImageFormat::Jpeg) => {
            let tail = &bytes[bytes.len().saturating_sub(64)..];
            if !tail.windows(2).any(|w| w == [0xFF, 0xD9]) {
                return Err(ImageError::Corrupt(
                    "truncated jpeg: no end-of-image marker".into(),
                ));
            }
        }
        Some(_) => {}
    }
    // read the header first so a bomb is refused by its claimed size
    let (width, height) = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| ImageError::Corrupt(e.to_string()))?
        .into_dimensions()
        .map_err(|e| ImageError::Corrupt(e.to_string()))?;
    if width == 0 || height == 0 {
        return Err(ImageError::Corrupt(format!(
            "{width}x{height} image has no pixels"
        )));
    }
    if width > MAX_EDGE || height > MAX_EDGE {
        return Err(ImageError::TooLarge {
            width,
            height,
            max: MAX_EDGE,
        });
    }
    let mut reader = reader;
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_EDGE);
    limits.max_image_height = Some(MAX_EDGE);
    limits.max_alloc = Some(MAX_ALLOC);
    reader.limits(limits);
    let img = reader
        .decode()
        .map_err(|e| ImageError::Corrupt(e.to_string()))?;
    let bands = img.color().channel_count();
    if bands < 3 {
        return Err(ImageError::WrongBands { bands });
    }
    Ok(img.to_rgb8())
}

/// Resizes to 224×224 (bilinear) and normalises into a CHW float vector of 3·224·224 values.
pub fn preprocess(img: &RgbImage) -> Vec<f32> {
    if img.dimensions() == (INPUT_SIZE, INPUT_SIZE) {
        chw_normalised(img)
    } else {
        chw_normalised(&resize_to_input(img))
    }
}

/// The resize step of [`preprocess`]: bilinear to 224×224 with Pillow's convolution (an
/// antialiasing filter as wide as the scale factor, as PIL's `BILINEAR` and the backbones'
/// reference preprocessing use), SIMD (fine-tuning keeps these pixels as bytes and normalises
/// per batch, after augmentation).
pub fn resize_to_input(img: &RgbImage) -> RgbImage {
    let (w, h) = img.dimensions();
    let mut dst = Image::new(INPUT_SIZE, INPUT_SIZE, PixelType::U8x3);
    let src = ImageRef::new(w, h, img.as_raw(), PixelType::U8x3)
        .expect("an RgbImage's buffer holds w*h RGB pixels");
    Resizer::new()
        .resize(
            &src,
            &mut dst,
            &ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear)),
        )
        .expect("RGB8 to RGB8 of a non-empty image");
    RgbImage::from_raw(INPUT_SIZE, INPUT_SIZE, dst.into_vec()).expect("224x224 RGB buffer")
}

/// Normalises an RGB image of any size into CHW floats with ImageNet mean/std.
pub fn chw_normalised(img: &RgbImage) -> Vec<f32> {
    chw_normalised_raw(img.as_raw())
}

/// [`chw_normalised`] of interleaved RGB bytes.
pub fn chw_normalised_raw(raw: &[u8]) -> Vec<f32> {
    let plane = raw.len() / 3;
    let mut out = vec![0f32; 3 * plane];
    for (i, px) in raw.chunks_exact(3).enumerate() {
        for c in 0..3 {
            out[c * plane + i] = (f32::from(px[c]) / 255.0 - MEAN[c]) / STD[c];
        }
    }
    out
}

/// Decode + preprocess in one call.
pub fn load_tensor(bytes: &[u8]) -> Result<Vec<f32>, ImageError> {
    decode_rgb(bytes).map(|img| preprocess(&img))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(w: u32, h: u32) -> Vec<u8> {
        let img = RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8, y as u8, 128]));
        let mut buf = Vec::new();
        img.write_to(&mut Cursor::new(&mut buf), image::ImageFormat::Png)
            .unwrap();
        buf
    }

    /// Our resize reproduces Pillow's BILINEAR (to rounding) on a pattern with gradients,
    /// texture and hard edges; fixtures from `tests/fixtures/make_pil_reference.py`.
    #[test]
    fn resize_matches_pillow_bilinear() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let src = decode_rgb(&std::fs::read(dir.join("pattern256.png")).unwrap()).unwrap();
        let want = decode_rgb(&std::fs::read(dir.join("pattern256_pil_bilinear224.png")).unwrap())
            .unwrap();
        let got = resize_to_input(&src);
        let diffs: Vec<u8> = got
            .as_raw()
            .iter()
            .zip(want.as_raw())
            .map(|(a, b)| a.abs_diff(*b))
            .collect();
        let max = diffs.iter().copied().max().unwrap();
        let mean = diffs.iter().map(|&d| f64::from(d)).sum::<f64>() / diffs.len() as f64;
        assert!(max <= 1 && mean < 0.1, "max {max}, mean {mean}");
    }

    #[test]
    fn decodes_and_normalises() {
        let t = load_tensor(&png(300, 200)).unwrap();
        assert_eq!(t.len(), 3 * 224 * 224);
        // blue channel is constant 128 everywhere
        let b = (128.0 / 255.0 - MEAN[2]) / STD[2];
        assert!((t[2 * 224 * 224 + 1000] - b).abs() < 1e-5);
        // top-left red pixel is 0
        assert!((t[0] - (0.0 - MEAN[0]) / STD[0]).abs() < 1e-2);
    }

    /// PNG's CRC-32 (so the patched header is valid, as a real bomb's would be).
    fn crc32(data: &[u8]) -> u32 {
        let mut crc = 0xFFFF_FFFFu32;
        for &b in data {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    #[test]
    fn refuses_bad_input() {
        assert_eq!(decode_rgb(b"").unwrap_err(), ImageError::Empty);
        assert_eq!(
            decode_rgb(b"hello, not an image").unwrap_err(),
            ImageError::UnknownFormat
        );
        let img = RgbImage::from_fn(64, 64, |x, y| image::Rgb([x as u8, y as u8, 7]));
        let mut jpg = Vec::new();
        img.write_to(&mut Cursor::new(&mut jpg), image::ImageFormat::Jpeg)
            .unwrap();
        assert!(decode_rgb(&jpg).is_ok());
        assert!(matches!(
            decode_rgb(&jpg[..jpg.len() / 3]).unwrap_err(),
            ImageError::Corrupt(_)
        ));
        let good = png(64, 64);
        assert!(matches!(
            decode_rgb(&good[..good.len() / 2]).unwrap_err(),
            ImageError::Corrupt(_)
        ));
        // a PNG header claiming 30000x30000: IHDR width/height patched in place
        let mut bomb = png(4, 4);
        bomb[16..20].copy_from_slice(&30000u32.to_be_bytes());
        bomb[20..24].copy_from_slice(&30000u32.to_be_bytes());
        let crc = crc32(&bomb[12..29]);
        bomb[29..33].copy_from_slice(&crc.to_be_bytes());
        assert!(matches!(
            decode_rgb(&bomb).unwrap_err(),
            ImageError::TooLarge { width: 30000, .. }
        ));
        // one band (a grey or single-band export) and two (grey + alpha) are refused; RGBA is
        // colour imagery with a mask and is kept
        for (bands, img) in [
            (
                1u8,
                image::DynamicImage::ImageLuma8(image::GrayImage::new(8, 8)),
            ),
            (
                2,
                image::DynamicImage::ImageLumaA8(image::GrayAlphaImage::new(8, 8)),
            ),
            (
                4,
                image::DynamicImage::ImageRgba8(image::RgbaImage::new(8, 8)),
            ),
        ] {
            let mut bytes = Vec::new();
            img.write_to(&mut Cursor::new(&mut bytes), image::ImageFormat::Png)
                .unwrap();
            let got = decode_rgb(&bytes);
            if bands < 3 {
                assert_eq!(got.unwrap_err(), ImageError::WrongBands { bands });
            } else {
                assert_eq!(got.unwrap().dimensions(), (8, 8));
            }
        }
    }
}
