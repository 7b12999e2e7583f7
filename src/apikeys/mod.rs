//! API keys: the `tsk_` format and its checksum ([`format`]), limits ([`validate`]), storage as
//! keyed hashes only ([`store`]), create/rotate/revoke ([`manage`]), what an owner lets its keys do
//! ([`policy`]), and verification ([`verify`]) served from a bounded in-memory cache ([`cache`]).

pub mod cache;
pub mod format;
pub mod lookup;
pub mod manage;
pub mod model;
pub mod policy;
mod service;
pub mod store;
pub mod validate;
pub mod verify;

pub use cache::{KeyCache, KeyRecord};
pub use format::{ApiKeySecret, Environment};
pub use model::{ApiKeyView, CreatedKey, NewKey, RevokeKey, RotateKey};
pub use service::ApiKeys;
pub use verify::{Verification, VerifyRequest};
