//! The aerial shared library: everything the services have in common, defined once.

pub mod accuracy;
pub mod assessment;
pub mod broker;
pub mod cells;
pub mod change;
pub mod config;
pub mod evaluation;
pub mod feature_index;
pub mod imaging;
pub mod keys;
pub mod labels;
pub mod liveness;
pub mod malloc;
pub mod manifest;
pub mod messages;
pub mod migrate;
pub mod palette;
pub mod predictions;
pub mod runs;
pub mod service;
pub mod shards;
pub mod shutdown;
pub mod status;
pub mod store;
pub mod telemetry;
pub mod tile_fetch;
pub mod topology;
pub mod window;
pub mod worker;

pub use broker::{Broker, Publisher};
pub use config::Settings;
pub use store::Store;
pub use telemetry::Telemetry;
