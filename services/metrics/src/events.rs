//! Turning events into pipeline metrics.

use aerial_shared::{
    messages::{Event, EventKind},
    worker::{BatchCtx, BatchHandler, Outcome},
    Telemetry,
};
use prometheus::{GaugeVec, IntCounterVec, Opts};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// Counts events and keeps the latest figures per run, job and dataset.
pub struct EventCounter {
    events: IntCounterVec,
    featurized: IntCounterVec,
    run_accuracy: GaugeVec,
    job_progress: GaugeVec,
    job_eta: GaugeVec,
    epoch: GaugeVec,
    loss: GaugeVec,
    dead: IntCounterVec,
    /// First progress seen per job (when, done), for its rate.
    first_seen: Mutex<HashMap<String, (Instant, u64)>>,
}

impl EventCounter {
    /// Registers the pipeline metrics in `t`'s registry.
    pub fn new(t: &Telemetry) -> Self {
        let events = IntCounterVec::new(
            Opts::new(
                "events_total",
                "Events received, by kind and source service.",
            ),
            &["event", "source"],
        )
        .unwrap();
        let featurized = IntCounterVec::new(
            Opts::new(
                "pipeline_tiles_featurized_total",
                "Tiles with features, by dataset and backbone.",
            ),
            &["dataset", "backbone"],
        )
        .unwrap();
        let run_accuracy = GaugeVec::new(
            Opts::new(
                "run_accuracy_ratio",
                "Validation accuracy of each finished run.",
            ),
            &["run"],
        )
        .unwrap();
        let gauge = |name: &str, help: &str, label: &str| {
            GaugeVec::new(Opts::new(name, help), &[label]).expect("valid metric")
        };
        let job_progress = gauge(
            "job_progress_ratio",
            "Share of a job's items done (0..1).",
            "job_id",
        );
        let job_eta = gauge(
            "job_eta_seconds",
            "Estimated seconds left of a running job.",
            "job_id",
        );
        let epoch = gauge(
            "run_epoch",
            "Last finished epoch of a fine-tune run.",
            "run",
        );
        let loss = gauge(
            "run_train_loss",
            "Training loss of a run's last epoch.",
            "run",
        );
        let dead = IntCounterVec::new(
            Opts::new(
                "pipeline_dead_lettered_total",
                "Messages sent to a dead-letter queue, by origin queue.",
            ),
            &["queue"],
        )
        .expect("valid metric");
        for c in [
            Box::new(events.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(featurized.clone()),
            Box::new(run_accuracy.clone()),
            Box::new(job_progress.clone()),
            Box::new(job_eta.clone()),
            Box::new(epoch.clone()),
            Box::new(loss.clone()),
            Box::new(dead.clone()),
        ] {
            t.registry.register(c).expect("unique metric names");
        }
        Self {
            events,
            featurized,
            run_accuracy,
            job_progress,
            job_eta,
            epoch,
            loss,
            dead,
            first_seen: Mutex::new(HashMap::new()),
        }
    }

    fn progress(&self, job: &str, done: u64, total: Option<u64>) {
        let Some(total) = total.filter(|t| *t > 0) else {
            return;
        };
        self.job_progress
            .with_label_values(&[job])
            .set(done as f64 / total as f64);
        let mut seen = self.first_seen.lock().expect("not poisoned");
        let (t0, d0) = *seen
            .entry(job.to_string())
            .or_insert((Instant::now(), done));
        let secs = t0.elapsed().as_secs_f64();
        let eta = if done >= total {
            0.0
        } else if done > d0 && secs > 0.0 {
            (total - done) as f64 / ((done - d0) as f64 / secs)
        } else {
            return;
        };
        self.job_eta.with_label_values(&[job]).set(eta);
    }

    fn record(&self, ev: &Event) {
        let kind = match &ev.kind {
            EventKind::JobProgress {
                job_id,
                done,
                total,
                ..
            } => {
                self.progress(job_id, *done, *total);
                "job_progress"
            }
            EventKind::Featurized {
                dataset,
                backbone,
                tiles,
                ..
            } => {
                self.featurized
                    .with_label_values(&[dataset.as_str(), backbone.as_str()])
                    .inc_by(*tiles);
                "featurized"
            }
            EventKind::RunStarted { .. } => "run_started",
            EventKind::Epoch {
                run,
                epoch,
                train_loss,
                ..
            } => {
                self.epoch
                    .with_label_values(&[run.as_str()])
                    .set(f64::from(*epoch));
                self.loss
                    .with_label_values(&[run.as_str()])
                    .set(*train_loss);
                "epoch"
            }
            EventKind::RunFinished { run, accuracy } => {
                self.run_accuracy
                    .with_label_values(&[run.as_str()])
                    .set(*accuracy);
                "run_finished"
            }
            EventKind::DeadLettered { queue, .. } => {
                // queue names are ours (bounded); the reason is not a label
                self.dead.with_label_values(&[queue.as_str()]).inc();
                "dead_lettered"
            }
        };
        // service names come from our own binaries: a bounded label set
        self.events
            .with_label_values(&[kind, ev.service.as_str()])
            .inc();
    }
}

#[async_trait::async_trait]
impl BatchHandler for EventCounter {
    type Msg = Event;
    async fn handle(&self, _ctx: &BatchCtx, batch: Vec<Event>) -> Vec<Outcome> {
        batch.iter().for_each(|e| self.record(e));
        vec![Outcome::Ack; batch.len()]
    }
}
