//! PATCH bodies: a field left out is unchanged; a field that cannot be empty may not be `null`
//! either (serde would otherwise read `null` as "left out" and answer 200 having changed nothing).

/// Defines `$name`, a `deserialize_with` function for an `Option<T>` PATCH field (with
/// `#[serde(default)]`): absent is `None`, a value is `Some`, and `null` is an error naming `$field`.
macro_rules! not_null {
    ($name:ident, $field:literal) => {
        /// Refuses `null` for this PATCH field (see [`crate::patch`]).
        pub fn $name<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
        where
            D: serde::Deserializer<'de>,
            T: serde::Deserialize<'de>,
        {
            <Option<T> as serde::Deserialize>::deserialize(d)?
                .map(Some)
                .ok_or_else(|| serde::de::Error::custom(concat!($field, ": may be left out, but not null")))
        }
    };
}

not_null!(name, "name");
not_null!(scopes, "scopes");
not_null!(metadata, "metadata");
not_null!(allowed_cidrs, "allowed_cidrs");
not_null!(enabled, "enabled");
not_null!(expires_in, "expires_in");
not_null!(redirect_uris, "redirect_uris");
not_null!(post_logout_redirect_uris, "post_logout_redirect_uris");

/// For a PATCH field that `null` clears (with `#[serde(default)]`): absent is `None` (unchanged),
/// `null` is `Some(None)`, a value `Some(Some(..))`.
pub fn nullable<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    <Option<T> as serde::Deserialize>::deserialize(d).map(Some)
}

#[cfg(test)]
mod tests {
    #[derive(Debug, serde::Deserialize)]
    struct Patch {
        #[serde(default, deserialize_with = "super::name")]
        name: Option<String>,
    }

    #[test]
    fn absent_is_unchanged_a_value_is_kept_and_null_is_refused_by_name() {
        assert!(serde_json::from_str::<Patch>("{}").unwrap().name.is_none());
        assert_eq!(serde_json::from_str::<Patch>(r#"{"name": "x"}"#).unwrap().name.as_deref(), Some("x"));
        let err = serde_json::from_str::<Patch>(r#"{"name": null}"#).unwrap_err().to_string();
        assert!(err.contains("name: may be left out, but not null"), "{err}");
    }
}
