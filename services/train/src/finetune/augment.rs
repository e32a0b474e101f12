//! Training augmentation fit for aerial tiles, which have no "up": random crop (80–100 % of
//! the side, resized back), horizontal flip, 0–3 quarter turns, mild brightness and contrast
//! jitter. Then the ImageNet normalisation every path uses.

use aerial_shared::imaging::{INPUT_SIZE, MEAN, STD};
use rand::Rng;
use tch::{Device, Kind, Tensor};

const SIDE: i64 = INPUT_SIZE as i64;

/// `[n, 224, 224, 3]` u8 → `[n, 3, 224, 224]` floats in 0..1.
pub fn to_unit(batch: &Tensor) -> Tensor {
    batch.permute([0, 3, 1, 2]).to_kind(Kind::Float) / 255.0
}

/// ImageNet mean/std per channel.
pub fn normalise(x: &Tensor) -> Tensor {
    let d = x.device();
    let mean = Tensor::from_slice(&MEAN).view([1, 3, 1, 1]).to_device(d);
    let std = Tensor::from_slice(&STD).view([1, 3, 1, 1]).to_device(d);
    (x - mean) / std
}

/// Augments a `[n, 3, 224, 224]` batch in 0..1, one random draw per image.
pub fn augment(x: &Tensor, rng: &mut impl Rng) -> Tensor {
    let n = x.size()[0];
    let out: Vec<Tensor> = (0..n)
        .map(|i| {
            let mut t = x.get(i);
            let side = rng.gen_range((SIDE * 4 / 5)..=SIDE);
            let (oy, ox) = (
                rng.gen_range(0..=SIDE - side),
                rng.gen_range(0..=SIDE - side),
            );
            if side < SIDE {
                t = t
                    .narrow(1, oy, side)
                    .narrow(2, ox, side)
                    .unsqueeze(0)
                    .upsample_bilinear2d([SIDE, SIDE], false, None, None)
                    .squeeze_dim(0);
            }
            if rng.gen_bool(0.5) {
                t = t.flip([2]);
            }
            let k = rng.gen_range(0..4);
            if k > 0 {
                t = t.rot90(k, [1, 2]);
            }
            let (b, c) = (rng.gen_range(0.9..1.1), rng.gen_range(0.9..1.1));
            let m = t.mean(Kind::Float);
            (((&t - &m) * c + &m) * b).clamp(0.0, 1.0)
        })
        .collect();
    Tensor::stack(&out, 0)
}

/// Moves a batch to `device` (a no-op on CPU).
pub fn on(x: Tensor, device: Device) -> Tensor {
    if device == Device::Cpu {
        x
    } else {
        x.to_device(device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn keeps_shape_and_range() {
        let x = Tensor::rand([4, 3, 224, 224], (Kind::Float, Device::Cpu));
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let y = augment(&x, &mut rng);
        assert_eq!(y.size(), vec![4, 3, 224, 224]);
        assert!(y.min().double_value(&[]) >= 0.0 && y.max().double_value(&[]) <= 1.0);
        assert!(
            (&y - &x).abs().sum(Kind::Float).double_value(&[]) > 0.0,
            "augmentation changed nothing"
        );
    }

    #[test]
    fn normalisation_matches_the_shared_preprocessing() {
        let img = image::RgbImage::from_fn(224, 224, |x, y| image::Rgb([x as u8, y as u8, 77]));
        let want = aerial_shared::imaging::preprocess(&img);
        let raw = Tensor::from_slice(img.as_raw().as_slice()).view([1, 224, 224, 3]);
        let got = normalise(&to_unit(&raw));
        let got = Vec::<f32>::try_from(got.contiguous().view([-1])).unwrap();
        let max = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(max < 1e-5, "max diff {max}");
    }
}
