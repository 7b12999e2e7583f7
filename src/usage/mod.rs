//! Usage of API keys and what it reveals: counted in memory on every verification
//! ([`UsageRecorder`]), flushed in batches as appended rows that every reader adds up ([`flush`]),
//! merged per key and minute once a minute has closed ([`compaction`]), read back per key
//! ([`report`]), watched for anomalies ([`detector`], [`anomalies`]) and rolled up and expired
//! ([`retention`]). [`Usage`] is the service.

pub mod anomalies;
mod compaction;
pub mod detector;
pub mod flush;
pub mod recorder;
pub mod report;
mod retention;
mod service;

pub use recorder::UsageRecorder;
pub use service::{AnomalyQuery, Usage, FLUSH_INTERVAL};
