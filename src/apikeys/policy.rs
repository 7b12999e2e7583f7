//! Least privilege for API keys: what an owner (a user or a client) lets its keys do.
//!
//! An owner's `key_scopes` is `None` (any scope that is not reserved), a list (only those) or empty
//! (none). It is checked when a key is created (403 `SCOPE_NOT_ALLOWED`) and again, live, at every
//! verification: a key grants its *effective* scopes, its own scopes that the owner still allows,
//! never a reserved one (keys created before the rule may hold one). So narrowing an owner's
//! `key_scopes` narrows its existing keys, and [`super::store::owner_changed`] tells every instance to drop what
//! it cached about them.

use sqlx::PgExecutor;

use crate::{
    error::{Error, Result},
    scopes,
};

/// Joins the owner of the API-key row aliased `k` (column `owner`): the user `u` when the owner is
/// a user id, the client `c` otherwise. The CASE keeps a non-UUID owner from reaching the uuid
/// cast, and lets the join use the users primary key. Client ids never equal a user id.
pub(super) const OWNER_JOIN: &str = "LEFT JOIN users u ON u.id = (CASE WHEN k.owner ~
         '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' THEN k.owner::uuid END)
     LEFT JOIN clients c ON c.client_id = k.owner";

/// The owner's `key_scopes` and whether it is gone, from [`OWNER_JOIN`]. An owner that is neither a
/// user nor a client (none is created so today) gets the default: any scope that is not reserved.
pub(super) const OWNER_COLUMNS: &str =
    "CASE WHEN u.id IS NOT NULL THEN u.key_scopes ELSE c.key_scopes END AS key_scopes,
     (u.deleted_at IS NOT NULL OR c.disabled_at IS NOT NULL) AS owner_gone";

/// What an owner lets its keys do, as read from Postgres.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OwnerPolicy {
    /// `None`: any scope that is not reserved; a list: only those.
    pub key_scopes: Option<Vec<String>>,
    /// The owner is a disabled client or a deleted user: its keys grant nothing.
    pub gone: bool,
}

impl OwnerPolicy {
    /// The owner's policy (the default when `owner` is neither a user nor a client).
    pub async fn load(conn: impl PgExecutor<'_>, owner: &str) -> Result<Self> {
        let row: (Option<Vec<String>>, bool) =
            sqlx::query_as(&format!("SELECT {OWNER_COLUMNS} FROM (SELECT $1::text AS owner) k {OWNER_JOIN}"))
                .bind(owner)
                .fetch_one(conn)
                .await?;
        Ok(Self { key_scopes: row.0, gone: row.1 })
    }

    /// Whether the owner lets a key carry `scope` (never a reserved one).
    pub fn allows(&self, scope: &str) -> bool {
        !scopes::is_reserved(scope) && self.key_scopes.as_ref().is_none_or(|k| k.iter().any(|s| s == scope))
    }

    /// Refuses (403 `SCOPE_NOT_ALLOWED`, naming the first) scopes the owner does not allow on its
    /// keys. Reserved scopes are refused before this, with 400 `SCOPE_RESERVED`.
    pub fn check(&self, field: &str, requested: &[String]) -> Result<()> {
        match requested.iter().find(|s| !self.allows(s)) {
            None => Ok(()),
            Some(s) => Err(Error::ScopeNotAllowed(format!(
                "{field}: {s:?} is outside the scopes this owner may put on API keys (its key_scopes)"
            ))),
        }
    }

    /// The effective scopes of a key holding `scopes`: those the owner allows, in the key's order;
    /// none when the owner is gone.
    pub fn effective(&self, scopes: &[String]) -> Vec<String> {
        if self.gone {
            return Vec::new();
        }
        scopes.iter().filter(|s| self.allows(s)).cloned().collect()
    }
}

/// Whether changing `key_scopes` from `old` to `new` may take a scope away from an existing key.
/// `None` allows every non-reserved scope, so moving to `None` never narrows and moving from it
/// always may.
pub fn narrows(old: Option<&[String]>, new: Option<&[String]>) -> bool {
    match (old, new) {
        (_, None) => false,
        (None, Some(_)) => true,
        (Some(old), Some(new)) => old.iter().any(|s| !new.contains(s)),
    }
}

/// Validates a `key_scopes` value: the scope grammar, then no reserved scope (400 `SCOPE_RESERVED`).
pub fn validate_key_scopes(field: &str, key_scopes: Option<&[String]>) -> Result<Option<Vec<String>>> {
    key_scopes.map(|k| scopes::validate_key_list(field, k)).transpose()
}

/// For `key_scopes` in PATCH bodies, with `#[serde(default, deserialize_with = ...)]`: absent is
/// `None` (unchanged), `null` is `Some(None)` (any scope that is not reserved), a list `Some(Some(..))`.
pub fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<Vec<String>>>, D::Error> {
    <Option<Vec<String>> as serde::Deserialize>::deserialize(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn effective_scopes_are_the_keys_within_key_scopes_and_never_reserved() {
        let any = OwnerPolicy::default();
        assert_eq!(any.effective(&v(&["admin", "deploy", "keys:write", "read"])), v(&["deploy", "read"]));
        let only = OwnerPolicy { key_scopes: Some(v(&["read"])), gone: false };
        assert_eq!(only.effective(&v(&["deploy", "read"])), v(&["read"]));
        let none = OwnerPolicy { key_scopes: Some(Vec::new()), gone: false };
        assert!(none.effective(&v(&["read"])).is_empty());
        let gone = OwnerPolicy { key_scopes: None, gone: true };
        assert!(gone.effective(&v(&["read"])).is_empty());
    }

    #[test]
    fn check_names_the_first_scope_outside_key_scopes() {
        let only = OwnerPolicy { key_scopes: Some(v(&["deploy"])), gone: false };
        assert!(only.check("scopes", &v(&["deploy"])).is_ok());
        let err = only.check("scopes", &v(&["deploy", "payments:write"])).unwrap_err();
        assert!(matches!(err, Error::ScopeNotAllowed(ref d) if d.contains("payments:write")), "{err:?}");
        assert!(OwnerPolicy::default().check("scopes", &v(&["payments:write"])).is_ok());
    }

    #[test]
    fn a_patch_tells_absent_from_null_key_scopes() {
        #[derive(serde::Deserialize)]
        struct P {
            #[serde(default, deserialize_with = "present")]
            key_scopes: Option<Option<Vec<String>>>,
        }
        let p = |j: &str| serde_json::from_str::<P>(j).unwrap().key_scopes;
        assert_eq!(p("{}"), None);
        assert_eq!(p(r#"{"key_scopes": null}"#), Some(None));
        assert_eq!(p(r#"{"key_scopes": ["a"]}"#), Some(Some(v(&["a"]))));
    }

    #[test]
    fn narrowing_is_any_change_that_can_take_a_scope_away() {
        let (a, ab) = (v(&["a"]), v(&["a", "b"]));
        assert!(narrows(None, Some(&ab)));
        assert!(narrows(Some(&ab), Some(&a)));
        assert!(narrows(Some(&a), Some(&[])));
        assert!(!narrows(Some(&a), Some(&ab)));
        assert!(!narrows(Some(&a), None));
        assert!(!narrows(None, None));
        assert!(!narrows(Some(&ab), Some(&ab)));
    }
}
