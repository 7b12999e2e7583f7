//! The limits on what a key may carry, each refused with a detail naming the field and the rule.

use std::net::IpAddr;

use ipnet::IpNet;
use serde_json::Value;

use time::OffsetDateTime;

use super::{format::Environment, limits::LimitsChange, model::NewKey};
use crate::{
    error::{Error, Result},
    scopes,
};

/// Longest name, in characters.
pub const MAX_NAME_CHARS: usize = 200;
/// Most CIDRs per key.
pub const MAX_CIDRS: usize = 20;
/// Largest metadata, serialized.
pub const MAX_METADATA_BYTES: usize = 4096;
/// Longest lifetime: ten years.
pub const MAX_EXPIRES_IN: i64 = 315_360_000;
/// Longest rotation grace: thirty days.
pub const MAX_GRACE: i64 = 2_592_000;
/// Rotation grace when none is given: one day.
pub const DEFAULT_GRACE: i64 = 86_400;
/// Longest revocation reason, in characters.
pub const MAX_REASON_CHARS: usize = 500;

/// A [`NewKey`] that passed every rule.
#[derive(Debug, Clone)]
pub struct ValidKey {
    /// Name.
    pub name: String,
    /// De-duplicated scopes.
    pub scopes: Vec<String>,
    /// Environment.
    pub environment: Environment,
    /// Expiry.
    pub expires_at: Option<OffsetDateTime>,
    /// Canonical CIDRs (network form, de-duplicated).
    pub allowed_cidrs: Vec<String>,
    /// A JSON object.
    pub metadata: Value,
    /// Its rate limit, credits and refill.
    pub limits: LimitsChange,
}

/// Checks every limit of a create request made at `now`.
pub fn new_key(body: NewKey, now: OffsetDateTime) -> Result<ValidKey> {
    name(&body.name)?;
    // Reserved scopes are refused here, before the owner's `key_scopes` are even read.
    let scopes = scopes::validate_key_list("scopes", &body.scopes)?;
    let expires_at = expiry(body.expires_in, body.expires_at.map(Some), now)?.flatten();
    let allowed_cidrs = cidrs(body.allowed_cidrs.as_deref().unwrap_or_default())?;
    let metadata = metadata(body.metadata)?;
    let limits = LimitsChange {
        rate_limit: body.rate_limit.map(Some),
        credits: body.credits.map(Some),
        refill: body.refill.map(Some),
    }
    .checked()?;
    Ok(ValidKey { name: body.name, scopes, environment: body.environment, expires_at, allowed_cidrs, metadata, limits })
}

/// Checks a key's name.
pub fn name(name: &str) -> Result<()> {
    let chars = name.chars().count();
    if name.trim().is_empty() || chars > MAX_NAME_CHARS {
        return Err(Error::invalid(format!(
            "name: must be 1 to {MAX_NAME_CHARS} characters and not blank, got {chars} characters"
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(Error::invalid("name: must not contain control characters"));
    }
    Ok(())
}

/// The expiry a request asks for at `now`, from `expires_in` (seconds) or `expires_at` (`Some(None)`:
/// never), not both: `None` when neither is given. A time must be in the future and at most ten years ahead.
pub fn expiry(
    expires_in: Option<i64>,
    expires_at: Option<Option<OffsetDateTime>>,
    now: OffsetDateTime,
) -> Result<Option<Option<OffsetDateTime>>> {
    match (expires_in, expires_at) {
        (Some(_), Some(_)) => Err(Error::invalid("expires_at, expires_in: give one or the other")),
        (Some(s), None) if (1..=MAX_EXPIRES_IN).contains(&s) => Ok(Some(Some(now + time::Duration::seconds(s)))),
        (Some(s), None) => Err(Error::invalid(format!("expires_in: must be 1 to {MAX_EXPIRES_IN} seconds, got {s}"))),
        (None, Some(Some(at))) if at > now && at <= now + time::Duration::seconds(MAX_EXPIRES_IN) => Ok(Some(Some(at))),
        (None, Some(Some(_))) => Err(Error::invalid("expires_at: must be in the future and at most ten years ahead")),
        (None, other) => Ok(other),
    }
}

/// Parses a CIDR, or a bare address as a single host (`/32` or `/128`), into the form source
/// addresses are compared in: an IPv4-mapped IPv6 range (`::ffff:a.b.c.d/p`, `p` ≥ 96) becomes the
/// IPv4 range `a.b.c.d/(p − 96)`, since a source address is always mapped back to IPv4
/// ([`IpAddr::to_canonical`]) before it is matched. Host bits are kept: callers decide whether
/// they are an error ([`cidrs`], at the API) or to be cleared (stored entries).
pub fn parse_cidr(s: &str) -> Option<IpNet> {
    let net = s.parse::<IpNet>().ok().or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))?;
    Some(match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
            Some(v4) => ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96).map_or(net, IpNet::V4),
            None => net,
        },
        other => other,
    })
}

/// Checks and canonicalises an allow-list.
pub fn cidrs(list: &[String]) -> Result<Vec<String>> {
    if list.len() > MAX_CIDRS {
        return Err(Error::invalid(format!(
            "allowed_cidrs: at most {MAX_CIDRS} entries are allowed, got {}",
            list.len()
        )));
    }
    let mut out: Vec<String> = Vec::with_capacity(list.len());
    for s in list {
        let net = parse_cidr(s).ok_or_else(|| {
            Error::invalid(format!("allowed_cidrs: {s:?} is not an IPv4 or IPv6 address or CIDR (e.g. 203.0.113.0/24)"))
        })?;
        // `203.0.113.5/24` is ambiguous (a host, or its network?): silently narrowing or widening
        // it would grant what the owner did not mean, so it is refused with the likely intent.
        if net.trunc() != net {
            return Err(Error::invalid(format!(
                "allowed_cidrs: {s:?} has host bits set; write the network ({}) or the single address",
                net.trunc()
            )));
        }
        let canonical = net.to_string();
        if !out.contains(&canonical) {
            out.push(canonical);
        }
    }
    Ok(out)
}

/// Checks metadata (`null` is an empty object).
pub fn metadata(value: Option<Value>) -> Result<Value> {
    let value = match value {
        None | Some(Value::Null) => return Ok(Value::Object(Default::default())),
        Some(v @ Value::Object(_)) => v,
        Some(_) => return Err(Error::invalid("metadata: must be a JSON object")),
    };
    if has_nul(&value) {
        // Postgres cannot store U+0000 in jsonb.
        return Err(Error::invalid("metadata: strings and keys must not contain U+0000"));
    }
    let size = serde_json::to_vec(&value).map(|v| v.len()).unwrap_or(usize::MAX);
    if size > MAX_METADATA_BYTES {
        return Err(Error::invalid(format!(
            "metadata: at most {MAX_METADATA_BYTES} bytes serialized are allowed, got {size}"
        )));
    }
    Ok(value)
}

fn has_nul(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(a) => a.iter().any(has_nul),
        Value::Object(m) => m.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

/// Checks a rotation grace period, applying the default.
pub fn grace_period(secs: Option<i64>) -> Result<time::Duration> {
    match secs.unwrap_or(DEFAULT_GRACE) {
        s @ 0..=MAX_GRACE => Ok(time::Duration::seconds(s)),
        s => Err(Error::invalid(format!("grace_period: must be 0 to {MAX_GRACE} seconds, got {s}"))),
    }
}

/// Checks a revocation reason.
pub fn reason(reason: Option<String>) -> Result<Option<String>> {
    match reason {
        Some(r) if r.chars().count() > MAX_REASON_CHARS => {
            Err(Error::invalid(format!("reason: at most {MAX_REASON_CHARS} characters are allowed")))
        }
        Some(r) if r.contains('\0') => Err(Error::invalid("reason: must not contain U+0000")),
        other => Ok(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_address_is_one_host_and_host_bits_are_cleared() {
        assert_eq!(parse_cidr("203.0.113.7").unwrap().to_string(), "203.0.113.7/32");
        assert_eq!(parse_cidr("2001:db8::1").unwrap().to_string(), "2001:db8::1/128");
        assert_eq!(parse_cidr("203.0.113.77/24").unwrap().trunc().to_string(), "203.0.113.0/24");
        assert!(parse_cidr("203.0.113.0/33").is_none());
        assert!(parse_cidr("localhost").is_none());
    }

    #[test]
    fn ipv4_mapped_entries_become_ipv4_and_host_bits_are_refused() {
        assert_eq!(parse_cidr("::ffff:203.0.113.0/120").unwrap().to_string(), "203.0.113.0/24");
        assert_eq!(parse_cidr("::ffff:203.0.113.9").unwrap().to_string(), "203.0.113.9/32");
        assert_eq!(parse_cidr("::ffff:0:0/96").unwrap().to_string(), "0.0.0.0/0");
        assert_eq!(parse_cidr("2001:db8::/32").unwrap().to_string(), "2001:db8::/32", "other IPv6 is left alone");
        assert_eq!(cidrs(&["::ffff:203.0.113.0/120".into()]).unwrap(), ["203.0.113.0/24"]);
        let err = cidrs(&["203.0.113.5/24".into()]).unwrap_err().to_string();
        assert!(err.contains("203.0.113.5/24") && err.contains("203.0.113.0/24"), "{err}");
        assert!(cidrs(&["::ffff:203.0.113.5/120".into()]).is_err());
        assert!(cidrs(&["2001:db8::1/64".into()]).is_err());
    }

    #[test]
    fn nul_anywhere_in_metadata_is_refused() {
        assert!(metadata(Some(serde_json::json!({"a": ["x\u{0}"]}))).is_err());
        assert!(metadata(Some(serde_json::json!({"k\u{0}": 1}))).is_err());
        assert!(metadata(Some(serde_json::json!({"a": ["x"]}))).is_ok());
    }

    #[test]
    fn grace_defaults_to_a_day_and_is_bounded() {
        assert_eq!(grace_period(None).unwrap(), time::Duration::DAY);
        assert!(grace_period(Some(0)).is_ok());
        assert!(grace_period(Some(-1)).is_err());
        assert!(grace_period(Some(MAX_GRACE + 1)).is_err());
    }
}
