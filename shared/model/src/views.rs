//! Test-time augmentation: the views of a batch a run's model is applied to, and the mean of
//! the model's outputs over them. Aerial tiles have no "up": the 8 symmetries of the square
//! show the same ground, so averaging over them removes the orientation the model happened
//! to learn (the cost is one forward pass per view).

use aerial_shared::messages::Tta;
use tch::Tensor;

/// View `v` (0..8) of an NCHW batch: mirrored left-right when `v >= 4`, then turned `v % 4`
/// quarter turns. View 0 is the batch itself.
pub fn view(x: &Tensor, v: usize) -> Tensor {
    let y = if v >= 4 {
        x.flip([3])
    } else {
        x.shallow_clone()
    };
    match v % 4 {
        0 => y,
        k => y.rot90(k as i64, [2, 3]).contiguous(),
    }
}

/// Mean of `f` over the views `tta` asks for (just `f(x)` without augmentation).
// tch's `+=` adds in place: see the loop
#[allow(clippy::assign_op_pattern)]
pub fn mean_over<E>(
    x: &Tensor,
    tta: Tta,
    f: impl Fn(&Tensor) -> Result<Tensor, E>,
) -> Result<Tensor, E> {
    let mut sum = f(x)?;
    for v in 1..tta.views() {
        // not `+=`: `f` may return a view of its input, and an in-place add would write
        // into the caller's batch
        sum = sum + f(&view(x, v))?;
    }
    Ok(if tta.views() > 1 {
        sum / tta.views() as f64
    } else {
        sum
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn the_eight_views_are_the_distinct_symmetries_of_the_square() {
        // a 1×1×3×3 image of distinct values: every symmetry gives another arrangement
        let x = Tensor::arange(9, (Kind::Float, Device::Cpu)).view([1, 1, 3, 3]);
        let views: Vec<Vec<f32>> = (0..8)
            .map(|v| Vec::<f32>::try_from(view(&x, v).contiguous().view([-1])).unwrap())
            .collect();
        for i in 0..8 {
            for j in 0..i {
                assert_ne!(views[i], views[j], "views {i} and {j} are the same");
            }
            // the centre stays, the values are only moved
            assert_eq!(views[i][4], 4.0);
            let mut sorted = views[i].clone();
            sorted.sort_by(f32::total_cmp);
            assert_eq!(sorted, (0..9).map(|v| v as f32).collect::<Vec<_>>());
        }
        assert_eq!(views[0], (0..9).map(|v| v as f32).collect::<Vec<_>>());
    }

    #[test]
    fn mean_over_views_averages_and_none_is_the_identity() {
        let x = Tensor::arange(9, (Kind::Float, Device::Cpu)).view([1, 1, 3, 3]);
        // the top-left pixel of each view: its mean over the 8 views is the mean of the four
        // corners (each corner lands top-left twice)
        let corner = |t: &Tensor| Ok::<_, ()>(t.narrow(2, 0, 1).narrow(3, 0, 1).view([1]));
        let m = mean_over(&x, Tta::D4, corner).unwrap().double_value(&[0]);
        assert!((m - (0.0 + 2.0 + 6.0 + 8.0) / 4.0).abs() < 1e-6, "{m}");
        let one = mean_over(&x, Tta::None, corner).unwrap().double_value(&[0]);
        assert_eq!(one, 0.0);
    }
}
