//! API keys: the `tsk_` format and its checksum ([`format`]), limits ([`validate`]), storage as
//! keyed hashes only ([`store`]), create/rotate/revoke ([`manage`]), edits ([`update`]), what an
//! owner lets its keys do ([`policy`]), what a key may use ([`limits`]: a rate limit counted by
//! [`crate::ratelimit`], and [`credits`]), bulk import by hash ([`import`]), and verification
//! ([`verify`], answered as [`answer`] shapes it) of what [`record`] reads, served from a bounded in-memory cache ([`cache`]).

pub mod answer;
pub mod cache;
pub mod credits;
pub mod format;
pub mod import;
mod import_store;
pub mod leaks;
pub mod limits;
pub mod lookup;
pub mod manage;
pub mod model;
pub mod policy;
pub mod record;
mod service;
pub mod store;
pub mod update;
pub mod validate;
pub mod verify;

pub use cache::{KeyCache, KeyRecord};
pub use format::{ApiKeySecret, Environment};
pub use model::{ApiKeyView, CreatedKey, NewKey, RevokeKey, RotateKey, Status};
pub use service::ApiKeys;
pub use update::KeyPatch;
pub use verify::{Verification, VerifyRequest};
