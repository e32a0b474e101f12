//! Writing a finished run: descriptor, model, validation predictions, metrics, and the
//! summary last (its presence means "finished"), then the `run_finished` event.

use aerial_model::classifier::{argmax_rows, ClassicModel};
use aerial_shared::{
    evaluation,
    messages::{EventKind, TrainJob},
    runs::{self, EpochRecord, RunDescriptor, RunMetrics, RunSummary},
    Publisher, Store, Telemetry,
};
use ndarray::Array2;

/// The model a run leaves.
pub enum ModelFile {
    /// Classic classifier on frozen features (`model.json`).
    Classic(ClassicModel),
    /// Fine-tuned weights (`finetuned.safetensors`).
    Weights(Vec<u8>),
}

/// Everything measured by a finished run.
pub struct Finished {
    /// Sorted labels.
    pub labels: Vec<String>,
    /// Validation tile ids.
    pub val_ids: Vec<String>,
    /// Validation truth (label indices).
    pub val_y: Vec<usize>,
    /// Validation probabilities `[n, labels]`.
    pub proba: Array2<f64>,
    /// Test truth and probabilities, when the job kept a test share out.
    pub test: Option<(Vec<usize>, Array2<f64>)>,
    /// Per-epoch history.
    pub history: Vec<EpochRecord>,
    /// Training tiles per label.
    pub train_per_label: Vec<u64>,
    /// Feature size (classic methods).
    pub feature_dim: Option<usize>,
    /// Seconds from the start of the run.
    pub duration_s: f64,
}

/// Validation predictions as CSV: tile, true, predicted, one probability per label.
fn predictions_csv(f: &Finished, pred: &[usize]) -> String {
    let mut csv = String::from("tile,true,predicted");
    for l in &f.labels {
        csv.push_str(&format!(",p_{l}"));
    }
    csv.push('\n');
    for (i, id) in f.val_ids.iter().enumerate() {
        csv.push_str(&format!(
            "{id},{},{}",
            f.labels[f.val_y[i]], f.labels[pred[i]]
        ));
        for p in f.proba.row(i) {
            csv.push_str(&format!(",{p:.6}"));
        }
        csv.push('\n');
    }
    csv
}

/// Writes the run record and publishes `run_finished`; returns the validation accuracy.
pub async fn write(
    store: &Store,
    publisher: &Publisher,
    telemetry: &Telemetry,
    job: &TrainJob,
    f: Finished,
    model: ModelFile,
) -> Result<f64, aerial_shared::store::StoreError> {
    let pred = argmax_rows(&f.proba);
    let eval = evaluation::evaluate(&f.labels, f.val_y.iter().copied().zip(pred.iter().copied()));
    let csv = predictions_csv(&f, &pred);
    let train_tiles = f.train_per_label.iter().sum();
    let test = f
        .test
        .as_ref()
        .map(|(y, p)| evaluation::evaluate(&f.labels, y.iter().copied().zip(argmax_rows(p))));
    let metrics = RunMetrics {
        validation: eval.clone(),
        history: f.history,
        train_tiles,
        train_per_label: f.train_per_label,
        val_tiles: f.val_y.len() as u64,
        test: test.clone(),
    };
    let descriptor = RunDescriptor::new(job, f.labels, f.feature_dim);
    let summary = RunSummary {
        run: job.run.clone(),
        method: job.method,
        backbone: job.backbone.clone(),
        retraining: descriptor.retraining,
        dataset: job.dataset.clone(),
        accuracy: eval.accuracy,
        test_accuracy: test.as_ref().map(|t| t.accuracy),
        duration_s: f.duration_s,
        train_tiles,
        finished_at: chrono::Utc::now(),
    };
    let run = &job.run;
    store
        .put_json(&runs::key(run, runs::DESCRIPTOR), &descriptor)
        .await?;
    match model {
        ModelFile::Classic(m) => store.put_json(&runs::key(run, runs::MODEL), &m).await?,
        ModelFile::Weights(w) => store.put(&runs::key(run, runs::FINETUNED), w).await?,
    }
    store
        .put(&runs::key(run, runs::PREDICTIONS), csv.into_bytes())
        .await?;
    store
        .put_json(&runs::key(run, runs::METRICS), &metrics)
        .await?;
    store
        .put_json(&runs::key(run, runs::SUMMARY), &summary)
        .await?;
    telemetry
        .tiles
        .with_label_values(&[job.dataset.as_str()])
        .inc_by(train_tiles);
    let _ = publisher
        .event(
            "train",
            EventKind::RunFinished {
                run: run.clone(),
                accuracy: eval.accuracy,
            },
        )
        .await;
    tracing::info!(run = %run, accuracy = eval.accuracy, test_accuracy = test.map(|t| t.accuracy), secs = f.duration_s, "run finished");
    Ok(eval.accuracy)
}
