//! Settings of webhooks and leak reports.

use super::ConfigError;

/// What a reported leak of a real key does (`TESSERA_LEAK_POLICY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeakPolicy {
    /// Revoke the key (the default).
    Revoke,
    /// Only flag it: anomaly, audit entry and webhook, the key keeps working.
    Notify,
}

/// Webhook delivery settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WebhookConfig {
    /// `TESSERA_WEBHOOK_ALLOW_PRIVATE`: deliver to private, loopback and link-local destinations
    /// too (default false).
    pub allow_private: bool,
}

pub(super) fn leak_policy(v: Option<String>) -> Result<LeakPolicy, ConfigError> {
    match v.as_deref().map(str::trim) {
        None | Some("revoke") => Ok(LeakPolicy::Revoke),
        Some("notify") => Ok(LeakPolicy::Notify),
        Some(other) => {
            Err(ConfigError::new("TESSERA_LEAK_POLICY", format!("expected revoke or notify, got {other:?}")))
        }
    }
}
