//! Loads a run's classifier once per replica and keeps it.

use aerial_shared::{
    classifier::ClassicModel,
    messages::Method,
    runs::{self, RunDescriptor},
    store::StoreError,
    Store,
};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::Mutex;

/// A run ready to score: what it is and its model.
pub struct RunModel {
    /// The run's descriptor (labels, backbone, method).
    pub descriptor: RunDescriptor,
    /// Its classifier on frozen features.
    pub model: ClassicModel,
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
    /// A method this build cannot score.
    #[error(
        "run {run:?} is a {method} run; this build scores logistic and random_forest runs only"
    )]
    Unsupported {
        /// Run name.
        run: String,
        /// Its method.
        method: &'static str,
    },
}

impl ModelError {
    /// Whether another try could succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, ModelError::Store { .. })
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
        StoreError::NotFound { .. }
        | StoreError::InvalidKey(_)
        | StoreError::Request { op: "get_json", .. } => ModelError::Missing {
            run: run.into(),
            source,
        },
        _ => ModelError::Store {
            run: run.into(),
            source,
        },
    };
    let descriptor: RunDescriptor = store
        .get_json(&runs::key(run, runs::DESCRIPTOR))
        .await
        .map_err(wrap)?;
    if descriptor.method == Method::Finetune {
        return Err(ModelError::Unsupported {
            run: run.into(),
            method: descriptor.method.as_str(),
        });
    }
    let model: ClassicModel = store
        .get_json(&runs::key(run, runs::MODEL))
        .await
        .map_err(wrap)?;
    Ok(RunModel { descriptor, model })
}
