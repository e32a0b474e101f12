//! The featurize library: ImageNet backbones loaded with tch and the dedicated thread that
//! runs them (featurize service, score replicas, CLI), and the trainable MobileNetV2 that
//! fine-tuning builds and that fine-tuned runs are evaluated with.

pub mod backbone;
pub mod frozen;
pub mod mobilenet;
pub mod resolution;
pub mod views;
