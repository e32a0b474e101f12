//! A classic run's features over its test-time views and at its training resolution.
//! Featurize stores one full-resolution view of every tile; a run with test-time augmentation is scored on features averaged over the 8
//! symmetries of the square, so its validation and test shares are measured on those, and its
//! classifier learns from every view of every training tile as a sample of its own (measured in
//! bench/tta_probe.py: 0.9304 on validation, against 0.9232 for training on averaged features
//! and 0.9179 for one-view training). They are computed here from the tiles' images, with the
//! backbone that score and `aerial evaluate` use. A run with `degrade_px` gets all its
//! features (training, validation, test) from images degraded to that resolution.

use crate::data::{DataError, Part};
use crate::finetune::{augment, images};
use aerial_model::{backbone, resolution};
use aerial_shared::{messages::Tta, Store};
use ndarray::{concatenate, Array2, Axis};
use std::path::{Path, PathBuf};
use tch::{Device, Kind};

/// Tiles decoded and featurized per step (bounds the float copies of their pixels).
const STEP: i64 = 64;

/// Where and how to featurize.
pub struct Featurizer<'a> {
    /// The object store holding the tiles.
    pub store: &'a Store,
    /// The backbones' folder.
    pub models: &'a Path,
    /// The run's backbone.
    pub backbone: &'a str,
    /// CPU threads.
    pub threads: usize,
    /// The run's `degrade_px`: images box-downsampled to this side first.
    pub degrade_px: Option<u32>,
}

impl Featurizer<'_> {
    /// Whether the stored one-view, full-resolution features serve as they are.
    fn stored_serve(&self, tta: Tta, part: &Part) -> bool {
        part.tiles.is_empty() || (tta.is_none() && self.degrade_px.is_none())
    }

    /// Replaces `part`'s features by the backbone's features averaged over `tta`'s views of
    /// its tiles' images, degraded to the run's resolution (nothing to do without either).
    pub async fn average(&self, tta: Tta, part: &mut Part) -> Result<(), DataError> {
        if self.stored_serve(tta, part) {
            return Ok(());
        }
        let views = self.each_view(tta, part).await?;
        let sum = views
            .iter()
            .skip(1)
            .fold(views[0].clone(), |sum, v| sum + v);
        part.x = sum / views.len() as f64;
        Ok(())
    }

    /// `part`'s training rows with every one of `tta`'s views a sample of its own: features
    /// `[views × n, dim]` and their labels (`None` when the stored features serve).
    pub async fn samples(
        &self,
        tta: Tta,
        part: &Part,
    ) -> Result<Option<(Array2<f64>, Vec<usize>)>, DataError> {
        if self.stored_serve(tta, part) {
            return Ok(None);
        }
        let views = self.each_view(tta, part).await?;
        let blocks: Vec<_> = views.iter().map(|v| v.view()).collect();
        let x = concatenate(Axis(0), &blocks)
            .map_err(|e| DataError::Unusable(format!("stacking the views: {e}")))?;
        let y = part.y.repeat(views.len());
        Ok(Some((x, y)))
    }

    /// One `[n, dim]` feature block per view of `part`'s tiles, checked against the stored
    /// features' shape.
    async fn each_view(&self, tta: Tta, part: &Part) -> Result<Vec<Array2<f64>>, DataError> {
        let items = part
            .tiles
            .iter()
            .cloned()
            .zip(part.y.iter().copied())
            .collect();
        let pixels = images::fetch(self.store, items).await?.pixels;
        let (models, name, threads, degrade_px) = (
            PathBuf::from(self.models),
            self.backbone.to_string(),
            self.threads,
            self.degrade_px,
        );
        let views = tokio::task::spawn_blocking(move || {
            tch::set_num_threads(threads.max(1) as i32);
            let device = Device::cuda_if_available();
            let module = backbone::load(&models, &name, device)?;
            let n = pixels.size()[0];
            let mut views = vec![Vec::new(); tta.views()];
            for start in (0..n).step_by(STEP as usize) {
                let mut step = pixels.narrow(0, start, STEP.min(n - start));
                if let Some(px) = degrade_px {
                    step = resolution::degrade_pixels(&step, px);
                }
                let x = augment::normalise(&augment::to_unit(&step))
                    .to_kind(Kind::Float)
                    .contiguous();
                let input = Vec::<f32>::try_from(x.view([-1]))?;
                let each =
                    backbone::run_each_view(&module, device, &input, step.size()[0] as usize, tta)?;
                for (all, v) in views.iter_mut().zip(each) {
                    all.extend(v.into_iter().map(f64::from));
                }
            }
            views
                .into_iter()
                .map(|v| {
                    let dim = v.len() / (n as usize).max(1);
                    Array2::from_shape_vec((n as usize, dim), v)
                        .map_err(|e| backbone::InferError::Shape(e.to_string()))
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .await
        // torch failing here (a model file missing on this replica, CUDA out of memory) is
        // this replica's trouble, not the job's: retried, not dead-lettered
        .map_err(|e| DataError::Transient(format!("featurizing the views stopped: {e}")))?
        .map_err(|e| DataError::Transient(format!("views of {} tiles: {e}", part.ids.len())))?;
        if views[0].dim() != part.x.dim() {
            return Err(DataError::Unusable(format!(
                "test-time features are {:?}, the stored ones {:?}",
                views[0].dim(),
                part.x.dim()
            )));
        }
        Ok(views)
    }
}
