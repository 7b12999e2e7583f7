//! Usage statistics of API keys: counted in memory on every verification ([`UsageRecorder`]),
//! flushed in batches as additive upserts so every instance's counts add up ([`flush`]), and read
//! back per key ([`report`]).

pub mod flush;
pub mod recorder;
pub mod report;

pub use flush::run as run_flusher;
pub use recorder::UsageRecorder;
