//! Scope names and scope lists: one grammar for clients, users, tokens and API keys.

use crate::error::{Error, Result};

/// The scope that implies every other.
pub const ADMIN: &str = "admin";
/// Most scopes one list may hold.
pub const MAX_SCOPES: usize = 50;
/// Scopes that can never be put on an API key nor in an owner's `key_scopes`: they administer the
/// service itself, read every revocation, manage keys, or belong to OpenID sign-in. `keys:*` (any
/// scope starting `keys:`) is reserved too, see [`is_reserved`].
pub const RESERVED: [&str; 6] = [ADMIN, "introspect", "revocations:read", "openid", "profile", "offline_access"];

/// OpenID Connect scopes: granted to any user of a client that holds them (they describe the
/// sign-in, not a permission of the user's).
pub const OIDC: [&str; 3] = ["openid", "profile", "offline_access"];

/// Whether `s` is one of [`OIDC`].
pub fn is_oidc(s: &str) -> bool {
    OIDC.contains(&s)
}

/// Whether `s` is a valid scope name: `[A-Za-z0-9:._-]{1,64}`.
pub fn is_valid(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b':' | b'.' | b'_' | b'-'))
}

/// Validates a list of scopes from a JSON body, de-duplicating while keeping order.
pub fn validate_list(field: &str, scopes: &[String]) -> Result<Vec<String>> {
    if scopes.len() > MAX_SCOPES {
        return Err(Error::invalid(format!("{field}: at most {MAX_SCOPES} scopes are allowed, got {}", scopes.len())));
    }
    let mut out: Vec<String> = Vec::with_capacity(scopes.len());
    for s in scopes {
        if !is_valid(s) {
            return Err(Error::invalid(format!(
                "{field}: {s:?} is not a valid scope (1-64 characters of A-Z a-z 0-9 : . _ -)"
            )));
        }
        if !out.contains(s) {
            out.push(s.clone());
        }
    }
    Ok(out)
}

/// Whether `s` is reserved: one of [`RESERVED`] or any `keys:` scope.
pub fn is_reserved(s: &str) -> bool {
    RESERVED.contains(&s) || s.starts_with("keys:")
}

/// Validates a list of scopes meant for an API key or an owner's `key_scopes`: the grammar of
/// [`validate_list`] (400 `INVALID_REQUEST`), then no reserved scope (400 `SCOPE_RESERVED`).
pub fn validate_key_list(field: &str, scopes: &[String]) -> Result<Vec<String>> {
    let list = validate_list(field, scopes)?;
    if let Some(r) = list.iter().find(|s| is_reserved(s)) {
        return Err(Error::ScopeReserved(format!(
            "{field}: {r:?} is reserved and can never be granted to an API key \
             (reserved: {}, keys:*)",
            RESERVED.join(", ")
        )));
    }
    Ok(list)
}

/// Parses an OAuth `scope` parameter (space-separated); `None` when any name is invalid.
pub fn parse_param(param: &str) -> Option<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for s in param.split(' ').filter(|s| !s.is_empty()) {
        if !is_valid(s) {
            return None;
        }
        if !out.iter().any(|o| o == s) {
            out.push(s.to_owned());
        }
    }
    Some(out)
}

/// Whether `granted` allows `needed` (`admin` allows everything).
pub fn allows<'a>(granted: impl IntoIterator<Item = &'a str>, needed: &str) -> bool {
    granted.into_iter().any(|g| g == needed || g == ADMIN)
}

/// Whether every scope of `requested` is in `allowed`.
pub fn is_subset(requested: &[String], allowed: &[String]) -> bool {
    requested.iter().all(|r| allowed.contains(r))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grammar() {
        assert!(is_valid("keys:write"));
        assert!(is_valid("a.b_c-d"));
        assert!(!is_valid(""));
        assert!(!is_valid("has space"));
        assert!(!is_valid(&"x".repeat(65)));
        assert_eq!(parse_param("a  b a"), Some(vec!["a".to_string(), "b".to_string()]));
        assert_eq!(parse_param("a \"b"), None);
        assert!(allows(["admin"], "keys:write"));
        assert!(!allows(["keys:read"], "keys:write"));
    }

    #[test]
    fn reserved_scopes_are_refused_for_keys_whatever_else_the_list_holds() {
        for r in [
            "admin",
            "introspect",
            "revocations:read",
            "keys:write",
            "keys:anything",
            "openid",
            "profile",
            "offline_access",
        ] {
            assert!(is_reserved(r), "{r}");
            let err = validate_key_list("scopes", &["deploy".into(), r.into()]).unwrap_err();
            assert!(matches!(err, Error::ScopeReserved(ref d) if d.contains(r)), "{err:?}");
        }
        for ok in ["deploy", "payments:write", "keys", "key:write", "administrator"] {
            assert!(!is_reserved(ok), "{ok}");
        }
        // Grammar first: a malformed name is INVALID_REQUEST even next to a reserved one.
        assert!(matches!(validate_key_list("scopes", &["bad scope".into()]), Err(Error::Invalid(_))));
    }
}
