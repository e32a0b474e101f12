//! Fine-tuning MobileNetV2 at a retraining depth, in segments that never hold a delivery
//! much past `worker.segment_secs` (one epoch at least): each epoch ends with a checkpoint in
//! S3 (weights, then the state naming them, the job's message id and the segment that claimed
//! it); when a segment's time is up the job continues in its next segment
//! ([`Outcome::Continue`]) and whichever train replica takes it claims and resumes the
//! checkpoint. A crash resumes the same way, from the redelivered job; a checkpoint of
//! another job is never resumed, and a segment redelivered after a later one claimed the
//! checkpoint is dropped.

pub(crate) mod augment;
pub(crate) mod images;

use crate::record::{self, Finished, ModelFile};
use aerial_model::{
    mobilenet::{Net, HEAD_GROUP},
    views,
};
use aerial_shared::{
    messages::{EventKind, Retraining, TrainJob, Tta},
    runs::{self, Checkpoint, EpochRecord},
    store::StoreError,
    worker::{DeliveryInfo, Outcome},
    Publisher, Store, Telemetry,
};
use images::Images;
use ndarray::Array2;
use rand::{seq::SliceRandom, SeedableRng};
use std::path::PathBuf;
use std::time::Instant;
use tch::{nn, nn::OptimizerConfig, Device, Kind, Tensor};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Learning rate of the pretrained layers relative to the new classifier's: large steps on
/// ImageNet weights undo what transfer learning is for (measured on rsscn7: one learning
/// rate for all layers reached 0.68 validation accuracy after the first epoch).
const PRETRAINED_LR_SCALE: f64 = 0.1;
/// Batch size for validation passes.
const EVAL_BATCH: i64 = 64;

/// Runs fine-tune jobs.
pub struct Finetuner {
    store: Store,
    telemetry: Telemetry,
    /// Last finished epoch of the current fine-tune (`aerial_train_epoch`).
    epoch: prometheus::Gauge,
    /// Its training loss (`aerial_train_loss`).
    loss: prometheus::Gauge,
    models: PathBuf,
    threads: usize,
    shutdown: CancellationToken,
}

/// What a segment's training thread reports.
enum Report {
    /// An epoch ended: its record and the trained weights after it.
    Epoch(EpochRecord, Vec<u8>),
    /// Training finished: validation probabilities, test probabilities (when the job kept a
    /// test share) and the final weights.
    Done(Array2<f64>, Option<Array2<f64>>, Vec<u8>),
    /// Stopped early (time up or shutdown) after the last reported epoch.
    Paused,
    /// Torch failed.
    Failed(String),
}

impl Finetuner {
    /// A fine-tuner loading backbones from `models`, training on `threads` CPU threads (or CUDA).
    pub fn new(
        store: Store,
        telemetry: Telemetry,
        models: PathBuf,
        threads: usize,
        shutdown: CancellationToken,
    ) -> Self {
        let gauge = |name: &str, help: &str| {
            let g = prometheus::Gauge::new(name, help).expect("valid metric");
            telemetry
                .registry
                .register(Box::new(g.clone()))
                .expect("unique metric name");
            g
        };
        let epoch = gauge(
            "train_epoch",
            "Last finished epoch of the running fine-tune.",
        );
        let loss = gauge(
            "train_loss",
            "Training loss of the running fine-tune's last epoch.",
        );
        Self {
            store,
            telemetry,
            epoch,
            loss,
            models,
            threads,
            shutdown,
        }
    }

    async fn checkpoint(&self, run: &str) -> Result<Option<(Checkpoint, Vec<u8>)>, StoreError> {
        match self
            .store
            .get_json::<Checkpoint>(&runs::key(run, runs::CHECKPOINT))
            .await
        {
            Ok(c) => {
                let w = self.store.get(&runs::key(run, &c.weights)).await?;
                Ok(Some((c, w.to_vec())))
            }
            Err(StoreError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Runs one segment of `job`, delivered as `info`, until `deadline`.
    pub async fn run(
        &self,
        publisher: &Publisher,
        info: &DeliveryInfo,
        deadline: tokio::time::Instant,
        job: TrainJob,
    ) -> Outcome {
        if job.backbone != "mobilenet_v2" {
            return Outcome::Dead(format!(
                "finetune supports the mobilenet_v2 backbone (native tch model), not {:?}",
                job.backbone
            ));
        }
        let weights = self.models.join("mobilenet_v2/mobilenet_v2.safetensors");
        if !weights.exists() {
            return Outcome::Dead(format!("{} not found", weights.display()));
        }
        let resume = match self.checkpoint(&job.run).await {
            Ok(Some((c, _)))
                if info.message_id.is_some()
                    && c.job == info.message_id
                    && c.segment > info.segment =>
            {
                tracing::info!(run = %job.run, segment = info.segment, current = c.segment, "stale segment of a job that went on; dropped");
                return Outcome::Ack;
            }
            Ok(Some((mut c, w))) if info.message_id.is_some() && c.job == info.message_id => {
                if info.segment > c.segment {
                    // this segment claims the checkpoint: a late copy of an older one is stale
                    c.segment = info.segment;
                    if let Err(e) = self
                        .store
                        .put_json(&runs::key(&job.run, runs::CHECKPOINT), &c)
                        .await
                    {
                        return Outcome::Retry(e.to_string());
                    }
                }
                Some((c, w))
            }
            Ok(Some((c, _))) => {
                tracing::warn!(run = %job.run, epochs_done = c.epochs_done, "checkpoint of another job under this run name; starting afresh");
                None
            }
            Ok(None) => None,
            Err(e) => return Outcome::Retry(e.to_string()),
        };
        let images = match images::load(
            &self.store,
            &job.dataset,
            job.sample_frac,
            job.test_frac,
            job.seed,
        )
        .await
        {
            Ok(i) => i,
            Err(e) => return e.outcome(),
        };
        let mut history = resume
            .as_ref()
            .map(|(c, _)| c.history.clone())
            .unwrap_or_default();
        let mut elapsed = resume.as_ref().map_or(0.0, |(c, _)| c.elapsed_s);
        if let Some((c, _)) = &resume {
            tracing::info!(run = %job.run, epochs_done = c.epochs_done, "resuming fine-tune from checkpoint");
        } else {
            let _ = publisher
                .event(
                    "train",
                    EventKind::RunStarted {
                        run: job.run.clone(),
                    },
                )
                .await;
        }
        tracing::info!(run = %job.run, train = images.train.ids.len(), val = images.val.ids.len(), depth = ?job.params.retraining, "fine-tuning");
        let (tx, mut rx) = mpsc::unbounded_channel();
        let deadline = deadline.into_std();
        let (j, token, threads) = (job.clone(), self.shutdown.clone(), self.threads);
        let labels = images.labels.clone();
        let val_ids = images.val.ids.clone();
        let val_y = images.val.y.clone();
        let test_y = images.test.as_ref().map(|t| t.y.clone());
        let mut per_label = vec![0u64; labels.len()];
        images.train.y.iter().for_each(|&c| per_label[c] += 1);
        let worker = tokio::task::spawn_blocking(move || {
            let mut images = images;
            if let Some(px) = j.params.degrade_px {
                // every split, so validation and test measure what training learnt to read
                let splits = [
                    Some(&mut images.train),
                    Some(&mut images.val),
                    images.test.as_mut(),
                ];
                splits.into_iter().flatten().for_each(|s| s.degrade(px));
            }
            let r = train(
                &j,
                &images,
                &weights,
                resume.map(|(c, w)| (c.epochs_done, w)),
                threads,
                deadline,
                &token,
                &tx,
            );
            if let Err(e) = r {
                let _ = tx.send(Report::Failed(e.to_string()));
            }
        });
        let segment_started = Instant::now();
        let mut outcome = Outcome::Retry("fine-tune thread ended without a result".into());
        while let Some(report) = rx.recv().await {
            match report {
                Report::Epoch(rec, w) => {
                    let file = runs::checkpoint_weights(rec.epoch);
                    history.push(rec.clone());
                    let ck = Checkpoint {
                        epochs_done: rec.epoch,
                        weights: file.clone(),
                        history: history.clone(),
                        elapsed_s: elapsed + segment_started.elapsed().as_secs_f64(),
                        job: info.message_id.clone(),
                        segment: info.segment,
                    };
                    let saved = async {
                        self.store.put(&runs::key(&job.run, &file), w).await?;
                        self.store
                            .put_json(&runs::key(&job.run, runs::CHECKPOINT), &ck)
                            .await
                    }
                    .await;
                    if let Err(e) = saved {
                        tracing::warn!(run = %job.run, error = %e, "checkpoint not saved; a restart repeats this epoch");
                    }
                    self.telemetry
                        .tiles
                        .with_label_values(&[job.dataset.as_str()])
                        .inc_by(per_label.iter().sum());
                    self.epoch.set(f64::from(rec.epoch));
                    self.loss.set(rec.train_loss);
                    tracing::info!(run = %job.run, epoch = rec.epoch, loss = rec.train_loss, val_accuracy = rec.val_accuracy, secs = rec.duration_s, "epoch done");
                    let _ = publisher
                        .event(
                            "train",
                            EventKind::Epoch {
                                run: job.run.clone(),
                                epoch: rec.epoch,
                                train_loss: rec.train_loss,
                                train_error_pct: rec.train_error_pct,
                                val_accuracy: rec.val_accuracy,
                            },
                        )
                        .await;
                }
                Report::Done(proba, test_proba, w) => {
                    elapsed += segment_started.elapsed().as_secs_f64();
                    let f = Finished {
                        labels: labels.clone(),
                        val_ids: val_ids.clone(),
                        val_y: val_y.clone(),
                        proba,
                        test: test_y.clone().zip(test_proba),
                        history: history.clone(),
                        train_per_label: per_label.clone(),
                        feature_dim: None,
                        duration_s: elapsed,
                    };
                    outcome = match record::write(
                        &self.store,
                        publisher,
                        &self.telemetry,
                        &job,
                        f,
                        ModelFile::Weights(w),
                    )
                    .await
                    {
                        Ok(_) => Outcome::Ack,
                        Err(e) => Outcome::Retry(e.to_string()),
                    };
                }
                // time is up for this delivery, or the service stops: the checkpoint is saved,
                // the job goes on in a new delivery (a shutdown is no failed try)
                Report::Paused => {
                    outcome = Outcome::Continue(format!(
                        "fine-tune {}: {}, resumes from its checkpoint",
                        job.run,
                        if self.shutdown.is_cancelled() {
                            "service stopping"
                        } else {
                            "segment time up"
                        }
                    ));
                }
                Report::Failed(e) => outcome = Outcome::Dead(format!("fine-tune failed: {e}")),
            }
        }
        if let Err(e) = worker.await {
            // a torch panic: the worker runtime counts the delivery against its limit
            return Outcome::Retry(format!("fine-tune thread panicked: {e}"));
        }
        outcome
    }
}

/// Trains from the checkpoint (if any) until all epochs are done, the deadline passes or
/// shutdown is requested; reports each epoch and the end through `tx`.
#[allow(clippy::too_many_arguments)]
fn train(
    job: &TrainJob,
    images: &Images,
    weights: &std::path::Path,
    resume: Option<(u32, Vec<u8>)>,
    threads: usize,
    deadline: Instant,
    shutdown: &CancellationToken,
    tx: &mpsc::UnboundedSender<Report>,
) -> Result<(), tch::TchError> {
    let device = Device::cuda_if_available();
    if device == Device::Cpu {
        tch::set_num_threads(threads.max(1) as i32);
    }
    let depth = job.params.retraining.unwrap_or(Retraining::All);
    let mut net = Net::new(weights, images.labels.len(), depth, device)?;
    let tmp = tempfile::tempdir().map_err(|e| tch::TchError::FileFormat(e.to_string()))?;
    let ckpt = tmp.path().join("trained.safetensors");
    let first = match resume {
        Some((done, w)) => {
            std::fs::write(&ckpt, w).map_err(|e| tch::TchError::FileFormat(e.to_string()))?;
            net.load_trained(&ckpt)?;
            done + 1
        }
        None => 1,
    };
    let p = &job.params;
    let mut opt = nn::Sgd {
        momentum: 0.9,
        dampening: 0.0,
        wd: 1e-4,
        nesterov: true,
    }
    .build(&net.trained, p.lr)?;
    let n = images.train.ids.len() as i64;
    let batch = i64::from(p.batch.max(1));
    let recipe = augment::Recipe::of(p);
    let y_all = Tensor::from_slice(&images.train.y.iter().map(|&v| v as i64).collect::<Vec<_>>());
    for epoch in first..=p.epochs {
        // at least one epoch per delivery, so the run always moves forward
        if epoch > first && (Instant::now() >= deadline || shutdown.is_cancelled()) {
            let _ = tx.send(Report::Paused);
            return Ok(());
        }
        // cosine schedule over the run's epochs, from lr down to 0
        let lr = p.lr
            * 0.5
            * (1.0 + (std::f64::consts::PI * f64::from(epoch - 1) / f64::from(p.epochs)).cos());
        opt.set_lr_group(0, lr * PRETRAINED_LR_SCALE);
        opt.set_lr_group(HEAD_GROUP, lr);
        let started = Instant::now();
        // the order depends only on (seed, epoch): a resumed epoch sees the same batches
        let mut order: Vec<i64> = (0..n).collect();
        order.shuffle(&mut rand::rngs::StdRng::seed_from_u64(
            job.seed ^ u64::from(epoch),
        ));
        let mut rng =
            rand::rngs::StdRng::seed_from_u64(job.seed.wrapping_mul(31) ^ u64::from(epoch));
        let (mut loss_sum, mut wrong) = (0.0, 0i64);
        for chunk in order.chunks(batch as usize) {
            if shutdown.is_cancelled() {
                let _ = tx.send(Report::Paused);
                return Ok(());
            }
            let idx = Tensor::from_slice(chunk);
            let x = augment::to_unit(&images.train.pixels.index_select(0, &idx));
            let x = augment::normalise(&augment::augment(&x, &mut rng));
            let y = y_all.index_select(0, &idx);
            let (x, y) = (augment::on(x, device), augment::on(y, device));
            let (x, mix) = recipe.mix(x, &mut rng);
            let logits = net.forward(&x, true);
            let loss = recipe.loss(&logits, &y, mix.as_ref());
            opt.backward_step(&loss);
            loss_sum += loss.double_value(&[]) * chunk.len() as f64;
            wrong += logits
                .argmax(-1, false)
                .ne_tensor(&y)
                .sum(Kind::Int64)
                .int64_value(&[]);
        }
        let secs = started.elapsed().as_secs_f64();
        // each epoch's record: one view; the run's result below: its test-time views
        let proba = evaluate(&net, &images.val.pixels, device, Tta::None);
        let pred = aerial_model::classifier::argmax_rows(&proba);
        let right = pred
            .iter()
            .zip(&images.val.y)
            .filter(|(a, b)| a == b)
            .count();
        let rec = EpochRecord {
            epoch,
            train_loss: loss_sum / n as f64,
            train_error_pct: 100.0 * wrong as f64 / n as f64,
            val_accuracy: right as f64 / images.val.y.len() as f64,
            duration_s: secs,
            samples_per_sec: n as f64 / secs.max(1e-9),
        };
        net.trained.save(&ckpt)?;
        let w = std::fs::read(&ckpt).map_err(|e| tch::TchError::FileFormat(e.to_string()))?;
        let _ = tx.send(Report::Epoch(rec, w.clone()));
        if epoch == p.epochs {
            let _ = tx.send(finish(&net, images, device, p.tta, Some(proba), w));
            return Ok(());
        }
    }
    // every epoch was done before this delivery (crash after the last checkpoint)
    net.trained.save(&ckpt)?;
    let w = std::fs::read(&ckpt).map_err(|e| tch::TchError::FileFormat(e.to_string()))?;
    let _ = tx.send(finish(&net, images, device, p.tta, None, w));
    Ok(())
}

/// The run's result: validation (and test) probabilities with the run's test-time views, as
/// score and `aerial evaluate` will give them (`one_view`: the last epoch's single-view
/// validation pass, reused when the run has no augmentation).
fn finish(
    net: &Net,
    images: &Images,
    device: Device,
    tta: Tta,
    one_view: Option<Array2<f64>>,
    w: Vec<u8>,
) -> Report {
    let val = match one_view {
        Some(p) if tta.is_none() => p,
        _ => evaluate(net, &images.val.pixels, device, tta),
    };
    let test = images
        .test
        .as_ref()
        .map(|t| evaluate(net, &t.pixels, device, tta));
    Report::Done(val, test, w)
}

/// Class probabilities of `[n, 224, 224, 3]` u8 images, eval mode, averaged over the views
/// `tta` asks for.
fn evaluate(net: &Net, pixels: &Tensor, device: Device, tta: Tta) -> Array2<f64> {
    let n = pixels.size()[0];
    let mut rows: Vec<f64> = Vec::new();
    let mut classes = 0;
    tch::no_grad(|| {
        let mut start = 0;
        while start < n {
            let len = EVAL_BATCH.min(n - start);
            let x = augment::normalise(&augment::to_unit(&pixels.narrow(0, start, len)));
            let x = augment::on(x, device);
            let p = views::mean_over(&x, tta, |v| {
                Ok::<_, std::convert::Infallible>(net.forward(v, false).softmax(-1, Kind::Float))
            })
            .unwrap_or_else(|e| match e {})
            .to_device(Device::Cpu)
            .to_kind(Kind::Double);
            classes = p.size()[1] as usize;
            rows.extend(Vec::<f64>::try_from(p.contiguous().view([-1])).expect("double tensor"));
            start += len;
        }
    });
    Array2::from_shape_vec((n as usize, classes), rows).expect("n × classes")
}
