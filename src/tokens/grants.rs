//! The grants of `/oauth/token`. Each takes an authenticated client and the form, and returns a
//! token response or an RFC 6749 error.

use crate::{
    clients::Client,
    error::GrantError,
    scopes,
    tokens::{Grant, TokenResponse, Tokens},
    users::User,
};

/// Resolves the `scope` parameter against what is allowed: default all of it, else a subset.
pub fn narrow_scopes(requested: Option<&str>, allowed: &[String]) -> Result<Vec<String>, GrantError> {
    match requested {
        None => Ok(allowed.to_vec()),
        Some(param) => {
            let wanted =
                scopes::parse_param(param).ok_or_else(|| GrantError::InvalidScope("malformed scope".into()))?;
            if wanted.is_empty() {
                return Ok(allowed.to_vec());
            }
            if !scopes::is_subset(&wanted, allowed) {
                return Err(GrantError::InvalidScope("the requested scope exceeds what is allowed".into()));
            }
            Ok(wanted)
        }
    }
}

impl Tokens {
    /// `grant_type=client_credentials`.
    pub fn client_credentials(
        &self,
        client: &Client,
        scope: Option<&str>,
        audience: Option<&str>,
    ) -> Result<TokenResponse, GrantError> {
        if client.public || !client.allows_grant("client_credentials") {
            return Err(GrantError::UnauthorizedClient("this client may not use the client_credentials grant"));
        }
        let granted = narrow_scopes(scope, &client.scopes)?;
        let aud = self.resolve_audience(client, audience).map_err(|e| GrantError::InvalidRequest(e.into()))?;
        let grant = Grant { client, sub: client.client_id.clone(), scopes: &granted, aud, sid: None };
        let (access_token, expires_in) = self.issue_access_token(&grant)?;
        crate::metrics::token_issued("client_credentials");
        Ok(TokenResponse {
            access_token,
            token_type: "Bearer",
            expires_in,
            scope: granted.join(" "),
            refresh_token: None,
            id_token: None,
        })
    }

    /// `grant_type=password`, first half: the user, if the client may use this grant and the
    /// password is right (checked with the lockout of [`crate::users::login`]); otherwise
    /// `invalid_grant`, the same for every reason.
    pub async fn password_user(
        &self,
        client: &Client,
        username: &str,
        password: &str,
        source: std::net::IpAddr,
    ) -> Result<User, GrantError> {
        if !client.allows_grant("password") {
            return Err(GrantError::UnauthorizedClient("this client may not use the password grant"));
        }
        self.users
            .sign_in(source, username, password)
            .await?
            .ok_or(GrantError::InvalidGrant("invalid username or password"))
    }

    /// `grant_type=password`, second half: an access token for `user` and, for a client registered
    /// for `refresh_token`, the first refresh token of a new family.
    pub async fn password_tokens(
        &self,
        client: &Client,
        user: &User,
        scope: Option<&str>,
    ) -> Result<TokenResponse, GrantError> {
        let allowed: Vec<String> = user.scopes.iter().filter(|s| client.scopes.contains(s)).cloned().collect();
        let granted = narrow_scopes(scope, &allowed)?;
        // A refresh token only for a client registered for the refresh_token grant: one that is not
        // could never use it (RFC 6749 §6 refuses it as unauthorized_client).
        let login = if client.allows_grant("refresh_token") {
            Some(self.start_family(client, user.id, &granted).await?)
        } else {
            None
        };
        let (family, refresh_token) = login.unzip();
        let aud = self.resolve_audience(client, None).map_err(|e| GrantError::InvalidRequest(e.into()))?;
        let grant = Grant { client, sub: user.id.to_string(), scopes: &granted, aud, sid: family };
        let (access_token, expires_in) = self.issue_access_token(&grant)?;
        crate::metrics::token_issued("password");
        warn_legacy_password_grant(&client.client_id);
        Ok(TokenResponse {
            access_token,
            token_type: "Bearer",
            expires_in,
            scope: granted.join(" "),
            refresh_token,
            id_token: None,
        })
    }
}

/// The password grant is legacy (RFC 9700 §2.4: the client sees the user's password). Its use is
/// logged as a warning once per client per process, not per login, so busy clients do not flood the
/// log; `tokens_issued_total{grant="password"}` counts every use.
fn warn_legacy_password_grant(client_id: &str) {
    static WARNED: std::sync::OnceLock<std::sync::Mutex<std::collections::HashSet<String>>> =
        std::sync::OnceLock::new();
    let Ok(mut warned) = WARNED.get_or_init(Default::default).lock() else {
        return;
    };
    // Bounded: past this many clients, the metric alone tells the story.
    if warned.len() < 10_000 && warned.insert(client_id.to_owned()) {
        tracing::warn!(
            client_id,
            "the password grant is legacy (RFC 9700 §2.4): move this client to authorization code with PKCE"
        );
    }
}
