//! Signing people in through Tessera's own page: the authorization endpoint of RFC 6749 §4.1 with
//! PKCE (RFC 7636), the browser session behind it, OpenID Connect's `prompt` and `max_age`, the
//! UserInfo endpoint (OIDC Core §5.3) and RP-initiated logout. Nothing here knows HTTP: the
//! handlers in `http::browser` turn [`Step`]s into pages, cookies and redirects.

pub mod csrf;
mod outcome;
pub mod request;
pub mod session;

use std::{net::IpAddr, sync::Arc};

use ring::hmac;
use sqlx::PgPool;
use uuid::Uuid;

use crate::{
    clients::Clients,
    clock::Clock,
    config::Config,
    error::{Error, Result},
    scopes,
    tokens::{code::NewCode, id_token, Tokens},
    users::Users,
};

pub use outcome::{Failure, Form, FormError, LoggedOut, LogoutParams, Step, Submission, UserInfo, UserinfoError};
pub use request::AuthorizeParams;
pub use session::{NewSession, Session};

/// Signs people in and out.
#[derive(Clone)]
pub struct SignIn {
    db: PgPool,
    clock: Clock,
    config: Arc<Config>,
    clients: Clients,
    users: Users,
    tokens: Tokens,
    session_hmac: hmac::Key,
    csrf_hmac: hmac::Key,
}

/// Whether cookies must be `Secure` with a `__Host-` name: always, except for an `http` issuer on
/// a loopback host (local development, where browsers would drop a `Secure` cookie).
pub fn secure_cookies(issuer: &str) -> bool {
    match url::Url::parse(issuer) {
        Ok(u) if u.scheme() == "http" => !crate::clients::redirects::is_loopback(&u),
        _ => true,
    }
}

impl SignIn {
    /// A service signing sessions' cookies under `session_hmac` and CSRF tokens under `csrf_hmac`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        db: PgPool,
        clock: Clock,
        config: Arc<Config>,
        clients: Clients,
        users: Users,
        tokens: Tokens,
        session_hmac: hmac::Key,
        csrf_hmac: hmac::Key,
    ) -> Self {
        Self { db, clock, config, clients, users, tokens, session_hmac, csrf_hmac }
    }

    /// The service's display name.
    pub fn service_name(&self) -> &str {
        &self.config.service_name
    }

    /// Whether cookies are `Secure` and `__Host-` (see [`secure_cookies`]).
    pub fn secure_cookies(&self) -> bool {
        secure_cookies(&self.config.issuer)
    }

    /// A new CSRF cookie value for a browser that has none.
    pub fn new_csrf_cookie(&self) -> String {
        csrf::new_cookie()
    }

    /// The form token that goes with a browser's CSRF cookie.
    pub fn csrf_token(&self, cookie: &str) -> String {
        csrf::token_for(&self.csrf_hmac, cookie)
    }

    async fn checked(&self, params: &AuthorizeParams) -> Result<request::Checked, Failure> {
        let client = match params.client_id.as_deref() {
            Some(id) if crate::clients::valid_client_id(id) => self.clients.get_live(id).await?,
            _ => None,
        };
        request::check_redirect(client, params).map_err(Failure::Page)
    }

    fn refused(&self, checked: &request::Checked, r: &request::Refusal) -> Step {
        let mut pairs = vec![("error", r.error), ("error_description", r.description.as_str())];
        if let Some(s) = &checked.state {
            pairs.push(("state", s));
        }
        let location = request::redirect_to(&checked.redirect_uri, &pairs, &self.config.issuer);
        Step::Redirect { location, session: None }
    }

    /// `GET /oauth/authorize`: straight back to the client when the browser's session satisfies
    /// the request, the sign-in page otherwise (or `login_required` for `prompt=none`).
    pub async fn authorize(&self, params: AuthorizeParams, session_cookie: Option<&str>) -> Result<Step, Failure> {
        let checked = self.checked(&params).await?;
        let valid = match request::check_rest(&checked, &params) {
            Ok(v) => v,
            Err(r) => return Ok(self.refused(&checked, &r)),
        };
        let now = self.clock.now();
        let session = match session_cookie {
            Some(c) => session::find(&self.db, &self.session_hmac, c, now, self.config.session_idle_ttl).await?,
            None => None,
        };
        let fresh_enough = |s: &Session| valid.max_age.is_none_or(|max| (now - s.auth_time).whole_seconds() <= max);
        match session.filter(|s| !valid.prompt_login && fresh_enough(s)) {
            Some(s) => self.code_redirect(&checked, &valid, s, None).await,
            None if valid.prompt_none => Ok(self.refused(
                &checked,
                &request::Refusal { error: "login_required", description: "the user is not signed in".into() },
            )),
            None => Ok(Step::Form(Box::new(Form {
                client_name: checked.client.name.clone(),
                params,
                error: None,
                username: String::new(),
            }))),
        }
    }

    /// `POST /oauth/authorize`: the sign-in form. Checks the CSRF token, then the password with the
    /// password grant's throttling and lockout; on success starts a session and sends the browser
    /// back with a code.
    pub async fn sign_in(
        &self,
        params: AuthorizeParams,
        form: &Submission<'_>,
        source: IpAddr,
    ) -> Result<Step, Failure> {
        let Submission { csrf_cookie, csrf_token, session_cookie, username, password } = *form;
        let checked = self.checked(&params).await?;
        let valid = match request::check_rest(&checked, &params) {
            Ok(v) => v,
            Err(r) => return Ok(self.refused(&checked, &r)),
        };
        let form = |error, username: &str| {
            Step::Form(Box::new(Form {
                client_name: checked.client.name.clone(),
                params: params.clone(),
                error: Some(error),
                username: username.chars().take(128).collect(),
            }))
        };
        let csrf_ok = match (csrf_cookie, csrf_token) {
            (Some(cookie), Some(token)) => csrf::check(&self.csrf_hmac, cookie, token),
            _ => false,
        };
        if !csrf_ok {
            return Ok(form(FormError::Expired, username));
        }
        if username.is_empty() || password.is_empty() {
            return Ok(form(FormError::Missing, username));
        }
        let user = match self.users.sign_in(source, username, password).await {
            Ok(Some(user)) => user,
            Ok(None) => return Ok(form(FormError::WrongCredentials, username)),
            Err(Error::TooManyAttempts(s)) => return Ok(form(FormError::TooManyAttempts(s), username)),
            Err(Error::Saturated(s)) => return Ok(form(FormError::Busy(s), username)),
            Err(e) => return Err(e.into()),
        };
        let now = self.clock.now();
        // A new session for every sign-in (a cookie planted before it is worth nothing after), and
        // the one it replaces in this browser ends.
        if let Some(old) = session_cookie {
            session::end(&self.db, &self.session_hmac, old, now).await?;
        }
        let new = session::create(&self.db, &self.session_hmac, user.id, now, self.config.session_absolute_ttl).await?;
        let s = new.session;
        self.code_redirect(&checked, &valid, s, Some(new)).await
    }

    async fn code_redirect(
        &self,
        checked: &request::Checked,
        valid: &request::Valid,
        s: Session,
        new: Option<NewSession>,
    ) -> Result<Step, Failure> {
        let user = self.users.get(s.user_id).await?;
        // OpenID scopes need only the client's; the others also the user's.
        let granted: Vec<String> =
            valid.scopes.iter().filter(|sc| scopes::is_oidc(sc) || user.user.scopes.contains(sc)).cloned().collect();
        let code = self
            .tokens
            .issue_code(&NewCode {
                client_id: &checked.client.client_id,
                user_id: s.user_id,
                session_id: s.id,
                redirect_uri: &checked.redirect_uri,
                code_challenge: &valid.code_challenge,
                scopes: &granted,
                nonce: valid.nonce.as_deref(),
                auth_time: s.auth_time,
            })
            .await?;
        let mut pairs = vec![("code", code.as_str())];
        if let Some(st) = &checked.state {
            pairs.push(("state", st));
        }
        let location = request::redirect_to(&checked.redirect_uri, &pairs, &self.config.issuer);
        Ok(Step::Redirect { location, session: new })
    }

    /// RP-initiated logout: ends the browser's session, then redirects to `post_logout_redirect_uri`
    /// only if it is registered for the client the hint (or `client_id`) names.
    pub async fn logout(&self, session_cookie: Option<&str>, params: &LogoutParams) -> Result<LoggedOut> {
        if let Some(c) = session_cookie {
            session::end(&self.db, &self.session_hmac, c, self.clock.now()).await?;
        }
        let Some(target) = params.post_logout_redirect_uri.as_deref() else {
            return Ok(LoggedOut::Page { redirect_refused: false });
        };
        let keys = self.tokens.signing_keys();
        let hinted = params.id_token_hint.as_deref().and_then(|t| id_token::read_hint(&keys, t, &self.config.issuer));
        let client_id = match (&hinted, params.client_id.as_deref()) {
            (Some(h), Some(c)) if h.aud != c => None,
            (Some(h), _) => Some(h.aud.clone()),
            (None, c) => c.map(str::to_owned),
        };
        let client = match client_id.as_deref() {
            Some(id) if crate::clients::valid_client_id(id) => self.clients.get_live(id).await?,
            _ => None,
        };
        let registered = client.is_some_and(|c| c.post_logout_redirect_uris.iter().any(|r| r == target));
        if !registered {
            return Ok(LoggedOut::Page { redirect_refused: true });
        }
        let location = match (url::Url::parse(target), &params.state) {
            (Ok(mut u), Some(state)) => {
                u.query_pairs_mut().append_pair("state", state);
                u.into()
            }
            _ => target.to_owned(),
        };
        Ok(LoggedOut::Redirect(location))
    }

    /// OIDC Core §5.3 UserInfo for the bearer of `token` (scope `openid` needed).
    pub async fn userinfo(&self, token: Option<&str>) -> Result<UserInfo, UserinfoError> {
        let claims =
            token.and_then(|t| self.tokens.validate_access_token(t).ok()).ok_or(UserinfoError::InvalidToken)?;
        let user_id = Uuid::parse_str(&claims.sub).map_err(|_| UserinfoError::InvalidToken)?;
        if !claims.scopes().any(|s| s == "openid") {
            return Err(UserinfoError::InsufficientScope);
        }
        match self.users.get(user_id).await {
            Ok(view) => Ok(UserInfo { sub: claims.sub.clone(), preferred_username: view.user.username }),
            Err(Error::NotFound(_)) => Err(UserinfoError::InvalidToken),
            Err(e) => Err(e.into()),
        }
    }
}
