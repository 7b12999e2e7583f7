//! Scope names and scope lists: one grammar for clients, users, tokens and API keys.

use crate::error::{Error, Result};

/// The scope that implies every other.
pub const ADMIN: &str = "admin";
/// Most scopes one list may hold.
pub const MAX_SCOPES: usize = 50;

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
}
