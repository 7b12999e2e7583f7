//! What the sign-in service answers with: the next step for the browser, the form's contents and
//! errors, logout and UserInfo outcomes. The HTTP layer turns each into pages, cookies, redirects
//! and statuses.

use crate::error::Error;

use super::{AuthorizeParams, NewSession};

/// What the browser gets next.
#[derive(Debug)]
pub enum Step {
    /// The sign-in page (boxed: it carries the whole request).
    Form(Box<Form>),
    /// A 303 to `location` (the client's redirect URI with a code or an error), starting
    /// `session` when the password was just checked.
    Redirect {
        /// Where to.
        location: String,
        /// A session to set the cookie of.
        session: Option<NewSession>,
    },
}

/// The sign-in page's contents.
#[derive(Debug)]
pub struct Form {
    /// The client's display name.
    pub client_name: String,
    /// The request, carried in hidden fields to the form's POST.
    pub params: AuthorizeParams,
    /// Why the last attempt failed, if one did.
    pub error: Option<FormError>,
    /// The username typed last time (never the password).
    pub username: String,
}

/// Why a submitted sign-in form was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FormError {
    /// The username or the password was left empty (nothing was checked or counted).
    Missing,
    /// Wrong username or password, or a locked account (which look the same).
    WrongCredentials,
    /// The form's CSRF token was missing or did not match this browser.
    Expired,
    /// Too many attempts from this address: try again after this many seconds.
    TooManyAttempts(u64),
    /// The service is busy checking passwords: try again after this many seconds.
    Busy(u64),
}

/// Why an authorization request cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// Unknown client or unregistered redirect URI: shown to the person, never redirected
    /// (RFC 6749 §4.1.2.1).
    #[error("{0}")]
    Page(String),
    /// The service failed.
    #[error(transparent)]
    Failed(#[from] Error),
}

/// A submitted sign-in form, with the cookies that came with it. `Debug` does not show the password.
#[derive(Clone, Copy)]
pub struct Submission<'a> {
    /// The browser's CSRF cookie.
    pub csrf_cookie: Option<&'a str>,
    /// The form's CSRF token.
    pub csrf_token: Option<&'a str>,
    /// The browser's current sign-in session cookie, if any (ended by a new sign-in).
    pub session_cookie: Option<&'a str>,
    /// Username as typed.
    pub username: &'a str,
    /// Password as typed.
    pub password: &'a str,
}

impl std::fmt::Debug for Submission<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Submission").field("username", &self.username).field("password", &"[redacted]").finish()
    }
}

/// The RP-initiated logout parameters (OpenID RP-Initiated Logout 1.0 §2).
#[derive(Debug, Default, Clone)]
pub struct LogoutParams {
    /// An ID token this service issued, naming the client.
    pub id_token_hint: Option<String>,
    /// The client, when no hint names it.
    pub client_id: Option<String>,
    /// Where to send the browser afterwards, if registered for the client.
    pub post_logout_redirect_uri: Option<String>,
    /// Returned with the redirect.
    pub state: Option<String>,
}

/// The outcome of a logout: the session is over either way.
#[derive(Debug)]
pub enum LoggedOut {
    /// Redirect to the client's registered post-logout URI.
    Redirect(String),
    /// Show the signed-out page (`redirect_refused`: a post-logout URI was asked for but is not
    /// registered for the client).
    Page {
        /// Whether a redirect was asked for and refused.
        redirect_refused: bool,
    },
}

/// OIDC Core §5.3 UserInfo response.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
#[schema(example = json!({"sub": "01a1f805-f370-74f8-996d-a763b7a969b1", "preferred_username": "ada.lovelace"}))]
pub struct UserInfo {
    /// The user's id (the `sub` of their tokens).
    pub sub: String,
    /// Their username.
    pub preferred_username: String,
}

/// Why UserInfo refused a token (RFC 6750 §3.1).
#[derive(Debug, thiserror::Error)]
pub enum UserinfoError {
    /// Missing, invalid, expired or revoked, or not about a user (`invalid_token`, 401).
    #[error("invalid_token")]
    InvalidToken,
    /// Valid, but without scope `openid` (`insufficient_scope`, 403).
    #[error("insufficient_scope")]
    InsufficientScope,
    /// The service failed.
    #[error(transparent)]
    Failed(#[from] Error),
}
