//! Loads a run's classifier once per replica and keeps it.

use aerial_model::backbone::FinetunedModel;
use aerial_model::classifier::ClassicModel;
use aerial_shared::{
    messages::{Method, Retraining},
    runs::{self, RunDescriptor},
    store::StoreError,
    Store,
};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::Mutex;

/// How a run turns preprocessed tiles into class probabilities.
pub enum Scoring {
    /// Backbone features, then this classifier.
    Classic(Arc<ClassicModel>),
    /// The fine-tuned network end to end; the weights file lives in `_dir`.
    Finetuned {
        /// What the inference workers load.
        model: FinetunedModel,
        /// Keeps the downloaded weights on disk while the run is cached.
        _dir: tempfile::TempDir,
    },
}

/// A run ready to score: what it is and its model.
pub struct RunModel {
    /// The run's descriptor (labels, backbone, method).
    pub descriptor: RunDescriptor,
    /// Its model.
    pub scoring: Scoring,
}

/// Why a run cannot score.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The run has no descriptor or model (never trained, or failed).
    #[error("run {run:?} has no trained model ({source})")]
    Missing {
        /// Run name.
        run: String,
        /// Store error.
        source: StoreError,
    },
    /// The store could not be reached: worth retrying.
    #[error("loading run {run:?}: {source}")]
    Store {
        /// Run name.
        run: String,
        /// Store error.
        source: StoreError,
    },
    /// The downloaded weights could not be kept on disk.
    #[error("run {run:?}: keeping its weights on disk: {source}")]
    Disk {
        /// Run name.
        run: String,
        /// I/O error.
        source: std::io::Error,
    },
}

impl ModelError {
    /// Whether another try could succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, ModelError::Store { .. } | ModelError::Disk { .. })
    }
}

/// Per-replica cache of loaded runs.
#[derive(Default)]
pub struct Models {
    loaded: Mutex<HashMap<String, Arc<RunModel>>>,
}

impl Models {
    /// The run's model, loading it on first use.
    pub async fn get(&self, store: &Store, run: &str) -> Result<Arc<RunModel>, ModelError> {
        let mut loaded = self.loaded.lock().await;
        if let Some(m) = loaded.get(run) {
            return Ok(m.clone());
        }
        let m = Arc::new(load(store, run).await?);
        loaded.insert(run.to_string(), m.clone());
        Ok(m)
    }
}

/// Reads a run's descriptor and model from S3.
pub async fn load(store: &Store, run: &str) -> Result<RunModel, ModelError> {
    let wrap = |source: StoreError| match source {
        StoreError::NotFound { .. } | StoreError::InvalidKey(_) | StoreError::Corrupt { .. } => {
            ModelError::Missing {
                run: run.into(),
                source,
            }
        }
        _ => ModelError::Store {
            run: run.into(),
            source,
        },
    };
    let descriptor: RunDescriptor = store
        .get_json(&runs::key(run, runs::DESCRIPTOR))
        .await
        .map_err(wrap)?;
    let scoring = if descriptor.method == Method::Finetune {
        let bytes = store
            .get(&runs::key(run, runs::FINETUNED))
            .await
            .map_err(wrap)?;
        let disk = |source| ModelError::Disk {
            run: run.into(),
            source,
        };
        let dir = tempfile::tempdir().map_err(disk)?;
        let weights = dir.path().join(runs::FINETUNED);
        std::fs::write(&weights, &bytes).map_err(disk)?;
        Scoring::Finetuned {
            model: FinetunedModel {
                run: run.into(),
                weights,
                classes: descriptor.labels.len(),
                depth: descriptor.retraining.unwrap_or(Retraining::All),
                tta: descriptor.params.tta,
            },
            _dir: dir,
        }
    } else {
        Scoring::Classic(Arc::new(
            store
                .get_json(&runs::key(run, runs::MODEL))
                .await
                .map_err(wrap)?,
        ))
    };
    Ok(RunModel {
        descriptor,
        scoring,
    })
}
