//! aerial's models, one layer above the runtime and domain code of `aerial-shared`:
//! ImageNet backbones loaded with tch and the dedicated thread that runs them (featurize
//! service, score replicas, CLI, train's views), the trainable MobileNetV2 that fine-tuning
//! builds and fine-tuned runs are evaluated with, and the classic classifiers fitted on
//! frozen features. The metrics service does not depend on it, so it links neither tch nor
//! linfa.

pub mod backbone;
pub mod classifier;
pub mod frozen;
pub mod logistic;
pub mod mobilenet;
pub mod resolution;
pub mod views;
