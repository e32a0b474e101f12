//! The featurize library: ImageNet backbones loaded with tch and the dedicated thread that
//! runs them. The featurize service and the score replicas both use it.

pub mod backbone;
