//! One training job: wait until the dataset is featurized, fit, evaluate on the validation
//! split, write the run record (summary last), publish `run_finished`.

use crate::data;
use crate::{finetune::Finetuner, record};
use aerial_model::classifier::{argmax_rows, ClassicModel};
use aerial_shared::{
    evaluation,
    feature_index::FeatureIndex,
    keys,
    messages::{EventKind, Method, TrainJob},
    runs::{self, EpochRecord, RunDescriptor},
    store::StoreError,
    worker::{BatchCtx, BatchHandler, DeliveryInfo, Outcome},
    Store, Telemetry,
};
use std::time::{Duration, Instant};

/// How long a job waits for its dataset's features before giving up.
const FEATURES_WAIT: Duration = Duration::from_secs(20 * 60);

/// The train handler.
pub struct Trainer {
    store: Store,
    telemetry: Telemetry,
    finetune: Finetuner,
    /// Backbones, for a classic run's validation over test-time views.
    models: std::path::PathBuf,
    threads: usize,
}

impl Trainer {
    /// A handler over `store`; fine-tunes run through `finetune`; a classic run with
    /// test-time augmentation featurizes its validation tiles with the backbones in `models`
    /// on `threads` threads.
    pub fn new(
        store: Store,
        telemetry: Telemetry,
        finetune: Finetuner,
        models: std::path::PathBuf,
        threads: usize,
    ) -> Self {
        Self {
            store,
            telemetry,
            finetune,
            models,
            threads,
        }
    }

    /// Labelled tiles of the dataset, and how many of them have features (`index` is
    /// refreshed, so a wait re-reads only the shards written since).
    async fn featurized(
        &self,
        job: &TrainJob,
        indexes: &mut [FeatureIndex],
    ) -> Result<(usize, usize), StoreError> {
        let (mut labelled, mut have) = (0, 0);
        for (dataset, index) in datasets(job).iter().zip(indexes.iter_mut()) {
            let rows = aerial_shared::manifest::load(&self.store, dataset).await?;
            index.refresh(&self.store).await?;
            let rows: Vec<_> = rows.iter().filter(|r| !r.label.is_empty()).collect();
            labelled += rows.len();
            have += rows
                .iter()
                .filter(|r| index.contains_version(&r.id, &r.sha256))
                .count();
        }
        Ok((labelled, have))
    }

    async fn run(&self, ctx: &BatchCtx, info: &DeliveryInfo, job: TrainJob) -> Outcome {
        let publisher = &ctx.publisher;
        if let Err(e) = keys::validate_run_name(&job.run).and(keys::validate_name(&job.dataset)) {
            return Outcome::Dead(e.to_string());
        }
        if let Some(e) = job.also.iter().find_map(|d| keys::validate_name(d).err()) {
            return Outcome::Dead(e.to_string());
        }
        let all = datasets(&job);
        if all.iter().collect::<std::collections::HashSet<_>>().len() < all.len() {
            // the same tiles twice would count twice in training and validation
            return Outcome::Dead(format!("datasets listed twice: {}", all.join(",")));
        }
        if job.method == Method::Finetune && !job.also.is_empty() {
            return Outcome::Dead(format!(
                "fine-tuning learns from one dataset; {} beside {} is for logistic and random-forest runs",
                job.also.join(","),
                job.dataset
            ));
        }
        if !(job.sample_frac > 0.0 && job.sample_frac <= 1.0) {
            return Outcome::Dead(format!("sample_frac {} is not in (0, 1]", job.sample_frac));
        }
        if let Some(f) = job.test_frac.filter(|f| !(*f > 0.0 && *f < 1.0)) {
            return Outcome::Dead(format!("test_frac {f} is not in (0, 1)"));
        }
        if let Some(px) = job.params.degrade_px.filter(|px| !(8..224).contains(px)) {
            return Outcome::Dead(format!("degrade_px {px} is not in 8..224"));
        }
        if let Some(e) = job
            .params
            .label_smoothing
            .filter(|e| !(0.0..1.0).contains(e))
        {
            return Outcome::Dead(format!("label_smoothing {e} is not in [0, 1)"));
        }
        if let Some(a) = job.params.mixup.filter(|a| !(*a > 0.0 && a.is_finite())) {
            return Outcome::Dead(format!("mixup alpha {a} is not a positive number"));
        }
        // a redelivered job whose run already finished must not make a second record
        match self
            .store
            .get_json::<RunDescriptor>(&runs::key(&job.run, runs::DESCRIPTOR))
            .await
        {
            Ok(d)
                if self
                    .store
                    .exists(&runs::key(&job.run, runs::SUMMARY))
                    .await
                    .unwrap_or(false) =>
            {
                return if d.method == job.method
                    && d.dataset == job.dataset
                    && d.also == job.also
                    && d.params == job.params
                    && d.test_frac == job.test_frac
                {
                    tracing::info!(run = %job.run, "run already finished; nothing to do");
                    Outcome::Ack
                } else {
                    Outcome::Dead(format!(
                        "run name {:?} is already used by another run",
                        job.run
                    ))
                };
            }
            _ => {}
        }
        if job.method == Method::Finetune {
            return self.finetune.run(publisher, info, ctx.deadline, job).await;
        }
        let started = Instant::now();
        if info.segment == 0 && !info.redelivered {
            let _ = publisher
                .event(
                    "train",
                    EventKind::RunStarted {
                        run: job.run.clone(),
                    },
                )
                .await;
        }
        // featurize may still be running on this dataset: wait for it, in segments that hand
        // the job on before the broker's consumer timeout, up to FEATURES_WAIT in all
        let mut indexes: Vec<FeatureIndex> = datasets(&job)
            .iter()
            .map(|d| FeatureIndex::new(d, &job.backbone))
            .collect();
        let waited = || {
            let now = chrono::Utc::now().timestamp().max(0) as u64;
            info.first_published.map_or(started.elapsed(), |t| {
                Duration::from_secs(now.saturating_sub(t))
            })
        };
        loop {
            match self.featurized(&job, &mut indexes).await {
                Ok((0, _)) => {
                    return Outcome::Dead(format!("dataset {} has no labelled tiles", job.dataset))
                }
                Ok((labelled, have)) if have >= labelled => break,
                Ok((labelled, have)) => {
                    if waited() > FEATURES_WAIT {
                        return Outcome::Dead(format!(
                            "{} of {labelled} tiles of {} still without {} features after {:?}",
                            labelled - have,
                            job.dataset,
                            job.backbone,
                            FEATURES_WAIT
                        ));
                    }
                    if tokio::time::Instant::now() >= ctx.deadline {
                        return Outcome::Continue(format!(
                            "run {}: {have} of {labelled} tiles featurized; waiting on",
                            job.run
                        ));
                    }
                    tracing::info!(run = %job.run, have, labelled, "waiting for features");
                    tokio::time::sleep(Duration::from_secs(3)).await;
                }
                Err(e) => {
                    return Outcome::store_failure(&format!("run {}", job.run), e);
                }
            }
        }
        let mut data = match data::load(
            &self.store,
            &datasets(&job),
            &job.backbone,
            job.sample_frac,
            job.test_frac,
            job.seed,
        )
        .await
        {
            Ok(d) => d,
            Err(e) => return e.outcome(),
        };
        let tta = job.params.tta;
        let views = crate::views::Featurizer {
            store: &self.store,
            models: &self.models,
            backbone: &job.backbone,
            threads: self.threads,
            degrade_px: job.params.degrade_px,
        };
        let featurized = async {
            views.average(tta, &mut data.val).await?;
            views.average(tta, &mut data.test).await?;
            views.samples(tta, &data.train).await
        };
        let samples = match featurized.await {
            Ok(s) => s,
            Err(e) => return e.outcome(),
        };
        if let Some((x, _)) = &samples {
            // the training loss and error are reported on the first view, at the run's
            // resolution: the images the classifier learnt from, not the stored features
            let n = data.train.y.len();
            data.train.x = x.slice(ndarray::s![..n, ..]).to_owned();
        }
        tracing::info!(run = %job.run, train = data.train.ids.len(), val = data.val.ids.len(), test = data.test.ids.len(), views = tta.views(), dim = data.dim, without_features = data.missing, "fitting");
        let (labels, n_classes) = (data.labels.clone(), data.labels.len());
        let params = job.params.clone();
        let (method, seed) = (job.method, job.seed);
        let fit_started = Instant::now();
        // with views, every view of a training tile is a sample (as inference averages them)
        let (train_x, train_y) =
            samples.unwrap_or_else(|| (data.train.x.clone(), data.train.y.clone()));
        let fitted = tokio::task::spawn_blocking(move || match method {
            Method::Logistic => ClassicModel::fit_logistic(
                train_x,
                &train_y,
                n_classes,
                u64::from(params.epochs),
                params.lr,
            ),
            _ => ClassicModel::fit_forest(
                train_x,
                &train_y,
                n_classes,
                params.trees.unwrap_or(100) as usize,
                params.max_depth.unwrap_or(10) as usize,
                seed,
            ),
        })
        .await
        .expect("fit does not panic");
        let model = match fitted {
            Ok(m) => m,
            Err(e) => return Outcome::Dead(format!("run {}: {e}", job.run)),
        };
        let fit_secs = fit_started.elapsed().as_secs_f64();
        let train_proba = model.predict_proba(data.train.x.clone());
        let train_pred = argmax_rows(&train_proba);
        // mean cross-entropy of the true class (probabilities clamped so a 0 vote stays finite)
        let train_loss = data
            .train
            .y
            .iter()
            .enumerate()
            .map(|(i, &c)| -train_proba[[i, c]].max(1e-12).ln())
            .sum::<f64>()
            / data.train.y.len() as f64;
        let train_err = train_pred
            .iter()
            .zip(&data.train.y)
            .filter(|(a, b)| a != b)
            .count() as f64
            / data.train.y.len() as f64;
        let proba = model.predict_proba(data.val.x.clone());
        let test = (!data.test.y.is_empty()).then(|| {
            (
                data.test.y.clone(),
                model.predict_proba(data.test.x.clone()),
            )
        });
        let pred = argmax_rows(&proba);
        let eval = evaluation::evaluate(
            &labels,
            data.val.y.iter().copied().zip(pred.iter().copied()),
        );
        let history = vec![EpochRecord {
            epoch: 1,
            train_loss,
            train_error_pct: train_err * 100.0,
            val_accuracy: eval.accuracy,
            duration_s: fit_secs,
            samples_per_sec: data.train.y.len() as f64 / fit_secs.max(1e-9),
        }];
        let mut per_label = vec![0u64; n_classes];
        data.train.y.iter().for_each(|&c| per_label[c] += 1);
        let finished = record::Finished {
            labels,
            val_ids: data.val.ids.clone(),
            val_y: data.val.y.clone(),
            proba,
            test,
            history,
            train_per_label: per_label,
            feature_dim: Some(data.dim),
            duration_s: started.elapsed().as_secs_f64(),
        };
        match record::write(
            &self.store,
            publisher,
            &self.telemetry,
            &job,
            finished,
            record::ModelFile::Classic(model),
        )
        .await
        {
            Ok(_) => Outcome::Ack,
            Err(e) => Outcome::Retry(e.to_string()),
        }
    }
}

/// The datasets a job learns from, its own first.
fn datasets(job: &TrainJob) -> Vec<String> {
    std::iter::once(job.dataset.clone())
        .chain(job.also.iter().cloned())
        .collect()
}

/// Why a run failed, kept beside its record so `aerial train` can report it.
#[derive(serde::Serialize)]
struct RunError<'a> {
    run: &'a str,
    reason: &'a str,
}

#[async_trait::async_trait]
impl BatchHandler for Trainer {
    type Msg = TrainJob;

    async fn handle(&self, ctx: &BatchCtx, batch: Vec<TrainJob>) -> Vec<Outcome> {
        let mut out = Vec::with_capacity(batch.len());
        for job in batch {
            let run = job.run.clone();
            let info = ctx.deliveries.first().cloned().unwrap_or_default();
            let mut outcome = self.run(ctx, &info, job).await;
            if let (Outcome::Retry(why), true) = (&outcome, info.last_try) {
                // the run's error record says why it stopped, where `aerial runs` looks
                outcome =
                    Outcome::Dead(format!("gave up after {} deliveries: {why}", info.delivery));
            }
            if let Outcome::Dead(reason) = &outcome {
                // names that failed validation have no safe prefix to write under
                if keys::validate_run_name(&run).is_ok() && !reason.contains("already used") {
                    let _ = self
                        .store
                        .put_json(
                            &runs::key(&run, runs::ERROR),
                            &RunError { run: &run, reason },
                        )
                        .await;
                }
            }
            out.push(outcome);
        }
        out
    }
}
