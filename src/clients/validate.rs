//! What a client registration must satisfy before it is stored.

use super::{redirects, NewClient, GRANT_TYPES, MAX_CLIENT_ACCESS_TTL};
use crate::{
    apikeys::policy,
    error::{Error, Result},
    scopes,
};

/// `[A-Za-z0-9._~-]{1,128}`: the unreserved characters of RFC 3986, so the id needs no escaping
/// anywhere. Not `:`, which `client_secret_basic` (RFC 6749 §2.3.1) uses as the separator and
/// which many clients (`curl -u`, authlib, requests-oauthlib) do not form-encode.
pub fn valid_client_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'~'))
}

pub(super) fn validate(new: NewClient) -> Result<(String, NewClient, Vec<String>, Vec<String>)> {
    let client_id = match &new.client_id {
        Some(id) if !valid_client_id(id) => {
            return Err(Error::invalid("client_id: 1-128 characters of A-Z a-z 0-9 . _ - ~"))
        }
        Some(id) => id.clone(),
        None => uuid::Uuid::now_v7().to_string(),
    };
    let name = new.name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(Error::invalid("name: must be 1 to 200 characters"));
    }
    if new.grant_types.is_empty() {
        return Err(Error::invalid("grant_types: at least one grant type is required"));
    }
    let mut grants: Vec<String> = Vec::new();
    for g in &new.grant_types {
        if !GRANT_TYPES.contains(&g.as_str()) {
            return Err(Error::invalid(format!("grant_types: {g:?} is not supported ({})", GRANT_TYPES.join(", "))));
        }
        if !grants.contains(g) {
            grants.push(g.clone());
        }
    }
    if new.public && grants.iter().any(|g| g == "client_credentials") {
        return Err(Error::invalid("grant_types: a public client cannot use client_credentials"));
    }
    let scopes = scopes::validate_list("scopes", &new.scopes)?;
    if let Some(aud) = &new.audience {
        let list = aud.clone().into_vec();
        if list.is_empty() || list.len() > 20 || list.iter().any(|a| a.is_empty() || a.len() > 512) {
            return Err(Error::invalid("audience: 1 to 20 non-empty strings of at most 512 characters"));
        }
    }
    if let Some(t) = new.access_token_ttl {
        if !(1..=MAX_CLIENT_ACCESS_TTL as i64).contains(&t) {
            return Err(Error::invalid(format!("access_token_ttl: must be 1 to {MAX_CLIENT_ACCESS_TTL} seconds")));
        }
    }
    if let Some(t) = new.refresh_token_ttl {
        if !(1..=31_536_000).contains(&t) {
            return Err(Error::invalid("refresh_token_ttl: must be 1 to 31536000 seconds"));
        }
    }
    let key_scopes = policy::validate_key_scopes("key_scopes", new.key_scopes.as_deref())?;
    let redirect_uris = new.redirect_uris.as_deref().map(|u| redirects::validate("redirect_uris", u)).transpose()?;
    let post_logout_redirect_uris = (new.post_logout_redirect_uris.as_deref())
        .map(|u| redirects::validate("post_logout_redirect_uris", u))
        .transpose()?;
    let new = NewClient { name: name.to_owned(), key_scopes, redirect_uris, post_logout_redirect_uris, ..new };
    Ok((client_id, new, grants, scopes))
}

/// A client-credentials token's `sub` is its client id, and the owner of API keys is a token's
/// `sub`: a client whose id were a user's id would act as that user on their keys. User ids are
/// generated UUIDs, so only a chosen client id can collide; deleted users count too (their keys and
/// audit trail still name them).
pub(super) async fn refuse_user_id(conn: &mut sqlx::PgConnection, client_id: &str) -> Result<()> {
    let Ok(id) = uuid::Uuid::parse_str(client_id) else {
        return Ok(());
    };
    let taken: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM users WHERE id = $1)").bind(id).fetch_one(conn).await?;
    if taken {
        return Err(Error::invalid("client_id: must not be the id of a user"));
    }
    Ok(())
}
