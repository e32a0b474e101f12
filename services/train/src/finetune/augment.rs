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

/// The loss side of a fine-tune's recipe: label smoothing and mixup, both off by default.
#[derive(Debug, Clone, Copy)]
pub struct Recipe {
    label_smoothing: f64,
    mixup: Option<f64>,
}

/// How a batch was mixed: each image `i` is `lambda · x[i] + (1 − lambda) · x[perm[i]]`.
pub struct Mix {
    lambda: f64,
    perm: Tensor,
}

impl Recipe {
    /// The recipe a job's parameters ask for.
    pub fn of(p: &aerial_shared::messages::TrainParams) -> Self {
        Self {
            label_smoothing: p.label_smoothing.unwrap_or(0.0),
            mixup: p.mixup.filter(|a| *a > 0.0),
        }
    }

    /// Mixes a normalised batch with a shuffled copy of itself (mixup), or leaves it.
    pub fn mix(&self, x: Tensor, rng: &mut impl Rng) -> (Tensor, Option<Mix>) {
        let Some(alpha) = self.mixup else {
            return (x, None);
        };
        let beta = rand_distr::Beta::new(alpha, alpha).expect("alpha checked positive");
        let lambda: f64 = rand_distr::Distribution::sample(&beta, rng);
        let n = x.size()[0];
        let mut order: Vec<i64> = (0..n).collect();
        rand::seq::SliceRandom::shuffle(order.as_mut_slice(), rng);
        let perm = Tensor::from_slice(&order).to_device(x.device());
        let mixed = &x * lambda + x.index_select(0, &perm) * (1.0 - lambda);
        (mixed, Some(Mix { lambda, perm }))
    }

    /// Cross-entropy of `logits` against `y` (and, when mixed, the shuffled labels, blended
    /// by the same weight), with the recipe's label smoothing.
    pub fn loss(&self, logits: &Tensor, y: &Tensor, mix: Option<&Mix>) -> Tensor {
        let ce = |t: &Tensor| {
            logits.cross_entropy_loss::<Tensor>(
                t,
                None,
                tch::Reduction::Mean,
                -100,
                self.label_smoothing,
            )
        };
        match mix {
            None => ce(y),
            Some(m) => ce(y) * m.lambda + ce(&y.index_select(0, &m.perm)) * (1.0 - m.lambda),
        }
    }
}

#[cfg(test)]
mod recipe_tests {
    use super::*;
    use rand::SeedableRng;

    fn params(ls: Option<f64>, mixup: Option<f64>) -> aerial_shared::messages::TrainParams {
        aerial_shared::messages::TrainParams {
            epochs: 1,
            batch: 4,
            lr: 0.01,
            retraining: None,
            trees: None,
            max_depth: None,
            tta: Default::default(),
            degrade_px: None,
            label_smoothing: ls,
            mixup,
        }
    }

    #[test]
    fn without_a_recipe_the_loss_is_plain_cross_entropy_and_the_batch_is_untouched() {
        let r = Recipe::of(&params(None, None));
        let x = Tensor::rand([4, 3, 2, 2], (Kind::Float, Device::Cpu));
        let (same, mix) = r.mix(x.shallow_clone(), &mut rand::rngs::StdRng::seed_from_u64(1));
        assert!(mix.is_none());
        assert!(same.equal(&x));
        let logits = Tensor::from_slice(&[2.0f32, 0.0, 0.0, 2.0]).view([2, 2]);
        let y = Tensor::from_slice(&[0i64, 0]);
        let got = r.loss(&logits, &y, None).double_value(&[]);
        let want = logits.cross_entropy_for_logits(&y).double_value(&[]);
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
    }

    #[test]
    fn label_smoothing_moves_the_loss_of_a_confident_right_answer_up() {
        let logits = Tensor::from_slice(&[8.0f32, 0.0, 0.0]).view([1, 3]);
        let y = Tensor::from_slice(&[0i64]);
        let plain = Recipe::of(&params(None, None)).loss(&logits, &y, None);
        let smooth = Recipe::of(&params(Some(0.1), None)).loss(&logits, &y, None);
        // smoothed target (0.933, 0.033, 0.033): −Σ t·log p, with log p = (−0.00067, −8.0007, −8.0007)
        let want = 0.1 / 3.0 * 8.0007 * 2.0 + (1.0 - 0.2 / 3.0) * 0.00067;
        assert!(plain.double_value(&[]) < 0.001);
        assert!((smooth.double_value(&[]) - want).abs() < 1e-3, "{smooth}");
    }

    #[test]
    fn mixup_blends_images_and_losses_with_one_weight() {
        let r = Recipe::of(&params(None, Some(0.4)));
        let x = Tensor::from_slice(&[0.0f32, 1.0]).view([2, 1, 1, 1]);
        let (mixed, mix) = r.mix(x, &mut rand::rngs::StdRng::seed_from_u64(7));
        let m = mix.expect("mixup on");
        let perm: Vec<i64> = Vec::try_from(&m.perm).unwrap();
        let got: Vec<f32> = Vec::try_from(&mixed.flatten(0, -1)).unwrap();
        for (i, &j) in perm.iter().enumerate() {
            let want = m.lambda * i as f64 + (1.0 - m.lambda) * j as f64;
            assert!(
                (f64::from(got[i]) - want).abs() < 1e-6,
                "{got:?} {perm:?} {}",
                m.lambda
            );
        }
        let logits = Tensor::from_slice(&[3.0f32, 0.0, 0.0, 3.0]).view([2, 2]);
        let y = Tensor::from_slice(&[0i64, 1]);
        let yp = y.index_select(0, &m.perm);
        let want = logits.cross_entropy_for_logits(&y).double_value(&[]) * m.lambda
            + logits.cross_entropy_for_logits(&yp).double_value(&[]) * (1.0 - m.lambda);
        let got = r.loss(&logits, &y, Some(&m)).double_value(&[]);
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
    }
}
