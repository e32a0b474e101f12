//! Training at the target imagery's ground resolution. A classifier learnt on sharp scenes
//! (rsscn7: 256 px for ~100-200 m) and applied to coarser tiles (the region: 45 px for 225 m,
//! upsampled to 224) sees blur it never learnt; degrading the training images to the
//! target's pixels per tile first makes the two alike.

use tch::{Kind, Tensor};

/// Images degraded per step.
const STEP: i64 = 64;

/// `x` (`[n, c, h, w]` floats) box-averaged down to `px` × `px` pixels, then resized back to
/// `h` × `w` bilinearly, as a coarse tile is upsampled for the network. Linear, with weights
/// summing to one, so it commutes with the per-channel normalisation. A `px` not below the
/// image's side leaves it as it is.
pub fn degrade(x: &Tensor, px: u32) -> Tensor {
    let (h, w) = (x.size()[2], x.size()[3]);
    let px = i64::from(px.max(1));
    if px >= h && px >= w {
        return x.shallow_clone();
    }
    x.adaptive_avg_pool2d([px.min(h), px.min(w)])
        .upsample_bilinear2d([h, w], false, None::<f64>, None::<f64>)
}

/// Images as bytes (`[n, h, w, 3]` u8, as decoded and resized to the network's input)
/// degraded to `px` a side and rounded back to bytes: a coarse 8-bit tile, as real ones are.
/// Done in steps of [`STEP`] images, so the float copies stay small.
pub fn degrade_pixels(pixels: &Tensor, px: u32) -> Tensor {
    let n = pixels.size()[0];
    let steps: Vec<Tensor> = (0..n)
        .step_by(STEP as usize)
        .map(|start| {
            let x = pixels.narrow(0, start, STEP.min(n - start));
            let x = x.permute([0, 3, 1, 2]).to_kind(Kind::Float);
            degrade(&x, px)
                .round()
                .clamp(0.0, 255.0)
                .to_kind(Kind::Uint8)
                .permute([0, 2, 3, 1])
        })
        .collect();
    if steps.is_empty() {
        return pixels.shallow_clone();
    }
    Tensor::cat(&steps, 0).contiguous()
}

/// One RGB image (`side` × `side`, interleaved bytes) through [`degrade_pixels`].
pub fn degrade_rgb(raw: &[u8], side: u32, px: u32) -> Result<Vec<u8>, tch::TchError> {
    let side = i64::from(side);
    let x = Tensor::from_slice(raw).view([1, side, side, 3]);
    Vec::<u8>::try_from(degrade_pixels(&x, px).view([-1]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn fine_detail_is_averaged_away_and_flat_areas_and_the_size_are_kept() {
        // a one-pixel checkerboard (the finest detail) beside a flat half
        let i = Tensor::arange(224, (Kind::Float, Device::Cpu));
        let checker = (i.view([224, 1]) + i.view([1, 224])).remainder(2.0);
        let x = Tensor::cat(
            &[
                checker.narrow(1, 0, 112),
                Tensor::full([224, 112], 0.25, (Kind::Float, Device::Cpu)),
            ],
            1,
        )
        .view([1, 1, 224, 224]);
        let y = degrade(&x, 45);
        assert_eq!(y.size(), vec![1, 1, 224, 224]);
        let left = y.narrow(3, 8, 96);
        let spread = f64::try_from(left.max() - left.min()).unwrap();
        assert!(spread < 0.2, "checkerboard still varies by {spread}");
        let right = y.narrow(3, 128, 96);
        let off = f64::try_from((right - 0.25).abs().max()).unwrap();
        assert!(off < 1e-5, "flat area moved by {off}");
        let same = degrade(&x, 224);
        assert!(f64::try_from((same - &x).abs().max()).unwrap() == 0.0);
    }

    #[test]
    fn degraded_bytes_keep_their_layout_and_a_fine_enough_side_changes_nothing() {
        let raw: Vec<u8> = (0..8 * 8 * 3).map(|v| ((v * 37) % 251) as u8).collect();
        let out = degrade_rgb(&raw, 8, 2).unwrap();
        assert_eq!(out.len(), raw.len());
        assert_ne!(out, raw);
        // the red channel of the first row: each 4×4 block's mean, smoothed between blocks
        let red: Vec<u8> = raw.iter().step_by(3).copied().collect();
        let block = |by: usize, bx: usize| {
            let s: u32 = (0..4)
                .flat_map(|y| (0..4).map(move |x| (y, x)))
                .map(|(y, x)| u32::from(red[(by * 4 + y) * 8 + bx * 4 + x]))
                .sum();
            s as f64 / 16.0
        };
        let corner = f64::from(out[0]);
        assert!(
            (corner - block(0, 0)).abs() <= 0.5,
            "{corner} vs {}",
            block(0, 0)
        );
        assert_eq!(degrade_rgb(&raw, 8, 8).unwrap(), raw);
        // many images at once, in more than one step, keep their order
        let many = Tensor::from_slice(&raw.repeat(70)).view([70, 8, 8, 3]);
        let d = degrade_pixels(&many, 2);
        assert_eq!(d.size(), vec![70, 8, 8, 3]);
        assert_eq!(Vec::<u8>::try_from(d.get(69).view([-1])).unwrap(), out);
    }
}
