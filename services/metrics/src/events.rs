//! Turning events into pipeline metrics.

use aerial_shared::{
    messages::{Event, EventKind},
    worker::{BatchCtx, BatchHandler, Outcome},
    Telemetry,
};
use prometheus::{GaugeVec, IntCounterVec, Opts};

/// Counts events and keeps the latest figures per run and dataset.
pub struct EventCounter {
    events: IntCounterVec,
    featurized: IntCounterVec,
    run_accuracy: GaugeVec,
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
        for c in [
            Box::new(events.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(featurized.clone()),
            Box::new(run_accuracy.clone()),
        ] {
            t.registry.register(c).expect("unique metric names");
        }
        Self {
            events,
            featurized,
            run_accuracy,
        }
    }

    fn record(&self, ev: &Event) {
        let kind = match &ev.kind {
            EventKind::JobProgress { .. } => "job_progress",
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
            EventKind::Epoch { .. } => "epoch",
            EventKind::RunFinished { run, accuracy } => {
                self.run_accuracy
                    .with_label_values(&[run.as_str()])
                    .set(*accuracy);
                "run_finished"
            }
            EventKind::DeadLettered { .. } => "dead_lettered",
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
